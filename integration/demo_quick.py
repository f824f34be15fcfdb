"""drbdha demo --quick: two drbdha nodes and a client in network namespaces, one failover.

Builds a throw-away lab (a bridge in its own namespace, node1, node2 and a client, all
addresses inside those namespaces only), starts drbdha on both nodes, shows who is master and
that the client reaches the virtual IP, kills the master with SIGKILL, shows the backup take
over, measures the outage the client saw, and removes everything it made.
Exit status 0 only if the takeover happened and the client reached the VIP on the new master.
"""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import drbdha_toml
from netns import Lab, sweep_stale

ROOT = Path(__file__).resolve().parent.parent
DRBDHA = [str(ROOT / ".venv/bin/python"), "-m", "drbdha"]
NET = "10.99.0"
VIP = f"{NET}.100"
HOSTS = {"node1": 1, "node2": 2, "client": 10}  # name -> last octet


def sh(*argv: str, check: bool = True) -> str:
    return subprocess.run(argv, check=check, capture_output=True, text=True).stdout


class Demo:
    def __init__(self, workdir: Path, interval: float) -> None:
        self.workdir = workdir
        self.interval = interval
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.lab = Lab()  # integration/netns.py: namespaces that never clash, swept if left
        self.ns: dict[str, str] = {}  # host -> its namespace

    # ---- lab ----------------------------------------------------------------------------

    def build(self) -> None:
        """A hub namespace with bridge br0, and each host on it through eth0, a veth whose
        peer (named after the host) is a bridge port."""
        sweep_stale()  # namespaces of a demo that was killed
        hub = self.lab.add_ns("hub")
        for host, octet in HOSTS.items():
            self.ns[host] = self.lab.add_ns(host)
            self.lab.veth(self.ns[host], "eth0", hub, host)
            self.lab.ip(self.ns[host], f"addr add {NET}.{octet}/24 dev eth0")
        self.lab.bridge(hub, "br0", list(HOSTS))

    def in_ns(self, host: str, *argv: str, check: bool = True) -> str:
        return sh("ip", "netns", "exec", self.ns[host], *argv, check=check)

    def mac(self, host: str) -> str:
        return json.loads(self.in_ns(host, "ip", "-j", "link", "show", "eth0"))[0]["address"]

    def cleanup(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.lab.cleanup()

    # ---- drbdha -------------------------------------------------------------------------

    def start(self, host: str, priority: int) -> None:
        conf = self.workdir / f"{host}.toml"
        conf.write_text(
            drbdha_toml.render(
                daemon={
                    "control_socket": f"{self.workdir}/{host}.sock",
                    "metrics_listen": "127.0.0.1:9942",
                },
                instances=[
                    {
                        "name": "demo",
                        "interface": "eth0",
                        "vrid": 42,
                        "priority": priority,
                        "version": 3,
                        "advert_interval": self.interval,
                        "virtual_ipaddress": [f"{VIP}/24"],
                    }
                ],
            )
        )
        log = (self.workdir / f"{host}.log").open("wb")
        self.procs[host] = subprocess.Popen(
            ["ip", "netns", "exec", self.ns[host], *DRBDHA, "run", "-c", str(conf)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def state(self, host: str) -> str | None:
        state = None
        for line in (self.workdir / f"{host}.log").read_text().splitlines():
            if line.startswith("{"):
                event = json.loads(line)
                if event.get("event") == "vrrp.transition":
                    state = event["new"]
        return state

    def holds_vip(self, host: str) -> bool:
        return f"{VIP}/" in self.in_ns(host, "ip", "-o", "addr", "show", "dev", "eth0")

    def wait_master(self, candidates: list[str], timeout: float) -> tuple[str, float]:
        """The one master among `candidates`, once the election has settled: the same single
        master for a whole Master_Down_Interval (the nodes start at slightly different times,
        so the lower priority can be master briefly until the higher one preempts it)."""
        deadline = time.monotonic() + timeout
        settle = 3 * self.interval + self.interval  # > Master_Down_Interval
        seen, since = None, time.monotonic()
        while time.monotonic() < deadline:
            masters = [h for h in candidates if self.state(h) == "master" and self.holds_vip(h)]
            current = masters[0] if len(masters) == 1 else None
            if current != seen:
                seen, since = current, time.monotonic()
            elif current is not None and time.monotonic() - since >= settle:
                return current, since
            time.sleep(0.05)
        msg = f"no single master among {candidates} after {timeout}s"
        raise RuntimeError(msg)

    def status(self, host: str) -> str:
        out = subprocess.run(
            [*DRBDHA, "status", "--socket", f"{self.workdir}/{host}.sock"],
            capture_output=True,
            text=True,
            check=False,
        )
        keep = ("state", "priority", "master", "vips", "last transition", "drbdha ")
        return "\n".join(
            f"  {host}| {line.strip()}"
            for line in out.stdout.splitlines()
            if line.strip().startswith(keep)
        )

    def scrape(self, host: str) -> str:
        url = "http://127.0.0.1:9942/metrics"
        code = f"import urllib.request as u; print(u.urlopen({url!r}).read().decode())"
        text = self.in_ns(host, str(ROOT / ".venv/bin/python"), "-c", code)
        keep = (
            "drbdha_vrrp_state{",
            "drbdha_vrrp_transitions_total",
            "drbdha_vrrp_adverts_sent_total",
            "drbdha_vrrp_adverts_received_total",
        )
        return "\n".join(
            f"  {host}| {line}"
            for line in text.splitlines()
            if line.startswith(keep) and not line.endswith(" 0.0")
        )

    def client_sees(self) -> str:
        self.in_ns("client", "ping", "-c", "1", "-W", "1", VIP)
        for entry in json.loads(self.in_ns("client", "ip", "-j", "neigh", "show", VIP)):
            return entry.get("lladdr", "?")
        return "?"

    def start_probe(self) -> subprocess.Popen[str]:
        # One echo request every 10 ms; -D prints a timestamp on every reply, so the
        # largest gap between replies is the outage the client saw.
        ping = ["ping", "-D", "-n", "-i", "0.01", "-W", "1", VIP]
        return subprocess.Popen(
            ["ip", "netns", "exec", self.ns["client"], *ping],
            stdout=subprocess.PIPE,
            text=True,
        )


def outage(ping_output: str) -> float:
    stamps = [
        float(line[1 : line.index("]")])
        for line in ping_output.splitlines()
        if line.startswith("[") and "bytes from" in line
    ]
    if len(stamps) < 2:
        msg = "the client's probe got fewer than two replies"
        raise RuntimeError(msg)
    return max(b - a for a, b in itertools.pairwise(stamps))


def demo(interval: float) -> int:
    with tempfile.TemporaryDirectory(prefix="drbdha-demo-") as tmp:
        lab = Demo(Path(tmp), interval)
        try:
            return run(lab)
        finally:
            lab.cleanup()
            print("demo: lab removed")


def run(demo: Demo) -> int:
    demo.build()
    macs = {h: demo.mac(h) for h in ("node1", "node2")}
    print(
        f"demo: lab up: node1 {NET}.1 ({macs['node1']}), node2 {NET}.2 ({macs['node2']}), "
        f"client {NET}.10, VIP {VIP}, VRRPv3 every {demo.interval * 1000:.0f} ms"
    )
    demo.start("node1", 150)
    demo.start("node2", 100)
    master, _ = demo.wait_master(["node1", "node2"], timeout=10)
    backup = "node2" if master == "node1" else "node1"
    seen = demo.client_sees()
    print(
        f"demo: {master} is master, {backup} is {demo.state(backup)}; "
        f"client resolves {VIP} to {seen}"
    )
    if seen != macs[master]:
        print("demo: FAILED: the client does not reach the master", file=sys.stderr)
        return 1
    print("demo: drbdha status on both nodes:")
    print(demo.status(master))
    print(demo.status(backup))
    probe = demo.start_probe()
    time.sleep(1.0)
    # A node that dies takes its kernel with it: kill drbdha and cut the node's link at
    # once. (Killing only the daemon would leave the VIP answering from its kernel.)
    print(f"demo: power off {master}: kill -9 its drbdha and cut its link")
    killed_at = time.monotonic()
    demo.procs[master].send_signal(signal.SIGKILL)
    demo.in_ns(master, "ip", "link", "set", "eth0", "down")
    new, became_master_at = demo.wait_master([backup], timeout=10)
    took = became_master_at - killed_at
    time.sleep(1.0)
    probe.send_signal(signal.SIGINT)
    out, _ = probe.communicate(timeout=5)
    seen = demo.client_sees()
    print(
        f"demo: {new} took over ({took * 1000:.0f} ms after the power-off, as seen by polling); "
        f"client resolves {VIP} to {seen}"
    )
    gap = outage(out)
    print(f"demo: the client's longest gap between ping replies: {gap * 1000:.0f} ms")
    if seen != macs[new]:
        print("demo: FAILED: the client does not reach the new master", file=sys.stderr)
        return 1
    print(f"demo: drbdha status on {new}:")
    print(demo.status(new))
    print(f"demo: a scrape of {new}'s metrics endpoint (non-zero VRRP series):")
    print(demo.scrape(new))
    print("demo: OK: failover done")
    return 0
