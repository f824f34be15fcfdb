"""One instance's auth_hmac at the socket's edge: the trailer appended to what goes out, and
what comes in split from its trailer and checked before decode() and the machine see it
(vrrp/auth_hmac.py is the codec; keys from config/keys.py).

Where the trailer sits in the checksums is keepalived's: an IPv4 advert's checksum (and its
pseudo-header length) covers the message alone, an IPv6 one's covers the trailer too (the
kernel computes it over the whole payload, IPV6_CHECKSUM). The tag never covers the
checksum, so either order of filling them in signs the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from drbdha.config.model import VrrpInstanceConfig
from drbdha.vrrp import auth_hmac as ah
from drbdha.vrrp.auth_hmac import Origin
from drbdha.vrrp.packet import IPAddress, message_length


def split(payload: bytes, version: int, family: int) -> tuple[bytes, bytes | None]:
    """(message, trailer) when the payload is the message and exactly one trailer (a length
    no padding can reach), else (payload, None): decode() judges what is left."""
    n = message_length(payload, version, family)
    if n is not None and len(payload) == n + ah.TRAILER_LEN:
        return payload[:n], payload[n:]
    return payload, None


@dataclass
class AdvertAuth:
    verifier: ah.Verifier
    sequence: ah.SendSequence
    key_id: int | None  # the signing key; None: sign nothing ("receive-only")
    key: bytes | None
    version: int
    vrid: int

    @classmethod
    def build(
        cls, cfg: VrrpInstanceConfig, keys: dict[int, bytes], before: AdvertAuth | None = None
    ) -> AdvertAuth:
        """From the instance's settings and its keys read; `before` (a reload): the replay
        marks and our sequence go on, so a rotation neither lets old adverts in again nor
        makes ours look replayed."""
        auth = cfg.auth_hmac
        assert auth is not None
        window = auth.time_window or ah.default_window(cfg.advert_interval)
        verifier = ah.Verifier(
            dict(keys),
            mode=auth.mode,  # type: ignore[arg-type]  # the schema's choices
            anti_replay=auth.anti_replay,  # type: ignore[arg-type]
            window=window,
            unicast=frozenset(cfg.unicast_peers),
        )
        sequence = ah.SendSequence(auth.anti_replay, window)  # type: ignore[arg-type]
        if before is not None:
            verifier.marks = before.verifier.marks
            sequence.last = before.sequence.last
        signs = auth.mode != "receive-only" and auth.active_key is not None
        key_id = auth.active_key if signs else None
        return cls(verifier, sequence, key_id, keys.get(key_id) if key_id else None,
                   cfg.version, cfg.vrid)  # fmt: skip

    def sign(self, message: bytes, src: IPAddress, unix_ns: int) -> bytes:
        """The advert as it goes out: `message` and, unless we sign nothing, its trailer."""
        if self.key_id is None or self.key is None:
            return message
        origin = Origin(src, self.version, self.vrid)
        seq = self.sequence.next(unix_ns)
        return message + ah.sign(message, self.key_id, self.key, seq, origin)

    def check(
        self, message: bytes, trailer: bytes | None, src: IPAddress, unix_ns: int
    ) -> ah.Checked:
        return self.verifier.check(message, trailer, Origin(src, self.version, self.vrid), unix_ns)
