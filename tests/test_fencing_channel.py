"""The peer channel end to end on loopback: a real PeerServer (fencing/server.py) in the
test's event loop, asked by the real handler (fencing/handler.ask) in a thread, over TCP on
127.0.0.1 with an ephemeral port.

Fakes: FakeDrbdadm stands in for drbdadm (it records every argv and answers scripted
Results; DRBD cannot run here), FakeLog collects the server's log events, and the DRBD
facts are fixed Resource snapshots (test_drbd_step.res). The peers that misbehave (one
that never challenges, one that forges or alters its result) are small listeners written
here; raw-socket tests play the client to replay a recorded request.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from test_chain import in_loop  # test_clock takes it from here
from test_drbd_step import res

from drbdha.config import PeerConfig
from drbdha.fencing import handler, wire
from drbdha.fencing import server as fencing_server
from drbdha.fencing.server import PeerServer
from drbdha.resources.drbd_events import Resource
from drbdha.resources.proc import Result

KEY = b"s" * 44
LOOPBACK = "127.0.0.1"
FENCE_TIMEOUT = 0.5

OUTDATE: tuple[str, ...] = ("drbdadm", "outdate", "r0")
DSTATE: tuple[str, ...] = ("drbdadm", "dstate", "r0")
DISCONNECT: tuple[str, ...] = ("drbdadm", "disconnect", "--force", "r0")
CONNECT: tuple[str, ...] = ("drbdadm", "connect", "r0")

DISCONNECTED = res(connection="Connecting", peer_role="Unknown", peer_disk="DUnknown")


class FakeDrbdadm:
    """Records every argv; answers each from its script (argv -> [(rc, stdout)], taken in
    order, the last one repeating); an unscripted command answers rc 0 and no output."""

    def __init__(self, script: dict[tuple[str, ...], list[tuple[int, str]]] | None = None) -> None:
        self.script = {argv: list(answers) for argv, answers in (script or {}).items()}
        self.calls: list[tuple[str, ...]] = []

    async def __call__(self, argv: Sequence[str]) -> Result:
        key = tuple(argv)
        self.calls.append(key)
        answers = self.script.get(key)
        rc, out = (answers.pop(0) if len(answers) > 1 else answers[0]) if answers else (0, "")
        return Result(key, rc, out, "" if rc == 0 else "State change failed")


class FakeLog:
    """Collects (level, event, fields) for each log call."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []
        self.changed = asyncio.Event()

    def __getattr__(self, level: str) -> Callable[..., None]:
        if level not in ("debug", "info", "warning", "error", "critical"):
            raise AttributeError(level)
        return functools.partial(self._record, level)

    def _record(self, level: str, event: str, **fields: Any) -> None:
        self.events.append((level, event, fields))
        self.changed.set()

    @property
    def requests(self) -> list[tuple[str, str, dict[str, Any]]]:
        return [e for e in self.events if e[1] != "fence.listening"]

    async def wait_requests(self, n: int = 1, limit: float = 5.0) -> None:
        """Until the server has logged `n` requests (it logs once its work is done, the
        reconnect after the reply included)."""
        async with asyncio.timeout(limit):
            while len(self.requests) < n:
                self.changed.clear()
                await self.changed.wait()


@dataclass
class Served:
    client: PeerConfig  # what the asking side is configured with: the server's address
    cmds: FakeDrbdadm
    log: FakeLog
    server: PeerServer

    async def ask(self, key: bytes = KEY, resource: str = "r0") -> handler.Answer:
        return await asyncio.to_thread(handler.ask, self.client, key, resource)


def peer_cfg(address: str, port: int) -> PeerConfig:
    return PeerConfig(
        address=ip_address(address),
        secret_file=Path("/nonexistent/fence.key"),
        port=port,
        fence_timeout=FENCE_TIMEOUT,
    )


