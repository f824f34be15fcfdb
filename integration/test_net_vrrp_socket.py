"""VrrpSocket between two network namespaces joined by a veth pair (root only)."""

from __future__ import annotations

import select
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from netns import Capture, Lab, inside, is_root, mac_of

from drbdha.net import NetError
from drbdha.net.vrrp_socket import IP_MULTICAST_ALL, IPV6_MULTICAST_ALL, Received, VrrpSocket
from drbdha.vrrp.constants import VRRP_GROUP_V4, VRRP_GROUP_V6
from drbdha.vrrp.packet import Advertisement, IPAddress, decode, encode

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(not is_root(), reason="needs root for network namespaces"),
]

A4, B4 = IPv4Address("10.9.0.1"), IPv4Address("10.9.0.2")


@dataclass
class Pair:
    lab: Lab
    a: str
    b: str
    ll_a: IPv6Address
    ll_b: IPv6Address


def _link_local(mac: bytes) -> IPv6Address:
    """EUI-64 link-local address (RFC 4291 App. A) the kernel gives a fresh interface."""
    eui = bytes([mac[0] ^ 0x02]) + mac[1:3] + b"\xff\xfe" + mac[3:]
    return IPv6Address(b"\xfe\x80" + bytes(6) + eui)


@pytest.fixture
def pair() -> Iterator[Pair]:
    with Lab() as lab:
        a, b = lab.add_ns("a"), lab.add_ns("b")
        lab.veth(a, "a0", b, "b0")
        lab.ip(a, "addr add 10.9.0.1/24 dev a0")
        lab.ip(b, "addr add 10.9.0.2/24 dev b0")
        yield Pair(lab, a, b, _link_local(mac_of(a, "a0")), _link_local(mac_of(b, "b0")))


def _open(ns: str, ifname: str, family: int) -> VrrpSocket:
    with inside(ns):
        return VrrpSocket(ifname, family)


def _recv(sock: VrrpSocket, timeout: float = 2.0) -> Received | None:
    """The next datagram, waiting up to `timeout` seconds for one."""
    got = sock.recv()
    if got is None and select.select([sock], [], [], timeout)[0]:
        got = sock.recv()
    return got


def _advert(version: int, vip: str) -> Advertisement:
    return Advertisement(version, 51, 100, 1 if version == 2 else 100, (ip_address(vip),))


def _roundtrip(
    pair: Pair, family: int, version: int, vip: str, *, src: IPAddress, dst: IPAddress
) -> Received:
    with _open(pair.a, "a0", family) as tx, _open(pair.b, "b0", family) as rx:
        payload = encode(_advert(version, vip), src, dst)
        tx.send(payload, src, dst)
        got = _recv(rx)
        assert got is not None
        assert got == Received(payload, src, dst, 255)
        assert rx.recv() is None
        assert tx.recv() is None  # multicast loop is off: no echo of our own advert
        decoded = decode(got.payload, version=version, src=got.src, dst=got.dst, hop_limit=255)
        assert decoded.advert == _advert(version, vip)
        return got


@pytest.mark.parametrize("version", [2, 3])
def test_ipv4_multicast_advert(pair: Pair, version: int) -> None:
    with Capture(pair.b, "b0") as cap:
        _roundtrip(pair, socket.AF_INET, version, "10.9.0.100", src=A4, dst=VRRP_GROUP_V4)
        frame = cap.wait(lambda f: f[12:14] == b"\x08\x00" and f[23] == 112)
    assert frame[:6] == bytes.fromhex("01005e000012")
    assert frame[15] == 0xC0  # TOS internetwork control
    assert frame[22] == 255  # TTL


def test_ipv6_multicast_advert(pair: Pair) -> None:
    with Capture(pair.b, "b0") as cap:
        _roundtrip(pair, socket.AF_INET6, 3, "fd00::100", src=pair.ll_a, dst=VRRP_GROUP_V6)
        frame = cap.wait(lambda f: f[12:14] == b"\x86\xdd" and f[20] == 112)
    assert frame[:6] == bytes.fromhex("333300000012")
    (first_word,) = struct.unpack_from("!I", frame, 14)
    assert (first_word >> 20) & 0xFF == 0xC0  # traffic class
    assert frame[21] == 255  # hop limit


def test_ipv4_unicast(pair: Pair) -> None:
    _roundtrip(pair, socket.AF_INET, 3, "10.9.0.100", src=A4, dst=B4)


def test_ipv6_unicast_to_link_local(pair: Pair) -> None:
    _roundtrip(pair, socket.AF_INET6, 3, "fd00::100", src=pair.ll_a, dst=pair.ll_b)


