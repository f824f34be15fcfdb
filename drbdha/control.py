"""The control socket: a Unix stream socket speaking line-delimited JSON, root only.

Protocol: the client connects, sends ONE line `{"command": "<name>", ...args}\\n` and reads
ONE line back, `{"ok": true, ...}` or `{"ok": false, "error": "<text>", "code": "<code>"}`;
then the server closes the connection. `code` is one of ERROR_CODES, so callers never parse
error text.

Rules:
- The server only frames, authenticates and validates; what a command does is the daemon's
  `handler` (which turns it into an inbox event, so the main loop stays the only writer).
- Callers are checked with SO_PEERCRED (the credentials at connect() time): uid 0 only. The
  socket file is also 0600 in a 0700 directory, but the uid check does not rely on that.
- Nothing a client sends can crash the server: bad JSON, unknown commands, oversize
  requests, slow or vanished clients all end that one connection with an error reply.
  Both sides read JSON with _loads(): nesting past MAX_DEPTH and strings with a lone
  surrogate (a \\ud800 escape: valid JSON, but not UTF-8-encodable, so logging, printing
  or answering it would raise later) are malformed, like text that is not JSON.
- This module imports only the stdlib at import time: the CLI imports it for `request()`
  and must start fast. asyncio is imported by the server code only.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from drbdha.errors import DrbdhaError

if TYPE_CHECKING:
    import asyncio

MAX_REQUEST: Final = 64 * 1024  # bytes, newline included
MAX_REPLY: Final = 16 * 1024 * 1024  # bytes; a status document of many instances fits easily
READ_TIMEOUT: Final = 5.0  # seconds a client has to send its request line
WRITE_TIMEOUT: Final = 5.0  # seconds a client has to take the reply
HANDLER_TIMEOUT: Final = 600.0  # seconds; upper bound even for force-failover --wait
MAX_DEPTH: Final = 64  # JSON nesting levels; a status document has fewer than ten

# Command names shared by the daemon (server side) and the CLI (client side).
STATUS: Final = "status"
FORCE_FAILOVER: Final = "force-failover"
CLEAR_LATCH: Final = "clear-latch"
FENCE_PEER: Final = "fence-peer"  # DRBD's handler asks the daemon (fencing/watch.py)
COMMANDS: Final = (STATUS, FORCE_FAILOVER, CLEAR_LATCH, FENCE_PEER)

ERROR_CODES: Final = frozenset(
    {"permission", "malformed", "too_large", "unknown_command", "timeout", "refused", "internal"}
)

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
_UCRED = struct.Struct("3i")  # struct ucred { pid_t pid; uid_t uid; gid_t gid; }


class ControlError(DrbdhaError):
    """The control socket answered badly, or a request failed on the server side."""

    def __init__(self, message: str, code: str = "internal") -> None:
        self.code = code
        super().__init__(message)


class ControlUnavailable(ControlError):
    """No daemon to talk to: socket missing, nobody listening, no permission, no reply."""


class CommandError(ControlError):
    """Raised by a handler to answer {"ok": false, "error": str(e), "code": e.code}."""


class ControlRequest:
    """Inbox event: a validated request from a root caller. The main loop answers it with
    `reply.set_result({...})` (merged into {"ok": true, ...}) or
    `reply.set_exception(CommandError(...))`, now or on a later turn (force-failover --wait).
    Check `reply.done()` first: the client may have gone and the server cancelled it.

    A plain class, not a dataclass: `dataclasses` (and the `inspect` it loads) would be most
    of what the fence-peer handler imports on its way to the daemon (cli.py)."""

    __slots__ = ("reply", "request")

    def __init__(self, request: dict[str, Any], reply: asyncio.Future[dict[str, Any]]) -> None:
        self.request = request
        self.reply = reply


def inbox_handler(put: Callable[[Any], None]) -> Handler:
    """A ControlServer handler that hands each request to the daemon's inbox as a
    ControlRequest and waits for the main loop's answer."""

    async def handler(request: dict[str, Any]) -> dict[str, Any]:
        import asyncio  # noqa: PLC0415

        reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        put(ControlRequest(request, reply))
        return await reply

    return handler


# ---- client (stdlib only) ---------------------------------------------------------------


