"""The status document (`drbdha status --json`) and its rendering as a table.

Rules:
- The document is plain JSON data (the TypedDicts below are its schema). The daemon builds
  it from immutable snapshots with the pure builders here, the control socket carries it,
  and the CLI renders it; every function here is pure (time comes in as `now`).
- Counters are read from the same Prometheus registry the metrics endpoint serves, so
  `drbdha status` and a scrape agree field for field.
- Unknown or not configured reads as "-" in the table and as null in JSON. Storage fields
  (drbd, mount, nfsd, exports) stay null until the storage chain fills them.
- This module imports no asyncio, pyroute2 or prometheus_client: the CLI imports it.

Exit codes of `drbdha status` (Nagios-like): 0 healthy, 1 degraded, 3 daemon unreachable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, TypedDict

if TYPE_CHECKING:
    from drbdha.config import VrrpInstanceConfig
    from drbdha.vrrp.machine import Snapshot

EXIT_HEALTHY: Final = 0
EXIT_DEGRADED: Final = 1
EXIT_UNREACHABLE: Final = 3  # decided by the CLI when the control socket does not answer

Health = Literal["healthy", "degraded"]
HEALTHY_STATES: Final = frozenset({"master", "backup"})


# ---- schema ------------------------------------------------------------------------------


class DaemonStatus(TypedDict):
    version: str
    pid: int
    uptime_s: float
    config_path: str | None
    health: Health


class TransitionStatus(TypedDict):
    old: str
    new: str
    reason: str
    age_s: float


class PeerStatus(TypedDict):
    address: str
    priority: int | None
    last_seen_age_s: float | None


class Counters(TypedDict):
    adverts_sent: int
    adverts_received: int
    invalid: dict[str, int]  # reason -> count, as drbdha_vrrp_invalid_adverts_total{reason}


class DrbdStatus(TypedDict):
    resource: str
    role: str | None  # Primary | Secondary | Unknown (drbdsetup events2 vocabulary)
    disk: str | None  # UpToDate | Outdated | Inconsistent | Diskless | ...
    peer_role: str | None
    peer_disk: str | None
    connection: str | None  # Connected | Connecting | StandAlone | ...


class StepStatus(TypedDict):
    name: str  # drbd, filesystem, services, nfs_state, nfsd, exports, vip, nfs_clients
    state: str  # down | starting | up | stopping | failed (chain.plan.StepState)
    last_action: str | None  # start | stop
    last_duration_s: float | None
    error: str | None


class AlertStatus(TypedDict):
    kind: str  # disk_lost | no_uptodate_copy
    message: str


class FencingStatus(TypedDict):
    # handler | failing | other_handler | quorum | quorum_and_handler | unfenced | unknown
    mode: str
    policy: str | None  # DRBD's fencing option (dont-care, resource-only, resource-and-stonith)
    handler: str | None  # DRBD's fence-peer handler
    note: str  # what that means when the replication link fails


class StorageStatus(TypedDict):
    chain: list[StepStatus]
    drbd: DrbdStatus | None
    fencing: FencingStatus | None  # None until the DRBD configuration has been read
    # As the chain's steps have them (None when the chain has no such step), rendered as
    # key=value: mount {"device" (None: the DRBD device), "mountpoint", "fstype",
    # "mounted": bool}, nfsd {"running": bool, "threads", "state_dir", "scope"},
    # exports {"configured": int, "exported": int}.
    mount: dict[str, Any] | None
    nfsd: dict[str, Any] | None
    exports: dict[str, Any] | None
    # Health checks: {"name", "builtin", "failing", "weight", "last_ok" (None: not run
    # yet), "detail" (the last failure's), "runs"}.
    checks: list[dict[str, Any]]


class LatchStatus(TypedDict):
    kind: str  # "disk" | "split-brain"; cleared by `drbdha clear-latch`
    reason: str
    age_s: float | None


class InstanceStatus(TypedDict):
    name: str
    interface: str
    vrid: int
    version: int
    state: str  # initialize | backup | master | fault (vrrp.events.State values)
    priority: int
    effective_priority: int
    master_address: str | None
    is_master: bool
    advert_interval: float  # seconds
    master_adver_interval: float  # seconds
    vips: list[str]
    vips_held: bool
    preempt: bool
    preempt_hold_off_remaining_s: float
    faults: list[str]
    last_transition: TransitionStatus | None
    counters: Counters
    peer: PeerStatus | None
    storage: StorageStatus
    latches: list[LatchStatus]
    inhibitions: list[str]  # why this node does not take over (peer_primary, disk_latched...)
    # Clients reached its copy with the DRBD peer cut off: it advertises 254 until the
    # copies resync (Machine.hold_for_data).
    holding_for_data: bool
    alerts: list[AlertStatus]
    warnings: list[str]


class StatusDocument(TypedDict):
    daemon: DaemonStatus
    instances: list[InstanceStatus]


# ---- builders (used by the daemon) -------------------------------------------------------


def empty_storage() -> StorageStatus:
    return {
        "chain": [],
        "drbd": None,
        "fencing": None,
        "mount": None,
        "nfsd": None,
        "exports": None,
        "checks": [],
    }


# Inhibitions that are the normal life of a healthy backup, not a problem to report.
BENIGN_INHIBITIONS: Final = frozenset({"peer_primary"})


def instance_status(
    cfg: VrrpInstanceConfig,
    snap: Snapshot,
    now: float,
    *,
    counters: Counters,
    peer: PeerStatus | None = None,
    vips_held: bool | None = None,
    storage: StorageStatus | None = None,
    latches: Sequence[LatchStatus] = (),
    alerts: Sequence[AlertStatus] = (),
    warnings: Sequence[str] = (),
) -> InstanceStatus:
    """One instance's entry. `vips_held` defaults to "state is master" (the machine acquires
    VIPs on entering MASTER and releases them on leaving it)."""
    state = str(snap.state.value)
    last = None
    if snap.last_transition is not None and snap.last_transition_at is not None:
        t = snap.last_transition
        last = TransitionStatus(
            old=str(t.old.value),
            new=str(t.new.value),
            reason=t.reason,
            age_s=_age(now, snap.last_transition_at),
        )
    return InstanceStatus(
        name=cfg.name,
        interface=cfg.interface,
        vrid=cfg.vrid,
        version=cfg.version,
        state=state,
        priority=cfg.priority,
        effective_priority=snap.effective_priority,
        master_address=None if snap.master_address is None else str(snap.master_address),
        is_master=state == "master",
        advert_interval=cfg.advert_interval,
        master_adver_interval=snap.master_adver_interval,
        vips=[str(v) for v in cfg.virtual_ipaddress],
        vips_held=state == "master" if vips_held is None else vips_held,
        preempt=cfg.preempt,
        preempt_hold_off_remaining_s=round(max(0.0, snap.preempt_hold_off_until - now), 3),
        faults=list(snap.faults),
        last_transition=last,
        counters=counters,
        peer=peer,
        storage=storage or empty_storage(),
        latches=list(latches),
        inhibitions=list(snap.inhibitions),
        holding_for_data=snap.holding,
        alerts=list(alerts),
        warnings=list(warnings),
    )


INSTANCE_LABELS: Final = ("vrrp_instance", "instance")  # metrics.py's label, newest first


def counters_by_instance(registry: Any) -> dict[str, Counters]:
    """Every instance's counters from drbdha's Prometheus registry (metrics.Metrics), read in
    one pass over the same samples a scrape returns."""
    out: dict[str, Counters] = {}
    for family in registry.collect():
        for sample in family.samples:
            name = next((sample.labels[k] for k in INSTANCE_LABELS if k in sample.labels), None)
            if name is None:
                continue
            c = out.setdefault(name, no_counters())
            if sample.name == "drbdha_vrrp_adverts_sent_total":
                c["adverts_sent"] = int(sample.value)
            elif sample.name == "drbdha_vrrp_adverts_received_total":
                c["adverts_received"] = int(sample.value)
            elif sample.name == "drbdha_vrrp_invalid_adverts_total":
                c["invalid"][sample.labels["reason"]] = int(sample.value)
            elif sample.name == "drbdha_vrrp_auth_refused_total":  # auth_hmac's drops
                c["invalid"][f"auth_{sample.labels['reason']}"] = int(sample.value)
    return out


def counters_from_registry(registry: Any, instance: str) -> Counters:
    return counters_by_instance(registry).get(instance) or no_counters()


def no_counters() -> Counters:
    return Counters(adverts_sent=0, adverts_received=0, invalid={})


def document(
    *,
    version: str,
    pid: int,
    uptime_s: float,
    config_path: str | None,
    instances: Iterable[InstanceStatus],
) -> StatusDocument:
    insts = list(instances)
    doc = StatusDocument(
        daemon=DaemonStatus(
            version=version,
            pid=pid,
            uptime_s=round(uptime_s, 3),
            config_path=config_path,
            health="healthy",
        ),
        instances=insts,
    )
    doc["daemon"]["health"] = "healthy" if health(doc) == EXIT_HEALTHY else "degraded"
    return doc


# ---- health ------------------------------------------------------------------------------


def problems(inst: Mapping[str, Any]) -> list[str]:
    """Why an instance is degraded; empty when it is healthy."""
    out: list[str] = []
    if inst.get("state") not in HEALTHY_STATES:
        out.append(f"state {str(inst.get('state')).upper()}")
    out += [f"fault {f}" for f in inst.get("faults") or ()]
    out += [f"latch {latch.get('kind')}" for latch in inst.get("latches") or ()]
    out += [f"alert {a.get('kind')}" for a in inst.get("alerts") or ()]
    out += [
        f"cannot take over: {i}"
        for i in inst.get("inhibitions") or ()
        if i not in BENIGN_INHIBITIONS and inst.get("state") != "master"
    ]
    out += [
        f"step {st.get('name')} failed"
        for st in (inst.get("storage") or {}).get("chain") or ()
        if st.get("state") == "failed"
    ]
    out += [f"warning {w}" for w in inst.get("warnings") or ()]
    return out


def health(doc: Mapping[str, Any]) -> int:
    """0 when every instance is MASTER or BACKUP with no faults, latches or warnings, else 1.
    A daemon without instances is degraded: it protects nothing."""
    instances = doc.get("instances") or []
    if not instances or any(problems(inst) for inst in instances):
        return EXIT_DEGRADED
    return EXIT_HEALTHY


STATUS_LINE_DETAIL: Final = 8  # instances named one by one; beyond that, counts per state


def status_line(doc: Mapping[str, Any]) -> str:
    """One line for systemd's STATUS= (shown by `systemctl status drbdha`). It needs only
    each instance's name, state, faults, latches and warnings."""
    verdict = "healthy" if health(doc) == EXIT_HEALTHY else "degraded"
    instances = doc.get("instances") or []
    if len(instances) > STATUS_LINE_DETAIL:
        counts: dict[str, int] = {}
        for inst in instances:
            state = str(inst.get("state")).upper()
            counts[state] = counts.get(state, 0) + 1
        return f"{verdict}: " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    parts = []
    for inst in instances:
        part = f"{inst.get('name')} {str(inst.get('state')).upper()}"
        faults = inst.get("faults") or []
        parts.append(f"{part} ({', '.join(faults)})" if faults else part)
    return f"{verdict}: {', '.join(parts) or 'no instances'}"


