"""Supervised background tasks (drbdha/supervise.py): a task beside the loop that raises is
logged with its exception, counted and (if long-lived) restarted with a back-off, and a chain
runner beside it goes on. The daemon itself, with a watcher that raises, is tested in
integration/test_chain_netns.py (test_a_failing_background_task_cancels_no_chain).

Fakes: RaisingWatcher (a DRBD watcher whose run() has a bug for its first runs), FakeSleep
(records the back-off instead of waiting), FakeClock; FakeStep (test_chain) in a real Runner;
FakeLog (test_fencing_rule) collects log events."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from test_chain import FakeStep, _until_settled, in_loop
from test_fencing_rule import FakeLog

from drbdha.chain.runner import Runner
from drbdha.clock import MonotonicClock
from drbdha.daemon.supervise import BACKOFF_MAX, BACKOFF_MIN, Supervisor
from drbdha.metrics import Metrics


class RaisingWatcher:
    """run() raises on its first `failures` runs, then runs until cancelled."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.runs = 0
        self.running = asyncio.Event()

    async def run(self) -> None:
        self.runs += 1
        if self.runs <= self.failures:
            msg = f"watcher bug {self.runs}"
            raise KeyError(msg)
        self.running.set()
        await asyncio.Event().wait()


class FakeSleep:
    def __init__(self, clock: FakeClock | None = None) -> None:
        self.delays: list[float] = []
        self.clock = clock

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        if self.clock is not None:
            self.clock.now += delay
        await asyncio.sleep(0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


def supervisor(sleep: FakeSleep, clock: Any = None) -> tuple[Supervisor, Metrics, FakeLog]:
    metrics, log = Metrics(), FakeLog()
    count = metrics.task_failures.labels
    sup = Supervisor(lambda task: count(task).inc(), log, clock or MonotonicClock(), sleep)
    return sup, metrics, log


def failures(metrics: Metrics, task: str) -> float | None:
    return metrics.registry.get_sample_value("drbdha_task_failures_total", {"task": task})


async def _keep_until(
    sup: Supervisor, name: str, fn: Callable[[], Awaitable[None]], done: asyncio.Event
) -> None:
    """Keep `fn` as task `name` until `done` is set (within 5 s), then cancel it."""
    async with asyncio.TaskGroup() as tg:
        task = sup.keep(tg, name, fn)
        await asyncio.wait_for(done.wait(), 5)
        task.cancel()


@in_loop
async def test_a_raising_watcher_is_restarted_and_the_runner_beside_it_goes_on() -> None:
    sleep = FakeSleep()
    sup, metrics, log = supervisor(sleep)
    events: list[Any] = []
    steps = [FakeStep("drbd", []), FakeStep("vip", [])]
    runner = Runner("nfs", steps, events.append, MonotonicClock())
    watcher = RaisingWatcher(failures=3)
    async with asyncio.TaskGroup() as runners, asyncio.TaskGroup() as tasks:
        run = sup.keep(runners, "chain_runner:nfs", runner.run)
        watch = sup.keep(tasks, "drbd_watcher:r0", watcher.run)
        runner.want(True)
        await _until_settled(events, 1)
        await asyncio.wait_for(watcher.running.wait(), 5)
        # The runner was not cancelled by its failing sibling: it still follows wishes.
        runner.want(False)
        settled = await _until_settled(events, 2)
        assert [s.settled.up for s in settled] == [True, False]
        assert not run.done()
        watch.cancel()
        run.cancel()
    assert watcher.runs == 4
    assert sleep.delays == [BACKOFF_MIN, 2 * BACKOFF_MIN, 4 * BACKOFF_MIN]
    assert failures(metrics, "drbd_watcher:r0") == 3
    failed = [f for lvl, e, f in log.events if e == "task.failed"]
    assert [f["error"] for f in failed] == [repr(KeyError(f"watcher bug {i}")) for i in (1, 2, 3)]
    assert all(isinstance(f["exc_info"], KeyError) for f in failed)  # with its traceback
    assert all(f["task"] == "drbd_watcher:r0" for f in failed)


@in_loop
async def test_the_backoff_doubles_to_its_cap_and_starts_over_after_a_long_run() -> None:
    clock = FakeClock()
    sleep = FakeSleep(clock)
    sup, _, _ = supervisor(sleep, clock)
    runs = 0
    healthy = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs == 9:
            clock.now += BACKOFF_MAX  # a long healthy run before this failure
        if runs < 11:
            raise RuntimeError(runs)
        healthy.set()
        await asyncio.Event().wait()

    await _keep_until(sup, "checks:nfs", flaky, healthy)
    assert sleep.delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 1.0, 2.0]


@in_loop
async def test_a_task_that_returns_is_counted_and_restarted() -> None:
    sleep = FakeSleep()
    sup, metrics, log = supervisor(sleep)
    runs = 0
    again = asyncio.Event()

    async def ends() -> None:
        nonlocal runs
        runs += 1
        if runs > 1:
            again.set()
            await asyncio.Event().wait()

    await _keep_until(sup, "drbd_watcher:r0", ends, again)
    assert failures(metrics, "drbd_watcher:r0") == 1
    assert "task.ended" in log.names()


@in_loop
async def test_a_one_shot_task_is_logged_and_counted_never_restarted() -> None:
    sleep = FakeSleep()
    sup, metrics, log = supervisor(sleep)
    calls = 0

    async def outdate() -> None:
        nonlocal calls
        calls += 1
        raise OSError(5, "I/O error")

    async with asyncio.TaskGroup() as tg:
        sup.once(tg, "outdate_self:nfs", outdate())
    assert calls == 1
    assert sleep.delays == []
    assert failures(metrics, "outdate_self:nfs") == 1
    assert log.names() == ["task.failed"]


@in_loop
async def test_cancellation_is_not_caught() -> None:
    sup, metrics, _ = supervisor(FakeSleep())
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    async with asyncio.TaskGroup() as tg:
        task = sup.keep(tg, "drbd_watcher:r0", forever)
        await started.wait()
        task.cancel()
    assert task.cancelled()
    assert failures(metrics, "drbd_watcher:r0") is None
