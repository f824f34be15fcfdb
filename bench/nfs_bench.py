#!/usr/bin/env python3
"""End to end over NFS, drbdha against the classic keepalived stack, in the same lab run.

For each run, each fault and each stack: node1 serves (DRBD Primary, ext4, kernel nfsd with
its state on DRBD, the export, the VIP); the client mounts the VIP with NFSv3 (TCP) and
NFSv4.2 at once and appends checksummed records with an fsync each (integration/lab/
records.py), tcpdump on the client's tap sees every TCP SYN and reset; then the fault:

  power-off    node1's qemu process is killed (`lab kill`: no shutdown)
  switch-over  drbdha: `drbdha force-failover` on node1; classic: `systemctl stop keepalived`
               on node1 (its notify_stop script releases, bench/classic)

and the benchmark waits until both mounts have written 50 more records (or gives up after
--give-up s). Per mount: the stall (the longest single write, which is how long the
application was blocked), acknowledged records lost (checked on node2's disk), write errors;
per run: refused connects and resets the client met (nfslab.ClientCapture), whether a
promotion was refused (classic: its script's retries; drbdha: a failed drbd step) and whether
a split brain followed (DRBD's kernel log on either node, or two Primaries seen by the
Sampler). The timers: tuned (advert 100 ms; DRBD ping-int 1, ping-timeout 0.5 s, as the README
recommends) for --runs runs, and DRBD's and VRRP's defaults (1 s adverts) for --default-runs.
drbdha runs with DRBD fencing through `drbdha fence-peer`; the classic stack without (its
recipes have none: bench/classic/README.md).

    integration/lab/lab up
    .venv/bin/python bench/nfs_bench.py [--runs 5] [--default-runs 3] [--json out.json]
        [--picture docs/takeover] [--faults power-off,switch-over] [--stacks drbdha,classic]
    .venv/bin/python bench/nfs_bench.py --summarize out.json   # the summaries again, no runs

It prints one JSON line per run, a summary per stack, fault, timers and NFS version, with
drbdha's stall as a ratio to the classic stack's, and each phase's duration and end (from the
fault), median and max, with each mount's first write after the fault; --picture draws the
first tuned power-off of each stack one above the other (PNG and SVG).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration" / "lab"))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent / "integration"))  # polling

import demo_cluster
from chainlab import EXPORT, MOUNTPOINT, TUNED, fresh_cluster
from cluster import NODES, RESOURCE, VIP, CommandFailed, Lab
from nfslab import ClientCapture, Phase, events, logged_at, lost_on, mount_and_write, nfs_cluster
from polling import wait_until
from timeline import Timeline, draw

from drbdha.resources.nfs import HELPERS, OPTIONAL_HELPERS

HERE = Path(__file__).resolve().parent
CLASSIC = HERE / "classic"
PRIORITY = {"node1": 150, "node2": 100}
VERSIONS = ("3", "4.2")
TIMERS = {"tuned": (TUNED, 0.1), "defaults": ("", 1.0)}  # DRBD net options, advert interval
EXPORTS_LINE = f"{EXPORT} 10.77.1.0/24(rw,sync,no_subtree_check,no_root_squash,fsid=1)\n"


def quiet(_: str) -> None:
    pass


# ---------------------------------------------------------------------------------- a run


def measure(
    lab: Lab,
    fault: Callable[[], None],
    give_up: float,
    phases: Callable[[float, str], list[Phase]],
    server: Callable[[], str | None] | None = None,
) -> dict[str, Any]:
    """Mount and write, then `fault()`, then wait for 50 more records per mount; the
    figures. `phases(fault_at, since)`: the takeover's phases on the host clock. `server()`:
    the node whose disk the lost records are counted on, asked once the writes stopped
    (None: not counted); node2 without it."""
    since = {n: lab.exec(n, "date +%s").stdout.strip() for n in NODES}
    writers = mount_and_write(lab, *VERSIONS)
    capture = ClientCapture()
    capture.start()
    time.sleep(2)  # a steady stream of writes before the fault
    fault_at = time.time()
    fault()
    resumed = True
    for w in writers.values():
        try:
            w.wait_for(w.acks.acknowledged + 50, timeout=give_up)
        except TimeoutError:
            resumed = False
    waited_until = time.time()
    for w in writers.values():
        w.stop()
    capture.stop()
    checked_on = server() if server else "node2"
    client = lab.clock_offset("client")
    mounts = {}
    for version, w in writers.items():
        done = [st + t - client for st, t in zip(w.acks.starts, w.acks.took, strict=True)]
        after = [d for d in done if d > fault_at]
        mounts[f"NFSv{version}"] = {
            "acknowledged": w.acks.acknowledged,
            "lost": lost_or_none(lab, w, checked_on),
            "errors": w.acks.errors,
            "stall_s": round(w.acks.longest_write(), 3),
            "first_write_after_fault_s": round(after[0] - fault_at, 3) if after else None,
            "done": done,
        }
    split = any(
        "Split-Brain detected" in lab.exec(n, f"journalctl -k -q --since @{since[n]}").stdout
        for n in NODES
        if lab.running(n)
    )
    return {
        "resumed": resumed,
        "mounts": mounts,
        "refused": capture.refused,
        "resets": capture.resets,
        "split_brain": split,
        "fault_at": fault_at,
        "waited_until": waited_until,
        "checked_on": checked_on,
        "phases": [vars(p) for p in phases(fault_at, since["node2"])],
    }


def lost_or_none(lab: Lab, w: Any, node: str | None = "node2") -> int | None:
    """Acknowledged records missing on `node`, or None where it never mounted the
    filesystem (a takeover that failed: the classic switch-over whose release is refused)
    or no node was named."""
    if node is None:
        return None
    try:
        return lost_on(lab, node, w)
    except CommandFailed:
        return None


# ---------------------------------------------------------------------------------- drbdha


def run_drbdha(lab: Lab, fault: str, timers: str, give_up: float) -> dict[str, Any]:
    net, advert = TIMERS[timers]
    with nfs_cluster(lab, net=net, advert=advert) as s:
        s.start("node1", "node2")
        s.wait_serving("node1", timeout=120)

        def act() -> None:
            if fault == "power-off":
                lab.kill("node1")
            else:
                lab.exec("node1", "drbdha force-failover", timeout=120)

        def phases(fault_at: float, since: str) -> list[Phase]:
            offset = lab.clock_offset("node2")
            entries = events(lab, "node2", since)
            return demo_cluster.phases_after(entries, offset, fault_at)

        since2 = lab.exec("node2", "date +%s").stdout.strip()
        r = measure(lab, act, give_up, phases)
        r["promote_refused"] = bool(events(lab, "node2", since2, "step.start_failed"))
        if lab.running("node1"):
            s.wait_serving("node2", timeout=60)
        return r


# ---------------------------------------------------------------------------------- classic


@contextlib.contextmanager
def classic_cluster(lab: Lab, timers: str) -> Iterator[None]:
    """bench/classic on both nodes: keepalived with the notify script, the filesystem, the
    NFS state directory on it, /etc/exports with the fixed fsid; no DRBD fencing."""
    net, advert = TIMERS[timers]
    with fresh_cluster(lab, net=net):
        conf = (CLASSIC / "keepalived.conf").read_text().replace("@ADVERT@", f"{advert:g}")
        for node in NODES:
            # nfs-server as the recipe runs it: without the drop-ins a drbdha run left in /run
            # (drbdha's lease, grace and server scope are not the classic stack's).
            lab.exec(
                node,
                "systemctl disable --now nfs-server; cd /run/systemd/system && rm -f "
                "nfs-server.service.d/50-drbdha.conf rpc-statd-notify.service.d/50-drbdha.conf; "
                f"systemctl daemon-reload; mkdir -p {MOUNTPOINT}",
            )
            lab.put(
                node,
                "/etc/keepalived/drbd-notify.sh",
                (CLASSIC / "drbd-notify.sh").read_text(),
                0o755,
            )
            lab.put(node, "/etc/keepalived/drbd-notify.conf", f"MNT={MOUNTPOINT}\n")
            lab.put(
                node,
                "/etc/keepalived/keepalived.conf",
                conf.replace("@PRIORITY@", str(PRIORITY[node])),
            )
            lab.put(node, "/etc/exports", EXPORTS_LINE)
        lab.exec(
            "node1",
            f"drbdadm primary {RESOURCE} && mkfs.ext4 -q -F /dev/drbd0 && "
            f"mount /dev/drbd0 {MOUNTPOINT} && mkdir {EXPORT} {MOUNTPOINT}/nfs && "
            f"cp -a /var/lib/nfs/. {MOUNTPOINT}/nfs/ && umount {MOUNTPOINT} && "
            f"drbdadm secondary {RESOURCE}",
            timeout=120,
        )
        try:
            yield
        finally:
            lab.exec("client", "umount -f -l /mnt/nfs*; true", check=False, timeout=60)
            for node in [n for n in NODES if lab.running(n)]:
                lab.exec(
                    node,
                    # The harness's own cleanup, not the recipe's release: statd, nfsdcld
                    # and (trixie) fsidd hold the bound /var/lib/nfs (the recipe's pitfall),
                    # so they go too.
                    f"systemctl stop keepalived; systemctl stop nfs-server {' '.join(HELPERS)}; "
                    f"systemctl stop {' '.join(OPTIONAL_HELPERS)}; "
                    f"umount /var/lib/nfs; umount {MOUNTPOINT}; drbdadm secondary {RESOURCE}; "
                    "rm -f /etc/keepalived/keepalived.conf /etc/keepalived/drbd-notify.conf; "
                    f": > /etc/exports; ip -4 addr del {VIP}/24 dev eth0 2>/dev/null; true",
                    check=False,
                    timeout=120,
                )


CLASSIC_LOG = (
    "journalctl -q -o short-monotonic -n 300 | grep -E 'eepalived|drbd-notify|nfs' | tail -40; "
    "systemctl --no-pager status keepalived nfs-server | tail -20"
)


def classic_serving(lab: Lab, node: str) -> bool:
    r = lab.exec(
        node,
        f"ip -4 -o addr show dev eth0 | grep -q ' {VIP}/' && cat /proc/fs/nfsd/threads",
        check=False,
    )
    return r.returncode == 0 and r.stdout.strip() not in ("", "0")


def classic_phases(lab: Lab, node: str, since: str, fault_at: float) -> list[Phase]:
    """keepalived's transition and the notify script's marks, on the host's clock."""
    offset = lab.clock_offset(node)
    r = lab.exec(
        node,
        f"journalctl -q -o json --since @{since} SYSLOG_IDENTIFIER=Keepalived_vrrp "
        "+ SYSLOG_IDENTIFIER=drbd-notify",
    )
    marks: dict[str, float] = {}
    for line in r.stdout.splitlines():
        e = json.loads(line)
        at = logged_at(e) - offset  # keepalived and logger: journald's reception time
        msg = e.get("MESSAGE", "")
        if at < fault_at:
            continue
        for key, needle in (
            ("master", "Entering MASTER STATE"),
            ("promoted", "promoted "),
            ("mounted", "mounted "),
            ("serving", "serving "),
        ):
            if needle in msg and key not in marks:
                marks[key] = at
    out, last = [], fault_at
    for key, name in (
        ("master", "VRRP detection"),
        ("promoted", "drbdadm primary"),
        ("mounted", "mount"),
        ("serving", "bind, nfs-server restart"),
    ):
        if key in marks:
            out.append(Phase(name, last, marks[key]))
            last = marks[key]
    return out


