"""What the test_ops_*.py files share: the `drbdha` CLI run inside a node's namespace,
its `status --json` document, the control socket's path, and a two-node pair started
without a start-up race. Every lab there runs VRRPv3 at 100 ms on one bridge."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from netlab import DRBDHA, VIP4, DrbdhaNode, Inst, Lab, run, wait_exactly_one_master

INTERVAL = 0.1


def cli(node: DrbdhaNode, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """`drbdha -c <node's config> ARGS` inside the node's namespace."""
    return run(
        node.host.ns, [DRBDHA, "-c", str(node.config_path), *args], check=False, timeout=timeout
    )


def status_doc(node: DrbdhaNode, *extra: str) -> dict[str, Any]:
    out = cli(node, "status", "--json", *extra)
    assert out.returncode == 0, f"status --json exited {out.returncode}: {out.stderr}"
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


def vi1(doc: dict[str, Any]) -> dict[str, Any]:
    (inst,) = doc["instances"]
    assert inst["name"] == "vi1"
    return inst


def socket_path(node: DrbdhaNode) -> Path:
    return node.lab.tmp / f"{node.host.name}.sock"


def start_pair(lab: Lab) -> tuple[DrbdhaNode, DrbdhaNode]:
    """a (priority 150) master, b (100) backup. a starts first and becomes master alone, so
    no start-up race (b's Master_Down_Interval ending before a's) shows up as a flap."""
    a = DrbdhaNode(lab, "a", [Inst(priority=150)]).start()
    a.wait_state("master", timeout=5)
    b = DrbdhaNode(lab, "b", [Inst(priority=100)]).start()
    b.wait_state("backup", timeout=5)
    assert wait_exactly_one_master([a, b], VIP4, lab.host("client")) is a
    return a, b
