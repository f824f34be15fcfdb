"""What a run measured, as markdown: one table per measurement, the verdict on every target
of issue 3, the run's machine and command; written between the markers in
docs/benchmarks.md (the analysis outside them is left alone)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
from contextlib import suppress
from pathlib import Path
from typing import Any

from vrrp import ROOT
from vrrp.procs import AUTH, IMPLS, KEEPALIVED

DOC = ROOT / "docs" / "benchmarks.md"
RSS_TARGET_MB = 30  # issue 21 (40 before)
BEGIN, END = "<!-- vrrp_bench:begin -->", "<!-- vrrp_bench:end -->"


def machine() -> dict[str, str]:
    cpu = ""
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    binary = AUTH.get("keepalived", KEEPALIVED)  # --auth: the 2.4.3 build
    ka = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    ka_version = (ka.stdout + ka.stderr).splitlines()[0] if (ka.stdout + ka.stderr) else "?"
    py = subprocess.run(
        [str(ROOT / ".venv/bin/python"), "-VV"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": py.replace("\n", " "),
        "keepalived": ka_version,
    }


def fmt_ms(v: float) -> str:
    return f"{v * 1000:.1f}"


Targets = list[tuple[str, str, str]]  # (target, verdict, figure)


def report(res: dict[str, Any]) -> tuple[str, Targets]:
    """Markdown tables of the figures, and the verdict on every target of issue 3."""
    md: list[str] = []
    targets: Targets = []
    for key, section in (
        ("detection", _report_detection),
        ("jitter", _report_jitter),
        ("rss", _report_rss),
        ("cpu", _report_cpu),
        ("soak", _report_soak),
    ):
        if res.get(key):
            section(res[key], md, targets)
            md.append("")
    return "\n".join(md), targets


def _table(md: list[str], title: str, columns: list[str], intro: str = "") -> None:
    """A section's heading, its intro paragraph if any, and the head of its table."""
    md += [f"### {title}", ""]
    if intro:
        md += [intro, ""]
    md += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def _target(targets: Targets, target: str, met: bool, figure: str) -> None:
    targets.append((target, "met" if met else "missed", figure))


def _report_detection(det: dict[str, Any], md: list[str], targets: Targets) -> None:
    _table(
        md,
        "Detection after the master's link is cut (ms)",
        [
            "A",
            "MDI",
            "floor (MDI - A)",
            "drbdha median [min-max]",
            "keepalived median [min-max]",
            "ratio of medians",
            "runs below floor",
        ],
        intro="Last master advert -> first backup advert on the wire; backup priority 100.",
    )
    for d in det.values():
        cells, below = [], []
        for impl in IMPLS:
            t = d[impl]
            med = statistics.median(t)
            cells.append(f"{fmt_ms(med)} [{fmt_ms(min(t))}-{fmt_ms(max(t))}] (n={len(t)})")
            below.append(f"{impl} {sum(x < d['floor'] for x in t)}")
        d["ratio"] = statistics.median(d["drbdha"]) / statistics.median(d["keepalived"])
        md.append(
            f"| {d['interval'] * 1000:g} ms v{d['version']} | {fmt_ms(d['mdi'])} | "
            f"{fmt_ms(d['floor'])} | {cells[0]} | {cells[1]} | {d['ratio']:.3f} | "
            f"{', '.join(below)} |"
        )
    for key, limit in (("100ms_v3", 1.02), ("10ms_v3", 1.05)):
        if key in det:
            d = det[key]
            md_d, md_k = statistics.median(d["drbdha"]), statistics.median(d["keepalived"])
            _target(
                targets,
                f"detection median at {key[:-3]} within {limit}x of keepalived",
                d["ratio"] <= limit,
                (
                    f"{d['ratio']:.3f}x ({fmt_ms(md_d)} vs {fmt_ms(md_k)} ms, "
                    f"{(md_d - md_k) * 1000:+.1f} ms)"
                ),
            )
    viol = [(k, round(x * 1000, 1)) for k, d in det.items() for x in d["drbdha"] if x < d["floor"]]
    kviol = sum(x < d["floor"] for d in det.values() for x in d["keepalived"])
    total = sum(len(d["drbdha"]) for d in det.values())
    _target(
        targets,
        "drbdha detection never earlier than MDI - A",
        not viol,
        f"{len(viol)} violation(s) in {total} runs (keepalived: {kviol})"
        + (f": {viol}" if viol else ""),
    )


