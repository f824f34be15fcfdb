"""Checkpoints of the DRBD nodes (cluster.Lab)."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from packages import package_digest
from polling import wait_until
from qmp import Monitor, MonitorError
from topology import BOOTED, DISK_DEV, NODES, RESOURCE, ROOT_NODE, LabError


class Checkpoints:
    """qemu internal snapshots of a node's RAM and root disk (QMP), and a node resumed
    from one. A part of cluster.Lab."""

    # An emulated boot takes 60-120 s here; resuming a node from a checkpoint takes ~3 s.
    # A checkpoint is a qemu internal snapshot of the VM's RAM and root disk, not of its DRBD
    # backing disk: resuming from it gives a node just as it was when the checkpoint was
    # taken (files, processes), with its data disk as the power-off really left it. It is
    # taken only while DRBD is down on the node, so that nothing in the saved RAM refers to
    # the backing disk's contents; after the resume the block caches are dropped all the same.
    def _checkpoints(self, vm: str) -> Path:
        return self._p(vm, "checkpoints")

    def has_checkpoint(self, vm: str, name: str) -> bool:
        try:
            return name in self._checkpoints(vm).read_text().split()
        except OSError:
            return False

    def checkpoint(self, vm: str, name: str) -> None:
        """Save `vm`'s state as checkpoint `name` (replacing one of that name): the VM pauses
        for a fraction of a second. DRBD must be down there (`drbdadm down`)."""
        if vm not in NODES:
            raise LabError(f"checkpoints are for the DRBD nodes ({', '.join(NODES)}), not {vm}")
        r = self.exec(vm, f"drbdsetup status {RESOURCE} >/dev/null 2>&1; echo $?; sync")
        if r.stdout.strip() == "0":
            raise LabError(f"{vm}: DRBD {RESOURCE} is up; `drbdadm down {RESOURCE}` first")
        t0 = time.monotonic()
        names = {name}
        with Monitor(str(self._p(vm, "qmp"))) as m:
            with contextlib.suppress(MonitorError):  # none of that name yet
                m.job("snapshot-delete", tag=name, devices=[ROOT_NODE])
            m.job("snapshot-save", tag=name, vmstate=ROOT_NODE, devices=[ROOT_NODE])
        with contextlib.suppress(OSError):
            names |= set(self._checkpoints(vm).read_text().split())
        self._checkpoints(vm).write_text(" ".join(sorted(names)) + "\n")
        self.log(f"{vm}: checkpoint {name!r} saved in {time.monotonic() - t0:.1f} s")

    def _resume(self, vm: str, name: str) -> None:
        """Load checkpoint `name` into `vm`'s paused qemu and let it run. The resumed VM's
        clock still reads the checkpoint's time, and its caches of the backing disk are older
        than the disk: the clock is set from the host, the caches dropped."""
        t0 = time.monotonic()
        with Monitor(str(self._p(vm, "qmp"))) as m:
            m.job("snapshot-load", tag=name, vmstate=ROOT_NODE, devices=[ROOT_NODE])
            m.cmd("cont")
        wait_until(f"{vm}'s guest agent", lambda: self.agent(vm).ping(timeout=1.0), 60, 0.1)
        self.agent(vm).request("guest-set-time", {"time": time.time_ns()})
        self.exec(
            vm, f"blockdev --flushbufs /dev/vdb {DISK_DEV}; echo 3 > /proc/sys/vm/drop_caches"
        )
        self.log(f"{vm}: resumed from checkpoint {name!r} in {time.monotonic() - t0:.1f} s")

    def restore(self, vm: str) -> bool:
        """`vm` as `up` left it, if it has the `booted` checkpoint: powered off and resumed from
        it (seconds, where installing the tree's .deb again takes about a minute under
        emulation). The checkpoint holds the tree's package: install_drbdha() drops it when it
        installs another tree. False (nothing done) without the checkpoint."""
        if not self.has_checkpoint(vm, BOOTED):
            return False
        self.kill(vm)
        self.start(vm, checkpoint=BOOTED)
        self._p(vm, "installed").write_text(package_digest() + "\n")
        return True
