"""`drbdha fence-peer`: DRBD's fence-peer handler.

drbdadm runs it with DRBD_RESOURCE set when DRBD must fence the peer. It asks the peer's
drbdha to outdate its copy and exits with DRBD's code for the answer (wire.EXIT_CODES):

- 4 the peer's copy is Outdated now (or was): DRBD goes on, the peer cannot be promoted;
- 3 the peer is Inconsistent or worse: nothing to fence;
- 6 the peer is Primary: refused; a promoting caller then outdates itself;
- 5 no connection within fence_timeout: the peer is taken as dead (DRBD goes on only if
  its own disk is UpToDate). A live peer cut off on both networks looks the same: the
  two-node limit the README describes;
- 1 anything else (a reachable peer that could not be outdated, the wrong secret, no
  [peer] section): DRBD calls the handler broken, keeps a Primary's I/O frozen and refuses
  a promotion. Reporting such a peer as dead could let it be promoted on stale data later.

Synchronous and standard-library only: it runs in the kernel's helper path, once.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from drbdha.config import Config, PeerConfig
from drbdha.fencing import wire
from drbdha.fencing.secret import SecretError, read_secret

RESULT_TIMEOUT = 25.0  # seconds for the peer's answer once it has challenged us (> ACTION)
RETRY = 0.1  # seconds between connection attempts that failed at once (refused, no route)


class Answer:
    def __init__(self, outcome: str, detail: str, reply: dict[str, Any] | None = None) -> None:
        self.outcome = outcome
        self.detail = detail
        self.reply = reply or {}

    @property
    def exit_code(self) -> int:
        return wire.EXIT_CODES.get(self.outcome, wire.EXIT_FAILED)


def fence_peer(config: Config, resource: str) -> Answer:
    if not any(s.drbd_resource == resource for s in config.storage.values()):
        return Answer(wire.FAILED, f"no [storage] section has drbd_resource = {resource!r}")
    if config.peer is None:
        return Answer(wire.FAILED, "no [peer] section: drbdha cannot reach the peer")
    try:
        key = read_secret(config.peer.secret_file)
    except SecretError as e:
        return Answer(wire.FAILED, str(e))
    return ask(config.peer, key, resource)


def ask(peer: PeerConfig, key: bytes, resource: str) -> Answer:
    sock = _connect(peer)
    if sock is None:
        return Answer(wire.UNREACHABLE, f"no connection to {peer.address}:{peer.port}")
    with sock, sock.makefile("rb") as f:
        try:
            sock.settimeout(peer.fence_timeout)
            first = wire.decode(f.readline(wire.MAX_LINE + 1))
            if first.get("type") == "refused":
                return Answer(wire.FAILED, f"the peer refused: {first.get('reason')}")
            if first.get("type") != "challenge" or not isinstance(first.get("nonce"), str):
                return Answer(wire.FAILED, "the peer sent no challenge")
            client_nonce = wire.nonce()
            sock.sendall(wire.outdate_request(key, resource, first["nonce"], client_nonce))
            sock.settimeout(RESULT_TIMEOUT)
            msg = wire.decode(f.readline(wire.MAX_LINE + 1))
            if msg.get("type") == "refused":
                return Answer(wire.FAILED, f"the peer refused: {msg.get('reason')}")
            reply = wire.verify(
                key,
                msg,
                "result",
                nonce=first["nonce"],
                client_nonce=client_nonce,
                resource=resource,
            )
        except wire.Refused as e:
            return Answer(wire.FAILED, f"bad answer from the peer: {e.reason}")
        except OSError as e:  # TimeoutError included: reached, but no (complete) answer
            return Answer(wire.FAILED, f"no answer from the peer: {e}")
    outcome = reply.get("outcome")
    if outcome not in wire.OUTCOMES:
        return Answer(wire.FAILED, f"unknown outcome {outcome!r}", reply)
    return Answer(str(outcome), str(reply.get("detail", "")), reply)


def _connect(peer: PeerConfig) -> socket.socket | None:
    """A connection within fence_timeout, retrying what fails at once (the peer's drbdha
    restarting refuses for a moment); None when the time is up."""
    deadline = time.monotonic() + peer.fence_timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        try:
            return socket.create_connection((str(peer.address), peer.port), timeout=left)
        except TimeoutError:
            return None
        except OSError:
            time.sleep(min(RETRY, max(0.0, deadline - time.monotonic())))
