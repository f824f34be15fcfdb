"""I/O adapters between the pure VRRP core and the Linux kernel.

Rules for this package (tests/test_layering.py keeps them): it may import the VRRP core's
codec and constants, the chain's step protocol, config, clock, durable and errors; never
drbdha.vrrp.machine, resources/ or the daemon. Adapters raise rather than decide (NetError
for a configuration problem such as a missing interface, OSError for the kernel saying no,
MalformedPacket for a broken datagram); the VIP step logs its outcome through the log it is
given.

Modules:
  vrrp_socket   one raw IPPROTO_VRRP socket per (interface, family)
  frames        pure builders of gratuitous ARP and unsolicited NA frames
  frame_sender  AF_PACKET sender for those frames
  addresses     idempotent VIP add/remove and interface queries (pyroute2 AsyncIPRoute)
  links         non-blocking netlink watcher for link up/down and address changes
  vip           the chain's VIP step (address, then GARP/NA)
  tickle        TCP tickles (a bare ACK from the VIP) and the sock_diag connection list
                (resources/nfs_clients.py gets them from the chain's composition)
  heartbeat     the replication heartbeat's UDP socket
  _pyroute2     the one door to pyroute2
"""

from __future__ import annotations

import fcntl
import socket
import struct
from typing import Final, Self

from drbdha.errors import DrbdhaError

# <linux/if.h>
IFF_UP: Final = 0x1
IFF_RUNNING: Final = 0x40  # RFC 2863 operstate UP (or UNKNOWN): the carrier is present
SIOCGIFMTU: Final = 0x8921  # <linux/sockios.h>


class NetError(DrbdhaError):
    """A network configuration problem drbdha cannot work around, e.g. a missing interface."""


def ifindex(ifname: str) -> int:
    """The index of `ifname` in the current network namespace (an ioctl, no netlink)."""
    try:
        return socket.if_nametoindex(ifname)
    except OSError as exc:
        raise NetError(f"interface {ifname!r} not found") from exc


def mtu(ifname: str) -> int:
    """The MTU of `ifname` in the current network namespace (an ioctl, no netlink)."""
    ifindex(ifname)  # NetError naming a missing interface
    # struct ifreq { char ifr_name[IFNAMSIZ]; union { int ifr_mtu; ... } }: 16 + 16 bytes.
    req = struct.pack("16si12x", ifname.encode(), 0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        out = fcntl.ioctl(s, SIOCGIFMTU, req)
    mtu: int = struct.unpack_from("16si", out)[1]
    return mtu


def flags_up(flags: int) -> bool:
    """True when link flags say administratively up and carrier present (IFF_RUNNING)."""
    return flags & (IFF_UP | IFF_RUNNING) == (IFF_UP | IFF_RUNNING)


class OwnsSocket:
    """Base for adapters that own one kernel socket (`self._sock`): close() and `with`."""

    _sock: socket.socket

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
