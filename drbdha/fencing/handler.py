"""`drbdha fence-peer`: DRBD's fence-peer handler.

drbdadm runs it with DRBD_RESOURCE set when DRBD must fence the peer. It asks the peer's
drbdha to outdate its copy and exits with DRBD's code for the answer (wire.EXIT_CODES):

- 4 the peer's copy is Outdated now (or was): DRBD goes on, the peer cannot be promoted;
- 3 the peer is Inconsistent or worse: nothing to fence;
- 6 the peer is Primary: refused; a promoting caller then outdates itself;
- 5 silence within fence_timeout (no SYN-ACK, no RST): the peer is taken as dead (DRBD
  goes on only if its own disk is UpToDate). A live peer cut off on both networks looks
  the same: the two-node limit the README describes;
- 1 anything else (a reachable peer that could not be outdated, a host that refuses the
  connection because its drbdha is down, the wrong secret, no [peer] section): DRBD calls
  the handler broken, keeps a Primary's I/O frozen and refuses a promotion. Reporting such
  a peer as dead could let it be promoted on stale data later. The Primary's own daemon
  then goes on asking (fencing/keeper.py) and resumes the I/O once the peer is fenced.

Proof of life is any answer from the peer's host: a connection, or a refusal (a TCP RST,
or ICMP port unreachable, both ECONNREFUSED). Once seen, this run never answers 5, even if
the host falls silent afterwards (it may be rebooting with its copy still UpToDate).
EHOSTUNREACH is not proof: the kernel reports it when the neighbour does not answer ARP/ND.

Synchronous and standard-library only: it runs in the kernel's helper path, once.
"""

from __future__ import annotations

import importlib
import json
import socket
import sys
import time
from typing import TYPE_CHECKING, Any, Final

from drbdha.fencing import wire
from drbdha.fencing.secret import SecretError, read_secret

if TYPE_CHECKING:  # not imported at run time: the handler's start-up holds a promotion
    from drbdha.config import Config, PeerConfig

RESULT_TIMEOUT = 15.0  # seconds for the peer's answer once it has challenged us (> ACTION)
DEADLINE = 30.0  # seconds for retries of a reachable peer that failed to outdate
RETRY_PAUSE = 1.0
ATTEMPT = 0.1  # seconds per connection attempt: a lost SYN costs this, not the kernel's 1 s RTO


class Answer:
    def __init__(
        self,
        outcome: str,
        detail: str,
        reply: dict[str, Any] | None = None,
        *,
        retry: bool = False,
        refused: bool = False,
    ) -> None:
        self.outcome = outcome
        self.detail = detail
        self.reply = reply or {}
        self.retry = retry  # a failure that may pass (the peer tried and failed, or went silent)
        self.alive = outcome != wire.UNREACHABLE  # the peer's host answered in some way
        self.refused = refused  # ... only by refusing the connection

    @property
    def exit_code(self) -> int:
        return wire.EXIT_CODES.get(self.outcome, wire.EXIT_FAILED)


def fence_peer(config: Config, resource: str) -> Answer:
    """The whole job in this process: the daemon is not there to ask (see cli.py)."""
    why = refusal(config, resource)
    if why is not None:
        return Answer(wire.FAILED, why)
    assert config.peer is not None
    try:
        key = read_secret(config.peer.secret_file)
    except SecretError as e:
        return Answer(wire.FAILED, str(e))
    return fence_peer_with(config.peer, key, resource)


def refusal(config: Config, resource: str) -> str | None:
    """Why `config` cannot fence `resource` at all, if it cannot."""
    if not any(s.drbd_resource == resource for s in config.storage.values()):
        return f"no [storage] section has drbd_resource = {resource!r}"
    if config.peer is None:
        return "no [peer] section: drbdha cannot reach the peer"
    return None


