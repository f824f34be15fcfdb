"""`drbdsetup events2` and `drbdsetup status --json`, parsed into immutable snapshots.

Rules:
- Pure: no I/O, no asyncio, no clock. The caller owns the events2 process and feeds lines.
- parse_events2_line() checks only the line's shape: an action, an object, key:value tokens
  (split on the first ':' only; values such as local:ipv4:1.2.3.4:7789 keep theirs), the
  identity keys each object needs, and that numeric keys are numbers. Unknown keys are kept.
  A malformed line raises ValueError(reason); the caller logs it and reads on. A number is
  ASCII digits, at most 20 (DRBD's widest is a u64): so every line accepted here can be fed
  to a Tracker without raising (int() refuses over 4,300 digits, str.isdigit() takes "²").
- DRBD 9 and 8.4 both print this format. 8.4 fakes peer-node-id:0 and conn-name:peer, has no
  may_promote/promotion_score/quorum/client/open/path, and prints `- skipped N` when netlink
  dropped events (DU user/v84/drbdsetup.c print_notifications): that becomes the action
  "skipped", after which Tracker.synced is False until a fresh dump.
- Plain output only: --diff (`role:Secondary->Primary`) and --color (ANSI escapes) are not
  understood; --timestamps, --statistics and --full are.
- Tracker keeps statistics out of its snapshots (read/written/sent counters churn every
  second), so comparing two snapshots is what "changed in a way that matters" means, as in
  drbd-reactor src/drbd.rs `get_resource_update` (`if old == new ... return None`). The one
  counter kept is out-of-sync: it says whether a peer's copy is complete.
- Booleans are read in the direction that refuses promotion or hand-over when DRBD prints a
  word we do not expect: suspended/force-io-failures/client are true unless "no", quorum and
  open are true only for "yes" (drbd-reactor str_to_bool: "suspended:user" means suspended).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, TypeVar

ACTIONS: Final = frozenset({"exists", "create", "change", "destroy", "call", "response", "rename"})
OBJECTS: Final = frozenset({"resource", "device", "connection", "peer-device", "path", "helper"})
# Keys that name the object: without them a line cannot be applied to any state.
_IDENTITY: Final[Mapping[str, tuple[str, ...]]] = {
    "resource": ("name",),
    "device": ("name", "volume"),
    "connection": ("name", "peer-node-id"),
    "peer-device": ("name", "peer-node-id", "volume"),
    "path": ("name", "peer-node-id"),
    "helper": ("name", "helper"),
}
_INT_KEYS: Final = frozenset({"volume", "minor", "peer-node-id", "promotion_score", "out-of-sync"})
_INT = re.compile(r"-?[0-9]{1,20}")
_COUNT = re.compile(r"[0-9]{1,20}")
# drbdsetup format_timestamp(): "%04u-%02u-%02uT%02u:%02u:%02u.%06u%+03d:%02u ".
_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+([+-][0-9]{2}:[0-9]{2}|Z)?")
# DRBD's own enum order (drbd_disk_state), worst first; worst_disk() uses it.
DISK_STATES: Final = (
    "Diskless",
    "Attaching",
    "Detaching",
    "Failed",
    "Negotiating",
    "Inconsistent",
    "Outdated",
    "DUnknown",
    "Consistent",
    "UpToDate",
)
INITIAL_SPLIT_BRAIN: Final = "initial-split-brain"
SPLIT_BRAIN_HELPERS: Final = frozenset({"split-brain", INITIAL_SPLIT_BRAIN})
_SYNC_TARGET: Final = frozenset({"WFBitMapT", "WFSyncUUID", "SyncTarget", "PausedSyncT"})
_SYNC_SOURCE: Final = frozenset({"WFBitMapS", "SyncSource", "PausedSyncS"})

_K = TypeVar("_K")
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Event:
    action: str  # ACTIONS, or "skipped" (8.4 `- skipped N`, fields {"count": N})
    obj: str  # OBJECTS or "-"
    # Read-only view; left out of the hash (a mappingproxy has none), still compared by ==.
    fields: Mapping[str, str] = field(hash=False)
    timestamp: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.fields, MappingProxyType):
            object.__setattr__(self, "fields", MappingProxyType(dict(self.fields)))


def parse_events2_line(line: str) -> Event | None:
    """One events2 line -> Event; None for a blank line; ValueError(reason) if malformed."""
    words = line.split()
    if not words:
        return None
    timestamp = None
    if words[0] not in ACTIONS and _TIMESTAMP.fullmatch(words[0]):
        timestamp, words = words[0], words[1:]
    if words[:2] == ["-", "skipped"] and len(words) == 3 and _COUNT.fullmatch(words[2]):
        return Event("skipped", "-", {"count": words[2]}, timestamp)
    if not words or words[0] not in ACTIONS:
        raise ValueError(f"unknown action {words[0] if words else ''!r}")
    if len(words) < 2:
        raise ValueError("missing object")
    action, obj, tokens = words[0], words[1], words[2:]
    if obj == "-":
        if action != "exists" or tokens:
            raise ValueError(f"'{action} -' is not an end-of-dump line")
        return Event(action, obj, {}, timestamp)
    if obj not in OBJECTS:
        raise ValueError(f"unknown object {obj!r}")
    fields = _parse_tokens(tokens)
    needed = _IDENTITY[obj] + (("new_name",) if action == "rename" else ())
    missing = [k for k in needed if k not in fields]
    if missing:
        raise ValueError(f"{obj} without {', '.join(missing)}")
    return Event(action, obj, fields, timestamp)


def _parse_tokens(tokens: Iterable[str]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for token in tokens:
        key, sep, value = token.partition(":")
        if not sep or not key:
            raise ValueError(f"token without key:value {token!r}")
        if key in _INT_KEYS and not _INT.fullmatch(value):
            raise ValueError(f"{key} is not a number: {value!r}")
        fields[key] = value
    return fields


# ---- snapshots ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Volume:
    volume: int
    minor: int | None
    disk: str
    client: bool
    quorum: bool | None  # None: DRBD 8.4 (no quorum key)
    open: bool | None


@dataclass(frozen=True, slots=True)
class PeerVolume:
    volume: int
    replication: str
    peer_disk: str
    peer_client: bool
    out_of_sync_kib: int | None  # only with --statistics/--full; KiB (sectors / 2)


@dataclass(frozen=True, slots=True)
class Connection:
    peer_node_id: int
    conn_name: str
    connection: str
    role: str  # the peer's role
    volumes: tuple[PeerVolume, ...]


@dataclass(frozen=True, slots=True)
class Resource:
    name: str
    role: str
    suspended: bool
    may_promote: bool | None  # None: DRBD 8.4, or status --json (which does not print it)
    promotion_score: int | None
    force_io_failures: bool
    devices: tuple[Volume, ...]
    connections: tuple[Connection, ...]
    split_brain: bool = False
    # Why I/O is suspended ("user", "no-data", "fencing", "quorum"), from the same field.
    suspended_by: frozenset[str] = frozenset()

    @property
    def frozen_for_fencing(self) -> bool:
        """A Primary whose writes DRBD holds until the peer is fenced (resource-and-stonith:
        the fence-peer handler has not answered, or answered that it could not fence)."""
        return self.role == "Primary" and "fencing" in self.suspended_by

    @property
    def connected(self) -> bool:
        """Connected to some peer that holds data (the replication link is up). A diskless
        tiebreaker's connection (DRBD 9, every volume peer-client) does not count: it
        carries quorum, not a copy."""
        return any(
            c.connection == "Connected"
            and not (c.volumes and all(v.peer_client for v in c.volumes))
            for c in self.connections
        )

    @property
    def lost_quorum(self) -> bool:
        """DRBD 9 with quorum: some device has lost it (DRBD fails or holds its writes,
        on-no-quorum). Never on 8.4, which has no quorum."""
        return any(d.quorum is False for d in self.devices)

    @property
    def peer_primary(self) -> bool:
        return any(c.connection == "Connected" and c.role == "Primary" for c in self.connections)

    @property
    def local_uptodate(self) -> bool:
        return bool(self.devices) and all(
            d.disk == "UpToDate" and not d.client for d in self.devices
        )

    @property
    def connected_uptodate_peer(self) -> bool:
        # Why "covers every local volume": a peer that has not reported a volume yet (right
        # after connecting) must not count as holding a good copy of it.
        local = {d.volume for d in self.devices}
        return any(
            c.connection == "Connected"
            and bool(c.volumes)
            and local <= {v.volume for v in c.volumes}
            and all(v.peer_disk == "UpToDate" and not v.peer_client for v in c.volumes)
            for c in self.connections
        )

    @property
    def worst_disk(self) -> str:
        """The lowest disk state in DRBD's order; an unknown word ranks below Diskless."""
        if not self.devices:
            return "DUnknown"
        return min((d.disk for d in self.devices), key=_disk_rank)


