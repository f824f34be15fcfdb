#!/usr/bin/env python3
"""drbdha against drbd-reactor's promoter on the DRBD 9 lab, end to end over NFS, in the same
lab session (issue 23, section 3).

The lab on DRBD 9 has node1 and node2 with disks. The client VM is both the NFS client and
the diskless tiebreaker, and r0 has `quorum majority` and `on-no-quorum io-error`. Each run
starts from a fresh cluster with node1 serving:

  drbdha   nfslab.nfs_cluster as the README configures quorum: no fence-peer handler,
           drbdha's replication heartbeat on; the tuned timers (advert 100 ms; DRBD
           ping-int 1, ping-timeout 0.5 s, timeout 0.9 s)
  reactor  drbd-reactor 1.2.0's promoter with LINBIT's HA NFS start list (bench/reactor),
           r0 with the same timers and no fencing handler (quorum alone)

The client mounts the VIP with NFSv3 and NFSv4.2 at once and appends records (nfs_bench.
measure). Then node1 is struck:

  power-off    node1's qemu is killed. Once node2 serves (or --give-up s have passed),
               node1 is powered on again with its stack started (the heal).
  isolation    node1's service and replication links are cut for --hold s, then healed.
  repl-cut     node1's replication link is cut for --hold s, then healed. node1 keeps
               quorum through the tiebreaker.
  switch-over  `drbdha force-failover` or `drbd-reactorctl evict r0` on node1. There is no
               heal.

Per mount, each run records:
- the stall (the longest single write);
- the acknowledged records lost on the node that serves at the end (VIP and DRBD Primary);
- write errors;
- how long after the heal the first write went through, and the longest wait for a write
  after the heal.

Per run:
- refused connects and resets the client met;
- a split brain: DRBD's "Split-Brain detected" on either node, or two Primaries that both
  had quorum;
- two Primaries at all (a cut-off Primary stays one until it stops);
- how long after the heal both copies were UpToDate;
- which node serves at the end;
- failed promotions on node2;
- a node that went down by itself. The reactor's reboot-immediate powers a lab VM off:
  qemu runs with -no-reboot. That node is powered on again;
- the takeover's phases on node2.

    integration/lab/lab down; DRBDHA_LAB_DRBD=9 integration/lab/lab up
    .venv/bin/python bench/quorum_bench.py --runs 5 --json /tmp/q.json
        [--faults power-off,isolation,repl-cut,switch-over] [--stacks drbdha,reactor]
        [--hold 30] [--give-up 180] [--resync-timeout 300]
    .venv/bin/python bench/quorum_bench.py --summarize /tmp/q.json   # no runs

Stacks take turns within each run (drbdha, reactor, drbdha, ...), so both see the same lab.
--json appends one line per run. Called again with the same file, it skips the runs the file
already holds (a resume) and summarizes them all.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import shlex
import statistics
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration" / "lab"))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent / "integration"))  # polling
sys.path.insert(2, str(Path(__file__).resolve().parent))  # nfs_bench, for the unit tests

import demo_cluster
import nfs_bench
from chainlab import EXPORT, MOUNTPOINT, TUNED, Storage, fresh_cluster
from cluster import BOOTED, NODES, RESOURCE, VIP, Lab, LabError
from nfslab import CLIENT_MOUNT, Phase, events, nfs_cluster
from polling import wait_until

from drbdha.resources.nfs import HELPERS, OPTIONAL_HELPERS

HERE = Path(__file__).resolve().parent
FAULTS = ("power-off", "isolation", "repl-cut", "switch-over")
STACKS = ("drbdha", "reactor")
CUTS = {"isolation": ("service", "replication"), "repl-cut": ("replication",)}
CLIENTS = "10.77.1.0/24"
SNIPPET = "/etc/drbd-reactor.d/r0.toml"
TARGET = f"drbd-services@{RESOURCE}.target"
PROMOTE = f"drbd-promote@{RESOURCE}.service"
EVICT_DELAY = 60  # s evict waits for node2 to be Primary (promotion comes first in its chain)
# What drbd-reactor's promoter.md asks of a promoter's resource besides quorum and io-error
# (drbd-reactor checks them at its start and warns).
PROMOTER_OPTIONS = "auto-promote no; on-suspended-primary-outdated force-secondary;"
STARTING = "7d4958e842da4a758f6c1cdc7b36dcc5"  # systemd's MESSAGE_ID for "Starting UNIT..."
# drbd-reactorctl status's marks (systemd's ActiveState; without colour a bold "activating"
# or "deactivating" looks like "active").
MARKS = {"\u25cf": "active", "\u21bb": "reloading", "\u25cb": "inactive", "\u00d7": "failed"}


# ---------------------------------------------------------------------------------- pure parts


def render_snippet(template: str | None = None) -> str:
    """bench/reactor/r0.toml.in with the lab's addresses and paths."""
    text = (HERE / "reactor" / "r0.toml.in").read_text() if template is None else template
    for key, value in (
        ("@VIP@", VIP),
        ("@MOUNTPOINT@", MOUNTPOINT),
        ("@EXPORT@", EXPORT),
        ("@CLIENTS@", CLIENTS),
    ):
        text = text.replace(key, value)
    if left := re.findall(r"@[A-Z_]+@", text):
        raise ValueError(f"the snippet has placeholders nobody fills in: {left}")
    return text


