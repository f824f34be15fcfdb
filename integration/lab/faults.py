"""Faults the lab strikes (cluster.Lab)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

from topology import DISK_NAME, NET_ALIASES, NODES, VMS, LabError, _ipn


class Faults:
    """What the tests do to the cluster: power cut, link cuts, failing disks, frozen VMs,
    and healing all but the power cut. A part of cluster.Lab."""

    def kill(self, vm: str) -> None:
        """Hard power-off: SIGKILL qemu (no shutdown in the guest, disks as they were)."""
        pid = self.pid(vm)
        if pid is None:
            return
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while self.pid(vm) is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        for f in ("qga", "qmp", "pid"):
            self._p(vm, f).unlink(missing_ok=True)
        self.log(f"{vm}: killed")

    def _net(self, net: str) -> str:
        try:
            return NET_ALIASES[net]
        except KeyError:
            raise LabError(f"no network {net!r} (service | replication)") from None

    def cut(self, vm: str, net: str) -> None:
        """Cut a VM's link to a network (its tap goes down; the VM still sees its own link up)."""
        net = self._net(net)
        if net not in VMS[vm].addrs:
            raise LabError(f"{vm} has no {net} link")
        _ipn("link", "set", VMS[vm].tap(net), "down")

    def uncut(self, vm: str, net: str) -> None:
        net = self._net(net)
        _ipn("link", "set", VMS[vm].tap(net), "up")

    def links(self) -> dict:
        """{tap: 'up'|'down'} for every lab tap that exists."""
        try:
            data = json.loads(_ipn("-j", "link", "show").stdout)
        except subprocess.CalledProcessError:
            return {}
        return {
            link["ifname"]: ("up" if "UP" in link.get("flags", []) else "down")
            for link in data
            if link["ifname"] != "lo" and not link["ifname"].startswith("lab-")
        }

    def disk_table(self, vm: str) -> str | None:
        r = self.exec(vm, f"dmsetup table {DISK_NAME}", check=False, timeout=15)
        return r.stdout.split()[2] if r.returncode == 0 and len(r.stdout.split()) > 2 else None

    def fail_disk(
        self, vm: str, mode: str = "error", up: int = 0, down: int = 3600, delay_ms: int = 0
    ) -> None:
        """Switch a node's DRBD backing disk to dm-error (every I/O fails), dm-flakey (`up`
        seconds healthy, then `down` seconds in which all I/O fails, repeating) or dm-delay
        (every I/O `delay_ms` late: a slow disk)."""
        if not VMS[vm].disk:
            raise LabError(f"{vm} has no backing disk")
        if mode == "error":
            table = "0 $S error"
        elif mode == "flakey":
            table = f"0 $S flakey /dev/vdb 0 {up} {down}"
        elif mode == "delay":
            table = f"0 $S delay /dev/vdb 0 {delay_ms}"
        else:
            raise LabError(f"unknown disk failure mode {mode!r} (error | flakey | delay)")
        self._load_table(vm, table)
        self.log(f"{vm}: disk {DISK_NAME} -> {mode}")

    def restore_disk(self, vm: str) -> None:
        self._load_table(vm, "0 $S linear /dev/vdb 0")

    def _load_table(self, vm: str, table: str) -> None:
        self.exec(
            vm,
            f"""set -e
S=$(blockdev --getsz /dev/vdb)
dmsetup suspend {DISK_NAME}
dmsetup load {DISK_NAME} --table "{table}" || {{ dmsetup resume {DISK_NAME}; exit 1; }}
dmsetup resume {DISK_NAME}""",
            timeout=60,
        )

    def freeze(self, vm: str) -> None:
        """SIGSTOP the VM's qemu: the VM stops dead, its links stay up."""
        pid = self.pid(vm)
        if pid is None:
            raise LabError(f"{vm} is not running")
        os.kill(pid, signal.SIGSTOP)

    def thaw(self, vm: str | None = None) -> None:
        for v in [vm] if vm else VMS:
            pid = self.pid(v)
            if pid is not None:
                os.kill(pid, signal.SIGCONT)

    def heal(self) -> None:
        """Undo every fault but a kill: thaw frozen VMs, set all links up, disks back to linear."""
        self.thaw()
        for tap, state in self.links().items():
            if state == "down":
                _ipn("link", "set", tap, "up")

        def fix(vm: str) -> None:
            if self.running(vm) and self.agent(vm).ping(timeout=2):
                kind = self.disk_table(vm)
                if kind not in (None, "linear"):
                    self.restore_disk(vm)
                    self.log(f"{vm}: disk {DISK_NAME} restored to linear")

        self.parallel(fix, [vm for vm in NODES if self.running(vm)])
