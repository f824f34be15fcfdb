"""Beside VRRP: the sockets' callbacks, the control socket, the peer channel and the
fencing read it starts (with the replication heartbeat and the fence keeper), and what the
daemon answers: status, systemd's STATUS= line, clear-latch."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

from drbdha import __version__, control, status
from drbdha.daemon.events import (
    HeartbeatReadable,
    NetlinkReadable,
    Reload,
    Stop,
)
from drbdha.daemon.instance import Instance
from drbdha.daemon.instances import InstanceRoom
from drbdha.daemon.stale import PeerServes
from drbdha.daemon.stall import WINDOW as STALL_WINDOW
from drbdha.daemon.storage import storage_status
from drbdha.fencing import handler, wire
from drbdha.fencing import status as fencing_status
from drbdha.fencing.keeper import Keeper, KeepFencing
from drbdha.fencing.secret import read_secret
from drbdha.fencing.server import PeerServer
from drbdha.latches import KINDS as LATCH_KINDS
from drbdha.net.heartbeat import HeartbeatSocket
from drbdha.net.links import LinkWatcher
from drbdha.resources.repl_watch import ReplicationWatch

STALE_ASK_TIMEOUT = 5.0  # seconds for asking the peer at start (the handler's own ask)


class ServingRoom(InstanceRoom):
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
            key = self._peer_key = read_secret(peer.secret_file)
            self._keeper = Keeper(
                peer,
                key,
                self.log,
                count=lambda inst, outcome: self.metrics.fence_keeper.labels(inst, outcome).inc(),
                peer_serves=lambda ev, a: self.inbox.put(
                    PeerServes(ev.resource, a.outcome, a.detail)
                ),
            )
            self._peer_server = PeerServer(
                peer,
                key,
                lambda: frozenset(self.chains.watchers),
                lambda res: w.facts() if (w := self.chains.watchers.get(res)) else None,
                self.log,
                wrote_alone=self._wrote_alone,
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
        chains = [(i, i.storage) for i in instances if i.storage is not None]
        if not chains:
            self._dumped.set()
            return

        async def read() -> None:
            try:
                for inst, storage in chains:
                    resource = storage.drbd_resource
                    summary, addresses = await fencing_status.read(
                        resource,
                        inst.cfg.advert_interval,
                        storage.replication_heartbeat,
                        self.config.peer,
                    )
                    if (st := self.chains.states.get(inst.name)) is None:
                        continue  # removed by a reload meanwhile
                    st.fencing = summary
                    if addresses:
                        # On the loop's thread, between two awaits of the task: no inbox
                        # round trip, so at start the heartbeat is going before the first
                        # advert (see _run).
                        self._start_heartbeat(resource, addresses, self.clock.monotonic())
            finally:
                self._dumped.set()

        self._spawn("fencing_status", read())

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
        st = self.chains.state(inst)
        if st.repl is None:
            st.repl = ReplicationWatch(inst.storage.replication_heartbeat, inst.cfg.advert_interval)
        st.repl_peers = peers
        for peer in peers:  # at once: the peer must not see our adverts before it
            sock.send(peer, resource)
        self._heartbeat_due = min(self._heartbeat_due or now, now)
        self.log.info("heartbeat.started", resource=resource, peers=list(peers), port=port)

    def _read_heartbeats(self, sock: HeartbeatSocket, now: float) -> None:
        for resource, src in sock.read():
            inst = self.chains.by_resource.get(resource)
            st = self.chains.state(inst) if inst is not None else None
            if st is not None and st.repl is not None and src in st.repl_peers:
                st.repl.heartbeat(now)

    def _heartbeat_tick(self, now: float) -> None:
        """Send ours, then judge: every heartbeat queued is read first, so a late loop
        never takes its own lateness for the peer's silence."""
        for sock in self._heartbeats.sockets.values():
            self._read_heartbeats(sock, now)
        self._heartbeats.send()
        intervals = []
        for inst in self.instances.values():
            watch = self.chains.state(inst).repl
            if watch is not None:
                self.chains.repl_tick(inst, now)
                intervals.append(watch.interval)
        self._heartbeat_due = now + min(intervals) if intervals else None

    async def _stale_at_start(self, resume: set[str], now: float) -> None:
        """A chain found serving with DRBD's I/O frozen for fencing (a restart after a
        freeze: the watchdog killed the daemon before it): ask the peer once before resuming
        as master. A peer that serves means this copy is stale (daemon/stale.py): no
        resuming, the chain goes, and taking the role would only make the peer hand over."""
        peer, key = self.config.peer, self._peer_key
        for name in sorted(resume):
            inst = self.instances[name]
            res = inst.storage.drbd_resource if inst.storage is not None else None
            watcher = self.chains.watchers.get(res) if res is not None else None
            facts = watcher.facts() if watcher is not None else None
            if res is None or facts is None or not facts.frozen_for_fencing:
                continue
            if peer is None or key is None:
                continue
            try:
                async with asyncio.timeout(STALE_ASK_TIMEOUT):
                    answer = await asyncio.to_thread(handler.ask, peer, key, res)
            except TimeoutError:
                continue  # as before: resumed, and the keeper asks again
            if answer.outcome in wire.PEER_SERVES:
                resume.discard(name)
                inst.runner.want(False)
                self.chains.state(inst).drbd = facts
                self.chains.stale_copy(PeerServes(res, answer.outcome, answer.detail), now)

    def _wrote_alone(self, resource: str) -> bool:
        inst = self.chains.by_resource.get(resource)
        st = self.chains.states.get(inst.name) if inst is not None else None
        return st is not None and st.wrote_alone

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
            elif command == control.FENCE_PEER:
                self._fence_for_handler(event)
            else:
                raise control.CommandError(f"unknown command {command!r}", "unknown_command")
        except control.CommandError as e:
            if not event.reply.done():
                event.reply.set_exception(e)

    def _fence_for_handler(self, event: control.ControlRequest) -> None:
        """DRBD's fence-peer handler asks us (cli.py `_fence_peer`): its own job, in a
        thread beside the loop, with the key we hold and the silence our peer watch has
        measured since the DRBD step began (fencing/watch.py). The answer is the handler's
        (outcome, detail, the peer's reply); the exit code is the handler's to give."""
        resource = event.request.get("resource")
        if not isinstance(resource, str) or not resource:
            raise control.CommandError("resource must be a non-empty string", "malformed")
        self._same_config(event.request.get("config"))
        why = handler.refusal(self.config, resource)
        peer, key = self.config.peer, self._peer_key
        if why is None and (peer is None or key is None):
            why = "the peer channel is not set up yet"
        watch = self.peer_watch
        since = watch.silent_since() if watch is not None else None
        t0 = self.clock.monotonic()

        async def fence() -> None:
            if why is not None:
                answer = handler.Answer(wire.FAILED, why)
            else:
                assert peer is not None
                assert key is not None
                try:
                    answer = await asyncio.to_thread(
                        handler.fence_peer_with, peer, key, resource, since
                    )
                except Exception as e:  # answered all the same: the handler falls back
                    answer = handler.Answer(wire.FAILED, f"{type(e).__name__}: {e}")
            stalled = self.chains.distrusts_silence(resource, self.clock.monotonic())
            if answer.outcome == wire.UNREACHABLE and stalled is not None:
                # daemon/stall.py: we were stopped; the peer may have served meanwhile.
                answer = handler.Answer(
                    wire.FAILED,
                    f"the peer is silent, but this node was stalled {stalled:.1f} s (within "
                    f"the last {STALL_WINDOW:g} s, or its copy is still suspect since): the "
                    "peer may have served meanwhile",
                )
            # The handler's event, logged here with the answer it exits on: the handler logs
            # nothing when we answered (importing systemd.journal was a good part of its
            # start-up, which DRBD's promotion or a frozen Primary's I/O waits for).
            level = handler.LOG_LEVEL.get(answer.outcome, "error")
            getattr(self.log, level)(
                "fence.peer",
                resource=resource,
                peer=None if peer is None else str(peer.address),
                via="daemon",
                outcome=answer.outcome,
                exit_code=answer.exit_code,
                detail=answer.detail,
                peer_disk=answer.reply.get("disk"),
                peer_role=answer.reply.get("role"),
                silent_for_ms=None if since is None else round((t0 - since) * 1000, 1),
                took_ms=round((self.clock.monotonic() - t0) * 1000, 1),
            )
            if answer.outcome in wire.PEER_SERVES:
                self.inbox.put(PeerServes(resource, answer.outcome, answer.detail))
            if not event.reply.done():
                reply = {"outcome": answer.outcome, "detail": answer.detail}
                event.reply.set_result({**reply, "reply": answer.reply})

        self._spawn(f"fence_peer:{resource}", fence())

    def _same_config(self, asked: object) -> None:
        """A handler given another configuration (`drbdha -c OTHER fence-peer`: another key,
        another peer) is refused, and does its job from that file itself."""
        source = self.config.source
        ours = os.path.realpath(source) if source else None
        if asked is not None and (not isinstance(asked, str) or asked != ours):
            raise control.CommandError(
                f"this daemon runs from {ours}, not from {asked}", "other_config"
            )

    def _status_line(self) -> str:
        """systemd's STATUS= from the machines alone (no registry scrape: it is cheap)."""
        return status.status_line(
            {
                "instances": [
                    {
                        "name": i.name,
                        "state": i.machine.state.value,
                        "faults": sorted(i.machine.faults),
                        "latches": [{"kind": k} for k in self.chains.state(i).latches],
                        "warnings": i.warnings(),
                    }
                    for i in self.instances.values()
                ]
            }
        )

    def status_document(self, now: float) -> status.StatusDocument:
        counters = status.counters_by_instance(self.metrics.registry)
        wall = self.clock.wall()
        insts = []
        for i in self.instances.values():
            storage, latches, alerts = storage_status(i, self.chains.state(i), wall)
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

    def _clear_latch(self, req: dict[str, Any], now: float) -> dict[str, Any]:
        name, kind = req.get("instance"), req.get("kind")
        if kind is not None and kind not in LATCH_KINDS:
            raise control.CommandError("kind must be disk or split-brain", "malformed")
        targets = [i for i in self.instances.values() if name in (None, i.name)]
        if name is not None and not targets:
            raise control.CommandError(f"no instance named {name!r}", "refused")
        cleared, refused = [], []
        for inst in targets:
            for k in [k for k in list(self.chains.state(inst).latches) if kind in (None, k)]:
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
