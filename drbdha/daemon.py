"""Wiring: one asyncio loop, one inbox, the machines, and the kernel adapters.

Rules: signal handlers and fd callbacks only put events into the inbox; only the main loop
touches a Machine; every machine input is followed by executing its effects and re-arming
that instance's timer. Instance timers live in one heap, so a turn costs O(log n) however
many instances run.
"""

from __future__ import annotations

import asyncio
import gc
import heapq
import signal
from dataclasses import dataclass
from typing import Any

from prometheus_client import start_http_server

from drbdha import logs
from drbdha.clock import Clock, MonotonicClock
from drbdha.config import Config
from drbdha.errors import DrbdhaError, MalformedPacket
from drbdha.inbox import Inbox
from drbdha.instance import Instance, family_of
from drbdha.metrics import Metrics
from drbdha.net.addresses import Addresses
from drbdha.net.frame_sender import FrameSender
from drbdha.net.links import AddressEvent, LinkEvent, LinkWatcher
from drbdha.net.vrrp_socket import VrrpSocket


@dataclass(frozen=True, slots=True)
class Readable:
    """A VRRP socket has datagrams queued. One object per socket, so no allocation per packet."""

    key: tuple[str, int]


@dataclass(frozen=True, slots=True)
class NetlinkReadable:
    pass


@dataclass(frozen=True, slots=True)
class Stop:
    signal: str


@dataclass(frozen=True, slots=True)
class Reload:
    pass


