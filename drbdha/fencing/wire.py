"""The peer channel's messages (pure): one exchange per TCP connection, one JSON object per
line, each authenticated with HMAC-SHA256 under the shared secret.

    server: {"type": "challenge", "nonce": S}
    client: {"type": "outdate", "resource": R, "nonce": S, "client_nonce": C, "mac": ...}
    server: {"type": "result", "resource": R, "nonce": S, "client_nonce": C,
             "outcome": O, "role": ..., "disk": ..., "connection": ..., "detail": ..., "mac": ...}

Why a challenge rather than a timestamp: the server's fresh nonce makes a recorded request
worthless on any later connection without trusting the two nodes' clocks, which matter
least when the cluster is failing. The client's nonce binds the result to its request, so a
recorded result cannot answer a later one. An unauthenticated {"type": "refused"} tells a
client with the wrong secret why nothing happened; it carries no outcome.
"""

from __future__ import annotations

import json
from typing import Any, Final

VERSION: Final = 1
MAX_LINE: Final = 4096  # bytes; every message is far shorter

# Outcomes and the exit codes DRBD defines for a fence-peer handler (drbd.conf(5) 8.4 and 9,
# the kernel's conn_try_outdate_peer): 3 peer Inconsistent or worse, 4 peer Outdated,
# 5 peer unreachable (assumed dead), 6 peer is Primary (the caller outdates itself).
OUTDATED: Final = "outdated"
INCONSISTENT: Final = "inconsistent"
PRIMARY: Final = "primary"
# The peer is Secondary but wrote alone, as Primary, since the two copies last met (it took
# over while the asker was cut off or frozen): outdating it would throw away writes the
# asker lacks. To DRBD it is the answer for a Primary: the asker outdates itself (a
# Secondary) or keeps its I/O frozen (a Primary).
NEWER: Final = "newer"
FAILED: Final = "failed"
UNREACHABLE: Final = "unreachable"
OUTCOMES: Final = (OUTDATED, INCONSISTENT, PRIMARY, NEWER, FAILED)
EXIT_CODES: Final = {INCONSISTENT: 3, OUTDATED: 4, UNREACHABLE: 5, PRIMARY: 6, NEWER: 6}
# The answers that say the peer has served since the asker was cut off: a Primary asking
# holds the stale copy (fencing/keeper.py, daemon/storage.py `stale_copy`).
PEER_SERVES: Final = frozenset({PRIMARY, NEWER})
# Any other code is "fence-peer helper broken" to DRBD: a Primary's I/O stays frozen
# (resource-and-stonith) and a promotion is refused. That is the answer when the peer is
# reachable but its copy could not be outdated: it may still be promoted later.
EXIT_FAILED: Final = 1


class Refused(Exception):
    """A message that is not accepted; `reason` is logged and sent back."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def nonce() -> str:
    import secrets  # noqa: PLC0415  (see _mac)

    return secrets.token_hex(16)


def encode(msg: dict[str, Any]) -> bytes:
    return json.dumps(msg, separators=(",", ":"), sort_keys=True).encode() + b"\n"


def sign(key: bytes, msg: dict[str, Any]) -> dict[str, Any]:
    body = {**msg, "v": VERSION}
    return {**body, "mac": _mac(key, body)}


def challenge(server_nonce: str) -> dict[str, Any]:
    return {"type": "challenge", "v": VERSION, "nonce": server_nonce}


def outdate_request(key: bytes, resource: str, server_nonce: str, client_nonce: str) -> bytes:
    msg = {
        "type": "outdate",
        "resource": resource,
        "nonce": server_nonce,
        "client_nonce": client_nonce,
    }
    return encode(sign(key, msg))


def refused(reason: str) -> bytes:
    return encode({"type": "refused", "v": VERSION, "reason": reason})


def decode(line: bytes) -> dict[str, Any]:
    """One line -> its message; Refused for anything else, never another error. Every message
    is one flat object: a nested value is refused (bad_message), and so is a string with a
    lone surrogate (not_json): a \\ud800 escape is valid JSON, but no UTF-8 encoding of it
    exists, so logging or answering it would raise later."""
    if len(line) > MAX_LINE or not line.endswith(b"\n"):
        raise Refused("too_long_or_truncated")
    try:
        msg = json.loads(line)
    # UnicodeDecodeError is a ValueError; RecursionError: arrays nested about 1,000 deep.
    except (ValueError, RecursionError):
        raise Refused("not_json") from None
    if not isinstance(msg, dict) or msg.get("v") != VERSION or not isinstance(msg.get("type"), str):
        raise Refused("bad_message")
    if any(isinstance(v, dict | list) for v in msg.values()):
        raise Refused("bad_message")
    if not all(_is_text(s) for s in (*msg, *msg.values()) if isinstance(s, str)):
        raise Refused("not_json")
    return msg


def _is_text(s: str) -> bool:
    """False for a str that UTF-8 cannot encode (one with a lone surrogate)."""
    try:
        s.encode()
    except UnicodeEncodeError:
        return False
    return True


def verify(key: bytes, msg: dict[str, Any], kind: str, **expect: str) -> dict[str, Any]:
    """`msg` if it is a `kind` message with a valid MAC and the expected fields (the nonces
    of this exchange); Refused otherwise. The MAC is checked before anything it covers is
    trusted, in constant time."""
    import hmac  # noqa: PLC0415  (see _mac)

    mac = msg.get("mac")
    body = {k: v for k, v in msg.items() if k != "mac"}
    # Bytes: compare_digest refuses str with non-ASCII characters (TypeError). A MAC is hex:
    # anything else is refused before encode(), which raises on a lone surrogate.
    if (
        not isinstance(mac, str)
        or not mac.isascii()
        or not hmac.compare_digest(mac.encode(), _mac(key, body).encode())
    ):
        raise Refused("bad_mac")
    if msg.get("type") != kind:
        raise Refused("unexpected_message")
    for field, value in expect.items():
        if msg.get(field) != value:
            # A valid MAC on an old nonce: a recorded message played again.
            raise Refused("replayed" if field == "nonce" else f"wrong_{field}")
    return msg


def _mac(key: bytes, body: dict[str, Any]) -> str:
    # hashlib, hmac and secrets are imported where used (here, verify, nonce): the
    # fence-peer handler that only asks the local daemon (cli.py) needs this module's
    # outcome names and exit codes, not OpenSSL's start-up.
    import hashlib  # noqa: PLC0415
    import hmac  # noqa: PLC0415

    data = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    return hmac.new(key, data, hashlib.sha256).hexdigest()
