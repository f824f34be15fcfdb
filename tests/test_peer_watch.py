"""The peer watch (fencing/watch.py) and the handler's use of its evidence (handler.py
`fence_peer_with(..., silent_since)`): a peer watched silent for fence_timeout is dead at
once; anything that answers, a refusal included, leaves no evidence, so the handler asks
from the start as before (issue 21: the fenced takeover without a second fence_timeout).

Real sockets on 127.0.0.1, as in test_fence_handler.py: silence is a listener with a full
accept queue (SYNs dropped), a refusal a port nobody listens on, a live peer a real
PeerServer. The clock is the real one: the watch and the handler share time.monotonic."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import TYPE_CHECKING

from test_chain import in_loop
from test_fence_handler import free_port, silent
from test_fencing_channel import DISCONNECTED, KEY, LOOPBACK, peer_cfg, serving

from drbdha.clock import MonotonicClock
from drbdha.fencing import handler, wire
from drbdha.fencing.watch import PeerWatch

if TYPE_CHECKING:
    import pytest

SLOW = 3.0  # a fence_timeout no test waits out by chance


async def watched(port: int, seconds: float, fence_timeout: float = SLOW) -> PeerWatch:
    watch = PeerWatch(
        dataclasses.replace(peer_cfg(LOOPBACK, port), fence_timeout=fence_timeout), MonotonicClock()
    )
    watch.begin()
    await asyncio.sleep(seconds)
    return watch


@in_loop
async def test_a_silent_peer_keeps_the_evidence_from_the_start() -> None:
    with silent() as port:
        before = time.monotonic()
        watch = await watched(port, 0.35)
        since = watch.silent_since()
        assert since is not None
        assert before <= since <= before + 0.05
        watch.end()
    assert watch.silent_since() is None  # the step is over: no evidence outlives it


@in_loop
async def test_a_refusing_host_leaves_no_evidence() -> None:
    watch = await watched(free_port(), 0.3)  # nothing listens: RST, the host is alive
    assert watch.silent_since() is None
    watch.end()


@in_loop
async def test_a_live_peer_is_probed_once_and_left_alone() -> None:
    counted: list[tuple[str, str]] = []
    async with serving(DISCONNECTED, count=lambda r, why: counted.append((r, why))) as s:
        watch = await watched(s.client.port, 0.3)
        assert watch.silent_since() is None
        await s.log.wait_requests()
        watch.end()
    assert [e for _, e, _ in s.log.requests] == ["fence.probed"]  # not an error on the peer
    assert counted == [("probe", "")]


@in_loop
async def test_two_steps_share_one_watch_until_the_last_ends() -> None:
    with silent() as port:
        watch = await watched(port, 0.1)
        since = watch.silent_since()
        watch.begin()  # a second resource's DRBD step
        watch.end()
        assert watch.silent_since() == since
        watch.end()
        assert watch.silent_since() is None


def test_watched_silence_of_fence_timeout_is_a_dead_peer_at_once() -> None:
    with silent() as port:
        peer = dataclasses.replace(peer_cfg(LOOPBACK, port), fence_timeout=SLOW)
        started = time.monotonic()
        answer = handler.fence_peer_with(peer, KEY, "r0", silent_since=started - SLOW)
        took = time.monotonic() - started
    assert (answer.outcome, answer.exit_code) == (wire.UNREACHABLE, 5)
    assert took < SLOW / 2  # no second fence_timeout (it would take SLOW)


def test_watched_silence_shortens_only_the_first_wait() -> None:
    with silent() as port:
        peer = dataclasses.replace(peer_cfg(LOOPBACK, port), fence_timeout=SLOW)
        started = time.monotonic()
        answer = handler.fence_peer_with(peer, KEY, "r0", silent_since=started - (SLOW - 1.0))
        took = time.monotonic() - started
    assert answer.outcome == wire.UNREACHABLE
    assert 0.9 <= took < SLOW - 0.5  # the rest of fence_timeout, not all of it


def test_a_refusal_after_the_watch_is_still_a_live_peer(monkeypatch: pytest.MonkeyPatch) -> None:
    # The watch saw silence, then the host answers with a refusal within what is left:
    # alive, so never 5, however long the silence before it was.
    monkeypatch.setattr(handler, "DEADLINE", 1.0)
    peer = dataclasses.replace(peer_cfg(LOOPBACK, free_port()), fence_timeout=SLOW)
    answer = handler.fence_peer_with(peer, KEY, "r0", silent_since=time.monotonic() - 1.0)
    assert (answer.outcome, answer.exit_code) == (wire.FAILED, 1)
    assert "refused the connection" in answer.detail
