"""TOML configuration -> frozen dataclasses; every problem collected with its key path.

One module per job (a new option: its field in model.py and its row in schema.py; a reader
in validators.py if none fits; a rule in rules.py if it depends on another key):

- model.py: the frozen dataclasses the rest of drbdha reads (Config, StorageConfig, ...),
  their defaults and what each field means.
- validators.py: the readers, one raw TOML value -> a typed value or a message.
- schema.py: the option tables, each key once with its reader and default.
- rules.py: the rules across keys (VRRP version and interval, NFS below the mountpoint ...).
- loader.py: `load()` and `parse()`: reads the tables, applies the rules, builds the model.

Only the standard library and drbdha.errors: the CLI loads this at start (no asyncio, no
pyroute2). The names below are the package's interface; the underscored ones stay inside it.
"""

from __future__ import annotations

from drbdha.config.loader import DEFAULT_PATH, load, parse
from drbdha.config.model import (
    CheckConfig,
    Config,
    DaemonConfig,
    ExportConfig,
    IPAddress,
    IPInterface,
    PeerConfig,
    StorageConfig,
    VrrpInstanceConfig,
)
from drbdha.config.schema import (
    AUTH_HMAC_OPTIONS,
    BUILTIN_CHECKS,
    CHECK_OPTIONS,
    DAEMON_OPTIONS,
    EXPORT_OPTIONS,
    FILESYSTEM_KEYS,
    INSTANCE_OPTIONS,
    NFS_KEYS,
    PEER_OPTIONS,
    STORAGE_OPTIONS,
)
from drbdha.config.validators import NAME_MAX

__all__ = [
    "AUTH_HMAC_OPTIONS",
    "BUILTIN_CHECKS",
    "CHECK_OPTIONS",
    "DAEMON_OPTIONS",
    "DEFAULT_PATH",
    "EXPORT_OPTIONS",
    "FILESYSTEM_KEYS",
    "INSTANCE_OPTIONS",
    "NAME_MAX",
    "NFS_KEYS",
    "PEER_OPTIONS",
    "STORAGE_OPTIONS",
    "CheckConfig",
    "Config",
    "DaemonConfig",
    "ExportConfig",
    "IPAddress",
    "IPInterface",
    "PeerConfig",
    "StorageConfig",
    "VrrpInstanceConfig",
    "load",
    "parse",
]
