"""The parts of bench/vrrp_bench.py (the entry point, with the command line), one job each:
procs, the processes the bench starts (drbdha, keepalived, CPU hogs), their configs, what
/proc says about them and the sweep of a SIGKILLed earlier run; lab, the namespaces (r1, r2,
the observer's bridge) and the wire capture on it; measure, the measurements (detection,
jitter, RSS, CPU, soak); report, the markdown tables, the verdict on every target and
docs/benchmarks.md.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
# The integration harness (netns.Lab, drbdha_toml, polling.wait_until) is not a package.
if str(ROOT / "integration") not in sys.path:
    sys.path.insert(0, str(ROOT / "integration"))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
