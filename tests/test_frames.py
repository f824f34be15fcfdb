"""GARP and unsolicited NA frames: golden frames captured from keepalived 2.2.7
(semantics.md appendix) and scapy as an independent dissector."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6
from scapy.layers.l2 import ARP, Ether

from drbdha.net.frames import ARP_REPLY, build_garp, build_unsolicited_na
from drbdha.vrrp.packet import internet_checksum

GOLDEN_GARP = bytes.fromhex(
    "ffffffffffff d20d37309f65 0806 0001 0800 06 04 0001 d20d37309f65 0a090064"
    " ffffffffffff 0a090064"
)
# The appendix abbreviates the addresses; written out in full here.
GOLDEN_NA = bytes.fromhex(
    "333300000001 1a1333835232 86dd 60000000 0020 3a ff"
    " fd000000000000000000000000000100 ff020000000000000000000000000001"
    " 88 00 bad5 20000000 fd000000000000000000000000000100 02 01 1a1333835232"
)

macs = st.binary(min_size=6, max_size=6)


def test_garp_matches_keepalived() -> None:
    assert build_garp(bytes.fromhex("d20d37309f65"), IPv4Address("10.9.0.100")) == GOLDEN_GARP


def test_na_matches_keepalived() -> None:
    frame = build_unsolicited_na(bytes.fromhex("1a1333835232"), IPv6Address("fd00::100"))
    assert frame == GOLDEN_NA


@given(mac=macs, ip=st.ip_addresses(v=4))
def test_garp_dissects_in_scapy(mac: bytes, ip: IPv4Address) -> None:
    pkt = Ether(build_garp(mac, ip))
    arp = pkt[ARP]
    assert pkt.dst == "ff:ff:ff:ff:ff:ff"
    assert pkt.src == arp.hwsrc == _mac_str(mac)
    assert arp.op == 1  # who-has: a request
    assert arp.psrc == arp.pdst == str(ip)
    assert arp.hwdst == "ff:ff:ff:ff:ff:ff"
    assert (arp.hwtype, arp.ptype, arp.hwlen, arp.plen) == (1, 0x0800, 6, 4)


def test_garp_reply_variant() -> None:
    pkt = Ether(build_garp(bytes.fromhex("d20d37309f65"), IPv4Address("10.9.0.100"), op=ARP_REPLY))
    assert pkt[ARP].op == 2


@given(mac=macs, ip=st.ip_addresses(v=6), router=st.booleans())
def test_na_dissects_in_scapy(mac: bytes, ip: IPv6Address, router: bool) -> None:
    frame = build_unsolicited_na(mac, ip, router=router)
    pkt = Ether(frame)
    assert pkt.dst == "33:33:00:00:00:01"
    assert pkt.src == _mac_str(mac)
    ip6 = pkt[IPv6]
    assert IPv6Address(ip6.src) == ip
    assert (ip6.dst, ip6.hlim, ip6.nh, ip6.plen) == ("ff02::1", 255, 58, 32)
    na = pkt[ICMPv6ND_NA]
    assert (int(router), 0, 1) == (na.R, na.S, na.O)
    assert IPv6Address(na.tgt) == ip
    assert pkt[ICMPv6NDOptDstLLAddr].lladdr == _mac_str(mac)
    # scapy recomputes the checksum when the field is deleted; it must agree with ours.
    rebuilt = pkt.copy()
    del rebuilt[ICMPv6ND_NA].cksum
    assert Ether(bytes(rebuilt))[ICMPv6ND_NA].cksum == na.cksum
    # And independently: the pseudo-header sum over a correct message is zero.
    icmp = frame[54:]
    all_nodes = bytes.fromhex("ff02" + "00" * 13 + "01")
    pseudo = ip.packed + all_nodes + bytes([0, 0, 0, 32, 0, 0, 0, 58])
    assert internet_checksum(pseudo + icmp) == 0


@pytest.mark.parametrize("mac", [b"", b"\x00" * 5, b"\x00" * 7])
def test_bad_mac_rejected(mac: bytes) -> None:
    with pytest.raises(ValueError):
        build_garp(mac, IPv4Address("10.0.0.1"))
    with pytest.raises(ValueError):
        build_unsolicited_na(mac, IPv6Address("fd00::1"))


def _mac_str(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)
