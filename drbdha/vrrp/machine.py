"""The VRRP state machine (RFC 5798 §6.4, with the RFC 9568 and keepalived refinements noted
at each decision). No I/O and no clock: every input takes `now` (monotonic seconds) and
returns the effects to carry out in order; `get_timer()` says when to call `handle_timer()`.

Every state change goes through `_change_state()`, which checks it against TRANSITIONS and
emits a Transition effect; the daemon logs and counts from that, so this module never logs.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from typing import Protocol

from drbdha.vrrp.constants import PRIORITY_OWNER, PRIORITY_RESIGN
from drbdha.vrrp.events import (
    Activate,
    Deactivate,
    Effect,
    InvalidAdvert,
    SendAdvert,
    SendGarp,
    State,
    Transition,
)
from drbdha.vrrp.packet import Advertisement
from drbdha.vrrp.timers import master_down_interval, skew_time

IPAddress = IPv4Address | IPv6Address
HANDOVER_MARGIN = 0.05  # seconds of slack for a resignation's answer: delivery, scheduling
# What a master that holds the only copy with the clients' latest writes advertises
# (hold_for_data): the highest a non-owner may use (RFC 5798 §5.2.4), so that a master
# that was cut off and meets it again steps down by VRRP's own rule.
HOLD_PRIORITY = 254
_FOREVER = float("inf")  # an inhibition's expiry when only clearing it ends it

TRANSITIONS: frozenset[tuple[State, State]] = frozenset(
    {
        (State.INITIALIZE, State.BACKUP),
        (State.INITIALIZE, State.MASTER),  # address owner, §6.4.1
        (State.INITIALIZE, State.FAULT),
        (State.BACKUP, State.MASTER),
        (State.BACKUP, State.FAULT),
        (State.MASTER, State.BACKUP),
        (State.MASTER, State.FAULT),
        (State.FAULT, State.BACKUP),
        (State.FAULT, State.MASTER),  # address owner whose fault cleared
        (State.BACKUP, State.INITIALIZE),  # shutdown
        (State.MASTER, State.INITIALIZE),
        (State.FAULT, State.INITIALIZE),
    }
)


# SendAdvert is frozen: one per priority (at most 256) serves every advert (a frozen
# dataclass's __init__ goes through object.__setattr__, a cost paid 100 times a second at
# 10 ms otherwise).
_send_advert = functools.cache(SendAdvert)


class IllegalTransition(RuntimeError):
    """A bug: the machine tried a state change its table does not allow."""


class InstanceParams(Protocol):
    """The configuration the machine reads (config.VrrpInstanceConfig satisfies it)."""

    @property
    def vrid(self) -> int: ...
    @property
    def version(self) -> int: ...
    @property
    def priority(self) -> int: ...
    @property
    def advert_interval(self) -> float: ...
    @property
    def preempt(self) -> bool: ...
    @property
    def preempt_delay(self) -> float: ...
    @property
    def unicast_peers(self) -> Sequence[IPAddress]: ...
    @property
    def virtual_ipaddress(self) -> Sequence[IPv4Interface | IPv6Interface]: ...
    @property
    def garp_master_delay(self) -> float: ...
    @property
    def garp_master_refresh(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Snapshot:
    state: State
    effective_priority: int
    master_address: IPAddress | None
    master_adver_interval: float
    faults: tuple[str, ...]
    last_transition: Transition | None
    last_transition_at: float | None
    preempt_hold_off_until: float
    last_peer: Peer | None = None
    inhibitions: tuple[str, ...] = ()
    takeover_deferred: bool = False
    holding: bool = False  # hold_for_data


@dataclass(frozen=True, slots=True)
class Peer:
    """The last other router heard on this VRID (backups are silent, so as master this is
    the last master we displaced or that displaced us)."""

    address: IPAddress
    priority: int
    seen_at: float
    vips_match: bool = True  # it carried this instance's address list


class Machine:
    def __init__(self, params: InstanceParams, local_address: IPAddress | None = None) -> None:
        self.params = params
        self.local_address = local_address
        self.state = State.INITIALIZE
        self.faults: set[str] = set()
        self.master_adver_interval = params.advert_interval
        self.master_address: IPAddress | None = None
        self._vips = frozenset(v.ip for v in params.virtual_ipaddress)
        self._peers = frozenset(params.unicast_peers)
        self._adver_timer: float | None = None
        self._master_down_timer: float | None = None
        self._garp_delay_timer: float | None = None
        self._garp_refresh_timer: float | None = None
        self._lower_master_since: float | None = None  # first sight of a lower-priority master
        self._takeover_reason = "master_down"
        self._hold_off_until = float("-inf")
        self._priority_override: int | None = None  # force-failover's temporary priority
        self._override_until: float | None = None
        # A resignation that must be answered (force-failover): when we take the role back,
        # and how it went: "waiting", "answered" (a peer advertised), "retook", or "abandoned"
        # (unanswered, and inhibited meanwhile: it may not take the role back).
        self._take_back_at: float | None = None
        self.handover: str | None = None
        self._penalty = 0  # failing weighted checks lower the priority by their weights
        self.holding = False  # hold_for_data: as master, advertise HOLD_PRIORITY
        self.last_peer: Peer | None = None
        self.last_transition: Transition | None = None
        self.last_transition_at: float | None = None
        # Reasons not to take over that are no fault of this node (the DRBD peer is Primary,
        # a promote back-off, a latch): name -> expiry (inf = until cleared).
        self.inhibitions: dict[str, float] = {}
        self._preempt_ok: set[str] = set()  # inhibitions that do not hold back a preemption
        self._chain_busy = False  # Activate/Deactivate sent, the chain has not settled yet
        self._takeover_deferred = False  # Master_Down_Interval ended while we could not serve

    # ---- derived values ------------------------------------------------------------------

    @property
    def effective_priority(self) -> int:
        if self._priority_override is not None:
            return self._priority_override
        if self.params.priority == PRIORITY_OWNER:
            return PRIORITY_OWNER  # the address owner's priority is fixed (RFC 5798 §5.2.4)
        if self.holding and self.state is State.MASTER:
            return HOLD_PRIORITY
        # keepalived's track-script weights: never below 1 (0 means "resigning" on the wire).
        return max(1, self.params.priority - self._penalty)

    @property
    def skew_time(self) -> float:
        return skew_time(self.params.version, self.effective_priority, self.master_adver_interval)

    @property
    def master_down_interval(self) -> float:
        return master_down_interval(
            self.params.version, self.effective_priority, self.master_adver_interval
        )

    @property
    def takeover_deferred(self) -> bool:
        """Master_Down_Interval ended but an inhibition (or our own chain still stopping)
        keeps us from taking over."""
        return self._takeover_deferred

    def get_timer(self) -> float | None:
        """The absolute time at which handle_timer() must next run, or None."""
        # Called after every input (every advert sent or heard): plain comparisons, no
        # tuple or generator to build.
        first = self._adver_timer
        for t in (
            self._master_down_timer,
            self._garp_delay_timer,
            self._garp_refresh_timer,
            self._override_until,
            self._take_back_at,
        ):
            if t is not None and (first is None or t < first):
                first = t
        if self.inhibitions:
            for t in self.inhibitions.values():
                if t != _FOREVER and (first is None or t < first):
                    first = t
        return first

    def snapshot(self) -> Snapshot:
        return Snapshot(
            state=self.state,
            effective_priority=self.effective_priority,
            master_address=self.master_address,
            master_adver_interval=self.master_adver_interval,
            faults=tuple(sorted(self.faults)),
            last_transition=self.last_transition,
            last_transition_at=self.last_transition_at,
            preempt_hold_off_until=self._hold_off_until,
            last_peer=self.last_peer,
            inhibitions=tuple(sorted(self.inhibitions)),
            takeover_deferred=self._takeover_deferred,
            holding=self.holding,
        )

    # ---- inputs --------------------------------------------------------------------------

    def start(self, now: float, *, resume: bool = False) -> list[Effect]:
        """RFC 5798 §6.4.1 (Initialize). `resume`: a previous run of this daemon left the
        storage chain up (kill -9, crash): no other node can hold it, so we serve on at once
        instead of leaving it dark for Master_Down_Interval, and let the election settle."""
        if self.state is not State.INITIALIZE:
            return []
        if self.faults:
            return self._enter_fault(now, self._fault_reason())
        if self.params.priority == PRIORITY_OWNER:
            return self._become_master(now, "address_owner")
        if resume and not self.inhibitions:
            return self._become_master(now, "reconciled")
        return self._become_backup(now, "startup")

    def receive(self, advert: Advertisement, src: IPAddress, now: float) -> list[Effect]:
        """An advert that passed packet.decode() and carries our VRID."""
        if self.state not in (State.BACKUP, State.MASTER) or src == self.local_address:
            return []
        if self._peers and src not in self._peers:
            return [InvalidAdvert("unknown_peer", dropped=True)]
        if advert.version == 2 and advert.interval != self.params.advert_interval:
            # RFC 3768 §7.1: a v2 router MUST discard an advert with another interval.
            return [InvalidAdvert("interval_mismatch", dropped=True)]
        vips_match = frozenset(advert.addresses) == self._vips
        self.last_peer = Peer(src, advert.priority, now, vips_match)
        if self.handover == "waiting" and advert.priority > 0 and self.state is State.BACKUP:
            self.handover, self._take_back_at = "answered", None
        effects: list[Effect] = []
        if not vips_match:
            # RFC 5798 §7.1 says log it; the advert still counts (keepalived does the same).
            effects.append(InvalidAdvert("addr_list", dropped=False))
        if self.state is State.BACKUP:
            effects += self._backup_receive(advert, src, now)
        else:
            effects += self._master_receive(advert, src, now)
        return effects

    def handle_timer(self, now: float) -> list[Effect]:
        if self._take_back_at is not None and now >= self._take_back_at:
            self._take_back_at = None
            if self.state is State.BACKUP and not self._blocking():
                # Nobody answered the resignation: serve again at once rather than leave
                # the addresses dark until Master_Down_Interval.
                return self._become_master(now, "handover_failed")
            if self.handover == "waiting":
                # Inhibited since (a latch: the disk failed in the window, say): a node
                # that may not serve does not take the role back, it stays a backup.
                self.handover = "abandoned"
        if self._override_until is not None and now >= self._override_until:
            # The force-failover priority ends with its hold-off; adverts carry ours again.
            self._priority_override = self._override_until = None
        expired = [n for n, t in self.inhibitions.items() if now >= t] if self.inhibitions else None
        if expired:
            for name in expired:
                del self.inhibitions[name]
            if not self._blocking():
                self._resume_deferred(now, self.skew_time)
        if self.state is State.BACKUP:
            if self._master_down_timer is not None and now >= self._master_down_timer:
                if self._blocking() or self._chain_busy:
                    # §6.4.2 says take over; we cannot serve yet. Wait for the reason to
                    # clear (set_inhibit/chain_settled re-arm the timer) instead of
                    # holding the VIP without storage.
                    self._master_down_timer = None
                    self._takeover_deferred = True
                    return []
                return self._become_master(now, self._takeover_reason)
            return []
        if self.state is not State.MASTER:
            return []
        effects: list[Effect] = []
        if self._adver_timer is not None and now >= self._adver_timer:
            effects.append(_send_advert(self.effective_priority))
            # Schedule from the deadline, not from `now`, so lateness does not accumulate
            # (keepalived reschedules from the send time and drifts ~2% slow at 10 ms).
            self._adver_timer += self.params.advert_interval
            if self._adver_timer <= now:
                self._adver_timer = now + self.params.advert_interval
        if self._garp_delay_timer is not None and now >= self._garp_delay_timer:
            self._garp_delay_timer = None
            effects.append(SendGarp("master_delay"))
        if self._garp_refresh_timer is not None and now >= self._garp_refresh_timer:
            self._garp_refresh_timer = now + self.params.garp_master_refresh
            effects.append(SendGarp("refresh"))
        return effects

    def set_fault(self, name: str, active: bool, now: float) -> list[Effect]:
        """A fault source (link down, later storage) became active or cleared."""
        before = bool(self.faults)
        if active:
            self.faults.add(name)
        else:
            self.faults.discard(name)
        if self.state is State.INITIALIZE or before == bool(self.faults):
            return []
        if self.faults:
            return self._enter_fault(now, self._fault_reason())
        if self.params.priority == PRIORITY_OWNER:
            return self._become_master(now, "fault_cleared")
        return self._become_backup(now, "fault_cleared")

    def set_penalty(self, penalty: int, now: float) -> list[Effect]:
        """The sum of the weights of the failing checks. A lower priority only shows in our
        adverts: a higher backup that preempts takes over (keepalived's semantics); a
        master does not step down for it by itself."""
        del now  # the next advert carries it
        self._penalty = max(0, penalty)
        return []

    def set_inhibit(
        self,
        name: str,
        active: bool,
        now: float,
        until: float = float("inf"),
        *,
        resign: bool = True,
        blocks_preempt: bool = True,
    ) -> list[Effect]:
        """A reason not to take over (no fault of ours) began or ended. A master that
        becomes inhibited resigns (priority 0) so the peer, which can serve, takes over,
        unless `resign` is False (the reason only says we could not take over anew).
        `blocks_preempt` False: a preemption goes ahead anyway (the DRBD peer being Primary:
        the master we preempt is alive, hears us and hands over)."""
        had = bool(self.inhibitions)
        if active:
            known = name in self.inhibitions
            self.inhibitions[name] = until
            if blocks_preempt:
                self._preempt_ok.discard(name)
            else:
                self._preempt_ok.add(name)
            if known:
                return []
        elif self.inhibitions.pop(name, None) is None:
            return []
        if active and resign and self.state is State.MASTER:
            return self._become_backup(now, "inhibited")
        if had and not self._blocking():
            # The peer we waited for (DRBD Primary until now) is gone: take over after
            # Skew_Time, so of two such backups the higher priority goes first (§6.4.2).
            self._resume_deferred(now, self.skew_time)
        return []

    def chain_settled(self, up: bool, now: float) -> list[Effect]:
        """The chain reached the state last asked for (or gave up on it)."""
        self._chain_busy = False
        if self.state is State.MASTER and up:
            # The VIP is the chain's last step and sent the takeover burst itself; the
            # repeat and refresh bursts count from here.
            if self.params.garp_master_delay > 0:
                self._garp_delay_timer = now + self.params.garp_master_delay
            if self.params.garp_master_refresh > 0:
                self._garp_refresh_timer = now + self.params.garp_master_refresh
            return []
        if not up and not self._blocking():
            # We stepped down and our storage is released only now: give the peer a whole
            # Master_Down_Interval from here to take over before we take it back. The peer
            # cannot take over before (its DRBD sees us Primary): a timer armed at the
            # step-down may run out first when the release is slow (a CI run saw a
            # force-failover taken back 3.07 s after the resignation).
            self._resume_deferred(now, self.master_down_interval)
            if self.state is State.BACKUP and self._master_down_timer is not None:
                self._master_down_timer = max(
                    self._master_down_timer, now + self.master_down_interval
                )
        return []

    def chain_failed(self, now: float, backoff: float) -> list[Effect]:
        """A takeover failed and was rolled back: resign and stay out of the election for
        `backoff` seconds (never retry a refused promote in a tight loop)."""
        return self.set_inhibit("promote_backoff", True, now, until=now + backoff)

    def _blocking(self) -> set[str]:
        """The inhibitions that hold back the takeover now due."""
        if self._takeover_reason == "preempt":
            return set(self.inhibitions) - self._preempt_ok
        return set(self.inhibitions)

    def _resume_deferred(self, now: float, delay: float) -> None:
        if self.state is State.BACKUP and self._takeover_deferred and not self._chain_busy:
            self._takeover_deferred = False
            self._master_down_timer = now + delay

    def hold_for_data(self, active: bool, now: float) -> list[Effect]:
        """We took over while our storage peer was cut off, and the clients' writes since
        are on our copy only (until the copies meet and resync). Every node with a higher
        priority must yield to us, not we to it: a master cut off on both networks during
        the takeover goes on serving its own copy, and at the heal VRRP would hand it the
        clients back and both copies would hold acknowledged writes (docs/reliability.md,
        finding 7). While master we advertise HOLD_PRIORITY; a backup is not affected.
        Taking the hold sends an advert at once, so a master we already hear steps down."""
        if active == self.holding:
            return []
        self.holding = active
        if self.state is not State.MASTER:
            return []
        self._adver_timer = now + self.params.advert_interval
        return [_send_advert(self.effective_priority)]

    def resumed(self, now: float) -> None:
        """This node was stopped (a frozen VM, SIGSTOP) and runs again. A backup's
        Master_Down_Timer that ran out meanwhile measured our silence, not the master's:
        it gets a whole Master_Down_Interval from now, in which the master's adverts, if it
        is alive, arrive. A master changes nothing: its next advert is due already, and a
        peer that took over while we were stopped is settled by §6.4.3's comparison."""
        if self.state is State.BACKUP and self._master_down_timer is not None:
            self._master_down_timer = max(self._master_down_timer, now + self.master_down_interval)

    def resign(
        self, now: float, hold_off: float, release_time: float | None = None
    ) -> list[Effect]:
        """Give up mastership at once (force-failover): a priority-0 advert makes a backup take
        over after Skew_Time (§6.4.2), and preemption is held off for `hold_off` seconds so we
        do not take it straight back.

        With `release_time` (how long our chain may take to come down: the peer's DRBD sees
        us Primary until then) the resignation is also a probe, since backups are silent: a
        peer must advertise within that plus two intervals (its Skew_Time, at most one, then
        its first advert), or we take the role back (`handover` says which)."""
        if self.state is not State.MASTER:
            return []
        self._hold_off_until = now + hold_off
        self._priority_override = self._override_until = None  # a handed-over role ends it
        effects = self._become_backup(now, "resign")
        self.handover = None
        if release_time is not None:
            window = 2 * self.params.advert_interval + HANDOVER_MARGIN + release_time
            self.handover, self._take_back_at = "waiting", now + window
        return effects

    def take_over(
        self, now: float, priority: int, hold_off: float, ignore: frozenset[str] = frozenset()
    ) -> list[Effect]:
        """Force-failover run on a backup: become master now and advertise `priority` for
        `hold_off` seconds, so the current master hears a higher priority and steps down.
        Inhibitions in `ignore` do not refuse it (the master being the DRBD Primary is the
        point: our chain waits for it to demote)."""
        if self.state is not State.BACKUP or set(self.inhibitions) - ignore:
            return []
        self._priority_override = priority
        self._override_until = self._hold_off_until = now + hold_off
        return self._become_master(now, "force_failover")

    def reconfigure(self, params: InstanceParams) -> None:
        """Adopt reloaded settings that keep the instance's identity (VRID, version,
        addresses): priority, preemption, timers and GARP settings apply from now on."""
        self.params = params
        self._vips = frozenset(v.ip for v in params.virtual_ipaddress)
        self._peers = frozenset(params.unicast_peers)
        if self.state is State.MASTER:
            self.master_adver_interval = params.advert_interval

    def shutdown(self, now: float) -> list[Effect]:
        """§6.4.3 Shutdown: as master, send priority 0 and release the addresses."""
        if self.state is State.INITIALIZE:
            return []
        effects = self._leave_master() if self.state is State.MASTER else []
        self._clear_timers()
        return [self._change_state(State.INITIALIZE, "shutdown", now), *effects]

    # ---- per-state advert handling -------------------------------------------------------

    def _backup_receive(self, advert: Advertisement, src: IPAddress, now: float) -> list[Effect]:
        """RFC 5798 §6.4.2."""
        if advert.priority == PRIORITY_RESIGN:
            # The master is leaving: take over after Skew_Time only.
            self._master_down_timer = now + self.skew_time
            self._takeover_reason = "master_resigned"
            self.master_address = None
            return []
        if self._accepts_master(advert.priority, now):
            if advert.version == 3:
                # v3: learn the master's interval for our own timers (§6.4.2).
                self.master_adver_interval = advert.interval_seconds
            self._master_down_timer = now + self.master_down_interval
            self._takeover_reason = "master_down"
            self._takeover_deferred = False  # a live master: nothing is waiting any more
            self.master_address = src
            return []
        # Preempt a lower-priority master: discard its adverts and let the timer run out.
        self._takeover_reason = "preempt"
        if self._takeover_deferred and not self._blocking():
            # The timer ran out while we could not serve; what held us back does not hold
            # back a preemption (the master we hear is alive and will hand over).
            self._resume_deferred(now, self.skew_time)
        return []

    def _accepts_master(self, priority: int, now: float) -> bool:
        if priority >= self.effective_priority:
            self._lower_master_since = None
            return True
        if not self.params.preempt or now < self._hold_off_until:
            return True
        if self._lower_master_since is None:
            self._lower_master_since = now
        # preempt_delay counts from the first sight of a lower-priority master (keepalived).
        return now < self._lower_master_since + self.params.preempt_delay

    def _master_receive(self, advert: Advertisement, src: IPAddress, now: float) -> list[Effect]:
        mine = self.effective_priority
        if advert.priority == PRIORITY_RESIGN:
            # Another master is leaving; re-assert at once so backups see us (§6.4.3).
            self._adver_timer = now + self.params.advert_interval
            return [SendAdvert(mine)]
        if advert.priority > mine or (advert.priority == mine and self._loses_tie(src)):
            if advert.version == 3:
                self.master_adver_interval = advert.interval_seconds
            self.master_address = src
            # Two masters (a healed partition) and we lose. If the winner's advert reached us
            # before ours reached it, the winner never hears a lower-priority master and never
            # re-announces the VIPs, so neighbours keep our MAC. One last advert at our own
            # priority (never 0: that would start Skew_Time takeovers in third routers) makes
            # the winner send an advert and GARPs (below) after we have released the VIPs.
            return [*self._become_backup(now, "higher_priority"), SendAdvert(mine)]
        # A lower-priority master means both think they are master (a healed partition).
        # RFC 9568 §6.4.3 sends an advert at once; we also re-announce our addresses so
        # neighbours that followed the other master come back (keepalived makes this opt-in).
        self._adver_timer = now + self.params.advert_interval
        return [SendAdvert(mine), SendGarp("lower_priority_master")]

    def _loses_tie(self, src: IPAddress) -> bool:
        # §6.4.3: equal priority -> the higher primary address wins (compared as unsigned).
        return self.local_address is None or int(src) > int(self.local_address)

    # ---- state entry ---------------------------------------------------------------------

    def _become_master(self, now: float, reason: str) -> list[Effect]:
        """§6.4.1/§6.4.2: send an advert, bring the chain up (the VIP last, with its GARP
        burst), arm Adver_Timer. The GARP repeat/refresh timers start once the chain is up."""
        transition = self._change_state(State.MASTER, reason, now)
        if self.handover == "waiting":
            # Serving again with the resignation unanswered (the window ended, or
            # Master_Down_Interval first with adverts under ~60 ms): lift the hold-off.
            self.handover, self._hold_off_until = "retook", float("-inf")
        self._clear_timers()
        self._takeover_deferred = False
        self._chain_busy = True
        self.master_address = self.local_address
        self.master_adver_interval = self.params.advert_interval
        self._adver_timer = now + self.params.advert_interval
        return [transition, SendAdvert(self.effective_priority), Activate()]

    def _become_backup(self, now: float, reason: str) -> list[Effect]:
        # Stepping down for a higher-priority master sends no priority-0 advert (RFC 5798
        # §6.4.3; keepalived's vrrp_state_master_rx path calls leave_master with advF=false):
        # a third router would take it as "master leaving" and take over after Skew_Time.
        resigning = reason != "higher_priority"
        effects = self._leave_master(resign=resigning) if self.state is State.MASTER else []
        transition = self._change_state(State.BACKUP, reason, now)
        self._clear_timers()
        if reason != "higher_priority":
            self.master_adver_interval = self.params.advert_interval
            self.master_address = None
        self._master_down_timer = now + self.master_down_interval
        self._takeover_reason = "master_down"
        return [transition, *effects]

    def _enter_fault(self, now: float, reason: str) -> list[Effect]:
        effects = self._leave_master() if self.state is State.MASTER else []
        transition = self._change_state(State.FAULT, reason, now)
        self._clear_timers()
        self.master_address = None
        return [transition, *effects]

    def _leave_master(self, *, resign: bool = True) -> list[Effect]:
        # §6.4.3: a leaving master sends priority 0 so a backup takes over after Skew_Time.
        self._chain_busy = True
        if not resign:
            return [Deactivate()]
        return [SendAdvert(PRIORITY_RESIGN), Deactivate()]

    def _clear_timers(self) -> None:
        self._adver_timer = self._master_down_timer = None
        self._garp_delay_timer = self._garp_refresh_timer = None
        self._lower_master_since = None
        self._take_back_at = None

    def _fault_reason(self) -> str:
        return "fault:" + ",".join(sorted(self.faults))

    def _change_state(self, new: State, reason: str, now: float) -> Transition:
        if (self.state, new) not in TRANSITIONS:
            msg = f"bug: illegal VRRP transition {self.state} -> {new} ({reason})"
            raise IllegalTransition(msg)
        transition = Transition(self.state, new, reason)
        self.state = new
        self.last_transition = transition
        self.last_transition_at = now
        return transition