def without_portblock(snippet: str) -> str:
    """The snippet without its two portblock entries. Debian bookworm's resource-agents
    4.12 portblock looks for its rule in `iptables -n -L` as "tcp", which iptables 1.8.9
    lists as "6": the unblock finds nothing to remove and NFS's port stays blocked (seen in
    the lab: clients' mounts timed out behind the block's DROP rule). So the promoter runs
    here without the block/unblock pair, and without its TCP tickle."""
    return "".join(
        line for line in snippet.splitlines(keepends=True) if "ocf:heartbeat:portblock" not in line
    )


def ocf_units(snippet: str) -> dict[str, tuple[str, dict[str, str]]]:
    """{unit: (agent, parameters)} for each ocf: entry of r0's start list, in order, each
    named as drbd-reactor names it: ocf.rs@NAME_r0.service (src/systemd.rs; the names used
    here need no systemd escaping)."""
    (promoter,) = tomllib.loads(snippet)["promoter"]
    out = {}
    for entry in promoter["resources"][RESOURCE]["start"]:
        found = re.match(r"^ocf:(\S+):(\S+)\s+(.*)$", entry, re.DOTALL)
        if found is None:
            continue  # a systemd unit of its own
        name, *pairs = shlex.split(found[3])
        params = dict(p.partition("=")[::2] for p in pairs)
        out[f"ocf.rs@{name}_{RESOURCE}.service"] = (found[2], params)
    return out


def with_promoter_options(res: str) -> str:
    """r0's configuration (drbd_setup.drbd_config_9) with PROMOTER_OPTIONS added to its
    options section."""
    head = "    options { "
    if res.count(head) != 1:
        raise ValueError(f"r0's configuration has no single {head.strip()!r} section")
    return res.replace(head, f"{head}{PROMOTER_OPTIONS} ")


def reactorctl_units(status: str) -> dict[str, str]:
    """{unit: state} from `drbd-reactorctl status`'s tree (colour codes dropped)."""
    out = {}
    for line in re.sub(r"\x1b\[[0-9;]*m", "", status).splitlines():
        fields = line.split()
        if fields and fields[0] in MARKS:
            unit = next((f for f in fields[1:] if f.endswith((".service", ".target"))), None)
            if unit:
                out[unit] = MARKS[fields[0]]
    return out


def entry_time(entry: dict[str, Any]) -> float:
    """When a journal entry was logged, on the node's wall clock."""
    stamp = entry.get("_SOURCE_REALTIME_TIMESTAMP") or entry["__REALTIME_TIMESTAMP"]
    return int(stamp) / 1e6


def unit_label(unit: str) -> str:
    if unit.startswith("drbd-promote@"):
        return "promote"
    return unit.removeprefix("ocf.rs@").removesuffix(f"_{RESOURCE}.service")