@contextlib.asynccontextmanager
async def serving(
    facts: Resource | None,
    cmds: FakeDrbdadm | None = None,
    *,
    peer: str = LOOPBACK,
    managed: frozenset[str] = frozenset({"r0"}),
    host: str = LOOPBACK,
    count: Callable[[str, str], None] | None = None,
    wrote_alone: bool = False,
) -> AsyncIterator[Served]:
    """A PeerServer on `host` that serves `peer`; port 0 lets the kernel pick one. `count`
    is told each request's result and reason, as the daemon's metric is."""
    cmds = cmds or FakeDrbdadm()
    log = FakeLog()
    server = PeerServer(
        peer_cfg(peer, 0),
        KEY,
        lambda: managed,
        lambda r: facts if r == "r0" else None,
        log,
        wrote_alone=lambda r: wrote_alone and r == "r0",
        run=cmds,
        count=count,
    )
    await server.start(host=host)
    assert server._server is not None
    port = server._server.sockets[0].getsockname()[1]
    try:
        yield Served(peer_cfg(host, port), cmds, log, server)
    finally:
        await server.close()


def one_request(log: FakeLog) -> tuple[str, str, dict[str, Any]]:
    assert len(log.requests) == 1, log.requests
    return log.requests[0]


# ---- outcomes --------------------------------------------------------------------------


OUTDATED = [(0, "Outdated/DUnknown\n")]  # what `drbdadm dstate` answers
UPTODATE = (0, "UpToDate/DUnknown\n")
INCONSISTENT = [(0, "Inconsistent/DUnknown\n")]
DISKLESS = [(0, "Diskless\n")]
RC10 = [(10, "")]  # an exit code DRBD gives no meaning here
PRIMARY = res(role="Primary", connection="Connecting")
ASKED = [OUTDATE, DSTATE]
DROPPED = [DISCONNECT, OUTDATE, DSTATE, CONNECT]
RETRIED = [*ASKED, *DROPPED]  # 8.4's silent no-op, then again without the link
CASES = {  # facts, drbdadm's answers, outcome, exit code, the commands run
    "disconnected-secondary": (DISCONNECTED, {DSTATE: OUTDATED}, "outdated", 4, ASKED),
    "connected-drops-the-link": (res(), {DSTATE: OUTDATED}, "outdated", 4, DROPPED),
    "facts-behind-retried": (DISCONNECTED, {DSTATE: [UPTODATE, *OUTDATED]}, "outdated", 4, RETRIED),
    "primary-asks-nothing": (PRIMARY, {}, "primary", 6, []),
    "drbd-refuses-primary": (DISCONNECTED, {OUTDATE: [(17, "")]}, "primary", 6, [OUTDATE]),
    "rc5": (DISCONNECTED, {OUTDATE: [(5, "")], DSTATE: INCONSISTENT}, "inconsistent", 3, ASKED),
    "dstate-inconsistent": (DISCONNECTED, {DSTATE: INCONSISTENT}, "inconsistent", 3, ASKED),
    # A real failure is not taken for 8.4's silent no-op: no second try without the link.
    "rc10": (DISCONNECTED, {OUTDATE: RC10, DSTATE: [UPTODATE]}, "failed", 1, ASKED),
    "rc10-diskless": (DISCONNECTED, {OUTDATE: RC10, DSTATE: DISKLESS}, "failed", 1, ASKED),
    # Not up: drbdadm outdated the metadata (drbdmeta); dstate says exit 10.
    "not-up": (DISCONNECTED, {DSTATE: [(10, "")]}, "outdated", 4, ASKED),
    # dstate failing otherwise proves nothing: never report a copy outdated on a guess.
    "dstate-fails": (DISCONNECTED, {DSTATE: [(1, "")]}, "failed", 1, ASKED),
}


@pytest.mark.parametrize(("facts", "script", "outcome", "code", "calls"), CASES.values(), ids=CASES)
@in_loop
async def test_outdate_outcomes(
    facts: Resource,
    script: dict[tuple[str, ...], list[tuple[int, str]]],
    outcome: str,
    code: int,
    calls: list[tuple[str, ...]],
) -> None:
    async with serving(facts, FakeDrbdadm(script)) as s:
        answer = await s.ask()
        await s.log.wait_requests()
    assert (answer.outcome, answer.exit_code) == (outcome, code)
    assert s.cmds.calls == calls
    level, event, fields = one_request(s.log)
    assert (level, event) == ("warning", "fence.request")
    assert (fields["resource"], fields["outcome"], fields["source"]) == ("r0", outcome, LOOPBACK)


