"""Protocol numbers from RFC 3768 (VRRPv2) and RFC 5798 / RFC 9568 (VRRPv3)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from typing import Final

IPPROTO_VRRP: Final = 112
VRRP_GROUP_V4: Final = IPv4Address("224.0.0.18")
VRRP_GROUP_V6: Final = IPv6Address("ff02::12")
# RFC 5798 §5.1.1.3 / §5.1.2.3: adverts are sent with TTL / hop limit 255 and a receiver
# discards anything else, so an advert cannot have crossed a router.
VRRP_TTL: Final = 255
# RFC 5798 §5.1: type 1 is the only defined message type.
ADVERTISEMENT: Final = 1
PRIORITY_OWNER: Final = 255  # the address owner, §6.1
PRIORITY_RESIGN: Final = 0  # "stop participating", §6.4.3
V2_AUTH_DATA_LEN: Final = 8  # RFC 3768 §5.3.10/11: authentication data, zero for type 0
V3_MAX_INTERVAL_CS: Final = 0x0FFF  # 12-bit Max Adver Int in centiseconds
