"""The stale Primary (daemon/stale.py; found by the fault campaign, issue 22): the master's VM
froze past the peer's takeover and came back Primary. Its copy lacks what the peer wrote
since; the peer channel must never let it outdate the peer's copy (wire.NEWER), and the
stale node must latch, resign and finish its release without writing to its copy. And a node
that was stopped for a while distrusts its copy and its peer's silence (daemon/stall.py).

Real: Chains, LatchStore, Metrics, the VRRP Machine, drbd_guard. Fakes: `put` (the inbox),
the applier (effects recorded, Activate/Deactivate not carried out), a SimpleNamespace
instance with the fields Chains reads, and `FakeRun` for drbdadm (DRBD cannot run here).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fakes import params
from test_drbd_step import res
from test_fencing_rule import FakeLog

from drbdha import cli
from drbdha.chain.plan import Action
from drbdha.chain.runner import Runner, StepReport
from drbdha.clock import AliveMark, MonotonicClock
from drbdha.config import StorageConfig
from drbdha.daemon import storage
from drbdha.daemon.stale import PeerServes, ResumeToRelease, resume_to_release
from drbdha.daemon.stall import THRESHOLD, WINDOW, Stalled, StallWatch
from drbdha.daemon.storage import Chains, OutdateSelf
from drbdha.daemon.storage_state import StorageState
from drbdha.defaults import ALIVE_NAME, STALL_WINDOW
from drbdha.fencing import handler, wire
from drbdha.latches import LatchStore
from drbdha.metrics import Metrics
from drbdha.resources import drbd
from drbdha.resources.drbd import DrbdChanged
from drbdha.resources.drbd_guard import still_suspect, wrote_alone
from drbdha.resources.proc import Result
from drbdha.vrrp.events import Deactivate, State
from drbdha.vrrp.machine import Machine

ALONE = res(role="Primary", connection="Connecting", peer_role="Unknown", peer_disk="Outdated")
FROZEN = dataclasses.replace(ALONE, suspended=True, suspended_by=frozenset({"fencing"}))
SECONDARY_ALONE = dataclasses.replace(ALONE, role="Secondary")
RESYNCED = res()  # Connected, UpToDate/UpToDate
SYNCING = res(peer_disk="Inconsistent")


# ---- does this copy hold writes the peer lacks? -------------------------------------------


@pytest.mark.parametrize(
    ("before", "new", "stale", "expected"),
    [
        (False, ALONE, False, True),  # writing with no peer: the generation moves on
        (False, FROZEN, False, False),  # frozen: DRBD lets nothing through
        (True, SECONDARY_ALONE, False, True),  # stepped down: the copy still holds them
        (True, SYNCING, False, True),  # the peer has not caught up yet
        (True, RESYNCED, False, False),  # equal copies again
        (True, None, False, True),  # no facts: nothing learnt
        (True, ALONE, True, False),  # a stale copy never counts, resumed or not
    ],
    ids=["alone", "frozen", "stepped-down", "syncing", "resynced", "no-facts", "stale"],
)
def test_wrote_alone(before: bool, new: Any, stale: bool, expected: bool) -> None:
    assert wrote_alone(before, new, stale=stale) is expected


# ---- Chains: latch, resign, resume once the VIP is gone ----------------------------------


def setup(tmp_path: Path, state: State = State.MASTER, vip_up: bool = True) -> Any:
    applied: list[Any] = []
    put: list[object] = []
    log = FakeLog()
    latches = LatchStore(tmp_path / "latches.json")
    chains = Chains(
        lambda _inst, effects, _now: applied.extend(effects),
        put.append,
        latches,
        Metrics(),
        log,
        MonotonicClock(),
    )
    machine = Machine(params(version=3, advert_interval=0.1))
    machine.start(0.0)
    if state is State.MASTER:
        machine.take_over(0.0, 254, 0.0)
    inst = SimpleNamespace(
        name="lab",
        storage=StorageConfig(name="nfs", drbd_resource="r0"),
        machine=machine,
        vip_up=vip_up,
        runner=Runner("lab", [], lambda _report: None, MonotonicClock()),
    )
    chains.states["lab"] = StorageState(drbd=FROZEN)
    chains.by_resource["r0"] = inst
    return SimpleNamespace(
        chains=chains, inst=inst, applied=applied, put=put, log=log, latches=latches
    )


def test_a_frozen_primary_told_the_peer_serves_latches_and_resigns(tmp_path: Path) -> None:
    t = setup(tmp_path)
    assert t.inst.machine.state is State.MASTER
    t.chains.stale_copy(PeerServes("r0", "primary", "this node is Primary"), 1.0)
    st = t.chains.states["lab"]
    assert "disk" in st.latches
    assert "stale copy" in st.latches["disk"].reason
    on_disk = LatchStore(tmp_path / "latches.json")
    on_disk.load()
    assert "disk" in on_disk.of("lab")  # kept across a restart
    assert t.inst.machine.state is State.BACKUP
    assert any(isinstance(e, Deactivate) for e in t.applied)
    assert "disk_latched" in t.inst.machine.inhibitions
    assert t.put == []  # the VIP is still up: DRBD's I/O stays frozen
    assert ("critical", "stale.copy") in [(lvl, e) for lvl, e, _ in t.log.events]

    t.inst.vip_up = False
    t.chains.on_step(StepReport("lab", "vip", Action.STOP, ok=True, took=0.01))
    assert t.put == [ResumeToRelease("lab", "r0")]
    t.chains.stale_copy(PeerServes("r0", "newer", "again"), 2.0)  # asked again: once only
    assert t.put == [ResumeToRelease("lab", "r0")]


def test_a_stale_primary_whose_vip_is_gone_resumes_at_once(tmp_path: Path) -> None:
    t = setup(tmp_path, state=State.FAULT, vip_up=False)  # a failed check released it
    t.chains.stale_copy(PeerServes("r0", "newer", "wrote alone"), 1.0)
    assert t.put == [ResumeToRelease("lab", "r0")]


def test_only_a_frozen_primary_is_a_stale_copy(tmp_path: Path) -> None:
    t = setup(tmp_path)
    t.chains.states["lab"].drbd = SECONDARY_ALONE  # a Secondary's promote just fails
    t.chains.stale_copy(PeerServes("r0", "primary", "this node is Primary"), 1.0)
    assert t.chains.states["lab"].latches == {}
    assert t.inst.machine.state is State.MASTER
    assert t.put == []


def test_its_own_detach_raises_no_second_latch_or_alert(tmp_path: Path) -> None:
    t = setup(tmp_path)
    t.chains.stale_copy(PeerServes("r0", "primary", "this node is Primary"), 1.0)
    reason = t.chains.states["lab"].latches["disk"].reason
    detached = dataclasses.replace(
        ALONE, devices=(dataclasses.replace(ALONE.devices[0], disk="Diskless"),)
    )
    t.chains._judge(t.inst, FROZEN, detached, 2.0)
    assert t.chains.states["lab"].latches["disk"].reason == reason
    assert "no_uptodate_copy" not in t.chains.states["lab"].alerts


class FakeRun:
    def __init__(self, rc: int) -> None:
        self.rc = rc
        self.calls: list[list[str]] = []

    async def __call__(self, argv: list[str]) -> Result:
        self.calls.append(argv)
        return Result(tuple(argv), self.rc, "", "" if self.rc == 0 else "no")


DETACH = ["drbdadm", "detach", "--force", "r0"]
RESUME = ["drbdadm", "resume-io", "r0"]


@pytest.mark.parametrize(
    ("rc", "calls", "event"),
    [(0, [DETACH, RESUME], "stale.detached_and_resumed"), (10, [DETACH], "stale.release_blocked")],
    ids=["detached-then-resumed", "no-resume-without-the-detach"],
)
def test_the_release_detaches_before_it_resumes(rc: int, calls: list[Any], event: str) -> None:
    run, log = FakeRun(rc), FakeLog()
    asyncio.run(resume_to_release(ResumeToRelease("lab", "r0"), log, run))
    assert run.calls == calls
    assert log.names() == [event]


# ---- this node was stopped (daemon/stall.py) -----------------------------------------------

LOST_LINK = res(connection="Connecting", peer_role="Unknown", peer_disk="DUnknown")
LOST_OUTDATED = res("Secondary", "Outdated", "Unknown", "DUnknown", "Connecting")


def test_a_secondary_that_stalled_outdates_itself_when_its_link_is_lost(tmp_path: Path) -> None:
    t = setup(tmp_path, state=State.BACKUP, vip_up=False)
    st = t.chains.states["lab"]
    st.drbd = res()  # connected, UpToDate: the stall alone proves nothing
    t.chains.stalled(Stalled(4.2), 100.0)
    assert t.put == []
    assert t.chains.distrusts_silence("r0", 100.0 + WINDOW - 1) == 4.2
    st.drbd = LOST_LINK  # DRBD finds the link gone: the peer may have fenced us as dead
    t.chains.after_stall(t.inst, 101.0)
    t.chains.after_stall(t.inst, 101.5)
    assert t.put == [OutdateSelf("lab", "r0")]  # once
    assert "stalled_copy" in t.inst.machine.inhibitions
    # Past the window the copy is still suspect while DRBD has not outdated it (the lab:
    # the outdate failed beside a promotion in flight, and the window ran out).
    assert t.chains.distrusts_silence("r0", 100.0 + WINDOW + 1) == 4.2


@pytest.mark.parametrize(
    ("new", "suspect"),
    [
        (LOST_LINK, True),  # nothing has guarded it yet
        (LOST_OUTDATED, False),  # DRBD refuses by itself
        (SYNCING, False),  # connected: the copies met, DRBD compared their generations
        (res(disk="Inconsistent", peer_disk="UpToDate"), False),  # a resync target
        (None, True),  # no facts: nothing learnt
    ],
    ids=["disconnected", "outdated", "connected", "sync-target", "no-facts"],
)
def test_a_stalled_copy_stays_suspect_until_drbd_guards_it(new: Any, suspect: bool) -> None:
    assert still_suspect(True, new) is suspect
    assert still_suspect(False, new) is False


def test_the_suspicion_holds_the_takeover_back_until_it_clears(tmp_path: Path) -> None:
    t = setup(tmp_path, state=State.BACKUP, vip_up=False)
    st = t.chains.states["lab"]
    st.drbd = res()
    t.chains.stalled(Stalled(6.7), 100.0)
    st.drbd = LOST_LINK
    t.chains.after_stall(t.inst, 100.5)
    t.chains.on_drbd(DrbdChanged("r0", LOST_LINK, LOST_LINK), 100.0 + WINDOW + 5)
    assert "stalled_copy" in t.inst.machine.inhibitions  # no clock clears it
    t.chains.on_drbd(DrbdChanged("r0", LOST_LINK, LOST_OUTDATED), 100.0 + WINDOW + 6)
    assert "stalled_copy" not in t.inst.machine.inhibitions
    assert "drbd.suspicion_cleared" in t.log.names()


def test_a_failed_outdate_of_a_stalled_copy_is_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = setup(tmp_path, state=State.BACKUP, vip_up=False)
    st = t.chains.states["lab"]
    st.suspect = True
    outcomes = iter(["failed", "outdated"])

    async def fake_outdate(*_args: Any, **_kw: Any) -> drbd.Outdated:  # FAKE: no DRBD here
        return drbd.Outdated(next(outcomes), "UpToDate", "busy")

    monkeypatch.setattr(drbd, "outdate", fake_outdate)
    monkeypatch.setattr(storage, "OUTDATE_RETRY", 0.0)
    t.chains.watchers["r0"] = SimpleNamespace(facts=lambda: LOST_LINK)
    asyncio.run(t.chains.outdate_self(OutdateSelf("lab", "r0")))
    assert t.put == [OutdateSelf("lab", "r0")]  # again, through the inbox
    st.suspect = False  # DRBD shows it Outdated: no more tries
    asyncio.run(t.chains.outdate_self(OutdateSelf("lab", "r0")))
    assert t.put == [OutdateSelf("lab", "r0")]


def test_the_loop_sees_a_stall_once_whoever_looks_first() -> None:
    class Clock(MonotonicClock):
        now = 10.0

        def monotonic(self) -> float:
            return self.now

    clock = Clock()
    watch = StallWatch(lambda _s: None, clock)
    assert watch.check(10.1) is None
    stalled = watch.check(16.8)
    assert stalled is not None
    assert stalled.seconds == pytest.approx(6.6)
    assert watch.check(16.9) is None  # reported once


def test_a_link_lost_after_the_window_is_not_blamed_on_the_stall(tmp_path: Path) -> None:
    t = setup(tmp_path, state=State.BACKUP, vip_up=False)
    t.chains.states["lab"].drbd = res()
    t.chains.stalled(Stalled(1.0), 100.0)
    t.chains.states["lab"].drbd = LOST_LINK
    t.chains.after_stall(t.inst, 100.0 + WINDOW + 0.1)
    assert t.put == []


def test_the_stall_watch_reports_a_late_wake_up() -> None:
    class JumpingClock(MonotonicClock):
        """A FAKE clock that jumps 3 s between the watch's two reads, as a frozen VM's."""

        def __init__(self) -> None:
            self.reads = 0

        def monotonic(self) -> float:
            self.reads += 1
            return 1000.0 + (3.0 if self.reads % 2 == 0 else 0.0) * (self.reads // 2)

    got: list[Stalled] = []

    async def main() -> None:
        task = asyncio.create_task(StallWatch(got.append, JumpingClock()).run())
        await asyncio.sleep(0.25)
        task.cancel()

    asyncio.run(main())
    assert got
    assert all(s.seconds >= THRESHOLD for s in got)


# ---- a daemon that did not stop cleanly (clock.AliveMark) ----------------------------------


def test_the_alive_mark_tells_how_long_ago_a_daemon_last_ran(tmp_path: Path) -> None:
    mark = AliveMark(tmp_path / "alive")
    assert mark.left_behind() is None  # a clean stop, or never ran
    mark.mark()
    left = mark.left_behind()
    assert left is not None
    assert 0.0 <= left < 5.0
    mark.clear()
    assert mark.left_behind() is None


@pytest.mark.parametrize(
    ("ago", "outcome", "expected"),
    [
        (None, wire.UNREACHABLE, wire.UNREACHABLE),  # stopped cleanly: silence is death
        (2.0, wire.UNREACHABLE, wire.FAILED),  # just crashed, or frozen and killed
        (2.0, wire.OUTDATED, wire.OUTDATED),  # an answer is an answer
        (STALL_WINDOW + 5, wire.UNREACHABLE, wire.UNREACHABLE),  # gone too long: a crash loop
    ],
    ids=["no-mark", "fresh-mark", "answered", "old-mark"],
)
def test_the_handler_alone_distrusts_silence_after_an_unclean_end(
    tmp_path: Path, ago: float | None, outcome: str, expected: str
) -> None:
    if ago is not None:
        then = time.clock_gettime(time.CLOCK_BOOTTIME) - ago
        (tmp_path / ALIVE_NAME).write_text(f"{then:.3f}\n")
    got = cli._distrust_after_crash(handler.Answer(outcome, "asked"), tmp_path)
    assert got.outcome == expected
    assert got.exit_code == (1 if expected == wire.FAILED else wire.EXIT_CODES[expected])
