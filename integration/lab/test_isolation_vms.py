"""The master cut off on both networks, and the heal (issue 22, docs/reliability.md finding 7:
the fault campaign's seed 100 fault 5 lost 220 and 367 acknowledged records here).

node1 (priority 150) serves; it is cut off from the service and the replication networks.
Its handler finds node2 silent and goes on as Primary on its own copy; no client reaches it.
node2 (priority 100) takes over with its DRBD peer cut off, so it holds the role for its
copy (drbd_guard.took_over_alone): it advertises 254 until the copies resync.

The strike is the campaign's: the service network comes back first, the replication link
stays cut. Before the fix node2 heard node1's higher priority and stepped down, and node1
acknowledged the client's writes on its copy until DRBD found the split brain. Now node1
steps down (it hears 254), demotes, and once demoted outdates its copy on hearing the
holder. The second fault: node2, the only copy with the clients' writes, is powered off
before the replication link is back; node1 must not take over. Then node2 comes back, the
links heal, the admin resolves the split brain in node2's favour (README, "Two nodes"), and
every acknowledged record is on node2.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from chainlab import FENCING, TUNED, Storage
from cluster import NODES
from nfslab import events, lost_on, mount_and_write, nfs_cluster
from polling import wait_until
from test_safety_vms import node_time

if TYPE_CHECKING:
    from cluster import Lab

pytestmark = pytest.mark.slow

DRBD = {"net": TUNED, **FENCING}
# node2 discards nothing: node1's changes go (it acknowledged none of the clients' writes).
DISCARD_NODE1 = (
    "systemctl stop drbdha; drbdadm secondary r0; drbdadm disconnect r0; "
    "drbdadm connect --discard-my-data r0; systemctl start drbdha"
)


@pytest.fixture
def nfs(lab: Lab) -> Iterator[Storage]:
    # Not sampled for two Primaries: the cut-off node is one while the cut lasts (README,
    # "Two nodes"); what the test checks is where the clients' writes went.
    with nfs_cluster(lab, sample=False) as s:
        s.start("node1", "node2")
        s.wait_serving("node1", timeout=120)
        try:
            yield s
        finally:
            for net in ("service", "replication"):
                lab.uncut("node1", net)
            if any(lab._proc_drbd(n)["cstate"] != "Connected" for n in NODES if lab.running(n)):
                s.stop()
                lab.drbd_reset()


def transitions(lab: Lab, node: str, since: str) -> list[tuple[str, str]]:
    return [
        (e.get("NEW", ""), e.get("REASON", "")) for e in events(lab, node, since, "vrrp.transition")
    ]


def test_the_master_cut_off_on_both_networks_yields_at_the_heal(nfs: Storage, lab: Lab) -> None:
    (w,) = mount_and_write(lab, "4.2").values()
    since = {n: f"{node_time(lab, n):.0f}" for n in NODES}
    lab.cut("node1", "service")
    lab.cut("node1", "replication")
    wait_until("node2 serving while node1 is cut off", lambda: nfs.serving("node2"), 90, 1.0)
    w.wait_for(w.acks.acknowledged + 10, timeout=90)  # the clients' writes, on node2 only
    doc = nfs.doc("node2") or {}
    assert doc.get("holding_for_data"), doc
    assert doc.get("effective_priority") == 254, doc
    assert nfs.role("node1") == "Primary"  # cut off, it goes on (README, "Two nodes")

    # The heal of the service network only: what finding 7 lost records to.
    lab.uncut("node1", "service")
    wait_until("node1 demoted", lambda: nfs.role("node1") != "Primary", 60, 0.5)
    assert not nfs.holds_vip("node1")
    assert nfs.serving("node2")
    w.wait_for(w.acks.acknowledged + 10, timeout=90)  # still on node2
    assert ("backup", "higher_priority") in transitions(lab, "node1", since["node1"])
    assert not [t for t in transitions(lab, "node2", since["node2"]) if t[0] != "master"]
    outdated = lambda: [  # noqa: E731
        e
        for e in events(lab, "node1", since["node1"], "drbd.outdated_self")
        if e.get("OUTCOME") == "outdated"
    ]
    wait_until("node1 outdated its copy", outdated, 60, 1.0)

    # The second fault, before the copies have met: the only copy with the writes goes.
    lab.kill("node2")
    time.sleep(10)  # node1's Master_Down_Interval is 0.36 s: its refused takeover is long over
    assert nfs.role("node1") != "Primary"
    assert not nfs.holds_vip("node1")

    # node2 back, the replication link back; the split brain (if DRBD saw one) resolved
    # for node2 as the README says.
    nfs.power_on("node2", **DRBD)
    lab.uncut("node1", "replication")
    time.sleep(10)
    if lab._proc_drbd("node1")["cstate"] == "StandAlone":
        lab.exec("node1", DISCARD_NODE1, timeout=180)
        lab.exec("node2", "drbdadm connect r0", check=False)
    wait_until(
        "the copies resynced",
        lambda: lab._proc_drbd("node1")["dstate"] == "UpToDate/UpToDate",
        240,
        2.0,
    )
    for node in NODES:
        if (nfs.doc(node) or {}).get("latches"):
            lab.exec(node, "drbdha clear-latch", timeout=90)
    # node2 serves again, or node1 once its copy is whole (it preempts at 150).
    server = wait_until(
        "a node serving", lambda: next((n for n in NODES if nfs.serving(n)), None), 240, 2.0
    )
    w.wait_for(w.acks.acknowledged + 10, timeout=180)
    w.stop()
    server = next((n for n in NODES if nfs.serving(n)), server)
    assert lost_on(lab, server, w) == 0
    print(f"{w.acks.acknowledged} records, all on {server}")


@pytest.mark.skipif(
    os.environ.get("DRBDHA_LAB_OPEN_FINDINGS") != "1",
    reason="finding 8's reproduction, open (docs/reliability.md): DRBDHA_LAB_OPEN_FINDINGS=1",
)
@pytest.mark.xfail(
    strict=True,
    reason="finding 8, open: the node that took over alone behind its own cut service link "
    "holds the role at the heal, over the copy the clients wrote to",
)
def test_a_partition_of_two_single_cuts_leaves_the_service_with_the_clients_copy(
    nfs: Storage, lab: Lab
) -> None:
    """Campaign seed 100 fault 76 (17 records lost): node2's service link and node1's
    replication link cut, so neither node hears the other on either network, yet node1 (the
    master) still reaches the clients. node2 takes over its own copy, which no client
    reaches, and holds the role for it; at the heal node1 must keep the service: node2's
    copy lacks every write acknowledged during the cut. (Cutting node2's service first
    makes the order certain: node2's takeover waits on DRBD's peer_primary until node1's
    link goes, so node1 cannot outdate it first.)"""
    (w,) = mount_and_write(lab, "4.2").values()
    lab.cut("node2", "service")
    lab.cut("node1", "replication")
    wait_until("node2 Primary on its own copy", lambda: nfs.role("node2") == "Primary", 90, 1.0)
    w.wait_for(w.acks.acknowledged + 20, timeout=90)  # on node1, the clients' node
    lab.uncut("node2", "service")
    lab.uncut("node1", "replication")
    on_node2 = []
    for _ in range(40):  # 20 s after the heal
        if nfs.holds_vip("node2"):
            on_node2.append(w.acks.acknowledged)
        time.sleep(0.5)
    w.stop()
    assert not on_node2, f"node2 held the VIP after the heal ({len(on_node2)} samples)"