def request(
    path: str | os.PathLike[str], payload: dict[str, Any], timeout: float = 10.0
) -> dict[str, Any]:
    """Send one request and return the reply. Raises ControlUnavailable when the daemon
    cannot be reached (or refuses us as non-root), ControlError for a garbled reply. A reply
    with "ok": false for any other reason is returned for the caller to report."""
    path = os.fspath(path)
    line = json.dumps(payload, separators=(",", ":")).encode() + b"\n"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as s:
            s.settimeout(timeout)
            s.connect(path)
            # The server may answer early (refusal, oversize) and close; read that answer.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                s.sendall(line)
            raw = _read_line(s)
    except (FileNotFoundError, ConnectionRefusedError) as e:
        raise ControlUnavailable(
            f"drbdha is not running (no control socket at {path}: {e.strerror})", "unavailable"
        ) from e
    except PermissionError as e:
        raise ControlUnavailable(
            f"permission denied on {path}: the control socket is root only", "permission"
        ) from e
    except TimeoutError as e:
        raise ControlUnavailable(f"no reply from drbdha within {timeout:g}s", "timeout") from e
    except OSError as e:
        raise ControlUnavailable(f"control socket {path}: {e.strerror or e}", "unavailable") from e
    try:
        reply = _loads(raw)
    except ValueError as e:
        raise ControlError(f"malformed reply from drbdha: {raw[:200]!r}", "malformed") from e
    if not isinstance(reply, dict):
        raise ControlError(f"malformed reply from drbdha: {raw[:200]!r}", "malformed")
    if reply.get("ok") is False and reply.get("code") == "permission":
        raise ControlUnavailable(str(reply.get("error", "permission denied")), "permission")
    return reply


def _read_line(s: socket.socket) -> bytes:
    buf = bytearray()
    while b"\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            if not buf:
                raise ConnectionResetError(0, "connection closed without a reply")
            break
        buf += chunk
        if len(buf) > MAX_REPLY:
            raise ControlError("reply from drbdha too large", "too_large")
    return bytes(buf.split(b"\n", 1)[0])


# ---- server -----------------------------------------------------------------------------


def error(message: str, code: str) -> dict[str, Any]:
    return {"ok": False, "error": message, "code": code}


