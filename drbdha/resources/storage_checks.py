"""What the built-in health checks look at while a chain is up, and the admin's check
commands: each a probe answering (ok, detail). The counting (rise, fall, weight, faults) is
the daemon's (daemon/health.py); these only look.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from drbdha.config import CheckConfig, StorageConfig
from drbdha.resources import proc
from drbdha.resources.nfs import ETAB, NFS_PORT, nfsd_threads, unexported

PROBE = ".drbdha-check"  # written and removed below the mountpoint by the filesystem check

Probe = Callable[[], Awaitable[tuple[bool, str]]]
Listening = Callable[[int], bool]


def probe(
    storage: StorageConfig,
    cfg: CheckConfig,
    run: proc.Run,
    listening: Listening,
    *,
    builtin: bool,
) -> Probe:
    """What one check runs: the admin's command, or a built-in look at the chain.
    `listening`: net/tickle.listening (whether a TCP port has a listener), passed in so
    resources/ needs nothing of net/."""
    if not builtin:

        async def command() -> tuple[bool, str]:
            r = await run(cfg.command)
            return r.ok, "" if r.ok else r.summary()

        return command
    if cfg.name == "filesystem":
        assert storage.mountpoint is not None
        return _Writable(storage.mountpoint / PROBE)
    if cfg.name == "nfsd":
        return _Nfsd(listening)
    return _Exports([str(e.path) for e in storage.exports])


class _Exports:
    """Every export is in etab (nfs.unexported, as the exports step checks after
    `exportfs -r`): a file read, no process every interval on a busy server."""

    def __init__(self, paths: list[str], etab: Path = ETAB) -> None:
        self.paths = paths
        self.etab = etab

    async def __call__(self) -> tuple[bool, str]:
        try:
            missing = await asyncio.to_thread(unexported, self.paths, self.etab)
        except OSError as e:
            return False, f"{self.etab}: {e.strerror}"
        return not missing, f"not exported: {missing}" if missing else ""


class _Writable:
    """The filesystem probe. Its write runs in a thread, which a timeout cannot stop: a
    write blocked on a hung device stays blocked, and no second one is started beside it
    (one stuck thread, not one per interval)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pending: asyncio.Future[tuple[bool, str]] | None = None

    async def __call__(self) -> tuple[bool, str]:
        if self.pending is not None and not self.pending.done():
            return False, f"{self.path}: the last probe write has not returned"
        self.pending = asyncio.get_running_loop().run_in_executor(None, _writable, self.path)
        return await asyncio.shield(self.pending)


def _writable(path: Path) -> tuple[bool, str]:
    """The filesystem takes a synchronous write (mounted, not read-only, its device
    answering): what the clients' writes need."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DSYNC, 0o600)
        try:
            os.write(fd, b"drbdha\n")
        finally:
            os.close(fd)
        path.unlink()
    except OSError as e:
        with contextlib.suppress(OSError):
            path.unlink()
        return False, f"{path}: {e.strerror}"
    return True, ""


class _Nfsd:
    """nfsd has threads and something listens on 2049."""

    def __init__(self, listening: Listening) -> None:
        self.listening = listening

    async def __call__(self) -> tuple[bool, str]:
        if nfsd_threads() == 0:
            return False, "no nfsd threads"
        if not await asyncio.to_thread(self.listening, NFS_PORT):
            return False, f"nothing listens on {NFS_PORT}"
        return True, ""
