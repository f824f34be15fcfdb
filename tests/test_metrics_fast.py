"""metrics.fast_inc / fast_observe: the hot path's updates give the samples the public
inc()/observe() give."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from drbdha.metrics import Metrics, fast_inc, fast_observe

BUCKETS = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 1.0)
AMOUNTS = (-0.001, 0.0, 0.00005, 0.0001, 0.00010001, 0.001, 0.0015, 0.01, 0.5, 1.0, 7.0)


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_fast_observe_fills_the_buckets_and_sum_observe_would() -> None:
    public, fast = CollectorRegistry(), CollectorRegistry()
    a = Histogram("lateness", "x", buckets=BUCKETS, registry=public)
    b = Histogram("lateness", "x", buckets=BUCKETS, registry=fast)
    observe = fast_observe(b)
    for amount in AMOUNTS:
        a.observe(amount)
        observe(amount)
    assert _samples(fast) == _samples(public)


def test_fast_inc_counts_as_inc_does() -> None:
    public, fast = CollectorRegistry(), CollectorRegistry()
    a = Counter("adverts", "x", ["vrrp_instance"], registry=public)
    b = Counter("adverts", "x", ["vrrp_instance"], registry=fast)
    inc = fast_inc(b.labels("vi"))
    for _ in range(5):
        a.labels("vi").inc()
        inc(1)
    assert _samples(fast) == _samples(public)
    assert fast.get_sample_value("adverts_total", {"vrrp_instance": "vi"}) == 5


def test_the_daemons_lateness_observer_feeds_loop_lateness() -> None:
    m = Metrics()
    m.observe_lateness(0.0003)
    m.observe_lateness(2.0)
    name = "drbdha_loop_timer_lateness_seconds"
    assert m.registry.get_sample_value(f"{name}_count") == 2
    assert m.registry.get_sample_value(f"{name}_bucket", {"le": "0.0005"}) == 1
    assert m.registry.get_sample_value(f"{name}_bucket", {"le": "1.0"}) == 1
    assert m.registry.get_sample_value(f"{name}_sum") == 2.0003


def test_without_prometheus_internals_the_public_methods_serve() -> None:
    class Plain:
        def __init__(self) -> None:
            self.seen: list[float] = []

        def inc(self, amount: float = 1) -> None:
            self.seen.append(amount)

        def observe(self, amount: float) -> None:
            self.seen.append(amount)

    p = Plain()
    fast_inc(p)(1)
    fast_observe(p)(0.5)
    assert p.seen == [1, 0.5]
