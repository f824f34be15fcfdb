"""Instances at run time: their sockets and tasks, what their runners found a previous run
left up, starting their machines, and removing them (bounded by their chains' release)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

from drbdha.chain.runner import ChainReconciled, Runner
from drbdha.config import VrrpInstanceConfig
from drbdha.daemon import health
from drbdha.daemon.base import STOP_MARGIN, DaemonBase, Releasing
from drbdha.daemon.events import Readable, SocketKey
from drbdha.daemon.instance import Instance, family_of
from drbdha.net import NetError
from drbdha.net.addresses import AddressSnapshot
from drbdha.net.frame_sender import FrameSender
from drbdha.net.vip import VipStep
from drbdha.net.vrrp_socket import VrrpSocket
from drbdha.resources.drbd import DrbdStep
from drbdha.resources.drbd_crosscheck import CrossCheck
from drbdha.vrrp.events import State

RELEASE_POLL = 0.1  # seconds: a release is looked at this often, reports or not


class InstanceRoom(DaemonBase):
    def _on_readable(self, key: SocketKey) -> None:
        # The reader callback is level-triggered: it fires on every loop pass until the main
        # loop has drained the socket, so only one Readable per socket is kept queued.
        if key not in self._pending:
            self._pending.add(key)
            self.inbox.put(self._readable[key])

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
            wall=self.clock.wall,
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
        checked = self.chains.state(inst).health
        if checked is not None and inst.name not in self._check_tasks:
            is_up, put = inst.runner.is_up, self.inbox.put
            checks = functools.partial(health.run_checks, checked, is_up, put)
            name = f"health_checks:{inst.name}"
            self._check_tasks[inst.name] = keep(self._tasks, name, checks)
        for res, watcher in self.chains.watchers.items():
            if res not in self._watch_tasks:
                self._watch_tasks[res] = keep(self._tasks, f"drbd_watcher:{res}", watcher.run)
                stale = self.metrics.drbd_watcher_stale.labels(res).inc
                check = CrossCheck(watcher, self.log, stale).run_forever
                self._crosscheck_tasks[res] = keep(self._tasks, f"drbd_crosscheck:{res}", check)

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
        if DrbdStep.name in held and self._drbd_role(inst) in (None, "Primary"):
            self.log.warning("chain.reconciled", instance=inst.name, held=list(held))
            return True
        if held:
            inst.runner.want(False)  # the runner task removes it before anything else
            self.log.warning(
                "vip.reconciled" if held == (VipStep.name,) else "chain.stale_steps",
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
        if resume and inst.machine.state is not State.MASTER:
            # Found serving, but not to be master (an inhibition: a latch, a Primary peer,
            # a fault): what the previous run left up goes, the VIP first. The machine
            # starting as backup asks for nothing, and a chain with no wish stays as found.
            self.log.warning(
                "chain.released_at_start", instance=inst.name, state=inst.machine.state.value
            )
            inst.runner.want(False)

    async def _reconciled(self, ev: ChainReconciled, now: float) -> None:
        """A runner added by a reload found what a previous run left: its machine starts.
        (At start-up, run() waits for every runner instead: nothing advertises yet.)"""
        if self._stopping or self._awaiting.get(ev.instance) != ev.serial:
            return  # stopping, started already, or a report of a runner since replaced
        inst = self.instances[ev.instance]
        resume = await self._found([inst], now)
        self._start_machine(inst, now, resume=inst.name in resume)

    def _release(
        self, instances: list[Instance], now: float, then: Callable[[list[Instance], float], None]
    ) -> None:
        """Shut these machines down and release their chains while the loop turns on (it
        serves step reports, DRBD events, status and the other instances' adverts
        meanwhile); `then(unreleased, now)` once they rest (unreleased empty), or with
        those that do not when one is stuck or the stop budget is over. One release at a
        time: a reload or stop asked for meanwhile waits in `_later` (loop.py)."""
        assert self._releasing is None
        for inst in instances:
            try:
                self.apply(inst, inst.machine.shutdown(now), now)
            except Exception:  # the chain must be released all the same
                self.log.exception("daemon.shutdown_failed", instance=inst.name)
            inst.runner.want(False)
        self._releasing = Releasing(instances, now + _release_budget(instances), then)

    def _release_wake(self, now: float) -> float | None:
        """When the loop must look at a release next, if one is under way."""
        r = self._releasing
        return None if r is None else min(r.deadline, now + RELEASE_POLL)

    def _check_release(self, now: float) -> None:
        """After every turn: finish the release once its chains rest (or give up)."""
        r = self._releasing
        if r is None:
            return
        unreleased = [i for i in r.instances if not _at_rest(i.runner)]
        stuck = any(i.runner.plan.stuck for i in unreleased)
        if unreleased and not stuck and now < r.deadline:
            return
        self._releasing = None
        r.then(unreleased, now)
        later, self._later = self._later, []
        for event in later:
            self.inbox.put(event)

    def _forget(self, inst: Instance) -> None:
        """The last of a removed instance, once its chain is released (or gave up)."""
        for tasks in (self._runner_tasks, self._check_tasks):
            task = tasks.pop(inst.name, None)
            if task is not None:
                task.cancel()
        self._awaiting.pop(inst.name, None)
        self.chains.forget(inst)
        self.probe.state.pop(inst.name, None)
        del self.instances[inst.name]
        del self.by_vrid[(inst.cfg.interface, family_of(inst.cfg))][inst.cfg.vrid]
        inst.scheduled = None

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


def _at_rest(runner: Runner) -> bool:
    """Reconciled (so what it holds is known), and settled or holding nothing."""
    plan = runner.plan
    return runner.found is not None and (plan.settled() is not None or not plan.held)


def _release_budget(instances: list[Instance]) -> float:
    """How long releasing these chains may take: they stop side by side, each within its
    own budget."""
    return max((i.runner.stop_budget for i in instances), default=0.0) + STOP_MARGIN
