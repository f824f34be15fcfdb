"""`drbdha fence-peer` as a client of the running daemon (issue 21): the daemon answers on
its control socket with the handler's own code, the key it holds and the silence its peer
watch measured; without a daemon that answers, the handler does the job itself.

Client side: the real CLI against a real ControlServer on a temporary socket whose handler
is a fake daemon (a canned answer). Daemon side: the real ServingRoom._fence_for_handler on
a stand-in for the daemon (just the attributes it reads), asking a real silent port on
127.0.0.1 (test_fence_handler's `silent`)."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from test_chain import in_loop
from test_control import serving
from test_fence_handler import silent
from test_fencing_channel import KEY, LOOPBACK, FakeLog, peer_cfg

from drbdha import cli, control
from drbdha.clock import MonotonicClock
from drbdha.config import Config, DaemonConfig, StorageConfig
from drbdha.daemon.serving import ServingRoom
from drbdha.fencing import handler

NO_CONFIG = "/nonexistent/drbdha.toml"  # read only when no daemon answers


def fence_peer_cli(monkeypatch: pytest.MonkeyPatch, sock: Path) -> int:
    """The CLI, with the daemon's default control socket at `sock`."""
    monkeypatch.setattr(cli, "CONTROL_SOCKET", sock)
    return cli.main(["-c", NO_CONFIG, "fence-peer", "--resource", "r0"])


@pytest.mark.parametrize(
    ("outcome", "code"), [("outdated", 4), ("inconsistent", 3), ("primary", 6), ("unreachable", 5)]
)
def test_the_daemons_answer_is_the_exit_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, outcome: str, code: int
) -> None:
    asked: list[dict[str, Any]] = []

    async def fake_daemon(req: dict[str, Any]) -> dict[str, Any]:
        asked.append(req)
        return {"outcome": outcome, "detail": "from the daemon", "reply": {}}

    async def main() -> int:
        async with serving(tmp_path / "c.sock", fake_daemon):
            return await asyncio.to_thread(fence_peer_cli, monkeypatch, tmp_path / "c.sock")

    assert asyncio.run(main()) == code  # no config read: NO_CONFIG does not exist
    assert asked == [{"command": "fence-peer", "resource": "r0", "config": NO_CONFIG}]


# The handler's way to a daemon that answers, in a fresh interpreter: which of drbdha's
# modules it loaded, and which of the slow ones. Neither the configuration package (schema,
# validators, loader) nor dataclasses (with inspect) nor OpenSSL's hashlib is among them:
# under emulation they were a third of the handler's start-up; nor systemd.journal (with
# uuid and logging): the daemon that answered logs the handler's event.
LOADED = """
import sys
from pathlib import Path
from drbdha import cli
cli.CONTROL_SOCKET = Path(sys.argv[1])
code = cli.main(["-c", sys.argv[2], "fence-peer", "--resource", "r0"])
slow = ("dataclasses", "inspect", "hashlib", "secrets", "systemd.journal", "logging")
heavy = [m for m in slow if m in sys.modules]
print(code, " ".join(sorted(m for m in sys.modules if m.startswith("drbdha"))), "|", *heavy)
"""


def test_the_way_to_the_daemon_loads_no_configuration(tmp_path: Path) -> None:
    async def fake_daemon(_req: dict[str, Any]) -> dict[str, Any]:
        return {"outcome": "outdated", "detail": "from the daemon", "reply": {}}

    async def main() -> str:
        async with serving(tmp_path / "c.sock", fake_daemon):
            argv = [sys.executable, "-c", LOADED, str(tmp_path / "c.sock"), NO_CONFIG]
            done = await asyncio.to_thread(
                subprocess.run, argv, capture_output=True, text=True, timeout=60
            )
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()[-1]

    ours, heavy = asyncio.run(main()).split("|")
    code, loaded = ours.split(" ", 1)
    assert code == "4"
    assert "drbdha.fencing.handler" in loaded.split()
    assert [m for m in loaded.split() if m.startswith("drbdha.config")] == []
    assert heavy.split() == []


@pytest.mark.parametrize("daemon", ["none", "older", "garbled"])
def test_without_a_daemon_that_answers_the_handler_works_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, daemon: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async def older(req: dict[str, Any]) -> dict[str, Any]:
        raise control.CommandError(f"unknown command {req['command']!r}", "unknown_command")

    async def garbled(_req: dict[str, Any]) -> dict[str, Any]:
        return {"outcome": "maybe"}

    async def main() -> int:
        sock = tmp_path / "c.sock"
        if daemon == "none":
            return await asyncio.to_thread(fence_peer_cli, monkeypatch, sock)
        async with serving(sock, older if daemon == "older" else garbled, commands=None):
            return await asyncio.to_thread(fence_peer_cli, monkeypatch, sock)

    # It went on to read the configuration itself (and, this one missing, failed safe).
    assert asyncio.run(main()) == 1
    assert NO_CONFIG in capsys.readouterr().err


