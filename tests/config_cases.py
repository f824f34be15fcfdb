"""What the configuration tests share: the smallest valid [[vrrp_instance]] table, the
problems a ConfigError carries, and the check that a bad value is named at its key path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from drbdha.config import parse
from drbdha.errors import ConfigError


def instance(**overrides: Any) -> dict[str, Any]:
    """A valid [[vrrp_instance]] table ("vi", eth0, vrid 51, one VIP) with `overrides`."""
    base: dict[str, Any] = {
        "name": "vi",
        "interface": "eth0",
        "vrid": 51,
        "virtual_ipaddress": ["192.0.2.100/24"],
    }
    base.update(overrides)
    return base


def problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    """The problems parse(data) raises, each a non-empty message at a path the error names."""
    with pytest.raises(ConfigError) as exc:
        parse(data)
    found = exc.value.problems
    assert found, "a ConfigError must carry at least one problem"
    for path, msg in found:
        assert isinstance(path, str)
        assert isinstance(msg, str)
        assert msg
        assert path in str(exc.value)
    return found


def paths(data: dict[str, Any]) -> set[str]:
    return {path for path, _ in problems(data)}


def assert_one_problem(found: list[tuple[str, str]], path: str, fragment: str) -> None:
    """`found` is one problem, at `path`, and its message says `fragment`."""
    assert [p for p, _ in found] == [path]
    assert fragment in found[0][1]


def write_config(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "drbdha.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path
