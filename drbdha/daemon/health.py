"""Health checks while serving: the chain's own (built in) and the admin's
(`[[storage.NAME.checks]]`), with keepalived's track-script semantics.

Rules:
- A check is failing after `fall` failures in a row and healthy again after `rise` successes
  in a row (CheckState, pure). It starts healthy: a check that has not run yet does not
  keep a node out.
- A failing check of weight 0 is a FAULT (`check:NAME`): a master releases its chain and
  the peer takes over; a backup stays out. Otherwise the priority drops by its weight.
- A check that starts failing on a master inhibits this node from taking the service
  (back) for `takeover_damping` seconds: a minimum time between two takeovers on one node
  (drbd-reactor waits 20 s too), so a flapping check cannot move the service back and
  forth, nor a lone node with a broken chain promote and release in a tight loop.
- The admin's checks run all the time (a backup whose check fails must not take over); the
  built-in ones only while the chain is up (they look at what it brought up), and their
  state is cleared when it goes down.
- Every check runs as its own task, bounded by its timeout; results reach the machine only
  through the inbox (CheckResult), like everything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from drbdha.config import CheckConfig, StorageConfig
from drbdha.net import tickle
from drbdha.resources import proc
from drbdha.resources.nfs import ETAB, NFS_PORT, nfsd_threads, unexported

PROBE = ".drbdha-check"  # written and removed below the mountpoint by the filesystem check


@dataclass(frozen=True, slots=True)
class CheckResult:
    instance: str
    check: str
    ok: bool
    detail: str = ""


@dataclass(slots=True)
class CheckState:
    cfg: CheckConfig
    builtin: bool = False
    failing: bool = False
    streak: int = 0  # results in a row that disagree with `failing`
    last_ok: bool | None = None
    last_detail: str = ""
    runs: int = 0

    def result(self, ok: bool, detail: str = "") -> bool:
        """Count one result; True if the check changed between healthy and failing."""
        self.runs += 1
        self.last_ok, self.last_detail = ok, detail
        if ok != self.failing:  # agrees with the current state
            self.streak = 0
            return False
        self.streak += 1
        if self.streak < (self.cfg.rise if self.failing else self.cfg.fall):
            return False
        self.failing, self.streak = not self.failing, 0
        return True

    def reset(self) -> bool:
        """Back to healthy with no history (a built-in check when the chain goes down);
        True if it was failing."""
        was = self.failing
        self.failing, self.streak, self.last_ok, self.last_detail = False, 0, None, ""
        return was


def builtin_checks(storage: StorageConfig) -> list[CheckConfig]:
    if not storage.builtin_checks or storage.mountpoint is None:
        return []
    names = ["filesystem"]
    if storage.nfs_state_dir is not None:
        names += ["nfsd", "exports"]
    # Fall 2: one slow probe under load is not a failover. Rise 1: the chain is back.
    return [CheckConfig(n, (n,), interval=2.0, timeout=10.0, rise=1, fall=2) for n in names]


@dataclass
class Health:
    """One instance's checks: their states, and the penalty and faults they add up to."""

    instance: str
    storage: StorageConfig
    states: dict[str, CheckState] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for c in builtin_checks(self.storage):
            self.states[c.name] = CheckState(c, builtin=True)
        for c in self.storage.checks:
            self.states[c.name] = CheckState(c)

    @property
    def penalty(self) -> int:
        return sum(s.cfg.weight for s in self.states.values() if s.failing)

    def faults(self) -> set[str]:
        return {f"check:{n}" for n, s in self.states.items() if s.failing and s.cfg.weight == 0}

    def status(self) -> list[dict[str, object]]:
        return [
            {
                "name": n,
                "builtin": s.builtin,
                "failing": s.failing,
                "weight": s.cfg.weight,
                "last_ok": s.last_ok,
                "detail": s.last_detail,
                "runs": s.runs,
            }
            for n, s in self.states.items()
        ]


# ---- running them ------------------------------------------------------------------------

Probe = Callable[[], Awaitable[tuple[bool, str]]]


async def run_checks(
    health: Health,
    chain_up: Callable[[], bool],
    put: Callable[[object], None],
    run: proc.Run = proc.run,
) -> None:
    """Run every check of `health` for ever (the daemon cancels it), each on its own
    schedule; results go to `put` (the inbox)."""
    async with asyncio.TaskGroup() as tg:
        for name, state in health.states.items():
            probe = _probe(health.storage, state.cfg, run, builtin=state.builtin)
            tg.create_task(
                _loop(health.instance, name, state, probe, chain_up, put), name=f"check-{name}"
            )


async def _loop(  # noqa: PLR0917 (one check's whole context)
    instance: str,
    name: str,
    state: CheckState,
    probe: Probe,
    chain_up: Callable[[], bool],
    put: Callable[[object], None],
) -> None:
    while True:
        await asyncio.sleep(state.cfg.interval)
        if state.builtin and not chain_up():
            continue
        try:
            async with asyncio.timeout(state.cfg.timeout):
                ok, detail = await probe()
        except TimeoutError:
            ok, detail = False, f"no answer in {state.cfg.timeout:g} s"
        except Exception as e:  # a check that cannot run fails; the daemon goes on
            ok, detail = False, f"{type(e).__name__}: {e}"
        put(CheckResult(instance, name, ok, detail))


def _probe(storage: StorageConfig, cfg: CheckConfig, run: proc.Run, *, builtin: bool) -> Probe:
    if not builtin:

        async def command() -> tuple[bool, str]:
            r = await run(cfg.command)
            return r.ok, "" if r.ok else r.summary()

        return command
    if cfg.name == "filesystem":
        assert storage.mountpoint is not None
        return _Writable(storage.mountpoint / PROBE)
    if cfg.name == "nfsd":
        return _nfsd
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


async def _nfsd() -> tuple[bool, str]:
    threads = nfsd_threads()
    if threads == 0:
        return False, "no nfsd threads"
    if not await asyncio.to_thread(tickle.listening, NFS_PORT):
        return False, f"nothing listens on {NFS_PORT}"
    return True, ""
