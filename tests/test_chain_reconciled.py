"""The runner finds what a previous run left up in its own task, and reports it through the
inbox as ChainReconciled (issue 19 §3): the daemon's loop never awaits a reconcile, so a
reload that adds an instance with a slow chain delays no other instance's adverts (the
namespace test: integration/test_chain_netns.py, test_a_reload_that_adds_a_slow_instance_
delays_no_advert). The daemon starts the machine when the report arrives.

Fakes: FakeStep (test_chain, through its make()), a step double that records calls; the
daemon's side is driven with a SimpleNamespace standing in for the Daemon (as in
test_metrics_serve) and FakeLog (test_fencing_rule)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from test_chain import _until_settled, in_loop, make
from test_drbd_step import res
from test_fencing_rule import FakeLog

from drbdha.chain.plan import StepState
from drbdha.chain.runner import ChainReconciled, ChainSettled, StepReport
from drbdha.chain.step import StepFailed
from drbdha.config import StorageConfig
from drbdha.daemon import Daemon


@in_loop
async def test_the_runner_reconciles_first_and_reports_what_it_found() -> None:
    runner, steps, log, events = make(("drbd", "nfsd", "vip"))
    steps[0].up = True  # DRBD Primary from before a kill -9

    async def broken() -> None:
        raise StepFailed("daemon_reload_failed", "exit 1")

    steps[1].prepare = broken  # type: ignore[attr-defined]
    assert runner.found is None
    task = asyncio.create_task(runner.run())
    found = await asyncio.wait_for(runner.wait_found(), 5)
    assert found == ChainReconciled(
        "nfs", runner.serial, ("drbd",), (("nfsd", "daemon_reload_failed: exit 1"),)
    )
    assert events == [found]
    assert runner.plan.states == [StepState.UP, StepState.DOWN, StepState.DOWN]
    assert log == []  # nothing started or stopped: no wish yet
    task.cancel()


@in_loop
async def test_a_wish_made_while_the_runner_reconciles_is_kept() -> None:
    """A reload (or a stop) may want the chain down before its runner has found what it
    holds: the wish applies to what it found."""
    runner, steps, log, events = make()
    steps[0].up = True
    slow = asyncio.Event()

    async def held() -> bool:
        await slow.wait()
        return True

    steps[0].held = held  # type: ignore[method-assign]
    task = asyncio.create_task(runner.run())
    await asyncio.sleep(0)
    runner.want(False)
    slow.set()
    settled = await _until_settled(events)
    assert settled[0].settled.up is False
    assert log == ["stop drbd"]
    assert isinstance(events[0], ChainReconciled)
    task.cancel()


@in_loop
async def test_a_restarted_runner_does_not_reconcile_again() -> None:
    """The supervisor restarts a runner that raised: what it found stays found (reconciling
    again would forget the wish and the steps it has started since)."""
    runner, steps, _, events = make()
    task = asyncio.create_task(runner.run())
    await asyncio.wait_for(runner.wait_found(), 5)
    task.cancel()
    steps[0].up = True  # started since (the plan knows it as down here: a fake's shortcut)
    task = asyncio.create_task(runner.run())
    runner.want(True)
    await _until_settled(events)
    assert [type(e) for e in events].count(ChainReconciled) == 1
    assert [e.step for e in events if isinstance(e, StepReport)] == ["drbd", "vip"]
    task.cancel()


def test_serials_tell_runners_apart() -> None:
    one, _, _, _ = make()
    two, _, _, _ = make()
    assert one.serial != two.serial


def _types(events: list[Any]) -> list[type]:
    return [type(e) for e in events]


@in_loop
async def test_the_report_comes_before_any_step() -> None:
    runner, _, _, events = make()
    task = asyncio.create_task(runner.run())
    runner.want(True)
    await _until_settled(events)
    assert _types(events) == [ChainReconciled, StepReport, StepReport, ChainSettled]
    task.cancel()


# ---- the daemon's side: what a found chain means (Daemon._adopt, driven without a daemon) --


def _daemon_with(facts: Any) -> Any:
    """A stand-in for the Daemon with what _adopt reads: a watcher's facts and a log."""
    me = SimpleNamespace(
        chains=SimpleNamespace(watchers={"r0": SimpleNamespace(facts=lambda: facts)}),
        log=FakeLog(),
    )
    me._drbd_role = lambda inst: Daemon._drbd_role(me, inst)
    return me


def _found_instance(held: tuple[str, ...]) -> Any:
    wants: list[bool] = []
    found = ChainReconciled("nfs", 1, held, ())
    return SimpleNamespace(
        name="nfs",
        storage=StorageConfig(name="nfs", drbd_resource="r0"),
        runner=SimpleNamespace(found=found, want=wants.append, wants=wants),
    )


@pytest.mark.parametrize(
    ("facts", "resumed"),
    [(None, True), (res(role="Primary", peer_role="Secondary"), True), (res(), False)],
    ids=["events2_not_yet", "events2_primary", "events2_secondary"],
)
def test_a_chain_found_with_drbd_held_resumes_unless_events2_says_secondary(
    facts: Any, resumed: bool
) -> None:
    """drbdadm's answer may have been unknown (held, to be safe for a stop): a Secondary in
    events2 overrides it, and what was found up is stopped instead of served."""
    me, inst = _daemon_with(facts), _found_instance(("drbd", "filesystem"))
    assert Daemon._adopt(me, inst) is resumed
    assert inst.runner.wants == ([] if resumed else [False])
    assert me.log.names() == ["chain.reconciled" if resumed else "chain.stale_steps"]


def test_steps_found_up_without_drbd_are_stopped() -> None:
    me, inst = _daemon_with(None), _found_instance(("vip",))
    assert Daemon._adopt(me, inst) is False
    assert inst.runner.wants == [False]
    assert me.log.names() == ["vip.reconciled"]
