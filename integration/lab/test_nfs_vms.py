"""The full chain on the real cluster: DRBD, ext4, kernel nfsd with its state on DRBD, the
export and the VIP, drbdha under systemd on both nodes (nfs-server disabled, as the README
says), and the client VM writing over NFS through the VIP: 512-byte checksummed records at
their offsets, each followed by fsync, acknowledged to the host (records.py) as fsync
returns.

- A power-off of the master with two mounts writing, NFSv3 over TCP and NFSv4.2 (one crash
  for both: CI time), through the demo's own code (demo_cluster.py: integration/demo runs the
  same function and prints the same result line): each resumes within seconds of the VIP's
  arrival on the new master (a client that waited for its TCP retransmission or keepalive
  would take 10-60 s: the tickle's job), with every acknowledged record intact there. DRBD
  fencing is configured: the new master's fence-peer handler finds the dead peer
  unreachable (exit 5) and the takeover goes through (no regression of the crash case).
  It runs last here: node1 stays off after it.
- Two graceful force-failovers in a row, in opposite directions, with the client writing:
  the release works with every NFS helper running (statd, nfsdcld: in the classic stack
  they kept /var/lib/nfs busy and the demote failed), and nothing acknowledged is lost;
  then a health check failing on the master moves the service, and the damping holds the
  old master out once it is healthy again. The client's capture shows both nodes sending
  the same NFS server scope in their EXCHANGE_ID replies.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import demo_cluster
import pytest
from chainlab import FAIL_FLAG, MOUNTPOINT, Storage
from cluster import Lab, LabError
from nfslab import ScopeCapture, lost_on, mount_and_write, nfs_cluster
from polling import wait_until

pytestmark = pytest.mark.slow

# Seconds from the VIP's arrival on the new master to the client's first completed write.
# With the tickle it is a reconnect and a reclaim; without it a client waits for its next
# TCP retransmission (backed off to 10-25 s by then) or its keepalive (30 s for NFSv4.2,
# 60 s for NFSv3 after its last request). Measured here: 0.5-4.2 s (an NFSv4.2 reclaim
# under emulation is the long end).
RESUME_AFTER_VIP = 8.0


@pytest.fixture
def nfs(lab: Lab) -> Iterator[Storage]:
    with nfs_cluster(lab) as s:
        yield s


def test_two_force_failovers_then_a_failing_check_with_the_client_writing(
    nfs: Storage, lab: Lab
) -> None:
    nfs.start("node1", "node2")
    nfs.wait_serving("node1", timeout=120)
    scope = ScopeCapture(lab)
    scope.start()
    (w,) = mount_and_write(lab, "4.2").values()
    for old, new in (("node1", "node2"), ("node2", "node1")):
        lab.exec(old, "drbdha force-failover", timeout=120)
        nfs.wait_serving(new, timeout=120)
        # The old master let go of everything: not Primary, nothing mounted, no nfsd.
        assert nfs.role(old) == "Secondary"
        mounts = lab.exec(old, "findmnt -rn -o TARGET").stdout.split()
        assert MOUNTPOINT not in mounts
        assert "/var/lib/nfs" not in mounts
        assert lab.exec(old, "cat /proc/fs/nfsd/threads", check=False).stdout.strip() in ("", "0")
        w.wait_for(w.acks.acknowledged + 30, timeout=120)
    print(f"two switch-overs: the longest blocked write {w.acks.longest_write():.2f} s")
    scope.stop()
    # On the wire: both nodes' EXCHANGE_ID replies carried the same server scope, the
    # config's default for instance "lab" (so the client reclaimed on the new server), and
    # neither node's own hostname, nfsd's default scope.
    assert scope.senders_of(b"drbdha-lab") == {"node1", "node2"}
    assert scope.senders_of(b"node1") | scope.senders_of(b"node2") == set()

    # The lab's check (weight 0) fails on the master: a FAULT, the chain released, node2
    # takes over; healthy again, node1 is held out for takeover_damping (60 s from the
    # failure).
    lab.exec("node1", f"touch {FAIL_FLAG}")

    def faulted() -> bool:
        d = nfs.doc("node1")
        return bool(d and "check:flag" in d["faults"])

    wait_until("node1 in FAULT for its failing check", faulted, 30)
    lab.exec("node1", f"rm -f {FAIL_FLAG}")
    nfs.wait_serving("node2", timeout=120)

    def damped() -> dict[str, Any] | None:
        d = nfs.doc("node1")
        return d if d and not d["faults"] and "takeover_damped" in d["inhibitions"] else None

    wait_until("node1 healthy again and held out by the damping", damped, 30)
    w.wait_for(w.acks.acknowledged + 30, timeout=120)
    w.stop()
    print(f"and a failing check: the longest blocked write {w.acks.longest_write():.2f} s")
    assert lost_on(lab, "node2", w) == 0
    assert w.acks.errors == 0, f"the client saw {w.acks.errors} write errors"
    assert nfs.serving("node2")


def test_power_off_the_master_nfs3_and_nfs42_clients_resume_with_every_record(
    nfs: Storage, lab: Lab
) -> None:
    """The demo's run: one power-off (CI time), an NFSv3-over-TCP and an NFSv4.2 mount
    writing through it."""
    result = demo_cluster.power_off_master(lab, nfs)
    line = result.line()
    print(line)
    got = re.fullmatch(r"result: acknowledged=(\d+) intact=(\d+) lost=(\d+) stall=[\d.]+s", line)
    assert got, line
    acknowledged, intact, lost = map(int, got.groups())
    assert acknowledged > 0
    assert (lost, intact) == (0, acknowledged), line
    for version, m in result.mounts.items():
        assert m.errors == 0, f"NFSv{version}: the client saw {m.errors} write errors"
        assert m.resumed_after_vip < RESUME_AFTER_VIP, (version, m)
    names = [p.name for p in result.phases]
    assert names[0] == "VRRP detection", names
    assert names.index("drbd") < names.index("nfsd") < names.index("vip"), names
    assert nfs.serving("node2")
    with pytest.raises(LabError):  # powered off: nothing answers
        lab.exec("node1", "true", timeout=5)
    peer = result.fence_peer
    assert peer is not None
    assert (peer["OUTCOME"], peer["EXIT_CODE"]) == ("unreachable", "5"), peer
