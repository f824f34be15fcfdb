"""The master cut off on both networks, and the heal (issue 22, docs/reliability.md finding 7:
the fault campaign's seed 100 fault 5 lost 220 and 367 acknowledged records here).

node1 (priority 150) serves; it is cut off from the service and the replication networks.
Its handler finds node2 silent and goes on as Primary on its own copy; no client reaches it.
node2 (priority 100) takes over with its DRBD peer cut off and the clients come to it, so
it holds the role for its copy (drbd_guard.holds_for_clients): it advertises 254 until the
copies resync.

The strike is the campaign's: the service network comes back first, the replication link
stays cut. Before the fix node2 heard node1's higher priority and stepped down, and node1
acknowledged the client's writes on its copy until DRBD found the split brain. Now node1
steps down (it hears 254), demotes, and once demoted outdates its copy on hearing the
holder. The second fault: node2, the only copy with the clients' writes, is powered off
before the replication link is back; node1 must not take over. Then node2 comes back, the
links heal, the admin resolves the split brain in node2's favour (README, "Two nodes"), and
every acknowledged record is on node2.

The other way two nodes lose each other on both networks (finding 8): the master's
replication link and the backup's service link. The clients stay with the master, and so
does the service at the heal.
"""

from __future__ import annotations

import contextlib
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
    from records import Writer

pytestmark = pytest.mark.slow

DRBD = {"net": TUNED, **FENCING}
# Run on the node whose copy goes (README, "Two nodes": the split brain resolved).
DISCARD_MY_DATA = (
    "systemctl stop drbdha; drbdadm secondary r0; drbdadm disconnect r0; "
    "drbdadm connect --discard-my-data r0; systemctl start drbdha"
)


@contextlib.contextmanager
def node1_serving(lab: Lab, *, fenced: bool = True) -> Iterator[Storage]:
    """nfs_cluster, not sampled for two Primaries, with node1 serving; afterwards node1's
    links healed and r0 made again if its copies did not meet."""
    with nfs_cluster(lab, fenced=fenced, sample=False) as s:
        s.start("node1", "node2")
        s.wait_serving("node1", timeout=120)
        try:
            yield s
        finally:
            for net in ("service", "replication"):
                if lab.running("node1"):  # powered off by the test: fresh_cluster starts it
                    lab.uncut("node1", net)
            if any(lab._proc_drbd(n)["cstate"] != "Connected" for n in NODES if lab.running(n)):
                s.stop()
                lab.drbd_reset()


@pytest.fixture
def nfs(lab: Lab) -> Iterator[Storage]:
    # Not sampled for two Primaries: the cut-off node is one while the cut lasts (README,
    # "Two nodes"); what the test checks is where the clients' writes went.
    with node1_serving(lab) as s:
        yield s


def transitions(lab: Lab, node: str, since: str) -> list[tuple[str, str]]:
    return [
        (e.get("NEW", ""), e.get("REASON", "")) for e in events(lab, node, since, "vrrp.transition")
    ]


def story(lab: Lab, node: str, since: float) -> str:
    """What drbdha on `node` logged since `since` (event names and their reasons) and its
    DRBD state now: a failure's message, so that a run that cannot be repeated explains
    itself."""
    said = [
        f"{e.get('EVENT')}({e.get('REASON') or e.get('NEW') or ''})"
        for e in events(lab, node, f"{since:.0f}")
    ]
    return f"{' '.join(said[-60:])}; DRBD now: {lab._proc_drbd(node)}"


def wait_resynced(lab: Lab, node: str = "node1") -> None:
    wait_until(
        lambda: f"the copies resynced: {lab._proc_drbd(node)}",
        lambda: lab._proc_drbd(node)["dstate"] == "UpToDate/UpToDate",
        240,
        2.0,
    )


def all_on_the_server(nfs: Storage, lab: Lab, w: Writer) -> None:
    """A node serves, the client writes on; then every record it had acknowledged is on
    the node that serves."""
    server = wait_until(
        "a node serving", lambda: next((n for n in NODES if nfs.serving(n)), None), 240, 2.0
    )
    w.wait_for(w.acks.acknowledged + 10, timeout=180)
    w.stop()
    server = next((n for n in NODES if nfs.serving(n)), server)
    assert lost_on(lab, server, w) == 0
    print(f"{w.acks.acknowledged} records, all on {server}")


