"""The replication heartbeat's rule (resources/repl_watch.py, chains.repl_tick) and its wire
format (net/heartbeat.py): a Secondary outdates its copy when the replication path to a live
Primary is gone, bounded by drbdha instead of DRBD's ping-int (issue 19 §2); a dead Primary
(silent on both networks) is never taken for a live one.

Pure: time is a number. Chains is the real one (test_fencing_rule.make), its instance a
SimpleNamespace with the fields these methods read; the heartbeat socket test uses loopback.
"""

from __future__ import annotations

import time
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
from test_drbd_step import res
from test_fencing_rule import LOST, PEER, instance, make

from drbdha.daemon.storage import OutdateSelf
from drbdha.net import heartbeat
from drbdha.resources.repl_watch import DEAD_AFTER, ReplicationWatch
from drbdha.vrrp.events import State
from drbdha.vrrp.machine import Peer

I = 0.1  # the heartbeat interval  # noqa: E741
CONNECTED_TO_PRIMARY = res(peer_role="Primary")


def beating(until: float, adverts_until: float | None = None) -> ReplicationWatch:
    """Heartbeats every I from 0 to `until`, and the master's adverts every I (the lab's
    100 ms) from 0 to `adverts_until` (default: as long as the heartbeats), in time order."""
    w = ReplicationWatch(I, advert_interval=I)
    adverts_until = until if adverts_until is None else adverts_until
    for k in range(round(max(until, adverts_until) / I) + 1):
        if k * I <= until + 1e-9:
            w.heartbeat(k * I)
        if k * I <= adverts_until + 1e-9:
            w.master_heard(k * I + 0.001)
    return w


def test_silence_alone_is_no_reason() -> None:
    w = beating(until=1.0)
    assert not w.silent(0.99 + DEAD_AFTER * I)
    assert w.silent(1.01 + DEAD_AFTER * I)
    assert not w.due(5.0)  # no advert: the Primary may be dead


def test_an_advert_after_the_silence_then_one_interval_fires_once() -> None:
    w = beating(until=1.0, adverts_until=1.4)  # inside the silence it takes to call it gone
    assert w.proof_at is None
    w.master_heard(1.6)
    assert w.proof_at == 1.6
    assert not w.due(1.65)  # a late heartbeat may still come
    assert w.due(1.71)
    assert not w.due(1.8)  # once per silence


def test_a_late_heartbeat_cancels_the_proof() -> None:
    w = beating(until=1.0, adverts_until=1.5)
    w.master_heard(1.6)
    w.heartbeat(1.65)  # the Primary was only stalled: its heartbeat came right behind
    assert not w.due(1.8)


def test_a_power_off_is_never_taken_for_a_live_primary() -> None:
    # Heartbeats and adverts both stop at the power-off (the last advert a little after the
    # last heartbeat): no advert can come after DEAD_AFTER intervals of silence.
    w = beating(until=1.0, adverts_until=1.1)
    assert not any(w.due(1.0 + k * 0.05) for k in range(100))


@pytest.mark.parametrize("back_at", [1.6, 3.0], ids=["after-0.5s", "after-2s"])
def test_a_restarted_primary_drbdha_is_no_live_master(back_at: float) -> None:
    # drbdha restarting on the Primary stops its adverts and heartbeats together; its first
    # adverts back (before its heartbeat is going again) prove nothing about replication.
    w = beating(until=1.0, adverts_until=1.0)
    for k in range(5):
        w.master_heard(back_at + k * I)
    assert w.proof_at is None
    assert not any(w.due(back_at + k * 0.05) for k in range(40))


def test_never_armed_without_a_first_heartbeat() -> None:
    w = ReplicationWatch(I)
    w.master_heard(10.0)
    assert not w.silent(10.0)
    assert not w.due(20.0)


def test_a_heartbeat_rearms_after_firing() -> None:
    w = beating(until=1.0, adverts_until=1.6)
    assert w.due(1.71)
    for k in range(17, 37):  # the master goes on advertising
        w.master_heard(k * I)
        if k == 30:
            w.heartbeat(3.0)  # the path healed
    assert not w.due(3.41)
    w.master_heard(3.7)
    assert w.due(3.81)


# ---- chains.repl_tick ------------------------------------------------------------------------


def armed(tmp_path: Path, facts: Any = CONNECTED_TO_PRIMARY, state: State = State.BACKUP) -> Any:
    chains, put, log = make(tmp_path)
    inst = instance(chains, state=state)
    chains.state(inst).drbd = facts
    chains.state(inst).repl = beating(until=1.0, adverts_until=1.4)
    inst.machine.last_peer = Peer(PEER, 200, 1.6)
    chains.heard(inst, 1.6)
    return chains, put, log, inst


def test_the_secondary_drops_the_link_and_outdates_itself(tmp_path: Path) -> None:
    chains, put, log, inst = armed(tmp_path)
    chains.repl_tick(inst, 1.65)
    assert put == []
    chains.repl_tick(inst, 1.71)
    assert put == [OutdateSelf("lab", "r0", drop_link=True)]
    _, event, fields = log.events[-1]
    assert (event, fields["reason"]) == ("drbd.outdating_self", "replication_heartbeat_lost")
    chains.repl_tick(inst, 1.8)
    assert len(put) == 1


