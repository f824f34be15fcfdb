"""The control socket on a real Unix socket: framing, errors, root-only, socket file life."""

# ruff: noqa: ASYNC240  (the tests stat the socket file between awaits; it takes microseconds)

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from drbdha import control
from drbdha.control import (
    CommandError,
    ControlError,
    ControlServer,
    ControlUnavailable,
    request,
)

NOBODY = 65534


async def echo(req: dict[str, Any]) -> dict[str, Any]:
    return {"echo": req}


@contextlib.asynccontextmanager
async def serving(
    path: Path, handler: control.Handler = echo, **kw: Any
) -> AsyncIterator[ControlServer]:
    kw.setdefault("allowed_uids", {0, os.getuid()})  # lets a non-root CI run the round trips
    server = ControlServer(path, handler, **kw)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


async def ask(path: Path, payload: dict[str, Any], wait: float = 5.0) -> dict[str, Any]:
    return await asyncio.to_thread(request, path, payload, wait)


async def raw(path: Path, data: bytes, *, shutdown: bool = False) -> dict[str, Any]:
    """Send bytes as they are and parse the one reply line."""

    def go() -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5.0)
            s.connect(str(path))
            s.sendall(data)
            if shutdown:
                s.shutdown(socket.SHUT_WR)
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        return dict(json.loads(buf))

    return await asyncio.to_thread(go)


@pytest.fixture
def sock(tmp_path: Path) -> Path:
    return tmp_path / "run" / "control.sock"


def test_round_trip_and_file_modes(sock: Path) -> None:
    async def main() -> dict[str, Any]:
        async with serving(sock):
            assert stat.S_IMODE(sock.stat().st_mode) == 0o600
            assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
            return await ask(sock, {"command": "status", "verbose": True})

    assert asyncio.run(main()) == {"ok": True, "echo": {"command": "status", "verbose": True}}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"this is not json\n", "malformed request: not JSON"),
        (b"[1, 2]\n", "malformed request: expected a JSON object"),
        (b'{"verb": "status"}\n', 'malformed request: missing "command"'),
        (b'{"command": 7}\n', 'malformed request: missing "command"'),
        (b"\xff\xfe\n", "malformed request: not JSON"),
    ],
)
def test_malformed_requests_get_errors_and_the_server_lives_on(
    sock: Path, data: bytes, message: str
) -> None:
    async def main() -> tuple[dict[str, Any], dict[str, Any]]:
        async with serving(sock):
            bad = await raw(sock, data)
            good = await ask(sock, {"command": "status"})
            return bad, good

    bad, good = asyncio.run(main())
    assert bad["ok"] is False
    assert bad["code"] == "malformed"
    assert bad["error"].startswith(message)
    assert good["ok"] is True


def test_request_without_newline_before_eof(sock: Path) -> None:
    async def main() -> dict[str, Any]:
        async with serving(sock):
            return await raw(sock, b'{"command": "status"}', shutdown=True)

    assert asyncio.run(main())["code"] == "malformed"


def test_unknown_command(sock: Path) -> None:
    async def main() -> dict[str, Any]:
        async with serving(sock):
            return await ask(sock, {"command": "self-destruct"})

    reply = asyncio.run(main())
    assert reply == {
        "ok": False,
        "code": "unknown_command",
        "error": (
            "unknown command 'self-destruct' "
            "(known: clear-latch, fence-peer, force-failover, status)"
        ),
    }


def test_oversize_request(sock: Path) -> None:
    async def main() -> tuple[dict[str, Any], dict[str, Any]]:
        async with serving(sock):
            big = json.dumps({"command": "status", "pad": "x" * (70 * 1024)}).encode() + b"\n"
            bad = await raw(sock, big)
            return bad, await ask(sock, {"command": "status"})

    bad, good = asyncio.run(main())
    assert bad == {
        "ok": False,
        "code": "too_large",
        "error": "request too large (limit 65536 bytes)",
    }
    assert good["ok"] is True


def test_silent_client_times_out(sock: Path) -> None:
    async def main() -> dict[str, Any]:
        async with serving(sock, read_timeout=0.1):
            return await raw(sock, b"")

    assert asyncio.run(main()) == {
        "ok": False,
        "code": "timeout",
        "error": "no request line within 0.1s",
    }


