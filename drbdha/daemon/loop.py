"""Wiring: one asyncio loop, one inbox, the machines, and the kernel adapters.

Rules: signal handlers, fd callbacks and control requests only put events into the inbox;
only the main loop touches a Machine; every machine input is followed by carrying out its
effects and re-arming that instance's timer. Instance timers live in one heap, so a turn
costs O(log n) however many instances run. systemd's watchdog is fed from the loop itself,
so a stuck loop gets the service killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import heapq
import itertools
import os
import signal
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from prometheus_client import start_http_server

from drbdha import __version__, control, logs, status
from drbdha.chain.runner import ChainReconciled, ChainSettled, Runner, StepReport
from drbdha.clock import Clock, MonotonicClock
from drbdha.config import Config, VrrpInstanceConfig, load
from drbdha.daemon import health
from drbdha.daemon.handover import Handover
from drbdha.daemon.health import CheckResult
from drbdha.daemon.inbox import Inbox
from drbdha.daemon.instance import Instance, family_of
from drbdha.daemon.probe import PeerProbe, PeerProbed, ProbePeer
from drbdha.daemon.storage import Chains, OutdateSelf, PowerAction, power_action, storage_status
from drbdha.daemon.supervise import Supervisor
from drbdha.errors import ConfigError, DrbdhaError, MalformedPacket
from drbdha.fencing import status as fencing_status
from drbdha.fencing.keeper import Keeper, KeepFencing
from drbdha.fencing.secret import read_secret
from drbdha.fencing.server import PeerServer
from drbdha.latches import KINDS as LATCH_KINDS
from drbdha.latches import LatchStore
from drbdha.metrics import Metrics
from drbdha.net import NetError
from drbdha.net.addresses import Addresses, AddressSnapshot
from drbdha.net.frame_sender import FrameSender
from drbdha.net.heartbeat import Heartbeats, HeartbeatSocket
from drbdha.net.links import AddressEvent, LinkEvent, LinkWatcher
from drbdha.net.vrrp_socket import VrrpSocket
from drbdha.resources.drbd import DrbdChanged
from drbdha.resources.drbd_crosscheck import CrossCheck
from drbdha.resources.repl_watch import ReplicationWatch
from drbdha.systemd import Notifier

SocketKey = tuple[str, int]  # (interface, address family)
STATUS_INTERVAL = 1.0  # seconds between systemd STATUS= updates
FACTS_WAIT = 5.0  # seconds to wait at start for DRBD's initial state before the election
STOP_MARGIN = 5.0  # seconds on top of a chain's stop timeouts when waiting for it

# Instance settings a reload can change in place; any other change restarts the instance.
RELOADABLE = frozenset(
    {
        "priority",
        "preempt",
        "preempt_delay",
        "advert_interval",
        "checksum_mode",
        "garp_master_repeat",
        "garp_master_delay",
        "garp_master_refresh",
    }
)


@dataclass(frozen=True, slots=True)
class Readable:
    """A VRRP socket has datagrams queued. One object per socket, so no allocation per packet."""

    key: SocketKey


@dataclass(frozen=True, slots=True)
class HeartbeatReadable:
    sock: HeartbeatSocket


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
    def __init__(
        self, config: Config, *, clock: Clock | None = None, metrics: Metrics | None = None
    ) -> None:
        self.config = config
        self.clock = clock or MonotonicClock()
        self.metrics = metrics or Metrics()
        self.log = logs.get()
        self.sd = Notifier(clock=self.clock)
        self.inbox = Inbox()
        self.addresses = Addresses()
        self.instances: dict[str, Instance] = {}
        self.sockets: dict[SocketKey, VrrpSocket] = {}
        self.by_vrid: dict[SocketKey, dict[int, Instance]] = {}
        self.handover = Handover(self)
        self.latches = LatchStore(config.daemon.state_dir / "latches.json")
        self.chains = Chains(
            self.apply, self.inbox.put, self.latches, self.metrics, self.log, self.clock
        )
        self.probe = PeerProbe(self.inbox.put, self.metrics, self.log, self.clock)
        self.supervisor = Supervisor(
            lambda task: self.metrics.task_failures.labels(task).inc(), self.log, self.clock
        )
        self._runners: asyncio.TaskGroup | None = None  # the chain runners' own group
        self._tasks: asyncio.TaskGroup | None = None  # every other task beside the loop
        self._runner_tasks: dict[str, asyncio.Task[None]] = {}
        self._check_tasks: dict[str, asyncio.Task[None]] = {}
        self._watch_tasks: dict[str, asyncio.Task[None]] = {}
        self._crosscheck_tasks: dict[str, asyncio.Task[None]] = {}
        # Instances whose machine starts when their runner reports what it found: the
        # serial of that runner (a report from a replaced one is stale).
        self._awaiting: dict[str, int] = {}
        self._frames: dict[str, FrameSender] = {}
        self._readable: dict[SocketKey, Readable] = {}
        self._pending: set[SocketKey] = set()  # sockets with a Readable in the inbox
        self._heap: list[tuple[float, int, Instance]] = []
        self._seq = itertools.count()  # heap tie-breaker: instances do not compare
        self._links: LinkWatcher | None = None
        self._control: control.ControlServer | None = None
        self._peer_server: PeerServer | None = None
        self._heartbeats = Heartbeats()
        self._heartbeat_due: float | None = None
        self._dumped = asyncio.Event()  # the fencing/heartbeat read of drbdadm dump is done
        self._keeper: Keeper | None = None  # with a [peer] section
        self._keeping: dict[str, asyncio.Task[None]] = {}  # resource -> its keeper task
        self._metrics_server: Any = None
        self._stopping = False
        self._released = False  # _shutdown released every chain (or gave up waiting)
        self._status_dirty = False  # a state changed since systemd's STATUS= was last sent
        self._status_due = float("-inf")
        self._started_at = self.clock.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---- instances -----------------------------------------------------------------------

    def _socket_for(self, cfg: VrrpInstanceConfig) -> SocketKey:
        key = (cfg.interface, family_of(cfg))
        if key not in self.sockets:
            self.addresses.ifindex(cfg.interface)  # NetError naming the interface if missing
            self.sockets[key] = VrrpSocket(cfg.interface, key[1])
            self._readable[key] = Readable(key)
            self.by_vrid[key] = {}
            if self._loop is not None:
                self._loop.add_reader(self.sockets[key].fileno(), self._on_readable, key)
        if cfg.interface not in self._frames:
            self._frames[cfg.interface] = FrameSender(cfg.interface)
        return key

    def _add_instance(self, cfg: VrrpInstanceConfig) -> Instance:
        key = self._socket_for(cfg)
        inst = Instance(
            cfg,
            self.sockets[key],
            self._frames[cfg.interface],
            self.metrics,
            self.log,
            storage=self.config.storage_of(cfg),
        )
        peer = self.config.peer.address if self.config.peer else None
        self.chains.build(inst, self.addresses, peer)
        self.instances[cfg.name] = inst
        self.by_vrid[key][cfg.vrid] = inst
        self._awaiting[cfg.name] = inst.runner.serial
        self._start_tasks(inst)
        return inst

    def _start_tasks(self, inst: Instance) -> None:
        """The instance's runner (in the runners' own group) and checks, and one watcher per
        DRBD resource: each supervised, restarted with a back-off if it fails."""
        if self._tasks is None or self._runners is None:
            return  # run() starts them once the task groups exist
        keep = self.supervisor.keep
        if inst.name not in self._runner_tasks:
            name = f"chain_runner:{inst.name}"
            self._runner_tasks[inst.name] = keep(self._runners, name, inst.runner.run)
        if inst.health is not None and inst.name not in self._check_tasks:
            checks = functools.partial(
                health.run_checks, inst.health, inst.runner.is_up, self.inbox.put
            )
            name = f"health_checks:{inst.name}"
            self._check_tasks[inst.name] = keep(self._tasks, name, checks)
        for res, watcher in self.chains.watchers.items():
            if res not in self._watch_tasks:
                self._watch_tasks[res] = keep(self._tasks, f"drbd_watcher:{res}", watcher.run)
                stale = self.metrics.drbd_watcher_stale.labels(res).inc
                check = CrossCheck(watcher, self.log, stale).run_forever
                self._crosscheck_tasks[res] = keep(self._tasks, f"drbd_crosscheck:{res}", check)

    def _spawn(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        """A one-shot task beside the loop, supervised: an exception is logged and counted."""
        error = "the daemon is stopping"
        if self._tasks is not None:
            try:
                self.supervisor.once(self._tasks, name, work)
            except RuntimeError as e:  # "TaskGroup is shutting down": stopping as well
                error = str(e)
            else:
                return
        work.close()
        self.log.error("task.not_started", task=name, error=error)

    async def _found(self, instances: list[Instance], now: float) -> set[str]:
        """Act on what each runner found a previous run (crash, kill -9) left up; returns
        the instances whose storage is held, which resume as master. A VIP left up without
        storage under it goes: we begin as backup, and it comes back with a GARP burst if
        we win. One address dump per interface and family serves every instance on it."""
        resume = set()
        for inst in instances:
            self._awaiting.pop(inst.name, None)
            if self._adopt(inst):
                resume.add(inst.name)
        snapshots = await self._snapshots(instances)
        for inst in instances:
            snap = snapshots.get((inst.cfg.interface, inst.cfg.family))
            self._set_local(inst, snap, now)
            up = (
                self._links.is_up(inst.cfg.interface)
                if self._links is not None
                else await self.addresses.link_is_up(inst.cfg.interface)
            )
            inst.machine.set_fault("link", not up, now)
        return resume

    def _adopt(self, inst: Instance) -> bool:
        """True if the chain was found serving (resume as master); otherwise whatever was
        found up is released before anything else."""
        found = inst.runner.found
        assert found is not None
        for step, error in found.prepare_failed:
            self.log.warning("step.prepare_failed", instance=inst.name, step=step, error=error)
        held = found.held
        # Only a DRBD Primary says a previous run of ours served: nfsd or a service
        # running without it was started by someone else (nfs-server enabled at boot).
        # "drbd" is also held when drbdadm could not say: then events2 decides, if it has.
        if "drbd" in held and self._drbd_role(inst) in (None, "Primary"):
            self.log.warning("chain.reconciled", instance=inst.name, held=list(held))
            return True
        if held:
            inst.runner.want(False)  # the runner task removes it before anything else
            self.log.warning(
                "vip.reconciled" if held == ("vip",) else "chain.stale_steps",
                instance=inst.name,
                held=list(held),
                action="stopping what a previous run left without DRBD under it",
            )
        return False

    def _drbd_role(self, inst: Instance) -> str | None:
        """Our role in events2's facts; None without storage or facts."""
        storage = inst.storage
        watcher = self.chains.watchers.get(storage.drbd_resource) if storage else None
        facts = watcher.facts() if watcher is not None else None
        return facts.role if facts is not None else None

    def _start_machine(self, inst: Instance, now: float, *, resume: bool) -> None:
        self.chains.initial_verdict(inst, now)
        self.apply(inst, inst.machine.start(now, resume=resume), now)

    async def _reconciled(self, ev: ChainReconciled, now: float) -> None:
        """A runner added by a reload found what a previous run left: its machine starts.
        (At start-up, run() waits for every runner instead: nothing advertises yet.)"""
        if self._stopping or self._awaiting.get(ev.instance) != ev.serial:
            return  # stopping, started already, or a report of a runner since replaced
        inst = self.instances[ev.instance]
        resume = await self._found([inst], now)
        self._start_machine(inst, now, resume=inst.name in resume)

    async def _remove_instance(self, inst: Instance, now: float) -> None:
        """Shut the instance down and wait (bounded) for its chain to be released before
        it is forgotten: a restarted instance must not find its own storage half down."""
        self._awaiting.pop(inst.name, None)
        self.apply(inst, inst.machine.shutdown(now), now)
        inst.runner.want(False)
        if not await self._wait_released([inst]):
            self.log.error("chain.release_timed_out", instance=inst.name)
        for tasks in (self._runner_tasks, self._check_tasks):
            task = tasks.pop(inst.name, None)
            if task is not None:
                task.cancel()
        self.chains.forget(inst)
        del self.instances[inst.name]
        del self.by_vrid[(inst.cfg.interface, family_of(inst.cfg))][inst.cfg.vrid]
        inst.scheduled = None

    async def _wait_released(self, instances: list[Instance]) -> bool:
        """Wait for these chains to rest, serving the inbox meanwhile (step reports, DRBD
        events); False if one did not within its stop budget."""
        deadline = self.clock.monotonic() + _release_budget(instances)
        later: list[Any] = []  # a reload or stop asked for meanwhile waits for this one
        try:
            while not all(_at_rest(i.runner) for i in instances):
                if any(i.runner.plan.stuck for i in instances):
                    return False
                now = self.clock.monotonic()
                if now >= deadline:
                    return False
                self.sd.watchdog(now)  # a 30 s demote inside a reload must not look hung
                # Other instances go on advertising meanwhile: their timers wake us too.
                wake = min(deadline, now + 0.1, self._next_deadline() or deadline)
                event = await self.inbox.get(wake)
                if isinstance(event, Reload | Stop):
                    later.append(event)
                elif event is not None:
                    await self._dispatch(event, self.clock.monotonic())
                self._run_timers(self.clock.monotonic())
            return True
        finally:
            for event in later:
                self.inbox.put(event)

    async def _snapshots(self, instances: list[Instance]) -> dict[tuple[str, int], AddressSnapshot]:
        """The addresses on each (interface, IP version) these instances use; an interface
        that vanished is left out."""
        out: dict[tuple[str, int], AddressSnapshot] = {}
        for key in {(i.cfg.interface, i.cfg.family) for i in instances}:
            with contextlib.suppress(NetError):
                out[key] = await self.addresses.snapshot(*key)
        return out

    def _set_local(self, inst: Instance, snap: AddressSnapshot | None, now: float) -> list[Any]:
        """Our advert source from the interface's addresses; none -> the no_address fault."""
        vips = frozenset(v.ip for v in inst.cfg.virtual_ipaddress)
        local = None if snap is None else snap.primary(exclude=vips)
        inst.set_local_address(local)
        return inst.machine.set_fault("no_address", local is None, now)

    # ---- set-up --------------------------------------------------------------------------

    def _on_readable(self, key: SocketKey) -> None:
        # The reader callback is level-triggered: it fires on every loop pass until the main
        # loop has drained the socket, so only one Readable per socket is kept queued.
        if key not in self._pending:
            self._pending.add(key)
            self.inbox.put(self._readable[key])

    def _install_callbacks(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        for key, sock in self.sockets.items():
            loop.add_reader(sock.fileno(), self._on_readable, key)
        self._watch_links(loop)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.inbox.put, Stop(sig.name))
        loop.add_signal_handler(signal.SIGHUP, self.inbox.put, Reload())

    def _watch_links(self, loop: asyncio.AbstractEventLoop) -> None:
        """(Re)start the netlink watcher for every interface we use; a reload that adds an
        interface calls it again."""
        if self._links is not None:
            loop.remove_reader(self._links.fileno())
            self._links.close()
        self._links = LinkWatcher(sorted(self._frames))
        loop.add_reader(self._links.fileno(), self.inbox.put, NetlinkReadable())

    def _serve_metrics(self) -> None:
        listen = self.config.daemon.metrics_listen
        if not listen:
            return
        host, _, port = listen.rpartition(":")
        # prometheus_client serves from its own thread; it only reads the registry.
        started = start_http_server(
            int(port),
            addr=host.strip("[]") or "0.0.0.0",  # noqa: S104  (":port" asks for all, explicitly)
            registry=self.metrics.registry,
        )
        # (server, thread) since prometheus-client 0.17; None before (bookworm's 0.16), where
        # the server's daemon thread simply ends with the process.
        self._metrics_server = started[0] if started else None
        self.log.info("metrics.listening", address=listen)

    async def _serve_control(self) -> None:
        self._control = control.ControlServer(
            self.config.daemon.control_socket,
            control.inbox_handler(self.inbox.put),
            log=self.log,
        )
        await self._control.start()

    async def _serve_peer(self) -> None:
        """The fence channel (a [peer] section), and each resource's fencing for status."""
        peer = self.config.peer
        if peer is not None:
            key = read_secret(peer.secret_file)
            self._keeper = Keeper(
                peer,
                key,
                self.log,
                count=lambda inst, outcome: self.metrics.fence_keeper.labels(inst, outcome).inc(),
            )
            self._peer_server = PeerServer(
                peer,
                key,
                lambda: frozenset(self.chains.watchers),
                lambda res: w.facts() if (w := self.chains.watchers.get(res)) else None,
                self.log,
                count=lambda result, reason: self.metrics.fence_requests.labels(
                    result, reason
                ).inc(),
            )
            await self._peer_server.start()
        self._read_fencing(list(self.instances.values()))

    def _read_fencing(self, instances: list[Instance]) -> None:
        """How each chain's DRBD resource is fenced, for status, and its replication
        addresses, for the heartbeat (drbdadm dump, in a task; `_dumped` is set when done)."""
        self._dumped.clear()
        if not any(i.storage for i in instances):
            self._dumped.set()
            return

        def found(resource: str, addresses: tuple[str, ...]) -> None:
            # On the loop's thread, between two awaits of the task: no inbox round trip,
            # so at start the heartbeat is going before the first advert (see _run).
            self._start_heartbeat(resource, addresses, self.clock.monotonic())

        async def read() -> None:
            try:
                await fencing_status.fill(instances, self.config.peer, found)
            finally:
                self._dumped.set()

        self._spawn("fencing_status", read())

    # ---- the replication heartbeat (resources/repl_watch.py) --------------------------------

    def _start_heartbeat(self, resource: str, addresses: tuple[str, ...], now: float) -> None:
        """From `resource`'s DRBD replication addresses (drbdadm dump)."""
        inst = self.chains.by_resource.get(resource)
        if inst is None or inst.storage is None or inst.storage.replication_heartbeat <= 0:
            return
        port = inst.storage.replication_heartbeat_port
        try:
            sock, peers, new = self._heartbeats.add(resource, addresses, port)
        except OSError as e:
            self.log.error("heartbeat.unavailable", resource=resource, error=str(e))
            return
        if new and self._loop is not None:
            self._loop.add_reader(sock.fileno(), self.inbox.put, HeartbeatReadable(sock))
        if inst.repl is None:
            inst.repl = ReplicationWatch(
                inst.storage.replication_heartbeat, inst.cfg.advert_interval
            )
        inst.repl_peers, inst.repl_socket = peers, sock
        for peer in peers:  # at once: the peer must not see our adverts before it
            sock.send(peer, resource)
        self._heartbeat_due = min(self._heartbeat_due or now, now)
        self.log.info("heartbeat.started", resource=resource, peers=list(peers), port=port)

    def _read_heartbeats(self, sock: HeartbeatSocket, now: float) -> None:
        for resource, src in sock.read():
            inst = self.chains.by_resource.get(resource)
            if inst is not None and inst.repl is not None and src in inst.repl_peers:
                inst.repl.heartbeat(now)

    def _heartbeat_tick(self, now: float) -> None:
        """Send ours, then judge: every heartbeat queued is read first, so a late loop
        never takes its own lateness for the peer's silence."""
        for sock in self._heartbeats.sockets.values():
            self._read_heartbeats(sock, now)
        self._heartbeats.send()
        watched = [i for i in self.instances.values() if i.repl is not None]
        for inst in watched:
            self.chains.repl_tick(inst, now)
        intervals = [i.repl.interval for i in watched if i.repl is not None]
        self._heartbeat_due = now + min(intervals) if intervals else None

    def _keep_fencing(self, ev: KeepFencing) -> None:
        """One keeper task per frozen resource (fencing/keeper.py)."""
        task = self._keeping.get(ev.resource)
        if self._tasks is None or (task is not None and not task.done()):
            return
        if self._keeper is None:
            self.log.error(
                "fence.cannot_keep",
                instance=ev.instance,
                resource=ev.resource,
                reason="no [peer] section: drbdha cannot ask the peer",
                hint=f"once the peer's copy is Outdated: drbdadm resume-io {ev.resource}",
            )
            return
        watcher = self.chains.watchers.get(ev.resource)

        def frozen() -> bool:
            facts = watcher.facts() if watcher is not None else None
            return facts is not None and facts.frozen_for_fencing

        async def keep(keeper: Keeper = self._keeper) -> None:
            await keeper.keep(ev, frozen)

        self._keeping[ev.resource] = self.supervisor.once(
            self._tasks, f"fence_keeper:{ev.resource}", keep()
        )

    # ---- main loop -----------------------------------------------------------------------

    async def run(self) -> int:
        """The chain runners have a task group of their own, around the one of every other
        task: whatever fails beside the loop, they are still there to release the chains
        (a stop must never depend on a task that was cancelled)."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.TaskGroup() as runners:
                self._runners = runners
                try:
                    return await self._run_beside(loop)
                finally:
                    await self._shutdown()  # done already, unless the other group failed
                    for task in self._runner_tasks.values():
                        task.cancel()
        except BaseExceptionGroup as group:
            # The task group wraps whatever ended the run; callers (and their error
            # messages) expect the error itself, e.g. NetError for a missing interface.
            raise _first(group) from None
        finally:
            self._close(loop)

    async def _run_beside(self, loop: asyncio.AbstractEventLoop) -> int:
        """The loop, with the watchers, checks and one-shot tasks in their group."""
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                try:
                    return await self._run(loop)
                finally:
                    await self._shutdown()  # the watchers and checks still run meanwhile
                    for kind in (self._check_tasks, self._watch_tasks, self._crosscheck_tasks):
                        for task in kind.values():
                            task.cancel()
        finally:
            self._tasks = None

    async def _run(self, loop: asyncio.AbstractEventLoop) -> int:
        self.latches.load()
        if self.latches.load_error:
            self.log.error("latch.unreadable", error=self.latches.load_error)
        now = self.clock.monotonic()
        for cfg in self.config.vrrp_instances:
            self._add_instance(cfg)
        self._install_callbacks(loop)
        for inst in self.instances.values():
            await inst.runner.wait_found()  # every runner reconciles in its own task
        resume = await self._found(list(self.instances.values()), now)
        # The peer may be fencing us right now (its replication link failed as we started).
        await self._serve_peer()
        try:
            async with asyncio.timeout(FACTS_WAIT):
                await self.chains.wait_for_facts()
        except TimeoutError:
            self.log.warning("drbd.no_initial_state", wait_s=FACTS_WAIT)
        # Heartbeats before adverts: a restarted Primary whose adverts came back before its
        # heartbeat would look to its peer like a live master with the replication gone.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FACTS_WAIT):
                await self._dumped.wait()
        self._serve_metrics()
        await self._serve_control()
        now = self.clock.monotonic()
        for inst in self.instances.values():
            self._start_machine(inst, now, resume=inst.name in resume)
        # Everything allocated so far lives for the whole run; freezing it keeps the
        # collector from re-scanning it (full collections cost 13-30 ms otherwise).
        gc.freeze()
        self.log.info("daemon.started", instances=len(self.instances), pid=os.getpid())
        self.sd.ready(self._status_line())
        self._status_due = now + STATUS_INTERVAL
        while not self._stopping:
            await self._turn()
        return 0

    async def _turn(self) -> None:
        now = self.clock.monotonic()
        deadlines = (
            self._next_deadline(),
            self.sd.next_watchdog_due(now),
            self.handover.deadline(),
            self._status_due if self._status_dirty else None,
            self._heartbeat_due,
        )
        event = await self.inbox.get(min((d for d in deadlines if d is not None), default=None))
        now = self.clock.monotonic()
        if event is None:
            self._run_timers(now)
        else:
            await self._dispatch(event, now)
        self.handover.check(now)
        if self._heartbeat_due is not None and now >= self._heartbeat_due:
            self._heartbeat_tick(now)
        if self._status_dirty and now >= self._status_due:
            self._status_dirty = False
            self._status_due = now + STATUS_INTERVAL
            self.sd.status(self._status_line())
        self.sd.watchdog(now)  # only a loop that is turning feeds the watchdog

    async def _dispatch(self, event: Any, now: float) -> None:
        match event:
            case Readable(key):
                await self._read_socket(key, now)
            case NetlinkReadable():
                await self._read_netlink(now)
            case control.ControlRequest():
                await self._control_request(event, now)
            case Stop(sig):
                self.log.info("daemon.stopping", signal=sig)
                self.sd.stopping("stopping: resigning mastership")
                self._stopping = True
            case Reload():
                await self._reload(now)
            case StepReport():
                self.chains.on_step(event)
            case ChainReconciled():
                await self._reconciled(event, now)
            case ChainSettled(name):
                if name in self.instances:
                    self.chains.on_settled(self.instances[name], event, now)
            case DrbdChanged():
                self.chains.on_drbd(event, now)
            case PowerAction(action=action):
                self._spawn("power_action", power_action(action, self.log))
            case CheckResult(instance=name) if name in self.instances:
                self.chains.on_check(self.instances[name], event, now)
            case OutdateSelf():
                self._spawn(f"outdate_self:{event.instance}", self.chains.outdate_self(event))
            case HeartbeatReadable(sock):
                self._read_heartbeats(sock, now)
            case KeepFencing():
                self._keep_fencing(event)
            case ProbePeer():
                self._spawn(f"peer_probe:{event.instance}", self.probe.run(event))
            case PeerProbed(instance=name) if name in self.instances:
                self.probe.probed(self.instances[name], event)

    async def _read_socket(self, key: SocketKey, now: float) -> None:
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
            inst = instances.get(rx.payload[1]) if len(rx.payload) > 1 else None
            if inst is None:
                self.metrics.unmatched_packets.labels(key[0]).inc()
                continue
            self.apply(inst, inst.receive(rx, now), now)
            if inst.storage is not None:
                self.chains.heard(inst, now)

    async def _read_netlink(self, now: float) -> None:
        assert self._links is not None
        for ev in self._links.read():
            on_link = [i for i in self.instances.values() if i.cfg.interface == ev.ifname]
            if isinstance(ev, LinkEvent):
                self.log.info("link.changed", interface=ev.ifname, up=ev.up)
                for inst in on_link:
                    self.apply(inst, inst.machine.set_fault("link", not ev.up, now), now)
            elif isinstance(ev, AddressEvent):
                snapshots = await self._snapshots(on_link)
                for inst in on_link:
                    snap = snapshots.get((inst.cfg.interface, inst.cfg.family))
                    self.apply(inst, self._set_local(inst, snap, now), now)

    def apply(self, inst: Instance, effects: list[Any], now: float) -> None:
        """Carry out a machine's effects (without waiting: chain work goes to the runner)
        and re-arm its timer: call after every machine input (force-failover does too)."""
        if inst.machine.takeover_deferred != inst.deferred_logged:
            self._log_deferred(inst, now)
        if effects and inst.execute(effects, now) and self.sd.enabled:
            # Sent from _turn at most every STATUS_INTERVAL: a takeover of 1000 instances
            # must not build 1000 status lines.
            self._status_dirty = True
        self.probe.settle(inst)
        deadline = inst.machine.get_timer()
        if deadline != inst.scheduled:
            inst.scheduled = deadline
            if deadline is not None:
                heapq.heappush(self._heap, (deadline, next(self._seq), inst))

    def _log_deferred(self, inst: Instance, now: float) -> None:
        """One event when the master is gone by VRRP but we cannot take over, and one when
        that ends: the DRBD link says the peer is alive, our disk is not UpToDate, ..."""
        inst.deferred_logged = inst.machine.takeover_deferred
        if inst.deferred_logged:
            reasons = sorted(inst.machine.inhibitions) or ["chain_stopping"]
            self.log.warning("vrrp.takeover_deferred", instance=inst.name, reasons=reasons)
            self.probe.deferred(inst, now)
        else:
            self.log.info("vrrp.takeover_resumed", instance=inst.name)

    def _next_deadline(self) -> float | None:
        heap = self._heap
        while heap and heap[0][0] != heap[0][2].scheduled:
            heapq.heappop(heap)  # superseded entry
        return heap[0][0] if heap else None

    def _run_timers(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, inst = heapq.heappop(heap)
            if deadline != inst.scheduled:
                continue
            inst.scheduled = None
            self.metrics.loop_lateness.observe(now - deadline)
            self.apply(inst, inst.machine.handle_timer(now), now)

    # ---- control -------------------------------------------------------------------------

    async def _control_request(self, event: control.ControlRequest, now: float) -> None:
        if event.reply.done():
            return  # the client went away
        command = event.request.get("command")
        try:
            if command == control.STATUS:
                event.reply.set_result({"status": self.status_document(now)})
            elif command == control.FORCE_FAILOVER:
                self.handover.start(event, now)
            elif command == control.CLEAR_LATCH:
                event.reply.set_result(self._clear_latch(event.request, now))
            else:
                raise control.CommandError(f"unknown command {command!r}", "unknown_command")
        except control.CommandError as e:
            if not event.reply.done():
                event.reply.set_exception(e)

    def _status_line(self) -> str:
        """systemd's STATUS= from the machines alone (no registry scrape: it is cheap)."""
        return status.status_line(
            {
                "instances": [
                    {
                        "name": i.name,
                        "state": i.machine.state.value,
                        "faults": sorted(i.machine.faults),
                        "latches": [{"kind": k} for k in i.latches],
                        "warnings": i.warnings(),
                    }
                    for i in self.instances.values()
                ]
            }
        )

    def status_document(self, now: float) -> status.StatusDocument:
        counters = status.counters_by_instance(self.metrics.registry)
        wall = time.time()
        insts = []
        for i in self.instances.values():
            storage, latches, alerts = storage_status(i, wall)
            insts.append(
                status.instance_status(
                    i.cfg,
                    i.machine.snapshot(),
                    now,
                    counters=counters.get(i.name)
                    or status.no_counters(),  # one scrape above serves every instance
                    peer=i.peer_status(now),
                    vips_held=i.vip_up,
                    storage=storage,
                    latches=latches,
                    alerts=alerts,
                    warnings=i.warnings(),
                )
            )
        source = self.config.source
        return status.document(
            version=__version__,
            pid=os.getpid(),
            uptime_s=now - self._started_at,
            config_path=str(source) if source else None,
            instances=insts,
        )

    # ---- reload --------------------------------------------------------------------------

    async def _reload(self, now: float) -> None:
        """Validate the whole new file before applying any of it; a bad file changes
        nothing (drbd-reactor keeps the old config the same way)."""
        self.sd.reloading("reloading configuration")
        source = self.config.source
        try:
            if source is None:
                raise ConfigError([("config", "the daemon was started without a file")])
            new = load(source)
        except ConfigError as e:
            self.log.error(
                "config.reload_failed",
                path=str(source),
                problems=[f"{k}: {m}" for k, m in e.problems],
                action="kept the running configuration",
            )
            self.sd.ready(self._status_line())
            return
        changes = await self._apply_config(new, now)
        self.log.info("config.reloaded", path=str(source), **changes)
        self.sd.ready(self._status_line())

    async def _apply_config(self, new: Config, now: float) -> dict[str, list[str]]:
        if new.daemon != self.config.daemon or new.peer != self.config.peer:
            self.log.warning(
                "config.daemon_section_changed",
                hint="[daemon] and [peer] settings apply at the next restart",
            )
        old = self.instances
        wanted = {c.name: c for c in new.vrrp_instances}
        changes: dict[str, list[str]] = {"added": [], "removed": [], "updated": [], "restarted": []}
        restart = [
            n
            for n in old
            if n not in wanted
            or _needs_restart(old[n].cfg, wanted[n])
            or new.storage_of(wanted[n]) != old[n].storage  # a changed chain restarts
        ]
        for name in restart:
            await self._remove_instance(old[name], now)
            changes["restarted" if name in wanted else "removed"].append(name)
        self.config = Config(
            daemon=self.config.daemon,
            vrrp_instances=new.vrrp_instances,
            source=new.source,
            storage=new.storage,
            peer=self.config.peer,
        )
        for name, cfg in wanted.items():
            if name in self.instances:
                if self.instances[name].cfg != cfg:
                    self.instances[name].reconfigure(cfg)
                    self.apply(self.instances[name], [], now)
                    changes["updated"].append(name)
                continue
            # Its runner reconciles in its own task; the machine starts on its report
            # (ChainReconciled), so no other instance waits for drbdadm meanwhile.
            inst = self._add_instance(cfg)
            self._read_fencing([inst])
            if name not in changes["restarted"]:
                changes["added"].append(name)
        links = self._links
        if self._loop is not None and links is not None and links.ifnames != set(self._frames):
            self._watch_links(self._loop)
        return changes

    # ---- shutdown ------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        """Resign every master (priority 0) and release every chain in reverse, however we
        got here, waiting for each within its stop budget (systemd's stop timeout is
        extended to match). A second call (a task group failed during the first) releases
        only if the first did not get to the end."""
        if not self._released:
            await self._release_all()
            self._released = True
        if self._control is not None:
            await self._control.close()
        if self._peer_server is not None:
            await self._peer_server.close()

    async def _release_all(self) -> None:
        now = self.clock.monotonic()
        self._stopping = True  # however we got here: no machine starts from now on
        self._awaiting.clear()
        self.handover.abort("the daemon is stopping")
        instances = list(self.instances.values())
        self.sd.stopping("stopping: resigning and releasing storage")
        self.sd.extend_timeout(_release_budget(instances))
        for inst in instances:
            try:
                self.apply(inst, inst.machine.shutdown(now), now)
            except Exception:
                self.log.exception("daemon.shutdown_failed", instance=inst.name)
            inst.runner.want(False)
        if not await self._wait_released(instances):
            held = {i.name: list(i.runner.plan.held) for i in instances if i.runner.plan.held}
            self.log.critical("daemon.stopped_holding", held=held)

    def _close(self, loop: asyncio.AbstractEventLoop) -> None:
        for sock in self.sockets.values():
            loop.remove_reader(sock.fileno())
            sock.close()
        for sender in self._frames.values():
            sender.close()
        for hb in self._heartbeats.sockets.values():
            loop.remove_reader(hb.fileno())
        self._heartbeats.close()
        if self._links is not None:
            loop.remove_reader(self._links.fileno())
            self._links.close()
        self.addresses.close()
        self.inbox.close()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
        self.log.info("daemon.stopped")

    # ---- latches -------------------------------------------------------------------------

    def _clear_latch(self, req: dict[str, Any], now: float) -> dict[str, Any]:
        name, kind = req.get("instance"), req.get("kind")
        if kind is not None and kind not in LATCH_KINDS:
            raise control.CommandError("kind must be disk or split-brain", "malformed")
        targets = [i for i in self.instances.values() if name in (None, i.name)]
        if name is not None and not targets:
            raise control.CommandError(f"no instance named {name!r}", "refused")
        cleared, refused = [], []
        for inst in targets:
            for k in [k for k in list(inst.latches) if kind in (None, k)]:
                why = self.chains.clear_latch(inst, k, now)
                if why is None:
                    cleared.append({"instance": inst.name, "kind": k})
                else:
                    refused.append(f"{inst.name} {k}: {why}")
        if refused:
            raise control.CommandError("; ".join(refused), "refused")
        if not cleared:
            raise control.CommandError("no latch is set", "refused")
        return {"cleared": cleared}


def _at_rest(runner: Runner) -> bool:
    """Reconciled (so what it holds is known), and settled or holding nothing."""
    plan = runner.plan
    return runner.found is not None and (plan.settled() is not None or not plan.held)


def _release_budget(instances: list[Instance]) -> float:
    """How long releasing these chains may take: they stop side by side, each within its
    own budget."""
    return max((i.runner.stop_budget for i in instances), default=0.0) + STOP_MARGIN


def _first(group: BaseExceptionGroup) -> BaseException:
    e: BaseException = group
    while isinstance(e, BaseExceptionGroup):
        e = e.exceptions[0]
    return e


def _needs_restart(old: VrrpInstanceConfig, new: VrrpInstanceConfig) -> bool:
    differs = {k for k in old.__dataclass_fields__ if getattr(old, k) != getattr(new, k)}
    return not differs <= RELOADABLE


def run(config: Config) -> int:
    try:
        return asyncio.run(Daemon(config).run())
    except DrbdhaError as e:
        logs.get().error("daemon.failed", error=str(e))
        return 1
    except OSError as e:
        logs.get().error("daemon.failed", error=str(e), errno=e.errno)
        return 1
