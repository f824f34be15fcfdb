"""The findings table: what drbd_advice.findings says of each DRBD setting that bears on a
takeover, with the master-down interval it is measured against, and on the real dumps."""

from __future__ import annotations

from typing import Any

import pytest
from drbd_dumps import fixture

from drbdha.resources.drbd_advice import findings
from drbdha.resources.drbd_config import DrbdOptions

# ---- findings ------------------------------------------------------------------------------------

MDI = 3 * 1.0 + (256 - 100) / 256  # VRRPv3, priority 100, 1 s adverts
# What drbdha asks for (README "DRBD settings to pair with it", with a timeout below ping-int
# and drbdha's own fence-peer handler): only the peer-loss and fencing notes are left.
CLEAN: dict[str, str | None] = {
    "on_io_error": "detach",
    "fencing": "resource-and-stonith",
    "fence_peer_handler": "/usr/bin/drbdha fence-peer",
    "ping_int": "1",
    "ping_timeout": "5",
    "timeout": "9",
}
CRM = "/usr/lib/drbd/crm-fence-peer.9.sh"


def case(
    changes: dict[str, Any], expected: list[tuple[str, str]], name: str, mdi: float = MDI
) -> Any:
    """The findings for CLEAN with `changes`, at the master-down interval `mdi`."""
    return pytest.param(changes, mdi, expected, id=name)


CASES: list[Any] = [
    case({}, [("info", "ping-int"), ("info", "fencing")], "clean"),
    case(dict.fromkeys(CLEAN), [("warning", "fencing"), ("warning", "ping-int")], "all-defaults"),
    case({"on_io_error": "pass_on"}, [("warning", "on-io-error"), ("info", "fencing")], "pass_on"),
    case(
        {"on_io_error": "call-local-io-error", "local_io_error_handler": "/sbin/halt -f"},
        [("info", "on-io-error"), ("info", "fencing")],
        "call-local-io-error",
    ),
    case(
        {"on_io_error": "call-local-io-error"},
        [("info", "on-io-error"), ("info", "fencing")],
        "call-local-io-error-no-handler",
    ),
    case(
        {"disk_timeout": "100"}, [("warning", "disk-timeout"), ("info", "fencing")], "disk-timeout"
    ),
    case({"disk_timeout": "0"}, [("info", "fencing")], "disk-timeout-0"),
    case({"fencing": "dont-care"}, [("warning", "fencing")], "dont-care"),
    case(
        {
            "fencing": "dont-care",
            "quorum": "majority",
            "on_no_quorum": "io-error",
            "on_no_data_accessible": "io-error",
            "hosts": ("a", "b", "tiebreaker"),
        },
        [("warning", "fencing")],  # the replication-cut window quorum alone leaves
        "dont-care-with-quorum",
    ),
    case(
        {"fencing": "resource-only", "fence_peer_handler": None},
        [("warning", "fence-peer"), ("warning", "fencing")],
        "resource-only-no-handler",
    ),
    case({"fence_peer_handler": None}, [("error", "fence-peer")], "stonith-no-handler"),
    case(
        {"fencing": "resource-only", "fence_peer_handler": CRM},
        [("warning", "fence-peer"), ("warning", "fencing")],
        "crm-fence-peer",
    ),
    case({"fence_peer_handler": CRM}, [("error", "fence-peer")], "crm-fence-peer-stonith"),
    case(
        {"fence_peer_handler": "/usr/lib/drbd/stonith_admin-fence-peer.sh"},
        [("error", "fence-peer")],
        "stonith_admin-fence-peer",
    ),
    case({"fencing": "resource-only"}, [("warning", "fencing")], "drbdha-resource-only"),
    case(
        {"fence_peer_handler": "/usr/local/sbin/fence-over-ssh"},
        [("info", "fencing")],
        "stonith-own-handler",
    ),
    case({"ping_int": "10"}, [("warning", "ping-int"), ("info", "fencing")], "ping-int-default"),
    case({"ping_timeout": "10"}, [("info", "ping-int"), ("info", "fencing")], "ping-timeout-1s"),
    case(
        {},
        [("info", "ping-int"), ("info", "fencing")],
        "fast-adverts-floor",
        mdi=0.3 + 156 / 256 * 0.1,
    ),
    case(
        {"ping_int": "120", "ping_timeout": "300"},
        [("warning", "ping-int"), ("warning", "ping-int"), ("info", "fencing")],
        "peer-loss-beyond-promote-timeout",
    ),
    case(
        {"timeout": "60"}, [("warning", "timeout"), ("info", "fencing")], "timeout-above-ping-int"
    ),
    case(
        {"timeout": "10", "connect_int": "1"},
        [("warning", "timeout"), ("info", "fencing")],
        "timeout-eq",
    ),
    case(
        {"after_sb_0pri": "discard-least-changes"},
        [("error", "after-sb-0pri"), ("info", "fencing")],
        "0pri-discard-least-changes",
    ),
    case(
        {"after_sb_0pri": "discard-node-b"},
        [("error", "after-sb-0pri"), ("info", "fencing")],
        "0pri-node",
    ),
    case(
        {"after_sb_0pri": "discard-zero-changes"},
        [("info", "after-sb-0pri"), ("info", "fencing")],
        "0pri-discard-zero-changes",
    ),
    case(
        {"after_sb_1pri": "discard-secondary"},
        [("error", "after-sb-1pri"), ("info", "fencing")],
        "1pri-discard-secondary",
    ),
    case(
        {"after_sb_1pri": "consensus"},
        [("info", "after-sb-1pri"), ("info", "fencing")],
        "1pri-consensus",
    ),
    case(
        {"after_sb_0pri": "discard-younger-primary", "after_sb_1pri": "consensus"},
        [("error", "after-sb-0pri"), ("error", "after-sb-1pri"), ("info", "fencing")],
        "1pri-consensus-on-discard",
    ),
    case(
        {"after_sb_2pri": "violently-as0p"},
        [("error", "after-sb-2pri"), ("info", "fencing")],
        "2pri-violently",
    ),
    case(
        {"after_sb_2pri": "call-pri-lost-after-sb"},
        [("info", "after-sb-2pri"), ("info", "fencing")],
        "2pri-call-pri-lost",
    ),
    case(
        {"quorum": "majority"},
        [
            ("warning", "quorum"),
            ("warning", "on-no-quorum"),  # DRBD's default, suspend-io
            ("warning", "on-no-data-accessible"),
            ("info", "fencing"),
        ],
        "quorum-two-nodes",
    ),
    case(
        {
            "quorum": "2",
            "on_no_quorum": "io-error",
            "on_no_data_accessible": "io-error",
            "hosts": ("a", "b", "c"),
        },
        [("info", "fencing")],
        "quorum-three-nodes",
    ),
    case(
        {"allow_two_primaries": "yes"},
        [("error", "allow-two-primaries"), ("info", "fencing")],
        "dual-primary",
    ),
    case({"allow_two_primaries": "no"}, [("info", "fencing")], "single-primary"),
    case(
        {"protocol": "A"},
        [("error", "protocol"), ("warning", "protocol"), ("info", "fencing")],
        "protocol-A",
    ),
    case({"protocol": "B"}, [("warning", "protocol"), ("info", "fencing")], "protocol-B"),
    case(
        {"protocol": "A", "fencing": "resource-and-stonith"},
        [("error", "protocol"), ("warning", "protocol"), ("info", "fencing")],
        "protocol-A-stonith",
    ),
]


