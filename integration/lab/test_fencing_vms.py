"""DRBD fencing through drbdha on the real two-node cluster, drbdha under systemd on both.

The data-loss path fencing closes: the replication link fails while the Primary (node1) goes on
writing, then the Primary dies. Without fencing the Secondary would be promoted on its stale
copy and every write since the cut would be gone (docs/lab.md measured 477 of 1,100). Here a
writer on node1 appends checksummed O_DSYNC records to /dev/drbd0 (records.py) and reports each
one to the host as it is acknowledged; after the power-off node2 must not promote, and once
node1 is powered on again (its replication link still cut: the admin's first move) the service
comes back on node1 with every acknowledged record intact. node1 powers on from a checkpoint of
its RAM and root disk taken just before drbdha started (cluster.Lab.checkpoint): its DRBD backing
disk is not part of it and stays as the power-off left it, which is what the test is about.

- With `drbdha fence-peer` (fencing resource-and-stonith): node1's DRBD freezes its I/O at the
  cut and runs the handler, which has node2's drbdha outdate node2's copy.
- Without it (fencing dont-care, no [peer] section): test_safety_vms.py strikes inside the
  window, with DRBD's default timers (node1 killed 1 s and 12 s after the cut).
- A plain power-off with both links up (the handler finds the peer unreachable, exit 5, and
  the takeover goes through) is test_nfs_vms.py's power-off, with fencing configured.
- The peer channel refuses the wrong secret and a replayed request, and never outdates a
  Primary.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import records
from chainlab import FENCING, SECRET_FILE, TUNED, Storage, config, fresh_cluster
from cluster import NODES, RESOURCE, Lab
from polling import wait_until

pytestmark = pytest.mark.slow

# node1's checkpoint from before the test's drbdha start: it powers on again from there (a
# boot with its disks as the power-off left them, in ~3 s instead of a minute of emulation).
CONFIGURED = "configured"
# Seconds of writes after node2 is Outdated and before the power-off: enough for hundreds of
# records the Secondary lacks (the benchmark writes for 10 s; CI time is kept for the rest).
WRITE_AFTER_CUT = 3.0


@pytest.fixture
def fenced(lab: Lab) -> Iterator[Storage]:
    with fresh_cluster(lab, net=TUNED, **FENCING) as s:
        yield s


def disk(lab: Lab, node: str) -> str:
    return lab.exec(node, f"drbdadm dstate {RESOURCE}", check=False).stdout.split("/")[0].strip()


def kernel_log(lab: Lab, node: str) -> str:
    since = f"--since @{SINCE[node]}" if node in SINCE else ""
    return lab.exec(node, f"journalctl -k -q -o cat {since}", check=False, timeout=30).stdout


@pytest.fixture(autouse=True)
def since(lab: Lab) -> None:
    """Each node's clock at the start of the test: journal queries look only after it (the
    nodes' journals outlive a test)."""
    global SINCE  # noqa: PLW0603 (per test, read by the helpers below)
    SINCE = {n: lab.exec(n, "date +%s").stdout.strip() for n in NODES if lab.running(n)}


SINCE: dict[str, str] = {}


def drbdha_events(lab: Lab, node: str, event: str) -> list[dict[str, Any]]:
    """This test's journal entries with EVENT=event, from the daemon and from the fence-peer
    handler."""
    since = f"--since @{SINCE[node]}" if node in SINCE else ""
    r = lab.exec(
        node,
        f"journalctl -q -o json {since} SYSLOG_IDENTIFIER=drbdha EVENT={event}",
        check=False,
    )
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


def cut_write_kill(lab: Lab, s: Storage) -> tuple[records.Writer, str]:
    """node1 serving and writing; cut its replication link; write on; wait for node2 to be
    Outdated; power node1 off. Returns (the writer, stopped, with every acknowledgement the
    host heard; node1's kernel log just before the power-off: the lab's journal is
    volatile)."""
    # What node1 powers on into afterwards: this configuration, DRBD down, drbdha stopped.
    lab.exec("node1", f"drbdadm down {RESOURCE}")
    lab.checkpoint("node1", CONFIGURED)
    lab.exec("node1", f"drbdadm up {RESOURCE}")
    wait_until(
        "r0 UpToDate/UpToDate", lambda: lab.drbd_state("node1")["dstate"] == "UpToDate/UpToDate", 60
    )
    s.start("node1", "node2")
    s.wait_serving("node1")
    w = records.Writer(lab)
    w.start("node1")
    w.wait_for(20)
    lab.cut("node1", "replication")
    wait_until("node2 Outdated", lambda: disk(lab, "node2") == "Outdated", 30)
    # The Primary goes on writing once its handler is done (it is slow to start here).
    w.wait_for(w.acks.acknowledged + 50, timeout=60)
    time.sleep(WRITE_AFTER_CUT)
    klog = kernel_log(lab, "node1")
    lab.kill("node1")
    w.stop()
    return w, klog


