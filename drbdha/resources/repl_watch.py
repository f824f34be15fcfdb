"""Is the replication path to a live Primary gone? (pure; time passed in)

Unfenced, a Secondary whose replication link fails stays UpToDate until its own DRBD notices
(`ping-int` + `ping-timeout` of silence: 10.5 s with DRBD's defaults), while the Primary's
DRBD, once it gives up on the peer (`timeout`, 6 s by default, for a write in flight), goes
on writing alone. A Primary that dies after that takes every write since with it, and the
Secondary is promoted on its stale copy. drbdha bounds that window itself: both nodes send
a small heartbeat over DRBD's replication addresses every `interval` (net/heartbeat.py), and
the Secondary outdates its copy once

- the peer's heartbeats have been silent for DEAD_AFTER intervals, and
- an advert from the master it knows arrived after that much silence (a dead Primary sends
  nothing: a power-off must stay a takeover, so silence alone is never enough), and
- the master's adverts kept coming through the silence, from before it began, with no gap
  longer than MAX_ADVERT_GAP adverts (a drbdha restarting on the Primary, or a stalled
  one, stops both; when it comes back its first adverts are no proof), and
- one more interval passed after that advert without a heartbeat (the two networks deliver
  a resumed Primary's advert and heartbeat in either order).

The caller checks the DRBD side (Secondary, good data, a Primary peer) and acts.
"""

from __future__ import annotations

from dataclasses import dataclass

DEAD_AFTER = 5  # intervals of heartbeat silence
MAX_ADVERT_GAP = 2.5  # advert intervals: one lost advert does not break the streak


@dataclass
class ReplicationWatch:
    interval: float
    advert_interval: float = 1.0
    heard_at: float | None = None  # the peer's last heartbeat; None: none yet (not armed)
    proof_at: float | None = None  # the first advert from the master after the silence began
    fired: bool = False  # acted on this silence already; re-armed by the next heartbeat
    streak_since: float | None = None  # the master's adverts came with no long gap since
    master_at: float | None = None  # the master's last advert

    @property
    def dead_after(self) -> float:
        return DEAD_AFTER * self.interval

    def heartbeat(self, now: float) -> None:
        self.heard_at = now
        self.proof_at = None
        self.fired = False

    def silent(self, now: float) -> bool:
        """The peer's heartbeats have stopped (never true before the first one)."""
        return self.heard_at is not None and now - self.heard_at > self.dead_after

    def master_heard(self, now: float) -> None:
        """An advert from the master this node knows."""
        gap = None if self.master_at is None else now - self.master_at
        if gap is None or gap > MAX_ADVERT_GAP * self.advert_interval:
            self.streak_since = now
        self.master_at = now
        since, heard = self.streak_since, self.heard_at
        through = since is not None and heard is not None and since <= heard
        if self.proof_at is None and through and self.silent(now):
            self.proof_at = now

    def due(self, now: float) -> bool:
        """The path to a live master has been gone long enough to act; fires once."""
        if self.fired or self.proof_at is None or now - self.proof_at < self.interval:
            return False
        self.fired = True
        return True
