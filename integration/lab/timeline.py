"""A picture of a takeover: the client's writes over time above the phases of the takeover on
the new master, seconds after the power-off; several takeovers (drbdha, the classic stack) one
above the other on one time axis. PNG and SVG, with matplotlib."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nfslab import Phase


@dataclass
class Timeline:
    """One takeover on the host's clock: `zero` the power-off, `phases` on the new master,
    `writes` the completion time of each acknowledged write, per client mount."""

    label: str
    zero: float
    phases: list[Phase]
    writes: dict[str, list[float]] = field(default_factory=dict)


def draw(timelines: list[Timeline], path: Path, title: str = "") -> list[Path]:
    """Write `path` (.png) and the same picture as .svg; returns both paths."""
    import matplotlib as mpl  # noqa: PLC0415  (only the picture needs it)

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    end = max(
        max((w for ws in t.writes.values() for w in ws), default=t.zero) - t.zero for t in timelines
    )
    end = max(end, *(p.end - t.zero for t in timelines for p in t.phases), 1.0)
    heights = [r for t in timelines for r in (2, max(2, len(t.phases)) * 0.45)]
    fig, axes = plt.subplots(
        len(heights), 1, figsize=(10, sum(heights) + 1), sharex=True, height_ratios=heights
    )
    for i, t in enumerate(timelines):
        writes, phases = axes[2 * i], axes[2 * i + 1]
        for mount, done in sorted(t.writes.items()):
            xs = [d - t.zero for d in done]
            writes.step(xs, range(1, len(xs) + 1), where="post", label=mount)
        writes.axvline(0, color="black", linewidth=1)
        writes.set_ylabel("records\nacknowledged")
        writes.set_title(f"{t.label}: the client's writes", loc="left", fontsize=10)
        if t.writes:
            writes.legend(loc="upper left", fontsize=8)
        for row, p in enumerate(t.phases):
            start, width = p.start - t.zero, max(p.end - p.start, end / 400)
            phases.barh(row, width, left=start, height=0.6, color=f"C{row % 10}")
            phases.text(
                start + width + end / 200,
                row,
                f"{p.name} {p.end - t.zero:.2f} s",
                va="center",
                fontsize=8,
            )
        phases.set_yticks(range(len(t.phases)), [p.name for p in t.phases], fontsize=8)
        phases.invert_yaxis()
        phases.axvline(0, color="black", linewidth=1)
        phases.set_title(f"{t.label}: the takeover on the new master", loc="left", fontsize=10)
    axes[-1].set_xlabel("seconds after the master was powered off")
    axes[-1].set_xlim(-0.05 * end, end * 1.15)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = [path.with_suffix(".png"), path.with_suffix(".svg")]
    for p in out:
        fig.savefig(p, dpi=110)
    plt.close(fig)
    return out
