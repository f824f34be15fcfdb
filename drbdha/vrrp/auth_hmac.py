"""keepalived 2.4's `auth_hmac` trailer (draft-cassen-vrrp-auth-hmac): an HMAC-SHA256,
truncated to 128 bits, and a time-based sequence number after a VRRPv2/v3 advert, so that
an advert proves it came from a holder of the shared key and is fresh. Pure: the clock is
passed in (Unix time in nanoseconds, the sequence is wall-clock based by design).

The trailer (28 bytes, network order): ext_type (1: HMAC-SHA256/128), key_id (1-255),
reserved (0), seconds (32 bits of Unix time), subseconds (16-bit binary fraction), a
counter (tie breaker within one timestamp), then the 16-byte tag. The three middle fields
read together are one 64-bit sequence, compared in serial number arithmetic.

The tag covers a 20-byte pseudo-header (4 or 6 for the family, the VRRP version, the VRID,
a zero byte, the sender's address padded to 16 bytes), then the VRRP message with its
checksum field zeroed (the checksum is left out: IPv6's is the kernel's and covers the
trailer), then the trailer's first 12 bytes and 16 zero bytes in place of the tag. The IP
header is not covered, so one construction serves IPv4 and IPv6, multicast and unicast.

Receive: a trailer is present when the payload is exactly the message plus TRAILER_LEN (a
length padding cannot reach). In every mode a trailer that fails is dropped; a missing
trailer is dropped only in "enforce" ("receive-only" and "permissive" are keepalived's
rollout steps: the first signs nothing, the second signs and still accepts unsigned
adverts). With anti_replay "time" the sender's seconds must be within `window` of ours
(checked first, cheaply, never trusted: it only rejects), and in both modes each sender's
sequence must grow; the high-water mark moves only after the tag verified, so forged
packets can never move it.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections import OrderedDict
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import Final, Literal

IPAddress = IPv4Address | IPv6Address
Mode = Literal["enforce", "permissive", "receive-only"]
AntiReplay = Literal["time", "monotonic"]

EXT_HMAC_SHA256: Final = 1
TAG_LEN: Final = 16
TRAILER_LEN: Final = 28
KEY_MIN, KEY_MAX = 32, 64  # bytes
WINDOW_MIN, WINDOW_MAX, WINDOW_FLOOR = 1, 300, 5  # seconds
MULTICAST_SENDERS: Final = 4  # replay marks kept for multicast sources (least recently used)
CHECKSUM_AT: Final = 6  # offset of the VRRP checksum field, both versions

_HEAD = struct.Struct("!BBHIHH")  # ext_type, key_id, reserved, seconds, subseconds, counter
_ZERO_TAG: Final = bytes(TAG_LEN)
_MASK64: Final = (1 << 64) - 1

# Outcomes of a receive check: OK passes; the rest are keepalived's counters' reasons.
OK: Final = "ok"
MISSING: Final = "missing"  # no trailer, in enforce mode
MALFORMED: Final = "malformed"  # unknown ext_type, or reserved not zero
UNKNOWN_KEY: Final = "unknown_key"
BAD_HMAC: Final = "invalid_hmac"
STALE: Final = "stale"  # the seconds are outside the window: clock skew or an old capture
REPLAY: Final = "replay"  # the sequence did not grow
REASONS: Final = (MISSING, MALFORMED, UNKNOWN_KEY, BAD_HMAC, STALE, REPLAY)


def default_window(advert_interval: float) -> int:
    """keepalived's default time_window: max(3 x advert_int, 5), at most 300 seconds."""
    return min(WINDOW_MAX, max(WINDOW_FLOOR, round(3 * advert_interval)))


def sequence_at(unix_ns: int) -> int:
    """The clock's sequence: 32 bits of seconds, a 16-bit binary fraction, counter 0."""
    sec, nsec = divmod(unix_ns, 1_000_000_000)
    subsec = (nsec << 16) // 1_000_000_000
    return (sec & 0xFFFFFFFF) << 32 | subsec << 16


def after(a: int, b: int) -> bool:
    """Serial number arithmetic on 64 bits (RFC 1982): is `a` later than `b`?"""
    d = (a - b) & _MASK64
    return 0 < d < 1 << 63


def _seconds_apart(now_sec: int, sec: int) -> int:
    """now - sec, as a signed 32-bit difference (the field wraps in 2106)."""
    d = (now_sec - sec) & 0xFFFFFFFF
    return d - (1 << 32) if d >= 1 << 31 else d


@dataclass(frozen=True, slots=True)
class Origin:
    """What the pseudo-header binds a tag to: the sender's address, the VRRP version and
    the VRID (a valid trailer cannot be moved to another sender or instance)."""

    src: IPAddress
    version: int
    vrid: int

    def pseudo_header(self) -> bytes:
        family = 4 if self.src.version == 4 else 6
        return bytes((family, self.version, self.vrid, 0)) + self.src.packed.ljust(16, b"\0")


