"""The daemon's side of the storage chain: building each instance's steps and runner, and
turning what the runner and the DRBD watcher report into machine inputs.

Rules:
- Only the main loop calls in here (inbox events), and every machine input goes through
  `apply`, as everywhere in the daemon.
- A failed takeover resigns with a back-off; a failed stop is never swallowed: it becomes
  the chain's `on_demote_failure` policy (FAULT until restarted, or reboot/poweroff).
- DRBD facts become inhibitions, latches and alerts through guard.assess() (pure).
- The observation rule: a Secondary whose DRBD link to a Primary peer is lost, and that
  then still hears that peer's adverts, knows the Primary is alive and writing what it
  lacks; it outdates its own copy at once, so it cannot be promoted on stale data later.
  This is all an unfenced setup has; with `drbdha fence-peer` the Primary's handler
  outdates us first (and DRBD holds its I/O until then).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from drbdha import status
from drbdha.alone import AloneStore
from drbdha.chain.plan import Action
from drbdha.chain.runner import ChainSettled, Runner, StepReport
from drbdha.chain.step import Described
from drbdha.clock import Clock
from drbdha.daemon import compose as steps
from drbdha.daemon.health import CheckResult, Health
from drbdha.daemon.instance import Instance
from drbdha.daemon.power import SYSRQ, PowerAction
from drbdha.daemon.reach import LastData
from drbdha.daemon.storage_state import StorageState
from drbdha.daemon.suspicion import Suspicion
from drbdha.errors import LatchError
from drbdha.fencing.keeper import KeepFencing
from drbdha.latches import KINDS as LATCH_KINDS
from drbdha.latches import Latch, LatchStore
from drbdha.metrics import Metrics
from drbdha.net import tickle
from drbdha.net.addresses import Addresses
from drbdha.net.vip import VipStep
from drbdha.resources import drbd
from drbdha.resources import drbd_guard as guard
from drbdha.resources.drbd import DrbdChanged, DrbdWatcher, PeerWatch
from drbdha.resources.drbd_events import Resource
from drbdha.vrrp.events import State

IPAddress = IPv4Address | IPv6Address
Apply = Callable[[Instance, list[Any], float], None]
IO_FROZEN = (
    "I/O frozen: fencing the peer (DRBD holds every write until the peer's copy is "
    "outdated; drbdha asks the peer's drbdha every second)"
)
OUTDATE_RETRY = 2.0  # seconds between two outdates of a stalled copy
OUTDATE_TIMEOUT = 20.0  # seconds for outdating our own copy (a few drbdadm runs)


class Chains(Suspicion):
    def __init__(  # noqa: PLR0917 (the daemon's collaborators, passed once)
        self,
        apply: Apply,
        put: Callable[[object], None],
        latches: LatchStore,
        metrics: Metrics,
        log: Any,
        clock: Clock,
        peer_watch: PeerWatch | None = None,
        alone: AloneStore | None = None,
    ) -> None:
        self.apply = apply
        self.alone = alone or AloneStore(None)
        self.peer_watch = peer_watch
        self.put = put
        self.latches = latches
        self.metrics = metrics
        self.log = log
        self.clock = clock
        self.watchers: dict[str, DrbdWatcher] = {}
        self.by_resource: dict[str, Instance] = {}
        self.states: dict[str, StorageState] = {}  # instance name -> what we know of it
        self._series: dict[str, list[tuple[Any, tuple[str, ...], float]]] = {}
        self.last_data: LastData = tickle.last_data  # reach.py's look, for `last_look`

    # ---- building ------------------------------------------------------------------------

    def build(self, inst: Instance, addresses: Addresses, peer: IPAddress | None = None) -> None:
        """Give `inst` its steps and runner (and a DRBD watcher for its resource); `peer`:
        the [peer] section's address, one of the masters the observation rule believes."""
        st = self.states[inst.name] = StorageState()
        st.trusted_masters = frozenset(inst.cfg.unicast_peers) | ({peer} if peer else set())
        watcher = None
        if inst.storage is not None:
            res = inst.storage.drbd_resource
            watcher = self.watchers.get(res) or DrbdWatcher(res, self.put, self.log)
            self.watchers[res] = watcher
            self.by_resource[res] = inst
            st.wrote_alone = res in self.alone.held
            st.holding = res in self.alone.holding
            inst.machine.hold_for_data(st.holding, self.clock.monotonic())
            st.latches = self.latches.of(inst.name)
            if self.latches.load_error:
                # Latches we cannot read must not read as "none": stay out until the
                # operator has looked (clear-latch rewrites the file).
                reason = f"latch file unreadable: {self.latches.load_error}"
                st.latches["disk"] = Latch("disk", reason, self.clock.wall())
        split_brain = lambda: "split-brain" in st.latches  # noqa: E731
        chain = steps.build(
            inst, addresses, watcher, self.log, split_brain=split_brain, peer_watch=self.peer_watch
        )
        inst.runner = Runner(inst.name, chain, self.put, self.clock)
        if inst.storage is not None:
            st.health = Health(inst.name, inst.storage)

    # ---- health checks -------------------------------------------------------------------

    def state(self, inst: Instance) -> StorageState:
        return self.states[inst.name]

    def on_check(self, inst: Instance, ev: CheckResult, now: float) -> None:
        st = self.states[inst.name]
        state = st.health.states.get(ev.check) if st.health else None
        if state is None or not state.result(ev.ok, ev.detail):
            return
        self.metrics.check_failing.labels(inst.name, ev.check).set(1 if state.failing else 0)
        if state.failing:
            self.log.warning("check.failing", instance=inst.name, check=ev.check, detail=ev.detail)
        else:
            self.log.info("check.healthy", instance=inst.name, check=ev.check)
        self._apply_health(inst, now, damp=state.failing)

    def reset_builtin_checks(self, inst: Instance, now: float) -> None:
        """The chain went down: what the built-in checks said about it no longer holds."""
        st = self.states[inst.name]
        if st.health is None:
            return
        cleared = [n for n, s in st.health.states.items() if s.builtin and s.reset()]
        for name in cleared:
            self.metrics.check_failing.labels(inst.name, name).set(0)
        if cleared:
            self._apply_health(inst, now, damp=False)

    def _apply_health(self, inst: Instance, now: float, *, damp: bool) -> None:
        st = self.states[inst.name]
        assert st.health is not None
        assert inst.storage is not None
        m = inst.machine
        effects = m.set_penalty(st.health.penalty, now)
        if damp and m.state is State.MASTER and inst.storage.takeover_damping > 0:
            until = now + inst.storage.takeover_damping
            effects += m.set_inhibit("takeover_damped", True, now, until=until, resign=False)
        failing = st.health.faults()
        for name in st.health.states:
            effects += m.set_fault(f"check:{name}", f"check:{name}" in failing, now)
        self.apply(inst, effects, now)

    def forget(self, inst: Instance) -> None:
        self.states.pop(inst.name, None)
        if inst.storage is not None:
            self.by_resource.pop(inst.storage.drbd_resource, None)

    async def wait_for_facts(self) -> None:
        """Until each watcher has its initial dump, so the first election has facts (the
        caller bounds it: a resource that is not up never gets one)."""
        for w in self.watchers.values():
            await w.synced.wait()

    def initial_verdict(self, inst: Instance, now: float) -> None:
        if inst.storage is not None:
            st = self.states[inst.name]
            watcher = self.watchers[inst.storage.drbd_resource]
            st.drbd = watcher.facts()
            self._note_frozen(inst, st.drbd)
            self._judge(inst, None, st.drbd, now)
            self._export_drbd(inst)

    # ---- runner reports ------------------------------------------------------------------

    def on_step(self, r: StepReport) -> None:
        if r.step == VipStep.name and r.action is Action.STOP and r.ok:
            self.resume_if_stale(r.instance)
        labels = (r.instance, r.step, r.action.value)
        self.metrics.step_duration.labels(*labels).observe(r.took)
        up = (r.action is Action.START) == r.ok
        if r.ok or r.action is Action.STOP:
            self.metrics.chain_step_up.labels(r.instance, r.step).set(1 if up else 0)
        fields = {"instance": r.instance, "step": r.step, "took_ms": round(r.took * 1000, 1)}
        if r.ok:
            done = "started" if r.action is Action.START else "stopped"
            self.log.info(f"step.{done}", **fields)
        else:
            self.metrics.step_failures.labels(r.instance, r.step, r.action.value).inc()
            self.log.error(f"step.{r.action.value}_failed", error=r.error, **fields)

    def on_settled(self, inst: Instance, ev: ChainSettled, now: float) -> None:
        if ev.generation != inst.runner.generation:
            return  # a newer wish is being carried out; its own report follows
        s = ev.settled
        if s.ok:
            if s.up and inst.takeover_started is not None:
                took = now - inst.takeover_started
                self.metrics.takeover_duration.labels(inst.name).observe(took)
                self.log.info("chain.up", instance=inst.name, took_ms=round(took * 1000, 1))
            elif not s.up:
                self.log.info("chain.down", instance=inst.name)
                self.reset_builtin_checks(inst, now)
            self.apply(inst, inst.machine.chain_settled(s.up, now), now)
            return
        reason = (s.error or "failed").split(":", 1)[0]
        if s.failed_action is Action.START:
            backoff = inst.storage.promote_backoff if inst.storage else 1.0
            self.metrics.refusals.labels(inst.name, reason).inc()
            self.log.error(
                "chain.takeover_failed",
                instance=inst.name,
                step=s.failed_step,
                reason=reason,
                error=s.error,
                action=f"rolled back; resigning and backing off {backoff:g} s",
            )
            effects = inst.machine.chain_settled(False, now)
            effects += inst.machine.chain_failed(now, backoff)
            self.apply(inst, effects, now)
            return
        self._stop_failed(inst, s.failed_step, s.error, now)

    def _stop_failed(self, inst: Instance, step: str | None, error: str | None, now: float) -> None:
        """Never swallowed: this node may still hold storage, so it must not serve again,
        and by policy it takes itself out for good."""
        policy = inst.storage.on_demote_failure if inst.storage else "fault"
        self.log.critical(
            "chain.stop_failed", instance=inst.name, step=step, error=error, policy=policy
        )
        self.apply(inst, inst.machine.set_fault("stop_failed", True, now), now)
        if policy in SYSRQ:
            self.put(PowerAction(policy))

    # ---- DRBD facts ----------------------------------------------------------------------

    def on_drbd(self, ev: DrbdChanged, now: float) -> None:
        inst = self.by_resource.get(ev.resource)
        if inst is None:
            return
        st = self.states[inst.name]
        st.drbd = ev.new
        alone = guard.wrote_alone(st.wrote_alone, ev.new, stale=st.stale)
        if alone != st.wrote_alone:
            self.note_alone(inst, alone)
        self._note_peer_gone(st, ev.new, now)
        self.update_hold(inst, ev.new, now)
        self._note_frozen(inst, ev.new)
        self.still_suspect(inst)
        self._judge(inst, ev.old, ev.new, now)
        self.after_stall(inst, now)
        self.hold_apart(inst)
        self._export_drbd(inst)
        self._note_link(inst, ev.old, ev.new, now)

    def _note_frozen(self, inst: Instance, new: Resource | None) -> None:
        """A Primary whose I/O DRBD holds for fencing: alert while it lasts, and have the
        peer asked in the background should the handler not get through
        (fencing/keeper.py)."""
        frozen = new is not None and new.frozen_for_fencing
        st = self.states[inst.name]
        if frozen and "io_frozen" not in st.alerts:
            assert new is not None
            st.alerts["io_frozen"] = IO_FROZEN
            self.log.critical("alert", instance=inst.name, kind="io_frozen", message=IO_FROZEN)
            self.put(KeepFencing(inst.name, new.name))
        elif not frozen and st.alerts.pop("io_frozen", None) is not None:
            self.log.info("alert.cleared", instance=inst.name, kind="io_frozen")

    def _note_link(
        self, inst: Instance, old: Resource | None, new: Resource | None, now: float
    ) -> None:
        """Remember when DRBD lost a Primary peer while we are a Secondary with good data."""
        st = self.states[inst.name]
        if (
            new is None
            or new.role != "Secondary"
            or new.connected
            or new.worst_disk not in ("UpToDate", "Consistent")  # 9 passes through Consistent
        ):
            st.link_lost_at = None
        elif old is not None and old.peer_primary and st.link_lost_at is None:
            st.link_lost_at = now
            self.log.warning(
                "drbd.peer_link_lost",
                instance=inst.name,
                resource=new.name,
                action="outdating this copy at the next advert from the Primary",
            )

    def heard(self, inst: Instance, now: float) -> None:
        """After an advert. One from the master this node knows proves it alive (a dead one
        sends nothing): if it came after the DRBD link to the Primary was lost, or after
        the replication heartbeat fell silent, our copy is going stale."""
        peer = inst.machine.last_peer
        if peer is None or peer.seen_at != now or inst.storage is None:
            return
        if not self._believed(inst, peer.address, now, vips_match=peer.vips_match):
            return
        st = self.states[inst.name]
        if st.repl is not None:
            st.repl.master_heard(now)
        self.behind_a_holder(inst, peer.priority, peer.address)
        lost = st.link_lost_at
        if lost is None or peer.seen_at <= lost or inst.machine.state is State.MASTER:
            return
        st.link_lost_at = None
        self._outdate_self(inst, "replication_lost_primary_alive", peer.address, now - lost)

    def _believed(
        self, inst: Instance, address: IPAddress, now: float, *, vips_match: bool
    ) -> bool:
        """Only the master this node knows counts as proof of life: an address from
        [peer] or unicast_peers, or without either, the master heard while replication was
        healthy; and only with this instance's address list. A VRID collision or a forged
        advert must not make a Secondary outdate itself (then nothing is promotable if the
        Primary dies)."""
        if not vips_match:
            return False
        st = self.states[inst.name]
        if st.trusted_masters:
            return address in st.trusted_masters
        if st.link_lost_at is None and (st.repl is None or not st.repl.silent(now)):
            st.known_master = address  # replication is healthy: this is the master
        return address == st.known_master

    def repl_tick(self, inst: Instance, now: float) -> None:
        """After reading the heartbeats: outdate our copy once the replication path to a
        live Primary has been gone long enough (resources/repl_watch.py). Unfenced, or with
        DRBD 9 quorum alone; a fence-peer handler does this job with the Primary's I/O held,
        and doing it beside the handler races the outdate it asks of us."""
        st = self.states[inst.name]
        res, watch = st.drbd, st.repl
        if watch is None or res is None or inst.machine.state is State.MASTER:
            return
        # With quorum alone the same window is open (drbd_advice.quorum_window): both disk
        # nodes keep quorum through the tiebreaker after a replication cut.
        if (st.fencing or {}).get("mode") not in ("unfenced", "quorum"):
            return
        good = res.worst_disk in ("UpToDate", "Consistent")
        primary_peer = res.peer_primary or st.link_lost_at is not None
        if res.role != "Secondary" or not good or not primary_peer or not watch.due(now):
            return
        assert watch.heard_at is not None
        self._outdate_self(
            inst, "replication_heartbeat_lost", st.known_master, now - watch.heard_at, drop=True
        )

    def _outdate_self(
        self,
        inst: Instance,
        reason: str,
        primary: IPAddress | None,
        after: float,
        *,
        drop: bool = False,
    ) -> None:
        assert inst.storage is not None
        self.log.warning(
            "drbd.outdating_self",
            instance=inst.name,
            resource=inst.storage.drbd_resource,
            reason=reason,
            primary=str(primary),
            after_ms=round(after * 1000, 1),
        )
        self.put(OutdateSelf(inst.name, inst.storage.drbd_resource, drop_link=drop))

    async def outdate_self(self, ev: OutdateSelf) -> None:
        """Run beside the loop; the result reaches the machine as DRBD events (Outdated ->
        the no_uptodate_disk inhibition). Never raises: it runs in the daemon's task group."""
        try:
            async with asyncio.timeout(OUTDATE_TIMEOUT):
                r = await drbd.outdate(
                    ev.resource, self.watchers[ev.resource].facts, drop_link=ev.drop_link
                )
                if r.reconnect and not (c := await drbd.reconnect(r.link or ev.resource)).ok:
                    # The link was dropped to outdate; without it this copy never resyncs.
                    self.log.error("drbd.reconnect_failed", resource=ev.resource, error=c.summary())
        except TimeoutError:
            r = drbd.Outdated("failed", None, f"not done in {OUTDATE_TIMEOUT:g} s")
        except Exception as e:  # logged; the daemon must go on
            r = drbd.Outdated("failed", None, repr(e))
        self.metrics.self_outdates.labels(ev.instance, r.outcome).inc()
        level = "warning" if r.outcome in ("outdated", "inconsistent") else "error"
        getattr(self.log, level)(
            "drbd.outdated_self",
            instance=ev.instance,
            resource=ev.resource,
            outcome=r.outcome,
            disk=r.disk,
            detail=r.detail,
        )
        st = self.states.get(ev.instance)
        if r.outcome == "failed" and st is not None and st.suspect:
            # A stalled copy stays out of the election until DRBD guards it: again, later
            # (DRBD refuses state changes while a promotion runs its fence-peer handler).
            await asyncio.sleep(OUTDATE_RETRY)
            if st.suspect:
                self.put(ev)

    def _judge(self, inst: Instance, old: Any, new: Any, now: float) -> None:
        assert inst.storage is not None
        st = self.states[inst.name]
        verdict = guard.assess(
            old,
            new,
            on_disk_loss=inst.storage.on_disk_loss,
            latched=frozenset(st.latches),
            suspect=st.suspect,
        )
        if st.stale:  # the disk lost is the one we detached (stale.py): latched already
            verdict = guard.Verdict(verdict.inhibitions)
        self.quorum_watch(inst, new)
        for kind, reason in verdict.latch:
            st.latches[kind] = self.latches.set(inst.name, kind, reason)
            self.log.error("latch.set", instance=inst.name, kind=kind, reason=reason)
            if self.latches.save_error:
                self.log.critical(
                    "latch.unsaved", instance=inst.name, error=self.latches.save_error
                )
        for kind, message in verdict.alerts:
            if st.alerts.get(kind) != message:
                st.alerts[kind] = message
                self.log.critical("alert", instance=inst.name, kind=kind, message=message)
        self.sync_inhibitions(inst, verdict.inhibitions, now)
        for kind in LATCH_KINDS:
            self.metrics.latch.labels(inst.name, kind).set(1 if kind in st.latches else 0)
        for kind in guard.ALERT_KINDS:
            self.metrics.alert.labels(inst.name, kind).set(1 if kind in st.alerts else 0)

    def sync_inhibitions(self, inst: Instance, wanted: frozenset[str], now: float) -> None:
        held = set(inst.machine.inhibitions) & guard.MANAGED
        for name in sorted(held - wanted):
            self.metrics.inhibited.labels(inst.name, name).set(0)
            self.log.info("takeover.inhibition_cleared", instance=inst.name, reason=name)
            self.apply(inst, inst.machine.set_inhibit(name, False, now), now)
        for name in sorted(wanted - held):
            self.metrics.inhibited.labels(inst.name, name).set(1)
            self.log.info("takeover.inhibited", instance=inst.name, reason=name)
            effects = inst.machine.set_inhibit(
                name,
                True,
                now,
                resign=name not in guard.NO_RESIGN,
                blocks_preempt=name not in guard.PREEMPT_OK,
            )
            self.apply(inst, effects, now)

    def clear_latch(self, inst: Instance, kind: str, now: float) -> str | None:
        """Clear one latch; the refusal reason if the cause is not fixed yet."""
        st = self.states[inst.name]
        res = st.drbd
        if res is None:
            return "DRBD state unknown (is the resource up?)"
        if not res.local_uptodate:
            return f"disk is {res.worst_disk}, not UpToDate: re-attach and let the resync finish"
        if kind == "split-brain" and not res.connected:
            return "not connected to the peer: resolve the split brain and reconnect first"
        try:
            self.latches.clear(inst.name, kind)
        except LatchError as e:
            # A full or read-only /var/lib: refused with the reason, and still latched.
            return e.reason
        # Held in memory even when the file no longer had it (an unreadable file latches
        # every instance; the first clear-latch rewrites it): the operator asked, it goes.
        if st.latches.pop(kind, None) is not None:
            if kind == "disk" and st.stale:
                st.stale = False
                inst.runner.abandon(frozenset())
            if kind == "split-brain" and inst.storage is not None:
                # The tracker remembers the helper call; forget it with the latch.
                watcher = self.watchers[inst.storage.drbd_resource]
                watcher.tracker.clear_split_brain(inst.storage.drbd_resource)
                res = st.drbd = watcher.facts()
            if kind == "disk":
                st.alerts.pop("no_uptodate_copy", None)
                st.alerts.pop("disk_lost", None)
            self.log.info("latch.cleared", instance=inst.name, kind=kind)
            self._judge(inst, res, res, now)
        return None

    def _export_drbd(self, inst: Instance) -> None:
        """drbd-reactor's families and labels (enum form: 1 for the current state)."""
        res = self.states[inst.name].drbd
        if inst.storage is None:
            return
        name = inst.storage.drbd_resource
        m = self.metrics
        # Drop the series of the previous state, so exactly one state reads 1.
        for family, labels, _ in self._series.pop(name, []):
            with contextlib.suppress(KeyError):
                family.remove(*labels)
        if res is None:
            return
        series: list[tuple[Any, tuple[str, ...], float]] = [
            (m.drbd_resource_role, (name, res.role), 1),
            (m.drbd_resource_suspended, (name,), res.suspended),
            (m.drbd_resource_forceiofailures, (name,), res.force_io_failures),
        ]
        if res.may_promote is not None:  # DRBD 9's facts; 8.4 has none of them
            series.append((m.drbd_resource_maypromote, (name,), res.may_promote))
        if res.promotion_score is not None:
            series.append((m.drbd_resource_promotionscore, (name,), res.promotion_score))
        for d in res.devices:
            dev = (name, str(d.volume), str(d.minor))
            series += [
                (m.drbd_device_state, (*dev, d.disk), 1),
                (m.drbd_device_client, dev, d.client),
                (m.drbd_device_unintentionaldiskless, dev, d.disk == "Diskless" and not d.client),
            ]
            if d.quorum is not None:
                series.append((m.drbd_device_quorum, dev, d.quorum))
        for c in res.connections:  # every peer: DRBD 9 has one connection per node
            peer = str(c.peer_node_id)
            series.append((m.drbd_connection_state, (name, c.conn_name, peer, c.connection), 1))
            for v in c.volumes:
                if v.out_of_sync_kib is not None:
                    m.drbd_peerdevice_outofsync_bytes.labels(
                        name, str(v.volume), c.conn_name, peer
                    ).set(v.out_of_sync_kib * 1024)
        for family, labels, value in series:
            family.labels(*labels).set(float(value))
        self._series[name] = series


