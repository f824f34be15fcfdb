"""The measurements (shared/reference/performance.md §1.2/§1.8; bench/vrrp_bench.py's
docstring says what each one does): detection, jitter, RSS, CPU and the soak, each filling its
part of `Bench.results`."""

from __future__ import annotations

import itertools
import math
import os
import statistics
import time
from collections.abc import Sequence
from typing import Any

from polling import wait_until

from drbdha.vrrp.timers import master_down_interval
from vrrp import log
from vrrp.lab import (
    PRIO_BACKUP,
    PRIO_MASTER,
    R1_IP,
    R2_IP,
    Bench,
    WireCapture,
    lone_master,
    many,
    reset_r1,
    single,
)
from vrrp.procs import IMPLS, Running, cpu_ticks, memory_kb, sched_ns

CLK_TCK = os.sysconf("SC_CLK_TCK")


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


# ---- 1. detection ----------------------------------------------------------------------------


def bench_detection(b: Bench, runs: int) -> None:
    out: dict[str, Any] = {}
    for version, interval in ((2, 1.0), (3, 0.1), (3, 0.01)):
        key = f"{interval * 1000:g}ms_v{version}"
        theory = master_down_interval(version, PRIO_BACKUP, interval)
        out[key] = {
            "interval": interval,
            "version": version,
            "mdi": theory,
            "floor": theory - interval,
        }
        for impl in IMPLS:
            log(f"detection {impl} A={interval:g}s v{version}: {runs} runs")
            times = detection_runs(b, impl, version, interval, runs)
            out[key][impl] = times
            log(f"  -> {', '.join(f'{t * 1000:.1f}' for t in times)} ms (MDI {theory * 1000:.1f})")
    b.results["detection"] = out


def detection_runs(b: Bench, impl: str, version: int, interval: float, runs: int) -> list[float]:
    cap = b.capture()
    started: list[Running] = []
    times: list[float] = []
    quiet = max(3 * interval, 0.3)
    try:
        t0 = time.time_ns()
        started.append(b.impls.start(impl, b.r1, "r1", single(version, interval, PRIO_MASTER)))
        wait_until(
            "r1 master",
            lambda: cap.since(t0, R1_IP),
            30 + 2 * master_down_interval(version, PRIO_MASTER, interval),
            every=0.02,
        )
        started.append(b.impls.start(impl, b.r2, "r2", single(version, interval, PRIO_BACKUP)))
        for _ in range(runs):
            settle(cap, quiet, interval)
            time.sleep(quiet)  # the backup has heard several adverts (learned A, timer armed)
            cut = time.time_ns()
            b.lab.ip(b.r1, "link set eth0 down")
            try:
                first = wait_until(
                    "backup takeover",
                    lambda cut=cut: cap.since(cut, R2_IP),
                    3 * master_down_interval(version, PRIO_BACKUP, interval) + 5,
                    every=0.02,
                )[0]
            finally:
                b.lab.ip(b.r1, "link set eth0 up")
            before = [
                a for a in cap.since(cut - int(10 * interval * 1e9), R1_IP) if a.ts < first.ts
            ]
            if not before:
                raise RuntimeError("no master advert seen before the takeover")
            times.append((first.ts - before[-1].ts) / 1e9)
    finally:
        for run in reversed(started):
            b.impls.stop(run)
        cap.close()
    return times


def settle(cap: WireCapture, quiet: float, interval: float) -> None:
    """Wait until r1 is master again (recent r1 adverts, r2 silent for `quiet` seconds)."""

    def ok() -> bool:
        now = time.time_ns()
        r1, r2 = cap.last(R1_IP), cap.last(R2_IP)
        if r1 is None or now - r1.ts > (2 * interval + 0.05) * 1e9:
            return False
        return r2 is None or (now - r2.ts > quiet * 1e9 and r1.ts > r2.ts)

    wait_until("r1 to be master again", ok, 30 + 10 * interval, every=0.01)


# ---- 2. jitter -------------------------------------------------------------------------------


