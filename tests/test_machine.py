"""One Machine, time advanced by hand (`now` is a number; STYLE habit 3).

Worked timer values (RFC 3768 §6.1 / RFC 5798 §6.1), chosen to be exact binary fractions:
v2, 1 s, priority 100: Master_Down_Interval = 3 + 156/256 = 3.609375 s, Skew_Time 0.609375 s.
v2, 1 s, priority 200: Master_Down_Interval = 3 + 56/256 = 3.21875 s.
"""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Interface

import pytest
from fakes import VIP, address, params
from hypothesis import given, settings
from hypothesis import strategies as st

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
from drbdha.vrrp.machine import TRANSITIONS, IllegalTransition, Machine
from drbdha.vrrp.packet import Advertisement

MDI_V2_P100 = 3.609375
MDI_V2_P200 = 3.21875
SKEW_V2_P100 = 0.609375
PEER = address(1)  # 10.0.0.2, higher than the machine's own 10.0.0.1
LOWER_PEER = IPv4Address("10.0.0.0")


def adv(
    priority: int, *, version: int = 2, interval: int = 1, vips: tuple = (VIP,)
) -> Advertisement:
    """An advert as decoded; `interval` in wire units (s for v2, cs for v3)."""
    return Advertisement(version, 51, priority, interval, tuple(v.ip for v in vips))


def machine(**overrides: object) -> Machine:
    return Machine(params(**overrides), address(0))


def backup(now: float = 0.0, **overrides: object) -> Machine:
    m = machine(**overrides)
    m.start(now)
    assert m.state is State.BACKUP
    return m


def master(**overrides: object) -> tuple[Machine, float]:
    """A machine that became master by Master_Down_Timer expiry; returns it and that time."""
    m = backup(**overrides)
    at = m.get_timer()
    assert at is not None
    m.handle_timer(at)
    assert m.state is State.MASTER
    m.chain_settled(True, at)  # an instant chain: the VIP is up
    return m, at


def run_timers(m: Machine, until: float) -> list[tuple[float, Effect]]:
    """Call handle_timer() at each deadline up to `until`, as the daemon loop would."""
    out: list[tuple[float, Effect]] = []
    while (at := m.get_timer()) is not None and at <= until:
        out += [(at, e) for e in m.handle_timer(at)]
    return out


def transitions(effects: list[Effect]) -> list[Transition]:
    return [e for e in effects if isinstance(e, Transition)]


# ---- Initialize (§6.4.1) -------------------------------------------------------------------


def test_start_enters_backup_with_master_down_timer() -> None:
    m = machine()
    assert m.get_timer() is None
    assert m.start(10.0) == [Transition(State.INITIALIZE, State.BACKUP, "startup")]
    assert m.state is State.BACKUP
    assert m.get_timer() == 10.0 + MDI_V2_P100
    assert m.start(11.0) == []  # a second start is a no-op


def test_address_owner_becomes_master_at_once() -> None:
    m = machine(priority=255)
    effects = m.start(0.0)
    assert effects == [
        Transition(State.INITIALIZE, State.MASTER, "address_owner"),
        SendAdvert(255),
        Activate(),
    ]
    assert m.get_timer() == 1.0
    assert m.snapshot().master_address == address(0)


# ---- Backup: Master_Down_Timer -------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "interval", "priority", "mdi"),
    [
        (2, 1.0, 100, 3.609375),
        (2, 1.0, 200, 3.21875),
        (3, 1.0, 200, 3.21875),
        (3, 0.1, 100, 0.3 + 156 * 0.1 / 256),
        (3, 0.01, 254, 0.03 + 2 * 0.01 / 256),
    ],
)
def test_master_down_after_exactly_master_down_interval(
    version: int, interval: float, priority: int, mdi: float
) -> None:
    m = backup(5.0, version=version, advert_interval=interval, priority=priority)
    assert m.master_down_interval == pytest.approx(mdi, abs=1e-12)
    deadline = m.get_timer()
    assert deadline == pytest.approx(5.0 + mdi, abs=1e-12)
    assert m.handle_timer(deadline - 1e-6) == []
    assert m.state is State.BACKUP
    effects = m.handle_timer(deadline)
    assert effects == [
        Transition(State.BACKUP, State.MASTER, "master_down"),
        SendAdvert(priority),
        Activate(),
    ]
    assert m.get_timer() == pytest.approx(deadline + interval)


