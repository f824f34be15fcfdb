"""The VRRP codec against golden vectors, generated variants, properties and scapy.

One table (tests/vectors/*.txt, see tests/vectors/README) drives encode and decode in both
directions, and the truncated and one-bit-flipped variants. scapy is an independent oracle:
it dissects what we build and builds adverts that we decode.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.layers.vrrp import VRRP, VRRPv3
from scapy.utils import checksum as scapy_checksum

from drbdha.errors import MalformedPacket
from drbdha.vrrp.packet import (
    MALFORMED_REASONS,
    Advertisement,
    Decoded,
    decode,
    encode,
    internet_checksum,
    split_ipv4,
)

IPAddress = IPv4Address | IPv6Address
VECTOR_DIR = Path(__file__).parent / "vectors"
GROUP4 = IPv4Address("224.0.0.18")
GROUP6 = IPv6Address("ff02::12")


# ---- the golden table -------------------------------------------------------------------


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


def test_table_covers_semantics_b3() -> None:
    # Every golden case of semantics.md §B3 is present; a deleted file must fail loudly.
    assert set(BY_NAME) == {
        "v2_advert",
        "v2_prio0",
        "v3_pseudo",
        "v3_prio0_pseudo",
        "v3_msgonly",
        "v3_prio0_msgonly",
        "v3_unicast_pseudo",
        "v3_unicast_msgonly",
        "v3_unicast_oldmcast",
        "v3_ipv6",
        "v3_rfc9568_ka_test",
    }
    checksums = {v.name: v.wire[6:8].hex() for v in VECTORS}
    assert checksums == {
        "v2_advert": "705d",
        "v2_prio0": "d45d",
        "v3_pseudo": "115f",
        "v3_prio0_pseudo": "d95f",
        "v3_msgonly": "fbf7",
        "v3_prio0_msgonly": "c3f8",
        "v3_unicast_pseudo": "3764",
        "v3_unicast_msgonly": "4bf5",
        "v3_unicast_oldmcast": "615c",
        "v3_ipv6": "9f7d",
        "v3_rfc9568_ka_test": "4402",
    }


@vectors
def test_encode(vec: Vector) -> None:
    assert encode(vec.decoded.advert, vec.src, vec.dst, vec.mode).hex() == vec.wire.hex()


@vectors
def test_decode(vec: Vector) -> None:
    assert _decode(vec, vec.wire) == vec.decoded


@vectors
def test_decode_without_hop_limit_check(vec: Vector) -> None:
    # hop_limit=None: the kernel checked it (IPv6) or the caller has none.
    assert _decode(vec, vec.wire, hop_limit=None) == vec.decoded


@vectors
def test_decode_ttl_254_is_rejected_first(vec: Vector) -> None:
    with pytest.raises(MalformedPacket) as exc:
        _decode(vec, vec.wire, hop_limit=254)
    assert exc.value.reason == "ttl"
    # TTL is checked before anything else, even on garbage.
    with pytest.raises(MalformedPacket) as exc:
        _decode(vec, b"", hop_limit=254)
    assert exc.value.reason == "ttl"


@vectors
def test_interval_seconds(vec: Vector) -> None:
    want = {2: 1.0, 3: 1.0}[vec.version]  # every vector advertises 1 s (v2) or 100 cs (v3)
    assert vec.decoded.advert.interval_seconds == want


def test_v3_ipv4_both_forms_accepted_and_reported() -> None:
    pseudo, msgonly = BY_NAME["v3_pseudo"], BY_NAME["v3_msgonly"]
    assert pseudo.decoded.advert == msgonly.decoded.advert
    assert _decode(pseudo, pseudo.wire).checksum_form == "pseudo"
    assert _decode(pseudo, msgonly.wire).checksum_form == "rfc9568"


def test_ipv6_has_no_message_only_form() -> None:
    vec = BY_NAME["v3_ipv6"]
    # rfc9568 mode is IPv4 only: for IPv6 encode still uses the pseudo-header.
    assert encode(vec.decoded.advert, vec.src, vec.dst, "rfc9568") == vec.wire
    msg = bytearray(vec.wire)
    msg[6:8] = b"\0\0"
    msg[6:8] = internet_checksum(bytes(msg)).to_bytes(2, "big")
    with pytest.raises(MalformedPacket) as exc:
        _decode(vec, bytes(msg))
    assert exc.value.reason == "checksum"


def test_unicast_accepts_old_keepalived_group_pseudo_header() -> None:
    real, old = BY_NAME["v3_unicast_pseudo"], BY_NAME["v3_unicast_oldmcast"]
    assert real.dst == IPv4Address("10.9.0.2")
    assert old.dst == GROUP4
    # keepalived < 1.3.6 (or `old_unicast_checksum`) checksums unicast adverts with the group
    # in the pseudo-header: accepted on a unicast destination and reported as such.
    got = _decode(real, old.wire)
    assert got.checksum_form == "legacy_unicast"
    assert got.advert == real.decoded.advert
    # The current unicast form is not valid against the multicast group, and the legacy form
    # is never a reason to accept a bad checksum sent to the group itself.
    with pytest.raises(MalformedPacket) as exc:
        _decode(old, real.wire)
    assert exc.value.reason == "checksum"
    broken = bytearray(old.wire)
    broken[6] ^= 0x01
    with pytest.raises(MalformedPacket) as exc:
        _decode(real, bytes(broken))
    assert exc.value.reason == "checksum"


def test_message_only_form_ignores_addresses() -> None:
    vec = BY_NAME["v3_rfc9568_ka_test"]
    other = IPv4Address("10.1.2.3")
    assert encode(vec.decoded.advert, other, other, "rfc9568") == vec.wire
    got = decode(vec.wire, version=3, src=other, dst=GROUP4, hop_limit=255)
    assert got == vec.decoded


# ---- full IPv4 frames from the appendix, through split_ipv4 ---------------------------------

ETH_V2_ADVERT = "01005e000012d20d37309f650800"
APPENDIX_IPV4 = {
    # name of the vector the payload must equal -> IPv4 header as captured
    "v2_advert": "45c0002800010000ff70d0880a090001e0000012",
    "v2_prio0": "45c0002800050000ff70d0840a090001e0000012",
    "v3_pseudo": "45c0002000010000ff70d0900a090001e0000012",
    "v3_unicast_pseudo": "45c0002000010000ff70a6980a0900010a090002",
}
appendix = pytest.mark.parametrize("name", sorted(APPENDIX_IPV4))


@appendix
def test_appendix_frame_split_ipv4(name: str) -> None:
    vec = BY_NAME[name]
    header = bytes.fromhex(APPENDIX_IPV4[name])
    dgram = split_ipv4(header + vec.wire)
    assert dgram.ttl == 255
    assert dgram.src == IPv4Address("10.9.0.1")
    assert dgram.dst == vec.dst
    assert dgram.payload == vec.wire
    assert header[1] == 0xC0  # TOS internetwork control
    assert header[9] == 112  # IPPROTO_VRRP
    assert internet_checksum(header) == 0  # the captured IP header checksum is valid
    got = decode(
        dgram.payload, version=vec.version, src=dgram.src, dst=dgram.dst, hop_limit=dgram.ttl
    )
    assert got == vec.decoded


@appendix
def test_appendix_frame_with_ethernet_padding(name: str) -> None:
    # A short frame is padded to 60 bytes on the wire: the IP total length is what counts.
    vec = BY_NAME[name]
    ip = bytes.fromhex(APPENDIX_IPV4[name]) + vec.wire
    padded = ip + bytes(max(0, 60 - 14 - len(ip)) + 4)
    assert split_ipv4(padded).payload == vec.wire


def test_appendix_v2_ethernet_frame() -> None:
    frame = bytes.fromhex(ETH_V2_ADVERT + APPENDIX_IPV4["v2_advert"]) + BY_NAME["v2_advert"].wire
    assert frame[:6] == bytes.fromhex("01005e000012")  # 224.0.0.18 multicast MAC
    assert frame[12:14] == b"\x08\x00"
    dgram = split_ipv4(frame[14:])
    assert (dgram.src, dgram.dst, dgram.ttl) == (IPv4Address("10.9.0.1"), GROUP4, 255)


@appendix
def test_split_ipv4_truncated_is_length(name: str) -> None:
    ip = bytes.fromhex(APPENDIX_IPV4[name]) + BY_NAME[name].wire
    for n in range(len(ip)):
        with pytest.raises(MalformedPacket) as exc:
            split_ipv4(ip[:n])
        assert exc.value.reason == "length", n


def test_split_ipv4_bad_ihl_is_length() -> None:
    ip = bytearray.fromhex(APPENDIX_IPV4["v3_pseudo"]) + BY_NAME["v3_pseudo"].wire
    ip[0] = 0x44  # IHL 16 bytes < 20
    with pytest.raises(MalformedPacket) as exc:
        split_ipv4(bytes(ip))
    assert exc.value.reason == "length"


def test_split_ipv4_honours_options() -> None:
    # IHL 6: one 4-byte option (router alert) between header and payload.
    vec = BY_NAME["v3_pseudo"]
    header = bytearray.fromhex(APPENDIX_IPV4["v3_pseudo"])
    header[0] = 0x46
    header[2:4] = (24 + len(vec.wire)).to_bytes(2, "big")
    dgram = split_ipv4(bytes(header) + bytes.fromhex("94040000") + vec.wire)
    assert dgram.payload == vec.wire


# ---- generated variants of the table ----------------------------------------------------


@vectors
def test_every_truncation_is_length_or_count(vec: Vector) -> None:
    for n in range(len(vec.wire)):
        with pytest.raises(MalformedPacket) as exc:
            _decode(vec, vec.wire[:n])
        assert exc.value.reason in {"length", "count"}, n
    # Cut at an address boundary the count field disagrees; elsewhere the length is wrong.
    addr_len = 4 if vec.src.version == 4 else 16
    trailer = 8 if vec.version == 2 else 0
    boundary = len(vec.wire) - trailer - addr_len
    with pytest.raises(MalformedPacket) as exc:
        _decode(vec, vec.wire[:boundary] + vec.wire[len(vec.wire) - trailer :])
    assert exc.value.reason == "count"
    with pytest.raises(MalformedPacket) as exc:
        _decode(vec, vec.wire[:-1])
    assert exc.value.reason == "length"


@vectors
def test_trailing_byte_is_length(vec: Vector) -> None:
    with pytest.raises(MalformedPacket) as exc:
        _decode(vec, vec.wire + b"\0")
    assert exc.value.reason == "length"


def _flip_expectation(vec: Vector, wire: bytes, bit: int) -> str:
    """The reason decode() must give for `wire`, `vec.wire` with `bit` flipped (0 = MSB)."""
    byte = bit // 8
    if byte == 0:
        return "version" if bit < 4 else "type"
    if byte == 3:
        return "count"
    if vec.version == 2 and byte == 4:
        return "auth"
    interval = wire[5] if vec.version == 2 else int.from_bytes(wire[4:6], "big") & 0x0FFF
    if byte in {4, 5} and interval == 0:
        return "interval"
    # A one's complement sum detects every single-bit error (RFC 1071).
    return "checksum"


@vectors
def test_every_flipped_bit_is_detected(vec: Vector) -> None:
    seen = set()
    for bit in range(len(vec.wire) * 8):
        wire = bytearray(vec.wire)
        wire[bit // 8] ^= 0x80 >> (bit % 8)
        try:
            got = _decode(vec, bytes(wire))
        except MalformedPacket as e:
            assert e.reason in MALFORMED_REASONS
            assert e.reason == _flip_expectation(vec, bytes(wire), bit), bit
            seen.add(e.reason)
        else:  # pragma: no cover - the expectation above says this never happens
            assert got != vec.decoded, bit
    assert {"version", "type", "count", "checksum"} <= seen


def _with_checksum(vec: Vector, msg: bytearray) -> bytes:
    """`msg` with a checksum valid in the vector's own form, so only the tested field is bad."""
    msg[6:8] = b"\0\0"
    data = bytes(msg)
    if vec.decoded.checksum_form == "pseudo":
        data = _pseudo_header(vec.src, vec.dst, len(msg)) + data
    msg[6:8] = _reference_checksum(data).to_bytes(2, "big")
    return bytes(msg)


