"""The machine's storage-aware inputs: inhibitions (reasons not to take over that are no fault
of this node), the chain's settling, a failed takeover's back-off, and resuming after a
restart. Pure: time is a number."""

from __future__ import annotations

import pytest
from fakes import VIP, address, params

from drbdha.vrrp.events import Activate, Deactivate, SendAdvert, SendGarp, State, Transition
from drbdha.vrrp.machine import Machine
from drbdha.vrrp.packet import Advertisement

MDI = 3.609375  # v2, 1 s, priority 100
SKEW = 0.609375


def backup(**overrides: object) -> Machine:
    m = Machine(params(**overrides), address(0))
    m.start(0.0)
    return m


def master_with_chain_up() -> tuple[Machine, float]:
    m = backup()
    at = m.get_timer()
    assert at is not None
    m.handle_timer(at)
    m.chain_settled(True, at)
    return m, at


def advert(priority: int) -> Advertisement:
    return Advertisement(2, 51, priority, 1, (VIP.ip,))


def test_inhibited_backup_does_not_take_over_when_master_down_ends() -> None:
    m = backup()
    m.set_inhibit("peer_primary", True, 1.0)
    assert m.handle_timer(MDI) == []
    assert m.state is State.BACKUP
    snap = m.snapshot()
    assert snap.inhibitions == ("peer_primary",)
    assert snap.takeover_deferred
    assert m.get_timer() is None  # nothing to do until the reason clears


def test_takeover_after_skew_time_once_the_inhibition_clears() -> None:
    m = backup()
    m.set_inhibit("peer_primary", True, 1.0)
    m.handle_timer(MDI)
    assert m.set_inhibit("peer_primary", False, 10.0) == []
    assert m.get_timer() == pytest.approx(10.0 + SKEW)
    effects = m.handle_timer(10.0 + SKEW)
    assert effects[0] == Transition(State.BACKUP, State.MASTER, "master_down")
    assert Activate() in effects


def test_inhibition_cleared_while_a_master_advertises_changes_nothing() -> None:
    m = backup()
    m.set_inhibit("peer_primary", True, 0.5)
    m.receive(advert(150), address(1), 1.0)
    m.set_inhibit("peer_primary", False, 1.5)
    assert m.get_timer() == pytest.approx(1.0 + MDI)  # the master's adverts still rule


def test_master_that_becomes_inhibited_resigns_and_releases_the_chain() -> None:
    m, at = master_with_chain_up()
    effects = m.set_inhibit("disk_latched", True, at + 1)
    assert effects == [
        Transition(State.MASTER, State.BACKUP, "inhibited"),
        SendAdvert(0),
        Deactivate(),
    ]


def test_a_second_inhibition_or_clearing_an_unknown_one_is_quiet() -> None:
    m = backup()
    m.set_inhibit("a", True, 0.0)
    assert m.set_inhibit("b", True, 0.1) == []
    assert m.set_inhibit("zzz", False, 0.2) == []
    m.handle_timer(MDI)
    m.set_inhibit("a", False, 5.0)
    assert m.get_timer() is None  # "b" still holds it back
    m.set_inhibit("b", False, 6.0)
    assert m.get_timer() == pytest.approx(6.0 + SKEW)


def test_chain_failure_resigns_and_backs_off() -> None:
    m, at = master_with_chain_up()
    effects = m.chain_failed(at + 1, backoff=15.0)
    assert effects[0] == Transition(State.MASTER, State.BACKUP, "inhibited")
    assert SendAdvert(0) in effects
    m.chain_settled(False, at + 1.5)
    # No peer takes over: Master_Down_Interval ends inside the back-off; we wait it out.
    assert m.handle_timer(at + 1.5 + MDI) == []
    assert m.get_timer() == pytest.approx(at + 16)
    assert m.handle_timer(at + 16) == []  # back-off over: take over after Skew_Time
    assert m.snapshot().inhibitions == ()
    effects = m.handle_timer(at + 16 + SKEW)
    assert effects[0] == Transition(State.BACKUP, State.MASTER, "master_down")


def test_backup_waits_for_its_own_chain_to_stop_then_gives_the_peer_a_full_interval() -> None:
    m, at = master_with_chain_up()
    m.resign(at + 1, hold_off=0.0)  # Deactivate: the chain is stopping (a slow demote)
    assert m.handle_timer(at + 1 + MDI) == []  # not while our storage is still held
    assert m.state is State.BACKUP
    m.chain_settled(False, at + 20)
    assert m.get_timer() == pytest.approx(at + 20 + MDI)


