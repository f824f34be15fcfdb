"""The chain: the pure plan and the runner task, with fake steps that record what they are
asked to do (FakeStep: no kernel, no DRBD; the real steps run in the lab)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from drbdha.chain.plan import Action, Next, Plan, Settled, StepState
from drbdha.chain.runner import ChainSettled, Runner, StepReport
from drbdha.chain.step import StepFailed
from drbdha.clock import MonotonicClock

# ---- plan (pure) -------------------------------------------------------------------------


def drive(plan: Plan, fail: dict[tuple[int, Action], str] | None = None) -> list[Next]:
    """Run the plan to rest with steps that succeed unless listed in `fail`."""
    done = []
    while (nxt := plan.next()) is not None:
        plan.begin(nxt)
        err = (fail or {}).get((nxt.index, nxt.action))
        plan.done(err is None, err)
        done.append(nxt)
    return done


def test_start_in_order_stop_in_reverse() -> None:
    plan = Plan(("drbd", "fs", "vip"))
    plan.want(True)
    assert drive(plan) == [Next(0, Action.START), Next(1, Action.START), Next(2, Action.START)]
    assert plan.settled() == Settled(up=True, ok=True)
    plan.want(False)
    assert drive(plan) == [Next(2, Action.STOP), Next(1, Action.STOP), Next(0, Action.STOP)]
    assert plan.settled() == Settled(up=False, ok=True)


def test_no_wish_leaves_everything_as_found() -> None:
    plan = Plan(("drbd", "vip"), held=(True, False))
    assert plan.next() is None
    assert plan.settled() is None
    assert plan.held == ("drbd",)


def test_restart_with_chain_half_up_starts_only_what_is_missing() -> None:
    plan = Plan(("drbd", "vip"), held=(True, False))
    plan.want(True)
    assert drive(plan) == [Next(1, Action.START)]  # no second promote


def test_latest_wish_wins_between_steps() -> None:
    plan = Plan(("drbd", "fs", "vip"))
    plan.want(True)
    first = plan.next()
    assert first == Next(0, Action.START)
    plan.begin(first)
    plan.want(False)  # became backup while promoting
    assert plan.next() is None  # the step in flight is not abandoned
    plan.done(True)
    assert drive(plan) == [Next(0, Action.STOP)]  # what was started is stopped, in reverse
    assert plan.settled() == Settled(up=False, ok=True)


def test_failed_start_rolls_back_including_the_failed_step_and_does_not_retry() -> None:
    plan = Plan(("drbd", "fs", "vip"))
    plan.want(True)
    steps = drive(plan, fail={(1, Action.START): "mount failed"})
    assert steps == [
        Next(0, Action.START),
        Next(1, Action.START),
        Next(1, Action.STOP),
        Next(0, Action.STOP),
    ]
    settled = plan.settled()
    assert settled is not None
    assert not settled.ok
    assert (settled.failed_step, settled.failed_action) == ("fs", Action.START)
    assert plan.next() is None  # not again until a new wish
    plan.want(False)
    plan.want(True)
    assert plan.next() == Next(0, Action.START)


def test_failed_stop_is_never_swallowed() -> None:
    plan = Plan(("drbd", "vip"), held=(True, True))
    plan.want(False)
    steps = drive(plan, fail={(0, Action.STOP): "demote_failed"})
    assert steps == [Next(1, Action.STOP), Next(0, Action.STOP)]
    assert plan.states == [StepState.FAILED, StepState.DOWN]
    settled = plan.settled()
    assert settled is not None
    assert (settled.ok, settled.failed_step, settled.failed_action) == (False, "drbd", "stop")
    plan.want(True)  # a new wish does not un-stick it: the node may still hold storage
    assert plan.next() is None
    assert plan.settled() == settled


def test_same_wish_twice_is_not_a_new_generation() -> None:
    plan = Plan(("vip",))
    assert plan.want(True)
    assert not plan.want(True)
    assert plan.generation == 1


def test_done_without_a_step_is_a_bug() -> None:
    with pytest.raises(RuntimeError):
        Plan(("vip",)).done(True)


# ---- runner (asyncio, fake steps) --------------------------------------------------------


def in_loop(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test in a fresh event loop (the suite has no asyncio plugin); the
    arguments (parametrize) are passed through."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))

    return run


class FakeStep:
    """A step that records calls, is idempotent like the real ones, and can be told to fail
    or to take time."""

    def __init__(self, name: str, log: list[str], *, delay: float = 0.0) -> None:
        self.name = name
        self.log = log
        self.delay = delay
        self.up = False
        self.fail_start: StepFailed | None = None
        self.fail_stop: StepFailed | None = None
        self.start_timeout = self.stop_timeout = 5.0
        self.calls = 0  # real changes made (a start on a started step makes none)

    async def start(self) -> None:
        self.log.append(f"start {self.name}")
        await asyncio.sleep(self.delay)
        if self.fail_start:
            raise self.fail_start
        if not self.up:
            self.calls += 1
        self.up = True

    async def stop(self) -> None:
        self.log.append(f"stop {self.name}")
        await asyncio.sleep(self.delay)
        if self.fail_stop:
            raise self.fail_stop
        if self.up:
            self.calls += 1
        self.up = False

    async def held(self) -> bool:
        return self.up


async def _until_settled(events: list[Any], n: int = 1) -> list[ChainSettled]:
    for _ in range(500):
        settled = [e for e in events if isinstance(e, ChainSettled)]
        if len(settled) >= n:
            return settled
        await asyncio.sleep(0.01)
    msg = f"chain did not settle {n} times: {events}"
    raise AssertionError(msg)


def make(
    names: tuple[str, ...] = ("drbd", "vip"), delay: float = 0.0
) -> tuple[Runner, list[FakeStep], list[str], list[Any]]:
    log: list[str] = []
    events: list[Any] = []
    steps = [FakeStep(n, log, delay=delay) for n in names]
    return Runner("nfs", steps, events.append, MonotonicClock()), steps, log, events


@in_loop
async def test_runner_reports_each_step_and_the_resting_point() -> None:
    runner, _, log, events = make()
    task = asyncio.create_task(runner.run())
    runner.want(True)
    settled = await _until_settled(events)
    assert log == ["start drbd", "start vip"]
    reports = [e for e in events if isinstance(e, StepReport)]
    assert [(r.step, r.action, r.ok) for r in reports] == [
        ("drbd", Action.START, True),
        ("vip", Action.START, True),
    ]
    assert settled[0].settled == Settled(up=True, ok=True)
    assert settled[0].generation == runner.generation
    task.cancel()


@in_loop
async def test_double_start_and_double_stop_are_harmless() -> None:
    runner, steps, _, events = make()
    task = asyncio.create_task(runner.run())
    for step in steps:
        await step.start()
        await step.start()
    assert [s.calls for s in steps] == [1, 1]
    for step in steps:
        await step.stop()
        await step.stop()
    assert [s.calls for s in steps] == [2, 2]
    runner.want(False)  # already down: the runner has nothing to do and says so
    settled = await _until_settled(events)
    assert settled[0].settled == Settled(up=False, ok=True)
    task.cancel()


@in_loop
async def test_timeout_is_a_failed_step_and_rolls_back() -> None:
    runner, steps, log, events = make()
    steps[1].start_timeout = 0.05
    steps[1].delay = 1.0
    task = asyncio.create_task(runner.run())
    runner.want(True)
    settled = (await _until_settled(events))[0].settled
    assert not settled.ok
    assert settled.failed_step == "vip"
    assert settled.error is not None
    assert settled.error.startswith("timeout")
    assert log[:2] == ["start drbd", "start vip"]
    assert log[2:] == ["stop vip", "stop drbd"]
    task.cancel()


@in_loop
async def test_refusal_asks_for_backoff() -> None:
    runner, steps, _, events = make()
    steps[0].fail_start = StepFailed("no_uptodate_disk", backoff=True)
    task = asyncio.create_task(runner.run())
    runner.want(True)
    settled = (await _until_settled(events))[0].settled
    assert (settled.ok, settled.backoff, settled.failed_step) == (False, True, "drbd")
    task.cancel()


@in_loop
async def test_a_step_that_raises_a_bug_is_a_failed_step_not_a_dead_runner() -> None:
    runner, steps, _, events = make()

    async def broken() -> None:
        raise ZeroDivisionError

    steps[0].start = broken  # type: ignore[method-assign]
    task = asyncio.create_task(runner.run())
    runner.want(True)
    settled = (await _until_settled(events))[0].settled
    assert settled.failed_step == "drbd"
    assert "ZeroDivisionError" in (settled.error or "")
    assert not task.done()
    task.cancel()


@in_loop
async def test_wish_reversed_mid_takeover_stops_what_was_started() -> None:
    runner, steps, log, events = make(("drbd", "fs", "vip"), delay=0.05)
    task = asyncio.create_task(runner.run())
    runner.want(True)
    await asyncio.sleep(0.07)  # inside the second step
    runner.want(False)
    settled = await _until_settled(events)
    assert settled[-1].settled == Settled(up=False, ok=True)
    assert log == ["start drbd", "start fs", "stop fs", "stop drbd"]
    assert not any(s.up for s in steps)
    task.cancel()


@in_loop
async def test_reconcile_finds_what_a_previous_run_left_up() -> None:
    runner, steps, log, _ = make()
    steps[0].up = True  # DRBD Primary from before a kill -9
    assert await runner.reconcile() == ("drbd",)
    assert runner.plan.states == [StepState.UP, StepState.DOWN]
    task = asyncio.create_task(runner.run())
    runner.want(True)
    await asyncio.sleep(0.05)
    assert log == ["start vip"]
    assert steps[0].calls == 0  # no second promote
    task.cancel()


@pytest.mark.parametrize(
    ("step", "error", "found"),
    [
        pytest.param(0, StepFailed("drbdadm_failed"), ("drbd",), id="cannot_say"),
        # A bug in held() (test_chain_reconciled: the runner reconciles in its own task).
        pytest.param(1, KeyError("held"), ("vip",), id="raises"),
    ],
)
@in_loop
async def test_a_step_that_cannot_say_counts_as_held(
    step: int, error: Exception, found: tuple[str, ...]
) -> None:
    runner, steps, _, _ = make()

    async def unknown() -> bool:
        raise error

    steps[step].held = unknown  # type: ignore[method-assign]
    assert await runner.reconcile() == found


@in_loop
async def test_prepare_runs_what_steps_can_do_before_a_takeover_and_reports_failures() -> None:
    runner, steps, log, _ = make(("drbd", "nfsd", "vip"))

    async def ready() -> None:
        log.append("prepare nfsd")

    async def broken() -> None:
        raise StepFailed("daemon_reload_failed", "exit 1")

    steps[1].prepare = ready  # type: ignore[attr-defined]
    assert await runner.prepare() == []
    assert log == ["prepare nfsd"]
    steps[1].prepare = broken  # type: ignore[attr-defined]
    assert await runner.prepare() == [("nfsd", "daemon_reload_failed: exit 1")]
    assert runner.plan.states == [StepState.DOWN] * 3  # nothing started
