"""keepalived 2.4's auth_hmac trailer (drbdha/vrrp/auth_hmac.py) against the wire images of
the draft's appendix, as keepalived 2.4.3's own test (test/auth_hmac_test.c) checks them:
key 00..1f, VRID 51, priority 200, sequence 0x6800000080000000."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from drbdha.vrrp import auth_hmac as ah

KEY = bytes(range(32))
# IPv4: src 198.51.100.10, VIP 192.0.2.100, the RFC 9568 message-only checksum.
V4 = bytes.fromhex(
    "3133c80100644402c00002640101000068000000800000001b84bc4e8e43892dc6d98448f8ee2265"
)
V4_FROM = ah.Origin(ip_address("198.51.100.10"), 3, 51)
# IPv6: src fe80::10, VIP fe80::100, the transport checksum (to fe80::20) covering the trailer.
V6 = bytes.fromhex(
    "3133c8010064a2e9fe800000000000000000000000000100"
    "010100006800000080000000c8c56146ebfd66ee10ec4d8186461b78"
)
V6_FROM = ah.Origin(ip_address("fe80::10"), 3, 51)
SEQ = 0x6800000080000000
THEN_NS = 0x68000000 * 1_000_000_000 + 500_000_000  # the vectors' own time


def split(image: bytes) -> tuple[bytes, bytes]:
    return image[: -ah.TRAILER_LEN], image[-ah.TRAILER_LEN :]


def verifier(**kw: object) -> ah.Verifier:
    return ah.Verifier({1: KEY}, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("image", "origin"), [(V4, V4_FROM), (V6, V6_FROM)], ids=["ipv4", "ipv6"])
def test_the_appendix_vectors_verify_and_sign_to_the_same_bytes(
    image: bytes, origin: ah.Origin
) -> None:
    message, trailer = split(image)
    v = verifier(anti_replay="monotonic")  # the vectors' time lies outside any live window
    assert v.check(message, trailer, origin, 0).outcome == ah.OK
    assert ah.sign(message, 1, KEY, SEQ, origin) == trailer
    assert ah.Trailer.parse(trailer).seq == SEQ


TRAILER = len(V6) - ah.TRAILER_LEN


@pytest.mark.parametrize(
    ("offset", "outcome"),
    [
        (2, ah.BAD_HMAC),  # priority
        (5, ah.BAD_HMAC),  # advert interval
        (6, ah.OK),  # the checksum is not covered (IPv6's is the kernel's)
        (8 + 15, ah.BAD_HMAC),  # the VIP
        (TRAILER + 0, ah.MALFORMED),  # ext type
        (TRAILER + 1, ah.UNKNOWN_KEY),  # key id
        (TRAILER + 2, ah.MALFORMED),  # reserved
        (TRAILER + 4, ah.BAD_HMAC),  # seconds
        (TRAILER + 10, ah.BAD_HMAC),  # counter
        (TRAILER + 12, ah.BAD_HMAC),  # the tag
    ],
)
def test_one_flipped_bit_is_caught_where_it_matters(offset: int, outcome: str) -> None:
    image = bytearray(V6)
    image[offset] ^= 0x01
    message, trailer = split(bytes(image))
    assert verifier(anti_replay="monotonic").check(message, trailer, V6_FROM, 0).outcome == (
        outcome
    )


@pytest.mark.parametrize(
    "origin",
    [
        ah.Origin(ip_address("fe80::20"), 3, 51),
        ah.Origin(V6_FROM.src, 3, 52),
        ah.Origin(V6_FROM.src, 2, 51),
    ],
    ids=["other-sender", "other-vrid", "other-version"],
)
def test_the_pseudo_header_binds_sender_vrid_and_version(origin: ah.Origin) -> None:
    message, trailer = split(V6)
    got = verifier(anti_replay="monotonic").check(message, trailer, origin, 0)
    assert got.outcome == ah.BAD_HMAC


def test_a_replayed_advert_is_refused_and_a_forged_one_moves_no_mark() -> None:
    message, trailer = split(V6)
    v = verifier(anti_replay="monotonic")
    forged = trailer[:4] + (0x7F000000).to_bytes(4, "big") + trailer[8:]  # far ahead, bad tag
    assert v.check(message, forged, V6_FROM, 0).outcome == ah.BAD_HMAC
    assert v.check(message, trailer, V6_FROM, 0).outcome == ah.OK
    assert v.check(message, trailer, V6_FROM, 0).outcome == ah.REPLAY


def test_time_mode_refuses_what_is_outside_the_window_before_any_hmac() -> None:
    message, trailer = split(V6)
    v = verifier(window=5)
    assert v.check(message, trailer, V6_FROM, THEN_NS).outcome == ah.OK
    late = v.check(message, trailer, V6_FROM, THEN_NS + 6 * 10**9)
    assert (late.outcome, late.skew) == (ah.STALE, 6)
    early = verifier(window=5).check(message, trailer, V6_FROM, THEN_NS - 6 * 10**9)
    assert (early.outcome, early.skew) == (ah.STALE, -6)


def test_a_sender_reset_by_a_clock_step_is_heard_again_once_its_mark_is_old() -> None:
    v = verifier(window=5)
    origin = ah.Origin(ip_address("192.0.2.1"), 3, 51)
    msg = bytes.fromhex("3133c80100644402c0000264")
    t0 = THEN_NS
    first = ah.sign(msg, 1, KEY, ah.sequence_at(t0), origin)
    assert v.check(msg, first, origin, t0).outcome == ah.OK
    # The sender's clock went back 60 s; ours goes on: its adverts are stale until ours
    # agrees, and then the old mark (outside the window) no longer orders them.
    back = t0 - 60 * 10**9
    stepped = ah.sign(msg, 1, KEY, ah.sequence_at(back), origin)
    assert v.check(msg, stepped, origin, t0).outcome == ah.STALE
    assert v.check(msg, stepped, origin, back).outcome == ah.OK


@pytest.mark.parametrize(
    ("mode", "outcome"), [("enforce", ah.MISSING), ("permissive", ah.OK), ("receive-only", ah.OK)]
)
def test_an_advert_without_a_trailer_passes_only_during_the_rollout(
    mode: str, outcome: str
) -> None:
    message, _ = split(V6)
    assert verifier(mode=mode).check(message, None, V6_FROM, THEN_NS).outcome == outcome


@pytest.mark.parametrize("mode", ["enforce", "permissive", "receive-only"])
def test_a_bad_trailer_is_refused_in_every_mode(mode: str) -> None:
    image = bytearray(V6)
    image[2] ^= 1
    message, trailer = split(bytes(image))
    got = verifier(mode=mode, anti_replay="monotonic").check(message, trailer, V6_FROM, 0)
    assert got.outcome == ah.BAD_HMAC


def test_the_send_sequence_grows_and_restarts_after_a_step_back_past_the_window() -> None:
    s = ah.SendSequence("time", window=5)
    a = s.next(THEN_NS)
    assert a == ah.sequence_at(THEN_NS)
    assert s.next(THEN_NS) == a + 1  # same instant: the counter breaks the tie
    assert s.next(THEN_NS - 2 * 10**9) == a + 2  # a small step back: strict growth
    assert s.next(THEN_NS - 60 * 10**9) == ah.sequence_at(THEN_NS - 60 * 10**9)  # restarted
    m = ah.SendSequence("monotonic", window=5)
    b = m.next(THEN_NS)
    assert m.next(THEN_NS - 60 * 10**9) == b + 1  # monotonic never goes back


def test_multicast_keeps_the_marks_of_the_four_senders_heard_last() -> None:
    v = verifier(anti_replay="monotonic")
    msg = bytes.fromhex("3133c80100644402c0000264")
    senders = [ip_address(f"192.0.2.{i}") for i in range(1, 7)]
    for i, src in enumerate(senders):
        origin = ah.Origin(src, 3, 51)
        assert v.check(msg, ah.sign(msg, 1, KEY, 100 + i, origin), origin, 0).outcome == ah.OK
    assert list(v.marks) == senders[-ah.MULTICAST_SENDERS :]


@pytest.mark.parametrize(("interval", "window"), [(0.01, 5), (1.0, 5), (3.0, 9), (200.0, 300)])
def test_the_default_window(interval: float, window: int) -> None:
    assert ah.default_window(interval) == window


def test_serial_number_order_survives_the_wrap() -> None:
    assert ah.after(5, (1 << 64) - 5)
    assert not ah.after((1 << 64) - 5, 5)
    assert not ah.after(7, 7)
