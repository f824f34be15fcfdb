"""Two and three Machines on a FakeLink (STYLE habit 6): every scenario ends with exactly one
master holding the VIP.

v2, 1 s: Master_Down_Interval is 3.21875 s at priority 200, 3.41406 s at 150 and 3.609375 s
at 100; Skew_Time at priority 100 is 0.609375 s.
"""

from __future__ import annotations

import pytest
from fakes import FakeLink, address, make_machines, params

from drbdha.vrrp.events import Deactivate, SendAdvert, State, Transition
from drbdha.vrrp.machine import Machine

MDI_P200 = 3.21875
MDI_P100 = 3.609375
SKEW_P100 = 0.609375
DELAY = 0.001

B, M = State.BACKUP, State.MASTER


def test_two_routers_elect_the_higher_priority() -> None:
    link = FakeLink(make_machines([200, 100]), delay=DELAY)
    link.run_until(10.0)
    assert link.states() == [M, B]
    assert link.assert_exactly_one_master() == 0
    assert link.became_master_at(0) == [MDI_P200]
    assert link.became_master_at(1) == []


def test_three_routers_elect_the_highest_whatever_the_start_order() -> None:
    link = FakeLink(make_machines([100, 250, 150]), delay=DELAY, start_at=[0.0, 7.0, 2.0])
    link.run_until(20.0)
    # Router 0 (100) starts alone and takes over at 3.609. Router 2 (150, preempt, up at 2)
    # discards its adverts and preempts at 2 + MDI(150); router 1 (250, up at 7) preempts
    # router 2 at 7 + MDI(250).
    assert link.assert_exactly_one_master() == 1
    assert link.became_master_at(0) == [MDI_P100]
    assert link.became_master_at(2) == [pytest.approx(2.0 + 3 + 106 / 256)]
    assert link.became_master_at(1) == [pytest.approx(7.0 + 3 + 6 / 256)]
    assert link.states() == [B, M, B]


def test_killed_master_is_replaced_within_master_down_interval() -> None:
    link = FakeLink(make_machines([200, 100]))
    link.run_until(10.3)
    kill_at = link.now
    link.kill(0)
    link.run_until(20.0)
    assert link.assert_exactly_one_master() == 1
    last_advert = max(d.at for d in link.received[1] if d.at <= kill_at)
    assert last_advert == MDI_P200 + 7  # adverts at 3.21875 + k, no drift
    (takeover,) = link.became_master_at(1)
    assert takeover == last_advert + MDI_P100
    assert MDI_P100 - 1.0 < takeover - kill_at <= MDI_P100


def test_killed_master_of_three_is_replaced_by_the_next_highest() -> None:
    link = FakeLink(make_machines([100, 250, 150]), delay=DELAY, seed=3)
    link.run_until(10.0)
    assert link.assert_exactly_one_master() == 1
    link.kill(1)
    link.run_until(20.0)
    assert link.assert_exactly_one_master() == 2
    assert link.became_master_at(0) == []  # 100 never took over: 150 fires first


def test_stopped_master_is_replaced_after_skew_time() -> None:
    link = FakeLink(make_machines([200, 100]), delay=DELAY)
    link.run_until(10.3)
    link.stop(0)
    assert link.sent(0)[-1] == (10.3, 0)
    assert link.states()[0] is State.INITIALIZE
    link.run_until(20.0)
    assert link.became_master_at(1) == [pytest.approx(10.3 + DELAY + SKEW_P100)]
    assert link.assert_exactly_one_master() == 1


def test_partition_gives_two_masters_and_heal_gives_one_with_fresh_garp() -> None:
    link = FakeLink(make_machines([200, 100, 150]), delay=DELAY)
    link.run_until(10.0)
    assert link.assert_exactly_one_master() == 0
    link.partition(0)
    link.run_until(20.0)
    assert sorted(link.masters()) == [0, 2]  # split brain while cut off
    assert sorted(link.vip_holders()) == [0, 2]
    assert link.states()[1] is B  # 100 accepts 150 as master
    heal_at = link.now
    link.heal()
    link.run_until(30.0)
    assert link.assert_exactly_one_master() == 0
    # The winner heard the other master and re-announced the VIP (§B1 dual-master recovery).
    assert (link.garps(0, since=heal_at) or [(0, "")])[0][1] == "lower_priority_master"
    # Router 2 stepped down for the higher master with one advert at its own priority, never
    # a priority-0 one, so router 1 never took over during the recovery.
    assert [p for t, p in link.sent(2) if t >= heal_at] == [150]
    assert link.became_master_at(1) == []


