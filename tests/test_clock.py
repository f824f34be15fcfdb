"""The clock is handed in (clock.py; the rule is kept by test_layering.py): the system's
clocks behind MonotonicClock, and the modules that used to read them themselves now
reading the one they are given. A StepClock moves on a fixed step at every read, so each
test knows every time the code will see and waits for none of it.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from pathlib import Path

import pytest
from test_drbd_step import FakeCommands, res, step
from test_fencing_channel import KEY, LOOPBACK, FakeLog, in_loop, peer_cfg

from drbdha.chain.step import StepFailed
from drbdha.clock import Clock, MonotonicClock
from drbdha.fencing.server import PeerServer
from drbdha.latches import LatchStore
from drbdha.resources import drbd, filesystem
from drbdha.resources.filesystem import Mount
from drbdha.resources.proc import Result


class StepClock:
    """Both clocks start where given and move by `step` seconds at every read of either."""

    def __init__(self, step: float, start: float = 0.0, wall: float = 1_800_000_000.0) -> None:
        self.step = step
        self.now = start
        self.wall_offset = wall - start

    def monotonic(self) -> float:
        now = self.now
        self.now += self.step
        return now

    def wall(self) -> float:
        return self.monotonic() + self.wall_offset


def test_the_system_clocks() -> None:
    clock: Clock = MonotonicClock()
    before_wall, before = time.time(), time.monotonic()
    wall, mono = clock.wall(), clock.monotonic()
    assert before_wall <= wall <= time.time()
    assert before <= mono <= time.monotonic()


def test_a_latch_is_dated_by_the_wall_clock_it_is_given(tmp_path: Path) -> None:
    path = tmp_path / "latches.json"
    store = LatchStore(path, StepClock(1.0, wall=1_700_000_000.0))
    assert store.set("nfs", "disk", "failed").since == 1_700_000_000.0
    again = LatchStore(path)
    again.load()
    assert again.of("nfs")["disk"].since == 1_700_000_000.0  # the date survives a restart


def test_demote_retries_for_half_its_budget_on_the_given_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(drbd, "DEMOTE_RETRY", 0.0)
    cmds = FakeCommands({("drbdadm", "secondary"): [(11, "Device is held open by someone")]})
    s = step(res(role="Primary"), cmds, version=(8, 4, 11))  # demote_timeout 1.0
    s.clock = StepClock(0.2)  # until = 0.5; tried at 0.2 and 0.4, given up at 0.6
    with pytest.raises(StepFailed, match="demote_failed"):
        asyncio.run(s.stop())
    assert cmds.calls == [("drbdadm", "secondary", "r0")] * 3


def test_unmount_terms_then_kills_on_the_given_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(filesystem, "POLL", 0.0)
    signals: list[signal.Signals] = []

    async def holders(target: str, sig: signal.Signals, run: object, log: object) -> None:
        del target, run, log
        signals.append(sig)

    monkeypatch.setattr(filesystem, "_signal_holders", holders)
    mount = Mount("/srv", "/dev/drbd0", "147:0", "ext4", 1, 0)
    table = (
        '{"filesystems": [{"id": 1, "parent": 0, "target": "/srv", "source": "/dev/drbd0",'
        ' "maj:min": "147:0", "fstype": "ext4"}]}'
    )

    async def run(argv: list[str]) -> Result:
        if argv[0] == "findmnt":
            return Result(tuple(argv), 0, table, "")
        return Result(tuple(argv), 32, "", "target is busy")

    # budget 2 s: TERM before 1.0, KILL from there, given up at 1.8 (reads every 0.25 s).
    unmounting = filesystem.unmount(
        lambda ms: [m for m in ms if m == mount],
        2.0,
        run,
        filesystem.proc.Quiet(),
        clock=StepClock(0.25),
    )
    with pytest.raises(StepFailed, match="unmount_failed"):
        asyncio.run(unmounting)
    assert signals == [signal.SIGTERM] * 3 + [signal.SIGKILL] * 4


@in_loop
async def test_the_fence_server_times_a_request_on_the_given_clock() -> None:
    log = FakeLog()
    server = PeerServer(
        peer_cfg(LOOPBACK, 0), KEY, frozenset, lambda _: None, log, clock=StepClock(0.25)
    )
    await server.start(host=LOOPBACK)
    assert server._server is not None
    port = server._server.sockets[0].getsockname()[1]
    try:

        def half_a_request() -> None:  # then gone (closed at once would be a probe)
            with socket.create_connection((LOOPBACK, port)) as c, c.makefile("rb") as f:
                f.readline()  # the challenge: closing with it unread resets the connection
                c.sendall(b"{")

        await asyncio.to_thread(half_a_request)
        await log.wait_requests()
    finally:
        await server.close()
    _, event, fields = log.requests[0]
    assert (event, fields["reason"], fields["took_ms"]) == ("fence.refused", "no_request", 250.0)
