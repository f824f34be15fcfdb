"""The keeper (fencing/keeper.py): a Primary whose I/O DRBD froze for fencing, after the
fence-peer handler could not fence, resumes only once the peer's copy is fenced (issue 19 §1).

Fakes: `ScriptedPeer` stands in for the handler's `ask` (answers taken in order, the last
repeating), `FakeResumeIo` for drbdadm (DRBD cannot run here), and `frozen` is a flag the
test flips the way DRBD's events would. Chains._note_frozen is the real one, fed
test_drbd_step.res() snapshots.
"""

from __future__ import annotations

import asyncio
import dataclasses
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest
from test_drbd_step import res
from test_fencing_rule import FakeLog, instance, make

from drbdha.config import PeerConfig
from drbdha.fencing import handler, wire
from drbdha.fencing.keeper import Keeper, KeepFencing
from drbdha.resources.proc import Result

PEER = PeerConfig(address=ip_address("192.0.2.2"), secret_file=Path("/k"))
EV = KeepFencing("lab", "r0")
REFUSED = handler.Answer(wire.FAILED, "refused the connection", retry=True, refused=True)
SILENT = handler.Answer(wire.UNREACHABLE, "no answer")
OUTDATED = handler.Answer(wire.OUTDATED, "outdated", {"disk": "Outdated"})
INCONSISTENT = handler.Answer(wire.INCONSISTENT, "inconsistent")
PRIMARY = handler.Answer(wire.PRIMARY, "this node is Primary")
NEWER = handler.Answer(wire.NEWER, "this copy was Primary alone since the copies last met")
RESUME = ("drbdadm", "resume-io", "r0")


class ScriptedPeer:
    def __init__(self, *answers: handler.Answer) -> None:
        self.answers = list(answers)
        self.asked = 0

    def __call__(self, peer: PeerConfig, key: bytes, resource: str) -> handler.Answer:
        assert (peer, key, resource) == (PEER, b"k", "r0")
        self.asked += 1
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


class FakeResumeIo:
    def __init__(self, *rcs: int) -> None:
        self.rcs = list(rcs) or [0]
        self.calls: list[tuple[str, ...]] = []

    async def __call__(self, argv: list[str]) -> Result:
        self.calls.append(tuple(argv))
        rc = self.rcs.pop(0) if len(self.rcs) > 1 else self.rcs[0]
        return Result(tuple(argv), rc, "", "" if rc == 0 else "failed")


def keeper(
    peer: ScriptedPeer,
    run: FakeResumeIo,
    log: FakeLog,
    counted: list[Any],
    serves: list[Any] | None = None,
) -> Keeper:
    return Keeper(
        PEER,
        b"k",
        log,
        count=lambda i, o: counted.append((i, o)),
        peer_serves=lambda ev, a: (serves if serves is not None else []).append((ev, a)),
        ask=peer,
        run=run,
        grace=0.0,
        retry=0.0,
    )


def run_keeper(
    peer: ScriptedPeer, run: FakeResumeIo, frozen: Any = None
) -> tuple[str, FakeLog, list[Any]]:
    log, counted = FakeLog(), []
    # DRBD resumes when resume-io succeeds: frozen() reads the fake's record.
    frozen = frozen or (lambda: not any(c == RESUME for c in run.calls[-1:]) or run.rcs[0] != 0)
    result = asyncio.run(keeper(peer, run, log, counted).keep(EV, frozen))
    return result, log, counted


def test_a_refusing_peer_keeps_the_io_frozen_until_its_drbdha_outdates() -> None:
    peer = ScriptedPeer(REFUSED, REFUSED, REFUSED, OUTDATED)
    run = FakeResumeIo(0)
    result, log, counted = run_keeper(peer, run)
    assert result == "resumed"
    assert peer.asked == 4
    assert run.calls == [RESUME]  # never before the peer was fenced
    assert counted == [("lab", "resumed")]
    assert "fence.resumed_io" in log.names()
    assert log.names().count("fence.io_frozen") == 1  # the same answer is logged once


@pytest.mark.parametrize("never", [SILENT, PRIMARY, NEWER], ids=["silent", "primary", "newer"])
def test_silence_or_a_serving_peer_never_resumes(never: handler.Answer) -> None:
    peer = ScriptedPeer(REFUSED, never)
    run = FakeResumeIo()
    flips = iter([True] * 6 + [False])  # the admin resumes after a while
    log, counted, serves = FakeLog(), [], []
    k = keeper(peer, run, log, counted, serves)
    result = asyncio.run(k.keep(EV, lambda: next(flips)))
    assert result == "resolved"
    assert run.calls == []  # the keeper never resumes for these: daemon/stale.py may
    assert counted == [("lab", "resolved")]
    if never is SILENT:
        assert serves == []
    else:  # the peer serves: told to the daemon at each answer (it acts once)
        assert serves
        assert all(s == (EV, never) for s in serves)
        assert any(lvl == "critical" and e == "fence.io_frozen" for lvl, e, _ in log.events)


def test_an_inconsistent_peer_has_nothing_to_fence() -> None:
    run = FakeResumeIo(0)
    result, _, _ = run_keeper(ScriptedPeer(INCONSISTENT), run)
    assert (result, run.calls) == ("resumed", [RESUME])


def test_a_failed_resume_is_counted_and_asked_again() -> None:
    run = FakeResumeIo(10, 0)
    calls: list[int] = []

    def frozen() -> bool:
        calls.append(len(run.calls))
        return not (run.calls and len(run.calls) >= 2)

    log, counted = FakeLog(), []
    result = asyncio.run(keeper(ScriptedPeer(OUTDATED), run, log, counted).keep(EV, frozen))
    assert result == "resumed"
    assert run.calls == [RESUME, RESUME]
    assert counted == [("lab", "resume_failed"), ("lab", "resumed")]
    assert "fence.resume_failed" in log.names()


def test_nothing_is_asked_once_drbd_resumed_by_itself() -> None:
    peer = ScriptedPeer(OUTDATED)
    result, _, counted = run_keeper(peer, FakeResumeIo(), frozen=lambda: False)
    assert (result, peer.asked, counted) == ("resolved", 0, [("lab", "resolved")])


# ---- the alert and the start, in Chains --------------------------------------------------

FROZEN = dataclasses.replace(
    res(role="Primary", connection="Connecting", peer_role="Unknown", peer_disk="DUnknown"),
    suspended=True,
    suspended_by=frozenset({"fencing"}),
)
RESUMED = dataclasses.replace(FROZEN, suspended=False, suspended_by=frozenset())


def test_a_frozen_primary_raises_the_alert_and_starts_one_keeper(tmp_path: Path) -> None:
    chains, put, log = make(tmp_path)
    inst = instance(chains)
    chains.state(inst).alerts = {}
    chains._note_frozen(inst, FROZEN)
    chains._note_frozen(inst, FROZEN)  # still frozen: nothing new
    assert put == [KeepFencing("lab", "r0")]
    assert chains.state(inst).alerts["io_frozen"].startswith("I/O frozen: fencing the peer")
    chains._note_frozen(inst, RESUMED)
    assert "io_frozen" not in chains.state(inst).alerts
    assert log.names() == ["alert", "alert.cleared"]


def test_a_suspended_secondary_is_no_frozen_primary(tmp_path: Path) -> None:
    chains, put, _ = make(tmp_path)
    inst = instance(chains)
    chains.state(inst).alerts = {}
    chains._note_frozen(inst, dataclasses.replace(FROZEN, role="Secondary"))
    assert (put, chains.state(inst).alerts) == ([], {})
