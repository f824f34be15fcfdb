"""`drbdha force-failover`: hand mastership to the other node, safely, with a deadline.

Modelled on drbd-reactorctl evict: check first, hold off fail-back, wait for the peer with a
deadline, and report exactly one outcome: done, refused (why) or timed_out (state).

On the master, the hand-over is a resignation (priority 0): a backup takes over after its
Skew_Time. VRRP backups are silent, so the master cannot see a live backup beforehand: the
resignation is the probe. If no peer advertises within two intervals of it (plus the
chain's release), the master's VRRP machine takes the role straight back (machine.resign;
outcome refused, with the measured gap) rather than leave the address unserved. With a
storage chain it is refused up front unless the DRBD peer is connected and UpToDate (and so
is our own disk): a hand-over must never land on stale data.
On a backup, it takes over at once with priority 254 for the hold-off time; the master
hears the higher priority and steps down.
Both nodes hold off preemption for the hold-off time, so the role does not flip back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from drbdha import control
from drbdha.resources import drbd_guard as guard
from drbdha.resources.drbd_gates import good_copy_elsewhere
from drbdha.vrrp.constants import PRIORITY_OWNER
from drbdha.vrrp.events import State

if TYPE_CHECKING:
    from drbdha.daemon.instance import Instance
    from drbdha.resources.drbd_events import Resource

Apply = Callable[["Instance", list[Any], float], None]
TAKEOVER_PRIORITY = 254  # highest a non-owner may use (RFC 5798 §5.2.4)
# The master being the DRBD Primary is what a backup taking over expects (the same as for a
# preemption): its DRBD step waits for the master to demote.
TAKEOVER_IGNORES = guard.PREEMPT_OK
DEFAULT_WAIT = 10.0
DEFAULT_HOLD_OFF = 300.0


@dataclass
class _Target:
    inst: Instance
    role: str  # "master" (we resign) or "backup" (we take over)
    started_at: float
    done: bool = False


@dataclass
class _Job:
    event: control.ControlRequest
    targets: list[_Target]
    deadline: float
    hold_off: float
    log_fields: dict[str, Any] = field(default_factory=dict)


class Handover:
    def __init__(
        self,
        apply: Apply,
        instances: dict[str, Instance],
        facts: Callable[[Instance], Resource | None],
        log: Any,
    ) -> None:
        self.apply = apply  # the daemon's: carry out a machine's effects, re-arm its timer
        self.instances = instances  # the daemon's, as it changes
        self.facts = facts  # the storage room's latest DRBD facts of an instance
        self.log = log
        self.job: _Job | None = None

    def deadline(self) -> float | None:
        if self.job is None:
            return None
        return self.job.deadline  # a resignation's take-back is the machine's own timer

    def start(self, event: control.ControlRequest, now: float) -> None:
        req = event.request
        if self.job is not None:
            raise control.CommandError("a force-failover is already running", "refused")
        wait = _number(req, "wait", DEFAULT_WAIT)
        hold_off = _number(req, "hold_off", DEFAULT_HOLD_OFF)
        targets = self._select(req.get("instance"))
        force = bool(req.get("force", False))
        for inst in targets:
            why = self._refusal(inst, now)
            if why and not force:
                self._log("refused", inst, reason=why)
                raise control.CommandError(
                    f"{inst.name}: {why} (use --force to override)", "refused"
                )
        job = _Job(event, [], now + wait, hold_off)
        for inst in targets:
            job.targets.append(self._begin(inst, now, hold_off))
        self.job = job

    def _select(self, name: Any) -> list[Instance]:
        instances = self.instances
        if name is None:
            return list(instances.values())
        if name not in instances:
            raise control.CommandError(f"no instance named {name!r}", "refused")
        return [instances[name]]

    def _refusal(self, inst: Instance, now: float) -> str | None:
        machine = inst.machine
        why = _storage_refusal(inst, self.facts(inst))
        if why is not None:
            return why
        if machine.state is State.MASTER:
            return None  # backups are silent: the resignation itself is the probe
        if machine.state is not State.BACKUP:
            return f"instance is {machine.state.value}, not master or backup"
        peer = machine.last_peer
        if peer is None or now - peer.seen_at > machine.master_down_interval:
            return "no master is advertising; nothing to take over from"
        if peer.priority == PRIORITY_OWNER:
            return "the master is the address owner (priority 255) and cannot be preempted"
        blocking = set(machine.inhibitions) - TAKEOVER_IGNORES
        if blocking:
            return f"this node cannot take over: {', '.join(sorted(blocking))}"
        return None

    def _begin(self, inst: Instance, now: float, hold_off: float) -> _Target:
        machine = inst.machine
        if machine.state is State.MASTER:
            # A peer can take over only once our chain is down (its DRBD sees us Primary
            # until then): the machine's answer window counts the release in.
            release = inst.runner.stop_budget if inst.storage is not None else 0.0
            self.apply(inst, machine.resign(now, hold_off, release), now)
            self._log("resigned", inst, hold_off=hold_off)
            return _Target(inst, "master", now)
        effects = machine.take_over(now, TAKEOVER_PRIORITY, hold_off, TAKEOVER_IGNORES)
        self.apply(inst, effects, now)
        self._log("took_over", inst, priority=TAKEOVER_PRIORITY, hold_off=hold_off)
        return _Target(inst, "backup", now)

    def check(self, now: float) -> None:
        job = self.job
        if job is None:
            return
        for t in job.targets:
            if not t.done:
                self._check_target(t, now)
        if all(t.done for t in job.targets):
            self._finish({"outcome": "done", "instances": self._states(now)})
        elif now >= job.deadline:
            self._finish({"outcome": "timed_out", "instances": self._states(now)})

    def _check_target(self, t: _Target, now: float) -> None:
        machine = t.inst.machine
        if t.role == "backup":
            # With storage, done means serving: the chain is up (the VIP is its last step).
            serving = t.inst.storage is None or t.inst.vip_up
            t.done = (
                machine.state is State.MASTER
                and serving
                and now - t.started_at >= min(machine.params.advert_interval, 1.0)
            )
            return
        if machine.handover == "answered":
            t.done = True
        elif machine.handover == "abandoned":
            reason = "no peer took over, and this node may not serve: " + ", ".join(
                sorted(machine.inhibitions)
            )
            self._log("refused", t.inst, reason=reason)
            self._finish(
                {
                    "outcome": "refused",
                    "reason": f"{t.inst.name}: {reason}",
                    "instances": self._states(now),
                }
            )
        elif machine.handover == "retook":
            # Nobody answered the resignation: the machine serves again rather than leave
            # the VIP dark.
            gap = now - t.started_at
            self._log("refused", t.inst, reason="no peer took over", gap_ms=round(gap * 1000))
            self._finish(
                {
                    "outcome": "refused",
                    "reason": (
                        f"{t.inst.name}: no peer took over within {gap * 1000:.0f} ms "
                        "of resigning; mastership taken back"
                    ),
                    "instances": self._states(now),
                }
            )

    def _finish(self, result: dict[str, Any]) -> None:
        job, self.job = self.job, None
        if job is None:
            return
        self.log.info("handover.finished", outcome=result["outcome"], reason=result.get("reason"))
        if not job.event.reply.done():
            job.event.reply.set_result(result)

    def abort(self, reason: str) -> None:
        if self.job is not None:
            self._finish({"outcome": "timed_out", "reason": reason, "instances": []})

    def _states(self, now: float) -> list[dict[str, Any]]:
        assert self.job is not None
        out = []
        for t in self.job.targets:
            peer = t.inst.peer_status(now)
            out.append(
                {
                    "name": t.inst.name,
                    "state": t.inst.machine.state.value,
                    "peer": peer,
                    "elapsed_s": round(now - t.started_at, 3),
                }
            )
        return out

    def _log(self, what: str, inst: Instance, **fields: Any) -> None:
        self.log.info(f"handover.{what}", instance=inst.name, **fields)


def _storage_refusal(inst: Instance, res: Resource | None) -> str | None:
    """A hand-over is safe only onto a good copy: the peer connected and UpToDate, and our
    own disk too (a backup taking over must not promote anything but UpToDate data)."""
    if inst.storage is None:
        return None
    if res is None:
        return "DRBD state unknown"
    if not good_copy_elsewhere(res):
        conns = ", ".join(f"{c.conn_name} {c.connection}" for c in res.connections) or "none"
        return f"the DRBD peer is not connected and UpToDate ({conns})"
    if inst.machine.state is not State.MASTER and not res.local_uptodate:
        return f"this node's disk is {res.worst_disk}, not UpToDate"
    return None


def _number(req: dict[str, Any], key: str, default: float) -> float:
    value = req.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 86400:
        raise control.CommandError(f"{key} must be a number of seconds in 0..86400", "malformed")
    return float(value)