@in_loop
async def test_a_copy_that_wrote_alone_is_never_outdated() -> None:
    # The Secondary took over while the asker was frozen, served, then stepped down: its
    # copy holds writes the asker lacks, and `drbdadm outdate` would go through.
    async with serving(DISCONNECTED, FakeDrbdadm({DSTATE: OUTDATED}), wrote_alone=True) as s:
        answer = await s.ask()
        await s.log.wait_requests()
    assert (answer.outcome, answer.exit_code) == ("newer", 6)
    assert s.cmds.calls == []  # nothing run: the copy stays UpToDate
    assert "writes yours lacks" in answer.detail
    _, _, fields = one_request(s.log)
    assert fields["outcome"] == "newer"


@in_loop
async def test_a_failed_reconnect_is_logged_after_the_answer_with_state() -> None:
    script = {DSTATE: OUTDATED, CONNECT: [(10, "")]}
    async with serving(res(), FakeDrbdadm(script)) as s:
        answer = await s.ask()
        await s.log.wait_requests(2)
    assert answer.exit_code == 4
    assert [e for _, e, _ in s.log.requests] == ["fence.reconnect_failed", "fence.request"]
    reply = answer.reply  # this node's DRBD state as the server saw it
    assert (reply["resource"], reply["disk"], reply["role"]) == ("r0", "Outdated", "Secondary")
    assert reply["connection"] == "Connected"


@in_loop
async def test_an_ipv6_peer_is_served() -> None:
    async with serving(DISCONNECTED, FakeDrbdadm({DSTATE: OUTDATED}), peer="::1", host="::1") as s:
        answer = await s.ask()
        await s.log.wait_requests()
    assert answer.exit_code == 4
    assert s.cmds.calls == ASKED
    assert one_request(s.log)[2]["source"] == "::1"


# ---- refusals --------------------------------------------------------------------------


REFUSED = {  # how the server is set up, what the client sends, what the server logs
    "wrong-secret": ({}, b"w" * 44, ("fence.refused", "reason", "bad_mac")),
    "unknown-source": ({"peer": "127.0.0.2"}, KEY, ("fence.refused", "reason", "unknown_source")),
    "not-managed": ({"managed": frozenset({"other"})}, KEY, ("fence.request", "outcome", "failed")),
}


@pytest.mark.parametrize(("setup", "key", "logged"), REFUSED.values(), ids=REFUSED)
@in_loop
async def test_refused_requests_run_nothing(
    setup: dict[str, Any], key: bytes, logged: tuple[str, str, str]
) -> None:
    async with serving(DISCONNECTED, **setup) as s:
        answer = await s.ask(key=key)
        await s.log.wait_requests()
    assert (answer.outcome, answer.exit_code) == ("failed", 1)
    assert s.cmds.calls == []
    event, field, value = logged
    _, got, fields = one_request(s.log)
    assert (got, fields[field], fields["source"]) == (event, value, LOOPBACK)
    assert (value if field == "reason" else "not managed") in answer.detail


@in_loop
async def test_a_recorded_request_is_refused_on_a_new_connection() -> None:
    script = {DSTATE: OUTDATED}
    async with serving(DISCONNECTED, FakeDrbdadm(script)) as s:
        port = s.client.port
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        challenge = wire.decode(await reader.readline())
        recorded = wire.outdate_request(KEY, "r0", challenge["nonce"], "c1")
        writer.write(recorded)
        first = wire.decode(await reader.readline())
        assert await reader.read() == b""  # one request per connection
        writer.close()
        await s.log.wait_requests()
        assert (first["type"], first["outcome"]) == ("result", "outdated")
        assert s.cmds.calls == [OUTDATE, DSTATE]

        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        assert wire.decode(await reader.readline())["type"] == "challenge"
        writer.write(recorded)
        second = wire.decode(await reader.readline())
        writer.close()
        await s.log.wait_requests(2)
    assert second == {"type": "refused", "v": 1, "reason": "replayed"}
    assert s.cmds.calls == [OUTDATE, DSTATE]  # nothing more ran
    _, event, fields = s.log.requests[1]
    assert (event, fields["reason"]) == ("fence.refused", "replayed")


