"""The DRBD watcher's reader and its cross-check (issue 19 §3): an events2 reader that stays
alive but goes silent is found by comparing its facts with a one-off `drbdsetup status
--json` (8.4: `drbdsetup events2 --now`) and restarted once they disagree for two checks in
a row; a watcher whose run() fails forgets its facts (unknown) until it runs again.

Fakes, nothing here runs drbdsetup: FakeEvents2 is an events2 process that prints a dump and
then goes silent until killed; FakeStatus answers the one-off status command from a
script; FakeLog (test_fencing_rule) collects log events. Checks are called one by one (the
task's sleep between them is not part of what is tested)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import pytest
from test_chain import in_loop
from test_fencing_rule import FakeLog

from drbdha.resources import drbd, drbd_crosscheck
from drbdha.resources.drbd import DrbdChanged, DrbdWatcher
from drbdha.resources.drbd_crosscheck import CrossCheck, essentials, status_argv
from drbdha.resources.proc import Result


def dump(role: str = "Secondary", disk: str = "UpToDate", conn: str = "Connected") -> list[str]:
    """An events2 initial dump of r0 (DRBD 9 --full form) with one peer."""
    peer_disk = "UpToDate" if conn == "Connected" else "DUnknown"
    return [
        f"exists resource name:r0 role:{role} suspended:no force-io-failures:no",
        f"exists device name:r0 volume:0 minor:1 disk:{disk} client:no open:no quorum:yes",
        f"exists connection name:r0 peer-node-id:1 conn-name:n2 connection:{conn} role:Secondary",
        (
            "exists peer-device name:r0 peer-node-id:1 conn-name:n2 volume:0 "
            f"replication:Established peer-disk:{peer_disk} peer-client:no"
        ),
        "exists -",
    ]


def status_json(role: str = "Secondary", disk: str = "UpToDate", conn: str = "Connected") -> str:
    """`drbdsetup status --json r0` for the same state (the keys parse_status_json reads)."""
    peer_disk = "UpToDate" if conn == "Connected" else "DUnknown"
    res = {
        "name": "r0",
        "role": role,
        "suspended": False,
        "force-io-failures": False,
        "devices": [
            {
                "volume": 0,
                "minor": 1,
                "disk-state": disk,
                "client": False,
                "quorum": True,
                "open": False,
            }
        ],
        "connections": [
            {
                "peer-node-id": 1,
                "name": "n2",
                "connection-state": conn,
                "peer-role": "Secondary",
                "peer_devices": [
                    {
                        "volume": 0,
                        "replication-state": "Established",
                        "peer-disk-state": peer_disk,
                        "peer-client": False,
                        "out-of-sync": 0,
                    }
                ],
            }
        ],
    }
    return json.dumps([res])


class FakeEvents2:
    """A `drbdsetup events2` process: prints `lines`, then nothing until killed (or, with
    `fail`, reading it raises that: a bug on our side of the pipe)."""

    def __init__(self, lines: list[str], fail: BaseException | None = None) -> None:
        self.lines = lines
        self.fail = fail
        self.returncode: int | None = None
        self.killed = asyncio.Event()
        self.stdout = self._out()
        self.stderr = None

    async def _out(self) -> Any:
        for line in self.lines:
            yield (line + "\n").encode()
        if self.fail is not None:
            raise self.fail
        await self.killed.wait()  # silent, but alive

    def kill(self) -> None:
        self.returncode = -9
        self.killed.set()

    async def wait(self) -> int:
        await self.killed.wait()
        return -9


class FakeSpawn:
    """Hands out one FakeEvents2 per start of the reader, from `dumps`."""

    def __init__(self, *dumps: list[str], fail: BaseException | None = None) -> None:
        self.dumps = list(dumps)
        self.fail = fail
        self.started: list[FakeEvents2] = []
        self.argv: list[tuple[str, ...]] = []

    async def __call__(self, argv: Sequence[str]) -> FakeEvents2:
        self.argv.append(tuple(argv))
        p = FakeEvents2(self.dumps.pop(0) if self.dumps else [], self.fail)
        self.started.append(p)
        return p


class FakeStatus:
    """The one-off status command: answers (returncode, stdout, stderr) in turn (the last
    one again), or raises what it is given."""

    def __init__(self, *answers: tuple[int, str, str] | BaseException) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, ...]] = []

    async def __call__(self, argv: Sequence[str]) -> Result:
        self.calls.append(tuple(argv))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, BaseException):
            raise answer
        return Result(tuple(argv), *answer)


class Counted:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> None:
        self.n += 1


async def started(spawn: FakeSpawn) -> tuple[DrbdWatcher, list[object], asyncio.Task[None]]:
    events: list[object] = []
    watcher = DrbdWatcher("r0", events.append, FakeLog(), spawn=spawn)
    task = asyncio.create_task(watcher.run())
    await asyncio.wait_for(watcher.synced.wait(), 5)
    return watcher, events, task


def check(watcher: DrbdWatcher, status: FakeStatus, version: Any = (9, 2, 0)) -> CrossCheck:
    return CrossCheck(watcher, FakeLog(), Counted(), run=status, version=lambda: version)


@pytest.fixture(autouse=True)
def _no_restart_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drbd, "RESTART_DELAY", 0.0)


# ---- the silent reader ---------------------------------------------------------------------


@in_loop
async def test_a_silent_reader_is_restarted_after_two_checks_that_disagree() -> None:
    """events2 printed its dump (Secondary) and then fell silent; DRBD was promoted since,
    which only the status command shows."""
    spawn = FakeSpawn(dump(), dump(role="Primary"))
    watcher, events, task = await started(spawn)
    cc = check(watcher, FakeStatus((0, status_json(role="Primary"), "")))
    assert not await cc.check()  # once may be a change that events2 has not printed yet
    assert spawn.started[0].returncode is None
    assert await cc.check()
    assert spawn.started[0].returncode == -9  # the silent one was killed
    assert cc.count.n == 1  # type: ignore[attr-defined]
    stale = [f for _, e, f in cc.log.events if e == "drbd.watcher_stale"]  # type: ignore[attr-defined]
    assert stale[0]["resource"] == "r0"
    assert stale[0]["reader"]["role"] == "Secondary"
    assert stale[0]["status"]["role"] == "Primary"
    # The reader started again and has the truth from its new dump.
    for _ in range(100):
        facts = watcher.facts()
        if facts is not None and facts.role == "Primary":
            break
        await asyncio.sleep(0)
    assert watcher.facts().role == "Primary"  # type: ignore[union-attr]
    assert len(spawn.started) == 2
    assert DrbdChanged("r0", events[0].new, None) in events  # type: ignore[attr-defined]
    task.cancel()


@in_loop
async def test_a_reader_stuck_before_its_dump_ended_is_restarted() -> None:
    spawn = FakeSpawn(dump()[:2], dump())  # no "exists -": never synced
    events: list[object] = []
    watcher = DrbdWatcher("r0", events.append, FakeLog(), spawn=spawn)
    task = asyncio.create_task(watcher.run())
    for _ in range(10):
        await asyncio.sleep(0)
    cc = check(watcher, FakeStatus((0, status_json(), "")))
    assert not await cc.check()
    assert await cc.check()
    await asyncio.wait_for(watcher.synced.wait(), 5)
    task.cancel()


@in_loop
async def test_readers_that_agree_are_left_alone() -> None:
    spawn = FakeSpawn(dump())
    watcher, _, task = await started(spawn)
    status = FakeStatus((0, status_json(), ""))
    cc = check(watcher, status)
    for _ in range(5):
        assert not await cc.check()
    assert status.calls == [("drbdsetup", "status", "--json", "r0")] * 5
    assert len(spawn.started) == 1
    task.cancel()


@in_loop
async def test_one_disagreement_between_agreements_restarts_nothing() -> None:
    spawn = FakeSpawn(dump())
    watcher, _, task = await started(spawn)
    agree, differ = (0, status_json(), ""), (0, status_json(role="Primary"), "")
    cc = check(watcher, FakeStatus(differ, agree, differ, agree))
    for _ in range(4):
        assert not await cc.check()
    assert len(spawn.started) == 1
    task.cancel()


@in_loop
async def test_statistics_and_fields_only_one_source_has_do_not_count() -> None:
    """may_promote/promotion_score (events2 only), out-of-sync, minor, open: not compared."""
    spawn = FakeSpawn([*dump()[:1], dump()[1].replace("open:no", "open:yes"), *dump()[2:]])
    watcher, _, task = await started(spawn)
    cc = check(watcher, FakeStatus((0, status_json(), "")))
    assert not await cc.check()
    assert not await cc.check()
    task.cancel()


@in_loop
async def test_a_status_command_that_fails_decides_nothing() -> None:
    spawn = FakeSpawn(dump())
    watcher, _, task = await started(spawn)
    cc = check(
        watcher,
        FakeStatus(
            (20, "", "Could not connect to 'drbd' generic netlink family"),
            (0, "[{not json", ""),
            FileNotFoundError(2, "No such file or directory", "drbdsetup"),
            TimeoutError(),
        ),
    )
    for _ in range(6):
        assert not await cc.check()
    assert len(spawn.started) == 1
    failed = [e for _, e, _ in cc.log.events if e == "drbd.crosscheck_failed"]  # type: ignore[attr-defined]
    assert len(failed) == 1  # said once, not every check
    task.cancel()


@in_loop
async def test_a_resource_that_is_not_up_agrees_with_a_reader_that_has_none() -> None:
    spawn = FakeSpawn(["exists -"])
    watcher, _, task = await started(spawn)
    cc = check(watcher, FakeStatus((10, "", "r0: No such resource\n")))
    assert not await cc.check()
    assert not await cc.check()
    task.cancel()


@in_loop
async def test_drbd_84_is_read_with_events2_now() -> None:
    """8.4's drbdsetup has no JSON status; its events2 --now prints the dump and exits."""
    lines84 = [
        "exists resource name:r0 role:Secondary suspended:no",
        (
            "exists connection name:r0 peer-node-id:0 conn-name:peer connection:Connected "
            "role:Secondary"
        ),
        "exists device name:r0 volume:0 minor:7 disk:UpToDate",
        (
            "exists peer-device name:r0 peer-node-id:0 conn-name:peer volume:0 "
            "replication:Established peer-disk:UpToDate resync-suspended:no"
        ),
        "exists -",
    ]
    spawn = FakeSpawn(lines84)
    watcher, _, task = await started(spawn)
    primary = "\n".join(lines84).replace("role:Secondary suspended", "role:Primary suspended")
    status = FakeStatus((0, "\n".join(lines84), ""), (0, primary, ""))
    cc = check(watcher, status, version=(8, 4, 11))
    assert not await cc.check()
    assert not await cc.check()
    assert await cc.check()
    assert status.calls[0] == ("drbdsetup", "events2", "--now", "r0")
    task.cancel()


