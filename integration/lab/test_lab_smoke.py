"""The lab's own smoke test: DRBD between the nodes, NFS from node1 to the client, the fault verbs.

The session fixture (conftest.py) brings the lab up first and, after the last test, takes it down
and checks the host for leftover namespaces, taps, qemu processes and loop devices.
"""

from __future__ import annotations

import subprocess
import time

import pytest
from cluster import NETNS, NODES, VMS, Lab, LabError

pytestmark = pytest.mark.slow

EXPORT = "/srv/nfs"
MOUNT = "/mnt/nfs"


def test_drbd_connected_and_uptodate(lab: Lab) -> None:
    for node in NODES:
        st = lab.drbd_state(node)
        assert st["cstate"] == "Connected", (node, st)
        assert st["dstate"] == "UpToDate/UpToDate", (node, st)
        assert st["role"] == "Secondary/Secondary", (node, st)


def test_exec_returns_exit_code_and_output(lab: Lab) -> None:
    r = lab.exec("node1", "hostname; echo err >&2; exit 3", check=False)
    assert (r.returncode, r.stdout, r.stderr) == (3, "node1\n", "err\n")
    with pytest.raises(subprocess.CalledProcessError):
        lab.exec("node2", "false")
    assert lab.exec("client", ["cat"], input=b"in\n").stdout == "in\n"
    with pytest.raises(subprocess.TimeoutExpired):
        lab.exec("client", "sleep 30", timeout=1)


def test_drbdha_installed_from_working_tree(lab: Lab) -> None:
    for node in NODES:
        lab.exec(node, "test -x /usr/bin/drbdha && test -d /usr/lib/drbdha")
        lab.exec(node, "python3 -c 'import pyroute2, structlog, prometheus_client, systemd.daemon'")


def test_nfs_from_node1_to_client(lab: Lab) -> None:
    svc = VMS["node1"].addrs["svc"]
    try:
        lab.exec(
            "node1",
            f"""set -e
            drbdadm primary r0
            mkfs.ext4 -q -F /dev/drbd0
            mkdir -p {EXPORT}
            mount /dev/drbd0 {EXPORT}
            mkdir -p /etc/exports.d
            echo '{EXPORT} 10.77.1.0/24(rw,sync,no_subtree_check,no_root_squash,fsid=1)' \
                > /etc/exports.d/lab.exports
            systemctl start nfs-server
            exportfs -ra""",
            timeout=120,
        )
        assert lab.drbd_state("node1")["role"] == "Primary/Secondary"
        lab.exec(
            "client",
            f"""set -e
            mkdir -p {MOUNT}
            mount -t nfs -o vers=4.2,hard,timeo=50 {svc}:{EXPORT} {MOUNT}
            head -c 65536 /dev/urandom > /tmp/data
            cp /tmp/data {MOUNT}/data
            sync""",
            timeout=120,
        )
        assert "vers=4.2" in lab.exec("client", f"grep ' {MOUNT} ' /proc/mounts").stdout
        client_sum = lab.exec("client", f"sha256sum < {MOUNT}/data").stdout
        assert client_sum == lab.exec("client", "sha256sum < /tmp/data").stdout
        assert client_sum == lab.exec("node1", f"sha256sum < {EXPORT}/data").stdout
    finally:
        lab.exec("client", f"umount -f {MOUNT} 2>/dev/null; true", timeout=60)
        lab.exec(
            "node1",
            f"""rm -f /etc/exports.d/lab.exports; exportfs -ua
            systemctl stop nfs-server; umount {EXPORT}; drbdadm secondary r0""",
            check=False,
            timeout=120,
        )
    assert lab.drbd_state("node1")["role"] == "Secondary/Secondary"


def test_cut_and_heal(lab: Lab) -> None:
    ping = "ping -c 1 -W 1 node1"
    lab.exec("client", ping)
    lab.cut("client", "service")
    try:
        assert lab.exec("client", ping, check=False).returncode != 0
        assert lab.links()["client-svc"] == "down"
    finally:
        lab.heal()
    lab.exec("client", "ping -c 1 -W 5 node1")


def test_fail_disk_and_heal(lab: Lab) -> None:
    read = "dd if=/dev/mapper/lab-vdb of=/dev/null bs=4096 count=1 iflag=direct status=none"
    lab.exec("node2", read)
    lab.fail_disk("node2")
    try:
        assert lab.disk_table("node2") == "error"
        assert lab.exec("node2", read, check=False).returncode != 0
    finally:
        lab.heal()
    assert lab.disk_table("node2") == "linear"
    lab.exec("node2", read)


def test_freeze_and_thaw(lab: Lab) -> None:
    lab.freeze("client")
    try:
        assert lab.status()["vms"]["client"]["state"] == "frozen"
        with pytest.raises((LabError, subprocess.TimeoutExpired)):
            lab.exec("client", "true", timeout=2)
    finally:
        lab.thaw("client")
    lab.exec("client", "true", timeout=30)


def test_up_again_keeps_the_running_lab(lab: Lab) -> None:
    pids = {vm: lab.pid(vm) for vm in VMS}
    t0 = time.monotonic()
    lab.up()
    assert time.monotonic() - t0 < 120
    assert {vm: lab.pid(vm) for vm in VMS} == pids
    for node in NODES:
        assert lab.drbd_state(node)["dstate"] == "UpToDate/UpToDate"


def test_leftover_check_sees_the_running_lab(lab: Lab) -> None:
    # The end-of-session check (conftest.py) is only worth something if it sees a running lab.
    left = lab.leftovers()
    assert f"network namespace {NETNS}" in left
    assert any(item.startswith("qemu process") for item in left)
