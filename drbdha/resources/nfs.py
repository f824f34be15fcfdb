"""Kernel nfsd with its state on DRBD: the steps between the filesystem and the VIP.

    nfs_state  bind the state directory (on the DRBD filesystem) on /var/lib/nfs
    nfsd       nfs-server.service and its helpers, nfsd's scope, lease and grace set first
    exports    the chain's exports, with their fixed fsid
    (vip)
    clients    sm-notify from the VIP, the tickles, and the record of client connections

Rules and the reasons for them:
- Everything nfsd and its helpers remember about clients lives in /var/lib/nfs: statd's
  monitor list (sm/, NFSv3 locks), nfsdcld's records of NFSv4 clients (nfsdcld/), etab and
  rmtab. With the state directory bound there, the new master's nfsdcld knows every client
  that may reclaim, and ends the grace period as soon as they all have (nfsdcld does this
  itself); a node-local /var/lib/nfs would refuse their reclaims.
- nfsd must not run before the bind: it would keep a local /var/lib/nfs open. A node where
  nfs-server runs on its own (enabled at boot) is refused with the reason.
- The server scope must be the same on both nodes (RFC 8881 §2.10.4: a client reclaims only
  from a server with the scope it had), and the kernel takes it from the hostname nfsd is
  started under: nfs-server's rpc.nfsd runs in its own UTS namespace with the scope as
  hostname (what the nfsserver resource agent does; nfs-utils 2.6 has no --scope). Lease and
  grace go on rpc.nfsd's command line: it writes them before the first thread starts (the
  kernel refuses them later).
- nfs-server.service is the distribution's own start of the helpers (mountd, statd,
  nfsdcld, idmapd); its drop-in is written to /run, so nothing outlives a reboot.
- Exports go into /etc/exports.d/drbdha-NAME.exports, then `exportfs -r`: an admin's
  `exportfs -ra` (or Debian's reload) re-reads that file instead of dropping exports made
  with `exportfs -o`, which is what happens to the resource agent's.
- Release is the reverse: exports removed and their locks dropped (unlock_filesystem);
  nfs-server and every helper stopped, statd and nfsdcld included (in the classic stack they
  kept /var/lib/nfs busy, the unmount failed and DRBD said "held open"); the bind unmounted
  with what is on top of it.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from drbdha.chain.step import StepFailed
from drbdha.config import ExportConfig
from drbdha.resources import proc
from drbdha.resources.filesystem import Device, Mount, mounts, unmount, with_submounts

VAR_LIB_NFS = "/var/lib/nfs"
NFSD_FS = Path("/proc/fs/nfsd")
NFS_PORT = 2049
UNIT = "nfs-server.service"
NFSD_FS_UNIT = "proc-fs-nfsd.mount"  # nfs-server requires it; its mount loads the module
# Everything that keeps /var/lib/nfs open; stopped with nfs-server (mountd and idmapd are
# bound to it; statd and nfsdcld are not, and would stay).
HELPERS = (
    "rpc-statd-notify.service",
    "rpc-statd.service",
    "nfsdcld.service",
    "nfs-idmapd.service",
    "nfs-mountd.service",
)
# Helpers only some nfs-utils have, stopped too where installed (`systemctl stop` of a unit
# that does not exist fails): fsidd (nfs-utils 2.6.3+, trixie) holds
# /var/lib/nfs/reexpdb.sqlite3 open and is required by nfs-server, not bound to it, so it
# stays after nfs-server stops and keeps the bind busy.
OPTIONAL_HELPERS = ("fsidd.service",)
EXPORTS_D = Path("/etc/exports.d")
# The layout nfs-utils expects (the resource agent's prepare_directory does the same), with
# Debian's modes: drbdha's umask (0077) must not make /var/lib/nfs unreadable to statd.
STATE_DIRS = {
    "sm": 0o700,
    "sm.bak": 0o700,
    "nfsdcld": 0o700,
    "v4recovery": 0o755,
    "rpc_pipefs": 0o555,
}
STATE_FILES = {"etab": 0o644, "rmtab": 0o644}
STATD_OWNED = ("sm", "sm.bak", "state")  # statd drops to the owner of sm/
POLL = 0.05  # seconds between readiness checks


def nfsd_threads() -> int:
    """Running nfsd threads; 0 when nfsd's filesystem is not mounted."""
    try:
        return int((NFSD_FS / "threads").read_text().split()[0] or 0)
    except (OSError, ValueError, IndexError):
        return 0


