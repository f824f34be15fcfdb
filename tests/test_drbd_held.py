"""DrbdStep.held(): what `drbdadm role` says about a resource a previous run may have left
Primary. The runner's rule is that unknown counts as held (a stop is idempotent, a Primary
taken for down is not), so only a definite answer reads as not held.

Exit codes and messages from drbd-utils (commit b4b2f5b9): drbdsetup role on DRBD 9 prints
"r0: Unknown resource" and exits 10 (user/v9/drbdsetup.c role_cmd); 8.4's drbdsetup prints
"Failure: (127) Device minor not allocated" and exits 10 for a minor that is not up
(user/v84/drbdsetup.c print_config_error); drbdadm exits 1 (E_USAGE) with "'r0' not defined
in your config (for this host)." (user/v9/drbdadm_main.c, v84 the same). drbdadm passes
drbdsetup's exit code on. FakeRole answers like drbdadm would."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from drbdha.config import StorageConfig
from drbdha.resources.drbd import DrbdStep
from drbdha.resources.proc import Result


class FakeRole:
    """A fake `drbdadm role r0`: one scripted answer (returncode, stdout, stderr), or an
    exception to raise (drbdadm missing)."""

    def __init__(
        self, rc: int = 0, out: str = "", err: str = "", *, exc: BaseException | None = None
    ) -> None:
        self.answer = (rc, out, err)
        self.exc = exc
        self.calls: list[tuple[str, ...]] = []

    async def __call__(self, argv: Sequence[str]) -> Result:
        self.calls.append(tuple(argv))
        if self.exc is not None:
            raise self.exc
        return Result(tuple(argv), *self.answer)


def held(fake: FakeRole) -> bool:
    step = DrbdStep(
        StorageConfig(name="nfs", drbd_resource="r0"), lambda: None, lambda: False, run=fake
    )
    result = asyncio.run(step.held())
    assert fake.calls == [("drbdadm", "role", "r0")]
    return result


@pytest.mark.parametrize(
    "answer",
    [
        (0, "Primary\n", ""),  # DRBD 9
        (0, "Primary/Secondary\n", ""),  # 8.4: ours/peer's
    ],
    ids=["9", "8.4"],
)
def test_a_primary_is_held(answer: tuple[int, str, str]) -> None:
    assert held(FakeRole(*answer))


@pytest.mark.parametrize(
    "answer",
    [
        (0, "Secondary\n", ""),
        (0, "Secondary/Primary\n", ""),
        (10, "", "r0: Unknown resource\n"),  # 9: defined, not up
        (10, "", "r0: No such resource\n"),
        (
            10,
            "",
            (
                "Command 'drbdsetup-84 0 role' terminated with exit code 10\n"
                "0: Failure: (127) Device minor not allocated\n"
            ),
        ),  # 8.4: not up
        (1, "", "'r0' not defined in your config (for this host).\n"),  # never brought up
    ],
    ids=[
        "secondary",
        "secondary_84",
        "unknown_resource",
        "no_such_resource",
        "minor_84",
        "not_defined",
    ],
)
def test_only_a_definite_answer_reads_as_not_held(answer: tuple[int, str, str]) -> None:
    assert not held(FakeRole(*answer))


@pytest.mark.parametrize(
    "fake",
    [
        FakeRole(20, "", "Could not connect to 'drbd' generic netlink family\n"),
        FakeRole(10, "", "r0: Failure: (122) Out of memory\n"),  # exit 10, another error
        FakeRole(10, "", "drbd.conf:12: syntax error\n"),  # E_CONFIG_INVALID: says nothing
        FakeRole(1, "", "USAGE_BUG: r0 would enable an already enabled connection\n"),
        FakeRole(0, "Unknown\n", ""),
        FakeRole(0, "", ""),
        FakeRole(137, "", ""),  # killed
        FakeRole(exc=FileNotFoundError(2, "No such file or directory", "drbdadm")),
    ],
    ids=[
        "no_module",
        "other_kernel_error",
        "bad_config",
        "usage",
        "role_unknown",
        "no_output",
        "killed",
        "no_drbdadm",
    ],
)
def test_anything_else_is_unknown_and_counts_as_held(fake: FakeRole) -> None:
    assert held(fake)
