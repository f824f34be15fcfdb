"""The replication heartbeat's socket: a UDP datagram every interval from this node's DRBD
replication address to the peer's (resources/repl_watch.py says what it is for).

One socket per (local replication address, port), shared by the resources that replicate
over it; a datagram names its resource. Only the peer's replication address is believed,
checked by the caller. Sending never raises: a cut link shows as silence at the peer.
"""

from __future__ import annotations

import contextlib
import socket
from ipaddress import ip_address

MAGIC = b"drbdha-hb1 "
MAX_DATAGRAM = 256


def canonical(address: str) -> str:
    """One spelling per address (drbdadm may print an IPv6 address expanded; recvfrom gives
    it compressed). A link-local scope is kept: sendto needs it, and recvfrom gives it."""
    try:
        return str(ip_address(address))
    except ValueError:
        return address


def payload(resource: str) -> bytes:
    return MAGIC + resource.encode()


def parse(data: bytes) -> str | None:
    """The resource a heartbeat names, None for anything else."""
    if not data.startswith(MAGIC) or len(data) > MAX_DATAGRAM:
        return None
    try:
        name = data[len(MAGIC) :].decode("ascii")
    except UnicodeDecodeError:
        return None
    return name if name.isprintable() and name and " " not in name else None


class HeartbeatSocket:
    def __init__(self, local: str, port: int) -> None:
        """Bound to `local`: OSError (EADDRNOTAVAIL) when it is not this host's address."""
        family = socket.AF_INET6 if ip_address(local).version == 6 else socket.AF_INET
        self.port = port
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self._sock.setblocking(False)
            self._sock.bind((local, port))
        except OSError:
            self._sock.close()
            raise

    def fileno(self) -> int:
        return self._sock.fileno()

    def send(self, peer: str, resource: str) -> None:
        with contextlib.suppress(OSError):  # unreachable, no buffer: silence, as a cut link
            self._sock.sendto(payload(resource), (peer, self.port))

    def read(self) -> list[tuple[str, str]]:
        """(resource, source address) of every heartbeat queued."""
        out: list[tuple[str, str]] = []
        while True:
            try:
                data, src = self._sock.recvfrom(MAX_DATAGRAM + 1)
            except (BlockingIOError, InterruptedError):
                return out
            except OSError:  # an ICMP error queued by an earlier send: read on
                continue
            resource = parse(data)
            if resource is not None:
                out.append((resource, canonical(str(src[0]))))

    def close(self) -> None:
        self._sock.close()


def local_and_peers(
    addresses: tuple[str, ...], port: int, sockets: dict[tuple[str, int], HeartbeatSocket]
) -> tuple[HeartbeatSocket, list[str]]:
    """The socket on the one of DRBD's replication `addresses` that is this host's (from
    `sockets`, or bound and added there), and the others (the peers'). OSError when none
    of them is this host's."""
    for i, addr in enumerate(addresses):
        sock = sockets.get((addr, port))
        if sock is None:
            try:
                sock = sockets[addr, port] = HeartbeatSocket(addr, port)
            except OSError:
                continue
        return sock, [canonical(a) for j, a in enumerate(addresses) if j != i]
    raise OSError(f"none of {', '.join(addresses) or 'no addresses'} is this host's")


class Heartbeats:
    """Every heartbeat socket of the daemon, and what each resource sends where."""

    def __init__(self) -> None:
        self.sockets: dict[tuple[str, int], HeartbeatSocket] = {}
        self._routes: dict[str, tuple[HeartbeatSocket, tuple[str, ...]]] = {}

    def add(
        self, resource: str, addresses: tuple[str, ...], port: int
    ) -> tuple[HeartbeatSocket, tuple[str, ...], bool]:
        """(the socket, the peers' addresses, whether the socket is new) for `resource`;
        OSError when none of DRBD's replication addresses is this host's."""
        known = set(self.sockets.values())
        sock, peers = local_and_peers(addresses, port, self.sockets)
        self._routes[resource] = (sock, tuple(peers))
        return sock, tuple(peers), sock not in known

    def send(self) -> None:
        for resource, (sock, peers) in self._routes.items():
            for peer in peers:
                sock.send(peer, resource)

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close()
        self.sockets.clear()
        self._routes.clear()
