"""contrib/grafana/drbdha.json: valid JSON, importable (a DS_PROMETHEUS input), queries that
parse (promtool, when installed) and name only metrics drbdha exports or will export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from drbdha.metrics import Metrics

DASHBOARD = Path(__file__).resolve().parent.parent / "contrib" / "grafana" / "drbdha.json"

# Families the dashboard shows before the storage chain exports them (issue 4, item 6).
PLANNED = {
    "drbdha_failover_duration_seconds",
    "drbdha_step_duration_seconds",
    "drbdha_chain_step_up",
    "drbdha_latch",
}
# drbd-reactor's prometheus plugin names (doc/prometheus.md), so its dashboards keep working.
DRBD_REACTOR = {
    "drbd_resource_role",
    "drbd_device_state",
    "drbd_connection_state",
    "drbd_peerdevice_outofsync_bytes",
}
SUFFIXES = ("_bucket", "_count", "_sum", "_total")
# Grafana's variables, replaced by something PromQL accepts.
GRAFANA_VARS = {
    "$__rate_interval": "5m",
    "$__range": "1h",
    "$host": ".*",
    "$vrrp_instance": ".*",
    "$drbd_resource": ".*",
}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [a["expr"] for a in dashboard["annotations"]["list"] if "expr" in a]
    return exprs


def _family(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def test_importable_shape(dashboard: dict[str, Any]) -> None:
    assert dashboard["schemaVersion"] == 39
    assert dashboard["__inputs"][0]["name"] == "DS_PROMETHEUS"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for p in dashboard["panels"]:
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
            assert p["targets"], p["title"]


def test_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    cells: dict[tuple[int, int], str] = {}
    for p in dashboard["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]


def test_metric_names_exist_or_are_planned(dashboard: dict[str, Any]) -> None:
    exported = {f.name for f in Metrics().registry.collect()}
    used = set()
    for expr in _exprs(dashboard):
        used |= {
            _family(m) for m in re.findall(r"(?<![$\w])(drbd(?:ha)?_[a-z_]+)(?=[{\[(\s)]|$)", expr)
        }
    # Enum gauges repeat their own name as a label (drbd_resource_role="Primary").
    unknown = used - exported - PLANNED - DRBD_REACTOR
    assert unknown == set()
    assert used >= DRBD_REACTOR
    assert used >= PLANNED


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool missing")
def test_queries_parse(dashboard: dict[str, Any], tmp_path: Path) -> None:
    rules = []
    for i, query in enumerate(_exprs(dashboard)):
        expr = query
        for var, value in GRAFANA_VARS.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "rules.json"  # YAML is a superset of JSON
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    r = subprocess.run(
        ["promtool", "check", "rules", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