@pytest.mark.parametrize(
    ("name", "offset", "value", "reason"),
    [
        ("v2_advert", 0, 0x31, "version"),  # a v3 packet where v2 is configured
        ("v3_pseudo", 0, 0x21, "version"),  # and the reverse
        ("v3_ipv6", 0, 0x21, "version"),
        ("v2_advert", 0, 0x11, "version"),
        ("v3_pseudo", 0, 0x41, "version"),
        ("v2_advert", 0, 0x22, "type"),
        ("v3_pseudo", 0, 0x30, "type"),
        ("v3_ipv6", 0, 0x3F, "type"),
        ("v2_advert", 3, 2, "count"),
        ("v2_advert", 3, 0, "count"),
        ("v3_pseudo", 3, 2, "count"),
        ("v3_ipv6", 3, 255, "count"),
        ("v2_advert", 4, 1, "auth"),  # simple text password: removed by RFC 3768
        ("v2_advert", 4, 2, "auth"),  # IP authentication header
        ("v2_advert", 5, 0, "interval"),
        ("v3_pseudo", 5, 0, "interval"),
        ("v3_ipv6", 5, 0, "interval"),
    ],
)
def test_bad_field_gives_its_reason(name: str, offset: int, value: int, reason: str) -> None:
    vec = BY_NAME[name]
    msg = bytearray(vec.wire)
    msg[offset] = value
    with pytest.raises(MalformedPacket) as exc:
        _decode(vec, _with_checksum(vec, msg))
    assert exc.value.reason == reason