def bench_jitter(b: Bench) -> None:
    out: dict[str, Any] = {}
    for interval in (0.01, 0.1):
        seconds = (5 if b.quick else 30) if interval < 0.05 else (10 if b.quick else 60)
        for hog in (False, True):
            key = f"{interval * 1000:g}ms_{'hogs' if hog else 'idle'}"
            out[key] = {}
            with b.procs.hogs(hog, 2 * (seconds + 10)):
                for impl in IMPLS:
                    log(f"jitter {impl} A={interval:g}s {'2 hogs' if hog else 'idle'}: {seconds} s")
                    out[key][impl] = jitter_run(b, impl, interval, seconds)
                    j = out[key][impl]
                    log(
                        f"  -> p50 {j['p50']:.3f} p99 {j['p99']:.3f} max {j['max']:.3f} ms, "
                        f"mean {j['mean_interval']:.3f} ms, n={j['n']}"
                    )
    b.results["jitter"] = out


def jitter_run(b: Bench, impl: str, interval: float, seconds: float) -> dict[str, float]:
    with lone_master(b, impl, interval) as (_run, cap):
        time.sleep(1.0)
        start = time.time_ns()
        time.sleep(seconds)
        stop = time.time_ns()
        ts = [a.ts for a in cap.since(start, R1_IP) if a.ts <= stop and a.prio == PRIO_MASTER]
    gaps = [(y - x) / 1e6 for x, y in itertools.pairwise(ts)]
    if len(gaps) < 10:
        raise RuntimeError(f"only {len(ts)} adverts captured")
    dev = [abs(g - interval * 1000) for g in gaps]
    return {
        "n": len(gaps),
        "mean_interval": statistics.fmean(gaps),
        "p50": percentile(dev, 50),
        "p99": percentile(dev, 99),
        "p999": percentile(dev, 99.9),
        "max": max(dev),
    }


# ---- 3. RSS, 4. CPU --------------------------------------------------------------------------


def bench_rss(b: Bench) -> None:
    out: dict[str, Any] = {}
    for impl in IMPLS:
        log(f"rss {impl}: 1 instance, A=0.1 s")
        with lone_master(b, impl, 0.1) as (run, _cap):
            time.sleep(3 if b.quick else 10)
            out[impl] = memory(run)
        log(f"  -> {out[impl]}")
    b.results["rss"] = out


def memory(run: Running) -> dict[str, Any]:
    per = [memory_kb(pid) for pid in run.pids]
    pss = [p for _, p in per]
    return {
        "rss_kb": [r for r, _ in per],
        "pss_kb": pss,
        "rss_total_kb": sum(r for r, _ in per),
        "pss_total_kb": None if None in pss else sum(p for p in pss if p is not None),
    }


def bench_cpu(b: Bench) -> None:
    out: dict[str, Any] = {}
    window = 8 if b.quick else 30
    for n, interval in ((1, 0.01), (100, 0.1), (1000, 1.0)):
        key = f"{n}x{interval * 1000:g}ms"
        out[key] = {}
        for impl in IMPLS:
            log(f"cpu {impl}: {n} instance(s) at A={interval:g}s, {window} s window")
            out[key][impl] = cpu_run(b, impl, n, interval, window)
            log(
                f"  -> {out[key][impl]['ms_per_1000']:.1f} ms CPU / 1000 adverts "
                f"({out[key][impl]['adverts']} adverts)"
            )
    b.results["cpu"] = out


