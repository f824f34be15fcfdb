"""The Primary's drbdha finishes the fencing that DRBD's handler could not finish.

With `fencing resource-and-stonith`, DRBD freezes a Primary's I/O when it loses the peer and
runs `drbdha fence-peer`. When the handler cannot fence (the peer's host is up but its drbdha
does not answer, the peer failed to outdate, anything else) it exits 1 and DRBD keeps the
I/O frozen with no end: availability is lost, data is not. This task, started by the daemon
once the Primary has been frozen longer than the handler's own deadline, goes on asking the
peer's drbdha with the handler's own `ask`, and resumes DRBD's I/O (`drbdadm resume-io`) as
soon as the peer answers that its copy is Outdated, or Inconsistent (nothing to fence).
Both are answers the handler would have turned into exit 4 or 3, on which DRBD resumes by
itself.

What never resumes the I/O: silence (a host that refused a moment ago may be rebooting with
its copy still UpToDate) and a peer that answers Primary (two Primaries: the admin decides
which copy to keep, as DRBD itself does on exit 6 for a Primary). Both are logged and the
`io_frozen` alert stands until DRBD's I/O resumes, however that happens.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from drbdha.config import PeerConfig
from drbdha.fencing import handler, wire
from drbdha.resources import proc

# Seconds frozen before we ask: past the handler's own deadline, so a handler that is still
# asking (a peer whose drbdha restarts) is not doubled by us.
GRACE = handler.DEADLINE + 2.0
RETRY = 1.0  # seconds between asks (each one is bounded by the handler's own timeouts)
RESUME_TIMEOUT = 10.0  # seconds for drbdadm resume-io
LOG_EVERY = 30  # asks between repeated log lines of the same answer

Ask = Callable[[PeerConfig, bytes, str], handler.Answer]
Run = Callable[[list[str]], Awaitable[proc.Result]]


@dataclass(frozen=True, slots=True)
class KeepFencing:
    """Inbox event: this instance's Primary has I/O frozen for fencing; ask the peer."""

    instance: str
    resource: str


@dataclass(frozen=True, slots=True)
class Keeper:
    peer: PeerConfig
    key: bytes
    log: Any
    count: Callable[[str, str], None]  # (instance, outcome): the daemon's counter
    # An answer that the peer serves (wire.PEER_SERVES): our copy is stale (daemon/stale.py)
    peer_serves: Callable[[KeepFencing, handler.Answer], None] = lambda _ev, _answer: None
    ask: Ask = handler.ask
    run: Run = proc.run
    grace: float = GRACE
    retry: float = RETRY

    async def keep(self, ev: KeepFencing, frozen: Callable[[], bool]) -> str:
        """Ask until DRBD's I/O is no longer frozen; returns how it ended: "resumed" (by
        us) or "resolved" (DRBD resumed by itself: the handler got through, or an admin)."""
        await asyncio.sleep(self.grace)
        asked = 0
        last = ""
        while frozen():
            answer = await asyncio.to_thread(self.ask, self.peer, self.key, ev.resource)
            asked += 1
            if answer.outcome in (wire.OUTDATED, wire.INCONSISTENT) and await self._resume(
                ev, answer, asked
            ):
                return "resumed"
            if answer.outcome in wire.PEER_SERVES:
                self.peer_serves(ev, answer)
            if answer.outcome != last or asked % LOG_EVERY == 0:
                self._still_frozen(ev, answer, asked)
                last = answer.outcome
            await asyncio.sleep(self.retry)
        self.count(ev.instance, "resolved")
        self.log.info("fence.io_unfrozen", instance=ev.instance, resource=ev.resource, asks=asked)
        return "resolved"

    async def _resume(self, ev: KeepFencing, answer: handler.Answer, asked: int) -> bool:
        try:
            async with asyncio.timeout(RESUME_TIMEOUT):
                r = await self.run(["drbdadm", "resume-io", ev.resource])
            ok, detail = r.ok, r.summary()
        except TimeoutError:
            ok, detail = False, f"not done in {RESUME_TIMEOUT:g} s"
        self.count(ev.instance, "resumed" if ok else "resume_failed")
        fields = {
            "instance": ev.instance,
            "resource": ev.resource,
            "peer": answer.outcome,
            "peer_disk": answer.reply.get("disk"),
            "asks": asked,
        }
        if ok:
            self.log.warning("fence.resumed_io", **fields)
        else:
            self.log.error("fence.resume_failed", error=detail, **fields)
        return ok

    def _still_frozen(self, ev: KeepFencing, answer: handler.Answer, asked: int) -> None:
        level = "critical" if answer.outcome in wire.PEER_SERVES else "error"
        getattr(self.log, level)(
            "fence.io_frozen",
            instance=ev.instance,
            resource=ev.resource,
            peer=answer.outcome,
            detail=answer.detail,
            asks=asked,
            action="I/O stays frozen; asking the peer again"
            if answer.outcome not in wire.PEER_SERVES
            else "I/O stays frozen: the peer serves; this copy is stale and is released",
        )
