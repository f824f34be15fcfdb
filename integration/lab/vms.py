"""Starting, reaching and removing the lab's VMs (cluster.Lab's VM half)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import image as image_mod
from qga import Agent, AgentError
from topology import (
    DISK_NAME,
    DISK_SIZE,
    NETNS,
    NETS,
    ROOT_NODE,
    TRACE,
    VMS,
    CommandFailed,
    LabError,
    _ipn,
    _proc_state,
    _rss_kib,
    _sh,
)

T = TypeVar("T")


def kvm_is_fast() -> bool:
    """KVM only where the CPU exposes hardware virtualization to us (not a nested guest without it).

    On a nested host without vmx/svm, /dev/kvm exists but boots take minutes: use TCG there.
    DRBDHA_LAB_ACCEL=kvm|tcg overrides.
    """
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " vmx" in flags or " svm" in flags


class Vms:
    """The VMs' lives on the host: qemu started and resumed, its guest agent, commands and
    files in the VMs, the lab's network namespace, status, and removing it all. A part of
    cluster.Lab (self.run, self.work, self.suite, self.boot_timeout, self.log are Lab's)."""

    def _p(self, vm: str, what: str) -> Path:
        return self.run / f"{vm}.{what}"

    def agent(self, vm: str) -> Agent:
        return Agent(str(self._p(vm, "qga")), str(self._p(vm, "qga.lock")))

    def pid(self, vm: str) -> int | None:
        try:
            pid = int(self._p(vm, "pid").read_text().strip())
        except (OSError, ValueError):
            return None
        state = _proc_state(pid)
        if state is None or state in "ZX":
            return None
        return pid

    def running(self, vm: str) -> bool:
        return self.pid(vm) is not None

    def frozen(self, vm: str) -> bool:
        pid = self.pid(vm)
        return pid is not None and _proc_state(pid) in ("T", "t")

    def build(self, force: bool = False) -> image_mod.Image:
        return image_mod.ensure_image(force=force, log=self.log, release=self.suite)

    def _image(self) -> list[str]:
        """[key, release, drbd] of the image the VMs' root overlays in the work directory
        are over, [] before the first boot."""
        try:
            return (self.work / "image").read_text().split()
        except OSError:
            return []

    def _image_key(self) -> str | None:
        return next(iter(self._image()), None)

    def _net_up(self) -> None:
        if NETNS not in _sh(["ip", "netns", "list"]).stdout.split():
            _sh(["ip", "netns", "add", NETNS])
        _ipn("link", "set", "lo", "up")
        links = {link["ifname"] for link in json.loads(_ipn("-j", "link", "show").stdout)}
        for net in NETS.values():
            if net.bridge not in links:
                _ipn(
                    "link",
                    "add",
                    net.bridge,
                    "type",
                    "bridge",
                    "stp_state",
                    "0",
                    "forward_delay",
                    "0",
                    "mcast_snooping",
                    "0",
                )
                _ipn("addr", "add", f"{net.host_addr}/{net.prefix}", "dev", net.bridge)
            _ipn("link", "set", net.bridge, "up")
        for vm in VMS.values():
            for net in vm.addrs:
                tap = vm.tap(net)
                if tap not in links:
                    _ipn("tuntap", "add", "dev", tap, "mode", "tap")
                    _ipn("link", "set", tap, "master", NETS[net].bridge)
                _ipn("link", "set", tap, "up")

    def start(
        self,
        vm: str,
        img: image_mod.Image | None = None,
        wait: bool = True,
        cut: Sequence[str] = (),
        checkpoint: str | None = None,
    ) -> None:
        """Power a VM on (again, after kill: same disks, like a reboot after a power cut).
        `cut`: networks whose link stays cut from the first instant (starting a VM sets every
        lab link up otherwise). `checkpoint`: resume from that checkpoint (see checkpoint())
        instead of booting, if the VM has it; a boot otherwise."""
        if self.running(vm):
            return
        if checkpoint is not None and not self.has_checkpoint(vm, checkpoint):
            self.log(f"{vm}: no checkpoint {checkpoint!r}: booting")
            checkpoint = None
        img = img or self.build()
        spec = VMS[vm]
        self.run.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True, exist_ok=True)
        self._net_up()
        for net in cut:
            self.cut(vm, net)
        overlay = self.work / f"{vm}.qcow2"
        if overlay.exists() and self._image_key() not in (None, img.key):
            raise LabError(f"{vm}'s disk is over image {self._image_key()}, not {img.key}")
        if not overlay.exists():
            (self.work / "image").write_text(f"{img.key} {self.suite} {self.drbd}\n")
            _sh(
                [
                    "qemu-img",
                    "create",
                    "-q",
                    "-f",
                    "qcow2",
                    "-F",
                    "raw",
                    "-b",
                    str(img.rootfs),
                    str(overlay),
                ]
            )
        for f in ("qga", "qmp", "pid"):
            self._p(vm, f).unlink(missing_ok=True)
        append = [
            "root=/dev/vda",
            "rw",
            "console=ttyS0",
            "quiet",
            "loglevel=4",
            "net.ifnames=0",
            "mitigations=off",
            "fsck.mode=skip",
            "systemd.show_status=0",
            "rd.udev.log_level=3",
            "udev.log_level=3",
            "panic=-1",
            "tsc=reliable",
            f"systemd.hostname={vm}",
        ]
        append += [f"lab.{net}={addr}/{NETS[net].prefix}" for net, addr in spec.addrs.items()]
        accel = os.environ.get("DRBDHA_LAB_ACCEL", "auto")
        if accel == "auto":
            accel = "kvm" if kvm_is_fast() else "tcg"
        if accel == "kvm":
            machine = ["-accel", "kvm", "-cpu", "host"]
        else:
            machine = ["-accel", "tcg,thread=multi,tb-size=256", "-cpu", "max"]
        cmd = [
            "ip",
            "netns",
            "exec",
            NETNS,
            "qemu-system-x86_64",
            "-name",
            f"{vm},process=lab-{vm}",
            *machine,
            "-smp",
            "1",
            "-m",
            os.environ.get("DRBDHA_LAB_MEM", "384"),
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
            "-no-user-config",
            "-kernel",
            str(img.kernel),
            "-initrd",
            str(img.initrd),
            "-drive",
            f"file={overlay},if=virtio,format=qcow2,cache=unsafe,discard=unmap,node-name={ROOT_NODE}",
        ]
        if spec.disk:
            disk = self.work / f"{vm}-disk.raw"
            if not disk.exists():
                with disk.open("wb") as f:
                    f.truncate(DISK_SIZE)
            cmd += ["-drive", f"file={disk},if=virtio,format=raw,cache=unsafe"]
            append.append(f"lab.disk={DISK_NAME}")
        cmd += ["-append", " ".join(append)]
        for net in spec.addrs:
            cmd += [
                "-netdev",
                f"tap,id={net},ifname={spec.tap(net)},script=no,downscript=no",
                "-device",
                f"virtio-net-pci,netdev={net},mac={spec.mac(net)}",
            ]
        cmd += [
            "-device",
            "virtio-serial-pci",
            "-chardev",
            f"socket,id=qga,path={self._p(vm, 'qga')},server=on,wait=off",
            "-device",
            "virtserialport,chardev=qga,name=org.qemu.guest_agent.0",
            "-chardev",
            f"file,id=con,path={self._p(vm, 'console.log')}",
            "-serial",
            "chardev:con",
            "-qmp",
            f"unix:{self._p(vm, 'qmp')},server=on,wait=off",
            "-pidfile",
            str(self._p(vm, "pid")),
            "-daemonize",
        ]
        self._p(vm, "cmdline").write_text(shlex.join(cmd) + "\n")
        if checkpoint is not None:
            cmd.append("-S")  # paused until the checkpoint is loaded
        r = _sh(cmd, check=False)
        if r.returncode != 0:
            raise LabError(f"qemu for {vm} failed to start: {r.stderr.strip()}")
        if checkpoint is None:
            self.log(f"{vm}: qemu started (pid {self.pid(vm)}, {accel})")
            if wait:
                self.wait_ready([vm])
            return
        self._resume(vm, checkpoint)

    def wait_ready(self, vms: list[str], timeout: float | None = None) -> None:
        """Wait until each VM's guest agent answers and its lab identity is applied."""
        deadline = time.monotonic() + (timeout or self.boot_timeout)
        pending = list(vms)
        t0 = time.monotonic()
        while pending:
            for vm in list(pending):
                if not self.running(vm):
                    tail = self.console_tail(vm)
                    raise LabError(f"{vm} is not running (console log tail:\n{tail})")
                if not self.agent(vm).ping(timeout=1.0):
                    continue
                try:
                    r = self.agent(vm).run("systemctl is-active lab-setup.service", timeout=10)
                except (AgentError, subprocess.TimeoutExpired):
                    continue
                if r.stdout.strip() == "active":
                    pending.remove(vm)
                    self.log(f"{vm}: ready after {time.monotonic() - t0:.1f} s")
            if pending:
                if time.monotonic() > deadline:
                    raise LabError(f"VMs not ready in time: {', '.join(pending)}")
                time.sleep(0.5)

    def console_tail(self, vm: str, lines: int = 20) -> str:
        try:
            return "\n".join(
                self._p(vm, "console.log").read_text(errors="replace").splitlines()[-lines:]
            )
        except OSError:
            return "(no console log)"

    def exec(
        self,
        vm: str,
        cmd: str | Sequence[str],
        check: bool = True,
        timeout: float | None = 60.0,
        input: bytes | str | None = None,  # noqa: A002 (named as in subprocess.run)
    ) -> subprocess.CompletedProcess:
        """Run a shell command (str) or an argv (list) as root in a VM.

        Returns a CompletedProcess (returncode, stdout, stderr as text). With check=True a
        non-zero exit raises CommandFailed (a CalledProcessError). subprocess.TimeoutExpired
        when it runs longer than `timeout` (the command is killed in the VM); LabError when the
        VM does not answer (powered off, frozen).
        """
        if vm not in VMS:
            raise LabError(f"no VM {vm!r} (VMs: {', '.join(VMS)})")
        if not isinstance(cmd, str):
            cmd = shlex.join(cmd)
        data = input.encode() if isinstance(input, str) else input
        if not self.running(vm):
            raise LabError(f"{vm} is not running")
        t0 = time.monotonic()
        try:
            r = self.agent(vm).run(cmd, timeout=timeout, input=data)
        except AgentError as e:
            raise LabError(f"{vm}: {e}") from None
        finally:
            if TRACE:  # where a lab test's time goes: every command and how long it took
                self.log(f"{vm}: {time.monotonic() - t0:.2f} s: {cmd[:100]!r}")
        if check and r.returncode != 0:
            raise CommandFailed(vm, r.returncode, cmd, r.stdout, r.stderr)
        return r

    def clock_offset(self, vm: str) -> float:
        """`vm`'s wall clock minus the host's, in seconds: guest-get-time (no process in the
        VM, so the round trip is short), the best of three by round-trip time."""
        best = (float("inf"), 0.0)
        for _ in range(3):
            t0 = time.time()
            theirs = self.agent(vm).request("guest-get-time") / 1e9
            t1 = time.time()
            best = min(best, (t1 - t0, theirs - (t0 + t1) / 2))
        return best[1]

    def put(self, vm: str, path: str, data: bytes | str, mode: int = 0o644) -> None:
        """Write a file in a VM."""
        self.exec(
            vm,
            f"mkdir -p {shlex.quote(str(PurePosixPath(path).parent))} && "
            f"cat > {shlex.quote(path)} && chmod {mode:o} {shlex.quote(path)}",
            input=data,
        )

    def parallel(self, fn: Callable[[Any], T], items: Iterable[Any]) -> list[T]:
        """fn(item) for each item, in threads; results in order; the first error is raised."""
        items = list(items)
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(items))) as ex:
            return list(ex.map(fn, items))

    def setup_ssh(self) -> None:
        """Make a lab key and authorize it in every VM, for humans: `lab ssh NODE`."""
        if not shutil.which("ssh-keygen"):
            return
        key = self.run / "id_ed25519"
        if not key.exists():
            _sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "drbdha-lab", "-f", str(key)])
        pub = (self.run / "id_ed25519.pub").read_text()
        self.parallel(lambda vm: self.put(vm, "/root/.ssh/authorized_keys", pub, 0o600), VMS)

    def ssh_command(self, vm: str, extra: list[str] = ()) -> list[str]:
        return [
            "ip",
            "netns",
            "exec",
            NETNS,
            "ssh",
            "-i",
            str(self.run / "id_ed25519"),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ControlMaster=auto",
            "-o",
            f"ControlPath={self.run}/ssh-%h",
            "-o",
            "ControlPersist=120",
            f"root@{VMS[vm].addrs['svc']}",
            *extra,
        ]

    def status(self) -> dict:
        links = self.links()

        def one(vm: str) -> dict:
            pid = self.pid(vm)
            st = {"state": "off", "pid": pid}
            if pid is not None:
                st["state"] = "frozen" if self.frozen(vm) else "running"
                st["rss_mib"] = round((_rss_kib(pid) or 0) / 1024)
                st["links"] = {net: links.get(VMS[vm].tap(net), "missing") for net in VMS[vm].addrs}
                if st["state"] == "running":
                    st["agent"] = self.agent(vm).ping(timeout=2)
                    if st["agent"] and VMS[vm].disk:
                        st["disk"] = self.disk_table(vm)
                        st["drbd"] = self.drbd_state(vm)
            return st

        return {
            "netns": NETNS in _sh(["ip", "netns", "list"]).stdout.split(),
            "vms": dict(zip(VMS, self.parallel(one, VMS), strict=False)),
        }

    def down(self) -> None:
        """Remove everything the lab made: VMs, taps, bridges, namespace, loop devices, files."""
        t0 = time.monotonic()
        for vm in VMS:
            pid = self.pid(vm)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
        for pid in self._stray_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while (
            any(self.pid(vm) for vm in VMS) or self._stray_pids()
        ) and time.monotonic() < deadline:
            time.sleep(0.05)
        if NETNS in _sh(["ip", "netns", "list"]).stdout.split():
            _sh(["ip", "netns", "delete", NETNS], check=False)
        for dev in self._loop_devices():
            _sh(["losetup", "-d", dev], check=False)
        shutil.rmtree(self.run, ignore_errors=True)
        shutil.rmtree(self.work, ignore_errors=True)
        self.log(f"down in {time.monotonic() - t0:.1f} s")

    def _stray_pids(self) -> list[int]:
        """Processes that refer to the lab's directories: qemu (its sockets, disks), ssh masters."""
        me = os.getpid()
        out = []
        marks = (str(self.run).encode(), str(self.work).encode())
        for d in Path("/proc").iterdir():
            if not d.name.isdigit() or int(d.name) == me:
                continue
            try:
                cmdline = (d / "cmdline").read_bytes()
            except OSError:
                continue
            if any(m in cmdline for m in marks) and _proc_state(int(d.name)) not in (
                None,
                "Z",
                "X",
            ):
                out.append(int(d.name))
        return out

    def _loop_devices(self) -> list[str]:
        r = _sh(["losetup", "-l", "-n", "-O", "NAME,BACK-FILE"], check=False)
        return [
            line.split()[0]
            for line in r.stdout.splitlines()
            if len(line.split()) > 1
            and (
                line.split()[1].startswith(str(self.work))
                or line.split()[1].startswith(str(self.run))
            )
        ]

    def leftovers(self) -> list[str]:
        """What the lab left on the host (empty after down)."""
        found = []
        if NETNS in _sh(["ip", "netns", "list"]).stdout.split():
            found.append(f"network namespace {NETNS}")
        names = {vm.tap(n) for vm in VMS.values() for n in vm.addrs} | {
            n.bridge for n in NETS.values()
        }
        host_links = json.loads(_sh(["ip", "-j", "link", "show"]).stdout)
        found += [f"host link {x['ifname']}" for x in host_links if x["ifname"] in names]
        for pid in self._stray_pids():
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            qemu = any(b"qemu-system" in a for a in argv)
            found.append(f"{'qemu process' if qemu else 'process'} {pid}: {argv[:6]!r}")
        found += [f"loop device {d}" for d in self._loop_devices()]
        for d in (self.run, self.work):
            if d.exists():
                found.append(f"directory {d}")
        return found