def _disk_rank(disk: str) -> int:
    return DISK_STATES.index(disk) if disk in DISK_STATES else -1


def _yes_unless_no(value: str) -> bool:
    return value not in ("no", "false")


def _only_yes(value: str | None) -> bool | None:
    return None if value is None else value in ("yes", "true")


def _int_or_none(value: str | None) -> int | None:
    return None if value is None else int(value)


# ---- the tracker ----------------------------------------------------------------------


@dataclass
class _Raw:
    """The merged key:value fields of one resource's objects (change lines carry only what
    changed, unless --full)."""

    res: dict[str, str] = field(default_factory=dict)
    devices: dict[int, dict[str, str]] = field(default_factory=dict)
    conns: dict[int, dict[str, str]] = field(default_factory=dict)
    peers: dict[tuple[int, int], dict[str, str]] = field(default_factory=dict)


Change = tuple[Resource | None, Resource | None]


class Tracker:
    """Folds events2 events into Resource snapshots (immutable).

    During the initial dump a snapshot is partial (a resource before its devices): act on
    snapshots only once `synced`.

    A split brain seen here stays latched across reset() and destroy (an events2 restart or
    a `drbdadm down/up` does not mend diverged data, semantics B7.4); only
    clear_split_brain(), the operator's path, lifts it.

    DRBD calls `initial-split-brain` when it finds one, before it knows whether it can
    resolve it; `split-brain` when it could not (both nodes drop the link). Resolved (by
    `--discard-my-data` on the other node, or by an after-sb policy), it syncs: the node
    whose changes are thrown away becomes SyncTarget and is latched; the node whose copy
    is kept (SyncSource) is not, so a node that serves goes on serving while an admin
    resolves the split brain in its favour. Until one of those is seen, nothing is latched.
    """

    def __init__(self) -> None:
        self._raw: dict[str, _Raw] = {}
        self._snap: dict[str, Resource] = {}
        self._split_brain: set[str] = set()
        self._resolving: set[str] = set()  # initial-split-brain seen, the outcome not yet
        self._synced = False

    @property
    def synced(self) -> bool:
        """True after the initial dump's `exists -`, until reset() or an 8.4 skip."""
        return self._synced

    def resource(self, name: str) -> Resource | None:
        return self._snap.get(name)

    def reset(self) -> None:
        """Forget the kernel state (events2 restarted, a new dump follows); latches stay."""
        self._raw.clear()
        self._snap.clear()
        self._synced = False

    def clear_split_brain(self, name: str) -> list[Change]:
        self._split_brain.discard(name)
        return self._rebuild(name)

    def feed(self, event: Event) -> list[Change]:
        """(old, new) for the resource the event changed, [] when nothing that matters did."""
        if event.obj == "-":
            # "skipped": lost events leave the state stale; the caller restarts events2.
            self._synced = event.action == "exists"
            return []
        name = event.fields["name"]
        if event.obj == "helper":
            helper = event.fields["helper"]
            if event.action == "call" and helper == INITIAL_SPLIT_BRAIN:
                self._resolving.add(name)
            elif event.action == "call" and helper in SPLIT_BRAIN_HELPERS:
                self._resolving.discard(name)
                self._split_brain.add(name)
                return self._rebuild(name)
            return []
        if event.obj == "path":
            return []  # the connection state already says whether some path works
        if event.action == "rename":  # DRBD renames only resources
            return self._rename(name, event.fields["new_name"]) if event.obj == "resource" else []
        if event.obj == "resource" and event.action == "destroy":
            self._raw.pop(name, None)
            old = self._snap.pop(name, None)
            return [] if old is None else [(old, None)]
        _apply(self._raw.setdefault(name, _Raw()), event)
        if name in self._resolving:
            self._resolve(name)
        return self._rebuild(name)

    def _resolve(self, name: str) -> None:
        """After initial-split-brain: a sync decides (see the class's docstring)."""
        raw = self._raw[name]
        replication = {p.get("replication", "Off") for p in raw.peers.values()}
        connections = {c.get("connection", "Unknown") for c in raw.conns.values()}
        if replication & _SYNC_TARGET or "StandAlone" in connections:
            self._resolving.discard(name)
            self._split_brain.add(name)
        elif replication & _SYNC_SOURCE:
            self._resolving.discard(name)

    def _rename(self, name: str, new_name: str) -> list[Change]:
        raw, old = self._raw.pop(name, None), self._snap.pop(name, None)
        if name in self._split_brain:
            self._split_brain.discard(name)
            self._split_brain.add(new_name)
        if raw is None or old is None:
            return []
        self._raw[new_name] = raw
        return [(old, None), *self._rebuild(new_name)]

    def _rebuild(self, name: str) -> list[Change]:
        raw = self._raw.get(name)
        if raw is None:
            return []
        old = self._snap.get(name)
        new = _build(name, raw, split_brain=name in self._split_brain)
        if new == old:
            return []
        self._snap[name] = new
        return [(old, new)]


