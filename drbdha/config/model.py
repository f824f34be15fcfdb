"""The configuration as the daemon reads it: one frozen dataclass per table of the file.

The defaults written here are the defaults of the option tables (schema.py takes them from
these classes), so each is written once; a field's docstring says what it means and in which
unit. Nothing here reads or checks a file (loader.py does): these are plain values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from pathlib import Path

from drbdha import defaults

IPAddress = IPv4Address | IPv6Address
IPInterface = IPv4Interface | IPv6Interface


@dataclass(frozen=True)
class DaemonConfig:
    control_socket: Path = defaults.CONTROL_SOCKET
    """Unix socket for `drbdha status` and `force-failover`."""
    metrics_listen: str = "127.0.0.1:9943"  # 9942 is drbd-reactor's
    """host:port of the Prometheus endpoint; "" disables it."""
    log_level: str = "info"
    state_dir: Path = Path("/var/lib/drbdha")
    """Where latches are kept across restarts (a latched disk must stay latched)."""


@dataclass(frozen=True)
class PeerConfig:
    """The other node's drbdha, for DRBD's fence-peer handler (`[peer]`): reached on the
    service network, where VRRP runs, never over DRBD's own replication link."""

    address: IPv4Address | IPv6Address
    """The peer's address on the service network."""
    secret_file: Path
    """Shared secret (the same file on both nodes), root-only; the HMAC key of the channel."""
    port: int = 9944
    """TCP port both daemons listen on (9942 is drbd-reactor's metrics, 9943 ours)."""
    fence_timeout: float = 0.5
    """Seconds `drbdha fence-peer` tries to reach the peer before it reports it unreachable
    (DRBD then takes it as dead): a Primary's I/O is frozen that long when the peer died."""


@dataclass(frozen=True)
class ExportConfig:
    """One NFS export (`[[storage.NAME.exports]]`), written as exports(5) has it."""

    path: Path
    clients: tuple[str, ...]
    fsid: int | str
    """Fixed and the same on both nodes: file handles carry it, so a client keeps its
    handles across a failover (a derived fsid would change with the device number)."""
    options: str = "rw,sync,no_subtree_check"

    def line(self) -> str:
        """This export's line for exports(5): the path, then each client(options,fsid)."""
        opts = f"{self.options},fsid={self.fsid}" if self.options else f"fsid={self.fsid}"
        return " ".join([f'"{self.path}"', *(f"{c}({opts})" for c in self.clients)])


@dataclass(frozen=True)
class CheckConfig:
    """A health check of the admin's (`[[storage.NAME.checks]]`), keepalived's track script
    semantics: `fall` failures in a row make it failing, `rise` successes in a row healthy
    again; failing with weight 0 is a FAULT, else the priority drops by `weight`."""

    name: str
    command: tuple[str, ...]
    interval: float = 2.0
    timeout: float = 5.0
    rise: int = 2
    fall: int = 2
    weight: int = 0