def test_handler_errors_become_replies(sock: Path) -> None:
    async def handler(req: dict[str, Any]) -> dict[str, Any]:
        if req["command"] == "force-failover":
            raise CommandError("refused: no healthy peer visible", "refused")
        raise RuntimeError("boom")

    async def main() -> list[dict[str, Any]]:
        async with serving(sock, handler):
            return [
                await ask(sock, {"command": "force-failover"}),
                await ask(sock, {"command": "status"}),
            ]

    refused, crashed = asyncio.run(main())
    assert refused == {"ok": False, "code": "refused", "error": "refused: no healthy peer visible"}
    assert crashed == {
        "ok": False,
        "code": "internal",
        "error": "internal error: RuntimeError: boom",
    }


def _ask_a_slow_handler(
    sock: Path, takes: float, reply: dict[str, Any], request: dict[str, Any], **limits: float
) -> dict[str, Any]:
    """Ask `request` of a server (with `limits`) whose handler takes `takes` seconds to
    answer `reply`."""

    async def slow(req: dict[str, Any]) -> dict[str, Any]:
        del req
        await asyncio.sleep(takes)
        return reply

    async def main() -> dict[str, Any]:
        async with serving(sock, slow, **limits):
            return await ask(sock, request)

    return asyncio.run(main())


def test_handler_deadline(sock: Path) -> None:
    request = {"command": "force-failover"}
    assert _ask_a_slow_handler(sock, 10, {}, request, handler_timeout=0.1) == {
        "ok": False,
        "code": "timeout",
        "error": "force-failover did not finish within 0.1s",
    }


def test_long_command_is_not_cut_by_the_read_timeout(sock: Path) -> None:
    request = {"command": "force-failover", "wait": 5}
    reply = _ask_a_slow_handler(sock, 0.3, {"outcome": "done"}, request, read_timeout=0.1)
    assert reply == {"ok": True, "outcome": "done"}