def _report_jitter(jit: dict[str, Any], md: list[str], targets: Targets) -> None:
    _table(
        md,
        "Advert send jitter |interval - A| on the wire (ms)",
        ["A, load", "impl", "intervals", "mean interval", "p50", "p99", "p99.9", "max"],
    )
    for key, d in jit.items():
        label = key.replace("_", ", ")
        for impl in IMPLS:
            j = d[impl]
            md.append(
                f"| {label} | {impl} | {j['n']} | {j['mean_interval']:.3f} | {j['p50']:.3f} | "
                f"{j['p99']:.3f} | {j['p999']:.3f} | {j['max']:.3f} |"
            )
        jd, jk = d["drbdha"]["p99"], d["keepalived"]["p99"]
        _target(
            targets,
            f"p99 jitter no worse than keepalived ({label})",
            jd <= jk,
            f"{jd:.3f} vs {jk:.3f} ms ({jd - jk:+.3f} ms)",
        )


def _report_rss(rss: dict[str, Any], md: list[str], targets: Targets) -> None:
    _table(
        md,
        "Memory with one instance (MB; keepalived = parent + VRRP child)",
        ["impl", "RSS", "PSS", "RSS per process", "PSS per process"],
    )
    for impl in IMPLS:
        m = rss[impl]
        pss = "n/a" if m["pss_total_kb"] is None else f"{m['pss_total_kb'] / 1024:.1f}"
        per_rss = " + ".join(f"{x / 1024:.1f}" for x in m["rss_kb"])
        per_pss = " + ".join("?" if x is None else f"{x / 1024:.1f}" for x in m["pss_kb"])
        md.append(f"| {impl} | {m['rss_total_kb'] / 1024:.1f} | {pss} | {per_rss} | {per_pss} |")
    mb = rss["drbdha"]["rss_total_kb"] / 1024
    _target(
        targets,
        f"RSS at most {RSS_TARGET_MB} MB with one instance",
        mb <= RSS_TARGET_MB,
        (
            f"{mb:.1f} MB ({mb - RSS_TARGET_MB:+.1f} MB against the target; keepalived "
            f"{rss['keepalived']['rss_total_kb'] / 1024:.1f} MB)"
        ),
    )


def _report_cpu(cpu: dict[str, Any], md: list[str], targets: Targets) -> None:
    _table(
        md,
        "CPU per 1000 adverts (VRRPv3, lone master; keepalived = parent + VRRP child)",
        [
            "instances x A",
            "impl",
            "adverts/s (nominal)",
            "CPU ms / 1000 adverts (stat)",
            "same (schedstat)",
            "% of a core",
            "RSS MB",
            "start to full rate",
        ],
    )
    for key, d in cpu.items():
        for impl in IMPLS:
            c = d[impl]
            steady = f"{c['time_to_steady_s']:.1f} s" if c["steady"] else "never"
            md.append(
                f"| {key} | {impl} | {c['rate']:.0f} ({c['expected_rate']:.0f}) | "
                f"{c['ms_per_1000']:.1f} | {c['ms_per_1000_schedstat']:.1f} | "
                f"{c['core_pct']:.2f} | {c['rss_total_kb'] / 1024:.1f} | {steady} |"
            )
        dd, kk = d["drbdha"], d["keepalived"]
        d["ratio"] = dd["ms_per_1000"] / max(kk["ms_per_1000"], 1e-9)
        note = (
            ""
            if dd["steady"]
            else f"; drbdha never reached the nominal rate ({dd['rate']:.0f} of "
            f"{dd['expected_rate']:.0f} adverts/s)"
        )
        _target(
            targets,
            f"CPU per 1000 adverts at most 2x keepalived ({key})",
            d["ratio"] <= 2,
            f"{d['ratio']:.2f}x ({dd['ms_per_1000']:.1f} vs {kk['ms_per_1000']:.1f} ms)" + note,
        )


