"""The daemon's one inbox: every input (packets, netlink, signals, control requests) is an
event put here by a callback, and one loop takes them out in order.

`get(deadline)` also serves as the loop's only timer. asyncio's epoll selector rounds its
timeout *up* to whole milliseconds (selectors.py), so a timer armed for the deadline fires
0-1 ms late, which is 3-10 % of a 10 ms advert interval. We therefore let asyncio wake us
slightly early and sleep the last stretch with time.sleep(), which uses a high-resolution
kernel timer. The loop blocks for at most EARLY_WAKE seconds doing so.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

EARLY_WAKE = 0.0015  # seconds; > 1 ms of selector rounding plus typical scheduling delay


class Inbox:
    def __init__(self) -> None:
        self._events: collections.deque[Any] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None

    def put(self, event: Any) -> None:
        """Callable from any callback on the loop's thread (signal handlers included)."""
        self._events.append(event)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def __len__(self) -> int:
        return len(self._events)

    async def get(self, deadline: float | None) -> Any | None:
        """The next event, or None once `deadline` (time.monotonic() seconds) has passed."""
        if self._events:
            return self._events.popleft()
        if deadline is not None and deadline - time.monotonic() > EARLY_WAKE:
            await self._wait(deadline - EARLY_WAKE)
        elif deadline is None:
            await self._wait(None)
        if self._events:
            return self._events.popleft()
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining > 0:
                time.sleep(remaining)  # noqa: ASYNC251  (< EARLY_WAKE, on purpose: see above)
        return None

    async def _wait(self, wake_at: float | None) -> None:
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        # loop.time() is time.monotonic() on Linux, so deadlines can be passed straight on.
        handle = None if wake_at is None else loop.call_at(wake_at, _wake, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if handle is not None:
                handle.cancel()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