def reactor_phases(entries: list[dict[str, Any]], offset: float, fault_at: float) -> list[Phase]:
    """The takeover in a node's journal (systemd's and drbd-reactor's entries; node clock
    minus host clock = offset) after the fault: a bar from the fault to drbd-reactor's "may
    promote", then one per unit of the chain from its first start after the fault (the
    latest "Starting") to its start job done."""
    out: list[Phase] = []
    starting: dict[str, float] = {}
    detected = False
    for e in entries:
        at = entry_time(e) - offset
        if at < fault_at:
            continue
        unit = e.get("UNIT")
        if e.get("SYSLOG_IDENTIFIER") == "drbd-reactor":
            if not detected and "may promote" in str(e.get("MESSAGE", "")):
                out.append(Phase("may promote", fault_at, at))
                detected = True
        elif isinstance(unit, str) and unit.startswith(("drbd-promote@", "ocf.rs@")):
            label = unit_label(unit)
            if e.get("MESSAGE_ID") == STARTING:
                starting[unit] = at
            elif (e.get("JOB_TYPE"), e.get("JOB_RESULT")) == ("start", "done") and not any(
                p.name == label for p in out
            ):
                out.append(Phase(label, starting.get(unit, at), at))
    return out


def failed_promotions(entries: list[dict[str, Any]], offset: float, fault_at: float) -> int:
    """drbd-promote@r0's start jobs that did not succeed after the fault."""
    return sum(
        1
        for e in entries
        if e.get("UNIT") == PROMOTE
        and e.get("JOB_TYPE") == "start"
        and e.get("JOB_RESULT") not in (None, "done")
        and entry_time(e) - offset >= fault_at
    )


def two_primaries(views: list[tuple[bool, bool]]) -> str | None:
    """From (Primary, quorum) per node: "quorate" for two Primaries that both have quorum
    (both can write: a split brain), "primary" for two Primaries, else None."""
    primaries = [quorum for primary, quorum in views if primary]
    if len(primaries) < 2:
        return None
    return "quorate" if all(primaries) else "primary"


def pick_server(seen: dict[str, tuple[bool, bool]]) -> str | None:
    """The node that serves, from (holds the VIP, DRBD Primary) per node: the only one with
    both, else None."""
    both = [node for node, (vip, primary) in seen.items() if vip and primary]
    return both[0] if len(both) == 1 else None


def first_after(done: list[float], since: float) -> float | None:
    """Seconds from `since` to the first write completed after it."""
    later = [d for d in done if d > since]
    return round(min(later) - since, 3) if later else None


def longest_gap(done: list[float], since: float) -> float | None:
    """The longest time without a completed write from `since` on (the stall after it)."""
    later = sorted(d for d in done if d > since)
    if not later:
        return None
    return round(max(b - a for a, b in zip([since, *later], later, strict=False)), 3)


def figures(r: dict[str, Any], marks: dict[str, Any], seen: dict[str, list[float]]) -> None:
    """A measured run's own figures, added to `r`: per mount the first write and the
    longest wait after the heal and whether it was still blocked at the give-up; per run
    the times after the heal, two Primaries, what went down."""
    healed = marks.get("healed_at")
    for m in r["mounts"].values():
        done = m["done"]
        m["served_after_heal_s"] = first_after(done, healed) if healed else None
        m["stall_after_heal_s"] = longest_gap(done, healed) if healed else None
        m["stuck"] = not r["resumed"] and r["waited_until"] - max(done, default=0.0) > 5
    served = [m["served_after_heal_s"] for m in r["mounts"].values()]
    resynced = marks.get("resynced_at")
    r.update(
        healed_at=healed,
        served_after_heal_s=max(served) if healed and None not in served else None,
        resynced_after_heal_s=round(resynced - healed, 3) if healed and resynced else None,
        two_primaries=len(seen["primary"]),
        quorate_primaries=len(seen["quorate"]),
        server=r["checked_on"],
        went_down=marks.get("went_down", []),
        switch_over_said=marks.get("said", ""),
    )


# ---------------------------------------------------------------------------------- summary


