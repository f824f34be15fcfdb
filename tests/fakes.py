"""Test doubles. Nothing here touches a socket, a clock or the kernel.

`FakeLink` is a simulated LAN segment: N `Machine`s on one wire, driven by a fake clock
(h11's ConnectionPair, aioquic's roundtrip(); STYLE habit 6). Time only moves inside
`run_until()`, which processes advert deliveries and machine timers in time order.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, ip_address

from drbdha.config import VrrpInstanceConfig
from drbdha.vrrp.events import (
    Activate,
    Deactivate,
    Effect,
    SendAdvert,
    SendGarp,
    State,
    Transition,
)
from drbdha.vrrp.machine import InstanceParams, Machine
from drbdha.vrrp.packet import Advertisement

VIP = IPv4Interface("192.0.2.100/24")


def params(**overrides: object) -> VrrpInstanceConfig:
    """A valid VrrpInstanceConfig (which satisfies machine.InstanceParams) with test defaults:
    v2, 1 s, priority 100, preempt, one VIP, and GARP timers far out of the way."""
    values: dict[str, object] = {
        "name": "vi_test",
        "interface": "eth0",
        "vrid": 51,
        "priority": 100,
        "version": 2,
        "advert_interval": 1.0,
        "virtual_ipaddress": (VIP,),
        "garp_master_delay": 0.0,
        "garp_master_refresh": 0.0,
    }
    values.update(overrides)
    return VrrpInstanceConfig(**values)  # type: ignore[arg-type]


def address(i: int) -> IPv4Address:
    """The primary address of router i in the fakes: 10.0.0.(i + 1)."""
    return IPv4Address(f"10.0.0.{i + 1}")


def advert_from(p: InstanceParams, priority: int | None = None) -> Advertisement:
    """The advertisement a router configured with `p` sends (interval in wire units)."""
    interval = int(p.advert_interval) if p.version == 2 else round(p.advert_interval * 100)
    return Advertisement(
        version=p.version,
        vrid=p.vrid,
        priority=p.priority if priority is None else priority,
        interval=interval,
        addresses=tuple(v.ip for v in p.virtual_ipaddress),
    )


@dataclass(frozen=True, slots=True)
class Delivery:
    """One advert seen by one receiver."""

    at: float
    src: int
    advert: Advertisement


@dataclass(order=True)
class _Event:
    at: float
    seq: int
    kind: str = field(compare=False)  # "deliver" | "start"
    target: int = field(compare=False)
    src: int = field(default=-1, compare=False)
    advert: Advertisement | None = field(default=None, compare=False)


DelaySpec = float | tuple[float, float] | Callable[[random.Random], float]


class FakeLink:
    """A FAKE shared Ethernet segment for Machine tests; no real I/O.

    - Every SendAdvert becomes one Advertisement delivery to every *other* machine, with the
      sender's `local_address` as source, after `delay` seconds (a number, a (lo, hi) range
      drawn per delivery, or a callable of the seeded RNG), unless lost (`loss`, probability
      per delivery, seeded) or cut by a partition (checked when sent and again on arrival).
    - kill(i) is a crash: the machine stops receiving and its timers stop; its VIPs count as
      gone with the host. stop(i) is a clean shutdown: its priority-0 advert goes out.
    - With `check_invariants`, every batch of effects is checked: a machine holds the VIPs
      exactly while it is MASTER, it never acquires twice or releases what it does not hold.
    """

    def __init__(
        self,
        machines: Sequence[Machine],
        *,
        delay: DelaySpec = 0.0,
        loss: float = 0.0,
        seed: int = 0,
        start_at: float | Sequence[float] | None = 0.0,
        check_invariants: bool = True,
        max_events: int = 200_000,
    ) -> None:
        self.machines = list(machines)
        self.delay = delay
        self.loss = loss
        self.rng = random.Random(seed)
        self.now = 0.0
        self.check_invariants = check_invariants
        self.max_events = max_events
        n = len(self.machines)
        self.alive = [True] * n
        self.group = [0] * n  # machines talk only within the same group
        self.holds_vips = [False] * n
        self.effects: list[list[tuple[float, Effect]]] = [[] for _ in range(n)]
        self.received: list[list[Delivery]] = [[] for _ in range(n)]
        self._queue: list[_Event] = []
        self._seq = 0
        self._events_run = 0
        if start_at is not None:
            times = [start_at] * n if isinstance(start_at, int | float) else list(start_at)
            for i, t in enumerate(times):
                self._push(_Event(float(t), 0, "start", i))

    # ---- driving ---------------------------------------------------------------------------

    def run_until(self, t: float) -> None:
        """Process every delivery and timer due at or before `t` in time order, then set
        now = t. At equal times, queued deliveries go before machine timers."""
        if t < self.now:
            raise ValueError(f"time runs forward: now={self.now}, asked {t}")
        while True:
            event_at = self._queue[0].at if self._queue else None
            timer = self._next_timer()
            if timer is not None and timer[0] < self.now:
                raise AssertionError(f"machine {timer[1]} timer {timer[0]} is in the past")
            if event_at is not None and event_at <= t and (timer is None or event_at <= timer[0]):
                self._tick()
                event = heapq.heappop(self._queue)
                self.now = event.at
                self._run_event(event)
            elif timer is not None and timer[0] <= t:
                self._tick()
                at, i = timer
                self.now = at
                self._apply(i, self.machines[i].handle_timer(at))
                after = self.machines[i].get_timer()
                if after is not None and after <= at:
                    raise AssertionError(f"machine {i}: handle_timer({at}) left timer at {after}")
            else:
                break
        self.now = t

    def run_for(self, dt: float) -> None:
        self.run_until(self.now + dt)

    def _tick(self) -> None:
        self._events_run += 1
        if self._events_run > self.max_events:
            raise AssertionError("FakeLink: event limit reached (a timer storm?)")

    def _next_timer(self) -> tuple[float, int] | None:
        timers = [
            (deadline, i)
            for i, m in enumerate(self.machines)
            if self.alive[i] and (deadline := m.get_timer()) is not None
        ]
        return min(timers, default=None)

    def _push(self, event: _Event) -> None:
        self._seq += 1
        event.seq = self._seq
        heapq.heappush(self._queue, event)

    def _run_event(self, event: _Event) -> None:
        i = event.target
        if not self.alive[i]:
            return
        if event.kind == "start":
            self._apply(i, self.machines[i].start(self.now))
            return
        assert event.advert is not None
        if not self._connected(event.src, i):
            return
        self.received[i].append(Delivery(self.now, event.src, event.advert))
        src = self.machines[event.src].local_address
        assert src is not None
        self._apply(i, self.machines[i].receive(event.advert, src, self.now))

    def _apply(self, i: int, effects: list[Effect]) -> None:
        for effect in effects:
            self.effects[i].append((self.now, effect))
            if isinstance(effect, SendAdvert):
                self._send(i, effect.priority)
            elif isinstance(effect, Activate):
                assert not self.holds_vips[i], f"machine {i} acquired VIPs it already holds"
                self.holds_vips[i] = True
                # An instant chain (the VIP alone): settled as soon as asked.
                self._apply(i, self.machines[i].chain_settled(True, self.now))
            elif isinstance(effect, Deactivate):
                assert self.holds_vips[i], f"machine {i} released VIPs it does not hold"
                self.holds_vips[i] = False
                self._apply(i, self.machines[i].chain_settled(False, self.now))
        if self.check_invariants and self.alive[i]:
            master = self.machines[i].state is State.MASTER
            assert self.holds_vips[i] == master, (
                f"machine {i} state={self.machines[i].state} holds_vips={self.holds_vips[i]}"
            )

    def _send(self, i: int, priority: int) -> None:
        advert = advert_from(self.machines[i].params, priority)
        for j in range(len(self.machines)):
            if j == i or not self._connected(i, j):
                continue
            if self.loss and self.rng.random() < self.loss:
                continue
            at = self.now + self._draw_delay()
            self._push(_Event(at, 0, "deliver", j, src=i, advert=advert))

    def _draw_delay(self) -> float:
        if callable(self.delay):
            return float(self.delay(self.rng))
        if isinstance(self.delay, tuple):
            lo, hi = self.delay
            return self.rng.uniform(lo, hi)
        return float(self.delay)

    def _connected(self, a: int, b: int) -> bool:
        return self.group[a] == self.group[b]

    # ---- faults on the wire and on the hosts ----------------------------------------------

    def partition(self, i: int) -> None:
        """Isolate machine i from all the others."""
        self.group[i] = max(self.group) + 1

    def partition_groups(self, groups: Sequence[Sequence[int]]) -> None:
        """Split the wire: machines talk only within their group; unlisted ones are alone."""
        self.group = [-(i + 1) for i in range(len(self.machines))]
        for g, members in enumerate(groups):
            for i in members:
                self.group[i] = g

    def heal(self) -> None:
        self.group = [0] * len(self.machines)

    def kill(self, i: int) -> None:
        """Crash machine i: no shutdown, no more input, no more timers."""
        self.alive[i] = False

    def revive(self, i: int, machine: Machine) -> None:
        """Replace crashed machine i by a fresh one (a restarted host) and start it now."""
        self.machines[i] = machine
        self.alive[i] = True
        self.holds_vips[i] = False
        self._apply(i, machine.start(self.now))

    def stop(self, i: int) -> None:
        """Clean shutdown of machine i now: its effects (a priority-0 advert) are carried out."""
        self._apply(i, self.machines[i].shutdown(self.now))

    def start(self, i: int) -> None:
        self._apply(i, self.machines[i].start(self.now))

    def set_fault(self, i: int, name: str, active: bool) -> None:
        self._apply(i, self.machines[i].set_fault(name, active, self.now))

    def resign(self, i: int, hold_off: float) -> None:
        self._apply(i, self.machines[i].resign(self.now, hold_off))

    # ---- observation ------------------------------------------------------------------------

    def states(self) -> list[State]:
        """Each machine's state (a killed machine keeps the state it crashed in)."""
        return [m.state for m in self.machines]

    def masters(self) -> list[int]:
        """Indexes of the live machines in MASTER."""
        return [i for i, m in enumerate(self.machines) if self.alive[i] and m.state is State.MASTER]

    def vip_holders(self) -> list[int]:
        """Indexes of the live machines holding the VIPs (Activate without Deactivate)."""
        return [i for i in range(len(self.machines)) if self.alive[i] and self.holds_vips[i]]

    def assert_exactly_one_master(self) -> int:
        masters = self.masters()
        assert len(masters) == 1, f"t={self.now}: masters={masters} states={self.states()}"
        holders = self.vip_holders()
        assert holders == masters, f"t={self.now}: master {masters} but VIP holders {holders}"
        return masters[0]

    def transitions(self, i: int) -> list[tuple[float, Transition]]:
        return [(t, e) for t, e in self.effects[i] if isinstance(e, Transition)]

    def became_master_at(self, i: int) -> list[float]:
        return [t for t, e in self.transitions(i) if e.new is State.MASTER]

    def sent(self, i: int) -> list[tuple[float, int]]:
        """(time, priority) of every advert machine i sent."""
        return [(t, e.priority) for t, e in self.effects[i] if isinstance(e, SendAdvert)]

    def garps(self, i: int, since: float = float("-inf")) -> list[tuple[float, str]]:
        return [(t, e.reason) for t, e in self.effects[i] if isinstance(e, SendGarp) and t >= since]


def make_machines(priorities: Sequence[int], **overrides: object) -> list[Machine]:
    """Machines with addresses 10.0.0.1.. in order, sharing every other parameter."""
    return [Machine(params(priority=p, **overrides), address(i)) for i, p in enumerate(priorities)]


def ip(text: str) -> IPv4Address:
    addr = ip_address(text)
    assert isinstance(addr, IPv4Address)
    return addr
