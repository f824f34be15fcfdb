"""The full chain on the real cluster: DRBD, ext4, kernel nfsd with its state on DRBD, the
export and the VIP, drbdha under systemd on both nodes (nfs-server disabled, as the README
says), and the client VM writing over NFS through the VIP: 512-byte checksummed records at
their offsets, each followed by fsync, acknowledged to the host (records.py) as fsync
returns.

- A power-off of the master with two mounts writing, NFSv3 over TCP and NFSv4.2 (one crash
  for both: CI time): each resumes within seconds of the VIP's arrival on the new master
  (a client that waited for its TCP retransmission or keepalive would take 10-60 s: the
  tickle's job), with every acknowledged record intact there. DRBD
  fencing is configured: the new master's fence-peer handler finds the dead peer
  unreachable (exit 5) and the takeover goes through (no regression of the crash case).
- Two graceful force-failovers in a row, in opposite directions, with the client writing:
  the release works with every NFS helper running (statd, nfsdcld: in the classic stack
  they kept /var/lib/nfs busy and the demote failed), and nothing acknowledged is lost.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import records
from chainlab import EXPORT, FENCING, MOUNTPOINT, TUNED, Storage, fresh_cluster
from cluster import NODES, RESOURCE, VIP, Lab, LabError, wait_until

pytestmark = pytest.mark.slow

CLIENT_MOUNT = "/mnt/nfs"
RECORDS = "records"
# Seconds from the VIP's arrival on the new master to the client's first completed write.
# With the tickle it is a reconnect and a reclaim; without it a client waits for its next
# TCP retransmission (backed off to 10-25 s by then) or its keepalive (30 s for NFSv4.2,
# 60 s for NFSv3 after its last request). Measured here: 0.5-4.2 s (an NFSv4.2 reclaim
# under emulation is the long end).
RESUME_AFTER_VIP = 8.0
MOUNT_OPTIONS = {"3": "vers=3,proto=tcp,hard", "4.2": "vers=4.2,hard"}


@pytest.fixture
def nfs(lab: Lab) -> Iterator[Storage]:
    with fresh_cluster(lab, net=TUNED, **FENCING) as s:
        # As the README says: drbdha starts nfsd on the master, nothing else may.
        lab.parallel(
            lambda n: lab.exec(n, "systemctl disable --now nfs-server; rm -rf /srv/nfs"), NODES
        )
        lab.exec(
            "node1",
            f"drbdadm primary {RESOURCE} && mkfs.ext4 -q -F /dev/drbd0 && mkdir -p /mnt/new && "
            f"mount /dev/drbd0 /mnt/new && mkdir /mnt/new/data && umount /mnt/new && "
            f"drbdadm secondary {RESOURCE}",
            timeout=120,
        )
        s.configure(nfs=True)
        try:
            yield s
        finally:
            lab.exec("client", f"umount -f -l {CLIENT_MOUNT}*; true", check=False, timeout=60)


def events(lab: Lab, node: str, event: str, since: str) -> list[dict[str, Any]]:
    """journal entries with EVENT=event since the node's clock read `since` (the daemon's
    and the fence-peer handler's)."""
    r = lab.exec(
        node, f"journalctl -q -o json --since @{since} SYSLOG_IDENTIFIER=drbdha EVENT={event}"
    )
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


def offset(lab: Lab, vm: str) -> float:
    """`vm`'s wall clock minus the host's (to about half a command's round trip)."""
    t0 = time.time()
    theirs = float(lab.exec(vm, "date +%s.%N").stdout)
    return theirs - (t0 + time.time()) / 2


def mount_and_write(lab: Lab, s: Storage, *versions: str) -> dict[str, records.Writer]:
    """node1 serving; the client mounts the export once per NFS version and appends records
    to a file of its own on each (one writer per mount, each with its own collector)."""
    s.start("node1", "node2")
    s.wait_serving("node1", timeout=120)
    writers = {}
    for i, version in enumerate(versions):
        mnt = f"{CLIENT_MOUNT}{version}"
        lab.exec(
            "client",
            f"mkdir -p {mnt} && mount -t nfs -o {MOUNT_OPTIONS[version]} {VIP}:{EXPORT} {mnt}",
            timeout=120,
        )
        w = records.Writer(lab, port=records.PORT + i)
        w.start("client", f"{mnt}/{RECORDS}-v{version}")
        writers[version] = w
    for w in writers.values():
        w.wait_for(20)
    return writers


def intact_on(lab: Lab, node: str, w: records.Writer) -> None:
    name = w.target.rsplit("/", 1)[1]
    got = records.check(lab, node, w, f"{EXPORT}/{name}")
    assert got["missing"] == [], f"{len(got['missing'])} of {got['count']} records lost"
    assert w.acks.errors == 0, f"the client saw {w.acks.errors} write errors"


def test_power_off_the_master_nfs3_and_nfs42_clients_resume_with_every_record(
    nfs: Storage, lab: Lab
) -> None:
    """One power-off (CI time), an NFSv3-over-TCP and an NFSv4.2 mount writing through it."""
    since = lab.exec("node2", "date +%s").stdout.strip()
    writers = mount_and_write(lab, nfs, "3", "4.2")
    lab.kill("node1")
    for w in writers.values():
        w.wait_for(w.acks.acknowledged + 50, timeout=180)
    for w in writers.values():
        w.stop()
    (vip,) = events(lab, "node2", "vip.added", since)
    vip_at = int(vip["__REALTIME_TIMESTAMP"]) / 1e6 - offset(lab, "node2") + offset(lab, "client")
    for version, w in writers.items():
        done = [st + t for st, t in zip(w.acks.starts, w.acks.took, strict=True)]
        resumed = min(d for d in done if d > vip_at)
        print(
            f"NFSv{version}: the longest blocked write {w.acks.longest_write():.2f} s; the "
            f"first write done {resumed - vip_at:.2f} s after the VIP came up; "
            f"{w.acks.acknowledged} acknowledged"
        )
        assert resumed - vip_at < RESUME_AFTER_VIP, version
        intact_on(lab, "node2", w)
    assert nfs.serving("node2")
    with pytest.raises(LabError):  # powered off: nothing answers
        lab.exec("node1", "true", timeout=5)
    (peer,) = events(lab, "node2", "fence.peer", since)
    assert (peer["OUTCOME"], peer["EXIT_CODE"]) == ("unreachable", "5"), peer


def test_two_force_failovers_in_a_row_with_the_client_writing(nfs: Storage, lab: Lab) -> None:
    (w,) = mount_and_write(lab, nfs, "4.2").values()
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
    w.stop()
    print(f"two switch-overs: the longest blocked write {w.acks.longest_write():.2f} s")
    intact_on(lab, "node1", w)
    wait_until("node2 backup", lambda: nfs.state("node2") == "backup", 60)
