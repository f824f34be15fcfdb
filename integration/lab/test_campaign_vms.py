"""A short seeded fault campaign (integration/lab/campaign, docs/reliability.md) in CI, so
the harness cannot rot: a few faults of a fixed seed, each checked as the long campaign
checks them (every acknowledged record intact on the node that serves and through the VIP,
the sampler's invariants, the service back within campaign.BOUND of the heal or a refusal
drbdha reports). The long runs (hundreds of faults) are the benchmark's, not CI's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from campaign import Campaign
from campaign_faults import draw
from campaign_report import failures, summary

if TYPE_CHECKING:
    from cluster import Lab

pytestmark = [
    pytest.mark.slow,
    # Not in the default run yet. What kept it out (writers that got nothing through) was
    # the harness's own race, fixed (records.py: one script per writer); what keeps it out
    # now is CI's time: three faults add about four minutes to a run of 26.
    pytest.mark.skipif(
        os.environ.get("DRBDHA_LAB_CAMPAIGN") != "1",
        reason="the short campaign runs with DRBDHA_LAB_CAMPAIGN=1 (CI time)",
    ),
]

SEED = 25  # faults 0-2: drbdha killed on the backup and a flaky disk on the master;
# the replication link cut on the master; the master's VM frozen (the stale-copy path)
FAULTS = 3


def test_a_short_seeded_campaign_loses_nothing(lab: Lab, tmp_path: Path) -> None:
    out = tmp_path / "campaign.jsonl"
    print("sequences:", [draw(SEED, i) for i in range(FAULTS)])
    ran = Campaign(lab, SEED, out).run(FAULTS, budget_s=float("inf"))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    print(summary(rows))
    assert ran == FAULTS
    assert [r["index"] for r in rows] == list(range(FAULTS))
    unchecked = [r for r in rows if r["outcome"] == "harness_error"]
    assert not unchecked, json.dumps(unchecked, indent=1)
    assert all(r["samples"] > 0 for r in rows)
    assert all(rec["acknowledged"] > 0 for r in rows for rec in r["records"].values())
    assert failures(rows) == []
