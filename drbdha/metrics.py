"""Prometheus metrics on drbdha's own registry (nothing from the process-global default).

Families follow keepalived-exporter's vocabulary for VRRP counters, with drbdha_ as prefix.
The label is `vrrp_instance`, not `instance`, which Prometheus sets to the scrape target.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram

from drbdha.vrrp.events import State


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.state = Enum(
            "drbdha_vrrp_state",
            "VRRP state of each instance",
            ["vrrp_instance"],
            states=[s.value for s in State],
            registry=r,
        )
        self.priority = Gauge(
            "drbdha_vrrp_effective_priority",
            "Effective VRRP priority",
            ["vrrp_instance"],
            registry=r,
        )
        self.adverts_sent = Counter(
            "drbdha_vrrp_adverts_sent", "Advertisements sent", ["vrrp_instance"], registry=r
        )
        self.priority_zero_sent = Counter(
            "drbdha_vrrp_priority_zero_sent",
            "Priority-0 (resign) advertisements sent",
            ["vrrp_instance"],
            registry=r,
        )
        self.adverts_received = Counter(
            "drbdha_vrrp_adverts_received",
            "Valid advertisements received",
            ["vrrp_instance"],
            registry=r,
        )
        self.priority_zero_received = Counter(
            "drbdha_vrrp_priority_zero_received",
            "Priority-0 advertisements received",
            ["vrrp_instance"],
            registry=r,
        )
        self.invalid_adverts = Counter(
            "drbdha_vrrp_invalid_adverts",
            "Advertisements refused or warned about, by reason",
            ["vrrp_instance", "reason"],
            registry=r,
        )
        self.auth_refused = Counter(
            "drbdha_vrrp_auth_refused",
            "Advertisements auth_hmac dropped, by reason (missing, malformed, unknown_key, "
            "invalid_hmac, stale, replay)",
            ["vrrp_instance", "reason"],
            registry=r,
        )
        self.unmatched_packets = Counter(
            "drbdha_vrrp_unmatched_packets",
            "VRRP packets for a VRID no instance has",
            ["interface"],
            registry=r,
        )
        self.transitions = Counter(
            "drbdha_vrrp_transitions",
            "State transitions",
            ["vrrp_instance", "from", "to", "reason"],
            registry=r,
        )
        self.garp_bursts = Counter(
            "drbdha_vrrp_garp_bursts",
            "Gratuitous ARP / unsolicited NA bursts sent",
            ["vrrp_instance", "reason"],
            registry=r,
        )
        # Failover and the resource chain. Filled by the storage chain when it lands; the
        # VRRP-only daemon already times its own takeover steps.
        self.takeover_duration = Histogram(
            "drbdha_takeover_duration_seconds",
            "From the decision to become master until every takeover step is done",
            ["vrrp_instance"],
            registry=r,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.step_duration = Histogram(
            "drbdha_step_duration_seconds",
            "Duration of each takeover/release step",
            ["vrrp_instance", "step", "action"],
            registry=r,
            buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60),
        )
        self.chain_step_up = Gauge(
            "drbdha_chain_step_up",
            "1 while a chain step is started on this node",
            ["vrrp_instance", "step"],
            registry=r,
        )
        self.step_failures = Counter(
            "drbdha_step_failures",
            "Chain steps that failed, by step and action (a failed stop is never retried)",
            ["vrrp_instance", "step", "action"],
            registry=r,
        )
        self.refusals = Counter(
            "drbdha_takeover_refusals",
            "Takeovers given up (rolled back and resigned), by reason",
            ["vrrp_instance", "reason"],
            registry=r,
        )
        self.fence_requests = Counter(
            "drbdha_fence_requests",
            "Outdate requests from the peer's fence-peer handler, by result (outdated, "
            "inconsistent, primary, failed, refused) and the reason of a refusal",
            ["result", "reason"],
            registry=r,
        )
        self.self_outdates = Counter(
            "drbdha_self_outdates",
            "Own copy outdated because the DRBD link to a Primary that still advertises was "
            "lost (the observation rule), by outcome",
            ["vrrp_instance", "outcome"],
            registry=r,
        )
        self.peer_probes = Counter(
            "drbdha_peer_probes",
            "Takeovers held back by a silent master that DRBD still showed as a connected "
            "Primary, in which DRBD was asked to check that peer at once, by outcome",
            ["vrrp_instance", "outcome"],
            registry=r,
        )
        self.fence_keeper = Counter(
            "drbdha_fence_keeper",
            "A Primary's I/O frozen by DRBD after its fence-peer handler failed, finished "
            "by drbdha asking the peer: resumed (by drbdha), resume_failed, resolved (DRBD "
            "resumed by itself)",
            ["vrrp_instance", "outcome"],
            registry=r,
        )
        self.check_failing = Gauge(
            "drbdha_check_failing",
            "1 while a health check is failing (fall failures in a row, until rise successes)",
            ["vrrp_instance", "check"],
            registry=r,
        )
        self.inhibited = Gauge(
            "drbdha_takeover_inhibited",
            "1 while this reason keeps the node from taking over (peer_primary, "
            "no_uptodate_disk, disk_latched, ...); not a fault of this node",
            ["vrrp_instance", "reason"],
            registry=r,
        )
        self.alert = Gauge(
            "drbdha_alert",
            "1 while an alert stands (disk_lost, no_uptodate_copy, io_frozen: a Primary's "
            "I/O held by DRBD until the peer is fenced)",
            ["vrrp_instance", "kind"],
            registry=r,
        )
        self.latch = Gauge(
            "drbdha_latch",
            "1 while a latch (disk failure, split brain) blocks mastership",
            ["vrrp_instance", "kind"],
            registry=r,
        )
        # DRBD state under drbd-reactor's names and labels (its `enums = true` form: one
        # series per state, 1 for the current one), so its dashboards work unchanged.
        # The storage chain fills them; until then the families are declared and empty.
        self.drbd_resource_role = Gauge(
            "drbd_resource_role",
            "DRBD role of the resource (1 for the current role)",
            ["name", "drbd_resource_role"],
            registry=r,
        )
        self.drbd_device_state = Gauge(
            "drbd_device_state",
            "DRBD disk state of the device (1 for the current state)",
            ["name", "volume", "minor", "drbd_device_state"],
            registry=r,
        )
        self.drbd_connection_state = Gauge(
            "drbd_connection_state",
            "DRBD connection state (1 for the current state)",
            ["name", "conn_name", "peer_node_id", "drbd_connection_state"],
            registry=r,
        )
        self.drbd_peerdevice_outofsync_bytes = Gauge(
            "drbd_peerdevice_outofsync_bytes",
            "Bytes out of sync with the peer",
            ["name", "volume", "conn_name", "peer_node_id"],
            registry=r,
        )

        # drbd-reactor's plain families (booleans as 0/1, and the score). DRBD 8.4 reports
        # neither may_promote, the score nor quorum: those stay empty there.
        def resource(family: str, text: str) -> Gauge:
            return Gauge(f"drbd_resource_{family}", text, ["name"], registry=r)

        def device(family: str, text: str) -> Gauge:
            return Gauge(f"drbd_device_{family}", text, ["name", "volume", "minor"], registry=r)

        self.drbd_resource_suspended = resource(
            "suspended", "Boolean: the resource's I/O is suspended"
        )
        self.drbd_resource_maypromote = resource("maypromote", "Boolean: DRBD may promote it")
        self.drbd_resource_promotionscore = resource("promotionscore", "DRBD's promotion score")
        self.drbd_resource_forceiofailures = resource(
            "forceiofailures", "Boolean: I/O failures are forced (secondary --force)"
        )
        self.drbd_device_client = device("client", "Boolean: an intentionally diskless device")
        self.drbd_device_unintentionaldiskless = device(
            "unintentionaldiskless", "Boolean: the device lost its disk"
        )
        self.drbd_device_quorum = device("quorum", "Boolean: the device has DRBD quorum")
        self.task_failures = Counter(
            "drbdha_task_failures",
            "Background tasks (chain runner, DRBD watcher, health checks, outdate, probe, "
            "...) that raised or ended; a long-lived one is started again after a back-off",
            ["task"],
            registry=r,
        )
        self.drbd_watcher_stale = Counter(
            "drbdha_drbd_watcher_stale",
            "DRBD events2 readers restarted because a one-off `drbdsetup status` read "
            "disagreed with their facts in two checks in a row",
            ["resource"],
            registry=r,
        )
        self.loop_lateness = Histogram(
            "drbdha_loop_timer_lateness_seconds",
            "How late the main loop served a timer",
            buckets=(0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 1.0),
            registry=r,
        )
        # Observed for every timer served (every advert a master sends): see fast_observe.
        self.observe_lateness = fast_observe(self.loop_lateness)


# ---- the hot path ------------------------------------------------------------------------
# A master at 10 ms counts every advert and observes every timer's lateness. prometheus_client's
# inc()/observe() check, per call, that the metric is not a labelled parent, then take the
# value's lock in a further call (observe() also walks the buckets). The two helpers below
# bind the value's own inc() once, so a hot update is one call: the same values, under the
# same lock, the scrape thread reads. If prometheus_client ever stores its values otherwise,
# they fall back to the public methods.


def fast_inc(child: Any) -> Callable[[float], None]:
    """`child.inc(amount)` for a Counter (an unlabelled one, or a child from labels())."""
    inc: Callable[[float], None] | None = getattr(getattr(child, "_value", None), "inc", None)
    fallback: Callable[[float], None] = child.inc
    return inc if callable(inc) else fallback


def fast_observe(histogram: Any) -> Callable[[float], None]:
    """`histogram.observe(amount)` for an unlabelled Histogram (or a child from labels())."""
    try:
        bounds = [float(b) for b in histogram._upper_bounds]
        buckets = [b.inc for b in histogram._buckets]
        add_sum = histogram._sum.inc
    except (AttributeError, TypeError):
        return histogram.observe  # type: ignore[no-any-return]
    if len(bounds) != len(buckets):
        return histogram.observe  # type: ignore[no-any-return]

    def observe(amount: float) -> None:
        add_sum(amount)
        # The first bucket whose upper bound is >= amount, as Histogram.observe picks it.
        i = bisect_left(bounds, amount)
        if i < len(buckets):
            buckets[i](1)

    return observe
