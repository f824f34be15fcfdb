"""A force-failover's resignation as the machine times it (machine.resign with a release
time): a peer must answer within two advert intervals plus the chain's release, or the
machine takes the role back itself, unless it may no longer serve. Real Machine, time passed
in; no I/O (the last test drives daemon/handover.py with a FAKE instance and applier)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from test_fencing_rule import FakeLog
from test_machine import PEER, adv, master, transitions

from drbdha.control import ControlRequest
from drbdha.daemon.handover import Handover
from drbdha.vrrp.events import Activate, State, Transition
from drbdha.vrrp.machine import HANDOVER_MARGIN, Machine

INTERVAL = 1.0  # test_machine's params: VRRPv2, 1 s adverts
RELEASE = 1.0  # the chain's stop budget: window 3.05 s < Master_Down_Interval 3.22 s


def resigned() -> tuple[Machine, float]:
    m, at = master(priority=200)
    m.resign(at + 1, hold_off=300.0, release_time=RELEASE)
    m.chain_settled(False, at + 1.5)
    assert (m.state, m.handover) == (State.BACKUP, "waiting")
    return m, at + 1


def test_an_unanswered_resignation_is_taken_back_when_the_window_ends() -> None:
    m, t0 = resigned()
    window = 2 * INTERVAL + HANDOVER_MARGIN + RELEASE
    assert m.get_timer() == pytest.approx(t0 + window)  # before Master_Down_Interval (3.2 s)
    assert m.handle_timer(t0 + window - 0.01) == []
    effects = m.handle_timer(t0 + window)
    assert transitions(effects) == [Transition(State.BACKUP, State.MASTER, "handover_failed")]
    assert Activate() in effects
    assert m.handover == "retook"
    # The hold-off is lifted with it: a lower-priority peer that shows up now is preempted.
    assert m.snapshot().preempt_hold_off_until == float("-inf")


def test_a_node_inhibited_since_it_resigned_does_not_take_the_role_back() -> None:
    # Its disk failed in the window (or it was frozen past it and latched on its way out):
    # the take-back would make a latched node master. It stays a backup; the service waits
    # for a peer.
    m, t0 = resigned()
    m.set_inhibit("disk_latched", True, t0 + 0.5)
    window = 2 * INTERVAL + HANDOVER_MARGIN + RELEASE
    assert transitions(m.handle_timer(t0 + window)) == []
    assert (m.state, m.handover) == (State.BACKUP, "abandoned")
    for k in range(1, 10):
        assert transitions(m.handle_timer(t0 + window + k)) == []


def test_an_answer_within_the_window_ends_the_probe() -> None:
    m, t0 = resigned()
    m.receive(adv(100), PEER, t0 + 0.7)
    assert m.handover == "answered"
    # No take-back: the next deadline is Master_Down_Interval from the answer.
    assert m.get_timer() == pytest.approx(t0 + 0.7 + m.master_down_interval)
    assert m.state is State.BACKUP
    assert m.snapshot().preempt_hold_off_until == t0 + 300.0


def test_a_priority_zero_advert_is_no_answer() -> None:
    m, t0 = resigned()
    m.receive(adv(0), PEER, t0 + 0.5)
    assert m.handover == "waiting"


def test_master_down_before_the_window_counts_as_taken_back() -> None:
    # With a long release the window outlasts Master_Down_Interval: the machine serves
    # again at that point, and says so, and drops the take-back timer.
    m, t0 = master(priority=200)
    m.resign(t0, hold_off=300.0, release_time=30.0)
    m.chain_settled(False, t0 + 0.5)
    at = m.get_timer()
    assert at is not None
    assert at < t0 + 30.0
    assert transitions(m.handle_timer(at)) == [
        Transition(State.BACKUP, State.MASTER, "master_down")
    ]
    assert m.handover == "retook"
    assert m.snapshot().preempt_hold_off_until == float("-inf")


def test_a_plain_resignation_sets_no_window() -> None:
    m, at = master(priority=200)
    m.resign(at + 1, hold_off=30.0)
    assert m.handover is None
    m.chain_settled(False, at + 1.5)
    effects = m.handle_timer(at + 1 + 2 * INTERVAL + HANDOVER_MARGIN)
    assert transitions(effects) == []


def test_the_peer_gets_a_whole_master_down_interval_after_a_slow_release() -> None:
    # The peer's DRBD sees us Primary until the release ends: it cannot answer before. A
    # release of 2.5 s leaves Master_Down_Interval (3.22 s) from there, not 0.7 s.
    m, t0 = master(priority=200)
    m.resign(t0, hold_off=300.0, release_time=30.0)
    m.chain_settled(False, t0 + 2.5)
    assert m.get_timer() == pytest.approx(t0 + 2.5 + m.master_down_interval)
    m.receive(adv(100), PEER, t0 + 4.0)
    assert (m.state, m.handover) == (State.BACKUP, "answered")


def test_the_force_failover_of_a_node_inhibited_meanwhile_ends_refused_with_the_reason() -> None:
    # daemon/handover.py over the real machine: the request is answered `refused`, naming
    # what keeps the node out, and the node stays a backup.
    m, at = master(priority=200)
    inst = SimpleNamespace(name="lab", machine=m, storage=None, peer_status=lambda _now: None)
    effects: list[Any] = []
    handover = Handover(
        lambda _inst, e, _now: effects.extend(e), {"lab": inst}, lambda _i: None, FakeLog()
    )
    loop = asyncio.new_event_loop()
    try:
        request = ControlRequest({"command": "force-failover"}, loop.create_future())
        handover.start(request, at + 1)
        assert m.state is State.BACKUP
        m.set_inhibit("disk_latched", True, at + 1.5)
        deadline = m.get_timer()
        assert deadline is not None
        m.handle_timer(deadline)
        handover.check(deadline)
        result = request.reply.result()
    finally:
        loop.close()
    assert result["outcome"] == "refused"
    assert "may not serve: disk_latched" in result["reason"]
    assert m.state is State.BACKUP