@pytest.mark.parametrize(
    ("interval", "wire"),
    [  # v3_pseudo with other intervals; bytes from scapy's VRRPv3 (pseudo-header checksum)
        (256, "3134c801010010c30a090065"),  # 2.56 s: the first that needs the high nibble
        (1000, "3134c80103e80ddb0a090065"),  # 10 s
        (4095, "3134c8010fff01c40a090065"),  # 40.95 s, the maximum
    ],
)
def test_v3_interval_spans_twelve_bits(interval: int, wire: str) -> None:
    # Regression: the 12-bit v3 interval was packed into one byte (struct.error from 2.56 s)
    # and decoded from its low byte only (10 s read back as 2.32 s).
    vec = BY_NAME["v3_pseudo"]
    advert = Advertisement(3, 52, 200, interval, vec.decoded.advert.addresses)
    assert encode(advert, vec.src, vec.dst).hex() == wire
    assert _decode(vec, bytes.fromhex(wire)) == Decoded(advert, "pseudo")
    assert advert.interval_seconds == interval / 100


@pytest.mark.parametrize(("version", "interval"), [(2, 256), (2, -1), (3, 4096), (3, -1)])
def test_encode_refuses_an_interval_the_field_cannot_hold(version: int, interval: int) -> None:
    advert = Advertisement(version, 1, 100, interval, (IPv4Address("192.0.2.1"),))
    with pytest.raises(ValueError, match="interval"):
        encode(advert, IPv4Address("192.0.2.2"), GROUP4)