# ---- rendering ---------------------------------------------------------------------------

LABEL_WIDTH: Final = 17
DASH: Final = "-"


def render_table(doc: Mapping[str, Any]) -> str:
    """Human-readable status: a header line, then one block per instance."""
    d = doc.get("daemon") or {}
    verdict = "healthy" if health(doc) == EXIT_HEALTHY else "DEGRADED"
    header = (
        f"drbdha {d.get('version', DASH)}, pid {d.get('pid', DASH)}, "
        f"up {format_duration(d.get('uptime_s'))}, "
        f"config {d.get('config_path') or DASH}: {verdict}"
    )
    blocks = [header]
    instances = doc.get("instances") or []
    if not instances:
        blocks.append("no instances configured")
    blocks += [_render_instance(inst) for inst in instances]
    return "\n\n".join(blocks) + "\n"


def _render_instance(inst: Mapping[str, Any]) -> str:
    rows: list[tuple[str, list[str]]] = [
        ("state", [str(inst.get("state", DASH)).upper()]),
        ("priority", [_priority(inst)]),
        ("master", [_master(inst)]),
        ("advert interval", [_intervals(inst)]),
        ("vips", [_vips(inst)]),
        ("preempt", [_preempt(inst)]),
        ("peer", [_peer(inst.get("peer"))]),
        ("adverts", [_counters(inst.get("counters"))]),
        *_storage_rows(inst.get("storage") or {}),
        ("last transition", [_transition(inst.get("last_transition"))]),
        ("faults", list(inst.get("faults") or ()) or [DASH]),
        ("not taking over", list(inst.get("inhibitions") or ()) or [DASH]),
        ("latches", [_latch(x) for x in inst.get("latches") or ()] or [DASH]),
        (
            "alerts",
            [f"{a.get('kind')}: {a.get('message')}" for a in inst.get("alerts") or ()] or [DASH],
        ),
        ("warnings", list(inst.get("warnings") or ()) or [DASH]),
    ]
    title = (
        f"{inst.get('name', DASH)}  (VRRPv{inst.get('version', DASH)} "
        f"vrid {inst.get('vrid', DASH)} on {inst.get('interface', DASH)})"
    )
    lines = [title]
    for label, values in rows:
        for i, value in enumerate(values):
            lines.append(f"  {label if i == 0 else '':<{LABEL_WIDTH}}{value}")
    return "\n".join(lines)