def _report_soak(soak: dict[str, Any], md: list[str], targets: Targets) -> None:
    _table(
        md,
        f"Soak: drbdha and keepalived pairs at once, A = 10 ms, {soak.get('hogs', 2)} CPU hogs",
        [
            "impl",
            "duration",
            "transitions after election",
            "backup adverts on the wire",
            "master adverts",
            "longest master gap",
            "gaps > backup MDI",
        ],
    )
    for impl in IMPLS:
        if impl not in soak:
            continue
        r = soak[impl]
        md.append(
            f"| {impl} | {soak['seconds']:.0f} s | {r['transitions']} | {r['backup_adverts']} | "
            f"{r['master_adverts']} | {r['max_gap_ms']:.1f} ms | {r['gaps_over_mdi']} "
            f"(MDI {soak['mdi_ms']:.1f} ms) |"
        )
    r = soak["drbdha"]
    ok = r["transitions"] == 0 and r["backup_adverts"] == 0
    k = soak.get("keepalived")
    ka = "" if k is None else f"; keepalived: {k['transitions']} transition(s)"
    _target(
        targets,
        f"no false failover in {soak['seconds'] / 60:.0f} min at 10 ms with 2 hogs",
        ok,
        f"{r['transitions']} transition(s), {r['backup_adverts']} backup advert(s); "
        f"longest master gap {r['max_gap_ms']:.1f} ms vs MDI {soak['mdi_ms']:.1f} ms" + ka,
    )


def write_doc(body: str) -> None:
    block = f"{BEGIN}\n{body.rstrip()}\n{END}"
    if DOC.exists():
        text = DOC.read_text()
        if BEGIN in text and END in text:
            head, _, rest = text.partition(BEGIN)
            _, _, tail = rest.partition(END)
            DOC.write_text(head + block + tail)
            return
        DOC.write_text(text.rstrip() + "\n\n" + block + "\n")
        return
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text("# Benchmarks: drbdha vs keepalived\n\n" + block + "\n")


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def render(
    args: argparse.Namespace, res: dict[str, Any], meta: dict[str, Any]
) -> tuple[str, Targets]:
    """The whole block for docs/benchmarks.md: the run, the machine, the figures of `res`
    (with the phases of every --include file), the targets."""
    notes = []
    for path in args.include:
        earlier = json.loads(path.read_text())
        phases = sorted(earlier["results"])
        res.update(earlier["results"])
        notes.append(
            f"Figures for {', '.join(phases)} from a separate run: {earlier['started_at']}, "
            f"`{earlier['command'].strip()}`, load average before/after "
            f"{earlier['load_before']} / {earlier['load_after']}."
        )
    body, targets = report(res)
    info = machine()
    quick = " (--quick)" if args.quick else ""
    head = [
        (
            f"Run: {meta['started_at']}, {meta['minutes']} min{quick}. "
            f"Command (as root, from the repository root): `{meta['command'].strip()}`"
        ),
        "",
        (
            f"Machine: {info['nproc']} CPUs ({info['cpu']}), kernel {info['kernel']}, "
            f"{info['python']}, {info['keepalived']}. "
            f"Load average before/after: {meta['load_before']} / {meta['load_after']}."
        ),
        "",
    ]
    for note in notes:
        head += [note, ""]
    tgt = ["### Targets", "", "| target | verdict | figure |", "|---|---|---|"]
    tgt += [f"| {t} | **{v}** | {d} |" for t, v, d in targets]
    if "soak" not in res:
        tgt.append("| no false failover in 10 min at 10 ms with 2 hogs | not run | `--soak 600` |")
    return "\n".join(head) + "\n" + body + "\n" + "\n".join(tgt) + "\n", targets
