"""The daemon's side of the peer channel: answer the peer's outdate requests.

Rules:
- Only the configured peer address is served; every request is authenticated (wire.py) and
  bounded in time; one request per connection; each ends in one log event.
- At most MAX_CONNECTIONS are served at once: one more is refused ("busy") and closed at
  once, as is any from another address, so a flood holds a bounded number of sockets and
  tasks. A client that sends nothing (or does not read) holds its place for REQUEST_TIMEOUT
  from the connection on, then CLOSE_TIMEOUT at most to close.
- This node outdates its own copy only while it is Secondary (DRBD refuses on a Primary as
  well), and replies with its DRBD state either way.
- It runs beside the main loop and touches no machine: outdating changes DRBD, which the
  watcher reports through the inbox like any other change.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable
from typing import Any

from drbdha.clock import Clock, MonotonicClock
from drbdha.config import PeerConfig
from drbdha.fencing import wire
from drbdha.resources import drbd, proc
from drbdha.resources.drbd_events import Resource

REQUEST_TIMEOUT = 5.0  # seconds from the connection to the client's request, challenge included
ACTION_TIMEOUT = 10.0  # seconds for outdating (five drbdadm runs at most, each quick)
CLOSE_TIMEOUT = 1.0  # seconds to hand the last bytes over and close, then the connection is reset
# The peer's handler asks one request at a time per resource; a few resources, a retry
# overlapping a request that timed out on its side: 8 is far above what a peer needs.
MAX_CONNECTIONS = 8
NEWER_DETAIL = "this copy was Primary alone since the copies last met: it has writes yours lacks"

Facts = Callable[[str], Resource | None]


class PeerServer:
    def __init__(
        self,
        cfg: PeerConfig,
        key: bytes,
        resources: Callable[[], frozenset[str]],
        facts: Facts,
        log: Any,
        *,
        wrote_alone: Callable[[str], bool] = lambda _resource: False,
        run: drbd.Run | None = None,
        count: Callable[[str, str], None] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.cfg = cfg
        self.key = key
        self.resources = resources
        self.facts = facts
        self.wrote_alone = wrote_alone  # storage_state.StorageState.wrote_alone
        self.log = log
        self._run = run or proc.run
        self._count = count  # (result, reason) per request: the daemon's Prometheus counter
        self._clock = clock or MonotonicClock()  # took_ms in the log events
        self._locks: dict[str, asyncio.Lock] = {}
        self._server: asyncio.Server | None = None
        self.active = 0  # connections being served (never above MAX_CONNECTIONS)

    async def start(self, host: str | None = None) -> None:
        """Listen on every address (the source is checked per connection) or on `host`."""
        if host is None:
            host = "::" if self.cfg.address.version == 6 else "0.0.0.0"  # noqa: S104
        self._server = await asyncio.start_server(
            self._serve, host, self.cfg.port, limit=wire.MAX_LINE
        )
        self.log.info("fence.listening", port=self.cfg.port, peer=str(self.cfg.address))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        source = _source(writer)
        if not _same_address(source, self.cfg.address):
            self._refuse_at_once(writer, source, "unknown_source")
            return
        if self.active >= MAX_CONNECTIONS:
            self._refuse_at_once(writer, source, "busy")
            return
        self.active += 1
        try:
            await self._serve_one(reader, writer, source)
        finally:
            self.active -= 1

    def _refuse_at_once(self, writer: asyncio.StreamWriter, source: str, reason: str) -> None:
        """Refuse without waiting for anything: these hold no place among MAX_CONNECTIONS."""
        self.log.error("fence.refused", reason=reason, source=source, active=self.active)
        self._counted("refused", reason)
        _close_at_once(writer, wire.refused(reason))

    async def _serve_one(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, source: str
    ) -> None:
        started = self._clock.monotonic()
        fields: dict[str, Any] = {"source": source}
        try:
            fields |= await self._exchange(reader, writer)
            self.log.warning("fence.request", took_ms=self._ms(started), **fields)
            self._counted(fields["outcome"], "")
        except wire.Refused as e:
            self.log.error("fence.refused", reason=e.reason, took_ms=self._ms(started), **fields)
            self._counted("refused", e.reason)
            writer.write(wire.refused(e.reason))
        except asyncio.IncompleteReadError as e:
            if e.partial:
                self._no_request(started, fields)
            else:  # closed without a byte: the peer's watch saw us alive (fencing/watch.py)
                self.log.info("fence.probed", took_ms=self._ms(started), **fields)
                self._counted("probe", "")
        except TimeoutError:
            self._no_request(started, fields)
        except (ConnectionError, OSError) as e:
            self.log.error("fence.refused", reason="connection_lost", error=str(e), **fields)
            self._counted("refused", "connection_lost")
        finally:
            await _close(writer)

    def _no_request(self, started: float, fields: dict[str, Any]) -> None:
        self.log.error("fence.refused", reason="no_request", took_ms=self._ms(started), **fields)
        self._counted("refused", "no_request")

    def _ms(self, since: float) -> float:
        return round((self._clock.monotonic() - since) * 1000, 1)

    def _counted(self, result: str, reason: str) -> None:
        if self._count is not None:
            self._count(result, reason)

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> dict[str, Any]:
        server_nonce = wire.nonce()
        try:
            # One deadline for the challenge and the request: a client that reads nothing
            # (drain) or sends a byte at a time holds its place REQUEST_TIMEOUT at most.
            async with asyncio.timeout(REQUEST_TIMEOUT):
                writer.write(wire.encode(wire.challenge(server_nonce)))
                await writer.drain()
                line = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            raise wire.Refused("too_long") from None
        msg = wire.verify(self.key, wire.decode(line), "outdate", nonce=server_nonce)
        resource, client_nonce = msg.get("resource"), msg.get("client_nonce")
        if not isinstance(resource, str) or not isinstance(client_nonce, str):
            raise wire.Refused("bad_message")
        result = await self._outdate(resource)
        facts = self.facts(resource)
        reply = {
            "type": "result",
            "resource": resource,
            "nonce": server_nonce,
            "client_nonce": client_nonce,
            "outcome": result.outcome,
            "disk": result.disk,
            "role": facts.role if facts else None,
            "connection": _connection(facts),
            "detail": result.detail[-300:],
        }
        writer.write(wire.encode(wire.sign(self.key, reply)))
        lost: dict[str, str] = {}
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                await writer.drain()  # the peer's I/O may be frozen until it reads this
        except (ConnectionError, OSError) as e:  # TimeoutError included
            # The client gave up meanwhile: what was done here stands, and the link that
            # was dropped for it must come back all the same.
            lost = {"reply_lost": str(e) or type(e).__name__}
        if result.reconnect:
            await self._reconnect(result.link or resource)
        return {
            "resource": resource,
            "outcome": result.outcome,
            "disk": result.disk,
            "detail": result.detail[-300:],
            **lost,
        }

    async def _outdate(self, resource: str) -> drbd.Outdated:
        if resource not in self.resources():
            return drbd.Outdated(wire.FAILED, None, f"{resource} is not managed by drbdha here")
        facts = self.facts(resource)
        if facts is not None and facts.role == "Primary":
            # DRBD would refuse too (exit 17); not even asking keeps it plain in the log.
            return drbd.Outdated(wire.PRIMARY, facts.worst_disk, "this node is Primary")
        if self.wrote_alone(resource):
            # `drbdadm outdate` would go through: DRBD compares data generations only when
            # the two connect. The asker was cut off (or frozen) while we served.
            disk = facts.worst_disk if facts else None
            return drbd.Outdated(wire.NEWER, disk, NEWER_DETAIL)
        lock = self._locks.setdefault(resource, asyncio.Lock())
        async with lock:
            try:
                async with asyncio.timeout(ACTION_TIMEOUT):
                    return await drbd.outdate(resource, lambda: self.facts(resource), self._run)
            except TimeoutError:
                return drbd.Outdated(wire.FAILED, None, f"not done in {ACTION_TIMEOUT:g} s")

    async def _reconnect(self, resource: str) -> None:
        """After answering: the link was dropped to outdate; bring it back so the copy
        resyncs when the replication network heals (DRBD keeps retrying from here)."""
        try:
            async with asyncio.timeout(ACTION_TIMEOUT):
                r = await drbd.reconnect(resource, self._run)
        except TimeoutError:
            self.log.error("fence.reconnect_failed", resource=resource, error="timed out")
            return
        if not r.ok:
            self.log.error("fence.reconnect_failed", resource=resource, error=r.summary())


async def _close(writer: asyncio.StreamWriter) -> None:
    """Hand over what is left and close; reset the connection if that takes CLOSE_TIMEOUT
    (a client that does not read)."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await writer.drain()
            writer.close()
            await writer.wait_closed()
    except TimeoutError:
        writer.transport.abort()
    except (ConnectionError, OSError):
        pass


def _close_at_once(writer: asyncio.StreamWriter, line: bytes) -> None:
    """Send `line` and close, waiting for nothing: what the kernel did not take at once (a
    client that does not read) is dropped with the connection."""
    writer.write(line)
    if writer.transport.get_write_buffer_size():
        writer.transport.abort()
    else:
        writer.close()


def _source(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    return str(peer[0]) if peer else "?"


def _same_address(source: str, expected: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    try:
        addr = ipaddress.ip_address(source.split("%", maxsplit=1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped  # an IPv4 peer on a dual-stack socket
    return addr == expected


def _connection(facts: Resource | None) -> str | None:
    if facts is None or not facts.connections:
        return None
    return facts.connections[0].connection
