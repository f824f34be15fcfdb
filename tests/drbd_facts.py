"""DRBD facts for the gate and events2 tests: Resource snapshots built one fact at a time from a
healthy DRBD 9 Secondary with one connected UpToDate peer, and the snapshot events2 lines
leave in a Tracker."""

from __future__ import annotations

import dataclasses
from typing import Any

from drbdha.resources.drbd_events import (
    Change,
    Connection,
    Event,
    PeerVolume,
    Resource,
    Tracker,
    Volume,
    parse_events2_line,
)

Fed = list[tuple[int, Event, list[Change]]]


def vol(volume: int = 0, disk: str = "UpToDate", **kw: Any) -> Volume:
    fields: dict[str, Any] = {"minor": volume + 1, "client": False, "quorum": True, "open": False}
    return Volume(volume, disk=disk, **(fields | kw))


def peer(
    connection: str = "Connected",
    role: str = "Secondary",
    peer_disk: str = "UpToDate",
    *,
    node: int = 1,
    volumes: tuple[int, ...] = (0,),
    peer_client: bool = False,
) -> Connection:
    replication = "Established" if connection == "Connected" else "Off"
    return Connection(
        node,
        f"node{node + 1}",
        connection,
        role,
        tuple(PeerVolume(v, replication, peer_disk, peer_client, 0) for v in volumes),
    )


def res(**kw: Any) -> Resource:
    base = Resource(
        name="r0",
        role="Secondary",
        suspended=False,
        may_promote=True,
        promotion_score=10101,
        force_io_failures=False,
        devices=(vol(),),
        connections=(peer(),),
    )
    return dataclasses.replace(base, **kw)


def drbd84(**kw: Any) -> Resource:
    """8.4: no may_promote, promotion score, quorum or open; peer-node-id 0, conn-name peer."""
    base = res(
        may_promote=None,
        promotion_score=None,
        devices=(vol(quorum=None, open=None),),
        connections=(dataclasses.replace(peer(node=0), conn_name="peer"),),
    )
    return dataclasses.replace(base, **kw)


def one_peer(
    name: str,
    role: str,
    volume: Volume,
    link: tuple[int, str],
    *,
    may_promote: bool | None,
    promotion_score: int | None,
) -> Resource:
    """`volume` and one Connected Secondary peer (node id, connection name) whose volume 0 is
    Established and UpToDate, with no out-of-sync count: a pair as events2 prints it."""
    node, conn_name = link
    replicated = (PeerVolume(0, "Established", "UpToDate", False, None),)
    return res(
        name=name,
        role=role,
        may_promote=may_promote,
        promotion_score=promotion_score,
        devices=(volume,),
        connections=(Connection(node, conn_name, "Connected", "Secondary", replicated),),
    )


def feed_all(tracker: Tracker, lines: list[str]) -> Fed:
    """Parse and feed every line; (1-based line number, event, changes) per line."""
    out = []
    for number, line in enumerate(lines, 1):
        event = parse_events2_line(line)
        if event is not None:
            out.append((number, event, tracker.feed(event)))
    return out


def final(lines: list[str], name: str) -> Resource | None:
    """What a fresh Tracker holds of resource `name` after `lines`."""
    tracker = Tracker()
    feed_all(tracker, lines)
    return tracker.resource(name)