def test_advert_from_master_resets_master_down_timer() -> None:
    m = backup()
    assert m.receive(adv(200), PEER, 2.0) == []
    assert m.get_timer() == 2.0 + MDI_V2_P100
    assert m.snapshot().master_address == PEER
    assert m.handle_timer(2.0 + MDI_V2_P100 - 0.001) == []


def test_a_backup_that_was_stopped_gives_the_master_a_whole_interval_again() -> None:
    """After a freeze the expired Master_Down_Timer measured our own silence: the loop
    calls resumed() before it runs the timers, and the master's next advert keeps us
    backup (the lab: a takeover and a probe of a live master right after a thaw)."""
    m = backup()
    m.receive(adv(200), PEER, 2.0)
    thawed = 2.0 + MDI_V2_P100 + 6.0  # the timer ran out 6 s ago
    m.resumed(thawed)
    assert m.get_timer() == pytest.approx(thawed + MDI_V2_P100)
    assert m.handle_timer(thawed) == []
    assert m.receive(adv(200), PEER, thawed + 0.5) == []
    assert m.state is State.BACKUP
    # Still silent a whole interval later: the master is gone, take over as usual.
    at = m.get_timer()
    assert at is not None
    assert transitions(m.handle_timer(at)) == [
        Transition(State.BACKUP, State.MASTER, "master_down")
    ]


def test_a_master_that_was_stopped_keeps_its_timers() -> None:
    m, at = master()
    due = m.get_timer()
    m.resumed(at + 6.0)
    assert m.get_timer() == due  # its overdue advert goes out at once


def test_priority_zero_advert_takes_over_after_skew_time() -> None:
    m = backup()
    m.receive(adv(200), PEER, 1.0)
    assert m.receive(adv(0), PEER, 2.0) == []
    assert m.get_timer() == 2.0 + SKEW_V2_P100
    assert m.snapshot().master_address is None
    assert m.handle_timer(2.0 + SKEW_V2_P100 - 0.001) == []
    effects = m.handle_timer(2.0 + SKEW_V2_P100)
    assert transitions(effects) == [Transition(State.BACKUP, State.MASTER, "master_resigned")]


def test_v3_priority_zero_skew_uses_master_adver_interval() -> None:
    m = backup(version=3, advert_interval=1.0)
    m.receive(adv(200, version=3, interval=10), PEER, 1.0)  # learns 0.1 s
    m.receive(adv(0, version=3, interval=10), PEER, 1.05)
    assert m.get_timer() == pytest.approx(1.05 + 156 * 0.1 / 256)


def test_v3_backup_learns_master_interval() -> None:
    m = backup(version=3, advert_interval=1.0)
    assert m.receive(adv(200, version=3, interval=50), PEER, 1.0) == []
    assert m.master_adver_interval == 0.5
    assert m.snapshot().master_adver_interval == 0.5
    learnt_mdi = 3 * 0.5 + 156 * 0.5 / 256
    assert m.master_down_interval == pytest.approx(learnt_mdi)
    assert m.get_timer() == pytest.approx(1.0 + learnt_mdi)
    # The master goes quiet: take over after the learnt interval, then advertise at our own.
    effects = m.handle_timer(1.0 + learnt_mdi)
    assert transitions(effects)[0].reason == "master_down"
    assert m.master_adver_interval == 1.0
    assert m.get_timer() == pytest.approx(2.0 + learnt_mdi)


