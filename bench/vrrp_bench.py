#!/usr/bin/env python3
"""drbdha vs keepalived, side by side in one network-namespace lab (root only).

    .venv/bin/python bench/vrrp_bench.py [--quick] [--soak SECONDS] [--auth]
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
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# bench/ is on sys.path (the script's directory); the package puts integration/ there too.
from vrrp import ROOT, log
from vrrp.lab import open_bench
from vrrp.measure import bench_cpu, bench_detection, bench_jitter, bench_rss, bench_soak
from vrrp.procs import TMP_PREFIX, Procs, sweep_stale_runs, use_auth
from vrrp.report import DOC, loadavg, machine, render, write_doc


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
    p.add_argument(
        "--auth",
        action="store_true",
        help="both sign and check adverts (auth_hmac, enforce); keepalived 2.4.3 from "
        "integration/build-keepalived; figures to stdout only (--doc no)",
    )
    args = p.parse_args(argv)
    args.phases = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = set(args.phases) - set(PHASES)
    if unknown:
        p.error(f"unknown --only item(s): {', '.join(sorted(unknown))}")
    if os.geteuid() != 0:
        p.error("needs root (network namespaces, raw sockets)")
    args.runs = args.runs or (3 if args.quick else 10)
    if args.auth:
        args.doc = "no"  # the markers hold the figures without auth
        built = subprocess.run(
            [str(ROOT / "integration" / "build-keepalived")],
            check=False,
            capture_output=True,
            text=True,
        )
        if built.returncode != 0:
            p.error(f"--auth needs keepalived 2.4.3: {built.stderr.strip()}")
        use_auth(built.stdout.splitlines()[-1])
    return args


PHASES = ("detection", "jitter", "rss", "cpu")


def _measure(args: argparse.Namespace, procs: Procs, res: dict[str, Any]) -> None:
    with open_bench(procs, args.quick, res) as b:
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
        text, _ = render(args, blob["results"], blob)
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
    text, targets = render(args, res, meta)
    print("\n" + text)
    if args.json:
        blob = {**meta, "machine": machine(), "results": res, "targets": targets}
        args.json.write_text(json.dumps(blob, indent=1))
    if (args.doc == "yes" or (args.doc == "auto" and not args.quick)) and res and not failed:
        write_doc(text)
        log(f"updated {DOC}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
