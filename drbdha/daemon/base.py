"""The daemon's state, and what every room of it uses: carrying out a machine's effects
(`apply`), the instance timers' heap, supervised one-shot tasks. The rooms build on it, one
job each: instances.py (adding, finding, removing instances), serving.py (the sockets and
servers beside VRRP, the heartbeat, control and status), reload.py, and loop.py (the loop).

Rules: signal handlers, fd callbacks and control requests only put events into the inbox;
only the main loop touches a Machine; every machine input is followed by carrying out its
effects and re-arming that instance's timer (`apply`). Instance timers live in one heap, so a
turn costs O(log n) however many instances run.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from drbdha import control, logs
from drbdha.alone import AloneStore
from drbdha.clock import AliveMark, Clock, MonotonicClock
from drbdha.config import Config
from drbdha.daemon.events import (
    InboxEvent,
    Readable,
    SocketKey,
)
from drbdha.daemon.handover import Handover
from drbdha.daemon.inbox import Inbox
from drbdha.daemon.instance import Instance
from drbdha.daemon.probe import PeerProbe
from drbdha.daemon.stall import StallWatch
from drbdha.daemon.storage import Chains
from drbdha.daemon.supervise import Supervisor
from drbdha.defaults import ALIVE_NAME
from drbdha.fencing.keeper import Keeper
from drbdha.fencing.server import PeerServer
from drbdha.fencing.watch import PeerWatch
from drbdha.latches import LatchStore
from drbdha.metrics import Metrics
from drbdha.net.addresses import Addresses
from drbdha.net.frame_sender import FrameSender
from drbdha.net.heartbeat import Heartbeats
from drbdha.net.links import LinkWatcher
from drbdha.net.vrrp_socket import VrrpSocket
from drbdha.systemd import Notifier

STATUS_INTERVAL = 1.0  # seconds between systemd STATUS= updates
FACTS_WAIT = 5.0  # seconds to wait at start for DRBD's initial state before the election
STOP_MARGIN = 5.0  # seconds on top of a chain's stop timeouts when waiting for it


@dataclass(frozen=True)
class Releasing:
    """Chains being released as a state of the loop (a reload's removals, or shutdown)."""

    instances: list[Instance]
    deadline: float  # the slowest stop budget, plus STOP_MARGIN
    then: Callable[[list[Instance], float], None]  # with the instances still held


class DaemonBase:
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
        self.latches = LatchStore(config.daemon.state_dir / "latches.json")
        self.alone = AloneStore(config.daemon.state_dir / "wrote-alone.json")
        self.alive = AliveMark(config.daemon.control_socket.parent / ALIVE_NAME)
        # With a [peer] section: the fence-peer handler DRBD runs during a takeover asks
        # us, and finds the peer's silence measured since our DRBD step began.
        self.peer_watch = PeerWatch(config.peer, self.clock) if config.peer else None
        self.chains = Chains(
            self.apply,
            self.inbox.put,
            self.latches,
            self.metrics,
            self.log,
            self.clock,
            self.peer_watch,
            self.alone,
        )
        facts = lambda inst: self.chains.state(inst).drbd  # noqa: E731
        self.handover = Handover(self.apply, self.instances, facts, self.log)
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
        # Once started: the stall watch, and its task and the reach watch's (reach.py).
        self._stall: tuple[StallWatch, list[asyncio.Task[None]]] | None = None
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
        self._peer_key: bytes | None = None  # its secret, read once at start
        self._keeping: dict[str, asyncio.Task[None]] = {}  # resource -> its keeper task
        self._metrics_server: Any = None
        self._stopping = False
        self._released = False  # shutdown released every chain (or gave up waiting)
        self._releasing: Releasing | None = None  # chains the loop is releasing
        self._later: list[InboxEvent] = []  # a reload or stop asked for during a release
        self._status_dirty = False  # a state changed since systemd's STATUS= was last sent
        self._status_due = float("-inf")
        self._started_at = self.clock.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None

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
            self.metrics.observe_lateness(now - deadline)
            self.apply(inst, inst.machine.handle_timer(now), now)