def _apply(raw: _Raw, event: Event) -> None:
    """Merge one resource/device/connection/peer-device event into the raw fields."""
    f = dict(event.fields)
    destroy = event.action == "destroy"
    # create/exists lines carry every field: they replace; change lines merge.
    fresh = event.action in ("create", "exists")
    if event.obj == "resource":
        raw.res = f if fresh else {**raw.res, **f}
    elif event.obj == "device":
        _put(raw.devices, int(f["volume"]), f, destroy=destroy, fresh=fresh)
    elif event.obj == "connection":
        node = int(f["peer-node-id"])
        _put(raw.conns, node, f, destroy=destroy, fresh=fresh)
        if destroy:
            for key in [k for k in raw.peers if k[0] == node]:
                del raw.peers[key]
    elif event.obj == "peer-device":
        node = int(f["peer-node-id"])
        _put(raw.peers, (node, int(f["volume"])), f, destroy=destroy, fresh=fresh)
        if not destroy:  # a peer-device implies its connection, even if we missed that line
            raw.conns.setdefault(node, {"conn-name": f.get("conn-name", "")})


def _put(
    table: dict[_K, dict[str, str]], key: _K, f: dict[str, str], *, destroy: bool, fresh: bool
) -> None:
    if destroy:
        table.pop(key, None)
    else:
        table[key] = f if fresh else {**table.get(key, {}), **f}


