"""The storage room's rules for a copy that may be stale: found out by the peer's answer
(daemon/stale.py) or suspected after this node was stopped for a while (daemon/stall.py).
A part of storage.Chains; only the main loop calls in here."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from drbdha.daemon import reach, stale, stall
from drbdha.daemon.reach import ClientsHeard, LastData
from drbdha.resources import drbd_guard as guard
from drbdha.vrrp.events import State
from drbdha.vrrp.machine import HOLD_PRIORITY

if TYPE_CHECKING:
    from drbdha.alone import AloneStore
    from drbdha.daemon.instance import Instance
    from drbdha.daemon.storage_state import StorageState
    from drbdha.latches import LatchStore
    from drbdha.resources.drbd_events import Resource


class Suspicion:
    by_resource: dict[str, Instance]
    states: dict[str, StorageState]
    latches: LatchStore
    log: Any
    apply: Callable[[Instance, list[Any], float], None]
    put: Callable[[Any], None]

    def _judge(self, inst: Instance, old: Any, new: Any, now: float) -> None: ...
    def _outdate_self(
        self, inst: Instance, reason: str, primary: Any, after: float, *, drop: bool = False
    ) -> None: ...

    alone: AloneStore
    last_data: LastData

    # ---- this copy holds what the peer's lacks (alone.py) ---------------------------------

    def note_alone(self, inst: Instance, alone: bool, *, quiet: bool = False) -> None:
        """`quiet`: the caller logs why (a stale copy is no copy that caught up)."""
        st = self.states[inst.name]
        st.wrote_alone = alone
        if inst.storage is None:
            return
        self.alone.set(inst.storage.drbd_resource, alone)
        if not quiet:
            self.log.info(
                "drbd.wrote_alone" if alone else "drbd.caught_up",
                instance=inst.name,
                resource=inst.storage.drbd_resource,
            )
        if self.alone.error:
            self.log.error("drbd.wrote_alone_unsaved", error=self.alone.error)

    def note_holding(self, inst: Instance, holds: bool, now: float) -> None:
        """Clients reached this copy with the peer cut off (or the copies have met again
        since): VRRP holds the role for it, or stops holding it."""
        st = self.states[inst.name]
        st.holding = holds
        if inst.storage is None:
            return
        self.alone.set_holding(inst.storage.drbd_resource, holds)
        fields = {"instance": inst.name, "resource": inst.storage.drbd_resource}
        if holds:
            self.log.warning(
                "drbd.holding_for_clients",
                **fields,
                action="advertising priority 254 until the copies meet and resync: a node "
                "that served without us meanwhile yields to this copy",
            )
        else:
            self.log.info("drbd.hold_released", **fields)
        if self.alone.error:
            self.log.error("drbd.wrote_alone_unsaved", error=self.alone.error)
        self.apply(inst, inst.machine.hold_for_data(holds, now), now)

    def update_hold(self, inst: Instance, res: Resource | None, now: float) -> None:
        st = self.states[inst.name]
        holds = guard.holds_for_clients(st.holding, res, reached=st.clients_reached)
        if holds != st.holding:
            self.note_holding(inst, holds, now)

    @staticmethod
    def _note_peer_gone(st: StorageState, new: Resource | None, now: float) -> None:
        """Since when DRBD's peer is away: only a client heard after that, while Primary,
        is evidence for the hold (daemon/reach.py)."""
        if new is None:
            return
        if new.connected:
            st.peer_gone_since = None
        elif st.peer_gone_since is None:
            st.peer_gone_since = now
        if new.connected or new.role != "Primary":
            st.clients_reached = False

    def _unheld(self, inst: Instance) -> list[str] | None:
        """The VIPs to look at if `inst` is served here as master and DRBD Primary with its
        peer away and no hold yet; else None."""
        st = self.states.get(inst.name)
        d = st.drbd if st is not None else None
        if st is None or st.holding or d is None or d.role != "Primary" or d.connected:
            return None
        if inst.machine.state is not State.MASTER or not inst.vip_up:
            return None
        return [str(v.ip) for v in inst.cfg.virtual_ipaddress]

    def unheld(self) -> list[tuple[str, list[str]]]:
        """What reach.ReachWatch looks at, each resource with its VIPs."""
        return [
            (res, vips)
            for res, inst in self.by_resource.items()
            if (vips := self._unheld(inst)) is not None
        ]

    async def last_look(self, inst: Instance, now: float) -> None:
        """Awaited before a master hears an advert. At a heal the first advert from the
        other node decides which of the two steps down, and a client that came to us since
        the watch's last look (up to reach.POLL ago) must count: look now. One sock_diag
        dump, only in this rare state (Primary, the peer away, no hold), in a thread as the
        watch's (reach.look; the lab's daemon died of one made in the loop)."""
        vips = self._unheld(inst)
        if vips is None or inst.storage is None:
            return
        try:
            at = await reach.look(self.last_data, vips, now)
        except Exception as e:  # a look is advice: never the loop's end
            self.log.warning("drbd.clients_look_failed", instance=inst.name, error=str(e))
            return
        if at is not None:
            self.clients_heard(ClientsHeard(inst.storage.drbd_resource, at), now)

    def clients_heard(self, ev: ClientsHeard, now: float) -> None:
        """A client sent data to our VIP at `ev.at`: after DRBD lost the peer, and while we
        serve, it is evidence that the clients' writes are on this copy."""
        inst = self.by_resource.get(ev.resource)
        st = self.states.get(inst.name) if inst is not None else None
        if inst is None or st is None or st.holding or st.peer_gone_since is None:
            return
        d = st.drbd
        if d is None or d.role != "Primary" or d.connected or ev.at <= st.peer_gone_since:
            return
        if inst.machine.state is not State.MASTER:
            return  # stepped down since the look: a heal may have brought the clients here
        st.clients_reached = True
        self.log.info(
            "drbd.clients_reached_alone",
            instance=inst.name,
            resource=ev.resource,
            after_s=round(ev.at - st.peer_gone_since, 2),
        )
        self.update_hold(inst, d, now)

    def behind_a_holder(self, inst: Instance, priority: int, master: Any) -> None:
        """The master we hear holds the role for its copy (clients reached it with us cut
        off, Machine.hold_for_data) and our DRBD link is still gone: it serves writes our
        copy lacks. We served without it (a master cut off, or a takeover no client
        reached) and stepped down at the heal; should it die before the copies meet, our
        copy must not be promoted (its silence would read as death to the handler).
        Outdated once, as a Secondary."""
        st = self.states[inst.name]
        res = st.drbd
        if res is None or res.connected:
            st.behind_holder = False
            return
        if priority != HOLD_PRIORITY or st.behind_holder or inst.machine.state is State.MASTER:
            return
        if res.role != "Secondary" or not res.local_uptodate:
            return
        st.behind_holder = True
        self._outdate_self(inst, "peer_holds_for_clients", master, 0.0)

    def hold_apart(self, inst: Instance) -> None:
        """Our copy has writes the peer's lacks, and its disk is detached: connected, DRBD
        would let the peer be promoted on its older copy (a diskless Secondary shows DRBD
        no data generation to compare). Disconnected, a promotion runs the fence-peer
        handler, and we answer that our copy is newer. `drbdadm adjust` (the admin's, once
        the disk is fixed) attaches it and connects, and DRBD compares the generations."""
        st = self.states[inst.name]
        res = st.drbd
        if not st.wrote_alone or res is None or inst.storage is None:
            return
        detached = any(d.disk == "Diskless" and not d.client for d in res.devices)
        if res.role == "Secondary" and detached and res.connected:
            self.log.error(
                "drbd.holding_apart",
                instance=inst.name,
                resource=inst.storage.drbd_resource,
                reason="the newest copy's disk is detached",
            )
            self.put(stale.HoldApart(inst.name, inst.storage.drbd_resource))

    # ---- the peer served while we were away (stale.py) -----------------------------------

    def stale_copy(self, ev: stale.PeerServes, now: float) -> None:
        """The peer answered that it serves (Primary, or wrote alone since) while our I/O is
        frozen for fencing: latch, resign, and resume the I/O once the VIP is gone."""
        inst = self.by_resource.get(ev.resource)
        st = self.states.get(inst.name) if inst is not None else None
        if inst is None or st is None or st.stale:
            return
        if st.drbd is None or not st.drbd.frozen_for_fencing:
            return  # a Secondary's promotion just fails: DRBD outdates it (exit 6)
        st.stale = True
        self.note_alone(inst, False, quiet=True)
        reason = stale.REASON.format(detail=ev.detail)
        st.latches["disk"] = self.latches.set(inst.name, "disk", reason)
        self.log.critical(
            "stale.copy",
            instance=inst.name,
            resource=ev.resource,
            peer=ev.outcome,
            detail=ev.detail,
            action="disk latch set; resigning; disk detached and I/O resumed once the VIP is gone",
        )
        self._judge(inst, st.drbd, st.drbd, now)
        # With the disk detached the filesystem answers with I/O errors.
        self._release_past_io_errors(inst)
        self.apply(inst, inst.machine.resign(now, hold_off=0.0), now)
        self.resume_if_stale(inst.name)

    @staticmethod
    def _release_past_io_errors(inst: Instance) -> None:
        """The storage is given up on purpose and its filesystem answers with I/O errors:
        what the NFS steps write there on their way down (the export table, nfsd's
        records) fails, and nothing of it matters any more. The VIP, the unmount and the
        demote still must (a busy mount fails the unmount: never swallowed)."""
        kept = {"vip", "filesystem", "drbd"}
        inst.runner.abandon(frozenset(n for n in inst.runner.plan.names if n not in kept))

    def quorum_watch(self, inst: Instance, new: Resource | None) -> None:
        """Before the verdict's inhibitions (drbd_guard: no_quorum resigns a Primary). A
        Primary that lost DRBD 9 quorum cannot write (on-no-quorum io-error fails its I/O,
        suspend-io holds it): its release goes on past the NFS steps' failed stops. Until
        quorum is back, or the demote is done."""
        st = self.states[inst.name]
        lost = new is not None and new.role == "Primary" and new.lost_quorum
        if lost == st.quorum_lost:
            return
        st.quorum_lost = lost
        if new is not None and lost:
            self.log.error(
                "drbd.quorum_lost",
                instance=inst.name,
                resource=new.name,
                action="resigning; the release goes on past the NFS steps' I/O errors",
            )
            self._release_past_io_errors(inst)
        elif not st.stale:  # the stale copy's release keeps its own
            inst.runner.abandon(frozenset())

    def resume_if_stale(self, name: str) -> None:
        """Once the stale Primary's VIP is gone (called again when the VIP step stops)."""
        inst = next((i for i in self.by_resource.values() if i.name == name), None)
        st = self.states.get(name)
        if inst is None or st is None or not st.stale or inst.vip_up or inst.storage is None:
            return
        if st.drbd is not None and st.drbd.frozen_for_fencing:
            self.put(stale.ResumeToRelease(name, inst.storage.drbd_resource))

    # ---- this node was stopped (stall.py) -------------------------------------------------

    def stalled(self, ev: stall.Stalled, now: float) -> None:
        self.log.warning(
            "daemon.stalled",
            seconds=round(ev.seconds, 2),
            action=f"for {stall.WINDOW:g} s a lost DRBD link outdates a Secondary's copy, "
            "and a silent peer is not taken for dead",
        )
        for inst in self.by_resource.values():
            st = self.states[inst.name]
            st.stalled_until = now + stall.WINDOW
            st.stalled_for = ev.seconds
            st.outdated_after_stall = False
            self.after_stall(inst, now)

    def distrusts_silence(self, resource: str, now: float) -> float | None:
        """Seconds this node was stalled, if that was within stall.WINDOW: the fence-peer
        handler must not take the peer's silence for death (it may have served meanwhile)."""
        inst = self.by_resource.get(resource)
        st = self.states.get(inst.name) if inst is not None else None
        if st is not None and st.suspect:
            return st.stalled_for
        if st is None or st.stalled_until is None or now > st.stalled_until:
            return None
        return st.stalled_for

    def after_stall(self, inst: Instance, now: float) -> None:
        """A Secondary whose link is lost within the window after a stall: its peer may have
        taken it for dead and written alone; its copy is outdated (it resyncs later)."""
        st = self.states[inst.name]
        res = st.drbd
        if st.stalled_until is None or now > st.stalled_until or st.outdated_after_stall:
            return
        if res is None or res.role != "Secondary" or res.connected or not res.local_uptodate:
            return
        st.outdated_after_stall = st.suspect = True
        self._judge(inst, res, res, now)  # the stalled_copy inhibition, before anything else
        self._outdate_self(inst, "stalled_past_fencing", None, st.stalled_for)

    def still_suspect(self, inst: Instance) -> None:
        st = self.states[inst.name]
        if st.suspect and not guard.still_suspect(st.suspect, st.drbd):
            st.suspect = False
            self.log.info(
                "drbd.suspicion_cleared",
                instance=inst.name,
                disk=st.drbd.worst_disk if st.drbd else None,
                connected=bool(st.drbd and st.drbd.connected),
            )