def test_v2_interval_mismatch_is_dropped_and_timer_not_reset() -> None:
    m = backup()
    assert m.receive(adv(200, interval=2), PEER, 2.0) == [
        InvalidAdvert("interval_mismatch", dropped=True)
    ]
    assert m.get_timer() == MDI_V2_P100
    assert m.snapshot().master_address is None
    assert m.master_adver_interval == 1.0
    assert transitions(m.handle_timer(MDI_V2_P100))[0].new is State.MASTER


def test_unknown_unicast_peer_is_dropped() -> None:
    m = backup(unicast_peers=(PEER,))
    stranger = IPv4Address("10.0.0.9")
    assert m.receive(adv(200), stranger, 1.0) == [InvalidAdvert("unknown_peer", dropped=True)]
    assert m.get_timer() == MDI_V2_P100
    assert m.receive(adv(200), PEER, 1.0) == []
    assert m.get_timer() == 1.0 + MDI_V2_P100


def test_addr_list_mismatch_warns_but_counts() -> None:
    m = backup()
    other = (IPv4Interface("198.51.100.7/24"),)
    assert m.receive(adv(200, vips=other), PEER, 1.0) == [InvalidAdvert("addr_list", dropped=False)]
    assert m.get_timer() == 1.0 + MDI_V2_P100
    assert m.snapshot().master_address == PEER


def test_own_advert_is_ignored() -> None:
    m = backup()
    assert m.receive(adv(200), address(0), 1.0) == []
    assert m.get_timer() == MDI_V2_P100


# ---- Backup: preemption ---------------------------------------------------------------------


def feed_lower_master(m: Machine, times: list[float], priority: int = 100) -> None:
    for t in times:
        assert m.receive(adv(priority), PEER, t) == []
        assert m.state is State.BACKUP


def test_preempt_discards_lower_master_and_takes_over_at_master_down() -> None:
    m = backup(priority=200)
    feed_lower_master(m, [0.5, 1.5, 2.5])
    assert m.get_timer() == MDI_V2_P200  # never reset by the lower master
    effects = m.handle_timer(MDI_V2_P200)
    assert transitions(effects) == [Transition(State.BACKUP, State.MASTER, "preempt")]


def test_nopreempt_accepts_lower_master() -> None:
    m = backup(priority=200, preempt=False)
    feed_lower_master(m, [0.5 + k for k in range(10)])
    assert m.get_timer() == 9.5 + MDI_V2_P200
    assert m.handle_timer(9.5 + MDI_V2_P200 - 0.001) == []
    assert m.snapshot().master_address == PEER


def test_preempt_delay_tolerates_lower_master_then_preempts() -> None:
    m = backup(priority=200, preempt_delay=5.0)
    # First sight at 0.5: accepted while now < 5.5, so 0.5..4.5 reset the timer, 5.5 does not.
    feed_lower_master(m, [0.5 + k for k in range(6)])
    assert m.get_timer() == 4.5 + MDI_V2_P200
    assert m.handle_timer(4.5 + MDI_V2_P200 - 0.001) == []
    effects = m.handle_timer(4.5 + MDI_V2_P200)
    assert transitions(effects) == [Transition(State.BACKUP, State.MASTER, "preempt")]


def test_higher_master_clears_preempt_delay_start() -> None:
    m = backup(priority=200, preempt_delay=2.0)
    feed_lower_master(m, [0.5, 1.5])  # lower master first seen at 0.5
    assert m.receive(adv(250), PEER, 2.0) == []  # a higher master: the count restarts
    feed_lower_master(m, [2.5, 3.5, 4.5])  # first sight again at 2.5: tolerated until 4.5
    assert m.get_timer() == 3.5 + MDI_V2_P200


# ---- Master receiving adverts (§6.4.3) ------------------------------------------------------


def test_master_hearing_lower_priority_advertises_at_once_and_regarps() -> None:
    m, at = master(priority=200)
    now = at + 0.25
    assert m.receive(adv(100), PEER, now) == [SendAdvert(200), SendGarp("lower_priority_master")]
    assert m.state is State.MASTER
    assert m.get_timer() == now + 1.0  # Adver_Timer restarted from the advert just sent


