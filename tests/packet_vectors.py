"""The golden VRRP vectors (tests/vectors/*.txt, see tests/vectors/README) as the codec tests
read them: test_packet drives encode, decode and their variants from them, test_packet_oracles
holds them against scapy; both check checksums against the RFC 1071 reference here."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

import pytest

from drbdha.vrrp.packet import Advertisement, Decoded, decode

IPAddress = IPv4Address | IPv6Address
VECTOR_DIR = Path(__file__).parent / "vectors"
GROUP4 = IPv4Address("224.0.0.18")
GROUP6 = IPv6Address("ff02::12")


@dataclass(frozen=True)
class Vector:
    name: str
    intent: str
    src: IPAddress
    dst: IPAddress
    mode: str
    wire: bytes
    decoded: Decoded

    @property
    def version(self) -> int:
        return self.decoded.advert.version


def _parse_fields(line: str) -> Decoded:
    fields = dict(item.split("=", 1) for item in line.split())
    assert set(fields) == {"version", "vrid", "priority", "interval", "addresses", "form"}, line
    addresses = tuple(ip_address(a) for a in fields["addresses"].split(",") if a)
    advert = Advertisement(
        version=int(fields["version"]),
        vrid=int(fields["vrid"]),
        priority=int(fields["priority"]),
        interval=int(fields["interval"]),
        addresses=addresses,
    )
    return Decoded(advert, fields["form"])


def _load_vector(path: Path) -> Vector:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    assert len(lines) == 4, f"{path.name}: want intent, addresses, hex, fields"
    intent, addrs, hexline, fields = lines
    assert intent.startswith("# intent"), path.name
    src, dst, mode = addrs.split()
    return Vector(
        name=path.stem,
        intent=intent,
        src=ip_address(src),
        dst=ip_address(dst),
        mode=mode,
        wire=bytes.fromhex("".join(hexline.split())),
        decoded=_parse_fields(fields),
    )


VECTORS = [_load_vector(p) for p in sorted(VECTOR_DIR.glob("*.txt"))]
BY_NAME = {v.name: v for v in VECTORS}
vectors = pytest.mark.parametrize("vec", VECTORS, ids=[v.name for v in VECTORS])


def _decode(vec: Vector, wire: bytes, hop_limit: int | None = 255) -> Decoded:
    return decode(wire, version=vec.version, src=vec.src, dst=vec.dst, hop_limit=hop_limit)


def _reference_checksum(data: bytes) -> int:
    """RFC 1071 written out: big-endian 16-bit words, end-around carry, complement."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += data[i] << 8 | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _pseudo_header(src: IPAddress, dst: IPAddress, length: int) -> bytes:
    if src.version == 4:  # RFC 768 style, as keepalived/FRR/scapy use for VRRPv3 over IPv4
        return src.packed + dst.packed + bytes([0, 112]) + length.to_bytes(2, "big")
    return src.packed + dst.packed + length.to_bytes(4, "big") + bytes([0, 0, 0, 112])  # RFC 8200