def test_vip_does_not_change_source(pair: Pair) -> None:
    # Make the VIP the address the kernel would choose: put it first on a0 and re-add the
    # primary after it, so a socket without IP_PKTINFO would send from the VIP.
    pair.lab.ip(pair.a, "-4 addr flush dev a0")
    pair.lab.ip(pair.a, "addr add 10.9.1.100/32 dev a0")
    pair.lab.ip(pair.a, "addr add 10.9.0.1/24 dev a0")
    pair.lab.ip(pair.a, "addr add fd00::100/64 dev a0 nodad")
    got = _roundtrip(pair, socket.AF_INET, 3, "10.9.1.100", src=A4, dst=VRRP_GROUP_V4)
    assert got.src == A4
    got6 = _roundtrip(pair, socket.AF_INET6, 3, "fd00::100", src=pair.ll_a, dst=VRRP_GROUP_V6)
    assert got6.src == pair.ll_a
    # The control: the kernel's own choice really is the VIP.
    with inside(pair.a):
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"a0")
        probe.connect((str(VRRP_GROUP_V4), 9))
        assert probe.getsockname()[0] == "10.9.1.100"
        probe.close()


@pytest.mark.parametrize(
    ("family", "group", "other_group"),
    [
        (socket.AF_INET, "224.0.0.18", "224.0.0.19"),
        (socket.AF_INET6, "ff02::12", "ff02::13"),
    ],
)
def test_multicast_all_off(pair: Pair, family: int, group: str, other_group: str) -> None:
    """A group joined on the same interface by *another* socket must not reach us.

    With the Linux default IP_MULTICAST_ALL=1, a raw socket receives datagrams for every group
    any socket joined; a plain raw socket serves as the control that the test can tell.
    """
    level = socket.IPPROTO_IP if family == socket.AF_INET else socket.IPPROTO_IPV6
    src: IPAddress = A4 if family == socket.AF_INET else pair.ll_a
    dst = ip_address(other_group)
    with inside(pair.b):
        ifindex = socket.if_nametoindex("b0")
        joiner = socket.socket(family, socket.SOCK_DGRAM)
        if family == socket.AF_INET:
            mreq = struct.pack("=4s4si", dst.packed, bytes(4), ifindex)
            joiner.setsockopt(level, socket.IP_ADD_MEMBERSHIP, mreq)
        else:
            mreq6 = struct.pack("=16si", dst.packed, ifindex)
            joiner.setsockopt(level, socket.IPV6_JOIN_GROUP, mreq6)
        control = socket.socket(family, socket.SOCK_RAW, 112)
        control.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"b0")
        control.setblocking(False)
    with joiner, control, _open(pair.a, "a0", family) as tx, _open(pair.b, "b0", family) as rx:
        tx.send(
            encode(_advert(3, "10.9.0.100" if family == socket.AF_INET else "fd00::100"), src, dst),
            src,
            dst,
        )
        assert select.select([control], [], [], 2.0)[0], "control socket saw nothing"
        # Same datagram, same interface, but we asked only for `group`.
        assert _recv(rx, timeout=0.2) is None
        assert group != other_group
        option = IP_MULTICAST_ALL if family == socket.AF_INET else IPV6_MULTICAST_ALL
        with socket.fromfd(rx.fileno(), family, socket.SOCK_RAW) as dup:
            assert dup.getsockopt(level, option) == 0


def test_socket_on_other_interface_hears_nothing(pair: Pair) -> None:
    pair.lab.veth(pair.a, "a1", pair.b, "b1")
    with _open(pair.a, "a0", socket.AF_INET) as tx, _open(pair.b, "b1", socket.AF_INET) as rx1:
        rx0 = _open(pair.b, "b0", socket.AF_INET)
        with rx0:
            tx.send(encode(_advert(3, "10.9.0.100"), A4, VRRP_GROUP_V4), A4, VRRP_GROUP_V4)
            assert _recv(rx0) is not None
            assert _recv(rx1, timeout=0.2) is None


def test_ipv6_bad_checksum_dropped_by_kernel(pair: Pair) -> None:
    """IPV6_CHECKSUM makes the kernel verify the checksum and drop bad adverts."""
    payload = bytearray(encode(_advert(3, "fd00::100"), pair.ll_a, VRRP_GROUP_V6))
    payload[6] ^= 0xFF
    with inside(pair.a):
        raw = socket.socket(socket.AF_INET6, socket.SOCK_RAW, 112)  # no IPV6_CHECKSUM
        ifindex = socket.if_nametoindex("a0")
        raw.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
        raw.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
    with raw, _open(pair.b, "b0", socket.AF_INET6) as rx:
        raw.sendto(bytes(payload), (str(VRRP_GROUP_V6), 0, 0, ifindex))
        assert _recv(rx, timeout=0.3) is None
        payload[6] ^= 0xFF  # fixed again: now it arrives, proving the path works
        raw.sendto(bytes(payload), (str(VRRP_GROUP_V6), 0, 0, ifindex))
        got = _recv(rx)
        assert got is not None
        assert got.payload == bytes(payload)


def test_wrong_family_and_interface() -> None:
    with pytest.raises(ValueError):
        VrrpSocket("lo", socket.AF_PACKET)
    with pytest.raises(NetError):
        VrrpSocket("no-such-if0", socket.AF_INET)
