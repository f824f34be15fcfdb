"""VRRP advertisement codec (RFC 3768 §5 for v2, RFC 5798 §5 for v3).

The codec checks only the packet itself: length, version, type, address count, checksum and
hop limit. Every failure raises MalformedPacket with a reason from MALFORMED_REASONS, which
the daemon uses as a counter label. Policy (VRID, interval mismatch, priority, peers) belongs
to the state machine.

Intervals are in wire units: whole seconds for v2, centiseconds for v3.
"""

from __future__ import annotations

import functools
import struct
import sys
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Final, Literal

from drbdha.errors import MalformedPacket
from drbdha.vrrp.constants import (
    ADVERTISEMENT,
    IPPROTO_VRRP,
    V2_AUTH_DATA_LEN,
    V3_MAX_INTERVAL_CS,
    VRRP_GROUP_V4,
    VRRP_TTL,
)

IPAddress = IPv4Address | IPv6Address
ChecksumMode = Literal["pseudo", "rfc9568"]

MALFORMED_REASONS: Final = (
    "length",  # shorter than a header, or addresses cut short
    "ttl",  # TTL / hop limit is not 255
    "version",  # not the configured version (or v2 over IPv6)
    "type",  # message type is not ADVERTISEMENT
    "count",  # Count IPvX Addr disagrees with the addresses present
    "auth",  # v2 authentication type other than 0 (none)
    "interval",  # advertisement interval of zero
    "checksum",  # neither valid checksum form matches
)

# ver|type, vrid, priority, count, a 16-bit word, checksum. The word is AuthType(8)|AdverInt(8)
# in v2 and Rsvd(4)|MaxAdverInt(12) in v3: the v3 interval spans both bytes.
_HEADER = struct.Struct("!BBBBHH")
_HEADER_LEN: Final = _HEADER.size


@dataclass(frozen=True, slots=True)
class Advertisement:
    """One VRRP advertisement. `interval` is seconds for v2, centiseconds for v3."""

    version: int
    vrid: int
    priority: int
    interval: int
    addresses: tuple[IPAddress, ...]

    @property
    def interval_seconds(self) -> float:
        return float(self.interval) if self.version == 2 else self.interval / 100


@dataclass(frozen=True, slots=True)
class Decoded:
    advert: Advertisement
    # Which checksum form matched: "v2" (message only, the only v2 form), "pseudo" (IPv4/IPv6
    # pseudo-header), "rfc9568" (v3 IPv4 message only, RFC 9568 §5.2.8) or "legacy_unicast"
    # (v3 IPv4 unicast with 224.0.0.18 in the pseudo-header, old keepalived).
    checksum_form: str


def internet_checksum(data: bytes) -> int:
    """RFC 1071 checksum. The one's complement sum is byte-order independent, so the words
    are summed in native order (fast, via memoryview) and swapped once at the end."""
    if len(data) % 2:
        data += b"\0"
    total = sum(memoryview(data).cast("H"))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    result = ~total & 0xFFFF
    if sys.byteorder == "little":
        result = ((result >> 8) | (result << 8)) & 0xFFFF
    return result


def _pseudo_header(src: IPAddress, dst: IPAddress, length: int) -> bytes:
    if src.version == 4:
        return src.packed + dst.packed + struct.pack("!BBH", 0, IPPROTO_VRRP, length)
    return src.packed + dst.packed + struct.pack("!I3xB", length, IPPROTO_VRRP)


def _checksum(
    message: bytes, version: int, src: IPAddress, dst: IPAddress, mode: ChecksumMode
) -> int:
    """Checksum of `message` (its checksum field zeroed) in the given form."""
    if version == 2 or (mode == "rfc9568" and src.version == 4):
        return internet_checksum(message)
    return internet_checksum(_pseudo_header(src, dst, len(message)) + message)


def encode(
    advert: Advertisement,
    src: IPAddress,
    dst: IPAddress,
    checksum_mode: ChecksumMode = "pseudo",
) -> bytes:
    """Serialise `advert` as sent from `src` to `dst` (needed for the pseudo-header)."""
    body = b"".join(a.packed for a in advert.addresses)
    if advert.version == 2:
        body += bytes(V2_AUTH_DATA_LEN)
    # v2: auth type 0 (none) above an 8-bit interval; v3: reserved 0 above a 12-bit interval.
    limit = 0xFF if advert.version == 2 else V3_MAX_INTERVAL_CS
    if not 0 <= advert.interval <= limit:  # never mask: a truncated interval would go out
        raise ValueError(f"interval {advert.interval} does not fit the v{advert.version} field")
    header = _HEADER.pack(
        advert.version << 4 | ADVERTISEMENT,
        advert.vrid,
        advert.priority,
        len(advert.addresses),
        advert.interval,
        0,
    )
    message = header + body
    csum = _checksum(message, advert.version, src, dst, checksum_mode)
    return message[:6] + struct.pack("!H", csum) + message[8:]


def message_length(payload: bytes, version: int, family: int) -> int | None:
    """The length of the VRRP message at the start of `payload` as its address count says
    (None: too short to say); what follows it is a trailer (auth_hmac) or garbage."""
    if len(payload) < _HEADER_LEN:
        return None
    return _message_size(version, family, payload[3])