def _priority(inst: Mapping[str, Any]) -> str:
    text = f"{inst.get('effective_priority', DASH)} (configured {inst.get('priority', DASH)})"
    if inst.get("holding_for_data"):
        text += (
            "; holding: clients reached this copy with the DRBD peer cut off,"
            " until the copies resync"
        )
    return text


def _intervals(inst: Mapping[str, Any]) -> str:
    ours, masters = inst.get("advert_interval"), inst.get("master_adver_interval")
    return f"{_secs(ours)} (master's {_secs(masters)})"


def _master(inst: Mapping[str, Any]) -> str:
    if inst.get("is_master"):
        return "this node"
    return str(inst.get("master_address") or DASH)


def _vips(inst: Mapping[str, Any]) -> str:
    vips = inst.get("vips") or []
    if not vips:
        return DASH
    return f"{', '.join(vips)} ({'held' if inst.get('vips_held') else 'not held'})"


def _preempt(inst: Mapping[str, Any]) -> str:
    if not inst.get("preempt"):
        return "no"
    remaining = inst.get("preempt_hold_off_remaining_s") or 0
    return f"yes (held off for {format_duration(remaining)})" if remaining > 0 else "yes"


def _peer(peer: Mapping[str, Any] | None) -> str:
    if not peer:
        return DASH
    prio = peer.get("priority")
    seen = peer.get("last_seen_age_s")
    return (
        f"{peer.get('address', DASH)}, priority {DASH if prio is None else prio}, "
        f"seen {DASH if seen is None else format_duration(seen) + ' ago'}"
    )


