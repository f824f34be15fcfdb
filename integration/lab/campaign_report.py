"""The campaign's results (campaign.py's JSON lines) summed up: outcomes by fault kind, lost
records, invariant violations, stalls. Stdlib only."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from typing import Any

# Where two Primaries or two VIP holders are what the README says a two-node cluster does:
# a node cut off from both networks cannot be told from a dead one, nor can a peer heard on
# neither network because each node lost one link (finding 8).
DOCUMENTED = (
    "an isolated node, the nodes cut apart on both networks, or a frozen stale Primary "
    "(README: Two nodes)"
)


def lost(row: dict[str, Any]) -> int:
    """Acknowledged records missing, each once: a record gone from the server is gone
    through the VIP too, so the larger of the two counts per writer."""
    return sum(max(r["lost_on_server"], r["lost_via_vip"]) for r in row["records"].values())


# One of the two is a Primary whose I/O DRBD holds: back from a freeze past its peer's
# takeover, on its way out (README, "A node that is frozen"); it acknowledges nothing.
FROZEN = ("two_primaries_one_frozen", "two_vip_holders_one_frozen")


def cut_apart(row: dict[str, Any]) -> bool:
    """Did the sequence leave the two nodes unable to hear each other on either network
    (an isolation, or the service link cut on one node and the replication link on any)?"""
    # A harness error's row has no "struck": nothing in it is checked.
    kinds = {s["kind"] for s in row.get("struck", ())}
    return bool(row.get("isolated")) or {"cut_service", "cut_replication"} <= kinds


def undocumented(row: dict[str, Any]) -> list[dict[str, Any]]:
    if cut_apart(row):
        return [v for v in row["violations"] if v["kind"] == "vip_without_chain"]
    return [v for v in row["violations"] if v["kind"] not in FROZEN]


def failures(rows: list[dict[str, Any]]) -> list[str]:
    """Each fault that lost a record, broke an invariant outside the documented case, or
    left the cluster serving nowhere: "seed S index I: what"."""
    out = []
    for r in latest(rows):
        where = f"seed {r['seed']} index {r['index']}"
        if lost(r):
            out.append(f"{where}: lost {lost(r)} acknowledged records")
        out += [f"{where}: {v['kind']}" for v in undocumented(r)]
        if r["outcome"] == "stuck":
            out.append(f"{where}: served nowhere after the repair")
    return out


def _quantiles(xs: list[float]) -> str:
    if not xs:
        return "-"
    xs = sorted(xs)
    p90 = xs[min(len(xs) - 1, round(0.9 * (len(xs) - 1)))]
    return f"median {statistics.median(xs):.1f} s, p90 {p90:.1f} s, max {xs[-1]:.1f} s"


def latest(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (seed, index): the last written (a harness error is run again)."""
    last = {(r["seed"], r["index"]): r for r in rows}
    return list(last.values())


def summary(rows: list[dict[str, Any]]) -> str:
    rows = latest(rows)
    unchecked = [r for r in rows if r["outcome"] == "harness_error"]
    rows = [r for r in rows if r["outcome"] != "harness_error"]
    by_kind: dict[str, Counter] = defaultdict(Counter)
    stalls: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        first = r["sequence"][0]["kind"]
        by_kind[first][r["outcome"]] += 1
        for version, rec in r["records"].items():
            stalls[version].append(rec["stall_s"])
    lengths = Counter(len(r["sequence"]) for r in rows)
    outcomes = Counter(r["outcome"] for r in rows)
    documented = sum(len(r["violations"]) - len(undocumented(r)) for r in rows)
    acked = sum(rec["acknowledged"] for r in rows for rec in r["records"].values())
    refusals = Counter(
        x
        for r in rows
        for node_list in (r.get("refusals") or {}).values()
        for x in node_list
        if not x.startswith("state:")
    )
    stall_text = "; ".join(f"NFSv{v} {_quantiles(xs)}" for v, xs in sorted(stalls.items()))
    counts = f"{lengths[1]}, {lengths[2]}, {lengths[3]}"
    lines = [f"faults: {len(rows)} (sequences of 1, 2, 3 faults: {counts})"]
    lines.append(f"acknowledged records: {acked}, lost: {sum(lost(r) for r in rows)}")
    lines.append("outcomes: " + ", ".join(f"{k} {n}" for k, n in outcomes.items()))
    lines.append(
        f"invariant violations: {sum(len(undocumented(r)) for r in rows)} "
        f"(and {documented} in the documented case: {DOCUMENTED})"
    )
    lines.append("refusals: " + ", ".join(f"{k} {n}" for k, n in refusals.most_common()))
    lines.append(f"longest stall per fault: {stall_text}")
    lines.append("by the sequence's first fault (outcomes):")
    lines += [
        f"  {kind:36} " + ", ".join(f"{o} {n}" for o, n in sorted(by_kind[kind].items()))
        for kind in sorted(by_kind)
    ]
    lines.append(f"unchecked (the harness failed, the cluster was set up again): {len(unchecked)}")
    lines += [f"  seed {r['seed']} index {r['index']}: {r['error'][:160]}" for r in unchecked]
    bad = failures(rows)
    lines.append(f"failures: {len(bad)}")
    lines += [f"  {b}" for b in bad]
    return "\n".join(lines)
