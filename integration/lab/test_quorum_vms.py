"""DRBD 9 with quorum and a diskless tiebreaker (issue 23): three DRBD nodes, node1 and node2
with disks and the client VM as the diskless tiebreaker, r0 with `quorum majority` and
`on-no-quorum io-error` (drbd_setup.QUORUM says why). drbdha on node1 and node2 as the
README configures it for quorum: no fence-peer handler, no [peer].

The case two nodes cannot tell apart (README, "Two nodes"): the master cut off on both
networks. With quorum, the cut-off Primary has lost both of its peers, so it has no quorum:
DRBD fails its writes, drbdha resigns and demotes it. node2 and the tiebreaker are a
majority: node2 takes over, the client writes on. At the heal node1 comes back as a
Secondary behind node2's copy and resyncs from it: no split brain, nothing to resolve by
hand, every acknowledged record on the node that serves.

The ordinary failover too: the Primary powered off, node2 and the tiebreaker take over.

Runs on a DRBD 9 lab only (skipped on 8.4):
`integration/lab/lab down; DRBDHA_LAB_DRBD=9 .venv/bin/pytest integration/lab/test_quorum_vms.py`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from cluster import NODES, RESOURCE
from nfslab import events, lost_on, mount_and_write
from polling import wait_until
from test_isolation_vms import all_on_the_server, node1_serving, story, wait_resynced
from test_safety_vms import node_time

if TYPE_CHECKING:
    from chainlab import Storage
    from cluster import Lab

pytestmark = [pytest.mark.slow, pytest.mark.drbd9]


@pytest.fixture
def nfs(lab: Lab) -> Iterator[Storage]:
    # Not sampled for two Primaries: the cut-off node stays Primary, without quorum and
    # unable to write, until drbdha has demoted it; what counts is who can write. As the
    # README configures quorum: no fence-peer handler (its "dead peer" answer would give a
    # cut-off node its quorum back: fencing/quorum.py), drbdha's replication heartbeat on
    # (the default): it outdates node2 at a replication cut before node1 writes alone
    # (test_replication_link_of_the_primary_cut_then_the_primary_powered_off).
    with node1_serving(lab, fenced=False) as s:
        yield s


def quorum(lab: Lab, node: str) -> bool | None:
    return lab._proc_drbd(node).get("quorum")


def test_the_master_cut_off_on_both_networks_loses_quorum_and_resyncs_at_the_heal(
    nfs: Storage, lab: Lab
) -> None:
    (w,) = mount_and_write(lab, "4.2").values()
    since = node_time(lab, "node1")
    lab.cut("node1", "service")
    lab.cut("node1", "replication")
    wait_until("node1 without quorum", lambda: quorum(lab, "node1") is False, 60, 0.5)
    wait_until(
        lambda: f"node1 demoted; node1 did: {story(lab, 'node1', since)}",
        lambda: nfs.role("node1") == "Secondary",
        120,
        1.0,
    )
    assert not nfs.holds_vip("node1")
    wait_until("node2 serving", lambda: nfs.serving("node2"), 120, 1.0)
    assert quorum(lab, "node2") is True  # node2 and the tiebreaker: two of three
    w.wait_for(w.acks.acknowledged + 20, timeout=90)  # the clients' writes, on node2
    inhibited = [
        e.get("REASON") for e in events(lab, "node1", f"{since:.0f}", "takeover.inhibited")
    ]
    assert "no_quorum" in inhibited, inhibited

    # The heal: node1's copy has nothing node2's lacks (it could not write without quorum),
    # so DRBD resyncs it from node2 instead of finding a split brain.
    lab.uncut("node1", "service")
    lab.uncut("node1", "replication")
    wait_resynced(lab)
    assert not [e for n in NODES for e in events(lab, n, f"{since:.0f}", "latch.set")]
    all_on_the_server(nfs, lab, w)


# Finding 11 (docs/reliability.md): with DRBD 9's metadata for one peer (max-peers 1),
# node2 came back from the power-off without its bitmap for node1 and the resync skipped
# its writes (166 and 191 records lost); drbd_setup.CREATE_MD.
def test_behind_the_tiebreaker_alone_the_stale_copy_is_never_promoted(
    nfs: Storage, lab: Lab
) -> None:
    """The second fault. node1, cut off, lost quorum and was demoted; node2 served the
    clients' writes. The service network comes back first: node1 reaches the tiebreaker
    again while its copy lacks node2's writes (its replication link is still cut). Then
    node2, the only copy with those writes, is powered off: node1 must not take over."""
    (w,) = mount_and_write(lab, "4.2").values()
    since = node_time(lab, "node1")
    lab.cut("node1", "service")
    lab.cut("node1", "replication")
    wait_until("node2 serving", lambda: nfs.serving("node2"), 120, 1.0)
    wait_until("node1 demoted", lambda: nfs.role("node1") == "Secondary", 120, 1.0)
    w.wait_for(w.acks.acknowledged + 20, timeout=90)  # on node2 only
    lab.uncut("node1", "service")
    # DRBD 9 itself keeps node1 out: through the tiebreaker it is marked Outdated, or the
    # tiebreaker declines its connection (its data generation is not the current one) and
    # both ends go StandAlone. Either way node1 has no quorum.
    peers = lambda: lab._proc_drbd("node1").get("peers") or {}  # noqa: E731
    wait_until(
        lambda: f"node1 back to the tiebreaker: {lab._proc_drbd('node1')}",
        lambda: peers().get("client") in ("StandAlone", "Connected"),
        60,
        0.5,
    )
    time.sleep(5)  # node1 hears node2's adverts
    state = lab._proc_drbd("node1")
    print(f"node1 behind the tiebreaker: {state}")
    assert state["quorum"] is False, state
    assert not nfs.holds_vip("node1")

    oos = lab.exec("node2", "drbdsetup status r0 --verbose --statistics", check=False).stdout
    print(f"before the kill: {w.acks.acknowledged} acked; node2: {' '.join(oos.split())}")
    lab.kill("node2")
    time.sleep(15)  # node1's Master_Down_Interval is 0.36 s: a takeover would be done
    state = lab._proc_drbd("node1")
    assert nfs.role("node1") != "Primary", f"{state}; node1 did: {story(lab, 'node1', since)}"
    assert not nfs.holds_vip("node1")
    assert state["quorum"] is False, state
    print(f"node1 alone with the tiebreaker: {state}")

    # node2 back and the replication link healed: node1 resyncs from node2.
    nfs.power_on("node2")
    lab.uncut("node1", "replication")
    wait_resynced(lab)
    all_on_the_server(nfs, lab, w)


def test_power_off_of_the_primary_node2_and_the_tiebreaker_take_over(
    nfs: Storage, lab: Lab
) -> None:
    """The ordinary failover on three nodes: the Primary powered off, node2 and the
    tiebreaker are two of three, node2 takes over as on two nodes; node1 comes back as a
    Secondary behind node2 and resyncs; every record on the node that serves."""
    (w,) = mount_and_write(lab, "4.2").values()
    lab.kill("node1")
    wait_until("node2 serving", lambda: nfs.serving("node2"), 120, 1.0)
    assert quorum(lab, "node2") is True
    w.wait_for(w.acks.acknowledged + 20, timeout=90)
    nfs.power_on("node1")
    wait_resynced(lab, "node2")
    all_on_the_server(nfs, lab, w)
    print(f"longest write {w.acks.longest_write():.1f} s")


def inhibitions(nfs: Storage, node: str) -> list[str]:
    return list((nfs.doc(node) or {}).get("inhibitions") or [])


@pytest.mark.parametrize("kill_after", [1.3, 12.0], ids=["kill-1.3s", "kill-12s"])
def test_replication_link_of_the_primary_cut_then_the_primary_powered_off(
    nfs: Storage, lab: Lab, kill_after: float
) -> None:
    """The Primary's replication link cut, its service network up: node1 keeps quorum
    through the tiebreaker and serves on, writing what node2 no longer gets. Then the second
    fault, inside the window and after it: node1 powered off. node2 and the tiebreaker are
    two of three, but node2's copy may lack node1's last writes: drbdha's replication
    heartbeat has outdated it (0.7 s), and it must not be promoted. node1 comes back with
    every record. 1.3 s: after node1's DRBD gave up on node2 (timeout 0.9 s, a write in
    flight) and before node2's own DRBD notices (ping-int 1 + ping-timeout 0.5 s), where
    quorum alone lost a write (docs/reliability.md, finding 12)."""
    (w,) = mount_and_write(lab, "4.2").values()
    since = node_time(lab, "node2")
    lab.cut("node1", "replication")
    time.sleep(kill_after)
    lab.kill("node1")
    acked = w.acks.acknowledged
    time.sleep(20)  # a takeover by node2 (or its refusal) is long done
    state = lab._proc_drbd("node2")
    print(f"node1 off ({acked} acked): node2 {state}; did: {story(lab, 'node2', since)}")
    assert nfs.role("node2") != "Primary", "node2 promoted on a copy node1 wrote past"
    assert not nfs.holds_vip("node2")
    assert state["dstate"].startswith("Outdated"), state
    assert "no_uptodate_disk" in inhibitions(nfs, "node2")
    outdated = events(lab, "node2", f"{since:.0f}", "drbd.outdated_self")
    assert "outdated" in [e.get("OUTCOME") for e in outdated], outdated
    nfs.power_on("node1")
    lab.uncut("node1", "replication")
    wait_until(
        lambda: f"the copies resynced: {lab._proc_drbd('node2')}",
        lambda: lab._proc_drbd("node2")["dstate"] == "UpToDate/UpToDate",
        240,
        2.0,
    )
    all_on_the_server(nfs, lab, w)


def test_tiebreaker_down_then_the_primary_powered_off_waits_for_the_primary(
    nfs: Storage, lab: Lab
) -> None:
    """The tiebreaker gone, node1 and node2 are two of three and node1 serves on. Then node1
    is powered off: node2 alone is one of three, without quorum, and must not take over;
    `drbdha status` says why. The tiebreaker back does not give node2 quorum: DRBD's
    tiebreaker rule keeps a quorum a node has, it does not give one back (drbd_state.c
    calc_quorum: "sticky"), since node2 cannot tell a dead node1 from one that wrote on
    elsewhere. Service returns with node1."""
    (w,) = mount_and_write(lab, "4.2").values()
    lab.exec("client", f"drbdadm down {RESOURCE}")
    wait_until(
        lambda: f"the tiebreaker gone: {lab._proc_drbd('node1')}",
        lambda: (lab._proc_drbd("node1").get("peers") or {}).get("client") != "Connected",
        30,
        0.5,
    )
    w.wait_for(w.acks.acknowledged + 10, timeout=60)
    assert nfs.serving("node1")
    assert quorum(lab, "node1") is True
    lab.kill("node1")
    time.sleep(15)  # node2's Master_Down_Interval is 0.36 s: a takeover would be done
    state = lab._proc_drbd("node2")
    print(f"node2 alone: {state}")
    assert nfs.role("node2") != "Primary", state
    assert not nfs.holds_vip("node2")
    assert state["quorum"] is False, state
    assert "no_quorum" in inhibitions(nfs, "node2")
    r = lab.exec("node2", "drbdha status", check=False)
    assert "no_quorum" in r.stdout, r.stdout

    lab.exec("client", f"drbdadm up {RESOURCE}")
    wait_until(
        "the tiebreaker back",
        lambda: (lab._proc_drbd("node2").get("peers") or {}).get("client") == "Connected",
        60,
        0.5,
    )
    time.sleep(5)
    state = lab._proc_drbd("node2")
    print(f"node2 with the tiebreaker back: {state}")
    assert state["quorum"] is False, state
    assert nfs.role("node2") != "Primary", state
    nfs.power_on("node1")
    all_on_the_server(nfs, lab, w)


def test_disk_failure_on_the_primary_hands_over_and_latches(nfs: Storage, lab: Lab) -> None:
    """The detach guard on DRBD 9: node1's disk fails, DRBD detaches it and node1 would go on
    as a diskless Primary reading and writing through node2. drbdha latches the disk and
    hands over; node2 serves with every record."""
    (w,) = mount_and_write(lab, "4.2").values()
    lab.fail_disk("node1")
    wait_until("node2 serving", lambda: nfs.serving("node2"), 120, 1.0)
    doc = nfs.doc("node1") or {}
    assert [latch["kind"] for latch in doc.get("latches", [])] == ["disk"], doc
    w.wait_for(w.acks.acknowledged + 20, timeout=90)
    assert lost_on(lab, "node2", w) == 0
    lab.restore_disk("node1")
    lab.exec("node1", f"drbdadm attach {RESOURCE}")
    wait_resynced(lab)
    lab.exec("node1", "drbdha clear-latch --kind disk", timeout=90)
    all_on_the_server(nfs, lab, w)
