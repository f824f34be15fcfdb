"""The lab: two router namespaces (r1, r2) and an observer namespace holding the bridge br0
their eth0s hang off, and the capture of every VRRP advert on br0 with its kernel receive
timestamp."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netns import Lab, inside
from polling import wait_until

from vrrp.procs import Implementations, Inst, Procs, Running

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SO_RCVBUFFORCE = 33
ETH_P_IP = 0x0800
R1_IP, R2_IP = "10.77.0.1", "10.77.0.2"
VIP = "10.77.0.100/24"
PRIO_MASTER, PRIO_BACKUP = 200, 100
EXTRA_IFS = 3  # r1 has eth0 (bridged) plus eth1..eth3, for 1000 instances of 250 VRIDs each


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


@contextmanager
def open_bench(procs: Procs, quick: bool, results: dict[str, Any]) -> Iterator[Bench]:
    """The lab built, as a Bench filling `results`; its namespaces go afterwards."""
    with Lab() as lab:
        obs, r1, r2 = build_lab(lab)
        yield Bench(lab, Implementations(procs, procs.tmp), procs, obs, r1, r2, quick, results)


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


def reset_r1(b: Bench) -> None:
    """Drop whatever VIPs a killed daemon left on r1, so the next run starts clean."""
    for k in range(EXTRA_IFS + 1):
        b.lab.ip(b.r1, f"addr flush dev eth{k}")
        b.lab.ip(b.r1, f"addr add {R1_IP if k == 0 else f'10.78.{k}.1'}/24 dev eth{k}")
        b.lab.ip(b.r1, f"link set eth{k} up")


@contextmanager
def lone_master(b: Bench, impl: str, interval: float) -> Iterator[tuple[Running, WireCapture]]:
    """`impl` alone on r1 with one VRRPv3 instance, once its adverts are on the wire; afterwards
    it is stopped and r1 is clean again."""
    cap = b.capture()
    run = None
    try:
        t0 = time.time_ns()
        run = b.impls.start(impl, b.r1, "r1", single(3, interval, PRIO_MASTER))
        wait_until("master adverts", lambda: cap.since(t0, R1_IP), 30, every=0.02)
        yield run, cap
    finally:
        if run is not None:
            b.impls.stop(run)
        cap.close()
        reset_r1(b)