def run_classic(lab: Lab, fault: str, timers: str, give_up: float) -> dict[str, Any]:
    with classic_cluster(lab, timers):
        lab.exec("node1", "systemctl restart keepalived")
        try:
            wait_until("node1 serving (classic)", lambda: classic_serving(lab, "node1"), 120)
        except AssertionError as e:
            log = lab.exec("node1", CLASSIC_LOG, check=False).stdout
            raise AssertionError(
                f"{e}; node1's keepalived and notify script said:\n{log}"
            ) from None
        lab.exec("node2", "systemctl restart keepalived")
        time.sleep(3)  # node2 settles as backup

        def act() -> None:
            if fault == "power-off":
                lab.kill("node1")
            else:
                lab.exec("node1", "systemctl stop keepalived", timeout=120)

        since2 = lab.exec("node2", "date +%s").stdout.strip()
        r = measure(lab, act, give_up, lambda at, since: classic_phases(lab, "node2", since, at))
        notes = lab.exec(
            "node2", f"journalctl -q -o cat --since @{since2} SYSLOG_IDENTIFIER=drbd-notify"
        ).stdout
        r["promote_refused"] = "promote refused" in notes
        r["promote_failed"] = "promote failed" in notes
        return r


# ---------------------------------------------------------------------------------- summary