def cpu_run(b: Bench, impl: str, n: int, interval: float, window: float) -> dict[str, Any]:
    run = None
    expected = n / interval
    steady_at: float | None = None
    try:
        run = b.impls.start(impl, b.r1, "r1", many(n, interval))
        # Steady = two consecutive 1 s samples at >= 97 % of the nominal advert rate.
        deadline, good, last = (
            time.monotonic() + 180 + 5 * master_down_interval(3, PRIO_MASTER, interval),
            0,
            b.tx_packets(b.r1),
        )
        while time.monotonic() < deadline:
            time.sleep(1.0)
            now = b.tx_packets(b.r1)
            good = good + 1 if now - last >= 0.97 * expected else 0
            last = now
            if good >= 2:
                steady_at = time.monotonic() - 2.0
                break
        if steady_at is None:
            log(f"  !! {impl} did not reach {expected:.0f} adverts/s in time; measuring anyway")
        time.sleep(2 * interval + 0.5)  # past the takeover GARP bursts
        tx0, t0 = b.tx_packets(b.r1), time.monotonic()
        cpu0, ns0 = sum(cpu_ticks(p) for p in run.pids), sum(sched_ns(p) for p in run.pids)
        time.sleep(window)
        tx1, t1 = b.tx_packets(b.r1), time.monotonic()
        cpu1, ns1 = sum(cpu_ticks(p) for p in run.pids), sum(sched_ns(p) for p in run.pids)
        mem = memory(run)
    finally:
        if run is not None:
            b.impls.stop(run)
        reset_r1(b)
    adverts, cpu_s = tx1 - tx0, (cpu1 - cpu0) / CLK_TCK
    per_k = max(adverts, 1) / 1000
    return {
        "adverts": adverts,
        "seconds": t1 - t0,
        "cpu_s": cpu_s,
        "ms_per_1000": 1000 * cpu_s / per_k,
        "ms_per_1000_schedstat": (ns1 - ns0) / 1e6 / per_k,
        "core_pct": 100 * cpu_s / (t1 - t0),
        "rate": adverts / (t1 - t0),
        "expected_rate": expected,
        "steady": steady_at is not None,
        "time_to_steady_s": None if steady_at is None else steady_at - run.t_start,
        **mem,
    }


# ---- 5. soak ---------------------------------------------------------------------------------


SOAK_VRIDS = {"drbdha": (51, "10.77.0.100/24"), "keepalived": (52, "10.77.0.101/24")}
TRANSITION_MARKS = {"drbdha": '"vrrp.transition"', "keepalived": "Entering "}


def bench_soak(b: Bench, seconds: float, hogs: int) -> None:
    """Both pairs at once (VRIDs 51 and 52 on the same bridge), so they share the same load."""
    interval = 0.01
    log(f"soak drbdha and keepalived pairs at once, A=10 ms, {hogs} hog(s), {seconds:g} s")
    cap = b.capture()
    started: dict[str, list[Running]] = {impl: [] for impl in IMPLS}
    try:
        with b.procs.hogs(True, seconds + 30, hogs):
            for impl in IMPLS:
                vrid, vip = SOAK_VRIDS[impl]
                t0 = time.time_ns()
                started[impl].append(
                    b.impls.start(impl, b.r1, "r1", single(3, interval, PRIO_MASTER, vrid, vip))
                )
                wait_until(
                    "r1 master",
                    lambda t=t0, v=vrid: [a for a in cap.since(t, R1_IP) if a.vrid == v],
                    60,
                    every=0.02,
                )
                started[impl].append(
                    b.impls.start(impl, b.r2, "r2", single(3, interval, PRIO_BACKUP, vrid, vip))
                )
            time.sleep(1.0)
            base = {i: [r.log_text().count(TRANSITION_MARKS[i]) for r in started[i]] for i in IMPLS}
            start = time.time_ns()
            time.sleep(seconds)
            stop = time.time_ns()
            after = {
                i: [r.log_text().count(TRANSITION_MARKS[i]) for r in started[i]] for i in IMPLS
            }
    finally:
        for runs in started.values():
            for run in reversed(runs):
                b.impls.stop(run)
        cap.close()
        reset_r1(b)
    limit = master_down_interval(3, PRIO_BACKUP, interval) * 1000
    out: dict[str, Any] = {"seconds": (stop - start) / 1e9, "mdi_ms": limit, "hogs": hogs}
    for impl in IMPLS:
        vrid = SOAK_VRIDS[impl][0]
        window = [a for a in cap.since(start) if a.ts <= stop and a.vrid == vrid]
        r1 = [a.ts for a in window if a.src == R1_IP and a.prio == PRIO_MASTER]
        r2 = [a for a in window if a.src == R2_IP]
        gaps = [(x, (y - x) / 1e6) for x, y in itertools.pairwise(r1)]
        late = [(round((x - start) / 1e9, 1), round(g, 1)) for x, g in gaps if g > limit]
        out[impl] = {
            "transitions": sum(after[impl]) - sum(base[impl]),
            "backup_adverts": len(r2),
            "master_adverts": len(r1),
            "max_gap_ms": max((g for _, g in gaps), default=0.0),
            "gaps_over_mdi": len(late),
            "late_gaps": late[:100],  # (seconds into the soak, gap ms)
        }
        log(f"  -> {impl}: {out[impl]}")
    b.results["soak"] = out
