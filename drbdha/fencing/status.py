"""How a storage chain's DRBD resource is fenced, read once at start for `drbdha status`
(an unfenced resource says how long its window is), with its replication addresses for the
heartbeat."""

from __future__ import annotations

import asyncio

from drbdha.config import PeerConfig
from drbdha.resources import drbd_advice, drbd_config

READ_TIMEOUT = 15.0  # seconds for drbdadm dump (it has its own 10 s bound)
Summary = dict[str, str | None]  # status.FencingStatus


async def read(
    resource: str, advert: float, heartbeat: float, peer: PeerConfig | None
) -> tuple[Summary, tuple[str, ...]]:
    """(how `resource` is fenced, the replication addresses of its peers); drbdadm runs in a
    thread, so the loop keeps turning. Never raises: an unreadable resource reads as mode
    "unknown" with the reason, and no addresses."""
    try:
        async with asyncio.timeout(READ_TIMEOUT):
            opts = await asyncio.to_thread(drbd_config.read_effective, resource)
    except (drbd_config.DrbdConfigError, TimeoutError, OSError) as e:
        return {"mode": "unknown", "policy": None, "handler": None, "note": str(e)}, ()
    summary = drbd_advice.fencing_summary(
        opts, advert, peer.fence_timeout if peer else None, heartbeat
    )
    return summary, opts.addresses
