"""TOML configuration -> frozen dataclasses.

Every option is declared once (type, default, range, unit, help) in the tables of schema.py;
`load()` collects *all* problems with their key paths and raises one ConfigError, so
`check-config` can list everything wrong at once. Nothing is ever silently replaced by a
default (unlike keepalived's "Using default" warnings): a value is either valid or an error.

Here: reading the file and walking its tables with the readers each key names
(validators.py), then the rules across keys (rules.py), then building model.py's classes.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Final

from drbdha import defaults
from drbdha.config import keys
from drbdha.config.model import (
    AuthHmacConfig,
    CheckConfig,
    Config,
    DaemonConfig,
    ExportConfig,
    PeerConfig,
    StorageConfig,
    VrrpInstanceConfig,
)
from drbdha.config.rules import (
    _check_auth_hmac,
    _check_filesystem,
    _check_instance,
    _check_nfs,
    _check_resources_unique,
    _check_storage_refs,
    _check_unique,
)
from drbdha.config.schema import (
    _REQUIRED,
    AUTH_HMAC_OPTIONS,
    BUILTIN_CHECKS,
    CHECK_OPTIONS,
    DAEMON_OPTIONS,
    EXPORT_OPTIONS,
    INSTANCE_OPTIONS,
    PEER_OPTIONS,
    STORAGE_OPTIONS,
    Options,
    _key,
)
from drbdha.config.validators import _Invalid, _name
from drbdha.errors import ConfigError

DEFAULT_PATH: Final = defaults.CONFIG


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
    return keys.resolved(parse(data, source=path))


def parse(data: dict[str, Any], source: Path | None = None) -> Config:
    sections = {"daemon", "vrrp_instance", "storage", "peer"}
    problems = [(key, "unknown section") for key in data.keys() - sections]
    daemon = _read_table(data.get("daemon", {}), DAEMON_OPTIONS, "daemon", problems)
    daemon.pop("example", None)
    instances = _read_instances(data.get("vrrp_instance", []), problems)
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


def _read_instances(raw: Any, problems: list[tuple[str, str]]) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        problems.append(("vrrp_instance", "at least one [[vrrp_instance]] is required"))
        return []
    instances = []
    for i, raw_table in enumerate(raw):
        path = f"vrrp_instance[{i}]"
        auth, table = None, raw_table
        if isinstance(raw_table, dict) and "auth_hmac" in raw_table:
            table = {k: v for k, v in raw_table.items() if k != "auth_hmac"}
            auth = _read_auth_hmac(raw_table["auth_hmac"], f"{path}.auth_hmac", problems)
        inst = _read_table(table, INSTANCE_OPTIONS, path, problems)
        _check_instance(inst, path, problems)
        inst["auth_hmac"] = auth
        instances.append(inst)
    _check_unique(instances, problems)
    return instances


def _read_auth_hmac(raw: Any, path: str, problems: list[tuple[str, str]]) -> AuthHmacConfig | None:
    values = _read_table(raw, AUTH_HMAC_OPTIONS, path, problems)
    if "keys" not in values:
        return None  # a problem already
    _check_auth_hmac(values, path, problems)
    return AuthHmacConfig(**values)


def _read_table(
    raw: Any,
    options: Options,
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


def _read_tables(
    raw: Any,
    options: Options,
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
    _check_resources_unique(out, problems)
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