DAEMON_CONFIG = "/etc/drbdha/drbdha.toml"  # the file the stand-in daemon runs from


def standin(
    port: int, fence_timeout: float, since: float | None, stalled: float | None = None
) -> Any:
    """ServingRoom's fence path with fakes around it; `stalled`: what the storage room says
    of a recent stall of this node (daemon/stall.py)."""
    peer = dataclasses.replace(peer_cfg(LOOPBACK, port), fence_timeout=fence_timeout)
    config = Config(
        daemon=DaemonConfig(),
        vrrp_instances=(),
        storage={"data": StorageConfig(name="data", drbd_resource="r0")},
        peer=peer,
        source=Path(DAEMON_CONFIG),
    )
    spawned: list[Any] = []
    daemon = SimpleNamespace(
        config=config,
        _peer_key=KEY,
        peer_watch=SimpleNamespace(silent_since=lambda: since),
        clock=MonotonicClock(),
        log=FakeLog(),
        _spawn=lambda _name, work: spawned.append(work),
        chains=SimpleNamespace(distrusts_silence=lambda _resource, _now: stalled),
        inbox=SimpleNamespace(put=spawned.append),
    )
    daemon._same_config = lambda asked: ServingRoom._same_config(daemon, asked)
    return daemon, spawned


async def fence(
    daemon: Any, spawned: list[Any], resource: str = "r0", config: str = DAEMON_CONFIG
) -> dict[str, Any]:
    reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    request = {"command": "fence-peer", "resource": resource, "config": config}
    event = control.ControlRequest(request, reply)
    ServingRoom._fence_for_handler(daemon, event)
    for work in [w for w in spawned if asyncio.iscoroutine(w)]:
        await work
    return reply.result()


@in_loop
async def test_the_daemon_answers_at_once_for_a_peer_its_watch_found_silent() -> None:
    with silent() as port:
        started = time.monotonic()
        daemon, spawned = standin(port, 3.0, since=started - 3.0)
        got = await fence(daemon, spawned)
        took = time.monotonic() - started
    assert got["outcome"] == "unreachable"
    assert took < 1.5  # not a fence_timeout (3 s) of its own
    _, event, fields = daemon.log.events[-1]
    assert (event, fields["outcome"], fields["exit_code"]) == ("fence.peer", "unreachable", 5)
    assert (fields["via"], fields["peer"]) == ("daemon", LOOPBACK)
    assert fields["silent_for_ms"] >= 3000


@in_loop
async def test_after_a_stall_a_silent_peer_is_not_dead() -> None:
    # daemon/stall.py: this node was frozen 4 s; its peer may have fenced it as dead and
    # served. Its silence now must keep DRBD's freeze (exit 1), not end it (exit 5).
    with silent() as port:
        daemon, spawned = standin(port, 0.2, since=time.monotonic() - 1.0, stalled=4.0)
        got = await fence(daemon, spawned)
    assert got["outcome"] == "failed"
    assert "stalled 4.0 s" in got["detail"]
    assert cli_exit(got) == 1


def cli_exit(reply: dict[str, Any]) -> int:
    return handler.Answer(reply["outcome"], reply["detail"]).exit_code


@in_loop
async def test_the_daemon_refuses_what_the_handler_would() -> None:
    daemon, spawned = standin(1, 0.5, since=None)
    got = await fence(daemon, spawned, resource="r9")
    assert (got["outcome"], got["detail"]) == (
        "failed",
        "no [storage] section has drbd_resource = 'r9'",
    )
    daemon._peer_key = None  # the channel not read yet (start-up)
    spawned.clear()
    got = await fence(daemon, spawned)
    assert got["detail"] == "the peer channel is not set up yet"


@in_loop
async def test_a_handler_given_another_configuration_is_not_answered() -> None:
    """`drbdha -c OTHER fence-peer`: another key, another peer, perhaps a wrong secret on
    purpose; the daemon must not answer with its own (the lab's wrong-secret check)."""
    daemon, spawned = standin(1, 0.5, since=None)
    with pytest.raises(control.CommandError, match=r"not from /root/wrong\.toml"):
        await fence(daemon, spawned, config="/root/wrong.toml")
    assert spawned == []
