"""drbd_events against real events2 output: a DRBD 9.3.3 lab recording, drbd-utils' own
events2 tests (tests/data/drbd/README.txt says where each file comes from), DRBD 8.4 lines
and `drbdsetup status --json` in the layout drbdsetup.c prints.

One table of lines drives the parser; the Tracker is checked edge by edge on the recording.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import pytest

from drbdha.resources.drbd_events import (
    Change,
    Connection,
    Event,
    PeerVolume,
    Resource,
    Tracker,
    Volume,
    parse_events2_line,
    parse_status_json,
)
from drbdha.resources.drbd_gates import disk_lost, good_copy_elsewhere

DATA = Path(__file__).parent / "data" / "drbd"
RECORDING = DATA / "drbd-9.3.3-events2-detach-then-peer-loss.log"
DU_TESTS = sorted(DATA.glob("events2-*.test"))
DRBD84_RECORDINGS = sorted(DATA.glob("drbd-8.4.11-events2-*.log"))
Fed = list[tuple[int, Event, list[Change]]]

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


def feed_all(tracker: Tracker, lines: list[str]) -> Fed:
    """Parse and feed every line; (1-based line number, event, changes) per line."""
    out = []
    for number, line in enumerate(lines, 1):
        event = parse_events2_line(line)
        if event is not None:
            out.append((number, event, tracker.feed(event)))
    return out


# ---- the parser table -------------------------------------------------------------------

PARSE_CASES = [
    ("end-of-dump", "exists -", Event("exists", "-", {})),
    ("blank", "   \n", None),
    (
        "values keep their colons",
        (
            "create path name:r0 peer-node-id:1 conn-name:n2 local:ipv4:1.2.3.4:7789 "
            "peer:ipv6:[fe80::1]:7790 established:no"
        ),
        Event(
            "create",
            "path",
            {
                "name": "r0",
                "peer-node-id": "1",
                "conn-name": "n2",
                "local": "ipv4:1.2.3.4:7789",
                "peer": "ipv6:[fe80::1]:7790",
                "established": "no",
            },
        ),
    ),
    (
        "timestamp",
        "2026-12-01T09:33:47.908086+00:00 exists -",
        Event("exists", "-", {}, "2026-12-01T09:33:47.908086+00:00"),
    ),
    (
        "unknown keys kept",
        "change resource name:r0 role:Primary write-ordering:flush shiny-new-key:42",
        Event(
            "change",
            "resource",
            {"name": "r0", "role": "Primary", "write-ordering": "flush", "shiny-new-key": "42"},
        ),
    ),
    (
        "helper call",
        "call helper name:r0 peer-node-id:1 conn-name:n2 volume:0 helper:before-resync-target",
        Event(
            "call",
            "helper",
            {
                "name": "r0",
                "peer-node-id": "1",
                "conn-name": "n2",
                "volume": "0",
                "helper": "before-resync-target",
            },
        ),
    ),
    (
        "rename",  # DU user/v9/drbdsetup_events2.c print_resource_changes()
        "rename resource name:old new_name:new",
        Event("rename", "resource", {"name": "old", "new_name": "new"}),
    ),
    (
        "8.4 device",
        "exists device name:r0 volume:0 minor:7 disk:UpToDate",
        Event("exists", "device", {"name": "r0", "volume": "0", "minor": "7", "disk": "UpToDate"}),
    ),
    (
        "8.4 lost events",  # DU user/v84/drbdsetup.c print_notifications(): "- skipped %d"
        "- skipped 3",
        Event("skipped", "-", {"count": "3"}),
    ),
]


@pytest.mark.parametrize(
    ("line", "expected"),
    [pytest.param(line, exp, id=name) for name, line, exp in PARSE_CASES],
)
def test_parse_events2_line(line: str, expected: Event | None) -> None:
    assert parse_events2_line(line) == expected


def test_empty_value_is_kept() -> None:
    event = parse_events2_line("change device name:r0 volume:0 backing_dev:")
    assert event is not None
    assert event.fields["backing_dev"] == ""


def test_event_fields_are_read_only_and_hashable() -> None:
    event = parse_events2_line("change resource name:r0 role:Primary")
    assert event is not None
    with pytest.raises(TypeError):
        event.fields["role"] = "Secondary"  # type: ignore[index]
    assert {event} == {Event("change", "resource", {"name": "r0", "role": "Primary"})}


MALFORMED = [
    ("unknown action", "frobnicate resource name:r0", "unknown action"),
    ("timestamp only", "2026-12-01T09:33:47.908086+00:00", "unknown action"),
    ("missing object", "change", "missing object"),
    ("unknown object", "change volume name:r0", "unknown object"),
    ("token without colon", "change resource name:r0 role", "token without key:value"),
    ("empty key", "change resource name:r0 :Primary", "token without key:value"),
    ("no name", "change resource role:Primary", "without name"),
    ("device without volume", "change device name:r0 disk:UpToDate", "without volume"),
    ("peer-device without node", "change peer-device name:r0 volume:0", "without peer-node-id"),
    ("helper without helper", "call helper name:r0", "without helper"),
    ("rename without new name", "rename resource name:r0", "without new_name"),
    ("volume not a number", "change device name:r0 volume:x", "not a number"),
    ("score not a number", "change resource name:r0 promotion_score:0->1", "not a number"),
    ("dash with fields", "exists - name:r0", "end-of-dump"),
    ("dash outside exists", "change -", "end-of-dump"),
]


@pytest.mark.parametrize(
    ("line", "reason"), [pytest.param(line, r, id=name) for name, line, r in MALFORMED]
)
def test_malformed_lines_raise(line: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_events2_line(line)


# ---- the DRBD 9.3.3 recording: detach while Primary, then the peer goes -----------------


def summary(res: Resource | None) -> str:
    if res is None:
        return "gone"
    conns = ",".join(
        f"{c.connection}/{c.role}/" + "+".join(f"{v.replication}:{v.peer_disk}" for v in c.volumes)
        for c in res.connections
    )
    disks = ",".join(d.disk for d in res.devices)
    return f"{res.role} disk={disks} peer={conns} may={res.may_promote} score={res.promotion_score}"


RECORDING_EDGES = [
    # (line, what it is, snapshot after it)
    (1, "dump: resource", "Secondary disk= peer= may=True score=10102"),
    (2, "dump: connection", "Secondary disk= peer=Connected/Secondary/ may=True score=10102"),
    (3, "dump: device", "Secondary disk=UpToDate peer=Connected/Secondary/ may=True score=10102"),
    (
        4,
        "dump: peer-device",
        (
            "Secondary disk=UpToDate peer=Connected/Secondary/Established:UpToDate "
            "may=True score=10102"
        ),
    ),
    (
        7,
        "promote",
        (
            "Primary disk=UpToDate peer=Connected/Secondary/Established:UpToDate "
            "may=False score=10102"
        ),
    ),
    (
        11,
        "local disk going: score drops to the peer's",
        "Primary disk=UpToDate peer=Connected/Secondary/Established:UpToDate may=False score=1",
    ),
    (
        12,
        "on-io-error detach: Failed",
        "Primary disk=Failed peer=Connected/Secondary/Established:UpToDate may=False score=1",
    ),
    (
        13,
        "detached: Diskless",
        "Primary disk=Diskless peer=Connected/Secondary/Established:UpToDate may=False score=1",
    ),
    (
        16,
        "peer lost: score 0",
        "Primary disk=Diskless peer=Connected/Secondary/Established:UpToDate may=False score=0",
    ),
    (
        17,
        "peer lost: NetworkFailure",
        (
            "Primary disk=Diskless peer=NetworkFailure/Unknown/Established:UpToDate "
            "may=False score=0"
        ),
    ),
    (
        18,
        "peer lost: peer disk DUnknown",
        "Primary disk=Diskless peer=NetworkFailure/Unknown/Off:DUnknown may=False score=0",
    ),
    (
        24,
        "reconnect",
        "Primary disk=Diskless peer=Unconnected/Unknown/Off:DUnknown may=False score=0",
    ),
    (
        25,
        "reconnect",
        "Primary disk=Diskless peer=Connecting/Unknown/Off:DUnknown may=False score=0",
    ),
]


@pytest.fixture(scope="module")
def recording() -> Fed:
    return feed_all(Tracker(), RECORDING.read_text(encoding="utf-8").splitlines())


def test_recording_every_line_parses(recording: Fed) -> None:
    lines = RECORDING.read_text(encoding="utf-8").splitlines()
    assert len(recording) == len(lines) == 25
    assert all(e.timestamp and e.timestamp.startswith("2026-12-01T09:3") for _, e, _ in recording)


def test_recording_edges(recording: Fed) -> None:
    edges = [(n, summary(new)) for n, _, changes in recording for _, new in changes]
    assert edges == [(n, s) for n, _, s in RECORDING_EDGES]
    # Each change is one resource, and old is the previous snapshot.
    changes = [c for _, _, cs in recording for c in cs]
    assert changes[0][0] is None
    assert all(a[1] is b[0] for a, b in itertools.pairwise(changes))


def test_recording_statistics_only_lines_are_silent(
    recording: Fed,
) -> None:
    silent = {n: e for n, e, changes in recording if not changes}
    # 8, 9, 14, 15: counters only (line 10: written 0 -> 1024, line 14: sent 0 -> 1032);
    # 5, 19: path; 20-23: helpers that are not split brain; 6: the end of the dump.
    assert sorted(silent) == [5, 6, 8, 9, 10, 14, 15, 19, 20, 21, 22, 23]
    assert silent[10].fields["written"] == "1024"
    assert silent[14].fields["sent"] == "1032"


def test_recording_disk_lost_exactly_once(recording: Fed) -> None:
    lost = [n for n, _, changes in recording for old, new in changes if new and disk_lost(old, new)]
    assert lost == [12]


def test_recording_good_copy_until_the_peer_goes(
    recording: Fed,
) -> None:
    good = {n: good_copy_elsewhere(new) for n, _, cs in recording for _, new in cs if new}
    assert good[13] is True  # detached, but the peer is UpToDate: hand over (B8.1)
    assert good[17] is False  # NetworkFailure: no good copy reachable (B8.2)


def test_recording_synced_after_dump() -> None:
    tracker = Tracker()
    lines = RECORDING.read_text(encoding="utf-8").splitlines()
    feed_all(tracker, lines[:5])
    assert not tracker.synced
    feed_all(tracker, lines[5:6])
    assert tracker.synced


# ---- drbd-utils tests/v9/events2-*.test --------------------------------------------------

USABLE_FLAGS = {"--statistics", "--full"}


def du_blocks(path: Path) -> list[tuple[str, list[str]]]:
    """(flags, output lines) for each block of plain events2 output in a drbd-utils .test file:
    no flags, --statistics or --full; no later pipe stage (sed rewrites --timestamps)."""
    blocks: list[tuple[str, list[str]]] = []
    for chunk in path.read_text(encoding="utf-8").split("$ ")[1:]:
        command, *output = chunk.splitlines()
        tail = command.split("drbdsetup_instrumented events2", 1)[1].split(";", 1)[0]
        flags = tail.split()
        if "|" in flags or not set(flags) <= USABLE_FLAGS:
            continue
        assert output[-1].isdigit()  # `echo $?`
        blocks.append((" ".join(flags) or "plain", output[:-1]))
    return blocks


DU_BLOCKS = [
    pytest.param(lines, id=f"{path.stem}[{flags}]")
    for path in DU_TESTS
    for flags, lines in du_blocks(path)
]


def test_du_fixtures_present() -> None:
    assert len(DU_TESTS) == 19
    assert len(DU_BLOCKS) == 22


@pytest.mark.parametrize("lines", DU_BLOCKS)
def test_du_every_line_parses_and_feeds(lines: list[str]) -> None:
    tracker = Tracker()
    fed = feed_all(tracker, lines)
    assert len(fed) == len(lines)
    assert tracker.synced == ("exists -" in lines)


def du_final(name: str, flags: str = "plain") -> Resource | None:
    (lines,) = [ls for f, ls in du_blocks(DATA / f"events2-{name}.test") if f == flags]
    tracker = Tracker()
    feed_all(tracker, lines)
    return tracker.resource("some-resource")


def test_du_create_change_final_state() -> None:
    res = du_final("all-create-change")
    assert res == Resource(
        name="some-resource",
        role="Primary",
        suspended=False,
        may_promote=False,
        promotion_score=10102,
        force_io_failures=False,
        devices=(Volume(0, 1000, "UpToDate", client=False, quorum=True, open=False),),
        connections=(
            Connection(
                1,
                "some-peer",
                "Connected",
                "Secondary",
                (PeerVolume(0, "Established", "UpToDate", False, None),),
            ),
        ),
    )


def without_counters(res: Resource | None) -> Resource | None:
    if res is None:
        return None
    conns = tuple(
        dataclasses.replace(
            c, volumes=tuple(dataclasses.replace(v, out_of_sync_kib=None) for v in c.volumes)
        )
        for c in res.connections
    )
    return dataclasses.replace(res, connections=conns)


@pytest.mark.parametrize("flags", ["--statistics", "--full"])
def test_du_statistics_make_no_extra_edges(flags: str) -> None:
    """The same messages printed plain, with --statistics and with --full give the same
    edges: the added counters are not state."""

    def edges(lines: list[str]) -> list[Resource | None]:
        return [without_counters(new) for _, _, cs in feed_all(Tracker(), lines) for _, new in cs]

    blocks = dict(du_blocks(DATA / "events2-all-create-change.test"))
    assert edges(blocks[flags]) == edges(blocks["plain"])


def test_du_out_of_sync_is_a_change() -> None:
    lines = dict(du_blocks(DATA / "events2-sync.test"))["--statistics"]
    fed = feed_all(Tracker(), lines)
    (_, last_event, ((old, new),)) = fed[-1]
    assert last_event.fields["out-of-sync"] == "2500"
    assert old is not None
    assert new is not None
    assert old.connections[0].volumes[0].out_of_sync_kib == 0
    assert new.connections[0].volumes[0].out_of_sync_kib == 2500
    assert new.connections[0].volumes[0].replication == "SyncSource"
    assert not good_copy_elsewhere(new)  # the peer is Inconsistent, SyncTarget


def test_du_destroy_sequence() -> None:
    (lines,) = [ls for f, ls in du_blocks(DATA / "events2-all-create-destroy.test") if f == "plain"]
    tracker = Tracker()
    snaps = [new for _, _, cs in feed_all(tracker, lines) for _, new in cs]
    # path (ignored), peer-device, connection, device, resource
    assert [summary(s) for s in snaps[-4:]] == [
        "Secondary disk=Diskless peer=StandAlone/Unknown/ may=False score=0",
        "Secondary disk=Diskless peer= may=False score=0",
        "Secondary disk= peer= may=False score=0",
        "gone",
    ]
    assert tracker.resource("some-resource") is None


def test_du_devices_sorted_and_destroyed() -> None:
    (lines,) = [ls for f, ls in du_blocks(DATA / "events2-device-create-destroy.test")]
    tracker = Tracker()
    for line in lines:
        event = parse_events2_line(line)
        assert event is not None
        tracker.feed(event)
        res = tracker.resource("some-resource")
        if event.obj == "device" and res is not None:
            volumes = [d.volume for d in res.devices]
            assert volumes == sorted(volumes)
            present = int(event.fields["volume"]) in volumes
            assert present == (event.action == "create")
    assert tracker.resource("some-resource") is None


def test_du_ordinary_helper_is_silent() -> None:
    (lines,) = [ls for f, ls in du_blocks(DATA / "events2-all-create-helper.test")]
    fed = feed_all(Tracker(), lines)
    assert [changes for _, e, changes in fed if e.obj == "helper"] == [[], []]


# ---- DRBD 8.4 ------------------------------------------------------------------------------


def test_drbd84_dump() -> None:
    tracker = Tracker()
    feed_all(tracker, DRBD84_DUMP.splitlines())
    assert tracker.synced
    assert tracker.resource("r0") == Resource(
        name="r0",
        role="Secondary",
        suspended=False,
        may_promote=None,
        promotion_score=None,
        force_io_failures=False,
        devices=(Volume(0, 7, "UpToDate", client=False, quorum=None, open=None),),
        connections=(
            Connection(
                0,
                "peer",
                "Connected",
                "Secondary",
                (PeerVolume(0, "Established", "UpToDate", False, None),),
            ),
        ),
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