def test_garp_timers_start_when_the_chain_is_up_not_at_the_decision() -> None:
    m = backup(garp_master_delay=5.0, garp_master_refresh=0.0)
    m.handle_timer(MDI)
    assert m.state is State.MASTER
    m.chain_settled(True, MDI + 20.0)  # a 20 s takeover
    garps = []
    while (t := m.get_timer()) is not None and t <= MDI + 26.0:
        garps += [(t, e) for e in m.handle_timer(t) if isinstance(e, SendGarp)]
    assert garps == [(pytest.approx(MDI + 25.0), SendGarp("master_delay"))]


def test_resume_after_restart_serves_at_once() -> None:
    m = Machine(params(), address(0))
    effects = m.start(0.0, resume=True)
    assert effects[0] == Transition(State.INITIALIZE, State.MASTER, "reconciled")
    assert Activate() in effects


def test_resume_is_not_taken_while_inhibited() -> None:
    m = Machine(params(), address(0))
    m.set_inhibit("peer_primary", True, 0.0)
    effects = m.start(0.0, resume=True)
    assert effects == [Transition(State.INITIALIZE, State.BACKUP, "startup")]


def test_force_take_over_refused_while_inhibited() -> None:
    m = backup()
    m.receive(advert(150), address(1), 0.5)
    m.set_inhibit("no_uptodate_disk", True, 0.6)
    assert m.take_over(1.0, 254, 300.0) == []
    assert m.state is State.BACKUP


def test_inhibition_with_expiry_shows_in_get_timer() -> None:
    m = backup()
    m.receive(advert(150), address(1), 0.5)
    m.set_inhibit("promote_backoff", True, 0.6, until=2.0)
    assert m.get_timer() == 2.0
    m.handle_timer(2.0)
    assert m.snapshot().inhibitions == ()


def test_preemption_goes_ahead_past_an_inhibition_that_allows_it() -> None:
    m = backup(priority=200)
    m.set_inhibit("peer_primary", True, 0.0, blocks_preempt=False)
    m.set_inhibit("promote_backoff", True, 0.0, until=1.0)
    for t in (0.5, 1.5, 2.5):
        m.receive(advert(100), address(1), t)  # a live lower-priority master
    m.handle_timer(1.0)  # the back-off ends
    at = m.get_timer()
    assert at is not None
    effects = m.handle_timer(at)
    assert effects[0] == Transition(State.BACKUP, State.MASTER, "preempt")


def test_a_silent_primary_peer_still_holds_back_master_down() -> None:
    m = backup(priority=200)
    m.set_inhibit("peer_primary", True, 0.0, blocks_preempt=False)
    assert m.handle_timer(3.3) == []  # master_down, not preempt: wait for DRBD
    assert m.snapshot().takeover_deferred


def test_latched_node_preempts_once_cleared_while_the_peer_is_primary() -> None:
    """The lab case: node1 (200, preempt) handed over on a disk latch; node2 (100) serves
    and is Primary; the latch is cleared: node1 preempts, peer_primary notwithstanding."""
    m = Machine(params(priority=200), address(0))
    m.start(0.0)
    m.handle_timer(m.get_timer() or 0.0)
    m.chain_settled(True, 4.0)
    m.set_inhibit("disk_latched", True, 5.0)  # resigns
    m.chain_settled(False, 6.0)
    m.set_inhibit("peer_primary", True, 6.5, blocks_preempt=False)  # node2 promoted
    t = 7.0
    while t < 12.0:
        m.receive(advert(100), address(1), t)
        m.handle_timer(t)
        t += 1.0
    assert m.state is State.BACKUP  # latched: stays out
    m.set_inhibit("disk_latched", False, 12.0)
    m.receive(advert(100), address(1), 12.5)
    while (deadline := m.get_timer()) is not None and deadline < 20 and m.state is State.BACKUP:
        m.handle_timer(deadline)
    assert m.state is State.MASTER
    assert m.last_transition is not None
    assert m.last_transition.reason == "preempt"


def test_a_live_master_heard_cancels_a_deferred_takeover() -> None:
    m = backup()
    m.set_inhibit("no_uptodate_disk", True, 0.0)
    m.handle_timer(MDI)  # deferred
    m.receive(advert(150), address(1), 5.0)  # a master is back
    m.set_inhibit("no_uptodate_disk", False, 5.5)
    assert m.get_timer() == pytest.approx(5.0 + MDI)  # not 5.5 + Skew_Time
