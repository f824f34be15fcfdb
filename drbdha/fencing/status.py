"""How each storage chain's DRBD resource is fenced, read once at start for `drbdha status`
(an unfenced resource says how long its window is)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from drbdha.config import PeerConfig
from drbdha.resources import drbd_advice, drbd_config

READ_TIMEOUT = 15.0  # seconds for drbdadm dump (it has its own 10 s bound)


async def fill(
    instances: list[Any],
    peer: PeerConfig | None,
    addresses: Callable[[str, tuple[str, ...]], None] | None = None,
) -> None:
    """Set inst.fencing for every instance with storage, and hand each resource's DRBD
    replication addresses to `addresses` (the replication heartbeat's). drbdadm runs in a
    thread: the loop keeps turning. Never raises (it runs in the daemon's task group)."""
    for inst in instances:
        if inst.storage is None:
            continue
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                opts = await asyncio.to_thread(
                    drbd_config.read_effective, inst.storage.drbd_resource
                )
        except (drbd_config.DrbdConfigError, TimeoutError, OSError) as e:
            inst.fencing = {"mode": "unknown", "policy": None, "handler": None, "note": str(e)}
            continue
        inst.fencing = drbd_advice.fencing_summary(
            opts,
            inst.cfg.advert_interval,
            peer.fence_timeout if peer else None,
            inst.storage.replication_heartbeat,
        )
        if addresses is not None:
            addresses(inst.storage.drbd_resource, opts.addresses)