def _opts(**changes: Any) -> DrbdOptions:
    kw: dict[str, Any] = {"hosts": ("a", "b"), **CLEAN, **changes}
    return DrbdOptions(resource="r0", **kw)


@pytest.mark.parametrize(("changes", "mdi", "expected"), CASES)
def test_findings_table(
    changes: dict[str, Any], mdi: float, expected: list[tuple[str, str]]
) -> None:
    found = findings(
        _opts(**changes),
        master_down_interval=mdi,
        advert_interval=1.0,
        promote_timeout=30,
        fence_timeout=1.0,
    )
    # Every case also has the peer-loss note unless it says something else about ping-int.
    if not any(key == "ping-int" for _, key in expected):
        expected = [*expected, ("info", "ping-int")]
    assert sorted((f.level, f.key) for f in found) == sorted(expected)
    # Errors first, then warnings, then notes; every error and warning says what to do.
    assert [f.level for f in found] == sorted(
        (f.level for f in found), key=("error", "warning", "info").index
    )
    assert all(f.advice for f in found if f.level != "info")


def test_peer_loss_numbers() -> None:
    def peer_loss(mdi: float, **changes: Any) -> list[str]:
        return [
            f.message
            for f in findings(_opts(**changes), master_down_interval=mdi, advert_interval=1.0)
            if f.key == "ping-int"
        ]

    (slow,) = peer_loss(MDI, ping_int="10")
    assert "within 10.5 s (ping-int 10 s + ping-timeout 0.5 s)" in slow
    assert "after 3.61 s" in slow
    assert "up to 6.89 s longer" in slow
    (floor,) = peer_loss(0.36)
    assert "waits up to 1.14 s for DRBD" in floor
    (none,) = peer_loss(MDI)
    assert none.endswith("DRBD adds nothing to a takeover")


def test_timeout_advice_stays_below_ping_int() -> None:
    (f,) = [
        f
        for f in findings(_opts(timeout="60"), master_down_interval=MDI, advert_interval=1.0)
        if f.key == "timeout"
    ]
    assert "timeout 60 (6 s) is not lower than ping-int 1 s" in f.message
    assert f.advice.startswith("set timeout 9;")


def test_findings_name_the_connection_or_volume_they_hold_for() -> None:
    found = findings(fixture("9-three-nodes"), master_down_interval=MDI, advert_interval=1.0)
    messages = {(f.level, f.key): f.message for f in found}
    assert messages["warning", "protocol"].startswith("connection vm/nfs-b: B:")
    assert messages["warning", "disk-timeout"].startswith("volume 1: disk-timeout 100")
    timeouts = [f.message for f in found if f.key == "timeout"]
    assert [m.split(":")[0] for m in timeouts] == ["connection vm/nfs-b", "connection-mesh"]
    # Quorum majority with a tiebreaker but no fence-peer handler: the replication-cut
    # window (drbd_advice.quorum_window) is warned, for the connection-mesh variant.
    assert messages["warning", "fencing"].startswith("connection-mesh: dont-care with quorum")


def test_findings_shared_by_every_variant_carry_no_scope() -> None:
    found = findings(fixture("9-two-nodes"), master_down_interval=MDI, advert_interval=1.0)
    assert [(f.level, f.key) for f in found] == [
        ("warning", "fencing"),  # resource-only
        ("info", "ping-int"),
        ("info", "after-sb-0pri"),
    ]
    assert found[1].message.startswith("DRBD notices a dead peer within 1.5 s")


def test_drbd84_fixture_findings() -> None:
    found = findings(fixture("8.4"), master_down_interval=MDI, advert_interval=1.0)
    assert [(f.level, f.key) for f in found if f.level == "error"] == [
        ("error", "fence-peer"),
        ("error", "after-sb-1pri"),
        ("error", "allow-two-primaries"),
        ("error", "protocol"),
    ]