def test_v3_zero_interval_with_reserved_bits_set() -> None:
    # The top 4 bits of the v3 interval word are reserved; 0xF000 is still a zero interval.
    vec = BY_NAME["v3_pseudo"]
    msg = bytearray(vec.wire)
    msg[4:6] = b"\xf0\x00"
    with pytest.raises(MalformedPacket) as exc:
        _decode(vec, _with_checksum(vec, msg))
    assert exc.value.reason == "interval"


def test_v3_reserved_bits_are_ignored() -> None:
    vec = BY_NAME["v3_pseudo"]
    msg = bytearray(vec.wire)
    msg[4] |= 0xF0
    assert _decode(vec, _with_checksum(vec, msg)) == vec.decoded


def test_v2_over_ipv6_is_version() -> None:
    vec = BY_NAME["v2_advert"]
    with pytest.raises(MalformedPacket) as exc:
        decode(vec.wire, version=2, src=IPv6Address("fe80::1"), dst=GROUP6, hop_limit=255)
    assert exc.value.reason == "version"


def test_bad_checksum() -> None:
    vec = BY_NAME["v2_advert"]
    wire = vec.wire[:6] + b"\x70\x5e" + vec.wire[8:]
    with pytest.raises(MalformedPacket) as exc:
        _decode(vec, wire)
    assert exc.value.reason == "checksum"