def storage_status(
    inst: Instance, st: StorageState, wall_now: float
) -> tuple[Any, list[Any], list[Any]]:
    """(storage, latches, alerts) of the status document for one instance."""
    runner = inst.runner
    chain: list[status.StepStatus] = []
    for name, state in zip(runner.plan.names, runner.plan.states, strict=True):
        last = runner.last.get(name)
        chain.append(
            {
                "name": name,
                "state": state.value,
                "last_action": last.action.value if last else None,
                "last_duration_s": round(last.took, 4) if last else None,
                "error": last.error if last else None,
            }
        )
    storage = status.empty_storage()
    storage["chain"] = chain
    if inst.storage is not None:
        storage["drbd"] = _drbd_status(inst.storage.drbd_resource, st.drbd)
        storage["fencing"] = st.fencing  # type: ignore[typeddict-item]
        storage.update(steps_status(runner))  # type: ignore[typeddict-item]
        storage["checks"] = st.health.status() if st.health else []
    latches = [
        {"kind": k, "reason": v.reason, "age_s": round(max(0.0, wall_now - v.since), 1)}
        for k, v in sorted(st.latches.items())
    ]
    alerts = [{"kind": k, "message": m} for k, m in sorted(st.alerts.items())]
    return storage, latches, alerts


def steps_status(runner: Runner) -> dict[str, dict[str, Any]]:
    """What the chain's steps say of themselves (chain/step.py `Described`: mount, nfsd,
    exports), from their settings and whether the chain has them up: no command runs."""
    out: dict[str, dict[str, Any]] = {}
    for step in runner.steps:
        if isinstance(step, Described):
            for section, fields in step.describe(runner.step_up(step.name)).items():
                out.setdefault(section, {}).update(fields)
    return out


def _drbd_status(name: str, res: Any) -> Any:
    if res is None:
        return {
            "resource": name,
            "role": None,
            "disk": None,
            "peer_role": None,
            "peer_disk": None,
            "connection": None,
        }
    conn = res.connections[0] if res.connections else None
    peer_disks = {v.peer_disk for v in conn.volumes} if conn else set()
    return {
        "resource": name,
        "role": res.role,
        "disk": res.worst_disk,
        "peer_role": conn.role if conn else None,
        "peer_disk": "/".join(sorted(peer_disks)) or None,
        "connection": conn.connection if conn else None,
    }


@dataclass(frozen=True, slots=True)
class OutdateSelf:
    """Inbox event: outdate our copy of `resource` (the observation rule); `drop_link`:
    DRBD still calls the link up, so drop it first (DRBD refuses to outdate a connected
    Secondary)."""

    instance: str
    resource: str
    drop_link: bool = False