def stuck(run: dict[str, Any], version: str) -> bool:
    """The mount's last write was still blocked when the run gave up: no completed write in
    the last 5 s of the --give-up wait (a run that did not resume stopped then)."""
    done = run["mounts"][version]["done"]
    return not run["resumed"] and run["fault_at"] + run["give_up"] - max(done, default=0) > 5


def summary(runs: list[dict[str, Any]]) -> list[str]:
    lines = []
    keys = sorted({(r["timers"], r["fault"]) for r in runs}, reverse=True)
    for timers, fault in keys:
        for version in (f"NFSv{v}" for v in VERSIONS):
            stalls: dict[str, list[float]] = {}
            for stack in ("drbdha", "classic"):
                mine = [
                    r
                    for r in runs
                    if (r["stack"], r["timers"], r["fault"]) == (stack, timers, fault)
                ]
                if not mine:
                    continue
                # The longest write, once the blocked one completed; a mount still blocked
                # when the run gave up has no stall to give (its write never completed):
                # counted apart.
                st = [r["mounts"][version]["stall_s"] for r in mine if not stuck(r, version)]
                never = len(mine) - len(st)
                st = st or [float("nan")]
                stalls[stack] = st
                lost = sum(r["mounts"][version]["lost"] or 0 for r in mine)
                unchecked = sum(r["mounts"][version]["lost"] is None for r in mine)
                acked = sum(r["mounts"][version]["acknowledged"] for r in mine)
                lines.append(
                    f"{timers:8} {fault:11} {version:7} {stack:7}: stall median "
                    f"{statistics.median(st):6.2f} s, max {max(st):6.2f} s over {len(mine)} runs; "
                    f"lost {lost} of {acked} (node2 had no filesystem to check in {unchecked}); "
                    f"refused {sum(r['refused'] for r in mine)}, "
                    f"resets {sum(r['resets'] for r in mine)}; promotion refused in "
                    f"{sum(bool(r['promote_refused']) for r in mine)}, split brain in "
                    f"{sum(r['split_brain'] for r in mine)}; still blocked at the give-up in "
                    f"{never}"
                )
            if len(stalls) == 2:
                d, c = stalls["drbdha"], stalls["classic"]
                lines.append(
                    f"{timers:8} {fault:11} {version:7} drbdha/classic: median "
                    f"{statistics.median(d) / statistics.median(c):.2f}, max {max(d) / max(c):.2f}"
                )
    return lines


