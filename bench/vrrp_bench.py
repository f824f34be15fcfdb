#!/usr/bin/env python3
"""drbdha vs keepalived, side by side in one network-namespace lab (root only).

    .venv/bin/python bench/vrrp_bench.py [--quick] [--soak SECONDS]
                                         [--only detection,jitter,cpu,rss]

Lab: two router namespaces (r1, r2) and an observer namespace holding the bridge br0 their
eth0s hang off. Every VRRP timestamp is the kernel receive timestamp (SO_TIMESTAMPNS on an
AF_PACKET socket on br0 in the observer), so Python scheduling in the bench does not blur
the figures. Both implementations get the same settings (interval, version, priorities,
one VIP per instance, 5 GARPs at takeover, no second GARP burst, no GARP refresh).

Methods (shared/reference/performance.md §1.2/§1.8):
  detection  link of the master (r1, priority 200) cut with `ip link set eth0 down` in r1;
             figure = last r1 advert -> first r2 (priority 100) advert on the wire.
             The link is restored and r1 preempts back before the next run.
  jitter     |interval - A| between consecutive adverts of a lone master, idle and with
             two CPU hogs (stress-ng --cpu 2).
  cpu        utime+stime (/proc/PID/stat; keepalived: parent + VRRP child) per 1000
             adverts sent (tx_packets of r1's interfaces) by a lone master.
  rss        VmRSS (/proc/PID/status) and Pss (/proc/PID/smaps_rollup) of a lone master
             with one instance; keepalived = parent + VRRP child.
  soak       a drbdha pair (VRID 51) and a keepalived pair (VRID 52) at once, at 10 ms with
             two CPU hogs; any transition after the initial election (daemon logs) or any r2
             advert on the wire is a false failover.

The figures go to stdout and, for a full run, between the markers in docs/benchmarks.md
(the analysis outside the markers is left alone). Namespaces, daemons and hogs are removed
on exit, Ctrl-C and exceptions; a run killed with SIGKILL is swept by the next run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import math
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "integration"))
import drbdha_toml  # noqa: E402
from netns import Lab, inside  # noqa: E402
from polling import wait_until  # noqa: E402

from drbdha.vrrp.timers import master_down_interval  # noqa: E402

DRBDHA = ROOT / ".venv" / "bin" / "drbdha"
KEEPALIVED = "/usr/sbin/keepalived"
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- vrrp_bench:begin -->", "<!-- vrrp_bench:end -->"
TMP_PREFIX = "drbdha-bench-"

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SO_RCVBUFFORCE = 33
ETH_P_IP = 0x0800
CLK_TCK = os.sysconf("SC_CLK_TCK")
IMPLS = ("drbdha", "keepalived")
R1_IP, R2_IP = "10.77.0.1", "10.77.0.2"
VIP = "10.77.0.100/24"
PRIO_MASTER, PRIO_BACKUP = 200, 100
PY_HOGS = """import multiprocessing as m, time
end = time.time() + {seconds}
def spin():
    while time.time() < end:
        pass