def test_master_hearing_higher_priority_steps_down_without_resign_advert() -> None:
    m, at = master(priority=100)
    now = at + 0.5
    effects = m.receive(adv(200), PEER, now)
    # No priority-0 advert (that would make third routers take over after Skew_Time), but one
    # advert at our own priority after releasing, so the winner re-announces the VIPs.
    assert effects == [
        Transition(State.MASTER, State.BACKUP, "higher_priority"),
        Deactivate(),
        SendAdvert(100),
    ]
    assert m.get_timer() == now + MDI_V2_P100
    assert m.snapshot().master_address == PEER


def test_master_stepping_down_v3_adopts_master_interval() -> None:
    m, at = master(version=3, advert_interval=1.0)
    m.receive(adv(200, version=3, interval=25), PEER, at + 0.5)
    assert m.state is State.BACKUP
    assert m.master_adver_interval == 0.25
    assert m.get_timer() == pytest.approx(at + 0.5 + 0.75 + 156 * 0.25 / 256)


def test_equal_priority_master_with_lower_address_steps_down() -> None:
    m, at = master()  # 10.0.0.1
    effects = m.receive(adv(100), PEER, at + 0.5)  # from 10.0.0.2
    assert effects == [
        Transition(State.MASTER, State.BACKUP, "higher_priority"),
        Deactivate(),
        SendAdvert(100),
    ]


def test_equal_priority_master_with_higher_address_stays() -> None:
    m, at = master()  # 10.0.0.1
    effects = m.receive(adv(100), LOWER_PEER, at + 0.5)  # from 10.0.0.0
    assert effects == [SendAdvert(100), SendGarp("lower_priority_master")]
    assert m.state is State.MASTER


def test_master_hearing_priority_zero_advertises_at_once() -> None:
    m, at = master()
    assert m.receive(adv(0), PEER, at + 0.5) == [SendAdvert(100)]
    assert m.state is State.MASTER
    assert m.get_timer() == at + 1.5


# ---- Master timers ---------------------------------------------------------------------------


def test_adver_timer_is_scheduled_from_the_deadline_not_from_now() -> None:
    m = machine(priority=255)
    m.start(0.0)
    assert m.handle_timer(1.3) == [SendAdvert(255)]  # 0.3 s late
    assert m.get_timer() == 2.0  # no drift
    assert m.handle_timer(2.05) == [SendAdvert(255)]
    assert m.get_timer() == 3.0
    assert m.handle_timer(5.5) == [SendAdvert(255)]  # late by more than an interval
    assert m.get_timer() == 6.5  # one advert, not a burst of catch-up adverts
    assert m.handle_timer(6.4) == []


def test_garp_second_burst_after_delay_then_periodic_refresh() -> None:
    m = machine(priority=255, garp_master_delay=5.0, garp_master_refresh=60.0)
    m.start(0.0)
    m.chain_settled(True, 0.0)
    effects = run_timers(m, 125.0)
    garps = [(t, e.reason) for t, e in effects if isinstance(e, SendGarp)]
    assert garps == [(5.0, "master_delay"), (60.0, "refresh"), (120.0, "refresh")]
    adverts = [t for t, e in effects if isinstance(e, SendAdvert)]
    assert adverts == [float(k) for k in range(1, 126)]


def test_get_timer_returns_earliest_pending_deadline() -> None:
    m = machine(priority=255, garp_master_delay=0.5, garp_master_refresh=0.75)
    m.start(0.0)
    m.chain_settled(True, 0.0)
    seen = []
    while (at := m.get_timer()) is not None and at <= 3.0:
        assert m.handle_timer(at - 1e-9) == []  # nothing is due before get_timer()
        seen.append((at, m.handle_timer(at)))
    assert seen == [
        (0.5, [SendGarp("master_delay")]),
        (0.75, [SendGarp("refresh")]),
        (1.0, [SendAdvert(255)]),
        (1.5, [SendGarp("refresh")]),
        (2.0, [SendAdvert(255)]),
        (2.25, [SendGarp("refresh")]),
        (3.0, [SendAdvert(255), SendGarp("refresh")]),
    ]