def no_stale_promotion_then_node1_back(lab: Lab, s: Storage, w: records.Writer) -> None:
    # Long past Master_Down_Interval (0.36 s) and DRBD's peer-loss time (1.5 s).
    time.sleep(5)
    doc = s.doc("node2")
    assert doc is not None
    assert s.role("node2") == "Secondary"
    assert not s.holds_vip("node2")
    assert "no_uptodate_disk" in doc["inhibitions"], doc["inhibitions"]
    assert doc["storage"]["drbd"]["disk"] == "Outdated"
    deferred = drbdha_events(lab, "node2", "vrrp.takeover_deferred")
    assert any("no_uptodate_disk" in e.get("REASONS", "") for e in deferred), deferred
    status = lab.exec("node2", "drbdha status", check=False)
    assert status.returncode == 1, status.stdout  # degraded: nobody serves
    assert "no_uptodate_disk" in status.stdout
    acked = w.acks.acknowledged
    stale = records.check(lab, "node2", w)
    assert stale["missing"], "node2 should lack the writes made after the cut"
    print(f"node2 lacks {len(stale['missing'])} of {acked} acknowledged records (not promoted)")

    lab.start("node1", cut=("replication",), checkpoint=CONFIGURED)
    lab.exec("node1", f"drbdadm up {RESOURCE}")  # drbd.service's job at boot; not enabled here
    s.start("node1")
    s.wait_serving("node1", timeout=90)
    assert s.role("node2") == "Secondary"
    assert records.check(lab, "node1", w)["missing"] == []
    lab.heal()  # node2 resyncs from node1 and has every record too
    wait_until("node2 UpToDate", lambda: disk(lab, "node2") == "UpToDate", 120)
    assert records.check(lab, "node2", w)["missing"] == []


def test_cut_then_power_off_the_handler_keeps_the_stale_copy_out(fenced: Storage, lab: Lab) -> None:
    fenced.configure()
    w, klog = cut_write_kill(lab, fenced)
    fences = drbdha_events(lab, "node2", "fence.request")
    assert [e["OUTCOME"] for e in fences] == ["outdated"], fences
    print(f"node2 answered the fence request in {fences[0]['TOOK_MS']} ms")
    # node1's DRBD froze I/O and ran the handler, which had node2 outdated (exit 4).
    assert re.search(r"fence-peer helper returned 4 \(peer was fenced\)", klog), klog[-2000:]
    print(f"longest write on node1 after the cut: {w.acks.longest_write():.2f} s")
    no_stale_promotion_then_node1_back(lab, fenced, w)


CLIENT = r"""
import socket, sys
from drbdha.fencing import wire
peer, key, out = sys.argv[1], open(sys.argv[2], "rb").read().strip(), sys.argv[3]
def exchange(request=None):
    s = socket.create_connection((peer, 9944), timeout=30)
    f = s.makefile("rb")
    challenge = wire.decode(f.readline())
    request = request or wire.outdate_request(key, "r0", challenge["nonce"], wire.nonce())
    s.sendall(request)
    return request, f.readline().decode().strip()
if out == "replay":
    print(exchange(open("/root/request", "rb").read())[1])
else:
    request, answer = exchange()
    open("/root/request", "wb").write(request)
    print(answer)
"""


def test_peer_channel_refuses_wrong_secret_and_replay_never_outdates_a_primary(
    fenced: Storage, lab: Lab
) -> None:
    fenced.configure()
    fenced.start("node1", "node2")
    fenced.wait_serving("node1")
    # node2 asks the Primary to outdate: refused, node1 stays Primary and UpToDate.
    r = lab.exec("node2", "drbdha fence-peer --resource r0", check=False)
    assert r.returncode == 6, r.stdout + r.stderr
    assert (fenced.role("node1"), disk(lab, "node1")) == ("Primary", "UpToDate")
    (primary,) = drbdha_events(lab, "node1", "fence.request")
    assert primary["OUTCOME"] == "primary"

    # The wrong secret: refused before anything is done.
    lab.put("node1", "/root/wrong.key", "x" * 44 + "\n", 0o600)
    wrong = config("node1").replace(SECRET_FILE, "/root/wrong.key")
    lab.put("node1", "/root/wrong.toml", wrong, 0o600)
    r = lab.exec("node1", "drbdha -c /root/wrong.toml fence-peer --resource r0", check=False)
    assert r.returncode == 1, r.stdout + r.stderr
    assert disk(lab, "node2") == "UpToDate"
    assert [e["REASON"] for e in drbdha_events(lab, "node2", "fence.refused")] == ["bad_mac"]

    # A real request, recorded while node1's replication link is cut (node1's own handler
    # has outdated node2 by then); played again once the link is back and node2 has
    # resynced, it does nothing. (Recorded with the link up, the outdate would drop the link
    # and node1's DRBD would run its own handler on top.)
    lab.cut("node1", "replication")
    wait_until("node2 Outdated", lambda: disk(lab, "node2") == "Outdated", 30)
    lab.put("node1", "/root/client.py", CLIENT)
    first = lab.exec("node1", f"python3 /root/client.py 10.77.1.12 {SECRET_FILE} record").stdout
    assert json.loads(first)["outcome"] == "outdated", first
    lab.heal()
    wait_until("node2 UpToDate again", lambda: disk(lab, "node2") == "UpToDate", 60)
    again = lab.exec("node1", f"python3 /root/client.py 10.77.1.12 {SECRET_FILE} replay").stdout
    assert json.loads(again) == {"type": "refused", "v": 1, "reason": "replayed"}, again
    time.sleep(2)
    assert disk(lab, "node2") == "UpToDate"
    refused = [e["REASON"] for e in drbdha_events(lab, "node2", "fence.refused")]
    assert refused == ["bad_mac", "replayed"], refused
