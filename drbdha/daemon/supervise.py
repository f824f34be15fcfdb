"""Tasks beside the loop, under supervision: one uncaught exception in a background task (a
bug in the events2 watcher, a health check, the fencing-status fill) must never end the
daemon, and above all never cancel the chain runners that a stop depends on.

Rules:
- The daemon starts every task through here. An exception is logged with its traceback
  (`task.failed`) and counted (drbdha_task_failures_total{task}). Cancellation is never
  caught: it is how the daemon stops a task.
- A long-lived task (`keep`: a chain runner, a DRBD watcher, the health checks) is started
  again after a back-off that doubles from BACKOFF_MIN to BACKOFF_MAX seconds, and starts
  over at BACKOFF_MIN after a run that lasted BACKOFF_MAX (a crash an hour later is not a
  crash loop). It must not return either: an end is counted and restarted the same way.
- A one-shot task (`once`: an outdate, a peer probe, a power action) is logged and counted,
  not started again: it may have done part of its work, and what comes next is decided by
  the events it did or did not send.
- The chain runners live in a task group of their own (daemon.py), so even a task started
  without this module cannot cancel them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from drbdha.clock import Clock

BACKOFF_MIN = 1.0  # seconds before the first restart of a long-lived task
BACKOFF_MAX = 30.0  # seconds: the longest wait, and the run after which it starts over

Sleep = Callable[[float], Awaitable[None]]


class Supervisor:
    def __init__(
        self,
        count: Callable[[str], None],
        log: Any,
        clock: Clock,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._count = count
        self._log = log
        self._clock = clock
        self._sleep = sleep

    def keep(
        self, group: asyncio.TaskGroup, name: str, run: Callable[[], Awaitable[None]]
    ) -> asyncio.Task[None]:
        """Run `run()` in `group` for ever, restarting it after a failure."""
        return group.create_task(self._keep(name, run), name=name)

    def once(
        self, group: asyncio.TaskGroup, name: str, work: Coroutine[Any, Any, None]
    ) -> asyncio.Task[None]:
        """Run `work` once in `group`; a failure is logged and counted."""
        return group.create_task(self._once(name, work), name=name)

    async def _once(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except Exception as e:
            self._failed(name, e)

    async def _keep(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        delay = BACKOFF_MIN
        while True:
            began = self._clock.monotonic()
            try:
                await run()
            except Exception as e:
                self._failed(name, e)
            else:
                self._count(name)
                self._log.error("task.ended", task=name, error="a long-lived task returned")
            if self._clock.monotonic() - began >= BACKOFF_MAX:
                delay = BACKOFF_MIN
            self._log.warning("task.restarting", task=name, in_s=delay)
            await self._sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    def _failed(self, name: str, e: Exception) -> None:
        self._count(name)
        self._log.error("task.failed", task=name, error=repr(e), exc_info=e)