def test_after_drbd_noticed_too_the_rule_still_fires(tmp_path: Path) -> None:
    chains, put, _, inst = armed(tmp_path, facts=LOST)
    chains.state(inst).link_lost_at = 1.2  # DRBD lost the Primary peer as well
    chains.repl_tick(inst, 1.71)
    assert put == [OutdateSelf("lab", "r0", drop_link=True)]


@pytest.mark.parametrize(
    ("facts", "state"),
    [
        (res(role="Primary"), State.BACKUP),  # we are the Primary
        (res(disk="Outdated"), State.BACKUP),  # nothing left to protect
        (res(), State.BACKUP),  # the peer is connected but not Primary
        (None, State.BACKUP),  # DRBD facts unknown
        (CONNECTED_TO_PRIMARY, State.MASTER),
    ],
    ids=["primary", "outdated", "peer-secondary", "unknown", "master"],
)
def test_the_rule_leaves_other_states_alone(tmp_path: Path, facts: Any, state: State) -> None:
    chains, put, _, inst = armed(tmp_path, facts=facts, state=state)
    chains.repl_tick(inst, 1.71)
    assert put == []


def test_an_advert_from_another_router_is_no_proof_for_the_heartbeat(tmp_path: Path) -> None:
    chains, put, _ = make(tmp_path)
    inst = instance(chains)
    chains.state(inst).drbd = CONNECTED_TO_PRIMARY
    chains.state(inst).repl = beating(until=1.0, adverts_until=1.4)
    inst.machine.last_peer = Peer(IPv4Address("192.0.2.66"), 255, 1.6)
    chains.heard(inst, 1.6)
    chains.repl_tick(inst, 1.71)
    assert put == []


# ---- the wire ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "resource"),
    [
        (heartbeat.payload("r0"), "r0"),
        (b"drbdha-hb1 ", None),
        (b"drbdha-hb2 r0", None),
        (b"drbdha-hb1 r 0", None),
        (b"drbdha-hb1 \xff", None),
        (b"drbdha-hb1 " + b"r" * 300, None),
        (b"", None),
    ],
)
def test_parse(data: bytes, resource: str | None) -> None:
    assert heartbeat.parse(data) == resource


def test_two_sockets_on_loopback_hear_each_other() -> None:
    sockets: dict[tuple[str, int], heartbeat.HeartbeatSocket] = {}
    a, peers = heartbeat.local_and_peers(("192.0.2.250", "127.0.0.1"), 0, sockets)
    assert peers == ["192.0.2.250"]  # 127.0.0.1 is ours, the other is the peer's
    again, _ = heartbeat.local_and_peers(("127.0.0.1", "192.0.2.250"), 0, sockets)
    assert again is a  # shared by every resource on that address
    b = heartbeat.HeartbeatSocket("127.0.0.2", 0)
    port = b._sock.getsockname()[1]
    a.port = port
    a.send("127.0.0.2", "r0")
    a.send("127.0.0.2", "r1")
    time.sleep(0.05)
    got = b.read()
    assert [r for r, _ in got] == ["r0", "r1"]
    assert {src for _, src in got} == {"127.0.0.1"}
    a.close()
    b.close()
    with pytest.raises(OSError, match="is this host's"):
        heartbeat.local_and_peers(("192.0.2.250",), 0, {})


def test_a_tick_while_the_drbd_side_is_not_ready_does_not_use_up_the_proof(
    tmp_path: Path,
) -> None:
    chains, put, _, inst = armed(tmp_path, facts=None)  # events2 not read yet
    chains.repl_tick(inst, 1.71)
    assert put == []
    chains.state(inst).drbd = CONNECTED_TO_PRIMARY
    chains.repl_tick(inst, 1.81)
    assert put == [OutdateSelf("lab", "r0", drop_link=True)]


def test_with_quorum_alone_the_secondary_outdates_itself_as_unfenced(tmp_path: Path) -> None:
    # Both disk nodes keep quorum through the tiebreaker after a replication cut; DRBD
    # outdates the Secondary only once its own DRBD notices (seen in the DRBD 9 lab: the
    # Primary powered off 1 s after the cut, node2 promoted without its last write).
    chains, put, _, inst = armed(tmp_path)
    chains.state(inst).fencing = {"mode": "quorum"}
    chains.repl_tick(inst, 1.71)
    assert put == [OutdateSelf("lab", "r0", drop_link=True)]


@pytest.mark.parametrize("mode", ["handler", "other_handler", "quorum_and_handler", "unknown"])
def test_a_fenced_resource_leaves_the_job_to_its_fencing(tmp_path: Path, mode: str) -> None:
    # With drbdha's fence-peer handler the Primary's I/O is held and the handler asks us to
    # outdate: doing it here too raced that request (seen in the lab: the handler's first
    # request failed while this node dropped its own link).
    chains, put, _, inst = armed(tmp_path)
    chains.state(inst).fencing = {"mode": mode}
    chains.repl_tick(inst, 1.71)
    assert put == []


def test_peer_addresses_are_compared_in_one_spelling() -> None:
    sockets: dict[tuple[str, int], heartbeat.HeartbeatSocket] = {}
    sock, peers = heartbeat.local_and_peers(("127.0.0.1", "2001:db8:0:0:0:0:0:1"), 0, sockets)
    assert peers == ["2001:db8::1"]  # as recvfrom would give it
    assert heartbeat.canonical("fe80:0::1%eth1") == "fe80::1%eth1"  # the scope is kept
    sock.close()
