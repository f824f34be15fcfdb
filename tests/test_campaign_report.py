"""The fault campaign's report (integration/lab/campaign_report.py): what counts as a failure
and what the summary adds up. The rows are written here the way campaign.py writes them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration" / "lab"))

from campaign_report import failures, summary


def row(index: int, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "seed": 7,
        "index": index,
        "sequence": [{"kind": "power_off", "target": "master", "gap": 0.0, "arg": 0.0}],
        "outcome": "served",
        "records": {
            "3": {"acknowledged": 100, "lost_on_server": 0, "lost_via_vip": 0, "stall_s": 4.0},
            "4.2": {"acknowledged": 90, "lost_on_server": 0, "lost_via_vip": 0, "stall_s": 6.0},
        },
        "violations": [],
        "isolated": [],
        "struck": [{"kind": "power_off", "node": "node1", "at": 0.0}],
    }
    return base | over


def test_a_clean_run_has_no_failures() -> None:
    rows = [row(0), row(1)]
    assert failures(rows) == []
    text = summary(rows)
    assert "acknowledged records: 380, lost: 0" in text
    assert "failures: 0" in text


def test_a_lost_record_a_second_primary_and_a_stuck_cluster_are_failures() -> None:
    lost = row(0)
    lost["records"]["3"]["lost_on_server"] = 2
    two = row(1, violations=[{"kind": "two_primaries", "detail": "node1, node2"}])
    stuck = row(2, outcome="stuck")
    assert failures([lost, two, stuck]) == [
        "seed 7 index 0: lost 2 acknowledged records",
        "seed 7 index 1: two_primaries",
        "seed 7 index 2: served nowhere after the repair",
    ]


def test_the_documented_cases_are_counted_not_failed() -> None:
    isolated = row(0, isolated=["node1"], violations=[{"kind": "two_primaries", "detail": ""}])
    frozen = row(1, violations=[{"kind": "two_primaries_one_frozen", "detail": ""}])
    assert failures([isolated, frozen]) == []
    assert "(and 2 in the documented case" in summary([isolated, frozen])


def test_two_single_cuts_that_part_the_nodes_are_the_documented_case() -> None:
    cuts = [
        {"kind": "cut_replication", "node": "node1", "at": 0.0},
        {"kind": "cut_service", "node": "node2", "at": 0.3},
    ]
    two = [{"kind": "two_primaries", "detail": "node1, node2"}]
    apart = row(0, struck=cuts, violations=two)
    one_cut = row(1, struck=cuts[:1], violations=two)
    assert failures([apart, one_cut]) == ["seed 7 index 1: two_primaries"]
    lost = row(2, struck=cuts)
    lost["records"]["3"]["lost_via_vip"] = 17
    assert failures([lost]) == ["seed 7 index 2: lost 17 acknowledged records"]


def test_a_fault_the_harness_could_not_carry_through_is_unchecked_not_passed() -> None:
    err = {
        "seed": 7,
        "index": 3,
        "sequence": [],
        "outcome": "harness_error",
        "error": "RuntimeError('DRBD not repaired in 240 s')",
        "records": {},
        "violations": [],
    }
    text = summary([row(0), err])
    assert failures([row(0), err]) == []
    assert "faults: 1 " in text
    assert "unchecked (the harness failed, the cluster was set up again): 1" in text
    assert "DRBD not repaired" in text


def test_a_fault_run_again_after_a_harness_error_counts_once() -> None:
    err = row(3, outcome="harness_error", error="TimeoutError()", records={})
    text = summary([row(0), err, row(3)])
    assert "faults: 2 " in text
    assert "unchecked (the harness failed, the cluster was set up again): 0" in text
