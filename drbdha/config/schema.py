"""The option tables: every key of every table, once, with its reader and its default.

A table maps a key to (reader, default); the default is `_REQUIRED` for a key that must be
written, else the value a missing key takes, most of them the dataclass's own (model.py).
etc/drbdha.toml documents every key of these tables (tests/test_config.py and
tests/test_manpages.py check it; drbdha.toml(5) is generated from that file).

Adding an option: its field in model.py, its row here, its comment in etc/drbdha.toml; a
reader in validators.py if none fits; a rule in rules.py if it depends on another key.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

from drbdha.config.model import (
    AuthHmacConfig,
    CheckConfig,
    DaemonConfig,
    ExportConfig,
    PeerConfig,
    StorageConfig,
)
from drbdha.config.validators import (
    _auth_keys,
    _bool,
    _check_name,
    _choice,
    _client,
    _command,
    _drbd_name,
    _export_options,
    _export_path,
    _fsid,
    _fstype,
    _int,
    _interface_name,
    _list_of,
    _listen,
    _made_of,
    _mount_options,
    _mountpoint,
    _name,
    _not_example,
    _path,
    _peer_address,
    _scope,
    _seconds,
    _str,
    _unicast_peer,
    _unit,
    _vip,
)

Options = dict[str, tuple[Callable[[Any], Any], Any]]
"""key -> (reader, default or _REQUIRED)"""

_REQUIRED: Final = object()

DAEMON_OPTIONS: Final[Options] = {
    "control_socket": (_path, DaemonConfig.control_socket),
    "metrics_listen": (_listen, DaemonConfig.metrics_listen),
    "log_level": (_choice("debug", "info", "warning", "error"), DaemonConfig.log_level),
    "state_dir": (_path, DaemonConfig.state_dir),
    "example": (_not_example, False),  # not a setting: never reaches DaemonConfig
}

INSTANCE_OPTIONS: Final[Options] = {
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

STORAGE_OPTIONS: Final[Options] = {
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

CHECK_OPTIONS: Final[Options] = {
    "name": (_check_name, _REQUIRED),
    "command": (_command, _REQUIRED),
    "interval": (_seconds(0.1, 3600), CheckConfig.interval),
    "timeout": (_seconds(0.1, 3600), CheckConfig.timeout),
    "rise": (_int(1, 100), CheckConfig.rise),
    "fall": (_int(1, 100), CheckConfig.fall),
    "weight": (_int(0, 253), CheckConfig.weight),
}

EXPORT_OPTIONS: Final[Options] = {
    "path": (_export_path, _REQUIRED),
    "clients": (_list_of(_client, min_len=1), _REQUIRED),
    "fsid": (_fsid, _REQUIRED),
    "options": (_export_options, ExportConfig.options),
}


PEER_OPTIONS: Final[Options] = {
    "address": (_peer_address, _REQUIRED),
    "secret_file": (_path, _REQUIRED),
    "port": (_int(1, 65535), PeerConfig.port),
    "fence_timeout": (_seconds(0.1, 60), PeerConfig.fence_timeout),
}


AUTH_HMAC_OPTIONS: Final[Options] = {
    "keys": (_auth_keys, _REQUIRED),
    "active_key": (_int(1, 255), AuthHmacConfig.active_key),
    "mode": (_choice("enforce", "permissive", "receive-only"), AuthHmacConfig.mode),
    "anti_replay": (_choice("time", "monotonic"), AuthHmacConfig.anti_replay),
    "time_window": (_int(1, 300), AuthHmacConfig.time_window),
}


FILESYSTEM_KEYS: Final = ("device", "fstype", "mount_options", "fsck", "mount_timeout")
"""The keys of the filesystem step: each needs `mountpoint`."""

NFS_KEYS: Final = (
    "nfsd_threads",
    "nfsv4_lease_time",
    "nfsv4_grace_time",
    "nfs_server_scope",
    "nfs_start_timeout",
    "nfs_stop_timeout",
)
"""The keys of the NFS server steps: each needs `nfs_state_dir`."""


def _key(name: str) -> str:
    """A table name as it is written in a key path: bare if TOML allows, else quoted as a
    TOML basic string (a name with a '.' or a newline must not look like two keys)."""
    if isinstance(name, str) and name and _made_of(name, "_-"):
        return name
    return json.dumps(name)  # JSON's escapes are TOML's for a basic string
