"""Pure builders for the frames that move a VIP: gratuitous ARP and unsolicited NA.

Building is split from sending (FRR vrrpd vrrp_arp.c / vrrp_ndisc.c): these functions return
whole Ethernet frames and are unit tested against frames captured from keepalived 2.2.7
(semantics.md §B5 and its appendix). frame_sender.FrameSender puts them on the wire.

keepalived's choices, copied here (semantics.md §B5):
  * GARP is an ARP *request* to the Ethernet broadcast address with sender = target = VIP and
    target MAC ff:ff:ff:ff:ff:ff. Receivers update their caches from the sender fields, so the
    other variants (zero target MAC, ARP reply) work too; `op` selects request or reply.
  * The unsolicited NA goes from the VIP to ff02::1 with hop limit 255 (RFC 4861 §7.1.2
    receivers drop anything else), flags O only (R=0: an NFS host is not a router, S=0: it is
    unsolicited) and a target link-layer address option carrying the MAC.
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address
from typing import Final

from drbdha.vrrp.packet import internet_checksum

ETH_P_ARP: Final = 0x0806
ETH_P_IPV6: Final = 0x86DD
ARP_REQUEST: Final = 1
ARP_REPLY: Final = 2
ETH_BROADCAST: Final = b"\xff" * 6
ALL_NODES: Final = IPv6Address("ff02::1")
ALL_NODES_MAC: Final = bytes.fromhex("333300000001")  # RFC 2464 §7: 33:33 + low 32 bits

IPPROTO_ICMPV6: Final = 58
ND_NEIGHBOR_ADVERT: Final = 136
NA_FLAG_ROUTER: Final = 0x80000000
NA_FLAG_SOLICITED: Final = 0x40000000
NA_FLAG_OVERRIDE: Final = 0x20000000
ND_OPT_TARGET_LINKADDR: Final = 2

# struct ethhdr { u8 h_dest[6]; u8 h_source[6]; be16 h_proto; }
_ETH = struct.Struct("!6s6sH")
# struct arphdr { be16 ar_hrd; be16 ar_pro; u8 ar_hln; u8 ar_pln; be16 ar_op; }
# followed, for Ethernet/IPv4, by sha[6] spa[4] tha[6] tpa[4]
_ARP = struct.Struct("!HHBBH6s4s6s4s")
# struct ipv6hdr { be32 ver:4|tclass:8|flow:20; be16 payload_len; u8 nexthdr; u8 hop_limit;
#                  in6_addr saddr; in6_addr daddr; }
_IPV6 = struct.Struct("!IHBB16s16s")
# struct nd_msg { struct icmp6hdr { u8 type; u8 code; sum16 csum; be32 flags; };
#                 in6_addr target; u8 opt[]; }  with opt = { u8 type; u8 len (8-byte units);
#                 u8 lladdr[6]; }
_NA = struct.Struct("!BBHI16sBB6s")


def _check_mac(mac: bytes) -> None:
    if len(mac) != 6:
        raise ValueError(f"MAC must be 6 bytes, got {len(mac)}")


def build_garp(mac: bytes, ip: IPv4Address, *, op: int = ARP_REQUEST) -> bytes:
    """Gratuitous ARP announcing that `ip` is at `mac` (42 bytes; the NIC pads to 60)."""
    _check_mac(mac)
    eth = _ETH.pack(ETH_BROADCAST, mac, ETH_P_ARP)
    # ar_hrd 1 = ARPHRD_ETHER, ar_pro = ETH_P_IP, hln 6, pln 4
    arp = _ARP.pack(1, 0x0800, 6, 4, op, mac, ip.packed, ETH_BROADCAST, ip.packed)
    return eth + arp


def build_unsolicited_na(mac: bytes, ip: IPv6Address, *, router: bool = False) -> bytes:
    """Unsolicited Neighbor Advertisement (RFC 4861 §7.2.6) that `ip` is at `mac`."""
    _check_mac(mac)
    flags = NA_FLAG_OVERRIDE | (NA_FLAG_ROUTER if router else 0)
    icmp = _NA.pack(ND_NEIGHBOR_ADVERT, 0, 0, flags, ip.packed, ND_OPT_TARGET_LINKADDR, 1, mac)
    # RFC 4443 §2.3: checksum over the RFC 8200 §8.1 pseudo-header and the message.
    pseudo = ip.packed + ALL_NODES.packed + struct.pack("!I3xB", len(icmp), IPPROTO_ICMPV6)
    csum = internet_checksum(pseudo + icmp)
    icmp = icmp[:2] + struct.pack("!H", csum) + icmp[4:]
    ipv6 = _IPV6.pack(6 << 28, len(icmp), IPPROTO_ICMPV6, 255, ip.packed, ALL_NODES.packed)
    return _ETH.pack(ALL_NODES_MAC, mac, ETH_P_IPV6) + ipv6 + icmp