ps = [m.Process(target=spin) for _ in range({n})]
[p.start() for p in ps]
[p.join() for p in ps]
"""
EXTRA_IFS = 3  # r1 has eth0 (bridged) plus eth1..eth3, for 1000 instances of 250 VRIDs each


# ---- small helpers ---------------------------------------------------------------------------


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


# ---- wire capture ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Advert:
    ts: int  # kernel receive time, ns (CLOCK_REALTIME)
    src: str
    vrid: int
    prio: int


class WireCapture:
    """VRRP adverts seen on `ifname` in `ns`, with kernel receive timestamps, in a thread."""

    def __init__(self, ns: str, ifname: str) -> None:
        with inside(ns):
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
            sock.bind((ifname, ETH_P_IP))
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.settimeout(0.1)
        self._sock = sock
        self.adverts: list[Advert] = []
        self.untimestamped = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sock, out = self._sock, self.adverts
        while not self._stop:
            try:
                data, anc, _flags, _addr = sock.recvmsg(96, 64)
            except TimeoutError:
                continue
            except OSError:
                return
            if len(data) < 14 + 20 + 8 or data[14 + 9] != 112:
                continue
            ihl = (data[14] & 0x0F) * 4
            vrrp = 14 + ihl
            ts = 0
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(payload) >= 16:
                    sec, nsec = (
                        int.from_bytes(payload[:8], "little"),
                        int.from_bytes(payload[8:16], "little"),
                    )
                    ts = sec * 1_000_000_000 + nsec
            if ts == 0:
                self.untimestamped += 1
                ts = time.time_ns()
            out.append(
                Advert(
                    ts, socket.inet_ntoa(data[14 + 12 : 14 + 16]), data[vrrp + 1], data[vrrp + 2]
                )
            )

    def since(self, t_ns: int, src: str | None = None) -> list[Advert]:
        snap = list(self.adverts)
        return [a for a in snap if a.ts >= t_ns and (src is None or a.src == src)]

    def last(self, src: str) -> Advert | None:
        for a in reversed(list(self.adverts)):
            if a.src == src:
                return a
        return None

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self._sock.close()


# ---- processes -------------------------------------------------------------------------------


class Procs:
    """Every process the bench starts, so that all of them go on exit whatever happens."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.live: list[subprocess.Popen[bytes]] = []
        self._pidfile = tmp / "pids"

    def start(
        self, argv: list[str], logfile: Path, *, ns: str | None = None
    ) -> subprocess.Popen[bytes]:
        full = ["ip", "netns", "exec", ns, *argv] if ns else argv
        with logfile.open("ab") as out:
            proc = subprocess.Popen(
                full,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.live.append(proc)
        with self._pidfile.open("a") as f:
            f.write(f"{proc.pid}\n")
        return proc

    def stop(
        self, proc: subprocess.Popen[bytes], extra_pids: Sequence[int] = (), timeout: float = 8.0
    ) -> None:
        if proc.poll() is None:
            with suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        for pid in extra_pids:  # e.g. a keepalived child left behind by a SIGKILLed parent
            if _cmdline(pid) and str(self.tmp) in _cmdline(pid):
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if proc in self.live:
            self.live.remove(proc)

    def stop_all(self) -> None:
        for proc in list(reversed(self.live)):
            try:
                self.stop(proc, timeout=5)
            except Exception as e:
                log(f"cleanup: {e}")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def sweep_stale_runs() -> None:
    """Kill daemons of an earlier bench run that was SIGKILLed (their namespaces are swept by
    Lab). Only pids that run from that run's private directory are touched."""
    for d in Path(tempfile.gettempdir()).glob(f"{TMP_PREFIX}*"):
        owner = d.name.removeprefix(TMP_PREFIX).split("-")[0]
        if not owner.isdigit() or Path(f"/proc/{owner}").exists():
            continue
        pidfile = d / "pids"
        if pidfile.exists():
            for line in pidfile.read_text().split():
                pid = int(line)
                for p in [pid, *_children(pid)]:
                    if str(d) in _cmdline(p):
                        with suppress(ProcessLookupError):
                            os.kill(p, signal.SIGKILL)
        shutil.rmtree(d, ignore_errors=True)


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def sched_ns(pid: int) -> int:
    """CPU time of all threads in ns (/proc/PID/task/*/schedstat), a finer cross-check of
    the 1/CLK_TCK-resolution utime+stime."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with suppress(OSError):
            total += int((task / "schedstat").read_text().split()[0])
    return total


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


def memory_kb(pid: int) -> tuple[int, int | None]:
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    pss = None
    with suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss, pss


# ---- the two implementations -----------------------------------------------------------------


@dataclass(frozen=True)
class Inst:
    interface: str
    vrid: int
    priority: int
    version: int
    interval: float
    vip: str


@dataclass
class Running:
    impl: str
    node: str
    proc: subprocess.Popen[bytes]
    logfile: Path
    pids: list[int] = field(default_factory=list)  # processes to account (drbdha: 1, ka: 2)
    t_start: float = field(default_factory=time.monotonic)

    def log_text(self) -> str:
        return self.logfile.read_text(errors="replace")


class Implementations:
    def __init__(self, procs: Procs, tmp: Path) -> None:
        self.procs, self.tmp = procs, tmp
        self._n = 0

    def start(self, impl: str, ns: str, node: str, insts: Sequence[Inst]) -> Running:
        self._n += 1
        tag = f"{impl}-{node}-{self._n}"
        logfile = self.tmp / f"{tag}.log"
        if impl == "drbdha":
            conf = self.tmp / f"{tag}.toml"
            conf.write_text(drbdha_config(insts, self.tmp / f"{tag}.sock"))
            t_start = time.monotonic()
            proc = self.procs.start([str(DRBDHA), "run", "-c", str(conf)], logfile, ns=ns)
            run = Running(impl, node, proc, logfile, [proc.pid], t_start)
            wait_until(
                f"{tag} to start",
                lambda: "daemon.started" in run.log_text() or proc.poll() is not None,
                60 + 0.3 * len(insts),
                every=0.05,
            )
        else:
            conf = self.tmp / f"{tag}.conf"
            conf.write_text(keepalived_config(insts, node))
            t_start = time.monotonic()
            proc = self.procs.start(
                [
                    KEEPALIVED,
                    "-n",
                    "-l",
                    "-G",
                    "-P",
                    "-f",
                    str(conf),
                    "-p",
                    str(self.tmp / f"{tag}.pid"),
                    "-r",
                    str(self.tmp / f"{tag}.vrrp.pid"),
                ],
                logfile,
                ns=ns,
            )
            run = Running(impl, node, proc, logfile, [proc.pid], t_start)
            child = wait_until(
                f"{tag} VRRP child",
                lambda: _children(proc.pid) or proc.poll() is not None,
                30,
                every=0.02,
            )
            if proc.poll() is None:
                run.pids.append(child[0])
            wait_until(
                f"{tag} to start",
                lambda: (
                    "Entering BACKUP STATE" in run.log_text()
                    or "Entering MASTER STATE" in run.log_text()
                    or proc.poll() is not None
                ),
                60 + 0.3 * len(insts),
                every=0.05,
            )
        if proc.poll() is not None:
            raise RuntimeError(f"{tag} exited with {proc.returncode}:\n{run.log_text()[-3000:]}")
        return run

    def stop(self, run: Running) -> None:
        self.procs.stop(run.proc, run.pids[1:])


def drbdha_config(insts: Sequence[Inst], sock: Path) -> str:
    return drbdha_toml.render(
        daemon={
            "control_socket": str(sock),
            "metrics_listen": "127.0.0.1:9942",
            "log_level": "info",
        },
        instances=[
            {
                "name": f"vr_{i.interface}_{i.vrid}",
                "interface": i.interface,
                "vrid": i.vrid,
                "priority": i.priority,
                "version": i.version,
                "advert_interval": i.interval,
                "virtual_ipaddress": [i.vip],
                "garp_master_repeat": 5,
                "garp_master_delay": 0.0,
                "garp_master_refresh": 0.0,
            }
            for i in insts
        ],
    )


def keepalived_config(insts: Sequence[Inst], node: str) -> str:
    out = [
        "global_defs {",
        f"    router_id {node}",
        "    vrrp_garp_master_repeat 5",
        "    vrrp_garp_master_delay 0",
        "    vrrp_garp_master_refresh 0",
        "}",
    ]
    for i in insts:
        interval = f"{i.interval:g}" if i.version == 3 else str(round(i.interval))
        out += [
            f"vrrp_instance vr_{i.interface}_{i.vrid} {{",
            "    state BACKUP",
            f"    interface {i.interface}",
            f"    virtual_router_id {i.vrid}",
            f"    priority {i.priority}",
            f"    version {i.version}",
            f"    advert_int {interval}",
            "    virtual_ipaddress {",
            f"        {i.vip}",
            "    }",
            "}",
        ]
    return "\n".join(out) + "\n"


# ---- the lab ---------------------------------------------------------------------------------


@dataclass
class Bench:
    lab: Lab
    impls: Implementations
    procs: Procs
    obs: str
    r1: str
    r2: str
    quick: bool
    results: dict[str, Any] = field(default_factory=dict)

    def capture(self) -> WireCapture:
        return WireCapture(self.obs, "br0")

    @contextmanager
    def hogs(self, on: bool, seconds: float, n: int = 2) -> Iterator[None]:
        if not on or n <= 0:
            yield
            return
        # --timeout: the hogs end by themselves even if this process is SIGKILLed.
        argv = (
            [
                "stress-ng",
                "--cpu",
                str(n),
                "--cpu-method",
                "int64",
                "--timeout",
                f"{int(seconds) + 60}s",
                "--quiet",
            ]
            if shutil.which("stress-ng")
            else [
                sys.executable,
                "-c",
                PY_HOGS.format(seconds=seconds + 60, n=n),
            ]
        )
        proc = self.procs.start(argv, self.procs.tmp / "hogs.log")
        try:
            time.sleep(0.5)
            yield
        finally:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            self.procs.stop(proc)

    def tx_packets(self, ns: str) -> int:
        with inside(ns):
            lines = Path("/proc/thread-self/net/dev").read_text().splitlines()[2:]
        total = 0
        for line in lines:
            name, _, rest = line.partition(":")
            if name.strip().startswith("eth"):
                total += int(rest.split()[9])  # transmit packets
        return total


def build_lab(lab: Lab) -> tuple[str, str, str]:
    obs, r1, r2 = lab.add_ns("obs"), lab.add_ns("r1"), lab.add_ns("r2")
    lab.veth(r1, "eth0", obs, "p1")
    lab.veth(r2, "eth0", obs, "p2")
    lab.bridge(obs, "br0", ["p1", "p2"])
    # Snooping off: the bridge then floods 224.0.0.18 to its own port too, where we listen.
    lab.ip(obs, "link set br0 type bridge mcast_snooping 0")
    lab.ip(r1, f"addr add {R1_IP}/24 dev eth0")
    lab.ip(r2, f"addr add {R2_IP}/24 dev eth0")
    for k in range(1, EXTRA_IFS + 1):
        lab.veth(r1, f"eth{k}", obs, f"x{k}")
        lab.ip(r1, f"addr add 10.78.{k}.1/24 dev eth{k}")
    return obs, r1, r2


def single(version: int, interval: float, prio: int, vrid: int = 51, vip: str = VIP) -> list[Inst]:
    return [Inst("eth0", vrid, prio, version, interval, vip)]


def many(n: int, interval: float) -> list[Inst]:
    per_if = 250
    out = []
    for k in range(n):
        ifnum, vrid = divmod(k, per_if)
        out.append(
            Inst(
                f"eth{ifnum}",
                vrid + 1,
                PRIO_MASTER,
                3,
                interval,
                f"10.{90 + ifnum}.0.{vrid + 1}/24",
            )
        )
    return out


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
            with b.hogs(hog, 2 * (seconds + 10)):
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
    cap = b.capture()
    run = None
    try:
        t0 = time.time_ns()
        run = b.impls.start(impl, b.r1, "r1", single(3, interval, PRIO_MASTER))
        wait_until("master adverts", lambda: cap.since(t0, R1_IP), 30, every=0.02)
        time.sleep(1.0)
        start = time.time_ns()
        time.sleep(seconds)
        stop = time.time_ns()
        ts = [a.ts for a in cap.since(start, R1_IP) if a.ts <= stop and a.prio == PRIO_MASTER]
    finally:
        if run is not None:
            b.impls.stop(run)
        cap.close()
        reset_r1(b)
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
        cap = b.capture()
        run = None
        try:
            t0 = time.time_ns()
            run = b.impls.start(impl, b.r1, "r1", single(3, 0.1, PRIO_MASTER))
            wait_until("master adverts", lambda c=cap, t=t0: c.since(t, R1_IP), 30, every=0.02)
            time.sleep(3 if b.quick else 10)
            out[impl] = memory(run)
        finally:
            if run is not None:
                b.impls.stop(run)
            cap.close()
            reset_r1(b)
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


def reset_r1(b: Bench) -> None:
    """Drop whatever VIPs a killed daemon left on r1, so the next run starts clean."""
    for k in range(EXTRA_IFS + 1):
        b.lab.ip(b.r1, f"addr flush dev eth{k}")
        b.lab.ip(b.r1, f"addr add {R1_IP if k == 0 else f'10.78.{k}.1'}/24 dev eth{k}")
        b.lab.ip(b.r1, f"link set eth{k} up")


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
        with b.hogs(True, seconds + 30, hogs):
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


# ---- report ----------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = ""
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ka = subprocess.run([KEEPALIVED, "--version"], capture_output=True, text=True, check=False)
    ka_version = (ka.stdout + ka.stderr).splitlines()[0] if (ka.stdout + ka.stderr) else "?"
    py = subprocess.run(
        [str(ROOT / ".venv/bin/python"), "-VV"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": py.replace("\n", " "),
        "keepalived": ka_version,
    }


def fmt_ms(v: float) -> str:
    return f"{v * 1000:.1f}"


Targets = list[tuple[str, str, str]]  # (target, verdict, figure)


def report(res: dict[str, Any]) -> tuple[str, Targets]:
    """Markdown tables of the figures, and the verdict on every target of issue 3."""
    md: list[str] = []
    targets: Targets = []
    for key, section in (
        ("detection", _report_detection),
        ("jitter", _report_jitter),
        ("rss", _report_rss),
        ("cpu", _report_cpu),
        ("soak", _report_soak),
    ):
        if res.get(key):
            section(res[key], md, targets)
            md.append("")
    return "\n".join(md), targets


def _report_detection(det: dict[str, Any], md: list[str], targets: Targets) -> None:
    md += [
        "### Detection after the master's link is cut (ms)",
        "",
        "Last master advert -> first backup advert on the wire; backup priority 100.",
        "",
        (
            "| A | MDI | floor (MDI - A) | drbdha median [min-max] | keepalived median [min-max] "
            "| ratio of medians | runs below floor |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    for d in det.values():
        cells, below = [], []
        for impl in IMPLS:
            t = d[impl]
            med = statistics.median(t)
            cells.append(f"{fmt_ms(med)} [{fmt_ms(min(t))}-{fmt_ms(max(t))}] (n={len(t)})")
            below.append(f"{impl} {sum(x < d['floor'] for x in t)}")
        d["ratio"] = statistics.median(d["drbdha"]) / statistics.median(d["keepalived"])
        md.append(
            f"| {d['interval'] * 1000:g} ms v{d['version']} | {fmt_ms(d['mdi'])} | "
            f"{fmt_ms(d['floor'])} | {cells[0]} | {cells[1]} | {d['ratio']:.3f} | "
            f"{', '.join(below)} |"
        )
    for key, limit in (("100ms_v3", 1.02), ("10ms_v3", 1.05)):
        if key in det:
            d = det[key]
            md_d, md_k = statistics.median(d["drbdha"]), statistics.median(d["keepalived"])
            targets.append(
                (
                    f"detection median at {key[:-3]} within {limit}x of keepalived",
                    "met" if d["ratio"] <= limit else "missed",
                    (
                        f"{d['ratio']:.3f}x ({fmt_ms(md_d)} vs {fmt_ms(md_k)} ms, "
                        f"{(md_d - md_k) * 1000:+.1f} ms)"
                    ),
                )
            )
    viol = [(k, round(x * 1000, 1)) for k, d in det.items() for x in d["drbdha"] if x < d["floor"]]
    kviol = sum(x < d["floor"] for d in det.values() for x in d["keepalived"])
    total = sum(len(d["drbdha"]) for d in det.values())
    targets.append(
        (
            "drbdha detection never earlier than MDI - A",
            "met" if not viol else "missed",
            f"{len(viol)} violation(s) in {total} runs (keepalived: {kviol})"
            + (f": {viol}" if viol else ""),
        )
    )


def _report_jitter(jit: dict[str, Any], md: list[str], targets: Targets) -> None:
    md += [
        "### Advert send jitter |interval - A| on the wire (ms)",
        "",
        "| A, load | impl | intervals | mean interval | p50 | p99 | p99.9 | max |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, d in jit.items():
        label = key.replace("_", ", ")
        for impl in IMPLS:
            j = d[impl]
            md.append(
                f"| {label} | {impl} | {j['n']} | {j['mean_interval']:.3f} | {j['p50']:.3f} | "
                f"{j['p99']:.3f} | {j['p999']:.3f} | {j['max']:.3f} |"
            )
        jd, jk = d["drbdha"]["p99"], d["keepalived"]["p99"]
        targets.append(
            (
                f"p99 jitter no worse than keepalived ({label})",
                "met" if jd <= jk else "missed",
                f"{jd:.3f} vs {jk:.3f} ms ({jd - jk:+.3f} ms)",
            )
        )


def _report_rss(rss: dict[str, Any], md: list[str], targets: Targets) -> None:
    md += [
        "### Memory with one instance (MB; keepalived = parent + VRRP child)",
        "",
        "| impl | RSS | PSS | RSS per process | PSS per process |",
        "|---|---|---|---|---|",
    ]
    for impl in IMPLS:
        m = rss[impl]
        pss = "n/a" if m["pss_total_kb"] is None else f"{m['pss_total_kb'] / 1024:.1f}"
        per_rss = " + ".join(f"{x / 1024:.1f}" for x in m["rss_kb"])
        per_pss = " + ".join("?" if x is None else f"{x / 1024:.1f}" for x in m["pss_kb"])
        md.append(f"| {impl} | {m['rss_total_kb'] / 1024:.1f} | {pss} | {per_rss} | {per_pss} |")
    mb = rss["drbdha"]["rss_total_kb"] / 1024
    targets.append(
        (
            "RSS at most 40 MB with one instance",
            "met" if mb <= 40 else "missed",
            (
                f"{mb:.1f} MB ({mb - 40:+.1f} MB against the target; keepalived "
                f"{rss['keepalived']['rss_total_kb'] / 1024:.1f} MB)"
            ),
        )
    )


def _report_cpu(cpu: dict[str, Any], md: list[str], targets: Targets) -> None:
    md += [
        "### CPU per 1000 adverts (VRRPv3, lone master; keepalived = parent + VRRP child)",
        "",
        (
            "| instances x A | impl | adverts/s (nominal) | CPU ms / 1000 adverts (stat) "
            "| same (schedstat) | % of a core | RSS MB | start to full rate |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, d in cpu.items():
        for impl in IMPLS:
            c = d[impl]
            steady = f"{c['time_to_steady_s']:.1f} s" if c["steady"] else "never"
            md.append(
                f"| {key} | {impl} | {c['rate']:.0f} ({c['expected_rate']:.0f}) | "
                f"{c['ms_per_1000']:.1f} | {c['ms_per_1000_schedstat']:.1f} | "
                f"{c['core_pct']:.2f} | {c['rss_total_kb'] / 1024:.1f} | {steady} |"
            )
        dd, kk = d["drbdha"], d["keepalived"]
        d["ratio"] = dd["ms_per_1000"] / max(kk["ms_per_1000"], 1e-9)
        note = (
            ""
            if dd["steady"]
            else f"; drbdha never reached the nominal rate ({dd['rate']:.0f} of "
            f"{dd['expected_rate']:.0f} adverts/s)"
        )
        targets.append(
            (
                f"CPU per 1000 adverts at most 2x keepalived ({key})",
                "met" if d["ratio"] <= 2 else "missed",
                f"{d['ratio']:.2f}x ({dd['ms_per_1000']:.1f} vs {kk['ms_per_1000']:.1f} ms)" + note,
            )
        )


def _report_soak(soak: dict[str, Any], md: list[str], targets: Targets) -> None:
    md += [
        f"### Soak: drbdha and keepalived pairs at once, A = 10 ms, {soak.get('hogs', 2)} CPU hogs",
        "",
        (
            "| impl | duration | transitions after election | backup adverts on the wire "
            "| master adverts | longest master gap | gaps > backup MDI |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    for impl in IMPLS:
        if impl not in soak:
            continue
        r = soak[impl]
        md.append(
            f"| {impl} | {soak['seconds']:.0f} s | {r['transitions']} | {r['backup_adverts']} | "
            f"{r['master_adverts']} | {r['max_gap_ms']:.1f} ms | {r['gaps_over_mdi']} "
            f"(MDI {soak['mdi_ms']:.1f} ms) |"
        )
    r = soak["drbdha"]
    ok = r["transitions"] == 0 and r["backup_adverts"] == 0
    k = soak.get("keepalived")
    ka = "" if k is None else f"; keepalived: {k['transitions']} transition(s)"
    targets.append(
        (
            f"no false failover in {soak['seconds'] / 60:.0f} min at 10 ms with 2 hogs",
            "met" if ok else "missed",
            f"{r['transitions']} transition(s), {r['backup_adverts']} backup advert(s); "
            f"longest master gap {r['max_gap_ms']:.1f} ms vs MDI {soak['mdi_ms']:.1f} ms" + ka,
        )
    )


def write_doc(body: str) -> None:
    block = f"{BEGIN}\n{body.rstrip()}\n{END}"
    if DOC.exists():
        text = DOC.read_text()
        if BEGIN in text and END in text:
            head, _, rest = text.partition(BEGIN)
            _, _, tail = rest.partition(END)
            DOC.write_text(head + block + tail)
            return
        DOC.write_text(text.rstrip() + "\n\n" + block + "\n")
        return
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text("# Benchmarks: drbdha vs keepalived\n\n" + block + "\n")


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# ---- main ------------------------------------------------------------------------------------


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="3 detection runs, short windows")
    p.add_argument(
        "--soak",
        type=float,
        default=0,
        metavar="SECONDS",
        help="also run the drbdha pair this long at 10 ms with two CPU hogs",
    )
    p.add_argument(
        "--only",
        default=",".join(PHASES),
        help=f"comma-separated subset of {','.join(PHASES)} (the soak is --soak)",
    )
    p.add_argument("--runs", type=int, default=None, help="detection runs (default 10, quick 3)")
    p.add_argument(
        "--doc",
        choices=("auto", "yes", "no"),
        default="auto",
        help=f"update {DOC.relative_to(ROOT)} (auto: for full runs only)",
    )
    p.add_argument("--json", type=Path, help="also write the raw figures here")
    p.add_argument(
        "--include",
        type=Path,
        metavar="JSON",
        action="append",
        default=[],
        help="take the phases measured in this earlier --json run (e.g. a separate soak) "
        "from it, replacing this run's (repeatable)",
    )
    p.add_argument("--hogs", type=int, default=2, help="CPU hogs during the soak (default 2)")
    p.add_argument(
        "--report",
        type=Path,
        metavar="JSON",
        help="measure nothing: render (and with --doc yes, write) the figures of a --json file",
    )
    p.add_argument("--keep-logs", action="store_true", help="keep daemon logs and configs")
    args = p.parse_args(argv)
    args.phases = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = set(args.phases) - set(PHASES)
    if unknown:
        p.error(f"unknown --only item(s): {', '.join(sorted(unknown))}")
    if os.geteuid() != 0:
        p.error("needs root (network namespaces, raw sockets)")
    args.runs = args.runs or (3 if args.quick else 10)
    return args


PHASES = ("detection", "jitter", "rss", "cpu")


def _measure(args: argparse.Namespace, procs: Procs, res: dict[str, Any]) -> None:
    with Lab() as lab:
        obs, r1, r2 = build_lab(lab)
        b = Bench(lab, Implementations(procs, procs.tmp), procs, obs, r1, r2, args.quick, res)
        try:
            phases: dict[str, Callable[[], None]] = {
                "detection": lambda: bench_detection(b, args.runs),
                "jitter": lambda: bench_jitter(b),
                "rss": lambda: bench_rss(b),
                "cpu": lambda: bench_cpu(b),
            }
            for name in PHASES:
                if name in args.phases:
                    phases[name]()
            if args.soak:
                bench_soak(b, args.soak, args.hogs)
        finally:
            procs.stop_all()


def _on_signal(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.report:
        blob = json.loads(args.report.read_text())
        text, _ = _render(args, blob["results"], blob)
        print(text)
        if args.doc == "yes":
            write_doc(text)
            log(f"updated {DOC}")
        return 0
    # SIGINT too: a shell starting us in the background would otherwise leave it ignored.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    sweep_stale_runs()
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-"))
    procs = Procs(tmp)
    started_at = dt.datetime.now(dt.UTC)
    load_before, t_start = loadavg(), time.monotonic()
    res: dict[str, Any] = {}
    failed, keep = True, args.keep_logs
    try:
        _measure(args, procs, res)
        failed = False
    except KeyboardInterrupt:
        log("interrupted: namespaces, daemons and hogs removed")
    except Exception:
        keep = True
        log(f"failed; logs kept in {tmp}")
        raise
    finally:
        procs.stop_all()
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    if failed and not res:
        return 1
    meta = {
        "started_at": f"{started_at:%Y-%m-%d %H:%M} UTC",
        "minutes": round((time.monotonic() - t_start) / 60, 1),
        "command": ".venv/bin/python bench/vrrp_bench.py "
        + shlex.join(argv if argv is not None else sys.argv[1:]),
        "load_before": load_before,
        "load_after": loadavg(),
    }
    text, targets = _render(args, res, meta)
    print("\n" + text)
    if args.json:
        blob = {**meta, "machine": machine(), "results": res, "targets": targets}
        args.json.write_text(json.dumps(blob, indent=1))
    if (args.doc == "yes" or (args.doc == "auto" and not args.quick)) and res and not failed:
        write_doc(text)
        log(f"updated {DOC}")
    return 1 if failed else 0


def _render(
    args: argparse.Namespace, res: dict[str, Any], meta: dict[str, Any]
) -> tuple[str, Targets]:
    notes = []
    for path in args.include:
        earlier = json.loads(path.read_text())
        phases = sorted(earlier["results"])
        res.update(earlier["results"])
        notes.append(
            f"Figures for {', '.join(phases)} from a separate run: {earlier['started_at']}, "
            f"`{earlier['command'].strip()}`, load average before/after "
            f"{earlier['load_before']} / {earlier['load_after']}."
        )
    body, targets = report(res)
    info = machine()
    quick = " (--quick)" if args.quick else ""
    head = [
        (
            f"Run: {meta['started_at']}, {meta['minutes']} min{quick}. "
            f"Command (as root, from the repository root): `{meta['command'].strip()}`"
        ),
        "",
        (
            f"Machine: {info['nproc']} CPUs ({info['cpu']}), kernel {info['kernel']}, "
            f"{info['python']}, {info['keepalived']}. "
            f"Load average before/after: {meta['load_before']} / {meta['load_after']}."
        ),
        "",
    ]
    for note in notes:
        head += [note, ""]
    tgt = ["### Targets", "", "| target | verdict | figure |", "|---|---|---|"]
    tgt += [f"| {t} | **{v}** | {d} |" for t, v, d in targets]
    if "soak" not in res:
        tgt.append("| no false failover in 10 min at 10 ms with 2 hogs | not run | `--soak 600` |")
    return "\n".join(head) + "\n" + body + "\n" + "\n".join(tgt) + "\n", targets


if __name__ == "__main__":
    sys.exit(main())
