"""Do NFS clients reach this copy while DRBD's peer is away? The evidence for
drbd_guard.holds_for_clients.

Two nodes that cannot hear each other on either network can both be DRBD Primary (README,
"Two nodes: what cannot be told apart"); at the heal the service must go to the copy that
has the clients' writes. That is the copy the clients reached, and only the node that
serves can see it: while a node is master and DRBD Primary without its peer, and holds
nothing yet, this task looks once a POLL at its clients' connections to the VIP (nfsd's,
on the NFS ports) and reports when a client last sent data on one (the kernel's tcp_info,
by sock_diag). The storage room counts it only if it came after DRBD lost the peer.

Why a segment's arrival and not nfsd's counters (/proc/net/rpc/nfsd): a call counted after
the link was lost may have arrived before it and waited behind the fencing freeze, and a
master cut off on both networks would count it as evidence it does not have. Why not
DRBD's out-of-sync count: mounting the filesystem and starting nfsd write to the copy too,
on a node no client reaches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from drbdha.clock import Clock
from drbdha.net import tickle
from drbdha.resources import nfs_clients

POLL = 1.0  # seconds between looks; the hold must be on before a heal puts the nodes together

LastData = Callable[[Sequence[str], Sequence[int]], float | None]


@dataclass(frozen=True, slots=True)
class ClientsHeard:
    """Inbox event: a client last sent data on a VIP connection at `at` (monotonic)."""

    resource: str
    at: float


@dataclass(frozen=True, slots=True)
class ReachWatch:
    # The resources to look at now, each with its VIPs (the storage room's `unheld`).
    wanted: Callable[[], Sequence[tuple[str, Sequence[str]]]]
    put: Callable[[ClientsHeard], None]
    clock: Clock
    last_data: LastData = tickle.last_data
    poll: float = POLL

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.poll)
            for resource, vips in self.wanted():
                at = await look(self.last_data, vips, self.clock.monotonic())
                if at is not None:
                    self.put(ClientsHeard(resource, at))


async def look(last_data: LastData, vips: Sequence[str], now: float) -> float | None:
    """When a client last sent data on a connection to one of `vips` (monotonic, on the
    clock of `now`, read before the look: the moment errs early, never late), or None. In a
    thread: pyroute2's socket runs an event loop of its own, which cannot start in ours."""
    age = await asyncio.to_thread(last_data, vips, nfs_clients.nfs_ports())
    return None if age is None else now - age
