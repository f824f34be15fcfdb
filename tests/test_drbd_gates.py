"""Promotion gates (semantics.md B7) and the detach edge (B8), from one table each.

Resources are built from a healthy DRBD 9 Secondary with one connected UpToDate peer and
changed one fact at a time; a few cases come from the real fixtures in tests/data/drbd/.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from drbd_facts import drbd84, final, peer, res, vol

from drbdha.resources.drbd_events import Resource, Volume
from drbdha.resources.drbd_gates import (
    REASONS,
    disk_lost,
    good_copy_elsewhere,
    promotion_refusal,
)

DATA = Path(__file__).parent / "data" / "drbd"


PRIMARY_PEER = (peer(role="Primary"),)

CASES: list[tuple[str, Resource | None, bool, str | None]] = [
    ("healthy secondary", res(), False, None),
    ("not configured", None, False, "not_configured"),
    ("peer primary", res(connections=PRIMARY_PEER, may_promote=False), False, "peer_primary"),
    (
        "disconnected peer with a stale Primary role is not Primary",
        res(connections=(peer("Connecting", "Primary", "DUnknown"),)),
        False,
        None,
    ),
    ("no devices", res(devices=()), False, "no_uptodate_disk"),
    *(
        (f"disk {disk}", res(devices=(vol(disk=disk),)), False, "no_uptodate_disk")
        for disk in (
            "Consistent",
            "Attaching",
            "Negotiating",
            "Inconsistent",
            "Outdated",
            "DUnknown",
            "Failed",
            "Detaching",
            "Diskless",
        )
    ),
    (
        "one of two volumes Outdated",
        res(devices=(vol(0), vol(1, "Outdated"))),
        False,
        "no_uptodate_disk",
    ),
    (
        "diskless client",
        res(devices=(vol(disk="Diskless", client=True),)),
        False,
        "diskless_client",
    ),
    ("no quorum", res(devices=(vol(quorum=False),)), False, "no_quorum"),
    ("may_promote no", res(may_promote=False), False, "may_promote_no"),
    ("promotion score 0", res(promotion_score=0), False, "may_promote_no"),
    ("suspended", res(suspended=True), False, "suspended"),
    ("force-io-failures", res(force_io_failures=True), False, "suspended"),
    ("split brain seen by the tracker", res(split_brain=True), False, "split_brain"),
    ("split brain latched by the daemon", res(), True, "split_brain"),
    # Idempotent start: DRBD reads may_promote:no on a Primary (have_primary includes us).
    ("already Primary", res(role="Primary", may_promote=False), False, None),
    (
        "already Primary, peer Primary too",
        res(role="Primary", may_promote=False, connections=PRIMARY_PEER),
        False,
        "peer_primary",
    ),
    (
        "already Primary, detached",
        res(role="Primary", may_promote=False, devices=(vol(disk="Diskless"),)),
        False,
        "no_uptodate_disk",
    ),
    ("already Primary, split brain", res(role="Primary"), True, "split_brain"),
    # The order between reasons: each case has the named fact and every later one.
    (
        "peer_primary before disk",
        res(connections=PRIMARY_PEER, devices=(vol(disk="Outdated"),), suspended=True),
        True,
        "peer_primary",
    ),
    (
        "disk before client",
        res(devices=(vol(0, "Inconsistent"), vol(1, "Diskless", client=True))),
        False,
        "no_uptodate_disk",
    ),
    (
        "client before quorum",
        res(devices=(vol(disk="Diskless", client=True, quorum=False),)),
        False,
        "diskless_client",
    ),
    (
        "quorum before may_promote",  # what DRBD prints on quorum loss (events2-may-promote-quorum)
        res(devices=(vol(quorum=False),), may_promote=False, promotion_score=0),
        False,
        "no_quorum",
    ),
    (
        "may_promote before suspended",
        res(may_promote=False, suspended=True, force_io_failures=True),
        True,
        "may_promote_no",
    ),
    ("suspended before split brain", res(suspended=True, split_brain=True), True, "suspended"),
    # DRBD 8.4: no may_promote and no quorum, so neither can refuse.
    ("8.4 healthy", drbd84(), False, None),
    ("8.4 peer primary", drbd84(connections=PRIMARY_PEER), False, "peer_primary"),
    (
        "8.4 Outdated",
        drbd84(devices=(vol(disk="Outdated", quorum=None),)),
        False,
        "no_uptodate_disk",
    ),
    ("8.4 suspended", drbd84(suspended=True), False, "suspended"),
    ("8.4 split brain latched", drbd84(), True, "split_brain"),
    ("8.4 peer gone (fencing is the caller's)", drbd84(connections=()), False, None),
]


@pytest.mark.parametrize(
    ("resource", "latched", "expected"),
    [pytest.param(r, latched, exp, id=name) for name, r, latched, exp in CASES],
)
def test_promotion_refusal(resource: Resource | None, latched: bool, expected: str | None) -> None:
    assert promotion_refusal(resource, split_brain_latched=latched) == expected


def test_every_reason_is_covered() -> None:
    assert {exp for *_, exp in CASES} - {None} == set(REASONS)


def test_multiple_primaries_when_allowed() -> None:
    both = res(connections=PRIMARY_PEER, may_promote=False)
    assert promotion_refusal(both, split_brain_latched=False, allow_multiple_primaries=True) is None
    assert (
        promotion_refusal(
            dataclasses.replace(both, devices=(vol(quorum=False),)),
            split_brain_latched=False,
            allow_multiple_primaries=True,
        )
        == "no_quorum"
    )


# ---- gates on real output ------------------------------------------------------------------


def du_plain(stem: str) -> list[str]:
    """The first (plain) output block of a drbd-utils events2 .test file."""
    text = (DATA / f"events2-{stem}.test").read_text(encoding="utf-8")
    return text.split("$ ")[1].splitlines()[1:-1]


@pytest.mark.parametrize(
    ("stem", "expected"),
    [
        # DRBD says may_promote:yes (the peer has the data); we need a local UpToDate disk.
        ("may-promote-peer-data", "no_uptodate_disk"),
        ("promotion-score-inconsistent", "no_uptodate_disk"),
        ("may-promote-peer-role", "peer_primary"),
        ("may-promote-quorum", "no_quorum"),
        ("all-create-change", None),  # Primary already: idempotent
        ("sync", None),  # we are SyncSource, UpToDate
    ],
)
def test_gates_on_drbd_utils_fixtures(stem: str, expected: str | None) -> None:
    resource = final(du_plain(stem), "some-resource")
    assert promotion_refusal(resource, split_brain_latched=False) == expected


def test_gates_on_the_detach_recording() -> None:
    lines = (DATA / "drbd-9.3.3-events2-detach-then-peer-loss.log").read_text().splitlines()
    before = final(lines[:6], "r9")
    assert promotion_refusal(before, split_brain_latched=False) is None
    after = final(lines, "r9")
    assert promotion_refusal(after, split_brain_latched=False) == "no_uptodate_disk"


# ---- disk_lost: the detach edge (B8) --------------------------------------------------------


def primary(*devices: Volume) -> Resource:
    return res(role="Primary", devices=devices)


LOST_CASES: list[tuple[str, Resource | None, Resource, bool]] = [
    ("UpToDate -> Failed while Primary", res(role="Primary"), primary(vol(disk="Failed")), True),
    (
        "Failed -> Diskless is the same loss",
        primary(vol(disk="Failed")),
        primary(vol(disk="Diskless")),
        False,
    ),
    ("UpToDate -> Diskless at once", res(role="Primary"), primary(vol(disk="Diskless")), True),
    ("manual detach: Detaching", res(role="Primary"), primary(vol(disk="Detaching")), True),
    (
        "Inconsistent (SyncTarget) -> Failed",
        primary(vol(disk="Inconsistent")),
        primary(vol(disk="Failed")),
        True,
    ),
    ("second volume lost", primary(vol(0), vol(1)), primary(vol(0), vol(1, "Failed")), True),
    (
        "Secondary losing its disk is not this edge",
        res(),
        res(devices=(vol(disk="Failed"),)),
        False,
    ),
    (
        "diskless client Primary",
        primary(vol(disk="Diskless", client=True)),
        primary(vol(disk="Diskless", client=True)),
        False,
    ),
    ("first sight of a diskless Primary", None, primary(vol(disk="Diskless")), True),
    ("device appears Diskless on a Primary", primary(), primary(vol(disk="Diskless")), True),
    ("first sight of a healthy Primary", None, res(role="Primary"), False),
    (
        "promoted while already diskless",
        res(devices=(vol(disk="Diskless"),)),
        primary(vol(disk="Diskless")),
        False,
    ),
    ("re-attach", primary(vol(disk="Diskless")), primary(vol(disk="Attaching")), False),
]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [pytest.param(o, n, exp, id=name) for name, o, n, exp in LOST_CASES],
)
def test_disk_lost(old: Resource | None, new: Resource, expected: bool) -> None:
    assert disk_lost(old, new) is expected


# ---- good_copy_elsewhere: may we hand over? -------------------------------------------------

COPY_CASES: list[tuple[str, Resource, bool]] = [
    ("connected UpToDate peer", res(), True),
    ("after our detach", res(role="Primary", devices=(vol(disk="Diskless"),)), True),
    ("peer Inconsistent", res(connections=(peer(peer_disk="Inconsistent"),)), False),
    ("peer Outdated", res(connections=(peer(peer_disk="Outdated"),)), False),
    ("peer is a diskless client", res(connections=(peer(peer_client=True),)), False),
    (
        "peer NetworkFailure",
        res(connections=(peer("NetworkFailure", "Unknown", "DUnknown"),)),
        False,
    ),
    ("no peer", res(connections=()), False),
    ("peer without volumes yet", res(connections=(peer(volumes=()),)), False),
    (
        "peer lacks our second volume",
        res(devices=(vol(0), vol(1)), connections=(peer(volumes=(0,)),)),
        False,
    ),
    (
        "one good peer of two",
        res(connections=(peer("Connecting", "Unknown", "DUnknown"), peer(node=2))),
        True,
    ),
]


@pytest.mark.parametrize(
    ("resource", "expected"), [pytest.param(r, exp, id=name) for name, r, exp in COPY_CASES]
)
def test_good_copy_elsewhere(resource: Resource, expected: bool) -> None:
    assert good_copy_elsewhere(resource) is expected
