"""The filesystem step: check the filesystem by the `fsck` policy, mount it; on stop, unmount
every mount of the device, submounts first, killing what holds them.

Rules:
- Idempotent: start with the device already mounted on the mountpoint does nothing; stop with
  nothing of ours mounted does nothing. Another filesystem on the mountpoint is an error, not
  something to mount over.
- A stop that cannot unmount fails: never `umount -l`. A lazy unmount only hides the mount;
  the device stays open under DRBD, `drbdadm secondary` then says "held open", and a promote
  on the peer while this node still has the filesystem cached is the start of a split brain.
- "Ours" is every mount of the device, wherever it is (a bind of a directory on it, such as
  the NFS state directory on /var/lib/nfs, holds the device as much as the main mount), and
  everything mounted on top of those (the mount tree of mountinfo, not path prefixes: a
  mount hidden under ours is not on top of it).
- Holders get TERM until half the stop budget is spent, then KILL (the Filesystem resource
  agent's order). They are found with fuser(1), then signalled here, never this process.
- fsck (fsck(8) exit codes): 0 clean, 1 errors corrected, 2 corrected and a reboot asked for
  (a root filesystem's concern): mount. 4 and above (errors left, operational error,
  cancelled): the takeover fails rather than serve a damaged filesystem.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drbdha.chain.step import StepFailed
from drbdha.clock import Clock, MonotonicClock
from drbdha.config import StorageConfig
from drbdha.resources import proc
from drbdha.resources.drbd_events import Resource

# Filesystems that replay a journal (or the like) at mount: fsck "auto" skips them. Their
# fsck is a no-op (xfs, btrfs) or a full check that costs the takeover minutes for nothing.
JOURNALING = frozenset({"ext3", "ext4", "xfs", "btrfs", "jfs", "reiserfs", "f2fs", "nilfs2"})
EXT = frozenset({"ext2", "ext3", "ext4"})
FSCK_ERRORS_LEFT = 4  # fsck(8): this bit and above mean the filesystem was not fixed
POLL = 0.2  # seconds between unmount attempts while holders go away


@dataclass(frozen=True, slots=True)
class Mount:
    target: str
    source: str
    majmin: str  # "147:0": the filesystem's device as the kernel reports it
    fstype: str
    id: int = 0  # mountinfo's mount ID and its parent's: the mount tree
    parent: int = 0


async def mounts(run: proc.Run = proc.run) -> list[Mount]:
    """Every mount this process sees (findmnt(8), which decodes mountinfo's escapes)."""
    columns = "ID,PARENT,TARGET,SOURCE,MAJ:MIN,FSTYPE"
    r = await run(["findmnt", "--json", "--list", "-o", columns])
    if not r.ok:
        raise StepFailed("findmnt_failed", r.summary())
    rows = json.loads(r.stdout)["filesystems"]
    return [
        Mount(m["target"], m["source"] or "", m["maj:min"], m["fstype"], m["id"], m["parent"])
        for m in rows
    ]


def with_submounts(all_mounts: list[Mount], roots: list[Mount]) -> list[Mount]:
    """`roots` and everything mounted on top of them, children before their parents (the
    order they can be unmounted in). A mount hidden under a root (made before it, on a
    directory the root now covers) is not on top of it and not included."""
    children: dict[int, list[Mount]] = {}
    for m in all_mounts:
        children.setdefault(m.parent, []).append(m)
    out: list[Mount] = []
    seen: set[int] = set()

    def visit(m: Mount) -> None:
        if m.id in seen:
            return
        seen.add(m.id)
        for c in children.get(m.id, []):
            if c.id != m.id:
                visit(c)
        out.append(m)

    for r in roots:
        visit(r)
    return out


@dataclass(frozen=True, slots=True)
class Device:
    path: str  # resolved: /dev/drbd/by-res/r0/0 -> /dev/drbd0
    majmin: str

    @classmethod
    def of(cls, device: str, *, missing_ok: bool = False) -> Device:
        """missing_ok: a device node that is gone (DRBD down) can hold no mount; its mounts
        are then only found by their source path and below the mountpoint."""
        try:
            real = Path(device).resolve(strict=True)
            rdev = real.stat().st_rdev
        except OSError as e:
            if missing_ok:
                return cls(device, "")
            raise StepFailed("no_device", f"{device}: {e.strerror}") from None
        return cls(str(real), f"{os.major(rdev)}:{os.minor(rdev)}")

    def is_source_of(self, m: Mount) -> bool:
        # A bind mount's source reads "/dev/drbd0[/nfs]"; btrfs reports an anonymous
        # MAJ:MIN, so the source path counts too.
        return m.majmin == self.majmin != "" or m.source.split("[", 1)[0] == self.path


def ours(all_mounts: list[Mount], device: Device) -> list[Mount]:
    """The mounts to remove before the device is free: every mount of it, wherever it is,
    and everything mounted on top of those, children first."""
    return with_submounts(all_mounts, [m for m in all_mounts if device.is_source_of(m)])


def needs_fsck(policy: str, fstype: str, has_journal: bool | None) -> bool:
    if policy == "never":
        return False
    if policy == "always":
        return True
    if fstype in EXT:
        return not has_journal  # an ext4 made without a journal has nothing to replay
    return fstype not in JOURNALING


def drbd_device(res: Resource | None, resource: str) -> str:
    """The device of a DRBD resource's only volume, from its events2 facts."""
    if res is None:
        raise StepFailed("no_device", f"DRBD resource {resource} is not up")
    minors = [v.minor for v in res.devices if v.minor is not None]
    if len(minors) != 1:
        raise StepFailed("no_device", f"{resource} has {len(minors)} volumes: set `device`")
    return f"/dev/drbd{minors[0]}"


@dataclass(frozen=True, slots=True)
class FilesystemConfig:
    mountpoint: str
    fstype: str = "auto"
    mount_options: str = ""
    fsck: str = "auto"
    start_timeout: float = 60.0
    stop_timeout: float = 30.0
    device: str | None = None  # configured; None: the DRBD resource's device

    @classmethod
    def of(cls, storage: StorageConfig) -> FilesystemConfig | None:
        if storage.mountpoint is None:
            return None
        return cls(
            str(storage.mountpoint),
            storage.fstype,
            storage.mount_options,
            storage.fsck,
            storage.mount_timeout,
            storage.unmount_timeout,
            str(storage.device) if storage.device else None,
        )


class FilesystemStep:
    name = "filesystem"

    def __init__(
        self,
        cfg: FilesystemConfig,
        device: Callable[[], str],
        run: proc.Run = proc.run,
        log: proc.Log | None = None,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.cfg = cfg
        self.device = device
        self.run = run
        self.log = log or proc.Quiet()
        self.clock = clock or MonotonicClock()
        self.start_timeout = cfg.start_timeout
        self.stop_timeout = cfg.stop_timeout

    def describe(self, up: bool) -> dict[str, dict[str, Any]]:
        cfg = self.cfg
        mount = {"device": cfg.device, "mountpoint": cfg.mountpoint, "fstype": cfg.fstype}
        return {"mount": {**mount, "mounted": up}}

    async def held(self) -> bool:
        device = Device.of(self.device(), missing_ok=True)
        return bool(ours(await mounts(self.run), device))

    async def start(self) -> None:
        device, mp = Device.of(self.device()), self.cfg.mountpoint
        for m in await mounts(self.run):
            if m.target == mp:
                if device.is_source_of(m):
                    return  # already mounted (a restarted daemon): nothing to do
                raise StepFailed("mountpoint_busy", f"{m.source} ({m.fstype}) is on {mp}")
        dev = device.path
        fstype = self.cfg.fstype if self.cfg.fstype != "auto" else await self._probe(dev)
        # Only "auto" needs to know about a journal (dumpe2fs is one more process).
        journal = await self._has_journal(dev, fstype) if self.cfg.fsck == "auto" else None
        if needs_fsck(self.cfg.fsck, fstype, journal):
            await self._fsck(dev, fstype)
        argv = ["mount", "-t", fstype]
        if self.cfg.mount_options:
            argv += ["-o", self.cfg.mount_options]
        # --mkdir: mount(8) creates a missing mountpoint (util-linux 2.38: bookworm has 2.38.1).
        r = await self.run([*argv, "--mkdir", dev, mp])
        if not r.ok:
            raise StepFailed("mount_failed", r.summary())

    async def _probe(self, device: str) -> str:
        r = await self.run(["blkid", "-p", "-o", "value", "-s", "TYPE", device])
        if not r.ok or not r.stdout.strip():
            raise StepFailed("no_filesystem", f"blkid finds no filesystem on {device}")
        return r.stdout.strip()

    async def _has_journal(self, device: str, fstype: str) -> bool | None:
        if fstype not in EXT:
            return None
        r = await self.run(["dumpe2fs", "-h", device])
        if not r.ok:
            raise StepFailed("no_filesystem", r.summary())
        return any(
            line.startswith("Filesystem features:") and "has_journal" in line.split()
            for line in r.stdout.splitlines()
        )

    async def _fsck(self, device: str, fstype: str) -> None:
        # -a: repair what is safe to repair without questions (e2fsck -p), as at boot.
        r = await self.run(["fsck", "-T", "-t", fstype, "-a", device])
        self.log.info("filesystem.fsck", device=device, exit_code=r.returncode)
        if r.returncode >= FSCK_ERRORS_LEFT:
            raise StepFailed("fsck_failed", r.summary(), backoff=True)

    async def stop(self) -> None:
        device = Device.of(self.device(), missing_ok=True)
        await unmount(
            lambda ms: ours(ms, device), self.stop_timeout, self.run, self.log, clock=self.clock
        )


async def unmount(
    select: Callable[[list[Mount]], list[Mount]],
    budget: float,
    run: proc.Run,
    log: proc.Log,
    *,
    clock: Clock | None = None,
) -> None:
    """Unmount what `select` picks from the mount table (deepest first) until nothing is
    left; holders get TERM for half of `budget`, then KILL; StepFailed("unmount_failed")
    just before the budget is spent (the runner's own cut would say less). `budget` is in
    seconds of `clock.monotonic()`."""
    clock = clock or MonotonicClock()
    t0 = clock.monotonic()
    term_until = t0 + budget / 2
    give_up = t0 + budget * 0.9
    while True:
        left = select(await mounts(run))
        if not left:
            return
        errors = []
        for m in left:
            r = await run(["umount", m.target])
            if not r.ok:
                errors.append(r.summary())
        if not errors:
            continue  # read the table again: nothing selected may remain
        now = clock.monotonic()
        if now >= give_up:
            raise StepFailed("unmount_failed", "; ".join(errors))
        sig = signal.SIGTERM if now < term_until else signal.SIGKILL
        for m in left:
            await _signal_holders(m.target, sig, run, log)
        await asyncio.sleep(POLL)


async def _signal_holders(target: str, sig: signal.Signals, run: proc.Run, log: proc.Log) -> None:
    # -M: only if target is still a mountpoint (else fuser would name the holders of
    # whatever filesystem it is on now, such as the root filesystem).
    r = await run(["fuser", "-M", "-m", target])
    pids = sorted({int(p) for p in r.stdout.split() if p.isdigit()} - {os.getpid()})
    if not pids:
        return
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            continue
    log.warning("filesystem.holders_signalled", mount=target, signal=sig.name, pids=pids)