def phase_summary(runs: list[dict[str, Any]]) -> list[str]:
    """Per stack, timers and fault: each phase's duration and the time from the fault to its
    end (median and max over the runs that had it), and each mount's first write after the
    fault."""
    lines = []
    keys = sorted({(r["stack"], r["timers"], r["fault"]) for r in runs}, reverse=True)
    for key in keys:
        mine = [r for r in runs if (r["stack"], r["timers"], r["fault"]) == key]
        lines.append(f"{' '.join(key)} ({len(mine)} runs): phase  took median/max  ends median/max")
        names: list[str] = []
        for r in mine:
            names += [p["name"] for p in r["phases"] if p["name"] not in names]
        for name in names:
            took = [p["end"] - p["start"] for r in mine for p in r["phases"] if p["name"] == name]
            ends = [
                p["end"] - r["fault_at"] for r in mine for p in r["phases"] if p["name"] == name
            ]
            lines.append(
                f"  {name:<26} {statistics.median(took):6.2f} {max(took):6.2f} s"
                f"   {statistics.median(ends):6.2f} {max(ends):6.2f} s  ({len(took)} runs)"
            )
        for version in (f"NFSv{v}" for v in VERSIONS):
            first = [
                m["first_write_after_fault_s"]
                for r in mine
                if (m := r["mounts"][version])["first_write_after_fault_s"] is not None
            ]
            if first:
                lines.append(
                    f"  {'first write ' + version:<26} {'':15}   {statistics.median(first):6.2f} "
                    f"{max(first):6.2f} s  ({len(first)} runs)"
                )
    return lines