class ControlServer:
    """`await start()`, then serve until `await close()`. One request per connection."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        handler: Handler,
        *,
        commands: Iterable[str] | None = COMMANDS,
        allowed_uids: Iterable[int] = (0,),
        log: Any = None,
        read_timeout: float = READ_TIMEOUT,
        handler_timeout: float = HANDLER_TIMEOUT,
    ) -> None:
        self.path = Path(path)
        self.handler = handler
        self.commands = None if commands is None else frozenset(commands)
        self.allowed_uids = frozenset(allowed_uids)
        self.log = log
        self.read_timeout = read_timeout
        self.handler_timeout = handler_timeout
        self._server: asyncio.AbstractServer | None = None
        self._inode: tuple[int, int] | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        import asyncio  # noqa: PLC0415  (kept out of the CLI's import path)

        _prepare_directory(self.path.parent)
        _remove_stale(self.path)
        self._server = await asyncio.start_unix_server(
            self._serve, path=str(self.path), limit=MAX_REQUEST
        )
        # The directory is 0700, so nobody else could reach the file between bind and chmod.
        self.path.chmod(0o600)
        st = self.path.stat()
        self._inode = (st.st_dev, st.st_ino)
        self._log("info", "control.listening", path=str(self.path))

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        with contextlib.suppress(Exception):
            await self._server.wait_closed()
        self._server = None
        # Remove the file only if it is still ours (a new daemon may have replaced it).
        with contextlib.suppress(FileNotFoundError):
            st = self.path.lstat()
            if (st.st_dev, st.st_ino) == self._inode:
                self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        import asyncio  # noqa: PLC0415

        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            reply = await self._reply(reader, writer)
            writer.write(json.dumps(reply, separators=(",", ":"), default=str).encode() + b"\n")
            async with asyncio.timeout(WRITE_TIMEOUT):
                await writer.drain()
        except (OSError, TimeoutError) as e:
            self._log("debug", "control.client_gone", error=str(e) or type(e).__name__)
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _reply(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> dict[str, Any]:
        pid, uid = _peer(writer)
        # The request line is read (bounded in size and time) even from a caller about to be
        # refused: closing with it unread would hand the client EPIPE/ECONNRESET instead of
        # the reason.
        line = await self._read_request(reader)
        if uid not in self.allowed_uids:
            self._log("warning", "control.refused", pid=pid, uid=uid, reason="not root")
            return error("permission denied: root only", "permission")
        if isinstance(line, dict):
            return line
        req = _parse(line)
        if "error" in req:
            return req
        command = req["command"]
        if self.commands is not None and command not in self.commands:
            known = ", ".join(sorted(self.commands))
            return error(f"unknown command {command!r} (known: {known})", "unknown_command")
        self._log("info", "control.request", command=command, pid=pid, uid=uid)
        return await self._call(req)

    async def _read_request(self, reader: asyncio.StreamReader) -> bytes | dict[str, Any]:
        import asyncio  # noqa: PLC0415

        try:
            async with asyncio.timeout(self.read_timeout):
                return await reader.readline()
        except TimeoutError:
            return error(f"no request line within {self.read_timeout:g}s", "timeout")
        except ValueError:  # StreamReader's limit: the line is longer than MAX_REQUEST
            return error(f"request too large (limit {MAX_REQUEST} bytes)", "too_large")

    async def _call(self, req: dict[str, Any]) -> dict[str, Any]:
        import asyncio  # noqa: PLC0415

        try:
            async with asyncio.timeout(self.handler_timeout):
                reply = await self.handler(req)
        except CommandError as e:
            return error(str(e), e.code)
        except TimeoutError:
            return error(
                f"{req['command']} did not finish within {self.handler_timeout:g}s", "timeout"
            )
        except Exception as e:
            # The daemon keeps serving; the operator gets the reason and the log the trace.
            self._log("exception", "control.handler_failed", command=req["command"])
            return error(f"internal error: {type(e).__name__}: {e}", "internal")
        if not isinstance(reply, dict):
            return error("internal error: handler returned no object", "internal")
        return {"ok": True, **reply}

    def _log(self, level: str, event: str, **fields: Any) -> None:
        if self.log is not None:
            getattr(self.log, level)(event, **fields)


def _parse(line: bytes) -> dict[str, Any]:
    if not line.endswith(b"\n"):
        return error("malformed request: expected one JSON object ending in a newline", "malformed")
    try:
        req = _loads(line)
    except ValueError as e:
        return error(f"malformed request: not JSON ({e})", "malformed")
    if not isinstance(req, dict):
        return error("malformed request: expected a JSON object", "malformed")
    if not isinstance(req.get("command"), str):
        return error('malformed request: missing "command" (a string)', "malformed")
    return req


def _loads(data: bytes) -> Any:
    """json.loads, and ValueError (only) also for what it takes but no reader can use:
    nesting deeper than MAX_DEPTH (json.loads itself raises RecursionError near 1,000) and
    strings, keys included, with a lone surrogate."""
    try:
        doc = json.loads(data)  # UnicodeDecodeError is a ValueError too
    except RecursionError:
        raise ValueError(f"nested deeper than {MAX_DEPTH}") from None
    todo: list[tuple[Any, int]] = [(doc, 0)]
    while todo:
        value, depth = todo.pop()
        if isinstance(value, str):
            try:
                value.encode()
            except UnicodeEncodeError:
                raise ValueError("a string with a lone surrogate") from None
        elif isinstance(value, list | dict):
            if depth == MAX_DEPTH:
                raise ValueError(f"nested deeper than {MAX_DEPTH}")
            items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
            todo.extend((item, depth + 1) for item in items)
    return doc


def _peer(writer: asyncio.StreamWriter) -> tuple[int, int]:
    """(pid, uid) of the connecting process, as the kernel recorded them at connect()."""
    sock = writer.get_extra_info("socket")
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, _gid = _UCRED.unpack(raw)
    return pid, uid


def _prepare_directory(directory: Path) -> None:
    """Create the socket's directory 0700 if missing. An existing one (systemd's
    RuntimeDirectory, or /tmp in a test) is left as it is: changing /tmp's mode would be
    wrong, and SO_PEERCRED is the real check."""
    if not directory.exists():
        directory.mkdir(mode=0o700, parents=True)
        directory.chmod(0o700)  # mkdir's mode is filtered by the umask


def _remove_stale(path: Path) -> None:
    """Remove a socket left by a dead daemon; refuse to steal a live one or to delete
    anything that is not a socket."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ControlError(f"{path} exists and is not a socket; refusing to replace it")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            path.unlink(missing_ok=True)  # nobody listening: stale
            return
        except OSError as e:
            raise ControlError(f"cannot check control socket {path}: {e}") from e
    raise ControlError(f"another drbdha is already listening on {path}")
