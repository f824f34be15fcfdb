"""The one writer of drbdha.toml for the namespace tests, the demo, the VM lab and the benchmarks.

    render(
        comment="Written by integration/lab/chainlab.py",
        daemon={"metrics_listen": ""},
        instances=[{"name": "lab", "interface": "eth0", "vrid": 62, ...}],
        storage={"data": {"drbd_resource": "r0", "checks": [{...}], "exports": [{...}]}},
        peer={"address": "10.77.1.12", "secret_file": "/etc/drbdha/peer.key"},
    )

Every table is a mapping of drbdha's own keys (drbdha.toml(5)), written in the order given:
[daemon], each [[vrrp_instance]], each [storage.NAME] (its scalar keys, then its lists of
tables such as [[storage.NAME.checks]]), [peer]; a blank line between tables. Values: str
(and Path) as TOML basic strings, bool, int, float, and lists of them. Nothing is checked
here: drbdha's loader is the judge, and the tests of broken files write broken values on
purpose. Stdlib only: the VM lab imports it too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import PurePath
from typing import Any

Table = Mapping[str, Any]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def render(
    *,
    instances: Iterable[Table],
    daemon: Table | None = None,
    storage: Mapping[str, Table] | None = None,
    peer: Table | None = None,
    comment: str = "",
) -> str:
    """The file's text; `comment` goes first, one `# ` line per line of it."""
    head = [f"# {line}".rstrip() for line in comment.splitlines()]
    tables: list[list[str]] = []
    if daemon is not None:
        tables.append(_table("[daemon]", daemon))
    tables += [_table("[[vrrp_instance]]", inst) for inst in instances]
    for name, chain in (storage or {}).items():
        path = f"storage.{key(name)}"
        scalars = {k: v for k, v in chain.items() if not _is_tables(v)}
        tables.append(_table(f"[{path}]", scalars))
        for k, v in chain.items():
            if _is_tables(v):
                tables += [_table(f"[[{path}.{key(k)}]]", t) for t in v]
    if peer is not None:
        tables.append(_table("[peer]", peer))
    blocks = ["\n".join(t) for t in tables]
    return "\n".join(head) + ("\n" if head else "") + "\n\n".join(blocks) + "\n"


def _table(header: str, keys: Table) -> list[str]:
    return [header, *(f"{key(k)} = {value(v)}" for k, v in keys.items())]


def _is_tables(v: Any) -> bool:
    return isinstance(v, list | tuple) and bool(v) and all(isinstance(t, Mapping) for t in v)


def key(name: str) -> str:
    """A key or table name: bare where TOML allows it, else quoted."""
    return name if _BARE_KEY.fullmatch(name) else string(name)


def string(s: str) -> str:
    """A TOML basic string. JSON's escapes are TOML's; DEL is the one control character
    JSON leaves as it is and TOML does not."""
    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")


def value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str | PurePath):
        return string(str(v))
    if isinstance(v, list | tuple):
        return "[" + ", ".join(value(x) for x in v) + "]"
    if isinstance(v, dict):  # an inline table: [vrrp_instance.auth_hmac] as `auth_hmac = {..}`
        return "{" + ", ".join(f"{key(str(k))} = {value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"no TOML form for {v!r}")