def _build(name: str, raw: _Raw, *, split_brain: bool) -> Resource:
    r = raw.res
    devices = tuple(
        Volume(
            volume=vol,
            minor=_int_or_none(d.get("minor")),
            disk=d.get("disk", "DUnknown"),
            client=_yes_unless_no(d.get("client", "no")),
            quorum=_only_yes(d.get("quorum")),
            open=_only_yes(d.get("open")),
        )
        for vol, d in sorted(raw.devices.items())
    )
    connections = tuple(
        Connection(
            peer_node_id=node,
            conn_name=c.get("conn-name", ""),
            connection=c.get("connection", "Unknown"),
            role=c.get("role", "Unknown"),
            volumes=tuple(
                PeerVolume(
                    volume=vol,
                    replication=p.get("replication", "Off"),
                    peer_disk=p.get("peer-disk", "DUnknown"),
                    peer_client=_yes_unless_no(p.get("peer-client", "no")),
                    out_of_sync_kib=_int_or_none(p.get("out-of-sync")),
                )
                for (n, vol), p in sorted(raw.peers.items())
                if n == node
            ),
        )
        for node, c in sorted(raw.conns.items())
    )
    return Resource(
        name=name,
        role=r.get("role", "Unknown"),
        suspended=_yes_unless_no(r.get("suspended", "no")),
        may_promote=_only_yes(r.get("may_promote")),
        promotion_score=_int_or_none(r.get("promotion_score")),
        force_io_failures=_yes_unless_no(r.get("force-io-failures", "no")),
        devices=devices,
        connections=connections,
        split_brain=split_brain,
        suspended_by=_reasons(r.get("suspended", "no")),
    )


