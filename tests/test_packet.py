"""The VRRP codec against golden vectors and generated variants of them.

One table (tests/vectors/*.txt, see tests/vectors/README; loaded by tests/packet_vectors.py)
drives encode and decode in both directions, and the truncated and one-bit-flipped variants.
Properties and scapy as an independent oracle: test_packet_oracles.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest
from packet_vectors import (
    BY_NAME,
    GROUP4,
    GROUP6,
    VECTORS,
    Vector,
    _decode,
    _pseudo_header,
    _reference_checksum,
    vectors,
)

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

# ---- the golden table -------------------------------------------------------------------


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
