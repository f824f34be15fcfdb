"""The one asyncio loop: start-up, the inbox turns, shutdown (daemon/base.py has the rules).
systemd's watchdog is fed from the loop itself, so a stuck loop gets the service killed."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os

from prometheus_client import start_http_server

from drbdha import control, logs
from drbdha.chain.runner import ChainReconciled, ChainSettled, StepReport
from drbdha.config import Config
from drbdha.daemon.base import FACTS_WAIT, STATUS_INTERVAL
from drbdha.daemon.events import (
    HeartbeatReadable,
    InboxEvent,
    NetlinkReadable,
    Readable,
    Reload,
    SocketKey,
    Stop,
)
from drbdha.daemon.health import CheckResult
from drbdha.daemon.instance import Instance
from drbdha.daemon.instances import _release_budget
from drbdha.daemon.power import PowerAction, power_action
from drbdha.daemon.probe import PeerProbed, ProbePeer
from drbdha.daemon.reach import ClientsHeard, ReachWatch
from drbdha.daemon.reload import ReloadRoom
from drbdha.daemon.stale import (
    HoldApart,
    PeerServes,
    ResumeToRelease,
    hold_apart,
    resume_to_release,
)
from drbdha.daemon.stall import THRESHOLD, Stalled, StallWatch
from drbdha.daemon.storage import OutdateSelf
from drbdha.errors import DrbdhaError, MalformedPacket
from drbdha.fencing.keeper import KeepFencing
from drbdha.net.links import AddressEvent, LinkEvent
from drbdha.resources.drbd import DrbdChanged
from drbdha.vrrp.events import State


class Daemon(ReloadRoom):
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
                    for task in self._stall[1] if self._stall else ():
                        task.cancel()  # the task group waits for them otherwise
        finally:
            self._tasks = None

    async def _run(self, loop: asyncio.AbstractEventLoop) -> int:
        self.latches.load()
        if self.latches.load_error:
            self.log.error("latch.unreadable", error=self.latches.load_error)
        self.alone.load()
        if self.alone.error:
            self.log.error("drbd.wrote_alone_unreadable", error=self.alone.error)
        now = self.clock.monotonic()
        for cfg in self.config.vrrp_instances:
            self._add_instance(cfg)
        left = self.alive.left_behind()
        if left is not None and left >= THRESHOLD:
            # The daemon before us did not stop cleanly (a crash, the watchdog after a
            # freeze): the time since it last ran may have been a freeze of the node.
            self.chains.stalled(Stalled(left), now)
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
        await self._stale_at_start(resume, now)
        for inst in self.instances.values():
            self._start_machine(inst, now, resume=inst.name in resume)
        # Everything allocated so far lives for the whole run; freezing it keeps the
        # collector from re-scanning it (full collections cost 13-30 ms otherwise).
        gc.freeze()
        if self._tasks is not None:
            watch = StallWatch(self.inbox.put, self.clock, self.alive)
            reach = ReachWatch(self.chains.unheld, self.inbox.put, self.clock)
            keep = self.supervisor.keep
            tasks = [keep(self._tasks, "stall_watch", watch.run)]
            tasks.append(keep(self._tasks, "reach_watch", reach.run))
            self._stall = (watch, tasks)
        self.log.info("daemon.started", instances=len(self.instances), pid=os.getpid())
        self.sd.ready(self._status_line())
        self._status_due = now + STATUS_INTERVAL
        while not self._released:
            await self._turn()
        return 0

    async def _turn(self) -> None:
        now = self.clock.monotonic()
        # The earliest of these (None: no deadline), by plain comparisons: a master at 10 ms
        # computes it 100 times a second.
        deadline = self._next_deadline()
        for due in (
            self.sd.next_watchdog_due(now),
            self.handover.deadline(),
            self._status_due if self._status_dirty else None,
            self._heartbeat_due,
            self._release_wake(now),
        ):
            if due is not None and (deadline is None or due < deadline):
                deadline = due
        event = await self.inbox.get(deadline)
        now = self.clock.monotonic()
        if self._stall is not None and (stalled := self._stall[0].check(now)):
            self._stalled(stalled, now)  # before the timers and packets that waited for us
        if event is None:
            self._run_timers(now)
        else:
            await self._dispatch(event, now)
        self.handover.check(now)
        self._check_release(now)
        if self._heartbeat_due is not None and now >= self._heartbeat_due:
            self._heartbeat_tick(now)
        if self._status_dirty and now >= self._status_due:
            self._status_dirty = False
            self._status_due = now + STATUS_INTERVAL
            self.sd.status(self._status_line())
        self.sd.watchdog(now)  # only a loop that is turning feeds the watchdog

    async def _dispatch(self, event: InboxEvent, now: float) -> None:
        if isinstance(event, Reload | Stop) and self._releasing is not None:
            if not self._stopping:
                self._later.append(event)  # after the reload's release under way
            return  # stopping: the release under way is the shutdown's
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
                self._begin_shutdown(now)
            case Reload() if not self._stopping:
                self._reload(now)
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
            case PeerServes():
                self.chains.stale_copy(event, now)
            case Stalled():
                self._stalled(event, now)
            case HoldApart():
                self._spawn(f"hold_apart:{event.resource}", hold_apart(event, self.log))
            case ResumeToRelease():
                self._spawn(
                    f"resume_to_release:{event.resource}", resume_to_release(event, self.log)
                )
            case ProbePeer():
                self._spawn(f"peer_probe:{event.instance}", self.probe.run(event))
            case PeerProbed(instance=name) if name in self.instances:
                self.probe.probed(self.instances[name], event)
            case ClientsHeard():
                self.chains.clients_heard(event, now)

    def _stalled(self, event: Stalled, now: float) -> None:
        self.chains.stalled(event, now)
        for inst in self.instances.values():
            inst.machine.resumed(now)

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
            if inst.storage is not None and inst.machine.state is State.MASTER:
                await self.chains.last_look(inst, now)
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

    def _begin_shutdown(self, now: float) -> None:
        """Resign every master (priority 0) and release every chain in reverse, within its
        stop budget (systemd's stop timeout is extended to match), as a state of the loop:
        it turns on, serving reports, DRBD events and status, until `_released`."""
        self._stopping = True  # no machine starts from now on
        self._awaiting.clear()
        self.handover.abort("the daemon is stopping")
        instances = list(self.instances.values())
        self.sd.stopping("stopping: resigning and releasing storage")
        self.sd.extend_timeout(_release_budget(instances))

        def released(unreleased: list[Instance], _now: float) -> None:
            if unreleased:
                held = {i.name: list(i.runner.plan.held) for i in instances if i.runner.plan.held}
                self.log.critical("daemon.stopped_holding", held=held)
            self._released = True

        self._releasing = None  # a reload's removals are part of this release now
        self._release(instances, now, released)

    async def _shutdown(self) -> None:
        """However the run ended: the chains released, then the servers closed. After a
        normal stop the loop has released them already; if the loop itself failed (a task
        beside it raised), they are released here without it."""
        if not self._released:
            if not self._stopping or self._releasing is None:
                self._begin_shutdown(self.clock.monotonic())
            await self._release_without_loop()
        if self._control is not None:
            await self._control.close()
        if self._peer_server is not None:
            await self._peer_server.close()

    async def _release_without_loop(self) -> None:
        """Wait for the release with the loop gone: the runners act in their own task group;
        of the inbox only their reports are still read (nothing else may act now)."""
        while not self._released:
            now = self.clock.monotonic()
            self.sd.watchdog(now)  # a 30 s demote must not look hung
            self._check_release(now)
            if self._released:
                return
            event = await self.inbox.get(self._release_wake(now))
            if isinstance(event, StepReport):
                self.chains.on_step(event)

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
        self.alive.clear()  # a clean stop: the next daemon counts no stall
        self.log.info("daemon.stopped")


def _first(group: BaseExceptionGroup) -> BaseException:
    e: BaseException = group
    while isinstance(e, BaseExceptionGroup):
        e = e.exceptions[0]
    return e


def run(config: Config) -> int:
    try:
        return asyncio.run(Daemon(config).run())
    except DrbdhaError as e:
        logs.get().error("daemon.failed", error=str(e))
        return 1
    except OSError as e:
        logs.get().error("daemon.failed", error=str(e), errno=e.errno)
        return 1
