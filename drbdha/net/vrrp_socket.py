"""One raw IPPROTO_VRRP (112) socket per (interface, address family).

Every VRRP instance on an interface shares it; the daemon demultiplexes by VRID. The socket
is non-blocking: register fileno() with loop.add_reader() and call recv() until it returns
None. Socket options follow semantics.md §B4 and keepalived:

  * SO_BINDTODEVICE, and the group (224.0.0.18 / ff02::12) joined on this interface only.
  * IP_MULTICAST_ALL / IPV6_MULTICAST_ALL = 0: without it a socket receives every group that
    *any* socket joined on *any* interface, so instances on eth0 would hear eth1's adverts.
    (IPv6 raw sockets not bound to an address ignore the option; recv() therefore also
    drops datagrams sent to any other group, see there.)
  * Multicast loop off: the host never hears its own adverts.
  * TTL / hop limit 255 for multicast and unicast (RFC 5798 §5.1.1.3, §5.1.2.3): receivers
    drop anything else, so an advert cannot have crossed a router. TOS / traffic class 0xC0
    (internetwork control), as keepalived sends.
  * IPv6: IPV6_CHECKSUM at offset 6, so the kernel fills in the pseudo-header checksum on
    send and silently drops a bad one on receive (RFC 3542 §3.1). The IPv6 header is not
    delivered, so destination and hop limit come from IPV6_PKTINFO / IPV6_HOPLIMIT ancillary
    data. IPv4 delivers the IP header, which drbdha.vrrp.packet.split_ipv4 takes apart.

Source address. Every advert must leave from `src` (the interface's primary IPv4 address or
its IPv6 link-local address) even while VIPs sit on the interface, because peers break
priority ties by the higher primary address (RFC 5798 §6.4.3) and unicast peers filter on it.
send() attaches an IP_PKTINFO / IPV6_PKTINFO control message carrying the ifindex and
source. Why not IP_HDRINCL (keepalived's way): it would make us build and number IPv4 headers
and still not help IPv6, whereas PKTINFO pins the source per datagram for both families and
leaves header ID, TOS and TTL to the socket options. Why not bind() to the source: on a raw
socket bind() also filters *received* datagrams by destination, which would drop the
multicast adverts, and the primary address can change while the socket lives.

Errors propagate: OSError from the kernel (BlockingIOError when the send queue is full),
MalformedPacket from split_ipv4 for a broken IPv4 header (the datagram is consumed, so the
caller counts it and calls recv() again).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Any, Final

from drbdha.config import VrrpInstanceConfig
from drbdha.errors import MalformedPacket
from drbdha.net import NetError, OwnsSocket, ifindex, mtu
from drbdha.vrrp.auth_hmac import TRAILER_LEN
from drbdha.vrrp.constants import IPPROTO_VRRP, VRRP_GROUP_V4, VRRP_GROUP_V6, VRRP_TTL
from drbdha.vrrp.packet import IPAddress, advert_size, split_ipv4

# Missing from Python 3.11's socket module (values from <linux/in.h>, <linux/in6.h>).
IP_PKTINFO: Final = 8
IP_MULTICAST_ALL: Final = 49
IPV6_MULTICAST_ALL: Final = 29
IPTOS_PREC_INTERNETCONTROL: Final = 0xC0
VRRP_CHECKSUM_OFFSET: Final = 6  # byte offset of the checksum in a VRRP message

# Large enough for any IPv4 datagram; VRRP messages are at most 20 + 8 + 255 * 16 bytes.
_BUFSIZE: Final = 65535
# struct in6_pktinfo { struct in6_addr ipi6_addr; int ipi6_ifindex; }
_IN6_PKTINFO = struct.Struct("=16si")
# struct in_pktinfo { int ipi_ifindex; struct in_addr ipi_spec_dst; struct in_addr ipi_addr; }
# On send, ipi_spec_dst is the source address and ipi_ifindex the outgoing interface.
_IN_PKTINFO = struct.Struct("=i4s4s")
_INT = struct.Struct("=i")  # IPV6_HOPLIMIT cmsg data: a native int
_ANCBUFSIZE: Final = socket.CMSG_SPACE(_IN6_PKTINFO.size) + socket.CMSG_SPACE(_INT.size)


def over_mtu(instances: Sequence[VrrpInstanceConfig]) -> list[tuple[str, str]]:
    """(key, problem) for each instance whose advert would not fit its interface's MTU: the
    IP header, every VIP and auth_hmac's trailer (keepalived counts the trailer the same way,
    and moves the VIPs that do not fit out of the advert; drbdha refuses instead, so no peer
    sees a different address list than the one configured). An interface this machine does
    not have is left to the start's own error."""
    problems = []
    mtus: dict[str, int | None] = {}  # one ioctl per interface, however many instances
    for i, inst in enumerate(instances):
        if inst.interface not in mtus:
            try:
                mtus[inst.interface] = mtu(inst.interface)
            except NetError:
                mtus[inst.interface] = None
        limit = mtus[inst.interface]
        if limit is None:
            continue
        trailer = TRAILER_LEN if inst.auth_hmac else 0
        count = len(inst.virtual_ipaddress)
        size = advert_size(inst.version, inst.family, count, trailer)
        if size <= limit:
            continue
        room = (limit - advert_size(inst.version, inst.family, 0, trailer)) // (
            4 if inst.family == 4 else 16
        )
        signed = f" and the {trailer}-byte auth_hmac trailer" if trailer else ""
        why = (
            f"{count} addresses{signed} make a {size}-byte advert; {inst.interface}'s MTU is "
            f"{limit} (room for {max(room, 0)}): split them over more instances"
        )
        problems.append((f"vrrp_instance[{i}].virtual_ipaddress", why))
    return problems


