"""DRBD for the chain: the promote/demote step and the events2 watcher.

Rules:
- Promotion is gated (drbd_gates.promotion_refusal) on the freshest events2 facts, checked
  again right before `drbdadm primary`; `--force` is never used to promote.
- A refusal by DRBD itself (exit 17 SS_NO_UP_TO_DATE_DISK, 5 SS_LOWER_THAN_OUTDATED) asks for a
  back-off: the machine stays out of the election for promote_backoff seconds.
- The peer being Primary is waited out (bounded by the step's timeout), not refused: after a
  force-failover or a resignation the old master is still demoting when we start.
- Demote escalates: `drbdadm secondary` (retried for half the stop budget: openers come and
  go), then `drbdsetup secondary --force` where the kernel module has it (DRBD >= 9.1.7),
  then a failed stop that the daemon escalates by policy.
- The peer probe: when VRRP says the master is gone and DRBD still shows it a connected
  Primary, one `drbdadm primary` makes DRBD check the peer at once. DRBD refuses it while
  the peer is Primary (single-primary rule) but pings the peer because of it and tries once
  more after its ping-timeout (DRBD 8.4's drbd_set_role, seen in the lab's kernel logs), so a
  dead peer is dropped in about half a second instead of after ping-int + ping-timeout of
  silence, and the retry may already promote us (through the fence-peer handler, as any
  promote). DRBD 9 refuses the same way; its ping is not measured here, and a refusal
  only means the takeover waits for DRBD's own detection, as without the probe.
- The watcher restarts `drbdsetup events2` whenever it exits; the tracker starts over from
  the new initial dump, and until that dump ends the facts are unknown. A reader that stays
  alive but silent is found by drbd_crosscheck.py, which restarts it the same way. A
  watcher whose run() fails (a bug) forgets its facts too: unknown until it runs again.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from drbdha.chain.step import StepFailed
from drbdha.clock import Clock, MonotonicClock
from drbdha.config import StorageConfig
from drbdha.resources import proc
from drbdha.resources.drbd_events import DISK_STATES, Resource, Tracker, parse_events2_line
from drbdha.resources.drbd_gates import promotion_refusal

Run = proc.Run

# drbdsetup's exit codes for refused state changes (drbd-utils user/v9/drbdsetup.c).
REFUSAL_EXITS = {17: "no_uptodate_disk", 5: "lower_than_outdated", 16: "no_local_disk"}
DEMOTE_RETRY = 0.5  # seconds between demote attempts while the device is held open
WAIT_POLL = 0.05  # seconds between looks at the facts while the peer demotes
RESTART_DELAY = 1.0  # seconds before events2 is started again after it exited
NOT_UP_MESSAGES = ("Unknown resource", "No such resource", "Device minor not allocated")


def kmod_version(proc_drbd: Path = Path("/proc/drbd")) -> tuple[int, ...] | None:
    """The loaded module's version from /proc/drbd's first line ("version: 9.2.4 (api:2..."),
    None when there is none: no module, or a first line that does not say. Never raises:
    read as bytes (the file need not be UTF-8), numbers of at most 9 ASCII digits."""
    try:
        first = proc_drbd.read_bytes().split(b"\n", 1)[0]
    except OSError:
        return None
    m = re.match(rb"version:\s*([0-9]{1,9})\.([0-9]{1,9})\.([0-9]{1,9})(?![0-9])", first)
    return tuple(int(x) for x in m.groups()) if m else None


def events2_argv(resource: str, version: tuple[int, ...] | None) -> list[str]:
    """DRBD 9 gets --full (every change line complete); 8.4's drbdsetup refuses --full
    (exit 20) and prints deltas, which the tracker merges."""
    if version is not None and version < (9,):
        return ["drbdsetup", "events2", resource]
    return ["drbdsetup", "events2", "--full", resource]


def has_secondary_force(version: tuple[int, ...] | None) -> bool:
    return version is not None and version >= (9, 1, 7)


@dataclass(frozen=True, slots=True)
class Probed:
    """What the peer probe's `drbdadm primary` did: "promoted" (DRBD dropped the dead peer
    and the retry went through), "refused" (the peer still answers, or a gate of DRBD's
    own), "failed" (no answer in time, or drbdadm could not run)."""

    outcome: str
    detail: str


_promote_locks: dict[str, asyncio.Lock] = {}


def promote_lock(resource: str) -> asyncio.Lock:
    """One `drbdadm primary` of ours at a time per resource: the probe's and the takeover's
    race otherwise (DRBD fails the second with exit 20 while the first is in the fence-peer
    handler, and the takeover backs off)."""
    return _promote_locks.setdefault(resource, asyncio.Lock())


async def probe_peer(resource: str, run: Run = proc.run) -> Probed:
    """The caller bounds it with asyncio.timeout() (DRBD's retry can run the fence-peer
    handler, as a promote does). DRBD 8.4 spends its one retry on the refusal, so a probe
    that made DRBD drop a dead peer still ends "refused" when the fence-peer handler ran in
    it (the peer is Outdated then, and the takeover's own promote goes straight through)."""
    try:
        async with promote_lock(resource):
            r = await run(["drbdadm", "primary", resource])
    except OSError as e:  # drbdadm missing or not executable
        return Probed("failed", str(e))
    if r.ok:
        return Probed("promoted", "the peer was dropped and the promote went through")
    return Probed("refused", r.summary())


class PeerWatch(Protocol):
    """fencing/watch.py's, passed in by the composition: asks the peer's fence channel
    while this step runs, so the fence-peer handler DRBD starts finds the silence measured."""

    def begin(self) -> None: ...
    def end(self) -> None: ...


class DrbdStep:
    name = "drbd"

    def __init__(
        self,
        storage: StorageConfig,
        facts: Callable[[], Resource | None],
        split_brain_latched: Callable[[], bool],
        run: Run = proc.run,
        version: Callable[[], tuple[int, ...] | None] = kmod_version,
        *,
        clock: Clock | None = None,
        peer_watch: PeerWatch | None = None,
    ) -> None:
        self.resource = storage.drbd_resource
        self.peer_watch = peer_watch
        self.start_timeout = storage.promote_timeout
        self.stop_timeout = storage.demote_timeout
        self.facts = facts
        self.split_brain_latched = split_brain_latched
        self.run = run
        self.version = version
        self.clock = clock or MonotonicClock()

    async def start(self) -> None:
        if self.peer_watch is None:
            return await self._promote()
        self.peer_watch.begin()
        try:
            return await self._promote()
        finally:
            self.peer_watch.end()

    async def _promote(self) -> None:
        await self._wait_for_peer_to_demote()
        async with promote_lock(self.resource):  # after a peer probe still running
            res = self.facts()
            if res is not None and res.role == "Primary":
                return  # already Primary (a restarted daemon, the probe): no second promote
            why = promotion_refusal(res, split_brain_latched=self.split_brain_latched())
            if why is not None:
                raise StepFailed(why, "promotion gate", backoff=True)
            r = await self.run(["drbdadm", "primary", self.resource])
        if r.ok:
            return
        reason = REFUSAL_EXITS.get(r.returncode, "promote_refused")
        raise StepFailed(reason, r.summary(), backoff=True)

    async def _wait_for_peer_to_demote(self) -> Resource | None:
        while True:
            res = self.facts()
            if res is None or not res.peer_primary:
                return res
            await asyncio.sleep(WAIT_POLL)

    async def stop(self) -> None:
        # A short-lived opener (a udev probe, a backup's blkid) refuses the demote with
        # "held open" for a moment: retry for half the budget before escalating.
        until = self.clock.monotonic() + self.stop_timeout / 2
        while True:
            r = await self.run(["drbdadm", "secondary", self.resource])
            if r.ok:
                return
            if self.clock.monotonic() >= until:
                break
            await asyncio.sleep(DEMOTE_RETRY)
        first = r.summary()
        if has_secondary_force(self.version()):
            # DRBD >= 9.1.7: demote even with openers (their I/O fails from here on).
            f = await self.run(["drbdsetup", "secondary", "--force", self.resource])
            if f.ok:
                return
            first = f"{first}; {f.summary()}"
        raise StepFailed("demote_failed", first)

    async def held(self) -> bool:
        """Only a definite answer reads as not held: Secondary, or DRBD saying the resource
        is not up or not defined. Anything else (drbdadm missing, another error, output we
        do not know) is unknown, and unknown counts as held (chain/runner.py)."""
        try:
            r = await self.run(["drbdadm", "role", self.resource])
        except OSError:
            return True
        # 9: "Primary"; 8.4: "Primary/Secondary" (ours first).
        if r.ok:
            return not r.stdout.strip().startswith("Secondary")
        return not _not_up(r)


def _not_up(r: proc.Result) -> bool:
    """DRBD's own words for a resource that is not up (drbd-utils b4b2f5b9): drbdsetup exits
    10 with "Unknown resource" (9, role_cmd) or "No such resource" (9, status_cmd), or with
    "Device minor not allocated" (8.4, print_config_error of ERR_MINOR_INVALID); drbdadm
    exits 1 (E_USAGE) with "not defined in your config" for a resource it cannot bring up.
    The exit code alone says too little: 10 is also any other kernel error on 8.4 and an
    invalid config, 1 any usage error."""
    text = r.stderr + r.stdout
    if r.returncode == 10:
        return any(m in text for m in NOT_UP_MESSAGES)
    return r.returncode == 1 and "not defined in your config" in text


@dataclass(frozen=True, slots=True)
class DrbdChanged:
    """Inbox event: the facts about `resource` changed (new None: unknown, e.g. events2
    exited and its initial dump has not been seen again)."""

    resource: str
    old: Resource | None
    new: Resource | None


Spawn = Callable[[Sequence[str]], Awaitable[asyncio.subprocess.Process]]
"""What starts the events2 reader: spawn_events2 below, or a fake stream in unit tests."""


async def spawn_events2(argv: Sequence[str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=proc.child_env(),
    )


class DrbdWatcher:
    """Runs `drbdsetup events2` for one resource and feeds the tracker; every meaningful
    change goes to the inbox as DrbdChanged (edges only: the tracker compares snapshots)."""

    def __init__(
        self,
        resource: str,
        report: Callable[[object], None],
        log: Any,
        argv: Sequence[str] | None = None,
        spawn: Spawn = spawn_events2,
    ) -> None:
        self.resource = resource
        self.report = report
        self.log = log
        self.argv = list(argv) if argv else None
        self.spawn = spawn
        self.tracker = Tracker()
        self.restarts = 0
        self.synced = asyncio.Event()  # set once the first initial dump is complete
        self._proc: asyncio.subprocess.Process | None = None

    def facts(self) -> Resource | None:
        return self.tracker.resource(self.resource) if self.tracker.synced else None

    async def run(self) -> None:
        try:
            while True:
                await self._one_stream()
                self.restarts += 1
                await asyncio.sleep(RESTART_DELAY)
        except Exception:
            self._forget()  # nobody reads events2 until the supervisor starts us again
            raise

    def restart(self) -> None:
        """End the current events2 reader; run() starts a new one, whose dump starts the
        facts over (what it missed, if anything, is in there)."""
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()

    def _forget(self) -> None:
        before = self.facts()
        self.tracker.reset()
        if before is not None:
            self.report(DrbdChanged(self.resource, before, None))

    async def _one_stream(self) -> None:
        self._forget()
        argv = self.argv or events2_argv(self.resource, kmod_version())
        try:
            p = await self.spawn(argv)
        except OSError as e:
            self.log.error("drbd.events_failed", resource=self.resource, error=str(e))
            return
        assert p.stdout is not None
        self._proc = p
        try:
            async for raw in p.stdout:
                self._line(raw.decode(errors="replace"))
        finally:
            if p.returncode is None:
                p.kill()
            rc = await p.wait()
            err = (await p.stderr.read()).decode(errors="replace").strip() if p.stderr else ""
        self.log.warning(
            "drbd.events_exited", resource=self.resource, returncode=rc, error=err[-300:]
        )

    def _line(self, line: str) -> None:
        try:
            event = parse_events2_line(line)
        except ValueError as e:
            self.log.warning("drbd.events_unparsed", line=line.strip()[:200], error=str(e))
            return
        if event is None:
            return
        was_synced = self.tracker.synced
        before = self.facts()
        changes = self.tracker.feed(event)
        if was_synced and not self.tracker.synced:
            # 8.4's "- skipped N": netlink dropped events, so what we hold may be stale.
            # Unknown until a fresh initial dump, which a restart of events2 gives.
            self.report(DrbdChanged(self.resource, before, None))
            self.restart()
            return
        if not self.tracker.synced:
            return
        if not was_synced:
            # The initial dump is complete: one event with the whole state.
            self.synced.set()
            self.report(DrbdChanged(self.resource, None, self.facts()))
            return
        for old, new in changes:
            res = new or old
            if res is not None and res.name == self.resource:
                self.report(DrbdChanged(self.resource, old, new))


# ---- outdating this node's copy (fencing) --------------------------------------------------

BELOW_OUTDATED = frozenset(DISK_STATES[: DISK_STATES.index("Outdated")])
STILL_UPTODATE = "outdate answered 0, the disk is still UpToDate"  # 8.4 while connected
NOT_UP = "not up"  # what _disk says of a resource that is not configured in the kernel


@dataclass(frozen=True, slots=True)
class Outdated:
    """What `outdate` did: outcome is one of fencing.wire.OUTCOMES. `reconnect`: the link
    was dropped to outdate, and `drbdadm connect` is due (after answering the peer)."""

    outcome: str
    disk: str | None
    detail: str
    reconnect: bool = False
    link: str = ""  # what was dropped, for `drbdadm connect`: the resource, or RES:PEER


async def outdate(
    resource: str,
    facts: Callable[[], Resource | None] = lambda: None,
    run: Run = proc.run,
    *,
    drop_link: bool = True,
) -> Outdated:
    """Mark this node's copy Outdated, so DRBD refuses to promote it until a resync from the
    peer; DRBD refuses on a Primary (exit 17). Checked with `drbdadm dstate` afterwards.

    DRBD 8.4's outdate on a Connected Secondary answers 0 and changes nothing. With
    `drop_link` (the Primary asking us has lost the link already; ours has not timed out
    yet) the connection is dropped first; the caller reconnects once it has answered, so
    the copy resyncs as soon as the link is back. Without it, a copy that is connected
    again is left as it is."""
    res = facts()
    connected = res is not None and res.connected
    if connected and not drop_link:
        return Outdated("failed", res.worst_disk if res else None, "connected again: left as is")
    link = data_link(resource, res)
    result = await _outdate_once(resource, run, drop=connected, link=link, res=res)
    if result.detail == STILL_UPTODATE and not connected and drop_link:
        # The facts were behind (or there were none): it was still connected.
        result = await _outdate_once(resource, run, drop=True, link=link, res=res)
    return result


def data_link(resource: str, res: Resource | None) -> str:
    """What drbdadm drops to outdate: the resource, or on DRBD 9 beside a diskless
    tiebreaker only the connection to the peer with data (`r0:node1`): dropping the whole
    resource would drop the tiebreaker's connection too, and with it this node's quorum."""
    if res is None:
        return resource
    data = [c for c in res.connections if not (c.volumes and all(v.peer_client for v in c.volumes))]
    if len(data) == 1 and len(res.connections) > 1 and data[0].conn_name:
        return f"{resource}:{data[0].conn_name}"
    return resource


def outdate_commands(resource: str, res: Resource | None) -> list[list[str]]:
    """`drbdadm outdate RES` on 8.4 (or without facts); on DRBD 9 `drbdsetup outdate MINOR`
    for each volume. drbd-utils 9.34's drbdadm passes drbdsetup `outdate r0 0`, which
    drbdsetup refuses ("Cannot determine minor device number of device 'r0'"), and then
    runs drbdmeta on the attached disk (exit 20): it never outdates a running DRBD 9
    resource (seen in the lab; drbdsetup answers 17 and 5 as drbdadm does)."""
    devices = res.devices if res else ()
    minors = [d.minor for d in devices if d.minor is not None]
    if not minors or all(d.quorum is None for d in devices):  # 8.4 has no quorum field
        return [["drbdadm", "outdate", resource]]
    return [["drbdsetup", "outdate", str(m)] for m in minors]


async def reconnect(link: str, run: Run = proc.run) -> proc.Result:
    """After a link dropped to outdate (Outdated.link): DRBD keeps trying to connect from
    here, and resyncs the copy once the replication path is back."""
    return await run(["drbdadm", "connect", link])


async def _outdate_once(
    resource: str, run: Run, *, drop: bool, link: str = "", res: Resource | None = None
) -> Outdated:
    # --force: drop it at once. A graceful disconnect waits for the peer over the very link
    # that failed (8.4: "did not terminate within 5 seconds", exit 20, retried for 16 s).
    link = link or resource
    if drop and not (d := await run(["drbdadm", "disconnect", "--force", link])).ok:
        return Outdated("failed", None, d.summary(), reconnect=True, link=link)
    for cmd in outdate_commands(resource, res):
        r = await run(cmd)
        if not r.ok:
            break
    if r.returncode == 17:
        return Outdated("primary", None, r.summary(), reconnect=drop, link=link)
    disk = await _disk(resource, run)
    if r.returncode == 5:  # SS_LOWER_THAN_OUTDATED: already Inconsistent or worse
        return Outdated("inconsistent", disk, r.summary(), reconnect=drop, link=link)
    if not r.ok:
        return Outdated("failed", disk, r.summary(), reconnect=drop, link=link)
    if disk in ("Outdated", NOT_UP):  # not up: drbdadm outdated the metadata (drbdmeta)
        return Outdated("outdated", disk, "outdated", reconnect=drop, link=link)
    if disk is None:
        return Outdated("failed", None, "drbdadm dstate failed: the outcome is unknown", drop, link)
    if disk in BELOW_OUTDATED:
        return Outdated("inconsistent", disk, f"disk is {disk}", reconnect=drop, link=link)
    still = STILL_UPTODATE if disk == "UpToDate" else f"disk is still {disk}"
    return Outdated("failed", disk, still, reconnect=drop, link=link)


async def _disk(resource: str, run: Run) -> str | None:
    """The worst local disk state from `drbdadm dstate` ("UpToDate/DUnknown" on 8.4, one line
    per volume); NOT_UP when the resource is not up (exit 10, "Device minor not allocated" on
    8.4, "No such resource" on 9); None when dstate failed otherwise."""
    r = await run(["drbdadm", "dstate", resource])
    if r.returncode == 10:
        return NOT_UP
    if not r.ok:
        return None
    disks = [ln.split("/")[0].strip() for ln in r.stdout.splitlines() if ln.strip()]
    # An unknown word ranks below Diskless, as in Resource.worst_disk.
    return min(disks, key=lambda d: DISK_STATES.index(d) if d in DISK_STATES else -1, default=None)
