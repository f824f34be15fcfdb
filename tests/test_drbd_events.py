"""drbd_events against real events2 output: a DRBD 9.3.3 lab recording and drbd-utils' own
events2 tests (tests/data/drbd/README.txt says where each file comes from). DRBD 8.4 lines,
the Tracker's rules and `drbdsetup status --json`: test_drbd_tracker.

One table of lines drives the parser; the Tracker is checked edge by edge on the recording.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest
from drbd_facts import Fed, feed_all, final, one_peer

from drbdha.resources.drbd_events import (
    Event,
    Resource,
    Tracker,
    Volume,
    parse_events2_line,
)
from drbdha.resources.drbd_gates import disk_lost, good_copy_elsewhere

DATA = Path(__file__).parent / "data" / "drbd"
RECORDING = DATA / "drbd-9.3.3-events2-detach-then-peer-loss.log"
DU_TESTS = sorted(DATA.glob("events2-*.test"))


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
    return final(lines, "some-resource")


def test_du_create_change_final_state() -> None:
    res = du_final("all-create-change")
    assert res == one_peer(
        "some-resource",
        "Primary",
        Volume(0, 1000, "UpToDate", client=False, quorum=True, open=False),
        (1, "some-peer"),
        may_promote=False,
        promotion_score=10102,
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