# sendmsg() ancillary data and destination address for one (source, destination) pair
Prepared = tuple[list[tuple[int, int, bytes]], tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class Received:
    """One datagram: `payload` is the VRRP message (no IP header); `hop_limit` the TTL."""

    payload: bytes
    src: IPAddress
    dst: IPAddress
    hop_limit: int


class VrrpSocket(OwnsSocket):
    def __init__(self, ifname: str, family: int) -> None:
        if family not in (socket.AF_INET, socket.AF_INET6):
            raise ValueError(f"family must be AF_INET or AF_INET6, not {family}")
        self.ifname = ifname
        self.family = family
        self.ifindex = ifindex(ifname)
        self._group: IPAddress = VRRP_GROUP_V4 if family == socket.AF_INET else VRRP_GROUP_V6
        self._buf = bytearray(_BUFSIZE)
        self._view = memoryview(self._buf)
        self._sock = socket.socket(family, socket.SOCK_RAW, IPPROTO_VRRP)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
            if family == socket.AF_INET:
                self._setup_ipv4()
            else:
                self._setup_ipv6()
            self._sock.setblocking(False)
        except OSError:
            self._sock.close()
            raise

    def _setup_ipv4(self) -> None:
        s = self._sock
        # struct ip_mreqn { struct in_addr imr_multiaddr; struct in_addr imr_address;
        #                   int imr_ifindex; }: join by ifindex, no address needed.
        mreqn = struct.pack("=4s4si", VRRP_GROUP_V4.packed, bytes(4), self.ifindex)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
        s.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, VRRP_TTL)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, VRRP_TTL)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, IPTOS_PREC_INTERNETCONTROL)

    def _setup_ipv6(self) -> None:
        s = self._sock
        # struct ipv6_mreq { struct in6_addr ipv6mr_multiaddr; int ipv6mr_interface; }
        mreq = struct.pack("=16si", VRRP_GROUP_V6.packed, self.ifindex)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_ALL, 0)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, self.ifindex)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, VRRP_TTL)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, VRRP_TTL)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, IPTOS_PREC_INTERNETCONTROL)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_CHECKSUM, VRRP_CHECKSUM_OFFSET)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)

    def send(self, payload: bytes, src: IPAddress, dst: IPAddress) -> None:
        """Send one VRRP message from `src` to `dst` (the group or a unicast peer)."""
        self.send_prepared(payload, self.prepare(src, dst))

    def prepare(self, src: IPAddress, dst: IPAddress) -> Prepared:
        """The sendmsg() arguments for src -> dst, built once: a master sends the same
        advert every interval, so the daemon keeps these next to the encoded message."""
        if self.family == socket.AF_INET:
            if not isinstance(src, IPv4Address) or not isinstance(dst, IPv4Address):
                raise ValueError(f"IPv4 socket cannot send {src} -> {dst}")
            info = _IN_PKTINFO.pack(self.ifindex, src.packed, bytes(4))
            return [(socket.IPPROTO_IP, IP_PKTINFO, info)], (str(dst), 0)
        if not isinstance(src, IPv6Address) or not isinstance(dst, IPv6Address):
            raise ValueError(f"IPv6 socket cannot send {src} -> {dst}")  # noqa: TRY004
        info6 = _IN6_PKTINFO.pack(src.packed, self.ifindex)
        # The scope id matters for ff02::12 and link-local peers and is ignored otherwise.
        return [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, info6)], (str(dst), 0, 0, self.ifindex)

    def send_prepared(self, payload: bytes, prepared: Prepared) -> None:
        self._sock.sendmsg([payload], prepared[0], 0, prepared[1])

    def recv(self) -> Received | None:
        """The next queued datagram, or None when the queue is empty.

        Datagrams sent to a multicast group other than the VRRP group are skipped. The
        kernel does that itself for IPv4 (IP_MULTICAST_ALL=0), but an IPv6 raw socket that
        is not bound to an address gets every group joined on the interface whatever
        IPV6_MULTICAST_ALL says (net/ipv6/raw.c applies inet6_mc_check() only to bound
        sockets; seen on Linux 6.18), so the filter is done here for both families.
        """
        while True:
            try:
                nbytes, ancdata, flags, addr = self._sock.recvmsg_into([self._buf], _ANCBUFSIZE)
            except (BlockingIOError, InterruptedError):
                return None
            if flags & socket.MSG_TRUNC:
                raise MalformedPacket("length", "datagram truncated")
            data = bytes(self._view[:nbytes])
            if self.family == socket.AF_INET:
                dgram = split_ipv4(data)
                got = Received(dgram.payload, dgram.src, dgram.dst, dgram.ttl)
            else:
                got = _received_v6(data, ancdata, addr)
            if got.dst == self._group or not got.dst.is_multicast:
                return got


def _received_v6(
    data: bytes, ancdata: list[tuple[int, int, bytes]], addr: tuple[str, int, int, int]
) -> Received:
    dst: IPv6Address | None = None
    hop_limit: int | None = None
    for level, kind, value in ancdata:
        if level != socket.IPPROTO_IPV6:
            continue
        if kind == socket.IPV6_PKTINFO and len(value) >= _IN6_PKTINFO.size:
            dst = IPv6Address(_IN6_PKTINFO.unpack_from(value)[0])
        elif kind == socket.IPV6_HOPLIMIT and len(value) >= 4:
            hop_limit = _INT.unpack_from(value)[0]
    if dst is None or hop_limit is None:
        # Both were requested with IPV6_RECVPKTINFO / IPV6_RECVHOPLIMIT; the kernel always
        # sends them, so their absence means a bug or a very odd kernel.
        raise OSError("IPv6 datagram without IPV6_PKTINFO / IPV6_HOPLIMIT ancillary data")
    # Python renders a link-local source as "fe80::1%eth0"; drop the zone so that addresses
    # compare equal to configured ones.
    src = IPv6Address(addr[0].partition("%")[0])
    return Received(data, src, dst, hop_limit)
