"""The peer watch: during a takeover, the daemon asks the peer channel's port as the
fence-peer handler would (fencing/handler.py `_connect`: one TCP connect at a time, each
ATTEMPT long), from the start of the DRBD step until it ends. When DRBD then runs the
handler, and the handler asks the daemon (cli.py `_fence_peer`), the silence is already
measured: a peer silent for fence_timeout is dead at once, instead of after another
fence_timeout of the handler's own.

The evidence is the handler's, only earlier: continuous silence (no SYN-ACK, no RST) since
`silent_since`, up to the moment it is read. Anything that answers (a connection or a
refusal: the host is alive) ends the watch without evidence, and the handler then asks from
the start, as it always did; so does a watch that is not running. A connection that the
watch made is closed at once without a request (the peer's server logs it as a probe).
"""

from __future__ import annotations

import asyncio
import contextlib

from drbdha.clock import Clock
from drbdha.config import PeerConfig
from drbdha.fencing.handler import ATTEMPT


class PeerWatch:
    def __init__(self, peer: PeerConfig, clock: Clock) -> None:
        self.peer = peer
        self.clock = clock
        self._users = 0  # DRBD steps under way (one per resource taking over)
        self._task: asyncio.Task[None] | None = None
        self._since: float | None = None  # silent since, while the silence holds

    def begin(self) -> None:
        """A DRBD step starts: watch, unless a watch is under way already."""
        self._users += 1
        if self._task is None:
            self._since = self.clock.monotonic()
            self._task = asyncio.create_task(self._watch(), name="fence_peer_watch")

    def end(self) -> None:
        """A DRBD step is over; the last one stops the watch (its evidence goes with it)."""
        self._users = max(0, self._users - 1)
        if self._users == 0 and self._task is not None:
            self._task.cancel()
            self._task, self._since = None, None

    def silent_since(self) -> float | None:
        """When the silence began, if the watch is running and nothing has answered."""
        return self._since

    async def _watch(self) -> None:
        host, port = str(self.peer.address), self.peer.port
        while True:
            started = self.clock.monotonic()
            try:
                async with asyncio.timeout(ATTEMPT):
                    reader, writer = await asyncio.open_connection(host, port)
            except ConnectionRefusedError:  # RST or ICMP port unreachable: alive
                break
            except OSError:  # timed out, no route, neighbour unresolved: silence
                pass
            else:
                await _leave(reader, writer)
                break
            await asyncio.sleep(max(0.0, ATTEMPT - (self.clock.monotonic() - started)))
        self._since = None  # the host answered: no evidence; the handler asks afresh


async def _leave(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Take the server's challenge, then close: closing with it unread would reset the
    connection, which the peer logs as an error; an end without a request is a probe."""
    with contextlib.suppress(OSError):  # TimeoutError included
        async with asyncio.timeout(ATTEMPT):
            await reader.readline()
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