def picture(runs: list[dict[str, Any]], path: Path) -> None:
    """The first tuned power-off of each stack, one above the other."""
    shown = []
    for stack in ("drbdha", "classic"):
        first = [
            r
            for r in runs
            if (r["stack"], r["fault"], r["timers"]) == (stack, "power-off", "tuned")
        ]
        if first:
            r = first[0]
            shown.append(
                Timeline(
                    "drbdha" if stack == "drbdha" else "keepalived + notify script",
                    r["fault_at"],
                    [Phase(**p) for p in r["phases"]],
                    {m: f["done"] for m, f in r["mounts"].items()},
                )
            )
    if shown:
        print(
            "picture:",
            ", ".join(map(str, draw(shown, path, "NFS master powered off (tuned timers)"))),
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="runs with tuned timers (default 5)")
    ap.add_argument("--default-runs", type=int, default=3, help="runs with defaults (default 3)")
    ap.add_argument("--faults", default="power-off,switch-over")
    ap.add_argument("--stacks", default="drbdha,classic")
    ap.add_argument("--give-up", type=float, default=180.0, help="s to wait for writes again")
    ap.add_argument("--json", type=Path, help="write every run's figures here")
    ap.add_argument("--picture", type=Path, help="the first tuned power-off of each stack")
    ap.add_argument(
        "--summarize", type=Path, help="no runs: the summaries of an earlier --json file"
    )
    args = ap.parse_args()
    if args.summarize:
        runs = json.loads(args.summarize.read_text())
        for r in runs:  # files from before runs recorded it: this run's --give-up
            r.setdefault("give_up", args.give_up)
        print("\n".join(summary(runs) + phase_summary(runs)))
        if args.picture:
            picture(runs, args.picture)
        return 0
    runners = {"drbdha": run_drbdha, "classic": run_classic}
    lab = Lab()
    lab.up()
    runs: list[dict[str, Any]] = []
    for timers, n in (("tuned", args.runs), ("defaults", args.default_runs)):
        for i in range(n):
            for fault in args.faults.split(","):
                for stack in args.stacks.split(","):
                    r = runners[stack](lab, fault, timers, args.give_up)
                    r.update(stack=stack, fault=fault, timers=timers, run=i + 1)
                    r["give_up"] = args.give_up
                    shown = {k: v for k, v in r.items() if k != "phases"}
                    shown["mounts"] = {
                        m: {k: v for k, v in f.items() if k != "done"}
                        for m, f in r["mounts"].items()
                    }
                    print(json.dumps(shown), flush=True)
                    runs.append(r)
                    if args.json:  # after every run: a run that breaks keeps the others
                        args.json.write_text(json.dumps(runs, indent=1) + "\n")
    for line in summary(runs) + phase_summary(runs):
        print(line)
    if args.picture:
        picture(runs, args.picture)
    return 0


if __name__ == "__main__":
    sys.exit(main())
