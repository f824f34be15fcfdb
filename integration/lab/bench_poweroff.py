#!/usr/bin/env python3
"""Failover time after a hard power-off, VRRP only, drbdha under systemd in the lab VMs.

    integration/lab/bench_poweroff.py [--runs 6] [--advert 0.1] [--down]

Each run: drbdha (VRRPv3, vrid 62, VIP 10.77.1.100, priorities 150/100, preempt off) is
(re)started on both nodes and left to settle; the client VM pings the VIP every 10 ms; tcpdump in
the lab namespace listens on the client's tap (what reaches the client's NIC), with host
timestamps; the master's qemu is SIGKILLed (`lab kill`, the same host clock). From the capture:

  advert   kill -> the survivor's first VRRP advertisement (it has declared itself master)
  garp     kill -> the survivor's first gratuitous ARP for the VIP (the VIP is on its eth0:
           drbdha adds the address before announcing it)
  reply    kill -> the first echo reply from the VIP with the survivor's MAC (the client is
           served again; adds up to one 10 ms ping interval)
  detect   the victim's last advert -> the survivor's first advert, i.e. the backup's
           Master_Down_Interval as it ran (3 x interval + skew = 361 ms at 100 ms, priority 100)
  gap      in the client VM (its own clock): last echo reply before the outage -> first after

Nothing is subtracted: `kill` is the host's time.time() just before os.kill() of the qemu
process. The killed node is powered on again after each run (a reboot, ~20-45 s under TCG);
the next run kills whichever node is master then. DRBD is not touched (drbdha runs VRRP only);
the lab is left up unless --down (`lab up` brings DRBD back together).
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # drbdha_toml, polling

import drbdha_toml
from cluster import NODES, VIP, VMS, Lab, vrrp_instance
from nfslab import client_tcpdump

VRID = 62
PRIORITY = {"node1": 150, "node2": 100}
OTHER = {"node1": "node2", "node2": "node1"}
CONFIG = "/etc/drbdha/drbdha.toml"
PING_LOG = "/tmp/bench-ping.log"  # noqa: S108 (in the client VM)
LINE = re.compile(r"^(\d+\.\d+) ([0-9a-f:]{17}) > ([0-9a-f:]{17}), .*?length \d+: (.*)$")


def config(node: str, advert: float) -> str:
    return drbdha_toml.render(
        comment="Written by integration/lab/bench_poweroff.py",
        daemon={"metrics_listen": ""},
        instances=[vrrp_instance("bench", VRID, PRIORITY[node], advert, preempt=False)],
    )


def state(lab: Lab, node: str) -> str | None:
    r = lab.exec(node, "drbdha status --json", check=False, timeout=30)
    m = re.search(r'"state": "(\w+)"', r.stdout)
    return m.group(1) if m else None


def holds_vip(lab: Lab, node: str) -> bool:
    return f" {VIP}/" in lab.exec(node, "ip -4 -o addr show dev eth0").stdout


def settle(lab: Lab, advert: float) -> str:
    """(Re)start drbdha on both nodes; wait for one master holding the VIP, stable for 3 s."""
    lab.parallel(lambda n: lab.put(n, CONFIG, config(n, advert), 0o600), NODES)
    lab.parallel(
        lambda n: lab.exec(
            n, "sync; systemctl reset-failed drbdha; systemctl restart drbdha", timeout=120
        ),
        NODES,
    )
    deadline = time.monotonic() + 60
    stable_since = None
    while time.monotonic() < deadline:
        states = dict(zip(NODES, lab.parallel(lambda n: state(lab, n), NODES), strict=True))
        holders = [n for n in NODES if holds_vip(lab, n)]
        masters = [n for n, s in states.items() if s == "master"]
        if len(masters) == 1 and states[OTHER[masters[0]]] == "backup" and holders == masters:
            stable_since = stable_since or time.monotonic()
            if time.monotonic() - stable_since >= 3:
                return masters[0]
        else:
            stable_since = None
        time.sleep(0.3)
    raise SystemExit(f"drbdha did not settle: states {states}, VIP on {holders}")


def run_once(lab: Lab, advert: float) -> dict[str, float]:
    victim = settle(lab, advert)
    survivor = OTHER[victim]
    mac = {n: VMS[n].mac("svc") for n in NODES}
    ip = {n: VMS[n].addrs["svc"] for n in NODES}

    cap = subprocess.Popen(
        client_tcpdump(
            "-n", "-e", "-tt", "-l", "--immediate-mode", f"vrrp or arp or (icmp and host {VIP})"
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(cap.stdout), daemon=True)
    reader.start()
    for err in cap.stderr:  # "listening on client-svc, ..." once the capture runs
        if "listening on" in err:
            break
    # The client pings every 10 ms for 12 s; its log has its own timestamps (-D).
    pinger = threading.Thread(
        target=lambda: lab.exec(
            "client", f"ping -D -n -i 0.01 -W 1 -w 12 {VIP} > {PING_LOG} 2>&1; true", timeout=60
        ),
        daemon=True,
    )
    pinger.start()
    time.sleep(2.0)

    pid = lab.pid(victim)
    assert pid is not None
    t_kill = time.time()
    os.kill(pid, signal.SIGKILL)  # what `lab kill` does
    lab.kill(victim)  # waits for the process to be gone, cleans up its sockets
    pinger.join(timeout=60)
    time.sleep(0.5)
    cap.send_signal(signal.SIGINT)
    cap.wait(timeout=10)
    reader.join(timeout=10)

    first: dict[str, float] = {}
    last_victim_advert = None
    for line in lines:
        m = LINE.match(line)
        if not m:
            continue
        t, src, what = float(m.group(1)), m.group(2), m.group(4)
        if "VRRP" in what and what.startswith(f"{ip[victim]} >") and t <= t_kill:
            last_victim_advert = t
        if t <= t_kill or src != mac[survivor]:
            continue
        if "VRRP" in what and f"vrid {VRID}" in what:
            first.setdefault("advert", t)
        elif "ARP" in line and VIP in what:
            first.setdefault("garp", t)
        elif "echo reply" in what and what.startswith(f"{VIP} >"):
            first.setdefault("reply", t)
    missing = {"advert", "garp", "reply"} - set(first)
    if missing or last_victim_advert is None:
        raise SystemExit(
            f"capture incomplete ({missing}); {len(lines)} lines:\n" + "\n".join(lines[-30:])
        )
    out = {k: v - t_kill for k, v in first.items()}
    out["detect"] = first["advert"] - last_victim_advert
    out["gap"] = client_gap(lab)
    out["victim"] = victim  # type: ignore[assignment]
    lab.start(victim)  # power on again: a reboot after the power cut
    return out


def client_gap(lab: Lab) -> float:
    """Longest gap between consecutive echo replies in the client's ping log (its clock)."""
    log = lab.exec("client", f"cat {PING_LOG}").stdout
    stamps = [
        float(m.group(1)) for m in re.finditer(r"^\[(\d+\.\d+)\] \d+ bytes from", log, re.MULTILINE)
    ]
    if len(stamps) < 2:
        raise SystemExit(f"client ping log has {len(stamps)} replies:\n{log[-2000:]}")
    return max(b - a for a, b in itertools.pairwise(stamps))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=6)
    ap.add_argument("--advert", type=float, default=0.1, help="VRRP advert interval (s)")
    ap.add_argument("--down", action="store_true", help="take the lab down at the end")
    args = ap.parse_args()
    lab = Lab()
    if os.geteuid() != 0:
        raise SystemExit("needs root (the lab's network namespace)")
    lab.up(drbd=False)
    results = []
    try:
        for i in range(args.runs):
            r = run_once(lab, args.advert)
            results.append(r)
            print(
                f"run {i + 1}: killed {r['victim']}: advert {r['advert'] * 1000:.0f} ms, "
                f"garp {r['garp'] * 1000:.0f} ms, reply {r['reply'] * 1000:.0f} ms, "
                f"detect {r['detect'] * 1000:.0f} ms, client gap {r['gap'] * 1000:.0f} ms",
                flush=True,
            )
    finally:
        lab.parallel(
            lambda n: (
                lab.exec(
                    n,
                    f"systemctl stop drbdha; systemctl reset-failed drbdha; "
                    f"rm -f {shlex.quote(CONFIG)}",
                    check=False,
                    timeout=120,
                )
                if lab.running(n)
                else None
            ),
            NODES,
        )
        if args.down:
            lab.down()
    print(
        f"\npower-off -> VIP, VRRPv3 {args.advert * 1000:.0f} ms adverts, {len(results)} runs "
        "(ms: median / min / max)"
    )
    for key, label in (
        ("advert", "kill -> survivor's first advert"),
        ("garp", "kill -> survivor's gratuitous ARP (VIP held)"),
        ("reply", "kill -> client's first echo reply from the survivor"),
        ("detect", "victim's last advert -> survivor's first advert"),
        ("gap", "client: longest gap between echo replies"),
    ):
        v = [r[key] * 1000 for r in results]
        print(f"  {label:<54} {statistics.median(v):6.0f} {min(v):6.0f} {max(v):6.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
