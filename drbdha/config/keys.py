"""The auth_hmac keys as bytes: the inline ones as configured, the files read when the
configuration is loaded (at start, at reload and by check-config, so a rotated file is
read again by a reload), each refused with its reason unless root-only and 32-64 bytes of
"hex:..." or ASCII, as keepalived reads them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from drbdha.config.model import AuthHmacConfig, Config
from drbdha.config.validators import _Invalid, key_bytes
from drbdha.errors import ConfigError
from drbdha.rootfile import SecretError, read_root_only


def resolve(auth: AuthHmacConfig, path: str) -> dict[int, bytes]:
    """id -> key; ConfigError naming every key that cannot be had (`path`: the table's)."""
    keys: dict[int, bytes] = {}
    problems: list[tuple[str, str]] = []
    for key_id, spec in auth.keys:
        if not isinstance(spec, Path):
            keys[key_id] = spec
            continue
        try:
            text = read_root_only(spec).decode("ascii").strip()
            keys[key_id] = key_bytes(text)
        except SecretError as e:
            problems.append((f"{path}.keys.{key_id}", str(e)))
        except UnicodeDecodeError:
            problems.append((f"{path}.keys.{key_id}", f"{spec}: not ASCII (hex:... or a key)"))
        except _Invalid as e:
            problems.append((f"{path}.keys.{key_id}", f"{spec}: the key {e}"))
    if problems:
        raise ConfigError(problems)
    return keys


def resolved(config: Config) -> Config:
    """`config` with every key file read; ConfigError naming every key that cannot be."""
    instances, problems = [], []
    for i, inst in enumerate(config.vrrp_instances):
        auth = inst.auth_hmac
        if auth is None or not any(isinstance(spec, Path) for _, spec in auth.keys):
            instances.append(inst)
            continue
        try:
            keys = resolve(auth, f"vrrp_instance[{i}].auth_hmac")
        except ConfigError as e:
            problems += e.problems
            continue
        auth = dataclasses.replace(auth, keys=tuple(sorted(keys.items())))
        instances.append(dataclasses.replace(inst, auth_hmac=auth))
    if problems:
        raise ConfigError(problems)
    return dataclasses.replace(config, vrrp_instances=tuple(instances))