@in_loop
async def test_a_non_ascii_mac_is_refused_and_logged() -> None:
    async with serving(DISCONNECTED) as s:
        reader, writer = await asyncio.open_connection(LOOPBACK, s.client.port)
        challenge = wire.decode(await reader.readline())
        msg = wire.decode(wire.outdate_request(KEY, "r0", challenge["nonce"], "c1"))
        writer.write(wire.encode({**msg, "mac": "\u00e9" * 64}))
        reply = await reader.readline()
        writer.close()
        with contextlib.suppress(TimeoutError):
            await s.log.wait_requests(limit=0.5)
    assert reply == wire.refused("bad_mac")
    assert s.cmds.calls == []
    assert [e for _, e, _ in s.log.requests] == ["fence.refused"]


# ---- peers that are gone or misbehave ----------------------------------------------------


def test_a_peer_that_accepts_but_never_challenges_is_not_dead() -> None:
    with socket.socket() as listener:  # the kernel completes the handshake; nobody answers
        listener.bind((LOOPBACK, 0))
        listener.listen(4)
        answer = handler.ask(peer_cfg(LOOPBACK, listener.getsockname()[1]), KEY, "r0")
    assert answer.outcome == "failed"
    assert answer.exit_code == 1  # not 5: a reachable peer must not be reported dead


FORGED = {  # the key the fake peer signs with, what it changes in its result, what we make of it
    "believed": (KEY, {}, 4, "outdated"),
    "wrong-key": (b"w" * 44, {}, 1, "bad_mac"),
    "old-challenge": (KEY, {"nonce": "s-old"}, 1, "replayed"),
    "other-request": (KEY, {"client_nonce": "c-old"}, 1, "wrong_client_nonce"),
    "other-resource": (KEY, {"resource": "r1"}, 1, "wrong_resource"),
    "unknown-outcome": (KEY, {"outcome": "dead"}, 1, "unknown outcome 'dead'"),
}