def _counters(c: Mapping[str, Any] | None) -> str:
    if not c:
        return DASH
    invalid = c.get("invalid") or {}
    detail = ", ".join(f"{k} {v}" for k, v in sorted(invalid.items()))
    total = sum(invalid.values())
    bad = f"invalid {total} ({detail})" if total else "invalid 0"
    return f"sent {c.get('adverts_sent', 0)}, received {c.get('adverts_received', 0)}, {bad}"


def _storage_rows(storage: Mapping[str, Any]) -> list[tuple[str, list[str]]]:
    drbd = storage.get("drbd")
    chain = [_step(st) for st in storage.get("chain") or ()]
    fencing = storage.get("fencing")
    return (
        [
            ("chain", [", ".join(chain) or DASH]),
            ("drbd", [_drbd(drbd) if drbd else DASH]),
            *([("fencing", [_fencing(fencing)])] if fencing else []),
        ]
        + [(key, [_generic(storage.get(key))]) for key in ("mount", "nfsd", "exports")]
        + [("checks", [", ".join(_check(c) for c in storage.get("checks") or ()) or DASH])]
    )


def _check(c: Mapping[str, Any]) -> str:
    if c.get("failing"):
        return f"{c['name']} FAILING ({c.get('detail') or 'no detail'})"
    last = c.get("last_ok")
    word = "not run yet" if last is None else "ok" if last else "ok (its last run failed)"
    return f"{c['name']} {word}"


def _drbd(d: Mapping[str, Any]) -> str:
    def pair(role: str | None, disk: str | None) -> str:
        return f"{role or DASH}/{disk or DASH}"

    return (
        f"{d.get('resource', DASH)}: {pair(d.get('role'), d.get('disk'))}, "
        f"peer {pair(d.get('peer_role'), d.get('peer_disk'))}, "
        f"{d.get('connection') or DASH}"
    )


def _fencing(f: Mapping[str, Any]) -> str:
    how = f"{f.get('policy') or DASH}, {f.get('handler') or 'no handler'}"
    return f"{f.get('mode', DASH)} ({how}): {f.get('note') or DASH}"


def _step(st: Mapping[str, Any]) -> str:
    took = st.get("last_duration_s")
    detail = "" if took is None else f" ({st.get('last_action')} {took:.3f}s)"
    return f"{st.get('name')} {st.get('state')}{detail}"


def _generic(value: Any) -> str:
    if value is None or value in ({}, []):
        return DASH
    if isinstance(value, Mapping):
        return " ".join(f"{k}={_scalar(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_scalar(v) for v in value)
    return _scalar(value)


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    return DASH if v is None else str(v)


def _transition(t: Mapping[str, Any] | None) -> str:
    if not t:
        return DASH
    return (
        f"{str(t.get('old')).upper()} -> {str(t.get('new')).upper()} "
        f"({t.get('reason', DASH)}), {format_duration(t.get('age_s'))} ago"
    )


def _latch(latch: Mapping[str, Any]) -> str:
    age = latch.get("age_s")
    since = "" if age is None else f", set {format_duration(age)} ago"
    return f"{latch.get('kind', DASH)}: {latch.get('reason', DASH)}{since}"


def _secs(v: Any) -> str:
    return DASH if v is None else f"{v:g}s"


def format_duration(seconds: float | None) -> str:
    """0.4s, 12s, 3m12s, 2h03m, 4d07h."""
    if seconds is None:
        return DASH
    if seconds < 9.95:  # 9.95 and up would print as "10.0s"
        return f"{seconds:.1f}s"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _age(now: float, at: float) -> float:
    return round(max(0.0, now - at), 3)
