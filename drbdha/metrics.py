"""Prometheus metrics on drbdha's own registry (nothing from the process-global default).

Families follow keepalived-exporter's vocabulary for VRRP counters, with drbdha_ as prefix.
The label is `vrrp_instance`, not `instance`, which Prometheus sets to the scrape target.
"""

from __future__ import annotations

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
        self.vip_errors = Counter(
            "drbdha_vip_errors",
            "Failed virtual address adds or removes",
            ["vrrp_instance", "op"],
            registry=r,
        )
        self.loop_lateness = Histogram(
            "drbdha_loop_timer_lateness_seconds",
            "How late the main loop served a timer",
            buckets=(0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 1.0),
            registry=r,
        )
