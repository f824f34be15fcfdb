"""The classic stack's harness (bench/nfs_bench.py, bench/classic), run once so that it cannot
rot: keepalived with the notify script on both nodes, the client writing over NFSv3 and
NFSv4.2 through a power-off of the master, the figures the benchmark reports."""

from __future__ import annotations

import sys

import pytest
from chainlab import roles
from cluster import NODES, REPO, Lab

sys.path.insert(0, str(REPO / "bench"))

import nfs_bench

pytestmark = pytest.mark.slow


def test_the_classic_stack_through_a_power_off(lab: Lab) -> None:
    r = nfs_bench.run_classic(lab, "power-off", "tuned", give_up=180)
    print({k: v for k, v in r.items() if k not in ("mounts", "phases")})
    for version, m in r["mounts"].items():
        print(version, {k: v for k, v in m.items() if k != "done"})
        assert m["acknowledged"] > 0, version
    assert r["resumed"], "the classic stack's client never wrote again"
    assert r["phases"], "no phase marks in node2's journal"
    assert r["phases"][0]["name"] == "VRRP detection", r["phases"]
    assert not r["split_brain"]
    # The harness put the cluster back: no node left Primary (the next drbd_up needs that). The
    # powered-off node is on again from the `booted` checkpoint with r0 down (roles: None).
    for node in [n for n in NODES if lab.running(n)]:
        assert roles(lab, node) in (None, "Secondary/Secondary", "Secondary/Unknown"), node
