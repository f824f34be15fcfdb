"""What the DRBD facts mean for the election: a pure function from the facts (old and new)
and the latches to the inhibitions to hold, the latches to set and the alerts to raise.

- The promotion gates become inhibitions: a node that could not promote does not take over
  (and a master that finds itself unable to serve resigns).
- The on-io-error guard: a Primary whose disk fails latches it (on_disk_loss = "failover"),
  which keeps it out of the election until cleared; whether the peer can take over is the
  peer's own gate (UpToDate or not), and with no UpToDate copy anywhere we alert.
- A split brain latches too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from drbdha.resources.drbd_events import Resource
from drbdha.resources.drbd_gates import REASONS, disk_lost, good_copy_elsewhere, promotion_refusal

# Inhibitions this module owns (the machine also has promote_backoff, the chain's own).
# drbd_unknown only keeps a backup from taking over: a master that loses sight of events2
# keeps serving, since nothing says its storage went away.
MANAGED = frozenset(
    {*REASONS, "disk_latched", "split_brain_latched", "drbd_unknown", "stalled_copy"}
)
NO_RESIGN = frozenset({"drbd_unknown"})
# A Primary peer that we hear advertising a lower priority is alive: when we preempt it, it
# steps down and demotes, and our DRBD step waits for that. Only a silent one holds us back.
PREEMPT_OK = frozenset({"peer_primary"})


ALERT_KINDS = ("disk_lost", "no_uptodate_copy", "io_frozen")


@dataclass(frozen=True, slots=True)
class Verdict:
    inhibitions: frozenset[str]
    latch: tuple[tuple[str, str], ...] = ()  # (kind, reason) to set now
    alerts: tuple[tuple[str, str], ...] = field(default=())  # (kind, message)


def assess(
    old: Resource | None,
    new: Resource | None,
    *,
    on_disk_loss: str,
    latched: frozenset[str],
    suspect: bool = False,
) -> Verdict:
    """`suspect`: this Secondary was stopped and lost its link soon after (still_suspect)."""
    latch: list[tuple[str, str]] = []
    alerts: list[tuple[str, str]] = []
    if new is not None and disk_lost(old, new):
        worst = new.worst_disk
        if on_disk_loss == "ignore":
            alerts.append(("disk_lost", f"Primary's disk is {worst}; serving from the peer"))
        else:
            latch.append(("disk", f"disk {worst} while Primary"))
            if not good_copy_elsewhere(new):
                alerts.append(
                    ("no_uptodate_copy", f"disk {worst} and no UpToDate peer: no good copy left")
                )
    if new is not None and new.split_brain and "split-brain" not in latched:
        latch.append(("split-brain", "split brain seen in events2"))
    now_latched = latched | {k for k, _ in latch}
    inhibit = set()
    if "disk" in now_latched:
        inhibit.add("disk_latched")
    if "split-brain" in now_latched:
        inhibit.add("split_brain_latched")
    if suspect:
        inhibit.add("stalled_copy")
    if new is None:
        inhibit.add("drbd_unknown")
    elif new.role == "Primary":
        # Serving already: the gates were passed at promotion; a disk lost since is the
        # latch's business (or ignored by policy). A second Primary is a reason to go, and
        # so is a lost quorum (DRBD 9): DRBD fails or holds our writes (on-no-quorum) and
        # the partition with quorum may promote, so the VIP leaves at once.
        if new.peer_primary:
            inhibit.add("peer_primary")
        if new.lost_quorum:
            inhibit.add("no_quorum")
    else:
        gate = promotion_refusal(new, split_brain_latched="split-brain" in now_latched)
        if gate is not None and gate != "split_brain":
            inhibit.add(gate)
    return Verdict(frozenset(inhibit), tuple(latch), tuple(alerts))


def wrote_alone(before: bool, new: Resource | None, *, stale: bool) -> bool:
    """Does this copy hold writes the peer's lacks? Yes from the moment DRBD lets a Primary
    write with no peer connected (the handler fenced the peer or found it dead; not while
    the I/O is frozen), and it stays so when we become Secondary, until the copies are
    connected and both UpToDate again (a resync made them equal). Never for a copy known to
    be `stale` (latched: its I/O was resumed only to release it), and not while DRBD 9
    keeps a Primary without quorum from writing."""
    if stale:
        return False
    if new is None:
        return before
    if new.role == "Primary" and not new.connected and not new.suspended:
        return before or not new.lost_quorum
    if new.local_uptodate and new.connected_uptodate_peer:
        return False
    return before


def holds_for_clients(before: bool, new: Resource | None, *, reached: bool) -> bool:
    """Must VRRP hold the role for this copy (Machine.hold_for_data)? Yes once NFS clients
    have reached it (`reached`: data from a client on a VIP connection, seen after DRBD lost
    the peer) while it is Primary without its peer: the clients' writes since are on this
    copy only, so a node whose copy lacks them must not take the service at the heal.
    Which node that is, the roles do not tell: in finding 7 (docs/reliability.md) the
    master was cut off on both networks and the clients went to the node that took over; in
    finding 8 the master lost only its replication link and kept the clients, while the
    backup, its service link cut, took over a copy no client reaches. Held until the copies
    are connected and both UpToDate, or this copy is no longer Primary; a restart of drbdha
    keeps it (alone.py's store)."""
    if new is None:
        return before
    if new.role != "Primary" or new.lost_quorum:  # DRBD 9: no write of ours is acknowledged
        return False
    if new.connected:
        return before and not (new.local_uptodate and new.connected_uptodate_peer)
    return before or reached


def still_suspect(before: bool, new: Resource | None) -> bool:
    """A Secondary stopped past its peer's fencing (daemon/stall.py) may lack what the peer
    wrote alone meanwhile; its copy stays suspect, and out of the election, until DRBD
    guards it by itself (the outdate went through, or a resync made it Inconsistent) or the
    copies have met again (connected: DRBD compared their data generations). Not until a
    time runs out: in the lab the outdate failed beside a promotion in flight, the window
    passed, and the stale copy was promoted once its peer was powered off."""
    if not before or new is None:
        return before
    return new.role == "Secondary" and not new.connected and new.local_uptodate
