"""The peer probe (peer_probe.py, drbd.probe_peer, Runner.adopt): when to ask DRBD to check a
silent Primary peer, what its answer means, and who owns a promote it made.

Fakes: FakeCommands (test_drbd_step) answers drbdadm; the instance is a SimpleNamespace with
the fields PeerProbe reads (name, storage, probe, machine, runner); FakeLog (test_fencing_rule)
collects log events; drbd.probe_peer is monkeypatched where PeerProbe.run is driven. The real
probe runs in the lab (integration/lab/test_nfs_vms.py's power-off).
"""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address
from types import SimpleNamespace
from typing import Any

import pytest
from test_chain import FakeStep, _until_settled, in_loop
from test_drbd_step import FakeCommands, res
from test_fencing_rule import FakeLog

from drbdha.chain.plan import Action, Plan, StepState
from drbdha.chain.runner import ChainSettled, Runner
from drbdha.clock import MonotonicClock
from drbdha.config import StorageConfig
from drbdha.daemon.probe import PeerProbe, PeerProbed, ProbePeer
from drbdha.metrics import Metrics
from drbdha.resources import drbd
from drbdha.vrrp.events import State
from drbdha.vrrp.machine import Peer

PEER = IPv4Address("192.0.2.2")
NOW = 10.0  # the deferral; the peer's last advert came at 1.0, Master_Down_Interval is 0.35


# ---- drbd.probe_peer -------------------------------------------------------------------------


@pytest.mark.parametrize(("rc", "outcome"), [(0, "promoted"), (11, "refused"), (17, "refused")])
def test_the_probe_is_one_drbdadm_primary(rc: int, outcome: str) -> None:
    cmds = FakeCommands({("drbdadm", "primary"): [(rc, "State change failed")]})
    r = asyncio.run(drbd.probe_peer("r0", cmds))
    assert cmds.calls == [("drbdadm", "primary", "r0")]  # never --force
    assert r.outcome == outcome


def test_a_probe_without_drbdadm_is_failed() -> None:
    async def missing(argv: Any) -> Any:
        raise FileNotFoundError(2, "No such file or directory", argv[0])

    assert asyncio.run(drbd.probe_peer("r0", missing)).outcome == "failed"


# ---- when to probe ---------------------------------------------------------------------------


def instance(
    inhibitions: tuple[str, ...] = ("peer_primary",),
    *,
    priority: int | None = 200,
    state: State = State.BACKUP,
    deferred: bool = True,
    storage: bool = True,
    heard_at: float = 1.0,
) -> Any:
    peer = None if priority is None else Peer(PEER, priority, heard_at)
    runner = SimpleNamespace(adopted=[])
    runner.adopt = lambda name: runner.adopted.append(name) or True
    return SimpleNamespace(
        name="lab",
        storage=StorageConfig(name="nfs", drbd_resource="r0", promote_timeout=7.0)
        if storage
        else None,
        machine=SimpleNamespace(
            inhibitions=dict.fromkeys(inhibitions, float("inf")),
            last_peer=peer,
            state=state,
            takeover_deferred=deferred,
            master_down_interval=0.35,
        ),
        runner=runner,
    )


def make() -> tuple[PeerProbe, list[object], FakeLog]:
    put: list[object] = []
    log = FakeLog()
    return PeerProbe(put.append, Metrics(), log, MonotonicClock()), put, log


def test_a_silent_primary_peer_is_probed_once_per_deferral() -> None:
    probe, put, _ = make()
    inst = instance()
    probe.deferred(inst, NOW)
    probe.deferred(inst, NOW)
    assert put == [ProbePeer("lab", "r0", 7.0)]
    assert probe.state.get(inst.name) == "asked"


@pytest.mark.parametrize(
    "inst",
    [
        instance(("peer_primary", "no_uptodate_disk")),  # another gate fails too
        instance(("promote_backoff", "peer_primary")),
        instance(()),  # deferred while our own chain stops
        instance(priority=None),  # never heard a master: nothing went silent
        instance(priority=0),  # handing over: the peer demotes by itself
        instance(storage=False),
        instance(heard_at=9.8),  # heard 0.2 s ago: the timer met an advert in one loop turn
    ],
    ids=[
        "not_uptodate",
        "backoff",
        "chain_stopping",
        "never_heard",
        "priority_0",
        "no_storage",
        "heard_just_now",
    ],
)
def test_no_probe_unless_the_silent_peer_is_the_only_reason(inst: Any) -> None:
    probe, put, _ = make()
    probe.deferred(inst, NOW)
    assert put == []
    assert probe.state.get(inst.name) is None


def test_run_logs_counts_and_reports_the_outcome(monkeypatch: pytest.MonkeyPatch) -> None:
    async def refused(resource: str) -> drbd.Probed:
        assert resource == "r0"
        return drbd.Probed("refused", "drbdadm primary r0: exit 11: two primaries")

    monkeypatch.setattr(drbd, "probe_peer", refused)
    probe, put, log = make()
    asyncio.run(probe.run(ProbePeer("lab", "r0", 7.0)))
    assert put == [PeerProbed("lab", "refused")]
    (level, event, fields) = log.events[0]
    assert (level, event, fields["outcome"]) == ("warning", "drbd.peer_probed", "refused")
    sample = probe.metrics.registry.get_sample_value(
        "drbdha_peer_probes_total", {"vrrp_instance": "lab", "outcome": "refused"}
    )
    assert sample == 1.0


