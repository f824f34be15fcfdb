"""Was this node stopped for a while (a frozen VM, a host that stalled, SIGSTOP)?

A node that is frozen is silent: no adverts, no DRBD pings, no answer on the peer channel
(a SYN to a frozen VM goes unanswered). Its peer cannot tell that from a power-off, fences
it as dead (the handler's exit 5) and goes on without it: a Primary peer writes alone, a
Secondary peer promotes. When this node runs again, its own view is from before the freeze:
a Secondary still believes its copy UpToDate although its peer wrote without it; a Primary's
handler may now find the peer dead (it was powered off meanwhile) and resume on a copy that
lacks what the peer wrote. Two nodes and no power switch cannot exclude this; what drbdha can
do is know that it was stopped. A task sleeps TICK at a time and measures how late it wakes
up; a wake-up THRESHOLD late or more is a stall, and for WINDOW seconds after it:

- a Secondary whose DRBD link is lost outdates its own copy (daemon/storage.py, reason
  `stalled_past_fencing`): it resyncs when the link is back, and is never promoted on what
  the peer may have written past it;
- a Primary's fence-peer handler is not told that a silent peer is dead (daemon/serving.py):
  DRBD keeps the I/O frozen (exit 1) until the peer answers (the keeper goes on asking) or
  the admin decides.

A stall of the daemon alone (a loaded loop, SIGSTOP of drbdha) reads the same; the rules then
only act if DRBD's link is lost in the window, and what they do is the cautious choice.

A freeze long enough for systemd's watchdog (10 s) kills the daemon, and the next one would
not know: the watch marks the time it last ran in ALIVE (CLOCK_BOOTTIME, every second, on
tmpfs), a clean stop removes the mark, and a daemon that finds a mark left behind counts the
time since as a stall. So does the fence-peer handler when no daemon answers it
(cli.py `_distrust_after_crash`): a silent peer is then not dead to it either.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from drbdha.clock import AliveMark, Clock
from drbdha.defaults import STALL_WINDOW

TICK = 0.1
# Seconds late. A peer needs at least DRBD's ping-timeout (0.5 s, the minimum the README's
# timers use) and then fence_timeout (0.5 s) of silence to take us for dead.
THRESHOLD = 0.5
WINDOW = STALL_WINDOW  # seconds after a stall in which a lost DRBD link is blamed on it


@dataclass(frozen=True, slots=True)
class Stalled:
    """Inbox event: the daemon woke up `seconds` late."""

    seconds: float


MARK_EVERY = 1.0  # seconds between two writes of the mark


class StallWatch:
    """Measures the lateness of its own wake-ups, and lets the main loop ask too: after a
    freeze, asyncio runs the expired VRRP timers and the sockets' callbacks in the same pass
    as this task's wake-up, and a backup whose Master_Down_Interval ran out while it was
    stopped would act on that before the Stalled event reached the inbox (the lab saw a
    takeover, with its peer probe, 0.3 s before the stall was known). `check` is called by
    the loop at the top of every turn; whichever looks first reports the stall, once."""

    def __init__(
        self, put: Callable[[Stalled], None], clock: Clock, alive: AliveMark | None = None
    ) -> None:
        self.put = put
        self.clock = clock
        self.alive = alive
        self.awake_at = clock.monotonic()  # the last time anyone saw this process run

    def check(self, now: float) -> Stalled | None:
        """A stall since the last look, if there was one (then it is not reported again)."""
        late = now - self.awake_at - TICK
        self.awake_at = max(self.awake_at, now)
        return Stalled(late) if late >= THRESHOLD else None

    async def run(self) -> None:
        marked = float("-inf")
        while True:
            t0 = self.clock.monotonic()
            if self.alive is not None and t0 - marked >= MARK_EVERY:
                self.alive.mark()
                marked = t0
            if (stalled := self.check(t0)) is not None:  # the loop was not turning either
                self.put(stalled)
            await asyncio.sleep(TICK)
            if (stalled := self.check(self.clock.monotonic())) is not None:
                self.put(stalled)
