"""TCP tickle: wake NFS clients whose connection died with the old master.

A client whose last request the dead master had acknowledged has nothing to retransmit: it
sends nothing until its TCP keepalive fires (30 s for NFSv4.2, 60 s for NFSv3 mounts by
default) and only then learns the connection is gone. The master therefore records its
clients' connections to the VIP (`established`, written to the shared state directory), and
the new master, once nfsd listens, sends each of them a tickle: a bare ACK from the VIP with
sequence and acknowledgment numbers 0. The client's TCP answers an ACK outside its window
with an ACK of its own (RFC 9293 §3.10.7.4, RFC 5961 §5's challenge ACK); the new master has
no such connection and answers that with a reset; the client reconnects within a round trip.
This is what CTDB (`ctdb_sys_send_tcp`, tickle ACKs) and Pacemaker's portblock do.

The segment is built here (pure, tested against the RFC's layout); the sender is a raw
IPPROTO_TCP socket bound to the VIP (the kernel writes the IP header).
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

from drbdha.net._pyroute2 import DiagSocket
from drbdha.vrrp.packet import internet_checksum

IPPROTO_TCP = 6
TCP_ACK = 0x10
TICKLE_WINDOW = 1234  # any nonzero window: a zero one could read as a probe
TCP_ESTABLISHED = 1  # include/net/tcp_states.h
TCP_LISTEN = 10
INET_DIAG_INFO = 2  # include/uapi/linux/inet_diag.h: the socket's tcp_info
REPEAT = 3  # CTDB sends each tickle three times: one lost segment must not cost a keepalive

IPAddress = IPv4Address | IPv6Address


@dataclass(frozen=True, slots=True, order=True)
class Connection:
    """One client connection to the VIP, as the master saw it."""

    vip: str
    port: int  # ours: 2049, or a v3 helper's port
    client: str
    client_port: int

    def as_json(self) -> list[object]:
        return [self.vip, self.port, self.client, self.client_port]

    @classmethod
    def from_json(cls, v: object) -> Connection:
        if not (isinstance(v, list) and len(v) == 4):
            raise ValueError(f"not a connection record: {v!r}")
        vip, port, client, client_port = v
        ip_address(vip), ip_address(client)  # validates both
        if not all(isinstance(p, int) and 0 < p < 65536 for p in (port, client_port)):
            raise ValueError(f"not a connection record: {v!r}")
        return cls(str(vip), port, str(client), client_port)


def segment(src: IPAddress, sport: int, dst: IPAddress, dport: int) -> bytes:
    """A 20-byte TCP header: ACK, seq 0, ack 0, no options, checksum over the pseudo header
    (RFC 9293 §3.1; RFC 8200 §8.1 for IPv6)."""
    header = struct.pack("!HHIIBBHHH", sport, dport, 0, 0, 5 << 4, TCP_ACK, TICKLE_WINDOW, 0, 0)
    if src.version == 4:
        pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, IPPROTO_TCP, len(header))
    else:
        pseudo = src.packed + dst.packed + struct.pack("!I3xB", len(header), IPPROTO_TCP)
    checksum = internet_checksum(pseudo + header)
    return header[:16] + struct.pack("!H", checksum) + header[18:]


def send(connections: Iterable[Connection], repeat: int = REPEAT) -> int:
    """Send the tickles; returns how many segments left. A VIP that is not (or no longer)
    ours fails the bind and its connections are skipped: tickles from an address we do not
    hold would reset someone else's clients."""
    sent = 0
    by_vip: dict[str, list[Connection]] = {}
    for c in connections:
        by_vip.setdefault(c.vip, []).append(c)
    for vip, conns in by_vip.items():
        src = ip_address(vip)
        family = socket.AF_INET if src.version == 4 else socket.AF_INET6
        with socket.socket(family, socket.SOCK_RAW, IPPROTO_TCP) as s:
            try:
                s.bind((vip, 0))
            except OSError:
                continue
            for c in conns:
                dst = ip_address(c.client)
                data = segment(src, c.port, dst, c.client_port)
                for _ in range(repeat):
                    with contextlib.suppress(OSError):  # one unreachable client, not all
                        s.sendto(data, (c.client, 0))
                        sent += 1
    return sent


def established(vips: Sequence[str], ports: Sequence[int]) -> list[Connection]:
    """Established TCP connections to one of `vips` on one of `ports` (sock_diag through
    pyroute2: no subprocess, kernel sockets such as nfsd's included)."""
    return sorted(_diag(vips, ports, TCP_ESTABLISHED))


def listening(port: int) -> bool:
    """Something listens on TCP `port`, on any address (nfsd binds the wildcard)."""
    return port in _ports(TCP_LISTEN, socket.AF_INET, socket.AF_INET6)


def last_data(vips: Sequence[str], ports: Sequence[int]) -> float | None:
    """Seconds since a client last sent data on an established connection to one of `vips`
    on one of `ports` (the kernel's tcp_info, tcpi_last_data_recv); None without one. A
    segment's arrival, not a call nfsd counted: a call may have arrived long before and
    waited behind DRBD's frozen I/O (daemon/reach.py)."""
    ages = [
        m.get_attr("INET_DIAG_INFO")["tcpi_last_data_recv"] / 1000
        for m in _matching(vips, ports, TCP_ESTABLISHED, INET_DIAG_INFO)
    ]
    return min(ages, default=None)


def _diag(vips: Sequence[str], ports: Sequence[int], state: int) -> set[Connection]:
    return {
        Connection(
            str(ip_address(m["idiag_src"])),
            m["idiag_sport"],
            str(ip_address(m["idiag_dst"])),
            m["idiag_dport"],
        )
        for m in _matching(vips, ports, state)
    }


def _matching(
    vips: Sequence[str], ports: Sequence[int], state: int, extension: int = 0
) -> list[Any]:
    """sock_diag's messages of the TCP sockets in `state` bound to `vips` and `ports`, with
    the `extension` attribute (INET_DIAG_*) asked for."""
    wanted = {str(ip_address(v)) for v in vips}
    families = {socket.AF_INET if ip_address(v).version == 4 else socket.AF_INET6 for v in vips}
    ext = 1 << (extension - 1) if extension else 0
    with DiagSocket() as ds:
        ds.bind()
        return [
            m
            for family in families
            for m in ds.get_sock_stats(family=family, states=1 << state, extensions=ext)
            if m["idiag_sport"] in ports and str(ip_address(m["idiag_src"])) in wanted
        ]


def _ports(state: int, *families: int) -> list[int]:
    with DiagSocket() as ds:
        ds.bind()
        return [
            m["idiag_sport"]
            for family in families
            for m in ds.get_sock_stats(family=family, states=1 << state)
        ]