def test_malformed_reasons_are_fixed() -> None:
    # These strings are metric labels: changing one is a breaking change for dashboards.
    assert set(MALFORMED_REASONS) == {
        "length",
        "ttl",
        "version",
        "type",
        "count",
        "auth",
        "interval",
        "checksum",
    }


# ---- internet_checksum against a textbook reference ------------------------------------------


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


@given(st.binary(max_size=300))
@example(b"")
@example(b"\xff")
@example(b"\xff\xff" * 3)
def test_internet_checksum_matches_reference(data: bytes) -> None:
    assert internet_checksum(data) == _reference_checksum(data)


def test_internet_checksum_rfc1071_example() -> None:
    # RFC 1071 §3 worked example: the sum of 0001 f203 f4f5 f6f7 is ddf2, checksum 220d.
    assert internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D


# ---- properties -----------------------------------------------------------------------


@st.composite
def adverts(draw: st.DrawFn) -> tuple[Advertisement, IPAddress, IPAddress, str]:
    version = draw(st.sampled_from([2, 3]))
    family = 4 if version == 2 else draw(st.sampled_from([4, 6]))
    addr = st.ip_addresses(v=family)
    advert = Advertisement(
        version=version,
        vrid=draw(st.integers(0, 255)),
        priority=draw(st.integers(0, 255)),
        interval=draw(st.integers(1, 255) if version == 2 else st.integers(1, 0x0FFF)),
        addresses=tuple(draw(st.lists(addr, max_size=12))),
    )
    mode = draw(st.sampled_from(["pseudo", "rfc9568"]))
    return advert, draw(addr), draw(addr), mode


def _expected_form(advert: Advertisement, src: IPAddress, dst: IPAddress, mode: str) -> str:
    if advert.version == 2:
        return "v2"
    if src.version == 6 or mode == "pseudo":
        return "pseudo"
    # A message-only checksum also satisfies the pseudo form when the pseudo-header itself
    # sums to 0 (mod 0xffff); decode() tries the pseudo form first, so it reports that.
    length = 8 + 4 * len(advert.addresses)
    pseudo_sum = 0xFFFF - _reference_checksum(_pseudo_header(src, dst, length))
    return "pseudo" if pseudo_sum % 0xFFFF == 0 else "rfc9568"


def test_message_only_form_that_is_also_a_valid_pseudo_form() -> None:
    # The pseudo-header 0.0.0.0 -> 255.255.255.135, proto 112, length 8 sums to 0xffff + 0xffff
    # (= 0 in one's complement), so both forms hold; decode() reports the one it tries first.
    advert = Advertisement(3, 1, 255, 1, ())
    src, dst = IPv4Address(0), IPv4Address("255.255.255.135")
    assert _expected_form(advert, src, dst, "rfc9568") == "pseudo"
    wire = encode(advert, src, dst, "rfc9568")
    assert wire == encode(advert, src, dst, "pseudo")
    assert decode(wire, version=3, src=src, dst=dst, hop_limit=255).checksum_form == "pseudo"


@given(adverts())
def test_round_trip(case: tuple[Advertisement, IPAddress, IPAddress, str]) -> None:
    advert, src, dst, mode = case
    wire = encode(advert, src, dst, mode)
    size = 4 if src.version == 4 else 16
    assert len(wire) == 8 + size * len(advert.addresses) + (8 if advert.version == 2 else 0)
    got = decode(wire, version=advert.version, src=src, dst=dst, hop_limit=255)
    assert got == Decoded(advert, _expected_form(advert, src, dst, mode))