def test_status_argv_by_version() -> None:
    assert status_argv("r0", (9, 2, 4)) == ["drbdsetup", "status", "--json", "r0"]
    assert status_argv("r0", None) == ["drbdsetup", "status", "--json", "r0"]
    assert status_argv("r0", (8, 4, 11)) == ["drbdsetup", "events2", "--now", "r0"]


def test_what_is_compared() -> None:
    """Role, each disk, each connection's state, peer role and peer disks; nothing else."""
    base = drbd_crosscheck.read_status(status_json(), "r0", (9, 2, 0))
    assert essentials(base) == (
        "Secondary",
        ((0, "UpToDate"),),
        ((1, "Connected", "Secondary", ((0, "UpToDate"),)),),
    )
    assert essentials(None) is None
    for changed in (
        status_json(role="Primary"),
        status_json(disk="Outdated"),
        status_json(conn="Connecting"),
    ):
        other = drbd_crosscheck.read_status(changed, "r0", (9, 2, 0))
        assert essentials(other) != essentials(base)


def test_a_read_that_hangs_is_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """A status command that hangs is cut off (STATUS_TIMEOUT) and decides nothing."""
    monkeypatch.setattr(drbd_crosscheck, "STATUS_TIMEOUT", 0.01)

    async def hangs(argv: Sequence[str]) -> Result:
        await asyncio.Event().wait()
        raise AssertionError(argv)

    async def main() -> None:
        watcher, _, task = await started(FakeSpawn(dump()))
        cc = CrossCheck(watcher, FakeLog(), Counted(), run=hangs, version=lambda: (9, 2, 0))
        assert not await cc.check()
        assert not await cc.check()
        assert [e for _, e, _ in cc.log.events] == ["drbd.crosscheck_failed"]  # type: ignore[attr-defined]
        task.cancel()

    asyncio.run(main())


# ---- a reader whose run() fails ------------------------------------------------------------


@in_loop
async def test_a_watcher_that_raises_forgets_its_facts() -> None:
    """A bug in the reader must not leave its last facts standing while the supervisor
    waits to restart it: they read as unknown, as after events2 exited."""
    spawn = FakeSpawn(dump(), fail=RuntimeError("reader bug"))
    events: list[object] = []
    watcher = DrbdWatcher("r0", events.append, FakeLog(), spawn=spawn)
    with pytest.raises(RuntimeError, match="reader bug"):
        await asyncio.wait_for(watcher.run(), 5)
    assert watcher.synced.is_set()
    assert watcher.facts() is None
    assert events[-1] == DrbdChanged("r0", events[0].new, None)  # type: ignore[attr-defined]
    assert spawn.started[0].returncode == -9  # the process was not left behind
