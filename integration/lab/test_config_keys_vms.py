"""The storage keys etc/drbdha.toml documents, set away from their defaults on the lab's
cluster, and each seen doing what the example says (a new user's pass over the keys, kept as a
test so that it cannot rot): the device, the filesystem type and mount options, fsck
"always", a service on the filesystem, the NFS state directory, nfsd's threads, lease, grace
and server scope (on the wire, in the EXCHANGE_ID replies), two exports with a host name, a
network, a UUID fsid and read-only options, the built-in checks off, a user's check with a
timeout and a weight (the priority drops, the preempting peer takes over; no FAULT), and no
damping. The budgets (`*_timeout`) are only accepted here: the unit tests make each one
bound its step. The other tests run the lab's usual keys (chainlab.NFS_SECTION).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from chainlab import CONFIG, FENCING, MOUNTPOINT, TUNED, Storage, config, fresh_cluster
from cluster import NODES, RESOURCE, VIP, Lab
from nfslab import CLIENT_MOUNT, MOUNT_OPTIONS, ScopeCapture, events
from polling import wait_until

pytestmark = pytest.mark.slow

WEB = "drbdha-lab-web.service"
SCOPE = "tour-scope"
FSID = "6f1b8a4e-2c3d-4e5f-8a9b-0c1d2e3f4a5b"
FLAG = "/run/drbdha-lab-slow"
STATE = f"{MOUNTPOINT}/state"
TOUR: dict[str, Any] = {
    "device": "/dev/drbd0",
    "mountpoint": MOUNTPOINT,
    "fstype": "ext4",
    "mount_options": "noatime,commit=30",
    "fsck": "always",
    "mount_timeout": 120,
    "unmount_timeout": 20,
    "services": [WEB],
    "services_timeout": 30,
    "nfs_state_dir": STATE,
    "nfsd_threads": 3,
    "nfsv4_lease_time": 15,
    "nfsv4_grace_time": 20,
    "nfs_server_scope": SCOPE,
    "nfs_start_timeout": 90,
    "nfs_stop_timeout": 45,
    "builtin_checks": False,
    "takeover_damping": 0,
    "promote_timeout": 45,
    "vip_timeout": 5,
    "checks": [
        # Fails by its timeout while FLAG exists: the priority drops by 60 (150 -> 90, below
        # node2's 100), no FAULT.
        {
            "name": "slow",
            "command": ["/bin/sh", "-c", f"if test -e {FLAG}; then sleep 3; fi"],
            "interval": 0.5,
            "timeout": 1,
            "fall": 3,
            "rise": 1,
            "weight": 60,
        }
    ],
    "exports": [
        {
            "path": f"{MOUNTPOINT}/data",
            "clients": ["client", "10.77.2.0/24"],
            "fsid": FSID,
            "options": "rw,sync,no_subtree_check,no_root_squash",
        },
        {
            "path": f"{MOUNTPOINT}/ro",
            "clients": ["10.77.1.0/24"],
            "fsid": 7,
            "options": "ro,sync,no_subtree_check",
        },
    ],
}
# A service on the replicated data, as the example's comment has it (an HTTP server).
UNIT = f"""\
[Unit]
Description=drbdha lab: an HTTP server on the replicated filesystem
[Service]
WorkingDirectory={MOUNTPOINT}/ro
ExecStart=/usr/bin/python3 -m http.server 8080
"""
LOOK = (
    f"findmnt -no SOURCE,OPTIONS {MOUNTPOINT}; echo ==; "
    "cat /proc/fs/nfsd/threads /proc/fs/nfsd/nfsv4leasetime /proc/fs/nfsd/nfsv4gracetime; "
    f"echo ==; exportfs -v; echo ==; findmnt -no SOURCE /var/lib/nfs; echo ==; "
    f"systemctl is-active {WEB}"
)
FETCH = (
    "python3 -c \"import urllib.request as u; print(u.urlopen('http://vip:8080/hello').read())\""
)


@pytest.fixture
def tour(lab: Lab) -> Iterator[Storage]:
    with fresh_cluster(lab, net=TUNED, **FENCING) as s:

        def prepare(n: str) -> None:
            lab.put(n, f"/etc/systemd/system/{WEB}", UNIT)
            lab.exec(n, "systemctl stop nfs-server; rm -rf /srv/nfs; systemctl daemon-reload")

        lab.parallel(prepare, NODES)
        lab.exec(
            "node1",
            f"drbdadm primary {RESOURCE} && mkfs.ext4 -q -F /dev/drbd0 && mkdir -p /mnt/new && "
            "mount /dev/drbd0 /mnt/new && mkdir /mnt/new/data /mnt/new/ro && "
            "echo hello from the replicated disk > /mnt/new/ro/hello && umount /mnt/new && "
            f"drbdadm secondary {RESOURCE}",
            timeout=120,
        )
        s.configure(nfs=True, nfs_section=TOUR)
        # node2 preempts (a master whose weighted check fails is then outbid), node1 does not.
        node2 = config("node2", preempt=True, nfs=True, nfs_section=TOUR)
        lab.put("node2", CONFIG, node2, 0o600)
        try:
            yield s
        finally:
            lab.exec("client", f"umount -f -l {CLIENT_MOUNT}*; true", check=False, timeout=60)
            # drbdha released first, so the drop-ins below never change under a serving nfsd.
            s.stop()

            def restore(n: str) -> None:
                lab.exec(n, f"rm -f {FLAG} /etc/systemd/system/{WEB}", check=False)
                # The lab's own nfsd drop-ins again (this test's scope, threads, lease and
                # grace are in /run), with the reload that also forgets the unit.
                lab.nfs_dropins(n)

            lab.parallel(restore, [n for n in NODES if lab.running(n)])


def serves_as_configured(lab: Lab, s: Storage, node: str, since: str) -> None:
    mount, threads, exports, state, web = lab.exec(node, LOOK).stdout.split("==\n")
    source, options = mount.split()
    assert source == "/dev/drbd0"
    assert {"noatime", "commit=30"} <= set(options.split(",")), options
    assert threads.split() == ["3", "15", "20"], threads
    for needle in (
        f"{MOUNTPOINT}/data",
        f"{MOUNTPOINT}/ro",
        f"fsid={FSID}",
        "fsid=7",
        "client(",
        "10.77.2.0/24(",
        "10.77.1.0/24(",
    ):
        assert needle in exports, (needle, exports)
    assert ",ro," in exports.split(f"{MOUNTPOINT}/ro")[1], exports
    assert state.strip() == "/dev/drbd0[/state]", state
    assert web.strip() == "active", web
    fsck = events(lab, node, since, "filesystem.fsck")
    assert fsck, f"{node}: fsck = 'always' ran no fsck on an ext4 with a journal"
    doc = s.doc(node)
    assert doc is not None
    storage = doc["storage"]
    assert (storage["mount"]["device"], storage["mount"]["fstype"]) == ("/dev/drbd0", "ext4")
    assert (storage["nfsd"]["threads"], storage["nfsd"]["scope"]) == (3, SCOPE), storage["nfsd"]
    assert (storage["exports"]["configured"], storage["exports"]["exported"]) == (2, 2)
    assert [c["name"] for c in storage["checks"]] == ["slow"], "builtin_checks = false"


def released(lab: Lab, s: Storage, node: str) -> None:
    assert s.role(node) == "Secondary"
    assert MOUNTPOINT not in lab.exec(node, "findmnt -rn -o TARGET").stdout.split()
    assert lab.exec(node, f"systemctl is-active {WEB}", check=False).stdout.strip() != "active"
    assert lab.exec(node, "cat /proc/fs/nfsd/threads", check=False).stdout.strip() in ("", "0")


def client_writes_and_reads(lab: Lab, i: int) -> None:
    lab.exec("client", f"echo write {i} >> {CLIENT_MOUNT}4.2/tour && sync", timeout=120)
    got = lab.exec("client", FETCH, timeout=60).stdout
    assert "hello from the replicated disk" in got, got


def test_every_storage_key_does_what_the_example_says(tour: Storage, lab: Lab) -> None:
    since = {n: lab.exec(n, "date +%s").stdout.strip() for n in NODES}
    tour.start("node1", "node2")
    tour.wait_serving("node1", timeout=120)
    serves_as_configured(lab, tour, "node1", since["node1"])
    scope = ScopeCapture(lab)
    scope.start()
    lab.exec(
        "client",
        f"mkdir -p {CLIENT_MOUNT}4.2 && mount -t nfs -o {MOUNT_OPTIONS['4.2']} "
        f"{VIP}:{MOUNTPOINT}/data {CLIENT_MOUNT}4.2",
        timeout=120,
    )
    client_writes_and_reads(lab, 1)

    # The weighted check fails by its timeout on the master: node1's priority drops to 90,
    # node2 (100, preempt) takes over; node1 is a backup, not in FAULT.
    lab.exec("node1", f"touch {FLAG}")
    tour.wait_serving("node2", timeout=120)
    released(lab, tour, "node1")

    def outbid() -> dict[str, Any] | None:
        d = tour.doc("node1")
        return d if d and d["effective_priority"] == 90 else None

    doc = wait_until("node1 at priority 150 - 60", outbid, 30)
    assert (doc["state"], doc["faults"]) == ("backup", []), doc
    (slow,) = doc["storage"]["checks"]
    assert (slow["failing"], slow["weight"]) == (True, 60), slow
    serves_as_configured(lab, tour, "node2", since["node2"])
    client_writes_and_reads(lab, 2)

    # Healthy again (rise 1): back to 150, but node1 does not preempt. A force-failover
    # moves the service back at once (takeover_damping = 0: no hold).
    lab.exec("node1", f"rm -f {FLAG}")
    wait_until(
        "node1 at 150 again",
        lambda: (tour.doc("node1") or {}).get("effective_priority") == 150,
        30,
    )
    assert tour.serving("node2")
    lab.exec("node2", "drbdha force-failover", timeout=120)
    tour.wait_serving("node1", timeout=120)
    released(lab, tour, "node2")
    client_writes_and_reads(lab, 3)
    scope.stop()
    # Both nodes' EXCHANGE_ID replies carried the configured scope.
    assert scope.senders_of(SCOPE.encode()) == {"node1", "node2"}
    got = lab.exec("node1", f"cat {MOUNTPOINT}/data/tour").stdout.split("\n")
    assert got[:3] == ["write 1", "write 2", "write 3"], got
