"""The daemon's one inbox: every input (packets, netlink, signals, control requests) is an
event put here by a callback, and one loop takes them out in order.

`get(deadline)` is also the loop's only timer, and it has to be precise: at 10 ms adverts a
millisecond is 10 % of the interval. asyncio's own timers are not: the epoll selector rounds
the timeout up to whole milliseconds twice (selectors.py, then the C epoll wrapper, where a
float like 0.009000000000000001 s becomes 10 ms), so a call_at() wakes 1-2 ms late. The inbox
therefore arms a Linux timerfd at the absolute deadline on CLOCK_MONOTONIC (the clock behind
time.monotonic()) and lets the event loop watch its file descriptor, as keepalived does:
the kernel wakes us on time, to within the timer slack (50 us).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import os
import time
from typing import Any

_libc = ctypes.CDLL(None, use_errno=True)
CLOCK_MONOTONIC = 1
TFD_NONBLOCK = os.O_NONBLOCK
TFD_CLOEXEC = os.O_CLOEXEC
TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))


class _Itimerspec(ctypes.Structure):  # struct itimerspec { it_interval; it_value; }
    _fields_ = (("it_interval", _Timespec), ("it_value", _Timespec))


class TimerFd:
    """A one-shot timerfd(2) on CLOCK_MONOTONIC. (os.timerfd_* arrive only in Python 3.13.)"""

    def __init__(self) -> None:
        self.fd = _libc.timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        if self.fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_create: {os.strerror(err)}")

    def arm(self, at: float) -> None:
        """Fire at monotonic time `at` (seconds); at once if that has passed."""
        sec = int(at)
        nsec = max(int((at - sec) * 1e9), 0 if sec > 0 else 1)  # all-zero would disarm
        self._settime(_Itimerspec(_Timespec(0, 0), _Timespec(sec, nsec)))

    def disarm(self) -> None:
        self._settime(_Itimerspec(_Timespec(0, 0), _Timespec(0, 0)))

    def clear(self) -> None:
        """Consume the expiration count so the descriptor stops being readable."""
        with contextlib.suppress(BlockingIOError):
            os.read(self.fd, 8)

    def close(self) -> None:
        os.close(self.fd)

    def _settime(self, spec: _Itimerspec) -> None:
        if _libc.timerfd_settime(self.fd, TFD_TIMER_ABSTIME, ctypes.byref(spec), None) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_settime: {os.strerror(err)}")


class Inbox:
    def __init__(self) -> None:
        self._events: collections.deque[Any] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._timer: TimerFd | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def put(self, event: Any) -> None:
        """Callable from any callback on the loop's thread (signal handlers included)."""
        self._events.append(event)
        self._wake()

    def __len__(self) -> int:
        return len(self._events)

    async def get(self, deadline: float | None) -> Any | None:
        """The next event, or None once `deadline` (time.monotonic() seconds) has passed.

        Never None before one wait on the loop: a caller that comes late (a long start-up,
        a busy CPU) would otherwise be told the deadline passed before any reader callback
        ran, and a backup would declare its master down with the master's adverts queued in
        the socket. Waiting on the timerfd, even for a deadline that has passed, lets the
        loop poll once: its expiry and the socket's data come out of the same epoll round,
        whose callbacks all run before this coroutine resumes."""
        waited = False
        while not self._events:
            if waited and deadline is not None and time.monotonic() >= deadline:
                return None
            await self._wait(deadline)
            waited = True
        return self._events.popleft()

    async def _wait(self, deadline: float | None) -> None:
        timer = self._timer_on_loop()
        self._waiter = waiter = asyncio.get_running_loop().create_future()
        if deadline is not None:
            timer.arm(deadline)
        try:
            await waiter
        finally:
            self._waiter = None
            if deadline is not None:
                timer.disarm()

    def _timer_on_loop(self) -> TimerFd:
        if self._timer is None:
            self._timer = TimerFd()
            self._loop = asyncio.get_running_loop()
            self._loop.add_reader(self._timer.fd, self._on_timer)
        return self._timer

    def _on_timer(self) -> None:
        assert self._timer is not None
        self._timer.clear()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
        if self._timer is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._timer.fd)
            self._timer.close()
            self._timer = None