def test_a_probe_that_hangs_is_failed_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    async def hang(resource: str) -> drbd.Probed:
        await asyncio.sleep(60)
        return drbd.Probed("promoted", resource)

    monkeypatch.setattr(drbd, "probe_peer", hang)
    probe, put, log = make()
    asyncio.run(probe.run(ProbePeer("lab", "r0", 0.05)))
    assert put == [PeerProbed("lab", "failed")]
    assert log.events[0][2]["detail"] == "no answer in 0.05 s"


def test_run_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(resource: str) -> drbd.Probed:
        raise RuntimeError(resource)

    monkeypatch.setattr(drbd, "probe_peer", broken)
    probe, put, log = make()
    asyncio.run(probe.run(ProbePeer("lab", "r0", 7.0)))
    assert put == [PeerProbed("lab", "failed")]
    assert log.events[0][0] == "error"


# ---- who owns a promote the probe made -------------------------------------------------------


def test_a_promote_during_the_deferral_waits_for_the_takeover() -> None:
    probe, _, log = make()
    inst = instance()
    probe.state[inst.name] = "asked"
    probe.probed(inst, PeerProbed("lab", "promoted"))
    assert probe.state.get(inst.name) == "promoted"
    assert inst.runner.adopted == []
    # The DRBD event clears peer_primary, the takeover goes ahead: the chain's step finds
    # us Primary; nothing to undo.
    inst.machine.takeover_deferred, inst.machine.state = False, State.MASTER
    probe.settle(inst)
    assert probe.state.get(inst.name) is None
    assert inst.runner.adopted == []
    assert log.events == []


@pytest.mark.parametrize("state", [State.BACKUP, State.FAULT])
def test_a_promote_without_a_takeover_is_handed_to_the_chain_to_demote(state: State) -> None:
    probe, _, log = make()
    inst = instance()
    probe.state[inst.name] = "asked"
    probe.probed(inst, PeerProbed("lab", "promoted"))
    inst.machine.takeover_deferred, inst.machine.state = False, state  # an advert came back
    probe.settle(inst)
    assert inst.runner.adopted == ["drbd"]
    assert probe.state.get(inst.name) is None
    assert log.names() == ["drbd.peer_probe_undone"]


def test_a_refused_probe_is_not_repeated_until_the_deferral_ends() -> None:
    probe, put, _ = make()
    inst = instance()
    probe.deferred(inst, NOW)
    probe.probed(inst, PeerProbed("lab", "refused"))
    probe.deferred(inst, NOW)
    assert len(put) == 1
    inst.machine.takeover_deferred = False
    probe.settle(inst)
    assert probe.state.get(inst.name) is None
    inst.machine.takeover_deferred = True
    probe.deferred(inst, NOW)
    assert len(put) == 2


# ---- Plan.adopt / Runner.adopt ---------------------------------------------------------------


def test_plan_adopts_a_down_step_in_a_new_generation_and_stops_it() -> None:
    plan = Plan(("drbd", "filesystem", "vip"))
    plan.want(False)
    gen = plan.generation
    assert plan.adopt(0)
    assert plan.states[0] is StepState.UP
    assert plan.generation == gen + 1
    nxt = plan.next()
    assert nxt is not None
    assert (nxt.index, nxt.action) == (0, Action.STOP)


def test_plan_does_not_adopt_a_busy_or_up_step() -> None:
    plan = Plan(("drbd", "vip"))
    plan.want(True)
    nxt = plan.next()
    assert nxt is not None
    plan.begin(nxt)
    assert not plan.adopt(1)  # a step in flight: the chain is busy
    plan.done(True)
    assert not plan.adopt(0)  # already up


@in_loop
async def test_runner_demotes_an_adopted_step_and_reports_it() -> None:
    log: list[str] = []
    events: list[Any] = []
    steps = [FakeStep("drbd", log), FakeStep("vip", log)]
    runner = Runner("nfs", steps, events.append, MonotonicClock())
    task = asyncio.create_task(runner.run())
    runner.want(False)
    await _until_settled(events)
    steps[0].up = True  # promoted outside the chain
    assert runner.adopt("drbd")
    settled = await _until_settled(events, 2)
    assert log == ["stop drbd"]
    assert settled[-1].settled.ok
    assert not steps[0].up
    assert isinstance(settled[-1], ChainSettled)
    task.cancel()


# ---- the probe and the takeover's own promote, one at a time ---------------------------------


@in_loop
async def test_the_takeover_promote_waits_for_a_probe_and_finds_us_primary() -> None:
    facts = {"now": res(peer_role="Unknown", peer_disk="DUnknown", connection="Connecting")}
    cmds = FakeCommands()
    step = drbd.DrbdStep(
        StorageConfig(name="nfs", drbd_resource="r9"), lambda: facts["now"], lambda: False, cmds
    )
    release = asyncio.Event()

    async def probe_in_fence_peer_handler(argv: Any) -> Any:
        await release.wait()
        facts["now"] = res(role="Primary", peer_role="Unknown", peer_disk="Outdated")
        return await FakeCommands()(argv)

    probe = asyncio.create_task(drbd.probe_peer("r9", probe_in_fence_peer_handler))
    await asyncio.sleep(0)
    start = asyncio.create_task(step.start())
    await asyncio.sleep(0.05)
    assert not start.done()  # held behind the probe's drbdadm primary
    release.set()
    assert (await probe).outcome == "promoted"
    await start
    assert cmds.calls == []  # Primary already: no second promote
