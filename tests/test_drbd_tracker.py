"""drbd_events beyond the DRBD 9 recordings (test_drbd_events): DRBD 8.4 lines, the Tracker's
rules line by line, `drbdsetup status --json` in the layout drbdsetup.c prints, and why I/O
is suspended."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from drbd_facts import feed_all, one_peer

from drbdha.resources.drbd_events import (
    Change,
    PeerVolume,
    Resource,
    Tracker,
    Volume,
    parse_events2_line,
    parse_status_json,
)
from drbdha.resources.drbd_gates import good_copy_elsewhere

DATA = Path(__file__).parent / "data" / "drbd"
DRBD84_RECORDINGS = sorted(DATA.glob("drbd-8.4.11-events2-*.log"))

# semantics.md B6: DRBD 8.4 events2 (DU user/v84/drbdsetup.c event_key(): peer-node-id is
# always 0, conn-name always "peer").
DRBD84_DUMP = """\
exists resource name:r0 role:Secondary suspended:no
exists connection name:r0 peer-node-id:0 conn-name:peer connection:Connected role:Secondary
exists device name:r0 volume:0 minor:7 disk:UpToDate
exists peer-device name:r0 peer-node-id:0 conn-name:peer volume:0 replication:Established \
peer-disk:UpToDate resync-suspended:no
exists -
"""


# ---- DRBD 8.4 ------------------------------------------------------------------------------


def test_drbd84_dump() -> None:
    tracker = Tracker()
    feed_all(tracker, DRBD84_DUMP.splitlines())
    assert tracker.synced
    assert tracker.resource("r0") == one_peer(
        "r0",
        "Secondary",
        Volume(0, 7, "UpToDate", client=False, quorum=None, open=None),
        (0, "peer"),
        may_promote=None,
        promotion_score=None,
    )


def test_drbd84_skipped_events_unsync() -> None:
    tracker = Tracker()
    feed_all(tracker, DRBD84_DUMP.splitlines())
    event = parse_events2_line("- skipped 2")
    assert event is not None
    assert tracker.feed(event) == []
    assert not tracker.synced  # the state may be stale: the caller restarts events2


@pytest.mark.parametrize("path", DRBD84_RECORDINGS, ids=lambda p: p.name)
def test_drbd84_recordings_parse(path: Path) -> None:
    tracker = Tracker()
    lines = path.read_text(encoding="utf-8").splitlines()
    fed = feed_all(tracker, lines)
    assert len(fed) == sum(1 for line in lines if line.strip())
    for _, _, changes in fed:
        for _, new in changes:
            if new is not None:
                assert new.may_promote is None
                # A StandAlone 8.4 connection prints no conn-name at all (recorded).
                assert all(
                    c.peer_node_id == 0 and c.conn_name in ("peer", "") for c in new.connections
                )


# ---- Tracker rules -------------------------------------------------------------------------

BASE = [
    (
        "exists resource name:r0 role:Secondary suspended:no force-io-failures:no may_promote:yes "
        "promotion_score:10101"
    ),
    "exists device name:r0 volume:0 minor:1 disk:UpToDate client:no open:no quorum:yes",
    "exists connection name:r0 peer-node-id:1 conn-name:n2 connection:Connected role:Secondary",
    (
        "exists peer-device name:r0 peer-node-id:1 conn-name:n2 volume:0 replication:Established "
        "peer-disk:UpToDate peer-client:no"
    ),
    "exists -",
]


def tracked(*more: str) -> tuple[Tracker, list[Change]]:
    tracker = Tracker()
    feed_all(tracker, BASE)
    changes = [c for _, _, cs in feed_all(tracker, list(more)) for c in cs]
    return tracker, changes


def test_change_merges_create_replaces() -> None:
    tracker, _ = tracked("change device name:r0 volume:0 disk:Outdated")
    res = tracker.resource("r0")
    assert res is not None
    assert res.devices == (Volume(0, 1, "Outdated", client=False, quorum=True, open=False),)
    tracker, _ = tracked("create device name:r0 volume:0 disk:Inconsistent")
    res = tracker.resource("r0")
    assert res is not None
    assert res.devices == (Volume(0, None, "Inconsistent", client=False, quorum=None, open=None),)


def test_unchanged_line_is_silent() -> None:
    _, changes = tracked("change resource name:r0 role:Secondary", "change device name:r0 volume:0")
    assert changes == []


def test_destroy_connection_takes_its_peer_devices() -> None:
    tracker, changes = tracked("destroy connection name:r0 peer-node-id:1 conn-name:n2")
    assert len(changes) == 1
    res = tracker.resource("r0")
    assert res is not None
    assert res.connections == ()
    assert not good_copy_elsewhere(res)


def test_destroy_resource_reports_old_and_none() -> None:
    tracker, changes = tracked("destroy resource name:r0")
    ((old, new),) = changes
    assert old is not None
    assert old.name == "r0"
    assert new is None
    assert tracker.resource("r0") is None


def test_split_brain_helper_latches_until_cleared() -> None:
    tracker, changes = tracked(
        "call helper name:r0 peer-node-id:1 conn-name:n2 volume:0 helper:initial-split-brain",
        "response helper name:r0 peer-node-id:1 conn-name:n2 volume:0 helper:initial-split-brain "
        "status:0",
        "call helper name:r0 peer-node-id:1 conn-name:n2 volume:0 helper:split-brain",
    )
    ((old, new),) = changes
    assert old is not None
    assert not old.split_brain
    assert new is not None
    assert new.split_brain
    # Neither an events2 restart nor down/up mends diverged data (B7.4).
    tracker.reset()
    assert tracker.resource("r0") is None
    assert not tracker.synced
    feed_all(tracker, BASE)
    res = tracker.resource("r0")
    assert res is not None
    assert res.split_brain
    ((_, cleared),) = tracker.clear_split_brain("r0")
    assert cleared is not None
    assert not cleared.split_brain


INITIAL = "call helper name:r0 peer-node-id:0 conn-name:peer volume:0 helper:initial-split-brain"
PEER_DEVICE = "change peer-device name:r0 peer-node-id:0 conn-name:peer volume:0 replication:"


@pytest.mark.parametrize(
    ("after", "latched"),
    [
        # Resolved in our favour (the peer ran --discard-my-data): our copy is kept.
        (
            PEER_DEVICE + "WFBitMapS",
            False,
        ),
        (
            PEER_DEVICE + "SyncSource",
            False,
        ),
        # Our changes are thrown away: latched (an after-sb policy may have done it unasked).
        (
            PEER_DEVICE + "SyncTarget",
            True,
        ),
        # Not resolved: the link is dropped (the split-brain helper usually comes first).
        ("change connection name:r0 peer-node-id:0 conn-name:peer connection:StandAlone", True),
    ],
    ids=["wfbitmaps", "sync-source", "sync-target", "standalone"],
)
def test_an_initial_split_brain_latches_only_the_copy_it_discards(
    after: str, latched: bool
) -> None:
    tracker, changes = tracked(INITIAL)
    assert changes == []  # nothing is known yet
    feed_all(tracker, [after])
    res = tracker.resource("r0")
    assert res is not None
    assert res.split_brain is latched


def test_rename_moves_the_resource() -> None:
    tracker, changes = tracked("rename resource name:r0 new_name:r1")
    assert [(o and o.name, n and n.name) for o, n in changes] == [("r0", None), (None, "r1")]
    assert tracker.resource("r0") is None
    res = tracker.resource("r1")
    assert res is not None
    assert res.local_uptodate


def test_suspended_words() -> None:
    tracker, _ = tracked("change resource name:r0 suspended:user")
    res = tracker.resource("r0")
    assert res is not None
    assert res.suspended


def test_worst_disk() -> None:
    tracker, _ = tracked(
        "create device name:r0 volume:1 minor:2 disk:Outdated client:no",
        "create device name:r0 volume:2 minor:3 disk:Consistent client:no",
    )
    res = tracker.resource("r0")
    assert res is not None
    assert res.worst_disk == "Outdated"
    assert not res.local_uptodate
    assert not res.connected_uptodate_peer  # the peer has not reported volumes 1 and 2


# ---- drbdsetup status --json ---------------------------------------------------------------


@pytest.fixture(scope="module")
def status() -> dict[str, Resource]:
    return parse_status_json((DATA / "drbdsetup-status.json").read_text(encoding="utf-8"))


def test_status_json_connected_pair(status: dict[str, Resource]) -> None:
    res = status["pair"]
    assert res.role == "Secondary"
    assert res.may_promote is None
    assert [(d.volume, d.minor, d.disk, d.quorum) for d in res.devices] == [
        (0, 1, "UpToDate", True),
        (1, 2, "UpToDate", True),
    ]
    assert res.local_uptodate
    assert good_copy_elsewhere(res)
    assert res.connections[0].volumes[1] == PeerVolume(1, "Established", "UpToDate", False, 0)


def test_status_json_diskless_client(status: dict[str, Resource]) -> None:
    res = status["client"]
    assert res.devices == (Volume(0, 3, "Diskless", client=True, quorum=True, open=False),)
    assert not res.local_uptodate
    assert [c.peer_node_id for c in res.connections] == [0, 1]  # sorted


def test_status_json_quorum_lost(status: dict[str, Resource]) -> None:
    res = status["noquorum"]
    assert res.devices[0].quorum is False
    assert res.suspended  # suspended-quorum folds into "suspended" (drbdsetup.c L3080-3084)
    assert [c.connection for c in res.connections] == ["Connecting", "Connecting"]


def test_status_json_disconnected_peer(status: dict[str, Resource]) -> None:
    res = status["lonely"]
    assert res.role == "Primary"
    assert res.devices[0].open is True
    (conn,) = res.connections
    assert (conn.connection, conn.role) == ("Connecting", "Unknown")
    assert conn.volumes == (PeerVolume(0, "Off", "DUnknown", False, 1024),)
    assert not good_copy_elsewhere(res)


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "{}",  # not a list
        '[{"name": "r0"}]',  # keys missing
        (
            '[{"name": "r0", "role": "Primary", "suspended": "no", "force-io-failures": false,'
            ' "devices": [], "connections": []}]'
        ),  # a string where a bool belongs
    ],
)
def test_status_json_malformed(text: str) -> None:
    with pytest.raises(ValueError):
        parse_status_json(text)


# ---- why I/O is suspended (issue 19 §1: the Primary's frozen I/O while fencing) -----------


@pytest.mark.parametrize(
    ("word", "reasons", "frozen"),
    [
        ("no", frozenset(), False),
        ("fencing", frozenset({"fencing"}), True),
        ("user,fencing", frozenset({"user", "fencing"}), True),
        ("user", frozenset({"user"}), False),
        ("no-data,fencing,quorum", frozenset({"no-data", "fencing", "quorum"}), True),
    ],
)
def test_suspended_reasons_from_events2(word: str, reasons: frozenset[str], frozen: bool) -> None:
    t = Tracker()
    lines = [
        f"exists resource name:r0 role:Primary suspended:{word}",
        "exists device name:r0 volume:0 minor:0 disk:UpToDate",
        "exists -",
    ]
    for line in lines:
        ev = parse_events2_line(line)
        assert ev is not None
        t.feed(ev)
    r = t.resource("r0")
    assert r is not None
    assert r.suspended_by == reasons
    assert r.suspended is (word != "no")
    assert r.frozen_for_fencing is frozen


def test_a_secondary_suspended_for_fencing_is_not_a_frozen_primary() -> None:
    t = Tracker()
    for line in ["exists resource name:r0 role:Secondary suspended:fencing", "exists -"]:
        ev = parse_events2_line(line)
        assert ev is not None
        t.feed(ev)
    r = t.resource("r0")
    assert r is not None
    assert not r.frozen_for_fencing


def test_suspended_reasons_from_status_json() -> None:
    base = {
        "name": "r0",
        "role": "Primary",
        "suspended": True,
        "suspended-user": False,
        "suspended-no-data": False,
        "suspended-fencing": True,
        "suspended-quorum": False,
        "force-io-failures": False,
        "devices": [],
        "connections": [],
    }
    (r,) = parse_status_json(json.dumps([base])).values()
    assert r.suspended_by == frozenset({"fencing"})
    assert r.frozen_for_fencing