@given(
    st.binary(max_size=120),
    st.sampled_from([2, 3]),
    st.sampled_from([4, 6]),
    st.sampled_from([255, None, 254]),
)
def test_random_bytes_raise_only_malformed(
    data: bytes, version: int, family: int, hop_limit: int | None
) -> None:
    src: IPAddress = IPv4Address("10.9.0.1") if family == 4 else IPv6Address("fe80::1")
    dst: IPAddress = GROUP4 if family == 4 else GROUP6
    try:
        got = decode(data, version=version, src=src, dst=dst, hop_limit=hop_limit)
    except MalformedPacket as e:
        assert e.reason in MALFORMED_REASONS
    else:
        assert got.advert.version == version
        assert hop_limit != 254


@given(adverts(), st.data())
def test_mutated_adverts_raise_only_malformed(
    case: tuple[Advertisement, IPAddress, IPAddress, str], data: st.DataObject
) -> None:
    # Random bytes rarely get past the header; mutate valid adverts to reach deeper checks.
    advert, src, dst, mode = case
    wire = bytearray(encode(advert, src, dst, mode))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(wire) - 1))
        wire[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(wire) + 2))
    mutated = bytes(wire[:cut]) + bytes(max(0, cut - len(wire)))
    try:
        decode(mutated, version=advert.version, src=src, dst=dst, hop_limit=255)
    except MalformedPacket as e:
        assert e.reason in MALFORMED_REASONS


@given(st.binary(max_size=80))
def test_split_ipv4_random_bytes_raise_only_malformed(data: bytes) -> None:
    try:
        dgram = split_ipv4(data)
    except MalformedPacket as e:
        assert e.reason == "length"
    else:
        assert len(dgram.payload) <= len(data) - 20


# ---- scapy as an independent oracle -------------------------------------------------------


def _scapy_dissect(wire: bytes, src: IPAddress, dst: IPAddress) -> VRRP | VRRPv3:
    """Put our message behind an IP header scapy builds and let scapy dissect it."""
    if src.version == 4:
        pkt = IP(bytes(IP(src=str(src), dst=str(dst), ttl=255, proto=112) / wire))
    else:
        pkt = IPv6(bytes(IPv6(src=str(src), dst=str(dst), hlim=255, nh=112) / wire))
    return pkt[VRRPv3] if wire[0] >> 4 == 3 else pkt[VRRP]


def _scapy_recomputed_checksum(layer: VRRP | VRRPv3) -> int:
    top = layer.firstlayer()
    layer.chksum = None  # scapy recomputes it on build (post_build)
    rebuilt = top.__class__(bytes(top))
    return int(rebuilt[layer.__class__].chksum)


def _assert_scapy_fields(layer: VRRP | VRRPv3, advert: Advertisement) -> None:
    assert layer.version == advert.version
    assert layer.type == 1
    assert layer.vrid == advert.vrid
    assert layer.priority == advert.priority
    assert layer.ipcount == len(advert.addresses)
    assert layer.adv == advert.interval
    assert [ip_address(a) for a in layer.addrlist] == list(advert.addresses)
    if advert.version == 2:
        assert (layer.authtype, layer.auth1, layer.auth2) == (0, 0, 0)
    else:
        assert layer.res == 0


@st.composite
def scapy_adverts(draw: st.DrawFn) -> tuple[Advertisement, IPAddress, IPAddress, str]:
    # scapy picks VRRPv3 only for messages of at least 9 bytes: at least one address for v3.
    advert, src, dst, mode = draw(adverts())
    if advert.version == 3 and not advert.addresses:
        extra = IPv4Address("192.0.2.1") if src.version == 4 else IPv6Address("2001:db8::1")
        advert = Advertisement(3, advert.vrid, advert.priority, advert.interval, (extra,))
    return advert, src, dst, mode


@vectors
def test_scapy_dissects_vectors(vec: Vector) -> None:
    layer = _scapy_dissect(vec.wire, vec.src, vec.dst)
    _assert_scapy_fields(layer, vec.decoded.advert)
    assert layer.chksum == int.from_bytes(vec.wire[6:8], "big")