def _bind_of(device: Device) -> Callable[[list[Mount]], list[Mount]]:
    def select(all_mounts: list[Mount]) -> list[Mount]:
        roots = [m for m in all_mounts if m.target == VAR_LIB_NFS and device.is_source_of(m)]
        return with_submounts(all_mounts, roots)

    return select


def prepare(state_dir: Path, local: Path = Path(VAR_LIB_NFS)) -> None:
    """The state directory's layout, on first use seeded from the local /var/lib/nfs, with
    its owners. Existing content is kept: it is the clients' state."""
    state_dir.mkdir(parents=True, exist_ok=True)
    _mode(state_dir, 0o755)
    for name, mode in STATE_DIRS.items():
        (state_dir / name).mkdir(exist_ok=True)
        _mode(state_dir / name, mode)
    for name, mode in STATE_FILES.items():
        (state_dir / name).touch(exist_ok=True)
        _mode(state_dir / name, mode)
    if (local / "state").exists() and not (state_dir / "state").exists():
        shutil.copy2(local / "state", state_dir / "state")
    for name in STATD_OWNED:
        if (local / name).exists() and (state_dir / name).exists():
            st = (local / name).stat()
            os.chown(state_dir / name, st.st_uid, st.st_gid)


def _mode(path: Path, mode: int) -> None:
    # Only what is ours: sm/ belongs to statd once made, and changing the mode of another
    # user's file needs CAP_FOWNER, which drbdha does not keep.
    st = path.stat()
    if st.st_uid == os.geteuid() and st.st_mode & 0o7777 != mode:
        path.chmod(mode)