@pytest.mark.parametrize(("key", "change", "code", "detail"), FORGED.values(), ids=FORGED)
@in_loop
async def test_only_a_result_for_this_request_is_believed(
    key: bytes, change: dict[str, str], code: int, detail: str
) -> None:
    """A fake peer that follows the protocol, but signs its result with `key` after
    applying `change` to it."""

    async def fake_peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(wire.encode(wire.challenge("s-fake")))
        req = wire.decode(await reader.readline())
        reply = {
            "type": "result",
            "resource": req["resource"],
            "nonce": "s-fake",
            "client_nonce": req["client_nonce"],
            "outcome": "outdated",
            "disk": "Outdated",
            "detail": "outdated",
        }
        writer.write(wire.encode(wire.sign(key, reply | change)))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(fake_peer, LOOPBACK, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        answer = await asyncio.to_thread(handler.ask, peer_cfg(LOOPBACK, port), KEY, "r0")
    finally:
        server.close()
        await server.wait_closed()
    assert answer.exit_code == code
    assert detail in answer.detail


@in_loop
async def test_fence_peer_retries_a_peer_that_failed_until_it_outdates(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The first outdate fails (rc 10); the second succeeds: the handler keeps asking.
    monkeypatch.setattr(handler, "RETRY_PAUSE", 0.01)
    secret = tmp_path / "fence.key"
    secret.write_bytes(KEY)
    secret.chmod(0o600)
    cmds = FakeDrbdadm(
        {
            OUTDATE: [(10, ""), (0, "")],
            DSTATE: [(0, "UpToDate/DUnknown\n"), (0, "Outdated/DUnknown\n")],
        }
    )
    async with serving(DISCONNECTED, cmds) as served:
        peer = dataclasses.replace(served.client, secret_file=secret)
        storage = {"data": SimpleNamespace(drbd_resource="r0")}
        config = SimpleNamespace(storage=storage, peer=peer)
        answer = await asyncio.to_thread(handler.fence_peer, config, "r0")  # type: ignore[arg-type]
    assert (answer.outcome, answer.exit_code) == ("outdated", 4)
    assert cmds.calls == [OUTDATE, DSTATE, OUTDATE, DSTATE]


@in_loop
async def test_each_request_is_counted_once_by_result_and_reason() -> None:
    counted: list[tuple[str, str]] = []
    cmds = FakeDrbdadm({DSTATE: OUTDATED})
    async with serving(DISCONNECTED, cmds, count=lambda *c: counted.append(c)) as s:
        good = await s.ask()
        bad = await s.ask(b"w" * 44)
    assert (good.exit_code, bad.exit_code) == (4, 1)
    assert counted == [("outdated", ""), ("refused", "bad_mac")]


# ---- a flood of connections ----------------------------------------------------------


@in_loop
async def test_a_flood_of_silent_connections_is_bounded_and_the_peer_served_after_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """More silent connections than the bound, all from the peer's address: the ones over
    it are refused "busy" and closed at once, the others are dropped REQUEST_TIMEOUT after
    they connected; then the peer's request is served."""
    limit, over, request_timeout = 3, 4, 1.0
    monkeypatch.setattr(fencing_server, "MAX_CONNECTIONS", limit, raising=False)
    monkeypatch.setattr(fencing_server, "REQUEST_TIMEOUT", request_timeout)
    counted: list[tuple[str, str]] = []
    cmds = FakeDrbdadm({DSTATE: OUTDATED})
    async with serving(DISCONNECTED, cmds, count=lambda *c: counted.append(c)) as s:
        peer, client = s.server, s.client
        flood: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        try:
            started = time.monotonic()
            flood += [
                await asyncio.open_connection(LOOPBACK, client.port) for _ in range(limit + over)
            ]
            async with asyncio.timeout(request_timeout / 2):  # "at once"
                firsts = [wire.decode(await reader.readline()) for reader, _ in flood]
                assert [await reader.read() for reader, _ in flood[limit:]] == [b""] * over
            assert [m["type"] for m in firsts] == ["challenge"] * limit + ["refused"] * over
            assert {m.get("reason") for m in firsts[limit:]} == {"busy"}
            assert peer.active == limit
            while_full = await asyncio.to_thread(handler.ask, client, KEY, "r0")
            assert time.monotonic() - started < request_timeout  # the flood still holds its places
            assert (while_full.outcome, while_full.detail) == ("failed", "the peer refused: busy")

            async with asyncio.timeout(request_timeout * 2):
                assert [await reader.read() for reader, _ in flood[:limit]] == [b""] * limit
            assert peer.active == 0
            after = await asyncio.to_thread(handler.ask, client, KEY, "r0")
        finally:
            for _, writer in flood:
                writer.close()
    assert (after.outcome, after.exit_code) == ("outdated", 4)
    busy, silent = ("refused", "busy"), ("refused", "no_request")
    assert sorted(counted) == sorted([busy] * (over + 1) + [silent] * limit + [("outdated", "")])


class SlowDrbdadm(FakeDrbdadm):
    """Each command takes a moment, as the real ones do: time for the client to go."""

    def __init__(self, script: dict[tuple[str, ...], list[tuple[int, str]]]) -> None:
        super().__init__(script)
        self.started = asyncio.Event()

    async def __call__(self, argv: Sequence[str]) -> Result:
        self.started.set()
        await asyncio.sleep(0.05)
        return await super().__call__(argv)


@in_loop
async def test_the_link_dropped_to_outdate_is_reconnected_when_the_client_is_gone() -> None:
    # A handler that gave up (its RESULT_TIMEOUT, DRBD killed it) resets the connection
    # while this node outdates; the link `disconnect --force` dropped must come back all
    # the same, or replication stays down (StandAlone) until someone runs drbdadm connect.
    cmds = SlowDrbdadm({DSTATE: OUTDATED})
    async with serving(res(), cmds) as s:
        reader, writer = await asyncio.open_connection(LOOPBACK, s.client.port)
        challenge = wire.decode(await reader.readline())
        writer.write(wire.outdate_request(KEY, "r0", challenge["nonce"], "c1"))
        await writer.drain()
        async with asyncio.timeout(5):
            await cmds.started.wait()  # the request is read; the server is outdating
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # RST
        await s.log.wait_requests()
        await asyncio.sleep(0.2)  # anything still to come
    assert s.cmds.calls == DROPPED
    level, event, fields = one_request(s.log)
    assert (level, event, fields["outcome"]) == ("warning", "fence.request", "outdated")
    assert "reply_lost" in fields  # logged: the peer never read that its copy is outdated
