"""The VRRP codec against independent oracles: internet_checksum against a textbook
reference, properties over generated adverts, and scapy, which dissects what we build and
builds adverts that we decode. The golden table itself: test_packet.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from packet_vectors import (
    BY_NAME,
    GROUP4,
    GROUP6,
    IPAddress,
    Vector,
    _pseudo_header,
    _reference_checksum,
    vectors,
)
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

# ---- internet_checksum against a textbook reference ------------------------------------------


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