# ---- Fault, resign, shutdown ----------------------------------------------------------------


def test_link_down_as_master_resigns_and_enters_fault() -> None:
    m, at = master()
    effects = m.set_fault("link", True, at + 0.5)
    assert effects == [
        Transition(State.MASTER, State.FAULT, "fault:link"),
        SendAdvert(0),
        Deactivate(),
    ]
    assert m.get_timer() is None
    assert m.receive(adv(200), PEER, at + 1.0) == []
    assert m.set_fault("link", True, at + 1.0) == []  # no edge, nothing said


def test_fault_cleared_returns_to_backup_only_when_all_faults_clear() -> None:
    m = backup()
    assert transitions(m.set_fault("link", True, 1.0)) == [
        Transition(State.BACKUP, State.FAULT, "fault:link")
    ]
    assert m.set_fault("disk", True, 1.5) == []
    assert m.snapshot().faults == ("disk", "link")
    assert m.set_fault("link", False, 2.0) == []
    assert m.state is State.FAULT
    assert m.set_fault("disk", False, 3.0) == [
        Transition(State.FAULT, State.BACKUP, "fault_cleared")
    ]
    assert m.get_timer() == 3.0 + MDI_V2_P100


def test_fault_before_start_starts_in_fault_and_owner_recovers_to_master() -> None:
    m = machine(priority=255)
    assert m.set_fault("link", True, 0.0) == []
    assert m.start(0.0) == [Transition(State.INITIALIZE, State.FAULT, "fault:link")]
    effects = m.set_fault("link", False, 1.0)
    assert effects[0] == Transition(State.FAULT, State.MASTER, "fault_cleared")
    assert Activate() in effects


def test_resign_sends_priority_zero_and_holds_off_preemption() -> None:
    m, _ = master(priority=200)
    effects = m.resign(10.0, hold_off=30.0)
    assert effects == [
        Transition(State.MASTER, State.BACKUP, "resign"),
        SendAdvert(0),
        Deactivate(),
    ]
    m.chain_settled(False, 10.0)
    assert m.snapshot().preempt_hold_off_until == 40.0
    # A lower-priority peer takes over; during the hold-off it is accepted as master.
    feed_lower_master(m, [10.5 + k for k in range(30)])  # 10.5 .. 39.5
    assert m.get_timer() == 39.5 + MDI_V2_P200
    feed_lower_master(m, [40.5, 41.5, 42.5])  # hold-off over: discarded (preempt)
    assert m.get_timer() == 39.5 + MDI_V2_P200
    effects = m.handle_timer(39.5 + MDI_V2_P200)
    assert transitions(effects) == [Transition(State.BACKUP, State.MASTER, "preempt")]


def test_resign_is_a_no_op_unless_master() -> None:
    m = backup()
    assert m.resign(1.0, hold_off=10.0) == []
    assert m.state is State.BACKUP


def test_shutdown_as_master_sends_priority_zero_and_releases() -> None:
    m, at = master()
    assert m.shutdown(at + 0.5) == [
        Transition(State.MASTER, State.INITIALIZE, "shutdown"),
        SendAdvert(0),
        Deactivate(),
    ]
    assert m.get_timer() is None
    assert m.shutdown(at + 1.0) == []
    assert m.receive(adv(200), PEER, at + 1.0) == []


def test_shutdown_as_backup_sends_nothing() -> None:
    m = backup()
    assert m.shutdown(1.0) == [Transition(State.BACKUP, State.INITIALIZE, "shutdown")]
    assert m.get_timer() is None


# ---- The transition table -------------------------------------------------------------------


def _in_state(state: State) -> Machine:
    if state is State.INITIALIZE:
        return machine()
    if state is State.BACKUP:
        return backup()
    if state is State.MASTER:
        return master()[0]
    m = machine()
    m.set_fault("link", True, 0.0)
    m.start(0.0)
    return m


DISALLOWED = sorted((a, b) for a in State for b in State if (a, b) not in TRANSITIONS)