@dataclass(frozen=True)
class StorageConfig:
    """One storage chain: what a master brings up below its VIP (`[storage.NAME]`)."""

    name: str
    drbd_resource: str
    on_disk_loss: str = "failover"
    """"failover": a Primary whose disk fails hands over to an UpToDate peer and latches;
    "ignore": only alert (drbd-reactor's default)."""
    on_demote_failure: str = "fault"
    """After `secondary` and `secondary --force` failed: "fault" (stay in FAULT, never
    advertise again until restarted), "reboot" or "poweroff"."""
    promote_timeout: float = 30.0
    demote_timeout: float = 30.0
    promote_backoff: float = 15.0
    """Seconds without a new promote attempt after DRBD refused one (exit 17/5)."""
    vip_timeout: float = 10.0
    device: Path | None = None
    """The block device to mount; None: the DRBD resource's device (its only volume)."""
    mountpoint: Path | None = None
    """None: no filesystem step (a DRBD-only chain)."""
    fstype: str = "auto"
    """"auto": the type blkid(8) reads on the device."""
    mount_options: str = ""
    fsck: str = "auto"
    """"auto": only filesystems without a journal (ext2, vfat, an ext4 made without one);
    "always"; "never". fsck runs in preen mode (-a): a filesystem marked clean is not read."""
    mount_timeout: float = 60.0
    """Seconds for fsck and mount together."""
    unmount_timeout: float = 30.0
    """Seconds for unmounting: holders get TERM for the first half, then KILL."""
    services: tuple[str, ...] = ()
    """systemd units started once the filesystem is up, stopped before it goes down."""
    services_timeout: float = 60.0
    nfs_state_dir: Path | None = None
    """A directory on the DRBD filesystem bound on /var/lib/nfs while this node serves;
    None: no NFS server in this chain."""
    nfsd_threads: int = 8
    nfsv4_lease_time: int = 90
    nfsv4_grace_time: int = 90
    nfs_server_scope: str | None = None
    """None: "drbdha-" and the vrrp_instance's name (the same on both nodes)."""
    exports: tuple[ExportConfig, ...] = ()
    nfs_start_timeout: float = 60.0
    nfs_stop_timeout: float = 60.0
    checks: tuple[CheckConfig, ...] = ()
    builtin_checks: bool = True
    """Check the chain itself while it is up: mounted and writable, nfsd answering, every
    export there (each a FAULT after two failures in a row, every 2 s)."""
    takeover_damping: float = 20.0
    """Seconds after a check made this node give up the service during which it does not
    take it back by preemption (a flapping check must not move it back and forth)."""
    replication_heartbeat: float = 0.1
    """Seconds between heartbeats over DRBD's replication addresses; a Secondary that finds
    them silent while the Primary still advertises outdates its copy (0: off)."""
    replication_heartbeat_port: int = 9945
    """UDP port of the heartbeat on the replication addresses, the same on both nodes."""


KeySpec = bytes | Path
"""A key as configured: its bytes (written inline) or the root-only file that holds it."""


@dataclass(frozen=True)
class AuthHmacConfig:
    """keepalived 2.4's `auth_hmac` (`[vrrp_instance.auth_hmac]`): an HMAC-SHA256 trailer on
    every advert, so that only holders of the shared key can move the election."""

    keys: tuple[tuple[int, KeySpec], ...] = field(repr=False)  # never in a log line
    """(id 1-255, key): "hex:...", "file:PATH" (root-only; hex:... or ASCII inside) or an
    ASCII key; each 32-64 bytes."""
    active_key: int | None = None
    """The id this node signs with; None only in "receive-only" mode."""
    mode: str = "enforce"
    """"enforce", or keepalived's rollout steps "receive-only" (verify what is signed, sign
    nothing) and "permissive" (sign, still accept unsigned adverts)."""
    anti_replay: str = "time"
    """"time" (the sender's clock within time_window of ours, and growing) or "monotonic"."""
    time_window: int | None = None
    """Seconds; None: max(3 x advert_interval, 5)."""


@dataclass(frozen=True)
class VrrpInstanceConfig:
    name: str
    interface: str
    vrid: int
    priority: int
    version: int
    advert_interval: float
    """Seconds. v2: whole seconds 1..255. v3: 0.01..40.95 in steps of 0.01."""
    virtual_ipaddress: tuple[IPInterface, ...]
    preempt: bool = True
    preempt_delay: float = 0.0
    unicast_peers: tuple[IPAddress, ...] = ()
    checksum_mode: str = "pseudo"
    garp_master_repeat: int = 5
    garp_master_delay: float = 5.0
    garp_master_refresh: float = 60.0
    storage: str | None = None
    """Name of the [storage.NAME] chain this instance brings up as master; None: VIP only."""
    auth_hmac: AuthHmacConfig | None = None

    @property
    def family(self) -> int:
        return self.virtual_ipaddress[0].version if self.virtual_ipaddress else 4


@dataclass(frozen=True)
class Config:
    daemon: DaemonConfig
    vrrp_instances: tuple[VrrpInstanceConfig, ...]
    source: Path | None = field(default=None, compare=False)
    storage: dict[str, StorageConfig] = field(default_factory=dict)
    peer: PeerConfig | None = None

    def storage_of(self, inst: VrrpInstanceConfig) -> StorageConfig | None:
        return None if inst.storage is None else self.storage[inst.storage]