def fence_peer_with(
    peer: PeerConfig, key: bytes, resource: str, silent_since: float | None = None
) -> Answer:
    """Ask until an answer is final or DEADLINE is over. `silent_since`: the daemon's
    peer watch (fencing/watch.py) has asked the peer's port the same way, without any
    answer, from that moment (time.monotonic) until now, so the first ask needs only what is
    left of fence_timeout (nothing, if it has passed: the peer is dead now)."""
    # A reachable peer that failed to outdate may succeed a moment later (its DRBD noticed
    # the failed link itself meanwhile, its drbdha came back); until then DRBD holds our
    # I/O, so keep trying.
    deadline = time.monotonic() + DEADLINE
    alive = False
    while True:
        answer = ask(peer, key, resource, silent_since)
        silent_since = None  # continuous silence is proven for the first ask only
        alive = alive or answer.alive
        if alive and answer.outcome == wire.UNREACHABLE:
            detail = f"the peer's host answered earlier, now silent: {answer.detail}"
            answer = Answer(wire.FAILED, detail, retry=True)
        # A refused connect costs nothing: _connect paces its own attempts.
        pause = 0.0 if answer.refused else RETRY_PAUSE
        if not answer.retry or time.monotonic() + pause >= deadline:
            return answer
        time.sleep(pause)


def ask(peer: PeerConfig, key: bytes, resource: str, silent_since: float | None = None) -> Answer:
    sock, refused = _connect(peer, silent_since)
    if sock is None and refused:
        return Answer(
            wire.FAILED,
            f"{peer.address}:{peer.port} refused the connection: the host is alive and its "
            "drbdha is not listening",
            retry=True,
            refused=True,
        )
    if sock is None:
        return Answer(wire.UNREACHABLE, f"no answer from {peer.address}:{peer.port}")
    with sock, sock.makefile("rb") as f:
        try:
            sock.settimeout(peer.fence_timeout)
            first = wire.decode(f.readline(wire.MAX_LINE + 1))
            if first.get("type") == "refused":
                # "busy" passes (the peer serves a few connections at once): ask again.
                reason = first.get("reason")
                return Answer(wire.FAILED, f"the peer refused: {reason}", retry=reason == "busy")
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
            return Answer(wire.FAILED, f"no answer from the peer: {e}", retry=True)
    outcome = reply.get("outcome")
    if outcome not in wire.OUTCOMES:
        return Answer(wire.FAILED, f"unknown outcome {outcome!r}", reply)
    return Answer(str(outcome), str(reply.get("detail", "")), reply, retry=outcome == wire.FAILED)


def _connect(
    peer: PeerConfig, silent_since: float | None = None
) -> tuple[socket.socket | None, bool]:
    """(a connection within fence_timeout or None, whether any attempt was refused), in
    short attempts: one lost SYN must not make a live peer look dead, and the peer's drbdha
    restarting refuses for a moment before it listens again. fence_timeout counts from
    `silent_since` when the silence was watched before (fence_peer_with)."""
    start = time.monotonic() if silent_since is None else silent_since
    deadline = start + peer.fence_timeout
    refused = False
    while (left := deadline - time.monotonic()) > 0:
        started = time.monotonic()
        try:
            sock = socket.create_connection(
                (str(peer.address), peer.port), timeout=min(ATTEMPT, left)
            )
        except ConnectionRefusedError:  # RST or ICMP port unreachable: the host is up
            refused = True
        except OSError:  # timed out, no route, neighbour unresolved: silence
            pass
        else:
            return sock, refused
        time.sleep(max(0.0, min(ATTEMPT - (time.monotonic() - started), left)))
    return None, refused


# The level of the `fence.peer` event (this handler's, or the daemon's when it answered):
# a dead peer (unreachable) and a Primary peer are expected answers; a failure is not.
LOG_LEVEL: Final = {
    wire.OUTDATED: "info",
    wire.INCONSISTENT: "info",
    wire.UNREACHABLE: "warning",
    wire.PRIMARY: "warning",
    wire.NEWER: "warning",
}
SYSLOG_LEVEL: Final = {"info": 6, "warning": 4, "error": 3}


def log(event: str, **fields: Any) -> None:
    """One journal entry with every field (as the daemon's structlog events have), or one
    JSON line on stderr without journald."""
    level = SYSLOG_LEVEL[LOG_LEVEL.get(fields.get("outcome", ""), "error")]
    try:
        journal = importlib.import_module("systemd.journal")
        text = " ".join(f"{k}={v}" for k, v in fields.items())
        journal.send(
            f"{event} {text}",
            PRIORITY=str(level),
            EVENT=event,
            SYSLOG_IDENTIFIER="drbdha",
            **{k.upper(): str(v) for k, v in fields.items()},
        )
    except (ImportError, OSError):
        if sys.stderr is not None:
            print(json.dumps({"event": event, "priority": level, **fields}), file=sys.stderr)