class NfsStateStep:
    name = "nfs_state"

    def __init__(
        self,
        state_dir: Path,
        device: Callable[[], str],
        timeout: float,
        run: proc.Run = proc.run,
        log: proc.Log | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.device = device
        self.start_timeout = self.stop_timeout = timeout
        self.run = run
        self.log = log or proc.Quiet()

    def describe(self, up: bool) -> dict[str, dict[str, Any]]:  # noqa: ARG002 (nfsd says it)
        return {"nfsd": {"state_dir": str(self.state_dir)}}

    async def held(self) -> bool:
        device = Device.of(self.device(), missing_ok=True)
        return bool(_bind_of(device)(await mounts(self.run)))

    async def start(self) -> None:
        device = Device.of(self.device())
        if _bind_of(device)(await mounts(self.run)):
            return
        if nfsd_threads() > 0:
            raise StepFailed(
                "nfsd_running",
                "nfsd runs with the local /var/lib/nfs: `systemctl disable --now "
                "nfs-server` (drbdha starts it on the master)",
            )
        try:
            await asyncio.to_thread(prepare, self.state_dir)
        except OSError as e:
            raise StepFailed("state_dir_failed", f"{self.state_dir}: {e}") from None
        r = await self.run(["mount", "--bind", str(self.state_dir), VAR_LIB_NFS])
        if not r.ok:
            raise StepFailed("bind_failed", r.summary())

    async def stop(self) -> None:
        device = Device.of(self.device(), missing_ok=True)
        await unmount(_bind_of(device), self.stop_timeout, self.run, self.log)


DROPIN = "50-drbdha.conf"
UNITS_D = Path("/run/systemd/system")
NOTIFY_UNIT = "rpc-statd-notify.service"


def dropins(scope: str, threads: int, lease: int, grace: int, vip: str) -> dict[Path, str]:
    """Runtime drop-ins (gone at reboot) for nfs-server (rpc.nfsd under the scope, lease
    and grace set) and rpc-statd-notify (sm-notify from the VIP, forced: statd's peers
    reclaim their locks from the name they will reach us at)."""
    # Short options: nfs-utils 2.6.2 prints "--leasetime" in its usage but takes only -L.
    nfsd = f"/usr/sbin/rpc.nfsd -L {lease} -G {grace} {threads}"
    head = "# Written by drbdha for its NFS steps (runtime only: gone at reboot).\n"
    return {
        UNITS_D / f"{UNIT}.d" / DROPIN: (
            f"{head}# rpc.nfsd runs with the NFS server scope as hostname.\n"
            "[Service]\nExecStart=\n"
            f"ExecStart=/usr/bin/unshare --uts /bin/sh -c 'hostname \"$0\" && exec {nfsd}' "
            f"{scope}\n"
        ),
        UNITS_D / f"{NOTIFY_UNIT}.d" / DROPIN: (
            f"{head}# Started with nfs-server it fails (the VIP comes later) and is ignored;\n"
            "# drbdha restarts it once the VIP is up.\n"
            f"[Service]\nExecStart=\nExecStart=-/sbin/sm-notify -f -v {vip}\n"
        ),
    }


class NfsdStep:
    name = "nfsd"

    def __init__(
        self,
        *,
        scope: str,
        threads: int,
        lease: int,
        grace: int,
        vip: str,
        timeouts: tuple[float, float],
        listening: Callable[[int], bool],
        run: proc.Run = proc.run,
    ) -> None:
        """listening(port): something listens on that TCP port (net.tickle's, passed in:
        resources/ does not import net/)."""
        self.dropins = dropins(scope, threads, lease, grace, vip)
        self.scope, self.threads = scope, threads
        self.start_timeout, self.stop_timeout = timeouts
        self.listening = listening
        self.run = run

    def describe(self, up: bool) -> dict[str, dict[str, Any]]:
        return {"nfsd": {"running": up, "threads": self.threads, "scope": self.scope}}

    async def held(self) -> bool:
        r = await self.run(["systemctl", "is-active", "--quiet", UNIT])
        return r.ok or nfsd_threads() > 0

    async def _listening(self) -> bool:
        # In a thread: pyroute2's sock_diag socket runs an event loop of its own.
        return await asyncio.to_thread(self.listening, NFS_PORT)

    async def prepare(self) -> None:
        """At the daemon's start, off the takeover's clock: the drop-ins and the
        daemon-reload they need when they changed (once per boot or per change), and nfsd's
        control filesystem mounted, which loads the nfsd module (1.1 s of the first
        takeover after a boot in the lab's emulated VMs). Neither touches the state
        directory or starts a thread: nfsd serves nothing until the nfsd step starts it."""
        changed = [await asyncio.to_thread(write_if_changed, p, t) for p, t in self.dropins.items()]
        if any(changed):
            await self._check(["systemctl", "daemon-reload"], "daemon_reload_failed")
        if not (NFSD_FS / "threads").exists():
            await self._check(["systemctl", "start", NFSD_FS_UNIT], "nfsd_fs_mount_failed")

    async def start(self) -> None:
        if nfsd_threads() > 0 and await self._listening():
            return
        await self.prepare()  # nothing to do unless the start-time one failed
        await self._check(["systemctl", "start", UNIT], "nfsd_start_failed")
        # Ready means clients get an answer on 2049, not that systemctl returned.
        while True:
            if nfsd_threads() > 0 and await self._listening():
                return
            await asyncio.sleep(POLL)

    async def stop(self) -> None:
        helpers = [*HELPERS, *await self._installed(OPTIONAL_HELPERS)]
        await self._check(["systemctl", "stop", UNIT, *helpers], "nfsd_stop_failed")
        while True:
            if nfsd_threads() == 0:
                return
            await asyncio.sleep(POLL)

    async def _installed(self, units: Sequence[str]) -> list[str]:
        """Those of `units` systemd has a unit file for (asked at each stop: an upgrade of
        nfs-utils may add one)."""
        r = await self.run(["systemctl", "show", "-p", "LoadState", "--value", *units])
        # None of them if systemd cannot say: a helper left running only keeps the bind busy,
        # and the bind's unmount then signals what holds it.
        states = r.stdout.split() if r.ok else ["not-found"] * len(units)
        return [u for u, st in zip(units, states, strict=True) if st != "not-found"]

    async def _check(self, argv: Sequence[str], reason: str) -> None:
        r = await self.run(argv)
        if not r.ok:
            raise StepFailed(reason, r.summary())


def write_if_changed(path: Path, text: str, mode: int = 0o644) -> bool:
    """Atomically; True if the file changed. Compared as bytes: whatever is there (not UTF-8,
    CRLF line ends) is replaced, never a reason to fail. Readable by all (`mode`), as unit
    drop-ins and exports files are: drbdha's umask (0077) would make them root-only, which
    systemd warns about at every reload."""
    data = text.encode()
    try:
        if path.read_bytes() == data:
            if path.stat().st_mode & 0o7777 != mode:
                path.chmod(mode)
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(mode)
    tmp.replace(path)
    return True


def exports_file(chain: str, exports_d: Path = EXPORTS_D) -> Path:
    return exports_d / f"drbdha-{chain}.exports"


ETAB = Path(VAR_LIB_NFS) / "etab"


def unexported(paths: Sequence[str], etab: Path = ETAB) -> list[str]:
    """Which of `paths` are not in etab, the export table exportfs writes and mountd answers
    from (the state directory's, while the chain is up). OSError if it cannot be read; any
    content is read. A line is "PATH<tab>CLIENT(OPTIONS)": one without a path names nothing.
    Its bytes are decoded as a path's (os.fsdecode), so an export whose name is not UTF-8
    matches str() of its Path."""
    text = os.fsdecode(etab.read_bytes())
    listed = {words[0] for line in text.split("\n") if (words := line.split("\t")[0].split())}
    return [p for p in paths if p not in listed]


def exports_text(chain: str, exports: Sequence[ExportConfig]) -> str:
    lines = [f"# Written by drbdha for [storage.{chain}] while this node serves; do not edit."]
    return "\n".join([*lines, *(e.line() for e in exports)]) + "\n"


class ExportsStep:
    name = "exports"

    def __init__(
        self,
        chain: str,
        exports: Sequence[ExportConfig],
        timeout: float,
        run: proc.Run = proc.run,
        exports_d: Path = EXPORTS_D,
    ) -> None:
        self.exports = tuple(exports)
        self.file = exports_file(chain, exports_d)
        self.text = exports_text(chain, exports)
        self.start_timeout = self.stop_timeout = timeout
        self.run = run

    def describe(self, up: bool) -> dict[str, dict[str, Any]]:
        n = len(self.exports)
        return {"exports": {"configured": n, "exported": n if up else 0}}

    async def held(self) -> bool:
        return self.file.exists()

    async def start(self) -> None:
        await asyncio.to_thread(write_if_changed, self.file, self.text)
        r = await self.run(["exportfs", "-r"])
        if not r.ok:
            raise StepFailed("exportfs_failed", r.summary())
        try:
            missing = await asyncio.to_thread(unexported, [str(e.path) for e in self.exports])
        except OSError as e:
            raise StepFailed("export_missing", f"{ETAB}: {e.strerror}") from None
        if missing:
            raise StepFailed("export_missing", f"not exported after exportfs -r: {missing}")

    async def stop(self) -> None:
        await asyncio.to_thread(self.file.unlink, missing_ok=True)
        r = await self.run(["exportfs", "-r"])
        if not r.ok:
            raise StepFailed("exportfs_failed", r.summary())
        # NFSv3 locks (lockd) on the exports: dropped, or the unmount finds them held.
        for e in self.exports:
            await asyncio.to_thread(_write_proc, NFSD_FS / "unlock_filesystem", f"{e.path}\n")
        await self.run(["exportfs", "-f"])


def _write_proc(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except FileNotFoundError:
        pass  # nfsd's filesystem not mounted: nfsd holds nothing
    except OSError as e:
        # EINVAL: nothing of nfsd's on that path (nfsd not running); anything else is news.
        if e.errno != errno.EINVAL:
            raise
