"""TOML configuration -> frozen dataclasses.

Every option is declared once (type, default, range, unit, help) in the tables below; `load()`
collects *all* problems with their key paths and raises one ConfigError, so `check-config`
can list everything wrong at once. Nothing is ever silently replaced by a default (unlike
keepalived's "Using default" warnings): a value is either valid or an error.
"""

from __future__ import annotations

import ipaddress
import json
import math
import tomllib
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from pathlib import Path
from typing import Any, Final

from drbdha.errors import ConfigError

DEFAULT_PATH: Final = Path("/etc/drbdha/drbdha.toml")

IPAddress = IPv4Address | IPv6Address
IPInterface = IPv4Interface | IPv6Interface


class _Invalid(ValueError):
    """A value failed its check; the message is shown after the key path."""


@dataclass(frozen=True)
class DaemonConfig:
    control_socket: Path = Path("/run/drbdha/control.sock")
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


# ---- readers: raw TOML value -> typed value, or _Invalid(message) -------------------------


def _int(lo: int, hi: int) -> Callable[[Any], int]:
    def read(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise _Invalid(f"must be an integer, got {v!r}")
        if not lo <= v <= hi:
            raise _Invalid(f"must be in {lo}..{hi}, got {v}")
        return v

    return read


def _seconds(lo: float, hi: float) -> Callable[[Any], float]:
    def read(v: Any) -> float:
        # tomllib integers are unbounded and math.isfinite(10**400) raises OverflowError, so
        # only floats go through isfinite; the range check compares ints exactly.
        if (
            isinstance(v, bool)
            or not isinstance(v, int | float)
            or (isinstance(v, float) and not math.isfinite(v))
        ):
            raise _Invalid(f"must be a number of seconds, got {v!r}")
        if not lo <= v <= hi:
            raise _Invalid(f"must be in {lo}..{hi} seconds, got {v}")
        return float(v)

    return read


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise _Invalid(f"must be true or false, got {v!r}")
    return v


def _not_example(v: Any) -> bool:
    # The packaged /etc/drbdha/drbdha.toml is the example with `example = true`: its eth0,
    # vrid 51 and r0 could well exist on the machine, and an instance started from them would
    # advertise on a real LAN. Refused, so nothing runs until the admin has edited the file.
    if _bool(v):
        raise _Invalid(
            "this is the example file: set interface, vrid, virtual_ipaddress, the storage "
            "chain and [peer] for this node, then delete this line"
        )
    return False


def _str(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise _Invalid(f"must be a non-empty string, got {v!r}")
    return v


def _breaks_lines(c: str) -> bool:
    """A control character (C0, DEL, C1) or a Unicode line or paragraph separator: what ends
    or garbles a line of a file drbdha writes (str.splitlines() breaks on all of them)."""
    return unicodedata.category(c) in ("Cc", "Zl", "Zp")


def _plain(v: Any) -> str:
    """A string that goes into a generated file or a command line: no double quote (it would
    end the quoted word it is written into) and no control character (a newline starts a
    line of drbdha's choosing; NUL cannot be passed to a program at all)."""
    s = _str(v)
    if any(c == '"' or _breaks_lines(c) for c in s):
        raise _Invalid(f"must not contain quotes or control characters, got {v!r}")
    return s


def _choice(*choices: str) -> Callable[[Any], str]:
    def read(v: Any) -> str:
        if v not in choices:
            raise _Invalid(f"must be one of {', '.join(map(repr, choices))}, got {v!r}")
        return str(v)

    return read


def _interface_name(v: Any) -> str:
    name = _str(v)
    # The kernel's dev_valid_name(): IFNAMSIZ - 1, not "." or "..", no '/', ':' or
    # whitespace (it becomes a /proc/sys/net path); and no control characters.
    if (
        len(name) > 15
        or name in (".", "..")
        or any(c in "/:" or c.isspace() or _breaks_lines(c) for c in name)
    ):
        raise _Invalid(f"is not a valid interface name: {v!r}")
    return name


def _listen(v: Any) -> str:
    if v == "":
        return ""
    if not isinstance(v, str):
        raise _Invalid(f'must be "host:port" or "" to disable, got {v!r}')
    host, sep, port = v.rpartition(":")
    # isascii(): str.isdigit() is true for "²" and "٣", which int() rejects or misreads.
    if not sep or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise _Invalid(f'must be "host:port" or "" to disable, got {v!r}')
    bracketed = host.startswith("[") and host.endswith("]")
    if bracketed:
        host = host[1:-1]
    if host or bracketed:
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            raise _Invalid(f"host must be an IP address, got {host!r}") from None
        # "::1:9942" is ambiguous (port 9942 of ::1, or port 9942 of ::1:0?); RFC 3986 brackets.
        if addr.version != (6 if bracketed else 4):
            raise _Invalid(f'IPv6 hosts are written "[addr]:port", got {v!r}')
    return v


def _path(v: Any) -> Path:
    p = Path(_plain(v))
    if not p.is_absolute():
        raise _Invalid(f"must be an absolute path, got {v!r}")
    return p


def _list_of(
    item: Callable[[Any], Any], *, min_len: int = 0, max_len: int | None = None
) -> Callable[[Any], tuple[Any, ...]]:
    def read(v: Any) -> tuple[Any, ...]:
        if not isinstance(v, list):
            raise _Invalid(f"must be a list, got {v!r}")
        if len(v) < min_len:
            raise _Invalid(f"needs at least {min_len} entries")
        if max_len is not None and len(v) > max_len:
            raise _Invalid(f"allows at most {max_len} entries, got {len(v)}")
        out = []
        for i, x in enumerate(v):
            try:
                out.append(item(x))
            except _Invalid as e:
                raise _Invalid(f"[{i}] {e}") from None
        if len(set(out)) != len(out):
            raise _Invalid("has duplicate entries")
        return tuple(out)

    return read


def _vip(v: Any) -> IPInterface:
    if not isinstance(v, str) or "/" not in v:
        raise _Invalid(f'must be "address/prefix", got {v!r}')
    try:
        iface = ipaddress.ip_interface(v)
    except ValueError as e:
        raise _Invalid(str(e)) from None
    if iface.ip.is_multicast or iface.ip.is_unspecified or iface.ip.is_loopback:
        raise _Invalid(f"{v!r} cannot be a virtual address")
    return iface


def _drbd_name(v: Any) -> str:
    name = _str(v)
    # drbdadm reads "all" as every resource and "minor-N" as a device number: a promote or
    # a --force demote would reach resources that are not this chain's.
    if name == "all" or (name.startswith("minor-") and name[6:].isdecimal()):
        raise _Invalid(f"{v!r} means other resources to drbdadm: name the DRBD resource itself")
    # DRBD refuses '/', whitespace and control characters in a name; drbdadm takes it as an
    # argument (no option look-alikes), and drbdha reads it back from `drbdadm dump`, where
    # quotes, braces, ';', '#' and '\' are syntax.
    if (
        name.startswith("-")
        or len(name) > 128
        or any(c in '/"{};#\\' or c.isspace() or _breaks_lines(c) for c in name)
    ):
        raise _Invalid(
            f"is not a DRBD resource name (no whitespace, control characters or any of "
            f"/\"{{}};#\\, not '-' first, 128 at most): {v!r}"
        )
    return name


def _ip(v: Any) -> IPAddress:
    if not isinstance(v, str):  # ip_address(5) would be 0.0.0.5, ip_address(True) 0.0.0.1
        raise _Invalid(f"must be an IP address string, got {v!r}")
    try:
        addr = ipaddress.ip_address(v)
    except ValueError as e:
        raise _Invalid(str(e)) from None
    # A zone ("fe80::2%eth0") would make the address unequal to the zone-less sources the
    # sockets report: every advert, every fence request from the peer would be dropped.
    if "%" in v:
        raise _Invalid(f"must be written without a %zone, got {v!r}")
    return addr


def _not_a_host(addr: IPAddress) -> str | None:
    """What makes `addr` no other host's address, or None."""
    if isinstance(addr, IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped  # ::ffff:127.0.0.1 is loopback too
    if addr.is_unspecified:
        return "unspecified"
    if addr.is_loopback:
        return "loopback"
    if addr.is_multicast:
        return "multicast"
    return None


def _unicast_peer(v: Any) -> IPAddress:
    addr = _ip(v)
    kind = _not_a_host(addr)
    if kind is not None:
        raise _Invalid(f"{v!r} is a {kind} address, not a peer's")
    return addr


def _peer_address(v: Any) -> IPAddress:
    addr = _ip(v)
    kind = _not_a_host(addr)
    # Loopback is one of this node's own addresses, which belong to check-config (it can
    # look at the interfaces); tests/test_fencing_config.py's fence-peer runs use 127.0.0.1.
    if kind is not None and kind != "loopback":
        raise _Invalid(f"{v!r} is a {kind} address, not the peer's")
    if isinstance(addr, IPv6Address) and addr.is_link_local:
        # Without a zone connect() fails (EINVAL); with one, the peer's requests would not
        # match it (see _ip).
        raise _Invalid(f"{v!r} is link-local: use the peer's global or unique-local address")
    return addr


def _mountpoint(v: Any) -> Path:
    p = _path(v)
    if p == Path("/") or ".." in p.parts:
        raise _Invalid(f"must be a directory below /, without '..', got {v!r}")
    return p


def _made_of(name: str, extra: str) -> bool:
    """Only ASCII letters, digits and the characters of `extra`."""
    return all(c.isascii() and (c.isalnum() or c in extra) for c in name)


def _fstype(v: Any) -> str:
    name = _str(v)
    # mount -t NAME: a kernel filesystem name, never an option or a list ("nofoo,bar").
    if not _made_of(name, "._"):
        raise _Invalid(f"is not a filesystem type: {v!r}")
    return name


def _mount_options(v: Any) -> str:
    if v == "":
        return ""
    opts = _str(v)
    # Double quotes are libmount's own quoting of a value with commas (SELinux's
    # context="...,..."), passed on as one argument: only an unpaired one is refused.
    if (
        opts.startswith("-")
        or any(c.isspace() or _breaks_lines(c) for c in opts)
        or ",," in opts
        or opts.count('"') % 2
    ):
        raise _Invalid(f'must be mount(8) options such as "noatime,errors=remount-ro", got {v!r}')
    return opts


def _unit(v: Any) -> str:
    name = _str(v)
    kinds = (".service", ".socket", ".target", ".mount", ".timer", ".path")
    # systemd's own rule (unit_name_is_valid): these characters, one "@" before an instance,
    # 255 at most; "-" first would be read as an option by systemctl.
    if (
        name.startswith("-")
        or len(name) > 255
        or not _made_of(name, ":-_.\\@")
        or name.count("@") > 1
        or not name.endswith(kinds)
    ):
        raise _Invalid(f'must be a systemd unit name such as "nginx.service", got {v!r}')
    return name


def _host_name(name: str) -> bool:
    """RFC 1123 labels joined by single dots, as hostname(1) takes them (Debian's refuses an
    underscore, a leading or trailing '-' or '.', and ".." in a name); 64 at most."""
    labels = name.split(".")
    return len(name) <= 64 and all(
        0 < len(label) <= 63 and _made_of(label, "-") and label[0] != "-" and label[-1] != "-"
        for label in labels
    )


def _scope(v: Any) -> str:
    name = _str(v)
    # It becomes nfsd's hostname (HOST_NAME_MAX 64), as the nfsserver agent sets it: the
    # drop-in's `hostname "$0"` must take it, and it stands unquoted in an ExecStart= line.
    if not _host_name(name):
        raise _Invalid(
            f"must be a host name (letters, digits, '-' inside dot-separated labels; "
            f"64 at most), got {v!r}"
        )
    return name


_EXPORT_FORBIDDEN = frozenset("\"'()#\\")


def _export_unsafe(c: str) -> bool:
    """A character that would split or end an exports(5) line, or that exportfs reads as
    syntax: whitespace, control characters, quotes, parentheses, '#' and '\\'."""
    return c in _EXPORT_FORBIDDEN or c.isspace() or _breaks_lines(c)


def _export_path(v: Any) -> Path:
    p = _path(v)
    # Quoted in the exports line, whitespace would pass exportfs; but exportfs decodes a
    # backslash and three octal digits there, and etab lists such paths escaped ("\040"), so
    # drbdha's check that each path is exported (etab, and nfsd's unlock_filesystem by path)
    # would not find it. Refused rather than half-supported.
    if any(c in "#\\" or c.isspace() for c in str(p)):
        raise _Invalid(f"must not contain whitespace, '#' or '\\' (exports(5)), got {v!r}")
    return p


def _client(v: Any) -> str:
    spec = _str(v)
    if spec.startswith("-") or any(_export_unsafe(c) for c in spec):
        raise _Invalid(f'must be an exports(5) client such as "192.0.2.0/24", got {v!r}')
    return spec


def _export_options(v: Any) -> str:
    if v == "":
        return ""
    opts = _str(v)
    if any(_export_unsafe(c) for c in opts) or ",," in opts:
        raise _Invalid(f'must be exports(5) options such as "rw,sync", got {v!r}')
    if any(o.split("=")[0] == "fsid" for o in opts.split(",")):
        raise _Invalid("must not set fsid (the export's own `fsid` key sets it)")
    return opts


NAME_MAX: Final = 57
"""An instance's or a storage chain's name: at most 64 - len("drbdha-"), so the default NFS
server scope "drbdha-NAME" is still a host name's length."""


def _name(v: Any) -> str:
    name = _str(v)
    # It goes into file names (/etc/exports.d/drbdha-NAME.exports), drop-ins (the default
    # nfsd scope "drbdha-NAME"), comments, metric labels and key paths: a plain word only.
    if len(name) > NAME_MAX or not _made_of(name, "_-.") or name[0] in ".-":
        raise _Invalid(
            f"must be letters, digits, '_', '-', '.' (not '.' or '-' first; "
            f"{NAME_MAX} at most), got {v!r}"
        )
    return name


def _check_name(v: Any) -> str:
    name = _str(v)
    # A metrics label and a fault's name: "check:NAME".
    if len(name) > 64 or not _made_of(name, "-_."):
        raise _Invalid(f"must be letters, digits, '-', '_', '.' (64 at most), got {v!r}")
    return name


def _command(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not v or not all(isinstance(a, str) for a in v):
        raise _Invalid(f"must be a list of strings (the argv, no shell), got {v!r}")
    if not v[0].startswith("/"):
        raise _Invalid(f"must start with an absolute path to the program, got {v[0]!r}")
    # Run without a shell, so anything goes but NUL, which no argv can carry (subprocess
    # would raise ValueError at the first run).
    if any("\0" in a for a in v):
        raise _Invalid(f"must not contain a NUL character, got {v!r}")
    return tuple(v)


def _fsid(v: Any) -> int | str:
    if isinstance(v, int) and not isinstance(v, bool):
        if not 1 <= v <= 0xFFFFFFFF:  # 0 is the NFSv4 root, a different thing
            raise _Invalid(f"must be in 1..4294967295 or a UUID, got {v}")
        return v
    if isinstance(v, str):
        import uuid  # noqa: PLC0415 (the only user)

        try:
            return str(uuid.UUID(v))
        except ValueError:
            pass
    raise _Invalid(f"must be an integer in 1..4294967295 or a UUID, got {v!r}")


# ---- the option tables: key -> (reader, default or _REQUIRED) ---------------------------

_REQUIRED: Final = object()

DAEMON_OPTIONS: Final[dict[str, tuple[Callable[[Any], Any], Any]]] = {
    "control_socket": (_path, DaemonConfig.control_socket),
    "metrics_listen": (_listen, DaemonConfig.metrics_listen),
    "log_level": (_choice("debug", "info", "warning", "error"), DaemonConfig.log_level),
    "state_dir": (_path, DaemonConfig.state_dir),
    "example": (_not_example, False),  # not a setting: never reaches DaemonConfig
}

INSTANCE_OPTIONS: Final[dict[str, tuple[Callable[[Any], Any], Any]]] = {
    "name": (_name, _REQUIRED),
    "interface": (_interface_name, _REQUIRED),
    "vrid": (_int(1, 255), _REQUIRED),
    "priority": (_int(1, 255), 100),
    "version": (_int(2, 3), 3),
    "advert_interval": (_seconds(0.01, 255), 1.0),
    # RFC 5798 §5.2.5: "Count IPvX Addr" is an 8-bit field of the advert.
    "virtual_ipaddress": (_list_of(_vip, min_len=1, max_len=255), _REQUIRED),
    "preempt": (_bool, True),
    "preempt_delay": (_seconds(0, 1000), 0.0),
    "unicast_peers": (_list_of(_unicast_peer), ()),
    "checksum_mode": (_choice("pseudo", "rfc9568"), "pseudo"),
    "garp_master_repeat": (_int(0, 100), 5),
    "garp_master_delay": (_seconds(0, 3600), 5.0),
    "garp_master_refresh": (_seconds(0, 86400), 60.0),
    "storage": (_str, None),
}

STORAGE_OPTIONS: Final[dict[str, tuple[Callable[[Any], Any], Any]]] = {
    "drbd_resource": (_drbd_name, _REQUIRED),
    "on_disk_loss": (_choice("failover", "ignore"), StorageConfig.on_disk_loss),
    "on_demote_failure": (
        _choice("fault", "reboot", "poweroff"),
        StorageConfig.on_demote_failure,
    ),
    "promote_timeout": (_seconds(1, 3600), StorageConfig.promote_timeout),
    "demote_timeout": (_seconds(1, 3600), StorageConfig.demote_timeout),
    "promote_backoff": (_seconds(1, 3600), StorageConfig.promote_backoff),
    "vip_timeout": (_seconds(1, 600), StorageConfig.vip_timeout),
    "device": (_path, None),
    "mountpoint": (_mountpoint, None),
    "fstype": (_fstype, StorageConfig.fstype),
    "mount_options": (_mount_options, StorageConfig.mount_options),
    "fsck": (_choice("auto", "always", "never"), StorageConfig.fsck),
    "mount_timeout": (_seconds(1, 3600), StorageConfig.mount_timeout),
    "unmount_timeout": (_seconds(1, 600), StorageConfig.unmount_timeout),
    "services": (_list_of(_unit), StorageConfig.services),
    "services_timeout": (_seconds(1, 3600), StorageConfig.services_timeout),
    "nfs_state_dir": (_path, None),
    "nfsd_threads": (_int(1, 1024), StorageConfig.nfsd_threads),
    # Linux refuses a lease below 10 s (nfsd's nfsctl.c __nfsd4_write_time).
    "nfsv4_lease_time": (_int(10, 3600), StorageConfig.nfsv4_lease_time),
    "nfsv4_grace_time": (_int(10, 3600), StorageConfig.nfsv4_grace_time),
    "nfs_server_scope": (_scope, None),
    "nfs_start_timeout": (_seconds(1, 3600), StorageConfig.nfs_start_timeout),
    "nfs_stop_timeout": (_seconds(1, 3600), StorageConfig.nfs_stop_timeout),
    "builtin_checks": (_bool, StorageConfig.builtin_checks),
    "takeover_damping": (_seconds(0, 3600), StorageConfig.takeover_damping),
    "replication_heartbeat": (_seconds(0, 10), StorageConfig.replication_heartbeat),
    "replication_heartbeat_port": (_int(1, 65535), StorageConfig.replication_heartbeat_port),
}

BUILTIN_CHECKS: Final = ("filesystem", "nfsd", "exports")

CHECK_OPTIONS: Final[dict[str, tuple[Callable[[Any], Any], Any]]] = {
    "name": (_check_name, _REQUIRED),
    "command": (_command, _REQUIRED),
    "interval": (_seconds(0.1, 3600), CheckConfig.interval),
    "timeout": (_seconds(0.1, 3600), CheckConfig.timeout),
    "rise": (_int(1, 100), CheckConfig.rise),
    "fall": (_int(1, 100), CheckConfig.fall),
    "weight": (_int(0, 253), CheckConfig.weight),
}

EXPORT_OPTIONS: Final[dict[str, tuple[Callable[[Any], Any], Any]]] = {
    "path": (_export_path, _REQUIRED),
    "clients": (_list_of(_client, min_len=1), _REQUIRED),
    "fsid": (_fsid, _REQUIRED),
    "options": (_export_options, ExportConfig.options),
}


PEER_OPTIONS: Final[dict[str, tuple[Callable[[Any], Any], Any]]] = {
    "address": (_peer_address, _REQUIRED),
    "secret_file": (_path, _REQUIRED),
    "port": (_int(1, 65535), PeerConfig.port),
    "fence_timeout": (_seconds(0.1, 60), PeerConfig.fence_timeout),
}


def _read_table(
    raw: Any,
    options: dict[str, tuple[Callable[[Any], Any], Any]],
    path: str,
    problems: list[tuple[str, str]],
) -> dict[str, Any]:
    if not isinstance(raw, dict):
        problems.append((path, "must be a table"))
        return {}
    out: dict[str, Any] = {}
    problems.extend((f"{path}.{key}", "unknown key") for key in raw.keys() - options.keys())
    for key, (reader, default) in options.items():
        if key not in raw:
            if default is _REQUIRED:
                problems.append((f"{path}.{key}", "is required"))
            else:
                out[key] = default
            continue
        try:
            out[key] = reader(raw[key])
        except _Invalid as e:
            problems.append((f"{path}.{key}", str(e)))
    return out


def _check_instance(inst: dict[str, Any], path: str, problems: list[tuple[str, str]]) -> None:
    """Rules that involve more than one key of an instance."""
    version, interval = inst.get("version"), inst.get("advert_interval")
    if version == 2 and interval is not None and interval != int(interval):
        # RFC 3768 §5.3.7: the v2 field is whole seconds. keepalived rounds with a warning;
        # we refuse, so what runs is what was written.
        problems.append((f"{path}.advert_interval", f"VRRPv2 needs whole seconds, got {interval}"))
    if version == 3 and interval is not None:
        if interval > 40.95:
            problems.append(
                (f"{path}.advert_interval", f"VRRPv3 allows at most 40.95, got {interval}")
            )
        elif abs(interval * 100 - round(interval * 100)) > 1e-6:
            problems.append(
                (f"{path}.advert_interval", f"VRRPv3 has centisecond steps, got {interval}")
            )
    vips = inst.get("virtual_ipaddress") or ()
    families = {v.version for v in vips}
    if len(families) > 1:
        problems.append(
            (f"{path}.virtual_ipaddress", "mixes IPv4 and IPv6; use one instance per family")
        )
    if version == 2 and 6 in families:
        problems.append((f"{path}.version", "VRRPv2 is IPv4 only (RFC 3768); use version = 3"))
    peers = inst.get("unicast_peers") or ()
    if families and any(p.version not in families for p in peers):
        problems.append(
            (f"{path}.unicast_peers", "must be of the same family as the virtual addresses")
        )
    if inst.get("checksum_mode") == "rfc9568" and (version == 2 or 6 in families):
        problems.append((f"{path}.checksum_mode", '"rfc9568" applies to VRRPv3 over IPv4 only'))


def parse(data: dict[str, Any], source: Path | None = None) -> Config:
    sections = {"daemon", "vrrp_instance", "storage", "peer"}
    problems = [(key, "unknown section") for key in data.keys() - sections]
    daemon = _read_table(data.get("daemon", {}), DAEMON_OPTIONS, "daemon", problems)
    daemon.pop("example", None)
    raw_instances = data.get("vrrp_instance", [])
    if not isinstance(raw_instances, list) or not raw_instances:
        problems.append(("vrrp_instance", "at least one [[vrrp_instance]] is required"))
        raw_instances = []
    instances = []
    for i, raw in enumerate(raw_instances):
        path = f"vrrp_instance[{i}]"
        inst = _read_table(raw, INSTANCE_OPTIONS, path, problems)
        _check_instance(inst, path, problems)
        instances.append(inst)
    _check_unique(instances, problems)
    storage = _read_storage(data.get("storage", {}), problems)
    _check_storage_refs(instances, storage, problems)
    peer = _read_table(data["peer"], PEER_OPTIONS, "peer", problems) if "peer" in data else None
    if problems:
        raise ConfigError(sorted(problems))
    return Config(
        daemon=DaemonConfig(**daemon),
        vrrp_instances=tuple(VrrpInstanceConfig(**i) for i in instances),
        source=source,
        storage={name: StorageConfig(name=name, **s) for name, s in storage.items()},
        peer=PeerConfig(**peer) if peer is not None else None,
    )


def _key(name: str) -> str:
    """A table name as it is written in a key path: bare if TOML allows, else quoted as a
    TOML basic string (a name with a '.' or a newline must not look like two keys)."""
    if isinstance(name, str) and name and _made_of(name, "_-"):
        return name
    return json.dumps(name)  # JSON's escapes are TOML's for a basic string


def _read_storage(raw: Any, problems: list[tuple[str, str]]) -> dict[str, dict[str, Any]]:
    if not isinstance(raw, dict):
        problems.append(("storage", "must be a table of [storage.NAME] tables"))
        return {}
    out = {}
    for name, table in raw.items():
        path = f"storage.{_key(name)}"
        try:
            _name(name)
        except _Invalid as e:
            problems.append((path, f"name {e}"))
        lists = ("exports", "checks")
        flat = (
            {k: v for k, v in table.items() if k not in lists} if isinstance(table, dict) else table
        )
        out[name] = _read_table(flat, STORAGE_OPTIONS, path, problems)
        if isinstance(table, dict):
            out[name]["exports"] = _read_exports(table.get("exports", []), path, problems)
            out[name]["checks"] = _read_checks(table.get("checks", []), path, problems)
            _check_filesystem(table, path, problems)
            _check_nfs(table, out[name], path, problems)
    resources: dict[str, str] = {}
    for name, s in out.items():
        res = s.get("drbd_resource")
        if res is None:
            continue
        if res in resources:
            # Two chains promoting one resource would fight over it.
            problems.append(
                (
                    f"storage.{_key(name)}.drbd_resource",
                    f"already used by storage.{_key(resources[res])}",
                )
            )
        resources.setdefault(res, name)
    return out


FILESYSTEM_KEYS: Final = ("device", "fstype", "mount_options", "fsck", "mount_timeout")


def _check_filesystem(raw: dict[str, Any], path: str, problems: list[tuple[str, str]]) -> None:
    # A filesystem key without a mountpoint was written for a step that would not run.
    if "mountpoint" not in raw:
        problems.extend(
            (f"{path}.{key}", "needs mountpoint (without it the chain mounts nothing)")
            for key in FILESYSTEM_KEYS
            if key in raw
        )


NFS_KEYS: Final = (
    "nfsd_threads",
    "nfsv4_lease_time",
    "nfsv4_grace_time",
    "nfs_server_scope",
    "nfs_start_timeout",
    "nfs_stop_timeout",
)


def _read_tables(
    raw: Any,
    options: dict[str, tuple[Callable[[Any], Any], Any]],
    path: str,
    problems: list[tuple[str, str]],
) -> list[tuple[str, dict[str, Any]]]:
    """An array of tables (`[[...NAME]]`) read with `options`: (key path, values) of each
    table whose required keys all read (the others are problems already)."""
    if not isinstance(raw, list):
        name = path.rsplit(".", 1)[1]
        problems.append((path, f"must be a list of [[...{name}]] tables"))
        return []
    required = {k for k, (_, default) in options.items() if default is _REQUIRED}
    out = []
    for i, table in enumerate(raw):
        values = _read_table(table, options, f"{path}[{i}]", problems)
        if required <= values.keys():
            out.append((f"{path}[{i}]", values))
    return out


def _read_exports(raw: Any, path: str, problems: list[tuple[str, str]]) -> tuple[ExportConfig, ...]:
    tables = _read_tables(raw, EXPORT_OPTIONS, f"{path}.exports", problems)
    return tuple(ExportConfig(**e) for _, e in tables)


def _read_checks(raw: Any, path: str, problems: list[tuple[str, str]]) -> tuple[CheckConfig, ...]:
    checks: list[CheckConfig] = []
    for key, c in _read_tables(raw, CHECK_OPTIONS, f"{path}.checks", problems):
        if c["name"] in BUILTIN_CHECKS:
            problems.append((f"{key}.name", "is a built-in check's name"))
        elif any(c["name"] == other.name for other in checks):
            problems.append((f"{key}.name", "already used by another check"))
        checks.append(CheckConfig(**c))
    return tuple(checks)


def _below(p: Path, top: Path) -> bool:
    return p != top and p.is_relative_to(top) and ".." not in p.parts


def _check_nfs(
    raw: dict[str, Any], s: dict[str, Any], path: str, problems: list[tuple[str, str]]
) -> None:
    if "nfs_state_dir" not in s:
        return  # given but invalid: already a problem, checks against it would only echo it
    state, mp, exports = s["nfs_state_dir"], s.get("mountpoint"), s["exports"]
    mp_invalid = "mountpoint" in raw and "mountpoint" not in s
    if state is None:
        problems.extend(
            (f"{path}.{key}", "needs nfs_state_dir (without it the chain runs no NFS server)")
            for key in (*NFS_KEYS, "exports")
            if key in raw
        )
        return
    if mp_invalid:
        mp = None
    elif mp is None:
        problems.append(
            (f"{path}.nfs_state_dir", "needs mountpoint (it is on the DRBD filesystem)")
        )
    elif not _below(state, mp):
        problems.append((f"{path}.nfs_state_dir", f"must be a directory below mountpoint {mp}"))
    if not raw.get("exports"):
        problems.append((f"{path}.exports", "an NFS server needs at least one export"))
    fsids: dict[int | str, int] = {}
    for i, e in enumerate(exports):
        key = f"{path}.exports[{i}]"
        if mp is not None and not (e.path == mp or _below(e.path, mp)):
            problems.append((f"{key}.path", f"must be mountpoint {mp} or below it"))
        if e.fsid in fsids:
            problems.append((f"{key}.fsid", f"already used by exports[{fsids[e.fsid]}]"))
        fsids.setdefault(e.fsid, i)
    paths = [e.path for e in exports]
    problems.extend(
        (f"{path}.exports[{i}].path", "exported twice (one entry lists all its clients)")
        for i, p in enumerate(paths)
        if p in paths[:i]
    )


def _check_storage_refs(
    instances: list[dict[str, Any]],
    storage: dict[str, dict[str, Any]],
    problems: list[tuple[str, str]],
) -> None:
    users: dict[str, int] = {}
    for i, inst in enumerate(instances):
        name = inst.get("storage")
        if name is None:
            continue
        if name not in storage:
            problems.append((f"vrrp_instance[{i}].storage", f"no [storage.{_key(name)}] section"))
        elif inst.get("priority") == 255:
            # The address owner becomes master at once, before any promotion gate.
            problems.append(
                (f"vrrp_instance[{i}].priority", "255 (address owner) cannot have storage")
            )
        elif name in users:
            # One chain, one master: two instances could make two nodes bring it up.
            problems.append(
                (f"vrrp_instance[{i}].storage", f"already used by vrrp_instance[{users[name]}]")
            )
        users.setdefault(name, i)
    problems.extend(
        (f"storage.{_key(name)}", "not used by any [[vrrp_instance]]")
        for name in storage.keys() - users.keys()
    )
    for name, i in users.items():
        if name in storage:
            _check_default_scope(instances[i], i, name, storage[name], problems)


def _check_default_scope(
    inst: dict[str, Any], i: int, chain: str, s: dict[str, Any], problems: list[tuple[str, str]]
) -> None:
    """Without nfs_server_scope, the NFS server scope is "drbdha-" and the instance's name,
    nfsd's hostname in its drop-in: it must be one (no '_', no ".." or "-." in it)."""
    if "name" not in inst or s.get("nfs_state_dir") is None or "nfs_server_scope" not in s:
        return  # no NFS server, or already a problem
    scope = f"drbdha-{inst['name']}"
    if s["nfs_server_scope"] is None and not _host_name(scope):
        why = (
            f"makes the NFS server scope {scope!r}, which is no host name (letters, digits, "
            f"'-' inside dot-separated labels): rename the instance or set "
            f"storage.{_key(chain)}.nfs_server_scope"
        )
        problems.append((f"vrrp_instance[{i}].name", why))


def _check_unique(instances: list[dict[str, Any]], problems: list[tuple[str, str]]) -> None:
    names: dict[str, int] = {}
    ids: dict[tuple[str, int, int], int] = {}
    for i, inst in enumerate(instances):
        if "name" in inst:
            if inst["name"] in names:
                problems.append(
                    (f"vrrp_instance[{i}].name", f"duplicates vrrp_instance[{names[inst['name']]}]")
                )
            names.setdefault(inst["name"], i)
        if {"interface", "vrid", "virtual_ipaddress"} <= inst.keys() and inst["virtual_ipaddress"]:
            # RFC 5798 §5.2.3: a VRID identifies one virtual router per interface and family.
            key = (inst["interface"], inst["vrid"], inst["virtual_ipaddress"][0].version)
            if key in ids:
                problems.append(
                    (
                        f"vrrp_instance[{i}].vrid",
                        f"duplicates vrrp_instance[{ids[key]}] on {key[0]}",
                    )
                )
            ids.setdefault(key, i)


def load(path: Path = DEFAULT_PATH) -> Config:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError([(str(path), "file not found")]) from None
    except PermissionError:
        raise ConfigError([(str(path), "permission denied")]) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        # tomllib lets UnicodeDecodeError through for bytes that are not UTF-8.
        raise ConfigError([(str(path), f"not valid TOML: {e}")]) from None
    except OSError as e:  # a directory, EIO, ...
        raise ConfigError([(str(path), f"cannot read: {e.strerror or e}")]) from None
    return parse(data, source=path)
