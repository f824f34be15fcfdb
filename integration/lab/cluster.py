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
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import image as image_mod
from polling import wait_until
from qga import Agent, AgentError
from qmp import Monitor, MonitorError

T = TypeVar("T")
HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

# One lab per name on a host: its network namespace, its run and work directories.
NETNS = os.environ.get("DRBDHA_LAB_NAME", "drbdha-lab")
DEFAULT_RUN = f"/run/{NETNS}"
DEFAULT_WORK = f"/var/tmp/{NETNS}"  # noqa: S108 (a fixed, root-only lab directory)
DISK_NAME = "lab-vdb"
DISK_DEV = f"/dev/mapper/{DISK_NAME}"
DISK_SIZE = 96 * 1024 * 1024  # small: a full resync after a crashed Primary copies all of it
TRACE = os.environ.get("DRBDHA_LAB_TRACE") == "1"
BOOTED = "booted"  # the checkpoint `up` saves of each node it boots
ROOT_NODE = "root"  # qemu block node name of each VM's root overlay (checkpoints live there)
RESOURCE = "r0"
DRBD_PORT = 7789
VIP = "10.77.1.100"


@dataclasses.dataclass(frozen=True)
class Net:
    name: str  # "svc" / "repl" (the long names "service" / "replication" are accepted too)
    bridge: str
    host_addr: str  # the host's address on the bridge, inside the namespace
    prefix: int


NETS = {
    "svc": Net("svc", "lab-svc", "10.77.1.1", 24),
    "repl": Net("repl", "lab-repl", "10.77.2.1", 24),
}
NET_ALIASES = {"service": "svc", "svc": "svc", "replication": "repl", "repl": "repl"}


@dataclasses.dataclass(frozen=True)
class VM:
    name: str
    index: int
    addrs: dict  # net name -> address
    disk: bool  # has a DRBD backing disk

    def tap(self, net: str) -> str:
        return f"{self.name}-{net}"

    def mac(self, net: str) -> str:
        return f"52:54:00:77:{list(NETS).index(net) + 1:02x}:{self.index:02x}"


VMS = {
    "node1": VM("node1", 11, {"svc": "10.77.1.11", "repl": "10.77.2.11"}, True),
    "node2": VM("node2", 12, {"svc": "10.77.1.12", "repl": "10.77.2.12"}, True),
    "client": VM("client", 21, {"svc": "10.77.1.21"}, False),
}
NODES = ("node1", "node2")


class LabError(RuntimeError):
    pass


class CommandFailed(subprocess.CalledProcessError):
    """A command in a VM exited non-zero; str() shows where, and its output."""

    def __init__(self, node: str, returncode: int, cmd: str, output: str, stderr: str) -> None:
        super().__init__(returncode, cmd, output, stderr)
        self.node = node

    def __str__(self) -> str:
        def tail(s: str | None) -> str:
            s = (s or "").strip()
            return s[-2000:] if s else "(empty)"

        return (
            f"[{self.node}] exit {self.returncode}: {self.cmd}\n"
            f"--- stdout\n{tail(self.output)}\n--- stderr\n{tail(self.stderr)}"
        )


def _sh(cmd: list[str], check: bool = True, **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, text=True, capture_output=True, **kw)


