"""Property test: a simulated LAN of 2 to 5 routers (issue 3, "hypothesis property tests of the
state machine on a simulated LAN ... after the network heals, exactly one master").

Hypothesis draws the routers (priorities distinct or partly equal, preempt flags and delays,
v2 or v3 with per-router v3 intervals) and a schedule of loss, delay, partitions, heals,
faults, resigns, clean stops and at most one crash. Then the wire heals, loss stops, faults
clear and stopped routers restart; after running well past twice the largest
Master_Down_Interval there must be exactly one master, holding the VIP alone, and when every
live router preempts it has the highest live priority.
"""

from __future__ import annotations

from dataclasses import dataclass

from fakes import FakeLink, address, params
from hypothesis import event, given, settings
from hypothesis import strategies as st

from drbdha.vrrp.events import State
from drbdha.vrrp.machine import Machine


@dataclass(frozen=True)
class Router:
    priority: int
    preempt: bool
    preempt_delay: float
    interval: float
    address_index: int  # distinct; a higher index is a higher primary address


@dataclass(frozen=True)
class Lan:
    version: int
    routers: tuple[Router, ...]

    @property
    def max_interval(self) -> float:
        return max(r.interval for r in self.routers)

    @property
    def min_interval(self) -> float:
        return min(r.interval for r in self.routers)

    @property
    def max_mdi(self) -> float:
        """An upper bound on any router's Master_Down_Interval (priority 1, any learnt
        interval)."""
        i = self.max_interval
        return 3 * i + (255 / 256 if self.version == 2 else 255 * i / 256)


@st.composite
def lans(draw: st.DrawFn) -> Lan:
    n = draw(st.integers(2, 5))
    version = draw(st.sampled_from([2, 3]))
    if version == 2:
        # RFC 3768 §7.1 drops adverts with another interval, so a v2 LAN shares one.
        intervals = [draw(st.sampled_from([1.0, 2.0]))] * n
    elif draw(st.booleans()):
        intervals = [draw(st.integers(5, 200)) / 100] * n
    else:
        intervals = [i / 100 for i in draw(st.lists(st.integers(5, 200), min_size=n, max_size=n))]
    if draw(st.booleans()):
        priorities = draw(st.lists(st.integers(1, 254), min_size=n, max_size=n, unique=True))
    else:  # some equal: the tie is broken by the primary address
        priorities = draw(st.lists(st.sampled_from([1, 100, 254, 255]), min_size=n, max_size=n))
    order = draw(st.permutations(range(n)))
    routers = tuple(
        Router(
            priority=priorities[k],
            preempt=draw(st.booleans()),
            preempt_delay=draw(st.sampled_from([0.0, 0.0, 2 * intervals[k]])),
            interval=intervals[k],
            address_index=order[k],
        )
        for k in range(n)
    )
    return Lan(version, routers)


# One step of the schedule: run for `fraction` x max Master_Down_Interval, then act.
Step = tuple[float, tuple[object, ...]]


@st.composite
def schedules(draw: st.DrawFn, n: int) -> list[Step]:
    router = st.integers(0, n - 1)
    action = st.one_of(
        st.tuples(st.just("loss"), st.floats(0.0, 0.9)),
        st.tuples(st.just("delay"), st.floats(0.0, 0.24)),
        st.tuples(st.just("groups"), st.lists(st.integers(0, 2), min_size=n, max_size=n)),
        st.tuples(st.just("isolate"), router),
        st.tuples(st.just("heal")),
        st.tuples(st.just("fault"), router, st.booleans()),
        st.tuples(st.just("resign"), router, st.floats(0.0, 2.0)),
        st.tuples(st.just("stop"), router),
        st.tuples(st.just("start"), router),
    )
    steps = draw(st.lists(st.tuples(st.floats(0.0, 2.0), action), min_size=1, max_size=8))
    kill = draw(st.none() | st.tuples(st.integers(0, len(steps)), router))
    if kill is not None:  # at most one crash
        steps.insert(kill[0], (0.0, ("kill", kill[1])))
    return steps


def build(lan: Lan, seed: int) -> FakeLink:
    machines = [
        Machine(
            params(
                version=lan.version,
                priority=r.priority,
                preempt=r.preempt,
                preempt_delay=r.preempt_delay,
                advert_interval=r.interval,
            ),
            address(r.address_index),
        )
        for r in lan.routers
    ]
    return FakeLink(machines, seed=seed)


def act(link: FakeLink, lan: Lan, action: tuple[object, ...]) -> None:
    match action:
        case ("loss", float(p)):
            link.loss = p
        case ("delay", float(fraction)):  # delays stay below a quarter of the shortest interval
            link.delay = (0.0, fraction * lan.min_interval)
        case ("groups", list(groups)):
            link.partition_groups(
                [[k for k, g in enumerate(groups) if g == gid] for gid in range(3)]
            )
        case ("isolate", int(i)):
            link.partition(i)
        case ("heal",):
            link.heal()
        case ("kill", int(i)):
            link.kill(i)
        case (_, int(i), *_) if not link.alive[i]:
            pass
        case ("fault", int(i), bool(active)):
            link.set_fault(i, "link", active)
        case ("resign", int(i), float(fraction)):
            link.resign(i, hold_off=fraction * lan.max_mdi)
        case ("stop", int(i)):
            link.stop(i)
        case ("start", int(i)):
            if not link.machines[i].faults:
                link.start(i)
        case _:
            raise AssertionError(f"unknown action {action}")


def settle(link: FakeLink) -> None:
    """The network heals: no loss, no partition, faults cleared, stopped routers restarted."""
    link.heal()
    link.loss = 0.0
    for i, m in enumerate(link.machines):
        if link.alive[i]:
            link.set_fault(i, "link", False)
            if m.state is State.INITIALIZE:
                link.start(i)


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(data=st.data(), lan=lans(), seed=st.integers(0, 2**16))
def test_after_heal_exactly_one_master_holds_the_vip(
    data: st.DataObject, lan: Lan, seed: int
) -> None:
    link = build(lan, seed)
    for fraction, action in data.draw(schedules(len(lan.routers)), label="schedule"):
        link.run_for(fraction * lan.max_mdi)
        act(link, lan, action)
    event(f"masters before the heal: {min(len(link.masters()), 2)}")
    event(f"crashed: {not all(link.alive)}")
    settle(link)
    hold_offs = [m.snapshot().preempt_hold_off_until for m in link.machines]
    hold_off_left = max([0.0, *(h - link.now for h in hold_offs)])
    max_delay = max(r.preempt_delay for r in lan.routers)
    link.run_for(hold_off_left + max_delay + 3 * lan.max_mdi)

    winner = link.assert_exactly_one_master()  # also: the master alone holds the VIP
    assert link.vip_holders() == [winner]
    alive = [i for i in range(len(lan.routers)) if link.alive[i]]
    assert all(link.states()[i] is State.BACKUP for i in alive if i != winner)
    if all(lan.routers[i].preempt for i in alive):
        top = max(lan.routers[i].priority for i in alive)
        assert lan.routers[winner].priority == top, (winner, link.states(), lan)