class Daemon:
    def __init__(self, config: Config, *, clock: Clock | None = None,
                 metrics: Metrics | None = None) -> None:
        self.config = config
        self.clock = clock or MonotonicClock()
        self.metrics = metrics or Metrics()
        self.log = logs.get()
        self.inbox = Inbox()
        self.addresses = Addresses()
        self.sockets: dict[tuple[str, int], VrrpSocket] = {}
        self.by_vrid: dict[tuple[str, int], dict[int, int]] = {}  # -> index in instances
        self.instances: list[Instance] = []
        self._frames: dict[str, FrameSender] = {}
        self._readable: dict[tuple[str, int], Readable] = {}
        self._pending: set[tuple[str, int]] = set()  # sockets with a Readable in the inbox
        self._heap: list[tuple[float, int]] = []
        self._scheduled: list[float | None] = []
        self._links: LinkWatcher | None = None
        self._stopping = False
        self._metrics_server: Any = None

    # ---- set-up --------------------------------------------------------------------------

    def _open(self) -> None:
        for cfg in self.config.vrrp_instances:
            self.addresses.ifindex(cfg.interface)  # NetError with a clear message if missing
            key = (cfg.interface, family_of(cfg))
            if key not in self.sockets:
                self.sockets[key] = VrrpSocket(cfg.interface, key[1])
                self._readable[key] = Readable(key)
                self.by_vrid[key] = {}
            if cfg.interface not in self._frames:
                self._frames[cfg.interface] = FrameSender(cfg.interface)
            inst = Instance(cfg, self.sockets[key], self._frames[cfg.interface], self.addresses,
                            self.metrics, self.log)
            self.by_vrid[key][cfg.vrid] = len(self.instances)
            self.instances.append(inst)
            self._scheduled.append(None)
        self._links = LinkWatcher(sorted({c.interface for c in self.config.vrrp_instances}))

    async def _reconcile(self, now: float) -> None:
        """Bring the kernel in line with a fresh start: we begin as backup (or owner), so a
        VIP left on the interface by a previous run (crash, kill -9) must go. It comes back
        with a GARP burst if we win the election."""
        for inst in self.instances:
            for vip in inst.cfg.virtual_ipaddress:
                if await self.addresses.has(inst.cfg.interface, vip):
                    await self.addresses.remove(inst.cfg.interface, vip)
                    self.log.warning("vip.reconciled", instance=inst.name, address=str(vip),
                                     action="removed stale address from a previous run")
            await self._refresh_local(inst, now)
            up = await self.addresses.link_is_up(inst.cfg.interface)
            inst.machine.set_fault("link", not up, now)

    async def _refresh_local(self, inst: Instance, now: float) -> list[Any]:
        vips = {v.ip for v in inst.cfg.virtual_ipaddress}
        local = await self.addresses.primary_address(
            inst.cfg.interface, inst.cfg.family, exclude=frozenset(vips)
        )
        inst.set_local_address(local)
        return inst.machine.set_fault("no_address", local is None, now)

    def _serve_metrics(self) -> None:
        listen = self.config.daemon.metrics_listen
        if not listen:
            return
        host, _, port = listen.rpartition(":")
        # prometheus_client serves from its own thread; it only reads the registry.
        self._metrics_server, _ = start_http_server(
            int(port), addr=host.strip("[]") or "0.0.0.0", registry=self.metrics.registry  # noqa: S104
        )
        self.log.info("metrics.listening", address=listen)

    def _install_callbacks(self, loop: asyncio.AbstractEventLoop) -> None:
        for key, sock in self.sockets.items():
            loop.add_reader(sock.fileno(), self._on_readable, key)
        if self._links is not None:
            loop.add_reader(self._links.fileno(), self.inbox.put, NetlinkReadable())
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.inbox.put, Stop(sig.name))
        loop.add_signal_handler(signal.SIGHUP, self.inbox.put, Reload())

    def _on_readable(self, key: tuple[str, int]) -> None:
        # The reader callback is level-triggered: it fires on every loop pass until the main
        # loop has drained the socket, so only one Readable per socket is kept queued.
        if key not in self._pending:
            self._pending.add(key)
            self.inbox.put(self._readable[key])

    # ---- main loop -----------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        try:
            self._open()
            now = self.clock.monotonic()
            await self._reconcile(now)
            self._install_callbacks(loop)
            self._serve_metrics()
            for i, inst in enumerate(self.instances):
                await self._apply(i, inst.machine.start(now), now)
            # Everything allocated so far lives for the whole run; freezing it keeps the
            # collector from re-scanning it (full collections cost 13-30 ms otherwise).
            gc.freeze()
            self.log.info("daemon.started", instances=len(self.instances))
            while not self._stopping:
                event = await self.inbox.get(self._next_deadline())
                now = self.clock.monotonic()
                if event is None:
                    await self._run_timers(now)
                else:
                    await self._dispatch(event, now)
            return 0
        finally:
            await self._shutdown(loop)

    async def _dispatch(self, event: Any, now: float) -> None:
        match event:
            case Readable(key):
                await self._read_socket(key, now)
            case NetlinkReadable():
                await self._read_netlink(now)
            case Stop(sig):
                self.log.info("daemon.stopping", signal=sig)
                self._stopping = True
            case Reload():
                self.log.warning("daemon.reload_unsupported",
                                 hint="restart the daemon to apply a new configuration")

    async def _read_socket(self, key: tuple[str, int], now: float) -> None:
        self._pending.discard(key)
        sock, instances = self.sockets[key], self.by_vrid[key]
        while True:
            try:
                rx = sock.recv()
            except MalformedPacket:
                self.metrics.unmatched_packets.labels(key[0]).inc()
                continue
            except OSError as e:
                self.log.warning("vrrp.recv_failed", interface=key[0], error=str(e))
                return
            if rx is None:
                return
            i = instances.get(rx.payload[1]) if len(rx.payload) > 1 else None
            if i is None:
                self.metrics.unmatched_packets.labels(key[0]).inc()
                continue
            await self._apply(i, self.instances[i].receive(rx, now), now)

    async def _read_netlink(self, now: float) -> None:
        assert self._links is not None
        for ev in self._links.read():
            for i, inst in enumerate(self.instances):
                if inst.cfg.interface != ev.ifname:
                    continue
                if isinstance(ev, LinkEvent):
                    self.log.info("link.changed", interface=ev.ifname, up=ev.up)
                    await self._apply(i, inst.machine.set_fault("link", not ev.up, now), now)
                elif isinstance(ev, AddressEvent):
                    await self._apply(i, await self._refresh_local(inst, now), now)

    async def _apply(self, i: int, effects: list[Any], now: float) -> None:
        if effects:
            await self.instances[i].execute(effects, now)
        deadline = self.instances[i].machine.get_timer()
        if deadline != self._scheduled[i]:
            self._scheduled[i] = deadline
            if deadline is not None:
                heapq.heappush(self._heap, (deadline, i))

    def _next_deadline(self) -> float | None:
        heap = self._heap
        while heap and heap[0][0] != self._scheduled[heap[0][1]]:
            heapq.heappop(heap)  # superseded entry
        return heap[0][0] if heap else None

    async def _run_timers(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, i = heapq.heappop(heap)
            if deadline != self._scheduled[i]:
                continue
            self._scheduled[i] = None
            self.metrics.loop_lateness.observe(now - deadline)
            await self._apply(i, self.instances[i].machine.handle_timer(now), now)

    # ---- shutdown ------------------------------------------------------------------------

    async def _shutdown(self, loop: asyncio.AbstractEventLoop) -> None:
        """Resign every master (priority 0, VIPs removed) however we got here."""
        now = self.clock.monotonic()
        for i, inst in enumerate(self.instances):
            try:
                await self._apply(i, inst.machine.shutdown(now), now)
            except Exception:
                self.log.exception("daemon.shutdown_failed", instance=inst.name)
                await inst.release_vips()
        for sock in self.sockets.values():
            loop.remove_reader(sock.fileno())
            sock.close()
        for sender in self._frames.values():
            sender.close()
        if self._links is not None:
            loop.remove_reader(self._links.fileno())
            self._links.close()
        self.addresses.close()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
        self.log.info("daemon.stopped")


def run(config: Config) -> int:
    try:
        return asyncio.run(Daemon(config).run())
    except DrbdhaError as e:
        logs.get().error("daemon.failed", error=str(e))
        return 1
    except OSError as e:
        logs.get().error("daemon.failed", error=str(e), errno=e.errno)
        return 1