def median(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(known) if known else None


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def run_line(stack: str, mine: list[dict[str, Any]]) -> str:
    split = sum(bool(r["split_brain"] or r["quorate_primaries"]) for r in mine)
    servers: dict[str, int] = {}
    for r in mine:
        servers[r["server"] or "none"] = servers.get(r["server"] or "none", 0) + 1
    healed = [r for r in mine if r["healed_at"]]
    return (
        f"  {stack:7}: split brain in {split} (two Primaries seen in "
        f"{sum(r['two_primaries'] > 0 for r in mine)}); refused {sum(r['refused'] for r in mine)}, "
        f"resets {sum(r['resets'] for r in mine)}; after the heal: served "
        f"{fmt(median([r['served_after_heal_s'] for r in healed]))} s, resynced "
        f"{fmt(median([r['resynced_after_heal_s'] for r in healed]))} s (medians; never "
        f"resynced in {sum(r['resynced_after_heal_s'] is None for r in healed)}); served by "
        + ", ".join(f"{n} {c}x" for n, c in sorted(servers.items()))
        + f"; failed promotions in {sum(r['promote_failures'] > 0 for r in mine)}; a node went "
        f"down by itself in {sum(bool(r['went_down']) for r in mine)}"
    )


def summary(runs: list[dict[str, Any]]) -> list[str]:
    """Per fault: per stack the run's figures; per NFS version and stack the stall (median
    and max), lost records and errors; the ratio drbdha/reactor of the median stalls."""
    lines = []
    for fault in [f for f in FAULTS if any(r["fault"] == f for r in runs)]:
        by_stack = {s: [r for r in runs if (r["stack"], r["fault"]) == (s, fault)] for s in STACKS}
        by_stack = {s: mine for s, mine in by_stack.items() if mine}
        counts = ", ".join(f"{s} {len(mine)}" for s, mine in by_stack.items())
        lines.append(f"== {fault} (runs: {counts})")
        lines += [run_line(s, mine) for s, mine in by_stack.items()]
        for version in (f"NFSv{v}" for v in nfs_bench.VERSIONS):
            medians = {}
            for stack, mine in by_stack.items():
                m = [r["mounts"][version] for r in mine]
                stalls = [x["stall_s"] for x in m if not x["stuck"]]
                medians[stack] = median(stalls)
                lines.append(
                    f"  {version:7} {stack:7}: stall median {fmt(medians[stack])} s, max "
                    f"{fmt(max(stalls, default=None))} s (still blocked at the give-up in "
                    f"{len(m) - len(stalls)}); lost {sum(x['lost'] or 0 for x in m)} of "
                    f"{sum(x['acknowledged'] for x in m)} (not checked in "
                    f"{sum(x['lost'] is None for x in m)}); errors {sum(x['errors'] for x in m)}"
                )
            d, c = medians.get("drbdha"), medians.get("reactor")
            if d is not None and c:
                lines.append(f"  {version:7} drbdha/reactor: median stall {d / c:.2f}")
    return lines


# ---------------------------------------------------------------------------------- the lab


def said(r: subprocess.CompletedProcess[str]) -> str:
    """A command's output (its exit status first, if it failed)."""
    out = (r.stdout + r.stderr).strip()
    return out if r.returncode == 0 else f"exit {r.returncode}: {out}"


def serving_node(lab: Lab) -> str | None:
    """The node that holds the VIP and is DRBD Primary, if exactly one does."""
    seen = {}
    for node in [n for n in NODES if lab.running(n)]:
        vip = f" {VIP}/" in lab.exec(node, "ip -4 -o addr show dev eth0", check=False).stdout
        role = lab._proc_drbd(node).get("role") or ""
        seen[node] = (vip, role.split("/")[0] == "Primary")
    return pick_server(seen)


def resynced(lab: Lab) -> bool:
    return all(lab.running(n) and lab._proc_drbd(n)["dstate"] == "UpToDate/UpToDate" for n in NODES)


class PrimarySampler(threading.Thread):
    """r0's role and quorum on both nodes about twice a second; records each confirmed
    moment with two Primaries, and with two that both had quorum. A sample with two is
    confirmed as chainlab.Sampler does: node1, node2, node1 read one after the other."""

    def __init__(self, lab: Lab) -> None:
        super().__init__(daemon=True)
        self.lab = lab
        self.seen: dict[str, list[float]] = {"primary": [], "quorate": []}
        self._halt = threading.Event()

    def look(self, node: str) -> tuple[bool, bool]:
        """(Primary, quorum) on `node`; a node that does not answer is neither."""
        if not self.lab.running(node):
            return (False, False)
        try:
            state = self.lab._status_9(node)
        except (LabError, TimeoutError, subprocess.TimeoutExpired, OSError):
            return (False, False)
        return ((state.get("role") or "").startswith("Primary/"), state.get("quorum") is True)

    def run(self) -> None:
        while not self._halt.is_set():
            if two_primaries(self.lab.parallel(self.look, NODES)):
                first, second, again = (self.look(n) for n in (*NODES, NODES[0]))
                kind = two_primaries([(first[0] and again[0], first[1] and again[1]), second])
                now = time.time()
                if kind:
                    self.seen["primary"].append(now)
                if kind == "quorate":
                    self.seen["quorate"].append(now)
            self._halt.wait(0.5)

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(30)


class Stack(Protocol):
    name: str

    def cluster(self) -> contextlib.AbstractContextManager[None]: ...
    def serving(self, node: str) -> bool: ...
    def power_on(self, node: str) -> None: ...
    def switch_over(self) -> str: ...
    def phases(self, fault_at: float, since: str) -> list[Phase]: ...
    def promote_failures(self, since: str, fault_at: float) -> int: ...
    def diagnostics(self) -> dict[str, Any]: ...


class DrbdhaStack:
    name = "drbdha"

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.s: Storage | None = None

    @contextlib.contextmanager
    def cluster(self) -> Iterator[None]:
        # As the README configures quorum: no fence-peer handler, the replication heartbeat on.
        with nfs_cluster(self.lab, net=TUNED, advert=0.1, fenced=False, sample=False) as s:
            self.s = s
            s.start("node1", "node2")  # in order: node1 is the first master
            s.wait_serving("node1", timeout=120)
            yield

    @property
    def storage(self) -> Storage:
        assert self.s is not None, "cluster() first"
        return self.s

    def serving(self, node: str) -> bool:
        return bool(self.storage.serving(node))

    def power_on(self, node: str) -> None:
        self.storage.power_on(node)  # r0 with the sections the cluster was made with

    def switch_over(self) -> str:
        return said(self.lab.exec("node1", "drbdha force-failover", check=False, timeout=120))

    def phases(self, fault_at: float, since: str) -> list[Phase]:
        offset = self.lab.clock_offset("node2")
        return list(demo_cluster.phases_after(events(self.lab, "node2", since), offset, fault_at))

    def promote_failures(self, since: str, fault_at: float) -> int:
        del fault_at  # drbdha's events since `since` (node2's clock before the run)
        return len(events(self.lab, "node2", since, "step.start_failed"))

    def diagnostics(self) -> dict[str, Any]:
        return {}


# nfs-server as the agents run it: not enabled, and without the drop-ins a drbdha run leaves
# in /run (drbdha's scope, lease and grace; the nfsserver agent would wrap drbdha's emptied
# ExecStart= into its own). drbdha writes them again at its next start.
NODE_PREP = (
    "systemctl stop drbdha; "
    "if systemctl -q is-enabled nfs-server; then systemctl disable --now nfs-server; "
    "else systemctl stop nfs-server; fi; cd /run/systemd/system && rm -f "
    "nfs-server.service.d/50-drbdha.conf rpc-statd-notify.service.d/50-drbdha.conf; "
    f"systemctl daemon-reload; mkdir -p {MOUNTPOINT}"
)
# Once, on node1 as Primary: the filesystem with the export's directory, the NFS state
# directory seeded from /var/lib/nfs (the nfsserver agent binds it there; -x: not the
# rpc_pipefs mounted inside) and the tickle directory.
MAKE_FS = (
    f"drbdadm primary {RESOURCE} && mkfs.ext4 -q -F /dev/drbd0 && "
    f"mount /dev/drbd0 {MOUNTPOINT} && mkdir {EXPORT} {MOUNTPOINT}/nfs {MOUNTPOINT}/tickle && "
    f"cp -ax /var/lib/nfs/. {MOUNTPOINT}/nfs/ && umount {MOUNTPOINT} && "
    f"drbdadm secondary {RESOURCE}"
)
SERVING = (
    f"ip -4 -o addr show dev eth0 | grep -q ' {VIP}/' && "
    '[ "$(cat /proc/fs/nfsd/threads 2>/dev/null || echo 0)" -gt 0 ] && '
    f"systemctl -q is-active {TARGET}"
)
REACTOR_LOG = (
    f"NO_COLOR=1 drbd-reactorctl status {RESOURCE}; journalctl -q -n 60 -o short-monotonic "
    f"-u drbd-reactor -u {PROMOTE} -u 'ocf.rs@*'; systemctl --failed --no-legend --plain"
)
# The harness's own cleanup, not the promoter's: whatever a run left (a stop that failed, a
# node that went down with the services up) goes, then what the promoter generated in /run.
CLEANUP = f"""
systemctl stop drbd-reactor
systemctl stop {TARGET}
systemctl stop 'ocf.rs@*_{RESOURCE}.service' {PROMOTE}
systemctl stop nfs-server {" ".join(HELPERS)}
systemctl stop {" ".join(OPTIONAL_HELPERS)}
pkill -x rpc.statd
if mountpoint -q /var/lib/nfs; then
    umount /var/lib/nfs/rpc_pipefs
    umount /var/lib/nfs || umount -l /var/lib/nfs
fi
if mountpoint -q {MOUNTPOINT}; then
    umount {MOUNTPOINT} || {{ fuser -km {MOUNTPOINT}; sleep 1; umount {MOUNTPOINT}; }}
fi
drbdadm secondary {RESOURCE}
while iptables -w -D INPUT -p tcp -d {VIP} -m multiport --dports 2049 -j DROP; do :; done
while iptables -w -D OUTPUT -p tcp -s {VIP} -m multiport --sports 2049 \\
    -j REJECT --reject-with tcp-reset; do :; done
ip -4 addr del {VIP}/24 dev eth0
: > /etc/exports
rm -f {SNIPPET} /run/sysconfig/nfs-server-scope /run/resource-agents/*_{RESOURCE}
cd /run/systemd/system && rm -rf {PROMOTE}.d drbd-demote-or-escalate@{RESOURCE}.service.d \\
    {TARGET}.d {TARGET} ocf.rs@*_{RESOURCE}.service.d \\
    nfs-server.service.d/51-resource-agents-unshare-uts.conf
systemctl daemon-reload
systemctl reset-failed
true
"""
PREFLIGHT = (
    "for c in drbd-reactor drbd-reactorctl iptables; do "
    'command -v $c >/dev/null || { echo "no $c"; exit 1; }; done; '
    "for f in /usr/libexec/drbd-reactor/ocf-rs-wrapper /lib/drbd/scripts/drbd-service-shim.sh "
    "/usr/lib/ocf/resource.d/heartbeat/IPaddr2 /usr/lib/ocf/resource.d/heartbeat/portblock "
    "/usr/lib/ocf/resource.d/heartbeat/exportfs /usr/lib/ocf/resource.d/heartbeat/Filesystem "
    "/usr/lib/ocf/resource.d/heartbeat/nfsserver; do "
    'test -x $f || { echo "no $f"; exit 1; }; done; '
    f"systemctl cat {PROMOTE} >/dev/null || {{ echo 'no drbd-promote@.service'; exit 1; }}; "
    "drbd-reactor --version"
)


class ReactorStack:
    name = "reactor"

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.snippet = without_portblock(render_snippet())
        self.res = with_promoter_options(lab.drbd_config(net=TUNED))

    @contextlib.contextmanager
    def cluster(self) -> Iterator[None]:
        """fresh_cluster (DRBD with the tuned timers, no fencing), r0 with PROMOTER_OPTIONS,
        the filesystem made once, the snippet on both nodes, drbd-reactor started on node1
        until it serves, then on node2. Afterwards CLEANUP on both."""
        lab = self.lab
        with fresh_cluster(lab, sample=False, net=TUNED):
            try:
                lab.parallel(self._prepare, NODES)
                lab.parallel(self._options, lab.drbd_vms())
                lab.exec("node1", MAKE_FS, timeout=120)
                self._start("node1")
                wait_until(lambda: self._log("node1"), lambda: self.serving("node1"), 180, 2.0)
                self._start("node2")
                assert self.serving("node1"), self._log("node1")
                assert not self.serving("node2"), self._log("node2")
                yield
            finally:
                self._cleanup()

    def _prepare(self, node: str) -> None:
        self.lab.exec(node, NODE_PREP, timeout=180)
        self.lab.put(node, SNIPPET, self.snippet)

    def _options(self, vm: str) -> None:
        self.lab.put(vm, f"/etc/drbd.d/{RESOURCE}.res", self.res)
        self.lab.exec(vm, f"drbdadm adjust {RESOURCE}", timeout=60)

    def _start(self, node: str) -> None:
        cmd = "systemctl reset-failed drbd-reactor; systemctl start drbd-reactor"
        self.lab.exec(node, cmd, timeout=180)

    def _log(self, node: str) -> str:
        out = self.lab.exec(node, REACTOR_LOG, check=False, timeout=60).stdout
        return f"{node} serving (drbd-reactor); it said:\n{out}"

    def _cleanup(self) -> None:
        umount = f"umount -c -f -l {CLIENT_MOUNT}*; true"
        try:
            self.lab.exec("client", umount, check=False, timeout=60)
        except subprocess.TimeoutExpired:
            self.lab.exec("client", umount, check=False, timeout=180)
        running = [n for n in NODES if self.lab.running(n)]
        self.lab.parallel(lambda n: self.lab.exec(n, CLEANUP, check=False, timeout=300), running)

    def serving(self, node: str) -> bool:
        """The VIP here, nfsd's threads up and the promoter's target active."""
        return bool(self.lab.exec(node, SERVING, check=False, timeout=60).returncode == 0)

    def power_on(self, node: str) -> None:
        """`node`, powered off, on again as a reboot leaves it (from the checkpoint `up`
        made, as fresh_cluster does): r0 and the snippet written again, DRBD up, drbd-reactor
        started."""
        self.lab.start(node, checkpoint=BOOTED)
        self.lab.put(node, f"/etc/drbd.d/{RESOURCE}.res", self.res)
        self._prepare(node)
        self.lab.exec(node, f"modprobe drbd && drbdadm up {RESOURCE}", timeout=180)
        self._start(node)

    def switch_over(self) -> str:
        cmd = f"drbd-reactorctl evict --delay {EVICT_DELAY} {RESOURCE}"
        return said(self.lab.exec("node1", cmd, check=False, timeout=EVICT_DELAY + 120))

    def _journal(self, node: str, since: str) -> list[dict[str, Any]]:
        r = self.lab.exec(
            node,
            f"journalctl -q -o json --since @{since} _PID=1 + SYSLOG_IDENTIFIER=drbd-reactor",
            check=False,
            timeout=60,
        )
        out = []
        for line in r.stdout.splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def phases(self, fault_at: float, since: str) -> list[Phase]:
        offset = self.lab.clock_offset("node2")
        return reactor_phases(self._journal("node2", since), offset, fault_at)

    def promote_failures(self, since: str, fault_at: float) -> int:
        offset = self.lab.clock_offset("node2")
        return failed_promotions(self._journal("node2", since), offset, fault_at)

    def diagnostics(self) -> dict[str, Any]:
        """Each node's units that are not active, as drbd-reactorctl status shows them."""
        out = {}
        for node in [n for n in NODES if self.lab.running(n)]:
            status = self.lab.exec(
                node, f"NO_COLOR=1 drbd-reactorctl status {RESOURCE}", check=False, timeout=60
            ).stdout
            out[node] = {u: s for u, s in reactorctl_units(status).items() if s != "active"}
        return {"units_not_active": out}


# ---------------------------------------------------------------------------------- a run


def strike(lab: Lab, stack: Stack, fault: str, args: argparse.Namespace) -> dict[str, Any]:
    """The fault at node1 and its heal, a node that went down by itself powered on again,
    then the wait for both copies to be UpToDate. The moments on the host clock."""
    marks: dict[str, Any] = {}
    if fault == "power-off":
        lab.kill("node1")
        with contextlib.suppress(AssertionError):
            wait_until("node2 serving", lambda: stack.serving("node2"), args.give_up, 2.0)
        stack.power_on("node1")
        marks["healed_at"] = time.time()
    elif fault in CUTS:
        for net in CUTS[fault]:
            lab.cut("node1", net)
        time.sleep(args.hold)
        for net in CUTS[fault]:
            lab.uncut("node1", net)
        marks["healed_at"] = time.time()
    else:
        marks["said"] = stack.switch_over()
    marks["went_down"] = [n for n in NODES if not lab.running(n)]
    for node in marks["went_down"]:
        stack.power_on(node)
        marks.setdefault("healed_at", time.time())
    if "healed_at" in marks:
        with contextlib.suppress(AssertionError):
            wait_until("the copies resynced", lambda: resynced(lab), args.resync_timeout, 1.0)
            marks["resynced_at"] = time.time()
    return marks


def run_one(lab: Lab, stack: Stack, fault: str, args: argparse.Namespace) -> dict[str, Any]:
    # What a reactor run that broke before its cleanup left (its snippet is the sign): its
    # drbd-reactor would promote r0 under drbdha.
    lab.parallel(
        lambda n: lab.exec(n, f"test -e {SNIPPET} || exit 0\n{CLEANUP}", check=False, timeout=300),
        [n for n in NODES if lab.running(n)],
    )
    with stack.cluster():
        since2 = lab.exec("node2", "date +%s").stdout.strip()
        marks: dict[str, Any] = {}
        sampler = PrimarySampler(lab)
        sampler.start()
        try:
            r = nfs_bench.measure(
                lab,
                lambda: marks.update(strike(lab, stack, fault, args)),
                args.give_up,
                stack.phases,
                server=lambda: serving_node(lab),
            )
        finally:
            sampler.stop()
            for net in CUTS["isolation"]:  # a run that broke while node1 was cut off
                with contextlib.suppress(subprocess.CalledProcessError, LabError):
                    lab.uncut("node1", net)
        r["promote_failures"] = stack.promote_failures(since2, r["fault_at"])
        r.update(stack.diagnostics())
    figures(r, marks, sampler.seen)
    return r


def refusal(lab: Any) -> str | None:
    """Why this lab cannot run the benchmark, or None."""
    if lab.drbd == "9":
        return None
    return (
        f"the lab runs DRBD {lab.drbd}; this benchmark needs the DRBD 9 lab (three nodes, "
        "quorum, the tiebreaker, drbd-reactor in the image): "
        "integration/lab/lab down; DRBDHA_LAB_DRBD=9 integration/lab/lab up"
    )


def read_runs(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def shown(r: dict[str, Any]) -> dict[str, Any]:
    """A run without its long lists (each write's completion time, the phases)."""
    out = {k: v for k, v in r.items() if k != "phases"}
    out["mounts"] = {m: {k: v for k, v in f.items() if k != "done"} for m, f in r["mounts"].items()}
    return out


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="runs of each fault per stack")
    ap.add_argument("--faults", default=",".join(FAULTS))
    ap.add_argument("--stacks", default=",".join(STACKS))
    ap.add_argument("--hold", type=float, default=30.0, help="s a cut is held (default 30)")
    ap.add_argument("--give-up", type=float, default=180.0, help="s to wait for writes again")
    ap.add_argument(
        "--resync-timeout", type=float, default=300.0, help="s to wait for UpToDate/UpToDate"
    )
    ap.add_argument("--json", type=Path, help="append each run here (one JSON line); resumes")
    ap.add_argument("--summarize", type=Path, help="no runs: the summary of a --json file")
    args = ap.parse_args(argv)
    for name, known in (("faults", FAULTS), ("stacks", STACKS)):
        if unknown := set(getattr(args, name).split(",")) - set(known):
            ap.error(f"--{name}: unknown {', '.join(sorted(unknown))} (of {', '.join(known)})")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.summarize:
        runs = read_runs(args.summarize)
        print("\n".join(summary(runs) + nfs_bench.phase_summary(runs)))
        return 0
    lab = Lab()
    if why := refusal(lab):
        print(f"quorum_bench: {why}", file=sys.stderr)
        return 2
    lab.up()
    stacks: dict[str, Callable[[Lab], Stack]] = {"drbdha": DrbdhaStack, "reactor": ReactorStack}
    if "reactor" in args.stacks.split(","):
        r = lab.exec("node1", PREFLIGHT, check=False)
        if r.returncode != 0:
            print(f"quorum_bench: the image lacks drbd-reactor: {r.stdout}", file=sys.stderr)
            return 2
        print(f"node1: {r.stdout.strip()}", flush=True)
    runs = read_runs(args.json) if args.json and args.json.exists() else []
    done = {(r["run"], r["fault"], r["stack"]) for r in runs}
    for i in range(1, args.runs + 1):
        for fault in args.faults.split(","):
            for name in args.stacks.split(","):  # in turns: both see the same lab
                if (i, fault, name) in done:
                    continue
                r = run_one(lab, stacks[name](lab), fault, args)
                r.update(stack=name, fault=fault, run=i, timers="tuned")
                r.update(hold_s=args.hold, give_up=args.give_up)
                print(json.dumps(shown(r)), flush=True)
                runs.append(r)
                if args.json:  # after every run: a run that breaks keeps the others
                    with args.json.open("a") as f:
                        f.write(json.dumps(r) + "\n")
    print("\n".join(summary(runs) + nfs_bench.phase_summary(runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