def _message_size(version: int, family: int, count: int) -> int:
    size = 4 if family == 4 else 16
    return _HEADER_LEN + count * size + (V2_AUTH_DATA_LEN if version == 2 else 0)


def advert_size(version: int, family: int, count: int, trailer: int = 0) -> int:
    """Bytes of one advert above the link layer (what the interface MTU must hold): the IP
    header without options, the message with `count` addresses, and a `trailer` (auth_hmac's
    28 bytes follow the addresses)."""
    return (20 if family == 4 else 40) + _message_size(version, family, count) + trailer


def decode(
    payload: bytes,
    *,
    version: int,
    src: IPAddress,
    dst: IPAddress,
    hop_limit: int | None,
    checksummed: bytes | None = None,
) -> Decoded:
    """Parse and check one VRRP message. `hop_limit` None skips the TTL check (the kernel
    already verified it, or the caller has none). `checksummed`: what the checksum covers
    when that is more than the message (IPv6 with an auth_hmac trailer)."""
    if hop_limit is not None and hop_limit != VRRP_TTL:
        raise MalformedPacket("ttl", f"{hop_limit}")
    if len(payload) < _HEADER_LEN:
        raise MalformedPacket("length", f"{len(payload)} bytes")
    ver_type, vrid, priority, count, word, _ = _HEADER.unpack_from(payload)
    wire_version = ver_type >> 4
    if wire_version != version or (version == 2 and src.version == 6):
        raise MalformedPacket("version", f"{wire_version}")
    if ver_type & 0x0F != ADVERTISEMENT:
        raise MalformedPacket("type", f"{ver_type & 0x0F}")
    addresses = _addresses(payload, version, src.version, count)
    if version == 2:
        auth_type, interval = word >> 8, word & 0xFF
        if auth_type != 0:
            raise MalformedPacket("auth", f"type {auth_type}")
    else:
        interval = word & V3_MAX_INTERVAL_CS  # the top 4 bits are reserved
    if interval == 0:
        raise MalformedPacket("interval", "0")
    form = _verify_checksum(checksummed or payload, version, src, dst)
    return Decoded(Advertisement(version, vrid, priority, interval, addresses), form)


def _addresses(payload: bytes, version: int, family: int, count: int) -> tuple[IPAddress, ...]:
    size = 4 if family == 4 else 16
    trailer = V2_AUTH_DATA_LEN if version == 2 else 0
    room = len(payload) - _HEADER_LEN - trailer
    if room < 0 or room % size:
        raise MalformedPacket("length", f"{len(payload)} bytes")
    if room // size != count:
        raise MalformedPacket("count", f"count {count}, {room // size} present")
    start = _HEADER_LEN
    return tuple(
        ip_address(payload[start + i * size : start + (i + 1) * size]) for i in range(count)
    )


def _verify_checksum(payload: bytes, version: int, src: IPAddress, dst: IPAddress) -> str:
    # A checksum over data that includes a correct checksum sums to zero (RFC 1071).
    if version == 2:
        if internet_checksum(payload) == 0:
            return "v2"
    elif internet_checksum(_pseudo_header(src, dst, len(payload)) + payload) == 0:
        return "pseudo"
    elif src.version == 4 and internet_checksum(payload) == 0:
        # RFC 9568 and some vendors checksum the v3 IPv4 message alone; accept either form.
        return "rfc9568"
    elif (
        src.version == 4
        and dst != VRRP_GROUP_V4
        and internet_checksum(_pseudo_header(src, VRRP_GROUP_V4, len(payload)) + payload) == 0
    ):
        # keepalived before 1.3.6 (and later ones with `old_unicast_checksum`) put the group
        # address in the pseudo-header of unicast adverts too.
        return "legacy_unicast"
    raise MalformedPacket("checksum")


@dataclass(frozen=True, slots=True)
class IPv4Datagram:
    src: IPv4Address
    dst: IPv4Address
    ttl: int
    payload: bytes


def split_ipv4(datagram: bytes) -> IPv4Datagram:
    """Split what a raw IPv4 socket delivers (the IP header comes with it) into its parts."""
    if len(datagram) < 20:
        raise MalformedPacket("length", "short IPv4 header")
    ihl = (datagram[0] & 0x0F) * 4
    total = struct.unpack_from("!H", datagram, 2)[0]
    if ihl < 20 or len(datagram) < ihl or total > len(datagram) or total < ihl:
        raise MalformedPacket("length", "bad IPv4 header")
    return IPv4Datagram(
        src=_ipv4(datagram[12:16]),
        dst=_ipv4(datagram[16:20]),
        ttl=datagram[8],
        payload=datagram[ihl:total],
    )


# The same few addresses arrive in every datagram (the master's, the group): IPv4Address is
# immutable, so one object per address serves them all instead of one parse per packet.
# Bounded: spoofed sources must not grow it without bound.
_ipv4 = functools.lru_cache(maxsize=1024)(IPv4Address)
