"""A Primary that finds out its peer has served meanwhile: the stale copy.

How it happens with two nodes and no power switch: the master's VM freezes (or its host
stalls) for longer than the peer's takeover. The peer's fence-peer handler finds it silent
(dead, exit 5) and promotes; clients write to the new Primary. Then the old master runs
again, still DRBD Primary with its filesystem mounted. Its DRBD finds the link gone,
freezes its I/O (resource-and-stonith) and runs the handler, and the peer answers that it is
Primary, or, if it has stepped down meanwhile, that its copy holds writes ours lacks
(fencing/server.py, wire.NEWER). Either answer proves our copy stale. Then:

- the disk latch is set (this node never serves again until the admin clears it), and the
  master resigns so the peer keeps serving;
- once the VIP is gone, the disk is detached by force and DRBD's I/O resumed: what waited
  fails with an I/O error instead of landing on the stale copy, so the release (nfsd's
  threads, the exports' table, the unmount) can finish and the node demotes; the NFS steps'
  own writes fail too, and their stops are let through (chain/runner.py `abandon`), the
  VIP's, the unmount's and the demote's never. No client write reaches the stale copy; but
  DRBD may give it a new data generation as the disk is detached (seen in the lab in one
  run of three), so the copies meet as a split brain: the admin re-attaches it discarding
  its changes (`drbdadm attach` and `drbdadm connect --discard-my-data`; DRBD 8.4 cannot
  invalidate a disconnected copy), it resyncs from the peer, which goes on serving (a split
  brain resolved in its favour does not latch it), and `drbdha clear-latch` ends the latch.

What two nodes cannot avoid is the moment of two Primaries before the old one has demoted;
it never acknowledges a write: its I/O is frozen while it holds the VIP.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from drbdha.resources import proc

RESUME_TIMEOUT = 10.0  # seconds for each drbdadm command
REASON = (
    "stale copy: the peer served while this Primary was frozen or cut off ({detail}); "
    "its disk was detached to release it: drbdadm attach, then drbdadm connect "
    "--discard-my-data, let it resync"
)


@dataclass(frozen=True, slots=True)
class PeerServes:
    """Inbox event: the fence-peer handler (through us) or the keeper asked the peer about
    `resource` and it answered `outcome` (wire.PEER_SERVES)."""

    resource: str
    outcome: str
    detail: str


@dataclass(frozen=True, slots=True)
class ResumeToRelease:
    """Inbox event: resume the stale Primary's frozen I/O; its VIP is gone."""

    instance: str
    resource: str


@dataclass(frozen=True, slots=True)
class HoldApart:
    """Inbox event: disconnect `resource` (suspicion.py `hold_apart`)."""

    instance: str
    resource: str


async def _bounded(argv: list[str], run: Any) -> tuple[bool, str]:
    """(ok, detail) of one drbdadm run within RESUME_TIMEOUT; never raises."""
    try:
        async with asyncio.timeout(RESUME_TIMEOUT):
            r = await run(argv)
    except TimeoutError:
        return False, f"not done in {RESUME_TIMEOUT:g} s"
    except OSError as e:
        return False, str(e)
    return r.ok, r.summary()


async def hold_apart(ev: HoldApart, log: Any, run: Any = proc.run) -> None:
    """`drbdadm disconnect`, logged if it fails; never raises."""
    ok, detail = await _bounded(["drbdadm", "disconnect", ev.resource], run)
    if not ok:
        log.error("drbd.hold_apart_failed", resource=ev.resource, error=detail)


async def resume_to_release(ev: ResumeToRelease, log: Any, run: Any = proc.run) -> None:
    """`drbdadm detach --force`, then `drbdadm resume-io`; logged either way; never raises
    (it runs in the task group). No resume without the detach: the writes waiting in DRBD
    would land on the stale copy and split it from the peer's."""
    fields = {"instance": ev.instance, "resource": ev.resource}
    for argv in (
        ["drbdadm", "detach", "--force", ev.resource],
        ["drbdadm", "resume-io", ev.resource],
    ):
        ok, detail = await _bounded(argv, run)
        if not ok:
            log.error("stale.release_blocked", command=" ".join(argv), error=detail, **fields)
            return
    log.warning("stale.detached_and_resumed", **fields)
