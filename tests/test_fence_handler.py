"""`drbdha fence-peer` against peers that are alive but not answering, and peers that are
silent (issue 19, §1): only silence may be reported as a dead peer (exit 5).

Real handler (fencing/handler.py) over TCP on 127.0.0.1. Silence is a real listener whose
accept queue is full: the kernel then drops each new SYN without an answer, as a powered-off
host does. A refusal is a port with nothing listening (the kernel answers RST), as a host
whose drbdha is down does. The answering peer is test_fencing_channel's real PeerServer with
its FakeDrbdadm (DRBD cannot run here).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from test_fencing_channel import DISCONNECTED, KEY, LOOPBACK, FakeDrbdadm, FakeLog, peer_cfg

from drbdha.fencing import handler, wire
from drbdha.fencing.server import PeerServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def silent(port: int = 0) -> Iterator[int]:
    """A port on which SYNs go unanswered: a listener whose backlog is full."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((LOOPBACK, port))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    # Fill the accept queue (listen(0) holds one; the kernel allows backlog + 1).
    for _ in range(3):
        c = socket.socket()
        c.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            c.connect((LOOPBACK, port))
        fillers.append(c)
    time.sleep(0.05)
    try:
        yield port
    finally:
        for c in fillers:
            c.close()
        listener.close()


def config(tmp_path: Path, port: int) -> Any:
    secret = tmp_path / "fence.key"
    secret.write_bytes(KEY)
    secret.chmod(0o600)
    peer = dataclasses.replace(peer_cfg(LOOPBACK, port), secret_file=secret)
    return SimpleNamespace(storage={"data": SimpleNamespace(drbd_resource="r0")}, peer=peer)


def test_silence_is_a_dead_peer() -> None:
    with silent() as port:
        started = time.monotonic()
        answer = handler.ask(peer_cfg(LOOPBACK, port), KEY, "r0")
        took = time.monotonic() - started
    assert (answer.outcome, answer.exit_code, answer.alive) == ("unreachable", 5, False)
    assert took >= 0.4  # it kept trying for fence_timeout (0.5 s)


def test_a_refused_connection_is_a_live_peer() -> None:
    answer = handler.ask(peer_cfg(LOOPBACK, free_port()), KEY, "r0")
    assert (answer.outcome, answer.exit_code) == ("failed", 1)
    assert answer.alive
    assert answer.refused
    assert answer.retry
    assert "refused the connection" in answer.detail


def test_fence_peer_never_answers_5_for_a_host_that_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The measured path: the Secondary's drbdha stopped, its host up. Exit 1 keeps
    # the Primary's I/O frozen instead of letting DRBD mark the peer Outdated in our
    # metadata alone while its copy stays promotable.
    monkeypatch.setattr(handler, "DEADLINE", 1.5)
    started = time.monotonic()
    answer = handler.fence_peer(config(tmp_path, free_port()), "r0")
    took = time.monotonic() - started
    assert answer.exit_code == 1, answer.detail
    assert took >= 1.0  # kept trying until the deadline


def test_a_host_that_refused_then_fell_silent_is_not_dead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Alive a moment ago (refusing), then silent: it may be rebooting with an UpToDate copy.
    monkeypatch.setattr(handler, "DEADLINE", 3.0)
    port = free_port()
    stop = threading.Event()

    def go_silent() -> None:
        time.sleep(0.3)
        with silent(port):
            stop.wait(10)

    t = threading.Thread(target=go_silent)
    t.start()
    try:
        answer = handler.fence_peer(config(tmp_path, port), "r0")
    finally:
        stop.set()
        t.join()
    assert answer.exit_code == 1, answer.detail
    assert "answered earlier, now silent" in answer.detail


def test_a_peer_whose_drbdha_comes_back_is_fenced_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # drbdha restarting on the peer: refused for a while, then listening; the handler
    # keeps asking and gets the outdate well inside its deadline.
    monkeypatch.setattr(handler, "DEADLINE", 10.0)
    port = free_port()
    answered = threading.Event()
    started = threading.Event()
    result: list[handler.Answer] = []

    async def peer_comes_back() -> None:
        await asyncio.sleep(1.0)
        cmds = FakeDrbdadm({("drbdadm", "dstate", "r0"): [(0, "Outdated/DUnknown\n")]})
        server = PeerServer(
            peer_cfg(LOOPBACK, port),
            KEY,
            lambda: frozenset({"r0"}),
            lambda _: DISCONNECTED,
            FakeLog(),
            run=cmds,
        )
        await server.start(host=LOOPBACK)
        started.set()
        try:
            await asyncio.to_thread(answered.wait, 10)
        finally:
            await server.close()

    def ask() -> None:
        result.append(handler.fence_peer(config(tmp_path, port), "r0"))
        answered.set()

    t0 = time.monotonic()
    t = threading.Thread(target=ask)
    t.start()
    asyncio.run(peer_comes_back())
    t.join()
    took = time.monotonic() - t0
    assert started.is_set()
    assert (result[0].outcome, result[0].exit_code) == ("outdated", 4), result[0].detail
    assert took < 3.0  # within ~fence_timeout of the peer listening again


@pytest.mark.parametrize(("reason", "retry"), [("busy", True), ("unknown_source", False)])
def test_only_a_busy_refusal_is_asked_again(reason: str, retry: bool) -> None:
    # The peer serves a few connections at once (fencing/server.py MAX_CONNECTIONS) and
    # refuses one more as "busy": that passes. Being unknown to it does not.
    with socket.socket() as listener:
        listener.bind((LOOPBACK, 0))
        listener.listen(1)

        def refuse() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.sendall(wire.refused(reason))

        t = threading.Thread(target=refuse)
        t.start()
        answer = handler.ask(peer_cfg(LOOPBACK, listener.getsockname()[1]), KEY, "r0")
        t.join()
    assert (answer.exit_code, answer.retry) == (1, retry)
    assert reason in answer.detail
