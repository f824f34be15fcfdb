"""The lab's own smoke test: DRBD between the nodes, drbdha's package installed, the fault
verbs. (Kernel nfsd and the NFS client are proven by test_nfs_vms.py, which needs them for
everything it does.)

The session fixture (conftest.py) brings the lab up first and, after the last test, takes it down
and checks the host for leftover namespaces, taps, qemu processes and loop devices.
"""

from __future__ import annotations

import subprocess
import time

import pytest
from cluster import NETNS, NODES, VMS, Lab, LabError, package_digest

pytestmark = pytest.mark.slow


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
    # As a package (test_package_vms.py has the rest), the one built from this tree.
    check = "dpkg-query -W -f='${Status}' drbdha && test -x /usr/bin/drbdha"
    for out in lab.parallel(lambda node: lab.exec(node, check).stdout, NODES):
        assert out == "install ok installed"
    assert all(lab._installed(node) == package_digest() for node in NODES)


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