def _reasons(value: str) -> frozenset[str]:
    """events2's suspended field: "no", or the reasons joined by commas (drbdsetup.c
    susp_str(), the same in 8.4 and 9: "user,fencing")."""
    return frozenset(w for w in value.split(",") if w and w != "no")


# ---- drbdsetup status --json ----------------------------------------------------------


def parse_status_json(text: str) -> dict[str, Resource]:
    """`drbdsetup status --json` (DRBD 9) -> {name: Resource}; ValueError if malformed.

    Key names are those printed by DU user/v9/drbdsetup.c (commit b4b2f5b9):
    resource_status_json() L3069-3112, device_status_json() L3027-3067,
    connection_status_json() L2971-3025, peer_device_status_json() L2853-2969.
    The JSON has no may_promote or promotion score: both come back None.
    """
    try:
        doc = json.loads(text)
        return {r.name: r for r in map(_json_resource, _list(doc))}
    except (KeyError, TypeError) as e:
        raise ValueError(f"status json: missing or mistyped {e}") from e
    except RecursionError:  # json.loads on arrays or objects nested about 1,000 deep
        raise ValueError("status json: nested too deeply") from None


def _json_resource(j: Any) -> Resource:
    return Resource(
        name=_typed(j, "name", str),
        role=_typed(j, "role", str),
        suspended=_typed(j, "suspended", bool),
        may_promote=None,
        promotion_score=None,
        force_io_failures=_typed(j, "force-io-failures", bool),
        devices=tuple(
            sorted(
                (
                    Volume(
                        volume=_typed(d, "volume", int),
                        minor=_typed(d, "minor", int),
                        disk=_typed(d, "disk-state", str),
                        client=_typed(d, "client", bool),
                        quorum=_typed(d, "quorum", bool),
                        open=_typed(d, "open", bool),
                    )
                    for d in _list(j["devices"])
                ),
                key=lambda v: v.volume,
            )
        ),
        connections=tuple(
            sorted(map(_json_connection, _list(j["connections"])), key=lambda c: c.peer_node_id)
        ),
        # resource_status_json(): one bool per reason beside "suspended".
        suspended_by=frozenset(
            why for why in JSON_SUSPENDED if j.get(f"suspended-{why}", False) is True
        ),
    )


JSON_SUSPENDED: Final = ("user", "no-data", "fencing", "quorum")


def _json_connection(c: Any) -> Connection:
    volumes = (
        PeerVolume(
            volume=_typed(p, "volume", int),
            replication=_typed(p, "replication-state", str),
            peer_disk=_typed(p, "peer-disk-state", str),
            peer_client=_typed(p, "peer-client", bool),
            out_of_sync_kib=_typed(p, "out-of-sync", int),
        )
        for p in _list(c["peer_devices"])
    )
    return Connection(
        peer_node_id=_typed(c, "peer-node-id", int),
        conn_name=_typed(c, "name", str),
        connection=_typed(c, "connection-state", str),
        role=_typed(c, "peer-role", str),
        volumes=tuple(sorted(volumes, key=lambda v: v.volume)),
    )


def _typed(obj: Any, key: str, kind: type[_T]) -> _T:
    value = obj[key]
    # bool is an int in Python: refuse true where a number belongs, and 1 where a bool does.
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise TypeError(f"{key!r}: {value!r}")
    return value


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list, got {type(value).__name__}")
    return value