@pytest.mark.parametrize(("heal_at", "first"), [(20.0, 0), (20.5, 1)])
def test_heal_winner_regarps_whoever_advertises_first(heal_at: float, first: int) -> None:
    # Router 0 advertises at x.21875, router 1 (master since the cut) at x.828125: the heal
    # time decides whose advert crosses first. The winner must re-announce the VIP either way.
    link = FakeLink(make_machines([200, 100]), delay=DELAY)
    link.run_until(10.0)
    link.partition(0)
    link.run_until(heal_at)
    link.heal()
    link.run_until(heal_at + 5.0)
    assert link.assert_exactly_one_master() == 0
    first_after_heal = min(
        (d.at, d.src) for i in (0, 1) for d in link.received[i] if d.at >= heal_at
    )
    assert first_after_heal[1] == first
    # What counts for neighbours: a GARP from the winner after the loser dropped the VIP.
    released_at = next(t for t, e in link.effects[1] if t >= heal_at and isinstance(e, Deactivate))
    garps = link.garps(0, since=heal_at)
    assert {r for _, r in garps} == {"lower_priority_master"}
    assert garps[-1][0] >= released_at
    assert len(garps) <= 2


def test_partition_groups_then_heal() -> None:
    link = FakeLink(make_machines([100, 200, 150, 120]), delay=DELAY)
    link.run_until(10.0)
    link.partition_groups([[0, 2], [1, 3]])
    link.run_until(20.0)
    assert sorted(link.masters()) == [1, 2]
    link.heal()
    link.run_until(30.0)
    assert link.assert_exactly_one_master() == 1


def test_equal_priority_the_higher_address_wins() -> None:
    # Both time out at the same instant and both become master; the tie is broken by the
    # higher primary address (§6.4.3), so 10.0.0.2 stays.
    link = FakeLink(make_machines([100, 100]), delay=DELAY)
    link.run_until(10.0)
    assert link.became_master_at(0) == [MDI_P100]
    assert link.became_master_at(1) == [MDI_P100]
    assert link.transitions(0)[-1] == (
        pytest.approx(MDI_P100 + DELAY),
        Transition(M, B, "higher_priority"),
    )
    assert link.assert_exactly_one_master() == 1


def _v3(i: int, *, interval: float, priority: int) -> Machine:
    """Router i of the fakes, VRRPv3 with its own advert interval."""
    return Machine(params(version=3, advert_interval=interval, priority=priority), address(i))


def test_v3_backup_learns_the_master_interval() -> None:
    fast, slow = _v3(0, interval=0.5, priority=200), _v3(1, interval=2.0, priority=100)
    link = FakeLink([fast, slow], delay=DELAY, start_at=[0.0, 0.25])
    link.run_until(10.0)
    assert link.assert_exactly_one_master() == 0
    assert slow.snapshot().master_adver_interval == 0.5
    learnt_mdi = 1.5 + 156 * 0.5 / 256
    link.kill(0)
    last = link.received[1][-1].at
    link.run_until(20.0)
    assert link.became_master_at(1) == [pytest.approx(last + learnt_mdi)]
    assert slow.snapshot().master_adver_interval == 2.0
    sent = [t for t, p in link.sent(1) if p == 100]
    assert sent[1] - sent[0] == pytest.approx(2.0)


def test_v3_slow_master_is_preempted_by_fast_higher_priority_router() -> None:
    slow, fast = _v3(0, interval=2.0, priority=100), _v3(1, interval=0.5, priority=200)
    link = FakeLink([slow, fast], delay=DELAY, start_at=[0.0, 30.0])
    link.run_until(29.0)
    assert link.assert_exactly_one_master() == 0
    link.run_until(60.0)
    assert link.assert_exactly_one_master() == 1
    assert slow.snapshot().master_adver_interval == 0.5
    (takeover,) = link.became_master_at(1)
    # The fast router discards the lower master's adverts and fires at its own MDI.
    assert takeover == pytest.approx(30.0 + 1.5 + 56 * 0.5 / 256)


def test_resign_hands_over_and_hold_off_keeps_it_away() -> None:
    link = FakeLink(make_machines([200, 100]), delay=DELAY)
    link.run_until(10.0)
    link.resign(0, hold_off=20.0)
    assert link.sent(0)[-1] == (10.0, 0)
    link.run_until(29.0)
    assert link.assert_exactly_one_master() == 1
    assert link.became_master_at(1) == [pytest.approx(10.0 + DELAY + SKEW_P100)]
    link.run_until(40.0)  # hold-off over: router 0 preempts again
    assert link.assert_exactly_one_master() == 0
    assert link.transitions(0)[-1][1].reason == "preempt"


def test_lossy_link_converges_once_loss_stops() -> None:
    link = FakeLink(make_machines([200, 100, 150]), delay=(0.0, 0.2), loss=0.6, seed=7)
    link.run_until(60.0)
    link.loss = 0.0
    link.run_until(80.0)
    assert link.assert_exactly_one_master() == 0
    assert any(isinstance(e, SendAdvert) for _, e in link.effects[2])