def test_disallowed_pairs_are_exactly_the_self_loops() -> None:
    assert sorted((s, s) for s in State) == DISALLOWED


@pytest.mark.parametrize(("old", "new"), DISALLOWED)
def test_illegal_transition_raises_and_leaves_state_unchanged(old: State, new: State) -> None:
    m = _in_state(old)
    before = m.snapshot()
    with pytest.raises(IllegalTransition, match="illegal VRRP transition"):
        m._change_state(new, "test", 99.0)
    assert m.state is old
    assert m.snapshot() == before


# ---- Random operation sequences -------------------------------------------------------------

Op = Callable[[Machine, float], list[Effect]]


def _receive(priority: int, src: IPv4Address, vips: tuple[IPv4Interface, ...]) -> Op:
    return lambda m, t: m.receive(adv(priority, vips=vips), src, t)


OPS = st.one_of(
    st.builds(
        _receive,
        st.sampled_from([0, 1, 99, 100, 101, 200, 255]),
        st.sampled_from([PEER, LOWER_PEER, address(0)]),
        st.sampled_from([(VIP,), ()]),
    ),
    st.sampled_from(
        [
            lambda m, t: m.handle_timer(t),
            lambda m, t: m.set_fault("link", True, t),
            lambda m, t: m.set_fault("link", False, t),
            lambda m, t: m.resign(t, 2.0),
            lambda m, t: m.shutdown(t),
            lambda m, t: m.start(t),
        ]
    ),
)


class _Checker:
    """Checks one batch of effects against the state change it came with."""

    def __init__(self, m: Machine) -> None:
        self.m = m
        self.holds = False

    def check(self, old: State, effects: list[Effect], now: float) -> None:
        m = self.m
        trans = transitions(effects)
        if m.state is old:
            assert trans == [], f"{trans} without a state change"
        else:
            assert len(trans) == 1, f"{old} -> {m.state} gave {trans}"
            assert (trans[0].old, trans[0].new) == (old, m.state)
            # The transition comes before its entry/exit actions (only a warning may precede).
            first = effects.index(trans[0])
            assert all(isinstance(e, InvalidAdvert) for e in effects[:first])
        for e in effects:
            if isinstance(e, Activate):
                assert not self.holds
                self.holds = True
            elif isinstance(e, Deactivate):
                assert self.holds
                self.holds = False
        assert self.holds == (m.state is State.MASTER)
        timer = m.get_timer()
        # A backup whose Master_Down_Interval ended while its chain was still releasing
        # waits without a timer for chain_settled (which this test never sends) to re-arm it.
        waiting = m.state is State.BACKUP and m.takeover_deferred
        assert (timer is None) == (m.state in (State.INITIALIZE, State.FAULT) or waiting)
        assert timer is None or timer > now


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    priority=st.sampled_from([1, 100, 200, 255]),
    preempt=st.booleans(),
    garp=st.booleans(),
    steps=st.lists(st.tuples(st.floats(0.0, 2.0), OPS), max_size=40),
)
def test_random_inputs_keep_machine_invariants(
    priority: int, preempt: bool, garp: bool, steps: list[tuple[float, Op]]
) -> None:
    """Whatever the inputs: exactly one Transition per state change, before its actions;
    VIPs acquired and released in turn and held exactly while MASTER; get_timer() is None
    exactly when no timer may run, never in the past, and nothing is due before it."""
    m = machine(
        priority=priority,
        preempt=preempt,
        garp_master_delay=0.5 if garp else 0.0,
        garp_master_refresh=1.5 if garp else 0.0,
    )
    checker = _Checker(m)
    now = 0.0
    for dt, op in steps:
        target = now + dt
        while (deadline := m.get_timer()) is not None and deadline <= target:
            old = m.state
            assert m.handle_timer(max(now, deadline - 1e-6)) == []
            now = deadline
            checker.check(old, m.handle_timer(now), now)
        now = target
        old = m.state
        checker.check(old, op(m, now), now)
