"""The drbdha VM lab: three Debian VMs under qemu, two networks in a network namespace, DRBD.

Python stdlib only; used by the `lab` command and imported by pytest tests (see conftest.py).

    node1, node2   service network (eth0) + replication network (eth1) + /dev/vdb for DRBD,
                   under a device-mapper target /dev/mapper/lab-vdb (linear; error/flakey on demand)
    client         service network only (NFS client)

Every VM runs from a qcow2 overlay over one cached raw image (image.py), booted directly with
the image's kernel, its identity (hostname, addresses) given on the kernel command line.
Commands run in the VMs through the qemu guest agent (qga.py), which works with the network cut.
All lab traffic stays inside the network namespace `drbdha-lab`: bridges lab-svc and lab-repl, one
tap per VM and network, host addresses 10.77.1.1 and 10.77.2.1.

Lab is made of one part per job: vms.py (qemu, the guest agent, commands in the VMs, the
namespace, status and removal), checkpoints.py, packages.py (drbdha's .deb in the nodes),
drbd_setup.py (r0), faults.py (power cut, link cuts, failing disks, freezes, heal); the
layout (names, addresses, VMs, errors) is topology.py. Everything is importable from here.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import image as image_mod
from checkpoints import Checkpoints
from drbd_setup import DrbdSetup
from faults import Faults
from packages import PACKAGE_INPUTS, Packages, package_digest
from topology import (
    BOOTED,
    DEFAULT_RUN,
    DEFAULT_WORK,
    DISK_DEV,
    DISK_NAME,
    DISK_SIZE,
    DRBD_PORT,
    HERE,
    NET_ALIASES,
    NETNS,
    NETS,
    NODES,
    REPO,
    RESOURCE,
    ROOT_NODE,
    TRACE,
    VIP,
    VM,
    VMS,
    CommandFailed,
    LabError,
    Net,
    vrrp_instance,
)
from vms import Vms, kvm_is_fast

__all__ = [
    "BOOTED",
    "DEFAULT_RUN",
    "DEFAULT_WORK",
    "DISK_DEV",
    "DISK_NAME",
    "DISK_SIZE",
    "DRBD_PORT",
    "HERE",
    "NETNS",
    "NETS",
    "NET_ALIASES",
    "NODES",
    "PACKAGE_INPUTS",
    "REPO",
    "RESOURCE",
    "ROOT_NODE",
    "TRACE",
    "VIP",
    "VM",
    "VMS",
    "CommandFailed",
    "Lab",
    "LabError",
    "Net",
    "kvm_is_fast",
    "package_digest",
    "vrrp_instance",
]


class Lab(Vms, Checkpoints, Packages, DrbdSetup, Faults):
    def __init__(
        self,
        run_dir: str | None = None,
        work_dir: str | None = None,
        log: Callable[[str], None] | None = None,
        boot_timeout: float | None = None,
        suite: str | None = None,
    ) -> None:
        self.run = Path(run_dir or os.environ.get("DRBDHA_LAB_RUN", DEFAULT_RUN))
        self.work = Path(work_dir or os.environ.get("DRBDHA_LAB_WORK", DEFAULT_WORK))
        self._log = log or (lambda msg: print(f"lab: {msg}", file=sys.stderr, flush=True))
        self.boot_timeout = boot_timeout or float(os.environ.get("DRBDHA_LAB_BOOT_TIMEOUT", "420"))
        # The Debian release of the VMs: `suite`, else DRBDHA_LAB_SUITE, else the one the
        # lab's VMs already run (so that `lab start` after `lab up --suite trixie` stays on
        # trixie), else the host's. Another one than the running lab's: `lab down` first.
        running = self._image()[1:]
        self.suite = (
            suite
            or os.environ.get("DRBDHA_LAB_SUITE")
            or (running[0] if running else image_mod.host_release())
        )
        # The DRBD the VMs run (image.lab_drbd reads DRBDHA_LAB_DRBD): as for the release,
        # the running lab's unless told otherwise.
        self.drbd = os.environ.get("DRBDHA_LAB_DRBD") or (running[1] if running[1:] else "8.4")
        os.environ["DRBDHA_LAB_DRBD"] = self.drbd
        self.t0 = time.monotonic()

    def log(self, msg: str) -> None:
        self._log(msg)

    def up(self, install: bool = True, drbd: bool = True) -> None:
        """Bring the whole lab to a known good state; safe to call when it is already up.

        Builds the image if needed, makes the network, boots every VM that is not running,
        undoes faults (heal), installs drbdha's .deb built from the working tree
        (install_drbdha), and brings DRBD r0 to Connected and UpToDate/UpToDate.
        """
        t0 = time.monotonic()
        for tool in ("qemu-system-x86_64", "qemu-img", "ip"):
            if not shutil.which(tool):
                raise LabError(
                    f"{tool} not found: apt-get install qemu-system-x86 qemu-utils iproute2"
                )
        img = self.build()
        running = [vm for vm in VMS if self.running(vm)]
        if running and self._image_key() not in (None, img.key):
            raise LabError(
                f"{', '.join(running)} run from image {self._image_key()}, the image's inputs "
                f"now make {img.key} ({img.dir}): `lab down` first"
            )
        self.run.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True, exist_ok=True)
        self._net_up()
        t_boot = time.monotonic()
        to_boot = [vm for vm in VMS if not self.running(vm)]
        resumed = [vm for vm in to_boot if self.has_checkpoint(vm, BOOTED)]
        for vm in to_boot:  # a node powered off after `up` comes back as `up` left it
            self.start(vm, img, wait=False, checkpoint=BOOTED if vm in resumed else None)
        self.heal()
        self.wait_ready(list(VMS))
        if to_boot:
            self.log(f"VMs ready: {', '.join(to_boot)} booted in {time.monotonic() - t_boot:.1f} s")
        self.setup_ssh()
        if install:
            self.install_drbdha()
            fresh = [vm for vm in to_boot if vm in NODES and vm not in resumed]
            self.parallel(self.nfs_dropins, fresh)
            # Booted just now, drbdha installed, DRBD not yet up: what a node powered on again
            # (fresh_cluster) resumes from.
            for vm in fresh:
                self.checkpoint(vm, BOOTED)
        if drbd:
            try:
                self.drbd_up()
            except LabError as e:  # a split brain or a detached disk an earlier run left
                self.log(f"drbd: {e}; starting r0 from scratch")
                self.drbd_reset()
        self.log(f"up in {time.monotonic() - t0:.1f} s")
