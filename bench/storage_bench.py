#!/usr/bin/env python3
"""The DRBD chain's takeover, phase by phase, on the VM lab (drbdha under systemd on both
nodes, DRBD 8.4 in Debian's kernel, software emulation).

For a power-off of the master (`lab kill`) and for `drbdha force-failover`, N runs each, it
prints per phase the median and max (seconds after the fault):
  detect   VRRP: Master_Down_Interval ended (or the resignation's Skew_Time)
  drbd     DRBD on the survivor no longer sees a Primary peer (the inhibition cleared)
  master   the survivor's machine became MASTER
  promote  `drbdadm primary` (its own duration)
  vip      address added + GARP burst (its own duration)
  up       the chain up, i.e. serving
and for force-failover also the old master's demote. Times come from the survivor's journal
(its clock, offset to the host's measured through the guest agent, +-RTT/2).

    integration/lab/lab up
    .venv/bin/python bench/storage_bench.py --runs 5 [--defaults] [--fenced] [--json out.json]

--defaults runs DRBD with its default peer-loss timers (ping-int 10 s, ping-timeout 0.5 s)
instead of the tuned ones (ping-int 1 s). --fenced adds DRBD fencing through drbdha: on a
power-off the survivor's promote then runs `drbdha fence-peer`, which waits fence_timeout for
the dead peer (the `promote` phase shows what that costs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration" / "lab"))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent / "integration"))  # polling

from chainlab import CONFIG, FENCING, OTHER, SECRET_FILE, TUNED, Storage
from cluster import NODES, RESOURCE, Lab


def clock_offset(lab: Lab, node: str) -> float:
    """VM clock minus host clock, seconds (best of three by round trip)."""
    best = None
    for _ in range(3):
        t0 = time.time()
        vm = float(lab.exec(node, "date +%s.%N").stdout)
        t1 = time.time()
        if best is None or t1 - t0 < best[0]:
            best = (t1 - t0, vm - (t0 + t1) / 2)
    assert best is not None
    return best[1]


def cursor(lab: Lab, node: str) -> str:
    out = lab.exec(node, "journalctl -u drbdha -n 0 --show-cursor -q").stdout
    return out.strip().rsplit("cursor: ", 1)[-1]


def events_after(lab: Lab, node: str, cur: str) -> list[dict[str, Any]]:
    r = lab.exec(node, f"journalctl -u drbdha -o json --after-cursor '{cur}' -q", timeout=60)
    out = []
    for line in r.stdout.splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        e["t"] = int(e["__REALTIME_TIMESTAMP"]) / 1e6
        out.append(e)
    return out


def first(events: list[dict[str, Any]], event: str, **fields: str) -> dict[str, Any] | None:
    for e in events:
        if e.get("EVENT") == event and all(e.get(k) == v for k, v in fields.items()):
            return e
    return None


def phases(events: list[dict[str, Any]], t_fault: float) -> dict[str, float | None]:
    def at(e: dict[str, Any] | None) -> float | None:
        return None if e is None else round(e["t"] - t_fault, 3)

    def took(e: dict[str, Any] | None) -> float | None:
        return None if e is None else round(float(e["TOOK_MS"]) / 1000, 3)

    master = first(events, "vrrp.transition", NEW="master")
    deferred = first(events, "vrrp.takeover_deferred")
    return {
        "detect": at(deferred or master),
        "drbd": at(first(events, "takeover.inhibition_cleared", REASON="peer_primary")),
        "master": at(master),
        "promote": took(first(events, "step.started", STEP="drbd")),
        "vip": took(first(events, "step.started", STEP="vip")),
        "up": at(first(events, "chain.up")),
    }


def one_run(lab: Lab, s: Storage, master: str, kind: str, drbd: dict[str, str]) -> dict[str, Any]:
    survivor = OTHER[master]
    offset = clock_offset(lab, survivor)
    cur = cursor(lab, survivor)
    cur_old = cursor(lab, master)
    t_fault = time.time() + offset  # on the survivor's clock
    if kind == "poweroff":
        lab.kill(master)
    else:
        lab.exec(master, "drbdha force-failover --wait 30", check=False, timeout=60)
    s.wait_serving(survivor, timeout=120)
    result: dict[str, Any] = {
        "kind": kind,
        "from": master,
        **phases(events_after(lab, survivor, cur), t_fault),
    }
    if kind == "poweroff":
        lab.start(master)
        lab.drbd_up(**drbd)
        s.start(master)
    else:
        old = events_after(lab, master, cur_old)
        stopped = first(old, "step.stopped", STEP="drbd")
        result["demote"] = None if stopped is None else round(float(stopped["TOOK_MS"]) / 1000, 3)
    return result


def summary(runs: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    keys = ["detect", "drbd", "master", "promote", "vip", "up", "demote"]
    out: dict[str, dict[str, float | None]] = {}
    for k in keys:
        vals = [r[k] for r in runs if r.get(k) is not None]
        out[k] = {
            "median": round(statistics.median(vals), 3) if vals else None,
            "max": round(max(vals), 3) if vals else None,
            "n": len(vals),
        }
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--defaults", action="store_true", help="DRBD's default ping timers")
    p.add_argument(
        "--fenced",
        action="store_true",
        help="DRBD fencing through drbdha (resource-and-stonith, drbdha fence-peer)",
    )
    p.add_argument("--kinds", default="poweroff,force-failover")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    net = "" if a.defaults else TUNED
    fencing = FENCING if a.fenced else {}
    lab = Lab()
    lab.up()
    lab.drbd_up(net=net, **fencing)
    s = Storage(lab)
    s.stop()
    s.configure()  # with the [peer] section and its secret
    lab.parallel(
        lambda n: lab.exec(n, f"drbdadm secondary {RESOURCE}; rm -rf /var/lib/drbdha", check=False),
        NODES,
    )
    s.start("node1", "node2")
    s.wait_serving("node1")
    master = "node1"
    results: dict[str, Any] = {"drbd_net": net or "defaults", "fenced": a.fenced, "runs": {}}
    try:
        for kind in a.kinds.split(","):
            runs = []
            for i in range(a.runs):
                r = one_run(lab, s, master, kind, {"net": net, **fencing})
                print(f"{kind} #{i + 1}: {json.dumps(r)}", flush=True)
                runs.append(r)
                master = OTHER[master]
                time.sleep(2)
            results["runs"][kind] = {"each": runs, "summary": summary(runs)}
    finally:
        s.stop()
        lab.parallel(
            lambda n: lab.exec(n, f"rm -f {CONFIG} {SECRET_FILE}", check=False),
            [n for n in NODES if lab.running(n)],
        )
    for kind, r in results["runs"].items():
        fenced = ", fenced through drbdha" if a.fenced else ""
        print(f"\n{kind} (DRBD net: {results['drbd_net']}{fenced}), seconds after the fault:")
        for phase, v in r["summary"].items():
            if v["n"]:
                print(
                    f"  {phase:<8} median {v['median']:>7.3f}  max {v['max']:>7.3f}  (n={v['n']})"
                )
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
