"""The events2 reader's cross-check: a reader that stays alive but goes silent (drbdsetup
stuck, a netlink message lost without 8.4's "skipped") would leave the facts wrong for
ever. Every CHECK_INTERVAL seconds the state is read once more, apart from the reader, and
compared with the reader's facts; after two checks in a row that disagree, the reader is
restarted (its new initial dump has the truth), logged as `drbd.watcher_stale` and counted.

Rules:
- The one-off read is `drbdsetup status --json` on DRBD 9 and `drbdsetup events2 --now` on
  8.4, whose drbdsetup has no JSON status (drbd-utils user/v84/drbdsetup.c status_cmd):
  --now prints the initial dump and exits. It runs as a subprocess bounded by
  STATUS_TIMEOUT, in its own task: the loop never waits for it.
- Only what the election and the gates read is compared (`essentials`): our role, each
  volume's disk, each connection's state, the peer's role and each peer volume's disk.
  Statistics, may_promote and the like differ between the two sources by design.
- Two checks, not one: a change can reach the reader a moment after the one-off read saw
  it. A check agrees if the read matches the reader's facts before or after it.
- A read that fails (drbdsetup missing, an error, a timeout, output we cannot parse)
  decides nothing: said once when it starts failing, and the reader is trusted meanwhile.

Why 10 s: a check is one short drbdsetup run (about 3 ms of wall time and 2 ms of CPU per
resource, measured for a trivial command through proc.run), and a silent reader is then
restarted within 20 s of the first change it missed (two checks), 21 s with the reader's
restart delay. The takeover does not depend on it: the DRBD step reads the facts again
before promoting, and DRBD itself refuses to promote a disk that is not good.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from drbdha.resources import proc
from drbdha.resources.drbd import NOT_UP_MESSAGES, DrbdWatcher, kmod_version
from drbdha.resources.drbd_events import Resource, Tracker, parse_events2_line, parse_status_json

CHECK_INTERVAL = 10.0  # seconds between two one-off reads
STATUS_TIMEOUT = 5.0  # seconds a one-off read may take
CHECKS = 2  # checks in a row that must disagree before the reader is restarted

Essentials = tuple[Any, ...]
UNSYNCED = ("the reader has no complete dump",)  # never equal to what a read gives


def status_argv(resource: str, version: tuple[int, ...] | None) -> list[str]:
    if version is not None and version < (9,):
        return ["drbdsetup", "events2", "--now", resource]
    return ["drbdsetup", "status", "--json", resource]


def read_status(text: str, resource: str, version: tuple[int, ...] | None) -> Resource | None:
    """The resource as the one-off read shows it (None: not up); ValueError if malformed."""
    if version is None or version >= (9,):
        return parse_status_json(text).get(resource)
    tracker = Tracker()
    for line in text.splitlines():
        event = parse_events2_line(line)
        if event is not None:
            tracker.feed(event)
    if not tracker.synced:
        raise ValueError("events2 --now ended before its dump did")
    return tracker.resource(resource)


def essentials(res: Resource | None) -> Essentials | None:
    """What must agree between the reader and a one-off read."""
    if res is None:
        return None
    return (
        res.role,
        tuple((d.volume, d.disk) for d in res.devices),
        tuple(
            (
                c.peer_node_id,
                c.connection,
                c.role,
                tuple((v.volume, v.peer_disk) for v in c.volumes),
            )
            for c in res.connections
        ),
    )


class CrossCheck:
    def __init__(
        self,
        watcher: DrbdWatcher,
        log: Any,
        count: Callable[[], None],
        run: proc.Run = proc.run,
        version: Callable[[], tuple[int, ...] | None] = kmod_version,
    ) -> None:
        self.watcher = watcher
        self.log = log
        self.count = count
        self.run = run
        self.version = version
        self.disagreed = 0  # checks in a row whose read disagreed with the reader
        self._failing = False

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(CHECK_INTERVAL)
            await self.check()

    async def check(self) -> bool:
        """One read and comparison; True if the reader was restarted."""
        before = self._reader()
        try:
            async with asyncio.timeout(STATUS_TIMEOUT):
                seen = essentials(await self._read())
        except (TimeoutError, OSError, ValueError) as e:
            self._failed(f"{type(e).__name__}: {e}")
            return False
        self._failing = False
        if seen in (before, self._reader()):
            self.disagreed = 0
            return False
        self.disagreed += 1
        if self.disagreed < CHECKS:
            return False
        self.disagreed = 0
        self._restart(seen)
        return True

    def _reader(self) -> Essentials | None:
        w = self.watcher
        return essentials(w.facts()) if w.tracker.synced else UNSYNCED

    async def _read(self) -> Resource | None:
        version = self.version()
        r = await self.run(status_argv(self.watcher.resource, version))
        if r.returncode == 10 and any(m in r.stderr for m in NOT_UP_MESSAGES):
            return None
        if not r.ok:
            raise ValueError(r.summary())
        return read_status(r.stdout, self.watcher.resource, version)

    def _failed(self, error: str) -> None:
        if not self._failing:
            self.log.warning(
                "drbd.crosscheck_failed",
                resource=self.watcher.resource,
                error=error[-300:],
                action="trusting the events2 reader until a check works again",
            )
        self._failing = True

    def _restart(self, seen: Essentials | None) -> None:
        self.count()
        self.log.warning(
            "drbd.watcher_stale",
            resource=self.watcher.resource,
            reader=_readable(self._reader()),
            status=_readable(seen),
            checks=CHECKS,
            action="restarting drbdsetup events2",
        )
        self.watcher.restart()


def _readable(view: Essentials | None) -> dict[str, Any] | str | None:
    """An essentials tuple for the log."""
    if view is None or view == UNSYNCED:
        return None if view is None else view[0]
    role, disks, conns = view
    return {
        "role": role,
        "disks": [d for _, d in disks],
        "peers": [{"connection": c, "role": r, "disks": [d for _, d in v]} for _, c, r, v in conns],
    }
