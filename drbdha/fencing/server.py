"""The daemon's side of the peer channel: answer the peer's outdate requests.

Rules:
- Only the configured peer address is served; every request is authenticated (wire.py) and
  bounded in time; one request per connection; each ends in one log event.
- This node outdates its own copy only while it is Secondary (DRBD refuses on a Primary as
  well), and replies with its DRBD state either way.
- It runs beside the main loop and touches no machine: outdating changes DRBD, which the
  watcher reports through the inbox like any other change.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Callable
from typing import Any

from drbdha.config import PeerConfig
from drbdha.fencing import wire
from drbdha.resources import drbd, proc
from drbdha.resources.drbd_events import Resource

REQUEST_TIMEOUT = 5.0  # seconds for the client's request after our challenge
ACTION_TIMEOUT = 10.0  # seconds for outdating (five drbdadm runs at most, each quick)

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
        run: drbd.Run | None = None,
        count: Callable[[str, str], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.key = key
        self.resources = resources
        self.facts = facts
        self.log = log
        self._run = run or proc.run
        self._count = count  # (result, reason) per request: the daemon's Prometheus counter
        self._locks: dict[str, asyncio.Lock] = {}
        self._server: asyncio.Server | None = None

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
        started = time.monotonic()
        source = _source(writer)
        fields: dict[str, Any] = {"source": source}
        try:
            fields |= await self._exchange(reader, writer, source)
            self.log.warning("fence.request", took_ms=_ms(started), **fields)
            self._counted(fields["outcome"], "")
        except wire.Refused as e:
            self.log.error("fence.refused", reason=e.reason, took_ms=_ms(started), **fields)
            self._counted("refused", e.reason)
            writer.write(wire.refused(e.reason))
        except (TimeoutError, asyncio.IncompleteReadError):
            self.log.error("fence.refused", reason="no_request", took_ms=_ms(started), **fields)
            self._counted("refused", "no_request")
        except (ConnectionError, OSError) as e:
            self.log.error("fence.refused", reason="connection_lost", error=str(e), **fields)
            self._counted("refused", "connection_lost")
        finally:
            try:
                await writer.drain()
                writer.close()
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass

    def _counted(self, result: str, reason: str) -> None:
        if self._count is not None:
            self._count(result, reason)

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, source: str
    ) -> dict[str, Any]:
        if not _same_address(source, self.cfg.address):
            raise wire.Refused("unknown_source")
        server_nonce = wire.nonce()
        writer.write(wire.encode(wire.challenge(server_nonce)))
        await writer.drain()
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
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
        await writer.drain()  # the peer's I/O may be frozen until it reads this
        if result.reconnect:
            await self._reconnect(resource)
        return {
            "resource": resource,
            "outcome": result.outcome,
            "disk": result.disk,
            "detail": result.detail[-300:],
        }

    async def _outdate(self, resource: str) -> drbd.Outdated:
        if resource not in self.resources():
            return drbd.Outdated(wire.FAILED, None, f"{resource} is not managed by drbdha here")
        facts = self.facts(resource)
        if facts is not None and facts.role == "Primary":
            # DRBD would refuse too (exit 17); not even asking keeps it plain in the log.
            return drbd.Outdated(wire.PRIMARY, facts.worst_disk, "this node is Primary")
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
                r = await self._run(["drbdadm", "connect", resource])
        except TimeoutError:
            self.log.error("fence.reconnect_failed", resource=resource, error="timed out")
            return
        if not r.ok:
            self.log.error("fence.reconnect_failed", resource=resource, error=r.summary())


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


def _ms(since: float) -> float:
    return round((time.monotonic() - since) * 1000, 1)
