"""What the storage room knows of one instance's chain: its DRBD facts, latches and alerts,
the observation rule's memory, the heartbeat's watch, the checks and how the resource is
fenced. One object per instance, kept by the storage room (storage.py `Chains.states`); the
Instance itself is VRRP only."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

from drbdha.daemon.health import Health
from drbdha.latches import Latch
from drbdha.resources.drbd_events import Resource
from drbdha.resources.repl_watch import ReplicationWatch

IPAddress = IPv4Address | IPv6Address


@dataclass
class StorageState:
    drbd: Resource | None = None  # the latest DRBD facts
    latches: dict[str, Latch] = field(default_factory=dict)
    alerts: dict[str, str] = field(default_factory=dict)  # kind -> message
    link_lost_at: float | None = None  # DRBD lost its Primary peer while we were Secondary
    fencing: dict[str, str | None] | None = None  # status: how the resource is fenced
    health: Health | None = None  # the chain's checks
    # The observation rule (storage.py `heard`): whose adverts prove the Primary alive.
    trusted_masters: frozenset[IPAddress] = frozenset()  # [peer].address, unicast_peers
    known_master: IPAddress | None = None  # without those: the master heard while healthy
    repl: ReplicationWatch | None = None  # the replication heartbeat, once set up
    repl_peers: tuple[str, ...] = ()  # the peer's DRBD replication addresses
    # This copy holds writes the peer's lacks (drbd_guard.wrote_alone): the peer channel
    # refuses to outdate it (fencing/server.py, wire.NEWER).
    wrote_alone: bool = False
    # NFS clients reached this copy while it was Primary with its peer cut off, and it
    # serves since (drbd_guard.holds_for_clients): VRRP holds the role for it
    # (Machine.hold_for_data). `peer_gone_since` (monotonic): DRBD's peer not connected
    # since then; `clients_reached`: a client's data seen on a VIP connection after that
    # (daemon/reach.py).
    holding: bool = False
    peer_gone_since: float | None = None
    clients_reached: bool = False
    # We heard a master holding for its copy with our link gone: outdated once, until the
    # copies connect again (suspicion.py `behind_a_holder`).
    behind_holder: bool = False
    # Found stale (daemon/stale.py): latched, and DRBD's frozen I/O is resumed once the VIP
    # is gone so that the release can finish.
    stale: bool = False
    # Primary without DRBD 9 quorum: resigning, with the NFS steps' stops let fail (their
    # writes to the DRBD filesystem fail, on-no-quorum io-error), until quorum is back or
    # this node is demoted (suspicion.py `quorum_watch`).
    quorum_lost: bool = False
    # This node was stopped for `stalled_for` seconds; until `stalled_until` (monotonic) a
    # lost link outdates our copy once, and a silent peer is not dead (daemon/stall.py).
    stalled_until: float | None = None
    stalled_for: float = 0.0
    outdated_after_stall: bool = False
    # Its link was lost in that window: out of the election until DRBD guards the copy or
    # the copies meet again (drbd_guard.still_suspect); the outdate is retried meanwhile.
    suspect: bool = False
