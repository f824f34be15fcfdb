"""The two data-loss paths of issue 19, struck inside their windows on the real cluster.

§1, fenced as the README recommends (resource-and-stonith, `drbdha fence-peer`, [peer], tuned
ping timers), with drbdha down on the Secondary (a restart, a crash, an upgrade): the peer's
host refuses the handler's connection. Before the fix the handler took the refusal for a dead
peer (exit 5), DRBD resumed the Primary's I/O alone, and a power-off of the Primary then lost
every write since the cut. Now the handler keeps DRBD's freeze (exit 1), and the Primary's
drbdha resumes the I/O once the peer's drbdha is back and has outdated its copy.

A writer on node1 appends checksummed O_DSYNC records to /dev/drbd0 (records.py) and reports
each acknowledged one to the host; the check reads the backing disk of the node that serves.

§2, unfenced (no handler, no [peer]) with DRBD's default net timers (ping-int 10 s, timeout
6 s): before the fix the Secondary outdated itself only at the first advert after its own
DRBD saw the cut (10.5 s), so a Primary killed 12 s after the cut, whose DRBD had gone on
writing alone since about 6 s, lost every write since. Now the replication heartbeat has the
Secondary drop its link and outdate itself within a second. The Primary is killed 1 s and
12 s after the cut: either the Secondary is promoted with every acknowledged record, or it
is not promoted at all (Outdated, `no_uptodate_disk`), and the 12 s run shows what it lacks.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
import records
from chainlab import FENCING, TUNED, Storage, fresh_cluster
from polling import wait_until
from test_fencing_vms import disk

if TYPE_CHECKING:
    from cluster import Lab

pytestmark = pytest.mark.slow

CUT_TO_KILL = 12.0  # the measured sequence: the Primary dies 12 s after the cut
HANDLER_DEADLINE = 30.0  # fencing/handler.py DEADLINE: past it, only the daemon asks


@pytest.fixture
def fenced(lab: Lab) -> Iterator[Storage]:
    with fresh_cluster(lab, net=TUNED, **FENCING) as s:
        yield s


@pytest.fixture
def unfenced_defaults(lab: Lab) -> Iterator[Storage]:
    with fresh_cluster(lab) as s:  # DRBD's default net timers, fencing dont-care
        yield s


def serving_and_writing(lab: Lab, s: Storage, *, peer: bool = True) -> records.Writer:
    s.configure(peer=peer)
    s.start("node1", "node2")
    s.wait_serving("node1")
    w = records.Writer(lab)
    w.start("node1")
    w.wait_for(20)
    return w


def acked_after(w: records.Writer, t: float) -> int:
    """Records whose write started after `t` (node1's wall clock) and were acknowledged."""
    return sum(1 for start in w.acks.starts if start > t)


def node_time(lab: Lab, node: str) -> float:
    return float(lab.exec(node, "date +%s.%N").stdout)


def test_secondary_drbdha_down_cut_then_power_off_loses_nothing(fenced: Storage, lab: Lab) -> None:
    w = serving_and_writing(lab, fenced)
    lab.exec("node2", "systemctl stop drbdha")
    cut_at = node_time(lab, "node1")
    lab.cut("node1", "replication")
    time.sleep(CUT_TO_KILL)
    before_kill = w.acks.acknowledged
    lab.kill("node1")
    w.stop()
    print(
        f"node1 acknowledged {before_kill} records, {acked_after(w, cut_at + 1.0)} of them "
        f"started more than 1 s after the cut"
    )
    fenced.start("node2")
    fenced.wait_serving("node2", timeout=90)
    result = records.check(lab, "node2", w)
    assert result["missing"] == [], f"lost {len(result['missing'])} of {result['count']}"
    print(f"node2 serves with all {result['count']} acknowledged records")


def test_frozen_primary_resumes_once_the_peer_drbdha_is_back(fenced: Storage, lab: Lab) -> None:
    w = serving_and_writing(lab, fenced)
    lab.exec("node2", "systemctl stop drbdha")
    lab.cut("node1", "replication")
    # Past the handler's deadline: it has exited 1 and only node1's drbdha is asking.
    time.sleep(HANDLER_DEADLINE + 5)
    frozen_count = w.acks.acknowledged
    status = lab.exec("node1", "drbdha status", check=False).stdout
    assert "I/O frozen: fencing the peer" in status, status
    metrics = lab.exec(
        "node1",
        'python3 -c "import urllib.request;print(urllib.request'
        ".urlopen('http://127.0.0.1:9943/metrics').read().decode())\"",
    ).stdout
    assert 'drbdha_alert{kind="io_frozen",vrrp_instance="lab"} 1.0' in metrics
    time.sleep(2)
    assert w.acks.acknowledged == frozen_count, "writes went on while the peer was not fenced"

    back = time.monotonic()
    fenced.start("node2")
    w.wait_for(frozen_count + 5, timeout=60)
    resumed = time.monotonic() - back
    print(f"node1's writes resumed {resumed:.1f} s after `systemctl restart drbdha` on node2")
    assert resumed < 20.0
    assert disk(lab, "node2") == "Outdated"
    keeper = fenced.events("node1", "fence.resumed_io")
    assert keeper, "node1's drbdha did not resume the I/O itself"
    status = lab.exec("node1", "drbdha status", check=False).stdout
    assert "I/O frozen" not in status, status

    # The second fault: the Primary dies after the heal and resync; nothing is lost.
    lab.heal()
    wait_until("node2 UpToDate", lambda: disk(lab, "node2") == "UpToDate", 120)
    w.wait_for(w.acks.acknowledged + 10, timeout=60)
    lab.kill("node1")
    w.stop()
    fenced.wait_serving("node2", timeout=90)
    result = records.check(lab, "node2", w)
    assert result["missing"] == [], f"lost {len(result['missing'])} of {result['count']}"


@pytest.mark.parametrize("kill_after", [1.0, 12.0], ids=["kill-1s", "kill-12s"])
def test_unfenced_cut_then_power_off_with_drbd_default_timers(
    unfenced_defaults: Storage, lab: Lab, kill_after: float
) -> None:
    s = unfenced_defaults
    w = serving_and_writing(lab, s, peer=False)
    since = f"--since @{node_time(lab, 'node2'):.0f}"
    if kill_after < 10:
        # A restart of the Primary's drbdha (an upgrade) stops its adverts and heartbeats
        # together; when it is back, node2 must not take it for a live Primary whose
        # replication is gone (its heartbeat starts before its adverts).
        lab.exec("node1", "systemctl restart drbdha", timeout=90)
        s.wait_serving("node1")
        time.sleep(3)
        assert disk(lab, "node2") == "UpToDate"
        assert not [
            e
            for e in s.journal("node2", since)
            if e.get("MESSAGE", "").startswith("drbd.outdating_self")
        ]
    lab.cut("node1", "replication")
    time.sleep(kill_after)
    lab.kill("node1")
    w.stop()
    acked = w.acks.acknowledged
    # Past DRBD's own peer loss on node2 (10.5 s) and a takeover after it.
    wait_until(
        "node2 promoted or refusing",
        lambda: s.role("node2") == "Primary" or disk(lab, "node2") == "Outdated",
        60,
    )
    time.sleep(15)
    result = records.check(lab, "node2", w)
    outdated = [
        e
        for e in s.journal("node2", since)
        if e.get("MESSAGE", "").startswith("drbd.outdating_self")
    ]
    reasons = [e.get("REASON") for e in outdated]
    if s.role("node2") == "Primary":
        s.wait_serving("node2", timeout=60)
        assert result["missing"] == [], f"promoted without {len(result['missing'])} of {acked}"
        print(f"kill {kill_after:g} s after the cut: node2 promoted with all {acked} records")
    else:
        assert disk(lab, "node2") == "Outdated"
        assert not s.holds_vip("node2")
        doc = s.doc("node2")
        assert doc is not None
        assert "no_uptodate_disk" in doc["inhibitions"]
        print(
            f"kill {kill_after:g} s after the cut: node2 Outdated, not promoted; it lacks "
            f"{len(result['missing'])} of {acked} acknowledged records; outdated by {reasons}"
        )
    note = (s.doc("node2") or {}).get("storage", {}).get("fencing") or {}
    assert note.get("mode") == "unfenced", note
    # DRBD's defaults: the Primary writes alone after 6 s; 6 heartbeats of 0.1 s and a 0.1 s
    # advert come first, and status says so.
    assert "no acknowledged write is at risk" in note.get("note", ""), note
    if kill_after > 10.5:
        # The Primary's DRBD wrote alone well before DRBD's own detection on node2 would
        # have outdated it: only drbdha's heartbeat kept those writes from being lost.
        assert "replication_heartbeat_lost" in reasons, outdated
        assert s.role("node2") != "Primary"
        assert result["missing"], "node1 wrote nothing alone: the test did not reach its edge"