# ---- root only ---------------------------------------------------------------------------


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory anybody may traverse (pytest's tmp_path is 0700 under root)."""
    d = Path(tempfile.mkdtemp(prefix="drbdha-ctl-", dir="/tmp"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        for p in d.iterdir():
            p.unlink()
        d.rmdir()


def _client_as_nobody(path: Path) -> tuple[int, int, int]:
    """Fork a child that drops to nobody and then, on a byte on `go`, connects to `path` and
    writes the reply to `out`. Forked before any event loop runs, and it needs no Python
    binary that nobody can execute. Returns (pid, go, out)."""
    go_r, go_w = os.pipe()
    out_r, out_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover  (child)
        status = 0
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os.read(go_r, 1)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(5)
                s.connect(str(path))
                s.sendall(b'{"command": "status"}\n')
                os.write(out_w, s.makefile("rb").readline())
        except BaseException as e:
            os.write(out_w, repr(e).encode())
            status = 1
        finally:
            os._exit(status)
    os.close(go_r)
    os.close(out_w)
    return pid, go_w, out_r


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as nobody")
def test_non_root_caller_is_refused_whatever_the_file_mode(open_dir: Path) -> None:
    path = open_dir / "control.sock"
    called: list[dict[str, Any]] = []

    async def handler(req: dict[str, Any]) -> dict[str, Any]:
        called.append(req)
        return {}

    pid, go, out = _client_as_nobody(path)

    async def main() -> bytes:
        async with serving(path, handler, allowed_uids=(0,)):
            path.chmod(0o666)  # the file mode no longer protects; SO_PEERCRED must
            os.write(go, b"!")
            os.close(go)
            return await asyncio.to_thread(_read_all, out)

    reply = asyncio.run(main())
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, reply
    assert json.loads(reply) == {
        "ok": False,
        "code": "permission",
        "error": "permission denied: root only",
    }
    assert called == []  # the daemon never saw the request


def test_refused_uid_raises_control_unavailable_in_the_client(sock: Path) -> None:
    async def main() -> None:
        async with serving(sock, allowed_uids=()):  # nobody, not even us, is allowed
            await ask(sock, {"command": "status"})

    with pytest.raises(ControlUnavailable, match="permission denied: root only") as e:
        asyncio.run(main())
    assert e.value.code == "permission"


# ---- the socket file ---------------------------------------------------------------------


def test_stale_socket_file_is_replaced(sock: Path) -> None:
    sock.parent.mkdir(mode=0o700)
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(sock))  # bound, never listening, then gone: what a kill -9 leaves behind
    dead.close()
    assert sock.exists()

    async def main() -> dict[str, Any]:
        async with serving(sock):
            return await ask(sock, {"command": "status"})

    assert asyncio.run(main())["ok"] is True


def test_a_live_daemon_socket_is_not_stolen(sock: Path) -> None:
    async def main() -> None:
        async with serving(sock):
            second = ControlServer(sock, echo)
            with pytest.raises(ControlError, match="already listening"):
                await second.start()
            assert (await ask(sock, {"command": "status"}))["ok"] is True

    asyncio.run(main())


def test_a_regular_file_is_not_deleted(sock: Path) -> None:
    sock.parent.mkdir(mode=0o700)
    sock.write_text("precious")

    async def main() -> None:
        await ControlServer(sock, echo).start()

    with pytest.raises(ControlError, match="not a socket"):
        asyncio.run(main())
    assert sock.read_text() == "precious"


def test_close_removes_the_file(sock: Path) -> None:
    async def main() -> None:
        async with serving(sock):
            assert sock.exists()
        assert not sock.exists()

    asyncio.run(main())


def test_close_leaves_a_successors_socket_alone(sock: Path) -> None:
    async def main() -> None:
        server = ControlServer(sock, echo)
        await server.start()
        sock.unlink()
        other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        other.bind(str(sock))
        try:
            await server.close()
            assert sock.exists()
        finally:
            other.close()

    asyncio.run(main())


# ---- client ------------------------------------------------------------------------------


def test_client_without_daemon(tmp_path: Path) -> None:
    with pytest.raises(ControlUnavailable, match="drbdha is not running"):
        request(tmp_path / "missing.sock", {"command": "status"}, 1.0)


def test_client_with_stale_socket(tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()
    with pytest.raises(ControlUnavailable, match="drbdha is not running"):
        request(path, {"command": "status"}, 1.0)


def test_client_timeout(sock: Path) -> None:
    async def slow(req: dict[str, Any]) -> dict[str, Any]:
        del req
        await asyncio.sleep(5)
        return {}

    async def main() -> None:
        async with serving(sock, slow):
            await ask(sock, {"command": "force-failover"}, wait=0.2)

    with pytest.raises(ControlUnavailable, match=r"no reply from drbdha within 0\.2s") as e:
        asyncio.run(main())
    assert e.value.code == "timeout"


def test_client_imports_stay_light() -> None:
    # The CLI imports these for `status`/`force-failover`; they must not drag in the daemon.
    code = (
        "import sys, drbdha.control, drbdha.status\n"
        "heavy = {'asyncio', 'pyroute2', 'prometheus_client', 'drbdha.daemon', 'drbdha.net'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert out.stdout.strip() == "[]"


# ---- the daemon side: requests become inbox events ---------------------------------------


def test_inbox_handler_hands_requests_to_the_main_loop(sock: Path) -> None:
    inbox: asyncio.Queue[control.ControlRequest] = asyncio.Queue()

    async def main_loop() -> None:
        while True:
            event = await inbox.get()
            if event.reply.done():
                continue  # the client went away
            if event.request["command"] == "status":
                event.reply.set_result({"status": {"daemon": {}, "instances": []}})
            else:
                event.reply.set_exception(CommandError("refused: no healthy peer", "refused"))

    async def main() -> list[dict[str, Any]]:
        loop_task = asyncio.create_task(main_loop())
        try:
            async with serving(sock, control.inbox_handler(inbox.put_nowait)):
                return [
                    await ask(sock, {"command": "status"}),
                    await ask(sock, {"command": "force-failover"}),
                ]
        finally:
            loop_task.cancel()

    status, refused = asyncio.run(main())
    assert status == {"ok": True, "status": {"daemon": {}, "instances": []}}
    assert refused == {"ok": False, "code": "refused", "error": "refused: no healthy peer"}