def _ipn(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return _sh(["ip", "-n", NETNS, *args], check=check)


def _proc_state(pid: int) -> str | None:
    """The process state letter (R, S, T, Z...) or None if there is no such process."""
    try:
        with Path(f"/proc/{pid}/stat").open() as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def _rss_kib(pid: int) -> int | None:
    try:
        with Path(f"/proc/{pid}/status").open() as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


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


# What debian/build-deb builds the package from: drbdha/ and pyproject.toml (the wheel), the
# unit, the example, debian/ (with the vendored wheel), and what goes to /usr/share/doc.
PACKAGE_INPUTS = (
    "pyproject.toml",
    "README.md",
    "drbdha",
    "systemd",
    "etc",
    "contrib/grafana",
    "debian",
)


def package_digest() -> str:
    """sha256 of PACKAGE_INPUTS as debian/build-deb takes them (the files git sees: tracked
    and untracked, less what .gitignore excludes): each one's path, executable bit and content
    (a symlink: its target). A change anywhere else (tests, docs) builds nothing again."""
    ls = _sh(
        [
            "git",
            "-C",
            str(REPO),
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
            "--",
            *PACKAGE_INPUTS,
        ]
    )
    h = hashlib.sha256()
    for rel in sorted(set(ls.stdout.split("\0")) - {""}):
        p = REPO / rel
        if p.is_symlink():
            what = b"-> " + str(p.readlink()).encode()
        elif p.is_file():
            what = (b"x " if os.access(p, os.X_OK) else b"f ") + hashlib.sha256(
                p.read_bytes()
            ).digest()
        else:  # tracked, deleted in the tree: build-deb skips it too
            continue
        h.update(rel.encode() + b"\0" + what + b"\0")
    return h.hexdigest()


class Lab:
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
        self.t0 = time.monotonic()

    def log(self, msg: str) -> None:
        self._log(msg)

    # ---------------------------------------------------------------------------- paths
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

    # ---------------------------------------------------------------------------- up
    def build(self, force: bool = False) -> image_mod.Image:
        return image_mod.ensure_image(force=force, log=self.log, release=self.suite)

    def _image(self) -> list[str]:
        """[key, release] of the image the VMs' root overlays in the work directory are
        over, [] before the first boot."""
        try:
            return (self.work / "image").read_text().split()
        except OSError:
            return []

    def _image_key(self) -> str | None:
        return next(iter(self._image()), None)

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
            self.drbd_up()
        self.log(f"up in {time.monotonic() - t0:.1f} s")

    def nfs_dropins(self, vm: str) -> None:
        """The systemd drop-ins drbdha's nfsd step writes at its first start after a boot, for
        the lab's NFS config (scope drbdha-lab, 8 threads, lease and grace 10 s, the VIP),
        written with drbdha's own function, and the daemon-reload they need, before the
        checkpoint. A node resumed from it is a node on which drbdha has run since boot: in
        these one-CPU emulated VMs that reload takes 8 s idle and over 60 s while drbdha
        starts beside it, once per resume otherwise. Other values only cost that reload."""
        script = (
            "from drbdha.resources.nfs import write_if_changed, dropins\n"
            f"for p, t in dropins('drbdha-lab', 8, 10, 10, '{VIP}').items():\n"
            "    write_if_changed(p, t)\n"
        )
        self.exec(vm, "python3 - && systemctl daemon-reload", input=script, timeout=180)

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
            (self.work / "image").write_text(f"{img.key} {self.suite}\n")
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

    # ---------------------------------------------------------------------------- checkpoints
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

    # ---------------------------------------------------------------------------- exec
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

    # ---------------------------------------------------------------------------- ssh (optional)
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

    # ---------------------------------------------------------------------------- drbdha
    def build_deb(self, suffix: str = "") -> Path:
        """drbdha_<version>_all.deb built from the working tree by `debian/build-deb`, into the
        work directory; built again only when what the package is built from changed
        (package_digest()). `suffix`: DRBDHA_VERSION_SUFFIX, the same tree as a later version
        ("+lab1": 0.1.0+lab1), for an upgrade."""
        digest = package_digest()
        debs = self.work / "deb"
        out = debs / f"{digest}{suffix}"
        if built := sorted(out.glob("drbdha_*_all.deb")):
            return built[0]
        debs.mkdir(parents=True, exist_ok=True)
        for old in debs.iterdir():  # builds of trees that are gone
            if not old.name.startswith(digest):
                shutil.rmtree(old, ignore_errors=True)
        t0 = time.monotonic()
        tmp = debs / f".{out.name}.building"
        shutil.rmtree(tmp, ignore_errors=True)
        # pip for debian/fetch-vendor, the first time only: this interpreter's (the lab runs
        # under the repository's .venv in CI; Debian's python3 may have none).
        env = {**os.environ, "PYTHON": sys.executable, "DRBDHA_VERSION_SUFFIX": suffix}
        r = _sh([str(REPO / "debian" / "build-deb"), str(tmp)], check=False, env=env)
        if r.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise LabError(f"debian/build-deb failed:\n{(r.stdout + r.stderr)[-3000:]}")
        tmp.rename(out)
        (deb,) = out.glob("drbdha_*_all.deb")
        self.log(f"{deb.name} built from {REPO} in {time.monotonic() - t0:.1f} s")
        return deb

    def _installed(self, vm: str) -> str | None:
        """What install_deb() last installed in `vm` (while it ran from this overlay): the
        package_digest() of the tree, with the version suffix if it had one."""
        try:
            return self._p(vm, "installed").read_text().strip()
        except OSError:
            return None

    def forget_install(self, vm: str) -> None:
        """drbdha in `vm` is no longer known to be the tree's package (a test removes or
        replaces it): the next install_drbdha() installs it there again."""
        self._p(vm, "installed").unlink(missing_ok=True)

    def install_deb(self, vm: str, deb: Path, command: str = "dpkg -i") -> float:
        """Install a .deb build_deb() made in `vm` (the seconds it took): copied to
        /root/dist/, then `cd /root && COMMAND ./dist/NAME.deb` (as the README says, with
        `apt install`). dpkg -i installs the same version again, or an older one. A running
        drbdha is restarted by the package (its postinst: try-restart)."""
        self.forget_install(vm)
        t0 = time.monotonic()
        script = (
            f"set -e; cd /root; rm -rf dist; mkdir dist; cat > dist/{deb.name}; "
            f"DEBIAN_FRONTEND=noninteractive {command} ./dist/{deb.name} </dev/null; rm -r dist; "
            # On disk now: a `lab kill` (power cut) in the next ~30 s would otherwise leave the
            # files just written empty after the reboot (ext4 delayed allocation).
            "sync"
        )
        self.exec(vm, script, input=deb.read_bytes(), timeout=300)
        self._p(vm, "installed").write_text(deb.parent.name + "\n")
        return time.monotonic() - t0

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

    def install_drbdha(self, vms: Iterable[str] = NODES, force: bool = False) -> None:
        """Build drbdha's .deb from the working tree (build_deb()) and install it in the nodes,
        as a package: /usr/bin/drbdha, the unit (neither enabled nor started by the package),
        /etc/drbdha/drbdha.toml the example. A running drbdha is restarted onto the new code.
        Nothing is done when the tree is what was installed last (unless `force`)."""
        vms = list(vms)
        digest = package_digest()
        if not force and all(self._installed(vm) == digest for vm in vms):
            # Unchanged since the last install (an `up` of a running lab): nothing to do, and
            # the nodes' checkpoints stay valid.
            self.log(f"drbdha unchanged on {', '.join(vms)}")
            return
        deb = self.build_deb()
        for vm in vms:  # a checkpoint from before would resume the code it replaces
            self._checkpoints(vm).unlink(missing_ok=True)
        # dpkg --force-confnew --force-confmiss: /etc/drbdha/drbdha.toml becomes the package's,
        # whatever a test left there or removed (each test writes its own before starting
        # drbdha), and dpkg never stops to ask. A Depends the image lacks fails here.
        took = self.parallel(
            lambda vm: self.install_deb(vm, deb, "dpkg -i --force-confnew --force-confmiss"), vms
        )
        self.log(
            f"{deb.name} installed on "
            + ", ".join(f"{vm} ({t:.1f} s)" for vm, t in zip(vms, took, strict=True))
        )

    # ---------------------------------------------------------------------------- DRBD
    def drbd_config(self, net: str = "", disk: str = "", handlers: str = "") -> str:
        """r0 between the nodes; `net`, `disk` and `handlers` add options to those sections
        (e.g. the peer-loss timers "ping-int 1; ping-timeout 5;"; 8.4 keeps `fencing` in
        disk), empty for DRBD's defaults."""
        ons = "\n".join(
            f"    on {n} {{\n        address {VMS[n].addrs['repl']}:{DRBD_PORT};\n    }}"
            for n in NODES
        )
        sections = "".join(
            f"    {name} {{ {body} }}\n"
            for name, body in (("net", net), ("disk", disk), ("handlers", handlers))
            if body
        )
        return (
            f"# Written by the drbdha lab (`lab up`).\nresource {RESOURCE} {{\n"
            f"    device /dev/drbd0;\n    disk {DISK_DEV};\n    meta-disk internal;\n"
            f"{sections}{ons}\n}}\n"
        )

    def drbd_state(self, vm: str) -> dict:
        """{'role': 'Secondary/Secondary', 'cstate': 'Connected', 'dstate': 'UpToDate/UpToDate'}"""
        r = self.exec(
            vm,
            f"drbdadm role {RESOURCE}; drbdadm cstate {RESOURCE}; drbdadm dstate {RESOURCE}",
            check=False,
            timeout=20,
        )
        lines = r.stdout.split()
        if r.returncode != 0 or len(lines) != 3:
            return {
                "role": None,
                "cstate": None,
                "dstate": None,
                "error": (r.stderr or r.stdout).strip(),
            }
        return dict(zip(("role", "cstate", "dstate"), lines, strict=False))

    def drbd_up(
        self, timeout: float = 180.0, net: str = "", disk: str = "", handlers: str = ""
    ) -> None:
        """Configure r0 on both nodes if needed, and wait for Connected + UpToDate/UpToDate.

        On fresh metadata the initial sync is skipped (new-current-uuid --clear-bitmap).
        `net`, `disk`, `handlers`: options for r0's sections (drbd_config), applied with
        `drbdadm adjust` (which also removes options no longer written).
        """
        conf = self.drbd_config(net, disk, handlers)
        script = f"""
set -e
modprobe drbd
cat > /etc/drbd.d/{RESOURCE}.res
if drbdsetup show {RESOURCE} 2>/dev/null | grep -q disk; then
    drbdadm adjust {RESOURCE}
else
    if ! drbdadm dump-md {RESOURCE} >/dev/null 2>&1; then
        yes yes | drbdadm -- --force create-md {RESOURCE} >/dev/null 2>&1
        echo fresh
    fi
    drbdadm up {RESOURCE}
fi
"""
        results = self.parallel(lambda n: self.exec(n, script, input=conf, timeout=120), NODES)
        fresh = all("fresh" in r.stdout for r in results)
        deadline = time.monotonic() + timeout
        cleared = False
        while True:
            states = self.parallel(self.drbd_state, NODES)
            if all(
                s["cstate"] == "Connected" and s["dstate"] == "UpToDate/UpToDate" for s in states
            ):
                break
            if (
                fresh
                and not cleared
                and all(s["cstate"] == "Connected" for s in states)
                and all(s["dstate"] == "Inconsistent/Inconsistent" for s in states)
            ):
                self.exec(NODES[0], f"drbdadm new-current-uuid --clear-bitmap {RESOURCE}/0")
                cleared = True
                self.log("drbd: fresh metadata, initial sync skipped")
                continue
            if time.monotonic() > deadline:
                raise LabError(
                    f"DRBD {RESOURCE} not Connected UpToDate/UpToDate in {timeout:.0f} s: "
                    f"{dict(zip(NODES, states, strict=False))} (try `lab drbd-reset`)"
                )
            time.sleep(0.5)
        self.log(
            f"drbd: {RESOURCE} Connected, UpToDate/UpToDate, roles "
            + ", ".join(
                f"{n}={s['role'].split('/')[0]}" for n, s in zip(NODES, states, strict=False)
            )
        )

    def drbd_reset(self) -> None:
        """Start DRBD from scratch: down, wipe the backing disks, new metadata, skip the sync."""
        script = f"""
set -e
drbdadm down {RESOURCE} 2>/dev/null || true
dd if=/dev/zero of={DISK_DEV} bs=1M count=8 oflag=direct status=none
mib=$(( $(blockdev --getsize64 {DISK_DEV}) / 1048576 ))
dd if=/dev/zero of={DISK_DEV} bs=1M seek=$((mib - 8)) count=8 oflag=direct status=none
"""
        self.parallel(lambda n: self.exec(n, script, timeout=60), NODES)
        self.drbd_up()

    # ---------------------------------------------------------------------------- faults
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

    def fail_disk(self, vm: str, mode: str = "error", up: int = 0, down: int = 3600) -> None:
        """Switch a node's DRBD backing disk to dm-error (every I/O fails) or dm-flakey
        (`up` seconds healthy, then `down` seconds in which all I/O fails, repeating)."""
        if not VMS[vm].disk:
            raise LabError(f"{vm} has no backing disk")
        if mode == "error":
            table = "0 $S error"
        elif mode == "flakey":
            table = f"0 $S flakey /dev/vdb 0 {up} {down}"
        else:
            raise LabError(f"unknown disk failure mode {mode!r} (error | flakey)")
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

    # ---------------------------------------------------------------------------- status
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

    # ---------------------------------------------------------------------------- down
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