def tag(key: bytes, origin: Origin, message: bytes, head: bytes) -> bytes:
    """The truncated HMAC over the pseudo-header, `message` (checksum zeroed) and the
    trailer's first 12 bytes `head` (the tag's place zeroed)."""
    covered = b"".join(
        (
            origin.pseudo_header(),
            message[:CHECKSUM_AT],
            b"\0\0",
            message[CHECKSUM_AT + 2 :],
            head,
            _ZERO_TAG,
        )
    )
    return hmac.new(key, covered, hashlib.sha256).digest()[:TAG_LEN]


@dataclass(frozen=True, slots=True)
class Trailer:
    ext_type: int
    key_id: int
    reserved: int
    seq: int
    tag: bytes

    @classmethod
    def parse(cls, data: bytes) -> Trailer:
        if len(data) != TRAILER_LEN:
            raise ValueError(f"a trailer is {TRAILER_LEN} bytes, not {len(data)}")
        ext, key_id, reserved, sec, subsec, ctr = _HEAD.unpack_from(data)
        return cls(ext, key_id, reserved, sec << 32 | subsec << 16 | ctr, data[_HEAD.size :])

    def head(self) -> bytes:
        s = self.seq
        return _HEAD.pack(
            self.ext_type, self.key_id, self.reserved, s >> 32, s >> 16 & 0xFFFF, s & 0xFFFF
        )


def sign(message: bytes, key_id: int, key: bytes, seq: int, origin: Origin) -> bytes:
    """The trailer to append to `message` (a whole VRRP message as it goes out; its
    checksum may be filled in before or after, it is not covered)."""
    head = Trailer(EXT_HMAC_SHA256, key_id, 0, seq & _MASK64, b"").head()
    return head + tag(key, origin, message, head)


@dataclass
class SendSequence:
    """The sender's sequence: the clock's while it moves forward, else one more than the
    last sent (strict growth). In time mode a sequence stranded ahead of the clock by more
    than the window (the clock was stepped back) restarts from the clock, since receivers
    would reject it as stale anyway."""

    anti_replay: AntiReplay = "time"
    window: int = WINDOW_FLOOR
    last: int = 0

    def next(self, unix_ns: int) -> int:
        clock = sequence_at(unix_ns)
        ahead = -_seconds_apart(clock >> 32, self.last >> 32)  # seconds we are past the clock
        if after(clock, self.last) or (self.anti_replay == "time" and ahead > self.window):
            self.last = clock
        else:
            self.last = (self.last + 1) & _MASK64
        return self.last


@dataclass(frozen=True, slots=True)
class Checked:
    outcome: str  # OK or one of REASONS
    skew: int | None = None  # seconds, sender's clock behind ours (time mode, a trailer)
    key_id: int | None = None


@dataclass
class Verifier:
    """Checks received adverts for one VRRP instance. `keys`: id -> key bytes."""

    keys: dict[int, bytes]
    mode: Mode = "enforce"
    anti_replay: AntiReplay = "time"
    window: int = WINDOW_FLOOR
    # Replay marks: the last accepted sequence per sender (unicast peers and multicast
    # sources alike; multicast keeps the MULTICAST_SENDERS most recently heard).
    marks: OrderedDict[IPAddress, int] = field(default_factory=OrderedDict)
    unicast: frozenset[IPAddress] = frozenset()

    def check(self, message: bytes, trailer: bytes | None, origin: Origin, unix_ns: int) -> Checked:
        if trailer is None:
            return Checked(MISSING if self.mode == "enforce" else OK)
        t = Trailer.parse(trailer)
        if t.ext_type != EXT_HMAC_SHA256 or t.reserved != 0:
            return Checked(MALFORMED, key_id=t.key_id)
        now_sec = unix_ns // 1_000_000_000
        skew = None
        if self.anti_replay == "time":
            # Before the costly HMAC: a flood of old captures costs no digest each.
            skew = _seconds_apart(now_sec, t.seq >> 32)
            if abs(skew) > self.window:
                return Checked(STALE, skew, t.key_id)
        key = self.keys.get(t.key_id)
        if key is None:
            return Checked(UNKNOWN_KEY, skew, t.key_id)
        expected = tag(key, origin, message, t.head())
        if not hmac.compare_digest(expected, t.tag):
            return Checked(BAD_HMAC, skew, t.key_id)
        if not self._fresh(origin.src, t.seq, now_sec):
            return Checked(REPLAY, skew, t.key_id)
        return Checked(OK, skew, t.key_id)

    def _fresh(self, src: IPAddress, seq: int, now_sec: int) -> bool:
        """Strict growth per sender; the mark moves only here, after the tag verified."""
        last = self.marks.get(src)
        # A mark outside the window orders nothing the window lets through; dropping it lets
        # a sender whose clock was stepped back start again.
        if (
            last is not None
            and self.anti_replay == "time"
            and abs(_seconds_apart(now_sec, last >> 32)) > self.window
        ):
            last = None
        if last is not None and not after(seq, last):
            return False
        self.marks[src] = seq
        self.marks.move_to_end(src)
        multicast = [a for a in self.marks if a not in self.unicast]
        while len(multicast) > MULTICAST_SENDERS:
            del self.marks[multicast.pop(0)]
        return True
