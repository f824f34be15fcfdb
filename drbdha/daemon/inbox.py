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


_timerfd_settime = _libc.timerfd_settime
_timerfd_settime.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
_timerfd_settime.restype = ctypes.c_int


class TimerFd:
    """A one-shot timerfd(2) on CLOCK_MONOTONIC. (os.timerfd_* arrive only in Python 3.13.)

    Armed once per advert at 10 ms, so arming allocates nothing: one itimerspec is kept
    and rewritten in place, and the C function's argument types are declared once."""

    def __init__(self) -> None:
        self.fd = _libc.timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        if self.fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_create: {os.strerror(err)}")
        self._spec = _Itimerspec()  # it_interval stays 0: one-shot
        self._value = self._spec.it_value
        self._spec_p = ctypes.addressof(self._spec)

    def arm(self, at: float) -> None:
        """Fire at monotonic time `at` (seconds); at once if that has passed."""
        sec = int(at)
        nsec = int((at - sec) * 1e9)
        if nsec <= 0:
            nsec = 0 if sec > 0 else 1  # all-zero would disarm
        self._set(sec, nsec)

    def disarm(self) -> None:
        self._set(0, 0)

    def clear(self) -> bool:
        """Consume the expiration count so the descriptor stops being readable; False if
        it had not fired (nothing to read)."""
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            return False
        return True

    def close(self) -> None:
        os.close(self.fd)

    def _set(self, sec: int, nsec: int) -> None:
        value = self._value
        value.tv_sec = sec
        value.tv_nsec = nsec
        if _timerfd_settime(self.fd, TFD_TIMER_ABSTIME, self._spec_p, None) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_settime: {os.strerror(err)}")


class Inbox:
    def __init__(self) -> None:
        self._events: collections.deque[Any] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._timer: TimerFd | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._armed: float | None = None  # the deadline the timerfd is armed for

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
        self._waiter = waiter = self._loop_future()
        # The timer stays armed between waits: a one-shot that fired needs no disarming,
        # and a wait for the deadline already armed (woken by an event meanwhile) needs no
        # re-arming. An early expiry for a deadline given up on only wakes get() to look.
        if deadline != self._armed:
            if deadline is None:
                timer.disarm()
            else:
                timer.arm(deadline)
            self._armed = deadline
        try:
            await waiter
        finally:
            self._waiter = None

    def _loop_future(self) -> asyncio.Future[None]:
        assert self._loop is not None
        return self._loop.create_future()

    def _timer_on_loop(self) -> TimerFd:
        if self._timer is None:
            self._timer = TimerFd()
            self._loop = asyncio.get_running_loop()
            self._loop.add_reader(self._timer.fd, self._on_timer)
        return self._timer

    def _on_timer(self) -> None:
        assert self._timer is not None
        if self._timer.clear():
            self._armed = None  # one-shot: it fired, nothing is armed now
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