def keep_the_copy_of(kept: str, nfs: Storage, lab: Lab, w: Writer) -> None:
    """The README's split-brain repair, if DRBD saw one: the other node discards its changes
    and resyncs from `kept`; the latches cleared; then every record the client had
    acknowledged is on the node that serves."""
    other = next(n for n in NODES if n != kept)
    if {"StandAlone", "WFConnection"} & {lab._proc_drbd(n)["cstate"] for n in NODES}:
        lab.exec(other, DISCARD_MY_DATA, timeout=180)
        lab.exec(kept, "drbdadm connect r0", check=False)
    wait_resynced(lab)
    for node in NODES:
        if (nfs.doc(node) or {}).get("latches"):
            lab.exec(node, "drbdha clear-latch", timeout=90)
    all_on_the_server(nfs, lab, w)


def test_the_master_cut_off_on_both_networks_yields_at_the_heal(nfs: Storage, lab: Lab) -> None:
    (w,) = mount_and_write(lab, "4.2").values()
    since = {n: f"{node_time(lab, n):.0f}" for n in NODES}
    lab.cut("node1", "service")
    lab.cut("node1", "replication")
    wait_until("node2 serving while node1 is cut off", lambda: nfs.serving("node2"), 90, 1.0)
    w.wait_for(w.acks.acknowledged + 10, timeout=90)  # the clients' writes, on node2 only
    # The hold comes with the first look at the clients' connections after they came back
    # (once a second, daemon/reach.py).
    holding = lambda: (nfs.doc("node2") or {}).get("holding_for_data")  # noqa: E731
    wait_until("node2 holding for the clients' copy", holding, 10, 0.5)
    doc = nfs.doc("node2") or {}
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
    # node2 serves again, or node1 once its copy is whole (it preempts at 150).
    keep_the_copy_of("node2", nfs, lab, w)  # node1 acknowledged no client write


def test_a_partition_of_two_single_cuts_leaves_the_service_with_the_clients_copy(
    nfs: Storage, lab: Lab
) -> None:
    """Campaign seed 100 fault 76 (finding 8, 17 records lost): node2's service link and
    node1's replication link cut, so neither node hears the other on either network, yet
    node1 (the master) still reaches the clients. node2 takes over its own copy, which no
    client reaches; node1 goes on with the clients and, having heard them after its DRBD
    lost the peer, holds the role for its copy. At the heal node1 keeps the service and
    node2, demoted with its link still gone, outdates its copy on hearing the holder.
    (Cutting node2's service first makes the order certain: node2's takeover waits on
    DRBD's peer_primary until node1's link goes, so node1 cannot outdate it first.)"""
    (w,) = mount_and_write(lab, "4.2").values()
    since = node_time(lab, "node2")
    lab.cut("node2", "service")
    lab.cut("node1", "replication")
    wait_until("node2 Primary on its own copy", lambda: nfs.role("node2") == "Primary", 90, 1.0)
    holds = lambda n: (nfs.doc(n) or {}).get("holding_for_data")  # noqa: E731
    wait_until("node1 holding for the clients' copy", lambda: holds("node1"), 60, 0.5)
    w.wait_for(w.acks.acknowledged + 20, timeout=90)  # on node1, the clients' node
    assert nfs.serving("node2")  # behind its cut link, and no client reached it: no hold
    assert not holds("node2")
    lab.uncut("node2", "service")
    lab.uncut("node1", "replication")
    on_node2 = []
    for _ in range(40):  # 20 s after the heal
        if nfs.holds_vip("node2"):
            on_node2.append(w.acks.acknowledged)
        time.sleep(0.5)
    assert not on_node2, f"node2 held the VIP after the heal ({len(on_node2)} samples)"
    # node2 outdates its copy once it is Secondary and hears the holder: after its chain's
    # release, which under CI's load (the lab beside the namespace tests) can outlast 20 s.
    reasons = lambda: [  # noqa: E731
        e.get("REASON") for e in events(lab, "node2", f"{since:.0f}", "drbd.outdating_self")
    ]
    wait_until(
        lambda: (
            f"node2 outdating its copy behind the holder; node2 did: {story(lab, 'node2', since)}"
        ),
        lambda: "peer_holds_for_clients" in reasons(),
        120,
        2.0,
    )

    # DRBD found the split brain (node2 wrote alone too: its mount, nfsd's state): the
    # admin keeps node1's copy, the one the clients wrote to (README, "Two nodes").
    keep_the_copy_of("node1", nfs, lab, w)
