"""The only place drbdha reads the clock. Everything else is handed a `Clock` or `now`.

Two clocks, for two questions:
- monotonic(): seconds on CLOCK_MONOTONIC, for every deadline, timer and duration. It never
  jumps (NTP, an operator's `date -s`), and it is the clock asyncio's loop and the inbox's
  timerfd run on, so a deadline taken here compares with theirs.
- wall(): seconds since the Unix epoch, for what must mean something after a restart or to a
  person: a latch's `since`, the status document's timestamps. Never for a deadline.

tests/test_layering.py keeps the rule: a module that reads a clock itself is named there
with its reason.
"""

from __future__ import annotations

import time
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
