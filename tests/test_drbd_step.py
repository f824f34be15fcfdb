"""The DRBD step (promote/demote with its gates and escalation) and the guard (what DRBD
facts mean for the election), driven by FakeCommands: a recorded-command fake that answers
drbdadm/drbdsetup with scripted exit codes (DRBD cannot run here; the lab runs the real one)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from drbdha.chain.step import StepFailed
from drbdha.config import StorageConfig
from drbdha.resources.drbd import DrbdStep, events2_argv, has_secondary_force, kmod_version
from drbdha.resources.drbd_events import (
    Connection,
    PeerVolume,
    Resource,
    Tracker,
    Volume,
    parse_events2_line,
)
from drbdha.resources.drbd_guard import assess
from drbdha.resources.proc import Result


class FakeCommands:
    """Records every argv; answers from a script of (argv prefix -> returncode, stderr)."""

    def __init__(self, script: dict[tuple[str, ...], list[tuple[int, str]]] | None = None) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.script = script or {}

    async def __call__(self, argv: Sequence[str]) -> Result:
        argv = tuple(argv)
        self.calls.append(argv)
        for prefix, answers in self.script.items():
            if argv[: len(prefix)] == prefix and answers:
                rc, err = answers.pop(0) if len(answers) > 1 else answers[0]
                out = "Primary" if rc == 0 and argv[1] == "role" else ""
                return Result(argv, rc, out, err)
        return Result(argv, 0, "", "")


def res(
    role: str = "Secondary",
    disk: str = "UpToDate",
    peer_role: str = "Secondary",
    peer_disk: str = "UpToDate",
    connection: str = "Connected",
    *,
    quorum: bool | None = None,
) -> Resource:
    return Resource(
        name="r0",
        role=role,
        suspended=False,
        may_promote=None,
        promotion_score=None,
        force_io_failures=False,
        devices=(Volume(0, 0, disk, False, quorum, None),),
        connections=(
            Connection(
                0,
                "peer",
                connection,
                peer_role,
                (PeerVolume(0, "Established", peer_disk, False, None),),
            ),
        ),
    )


def step(
    facts: Resource | None, cmds: FakeCommands, version: tuple[int, ...] = (8, 4, 11)
) -> DrbdStep:
    return DrbdStep(
        StorageConfig(name="nfs", drbd_resource="r0", demote_timeout=1.0),
        lambda: facts,
        lambda: False,
        run=cmds,
        version=lambda: version,
    )


def test_promote_when_the_gates_pass() -> None:
    cmds = FakeCommands()
    asyncio.run(step(res(), cmds).start())
    assert cmds.calls == [("drbdadm", "primary", "r0")]


def test_already_primary_is_not_promoted_again() -> None:
    cmds = FakeCommands()
    asyncio.run(step(res(role="Primary"), cmds).start())
    assert cmds.calls == []


@pytest.mark.parametrize(
    ("facts", "reason"),
    [
        (res(disk="Outdated"), "no_uptodate_disk"),
        (res(disk="Inconsistent"), "no_uptodate_disk"),
        (None, "not_configured"),
    ],
)
def test_gate_refusal_runs_nothing_and_asks_for_backoff(
    facts: Resource | None, reason: str
) -> None:
    cmds = FakeCommands()
    with pytest.raises(StepFailed) as e:
        asyncio.run(step(facts, cmds).start())
    assert (e.value.reason, e.value.backoff) == (reason, True)
    assert cmds.calls == []


@pytest.mark.parametrize(
    ("rc", "reason"),
    [(17, "no_uptodate_disk"), (5, "lower_than_outdated"), (11, "promote_refused")],
)
def test_drbd_refusal_codes_back_off_and_never_force(rc: int, reason: str) -> None:
    cmds = FakeCommands({("drbdadm", "primary"): [(rc, "State change failed")]})
    with pytest.raises(StepFailed) as e:
        asyncio.run(step(res(), cmds).start())
    assert (e.value.reason, e.value.backoff) == (reason, True)
    assert cmds.calls == [("drbdadm", "primary", "r0")]
    assert not any("--force" in c for c in cmds.calls)


def test_a_primary_peer_is_waited_out_within_the_budget() -> None:
    facts = {"now": res(peer_role="Primary")}
    cmds = FakeCommands()
    s = DrbdStep(
        StorageConfig(name="nfs", drbd_resource="r0"),
        lambda: facts["now"],
        lambda: False,
        run=cmds,
        version=lambda: (8, 4, 11),
    )

    async def main() -> None:
        task = asyncio.create_task(s.start())
        await asyncio.sleep(0.2)
        assert cmds.calls == []  # never promotes beside a Primary
        facts["now"] = res()  # the old master demoted
        await asyncio.wait_for(task, 1.0)

    asyncio.run(main())
    assert cmds.calls == [("drbdadm", "primary", "r0")]


def test_demote_plain() -> None:
    cmds = FakeCommands()
    asyncio.run(step(res(role="Primary"), cmds).stop())
    assert cmds.calls == [("drbdadm", "secondary", "r0")]


def test_demote_escalates_to_force_where_drbd_has_it() -> None:
    cmds = FakeCommands({("drbdadm", "secondary"): [(11, "Device is held open by someone")]})
    asyncio.run(step(res(role="Primary"), cmds, version=(9, 2, 4)).stop())
    assert cmds.calls == [
        ("drbdadm", "secondary", "r0"),
        ("drbdadm", "secondary", "r0"),
        ("drbdsetup", "secondary", "--force", "r0"),
    ]


def test_demote_failure_is_a_failed_stop_on_84() -> None:
    cmds = FakeCommands({("drbdadm", "secondary"): [(11, "Device is held open by someone")]})
    with pytest.raises(StepFailed) as e:
        asyncio.run(step(res(role="Primary"), cmds, version=(8, 4, 11)).stop())
    assert e.value.reason == "demote_failed"
    assert "held open" in e.value.detail
    # Retried for half the budget (0.5 s: twice), then given up: 8.4 has no secondary --force.
    assert cmds.calls == [("drbdadm", "secondary", "r0")] * 2


def test_double_stop_is_harmless() -> None:
    cmds = FakeCommands()
    s = step(res(), cmds)
    asyncio.run(s.stop())
    asyncio.run(s.stop())
    assert cmds.calls == [("drbdadm", "secondary", "r0")] * 2  # drbdadm is idempotent


def test_held_reads_the_role() -> None:
    primary = FakeCommands({("drbdadm", "role"): [(0, "")]})  # prints "Primary" (8.4: "/...")
    assert asyncio.run(step(res(), primary).held())
    down = FakeCommands({("drbdadm", "role"): [(10, "r0: No such resource")]})
    assert not asyncio.run(step(res(), down).held())


def test_kmod_version(tmp_path) -> None:  # noqa: ANN001
    p = tmp_path / "drbd"
    p.write_text("version: 8.4.11 (api:1/proto:86-101)\nsrcversion: x\n")
    assert kmod_version(p) == (8, 4, 11)
    assert not has_secondary_force(kmod_version(p))
    p.write_text("version: 9.2.4 (api:2/proto:86-122)\n")
    assert has_secondary_force(kmod_version(p))
    assert kmod_version(tmp_path / "missing") is None


# ---- guard -------------------------------------------------------------------------------

LATCHED_NONE: frozenset[str] = frozenset()


def test_healthy_backup_beside_a_primary_master_is_only_inhibited_by_peer_primary() -> None:
    v = assess(None, res(peer_role="Primary"), on_disk_loss="failover", latched=LATCHED_NONE)
    assert v.inhibitions == {"peer_primary"}
    assert (v.latch, v.alerts) == ((), ())


def test_detach_on_primary_with_uptodate_peer_latches_without_alert() -> None:
    old, new = res(role="Primary"), res(role="Primary", disk="Diskless")
    v = assess(old, new, on_disk_loss="failover", latched=LATCHED_NONE)
    assert v.latch == (("disk", "disk Diskless while Primary"),)
    assert v.inhibitions == {"disk_latched"}
    assert v.alerts == ()


def test_detach_with_no_uptodate_copy_left_alerts() -> None:
    old = res(role="Primary", peer_disk="Inconsistent")
    new = res(role="Primary", disk="Failed", peer_disk="Inconsistent")
    v = assess(old, new, on_disk_loss="failover", latched=LATCHED_NONE)
    assert "disk_latched" in v.inhibitions
    assert [k for k, _ in v.alerts] == ["no_uptodate_copy"]


def test_detach_ignored_by_policy_only_alerts() -> None:
    old, new = res(role="Primary"), res(role="Primary", disk="Diskless")
    v = assess(old, new, on_disk_loss="ignore", latched=LATCHED_NONE)
    assert v.latch == ()
    assert v.inhibitions == frozenset()
    assert [k for k, _ in v.alerts] == ["disk_lost"]


def test_a_primary_that_loses_quorum_resigns_and_takes_over_again_once_back() -> None:
    lost = res(role="Primary", quorum=False, connection="Connecting", peer_disk="DUnknown")
    v = assess(
        res(role="Primary", quorum=True), lost, on_disk_loss="failover", latched=LATCHED_NONE
    )
    assert v.inhibitions == {"no_quorum"}
    assert (v.latch, v.alerts) == ((), ())  # nothing to clear by hand: quorum comes back
    back = assess(
        lost, res(role="Primary", quorum=True), on_disk_loss="failover", latched=LATCHED_NONE
    )
    assert back.inhibitions == frozenset()


def test_latch_holds_after_the_disk_is_back() -> None:
    v = assess(res(), res(), on_disk_loss="failover", latched=frozenset({"disk"}))
    assert v.inhibitions == {"disk_latched"}
    assert v.latch == ()


def test_unknown_state_inhibits_takeover() -> None:
    v = assess(res(), None, on_disk_loss="failover", latched=LATCHED_NONE)
    assert v.inhibitions == {"drbd_unknown"}


def test_outdated_backup_cannot_take_over() -> None:
    v = assess(
        None,
        res(disk="Outdated", connection="Connecting", peer_disk="DUnknown", peer_role="Unknown"),
        on_disk_loss="failover",
        latched=LATCHED_NONE,
    )
    assert v.inhibitions == {"no_uptodate_disk"}


def test_events2_invocation_per_version() -> None:
    # Recorded on 8.4.11: `drbdsetup events2 --full` exits 20 "unrecognized option '--full'".
    assert events2_argv("r0", (8, 4, 11)) == ["drbdsetup", "events2", "r0"]
    assert events2_argv("r0", (9, 2, 4)) == ["drbdsetup", "events2", "--full", "r0"]
    assert events2_argv("r0", None) == ["drbdsetup", "events2", "--full", "r0"]


def test_guard_on_the_recorded_84_detach() -> None:
    """Real 8.4.11 events2 of a Primary whose backing disk switched to dm-error: the guard
    latches exactly on the Failed edge, with an UpToDate peer (no alert); after re-attach the
    latch (not the disk) keeps the node out."""
    path = Path(__file__).parent / "data/drbd/drbd-8.4.11-events2-disk-fail-detach-attach-node1.log"
    tracker = Tracker()
    latched: frozenset[str] = frozenset()
    verdicts = []
    for line in path.read_text().splitlines():
        event = parse_events2_line(line)
        if event is None:
            continue
        for old, new in tracker.feed(event):
            if tracker.synced and new is not None:
                v = assess(old, new, on_disk_loss="failover", latched=latched)
                latched |= {k for k, _ in v.latch}
                verdicts.append((new.worst_disk, v))
    latches = [(disk, v.latch) for disk, v in verdicts if v.latch]
    assert latches == [("Failed", (("disk", "disk Failed while Primary"),))]
    assert all(not v.alerts for _, v in verdicts)
    final_disk, final = verdicts[-1]
    assert final_disk == "UpToDate"
    assert final.inhibitions == {"disk_latched"}