@given(scapy_adverts())
def test_scapy_dissects_what_we_encode(
    case: tuple[Advertisement, IPAddress, IPAddress, str],
) -> None:
    advert, src, dst, mode = case
    wire = encode(advert, src, dst, mode)
    layer = _scapy_dissect(wire, src, dst)
    _assert_scapy_fields(layer, advert)
    ours = int.from_bytes(wire[6:8], "big")
    assert layer.chksum == ours
    if advert.version == 3 and src.version == 4 and mode == "rfc9568":
        # scapy only knows the pseudo-header form; check message-only with its plain checksum.
        assert scapy_checksum(wire[:6] + b"\0\0" + wire[8:]) == ours
    else:
        # v2: whole message; v3: IPv4 or IPv6 pseudo-header with scapy's own src/dst.
        assert _scapy_recomputed_checksum(layer) == ours


def _scapy_kwargs(advert: Advertisement) -> dict[str, object]:
    return {
        "vrid": advert.vrid,
        "priority": advert.priority,
        "adv": advert.interval,
        "addrlist": [str(a) for a in advert.addresses],
    }


@given(scapy_adverts())
def test_scapy_built_adverts_decode(case: tuple[Advertisement, IPAddress, IPAddress, str]) -> None:
    advert, src, dst, _ = case
    if advert.version == 2:
        raw = bytes(
            IP(src=str(src), dst=str(dst), ttl=255, proto=112) / VRRP(**_scapy_kwargs(advert))
        )
    elif src.version == 4:
        raw = bytes(
            IP(src=str(src), dst=str(dst), ttl=255, proto=112) / VRRPv3(**_scapy_kwargs(advert))
        )
    else:
        raw = bytes(IPv6(src=str(src), dst=str(dst), hlim=255) / VRRPv3(**_scapy_kwargs(advert)))
    if src.version == 4:
        dgram = split_ipv4(raw)
        assert (dgram.src, dgram.dst, dgram.ttl) == (src, dst, 255)
        payload, hop_limit = dgram.payload, dgram.ttl
    else:
        assert raw[6] == 112  # next header
        payload, hop_limit = raw[40:], raw[7]
    got = decode(payload, version=advert.version, src=src, dst=dst, hop_limit=hop_limit)
    assert got.advert == advert
    assert got.checksum_form == ("v2" if advert.version == 2 else "pseudo")


@pytest.mark.parametrize(
    ("name", "layer"),
    [("v2_advert", VRRP), ("v3_pseudo", VRRPv3), ("v3_unicast_pseudo", VRRPv3)],
)
def test_scapy_built_golden_adverts_are_byte_identical(name: str, layer: type) -> None:
    vec = BY_NAME[name]
    advert = vec.decoded.advert
    raw = bytes(
        IP(src=str(vec.src), dst=str(vec.dst), ttl=255, proto=112) / layer(**_scapy_kwargs(advert))
    )
    assert split_ipv4(raw).payload.hex() == vec.wire.hex()


def test_appendix_ipv6_frame_in_scapy_and_ours() -> None:
    vec = BY_NAME["v3_ipv6"]
    frame = (
        bytes.fromhex("333300000012 1a1333835232 86dd")
        + bytes.fromhex("6c0ff5d8 0018 70 ff")
        + vec.src.packed
        + vec.dst.packed
        + vec.wire
    )
    assert frame[:6] == bytes.fromhex("333300000012")  # ff02::12 multicast MAC
    ip6 = IPv6(frame[14:])
    assert (ip6.tc, ip6.nh, ip6.hlim, ip6.plen) == (0xC0, 112, 255, len(vec.wire))
    assert (ip_address(ip6.src), ip_address(ip6.dst)) == (vec.src, vec.dst)
    _assert_scapy_fields(ip6[VRRPv3], vec.decoded.advert)
    assert _scapy_recomputed_checksum(ip6[VRRPv3]) == 0x9F7D
    payload = frame[14 + 40 :]
    got = decode(payload, version=3, src=vec.src, dst=vec.dst, hop_limit=ip6.hlim)
    assert got == vec.decoded
