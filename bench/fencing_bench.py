#!/usr/bin/env python3
"""The replication-cut data-loss path, drbdha against the classic keepalived stack, on the lab.

The sequence, the same for both: node1 is master and Primary, a writer on node1 appends
checksummed O_DSYNC records to /dev/drbd0 and reports each acknowledged one to the host
(integration/lab/records.py); node1's replication link is cut; writes go on for 10 s; node1
is powered off (`lab kill`). Then:

- classic (bench/classic: keepalived + notify script, DRBD fencing dont-care): node2's
  keepalived becomes master and its script promotes node2. Counted: the acknowledged records
  missing from node2's disk, which is what clients are served now.
- drbdha (fencing resource-and-stonith + `drbdha fence-peer`): node2 must not promote; node1
  is powered on again (its replication link still cut), drbdha brings the service back
  there. Counted: acknowledged records missing from node1, the copy served; and how long the
  handler held node1's I/O at the cut (node1's kernel log, from "helper command: ...
  fence-peer" to "fence-peer helper returned", taken before the power-off), next to the
  writer's longest single write after the cut (DRBD's own peer-loss detection included).

    integration/lab/lab up
    .venv/bin/python bench/fencing_bench.py [--runs 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration" / "lab"))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent / "integration"))  # polling

import records
from chainlab import FENCING, TUNED, fresh_cluster
from cluster import NODES, RESOURCE, Lab
from polling import wait_until

HERE = Path(__file__).resolve().parent
WRITE_AFTER_CUT = 10.0
PRIORITY = {"node1": 150, "node2": 100}
CLASSIC = HERE / "classic"
HELPER = re.compile(r"^\[\s*([0-9.]+)\].*fence-peer (?:r0|minor-0)$")
RETURNED = re.compile(r"^\[\s*([0-9.]+)\].*fence-peer helper returned (\d)")


def disk(lab: Lab, node: str) -> str:
    return lab.exec(node, f"drbdadm dstate {RESOURCE}", check=False).stdout.split("/")[0].strip()


def role(lab: Lab, node: str) -> str:
    return lab.exec(node, f"drbdadm role {RESOURCE}", check=False).stdout.split("/")[0].strip()


def io_hold(klog: str) -> tuple[float | None, str | None]:
    """Seconds from DRBD calling fence-peer to its return (node1's kernel clock), exit code."""
    start = end = code = None
    for line in klog.splitlines():
        if start is None and (m := HELPER.match(line.strip())):
            start = float(m.group(1))
        elif start is not None and (m := RETURNED.match(line.strip())):
            end, code = float(m.group(1)), m.group(2)
            break
    return (end - start if start is not None and end is not None else None), code


def cut_write_kill(lab: Lab) -> tuple[records.Writer, str, float]:
    w = records.Writer(lab, interval=0.0)  # as fast as it goes, as in its published runs
    w.start("node1")
    w.wait_for(20)
    t_cut = float(lab.exec("node1", "date +%s.%N").stdout)
    lab.cut("node1", "replication")
    time.sleep(WRITE_AFTER_CUT)
    klog = lab.exec("node1", "journalctl -k -q -o short-monotonic -n 200", check=False).stdout
    lab.kill("node1")
    w.stop()
    return w, klog, t_cut


def run_classic(lab: Lab) -> dict[str, Any]:
    with fresh_cluster(lab, net=TUNED):
        conf = (CLASSIC / "keepalived.conf").read_text()
        for node in NODES:
            lab.put(
                node,
                "/etc/keepalived/drbd-notify.sh",
                (CLASSIC / "drbd-notify.sh").read_text(),
                0o755,
            )
            lab.put(
                node,
                "/etc/keepalived/keepalived.conf",
                conf.replace("@PRIORITY@", str(PRIORITY[node])).replace("@ADVERT@", "0.1"),
                0o644,
            )
        try:
            for node in NODES:  # node1 first: it becomes master
                lab.exec(node, "systemctl restart keepalived")
                if node == "node1":
                    wait_until("node1 Primary", lambda: role(lab, "node1") == "Primary", 60)
            w, _, t_cut = cut_write_kill(lab)
            wait_until(
                "node2 Primary (promoted by keepalived)",
                lambda: role(lab, "node2") == "Primary",
                90,
            )
            missing = records.check(lab, "node2", w)["missing"]
            return {
                "stack": "classic",
                "acknowledged": w.acks.acknowledged,
                "served_by": "node2",
                "lost": len(missing),
                "longest_write_after_cut_s": round(w.acks.longest_write(t_cut), 3),
                "node2_disk_at_promote": disk(lab, "node2"),
            }
        finally:
            for node in [n for n in NODES if lab.running(n)]:
                lab.exec(
                    node,
                    "systemctl stop keepalived; rm -f /etc/keepalived/keepalived.conf; "
                    f"drbdadm secondary {RESOURCE}",
                    check=False,
                    timeout=60,
                )


def run_drbdha(lab: Lab) -> dict[str, Any]:
    with fresh_cluster(lab, net=TUNED, **FENCING) as s:
        s.configure()
        s.start("node1", "node2")
        s.wait_serving("node1")
        time.sleep(10)  # let both daemons settle: every process competes for the one CPU
        w, klog, t_cut = cut_write_kill(lab)
        hold, code = io_hold(klog)
        time.sleep(5)
        promoted_stale = role(lab, "node2") == "Primary"
        lab.start("node1", cut=("replication",))
        lab.exec("node1", f"drbdadm up {RESOURCE}")
        s.start("node1")
        s.wait_serving("node1", timeout=90)
        missing = records.check(lab, "node1", w)["missing"]
        stale = records.check(lab, "node2", w)["missing"]
        lab.heal()
        return {
            "stack": "drbdha",
            "acknowledged": w.acks.acknowledged,
            "served_by": "node1 (restarted)",
            "lost": len(missing),
            "node2_promoted": promoted_stale,
            "node2_would_have_lost": len(stale),
            "handler_exit": code,
            "io_hold_s": round(hold, 3) if hold is not None else None,
            "longest_write_after_cut_s": round(w.acks.longest_write(t_cut), 3),
        }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=1, help="runs per stack (default 1)")
    ap.add_argument("--json", type=Path, help="write every run's figures here")
    args = ap.parse_args()
    lab = Lab()
    lab.up()
    runs: list[dict[str, Any]] = []
    for i in range(args.runs):
        for fn in (run_classic, run_drbdha):
            r = fn(lab)
            r["run"] = i + 1
            print(json.dumps(r), flush=True)
            runs.append(r)
    for stack in ("classic", "drbdha"):
        mine = [r for r in runs if r["stack"] == stack]
        lost = [r["lost"] for r in mine]
        acked = [r["acknowledged"] for r in mine]
        line = (
            f"{stack}: lost {sum(lost)} of {sum(acked)} acknowledged records in {len(mine)} run(s)"
        )
        holds = [r["io_hold_s"] for r in mine if r.get("io_hold_s") is not None]
        if holds:
            median, top = statistics.median(holds), max(holds)
            line += f"; the handler held I/O median {median:.2f} s, max {top:.2f} s"
        print(line)
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
