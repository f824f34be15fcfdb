"""The only place drbdha reads the clock. Everything else is handed a `Clock` or `now`.

Two clocks, for two questions:
- monotonic(): seconds on CLOCK_MONOTONIC, for every deadline, timer and duration. It never
  jumps (NTP, an operator's `date -s`), and it is the clock asyncio's loop and the inbox's
  timerfd run on, so a deadline taken here compares with theirs.
- wall(): seconds since the Unix epoch, for what must mean something after a restart or to a
  person: a latch's `since`, the status document's timestamps. Never for a deadline.

And one mark on a third clock: AliveMark, the CLOCK_BOOTTIME a daemon last ran at, left in a
file for the next daemon and for the fence-peer handler (daemon/stall.py says why).

tests/test_layering.py keeps the rule: a module that reads a clock itself is named there
with its reason.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on CLOCK_MONOTONIC (time.monotonic())."""
        ...

    def wall(self) -> float:
        """Seconds since the Unix epoch (time.time())."""
        ...


class MonotonicClock:
    """The system's clocks. Stateless: one instance serves any number of holders."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()


class AliveMark:
    """A file holding the CLOCK_BOOTTIME (seconds) at which a daemon last ran. Boot time,
    because it goes on through a frozen VM's pause as the peer's clock does, and it starts
    again at a reboot, as the file (on tmpfs) does."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def mark(self) -> None:
        with contextlib.suppress(OSError):  # the mark is a precaution, never a failure
            self.path.write_text(f"{time.clock_gettime(time.CLOCK_BOOTTIME):.3f}\n")

    def left_behind(self) -> float | None:
        """Seconds since a daemon that did not stop cleanly last ran; None without a mark."""
        try:
            then = float(self.path.read_text())
        except (OSError, ValueError):
            return None
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - then)

    def clear(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()
