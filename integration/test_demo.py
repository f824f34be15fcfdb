"""The README's quick demo (`integration/demo --quick`), run as CI runs it (minus the package
set-up, done already). The full demo's code path is test_nfs_vms.py's power-off."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the demo builds network namespaces")


def test_demo_shows_a_takeover() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "integration/demo.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    first = re.search(r"demo: (node\d) is master", out.stdout)
    second = re.search(r"demo: (node\d) took over", out.stdout)
    assert first, out.stdout
    assert second, out.stdout
    assert first.group(1) != second.group(1), out.stdout
    gap = re.search(r"longest gap between ping replies: (\d+) ms", out.stdout)
    assert gap, out.stdout
    # The outage cannot be shorter than detection allows: the master died after its last
    # advert, and the backup waits Master_Down_Interval (360.9 ms) from that advert, so the
    # client sees at least MDI - one interval (261 ms) without replies.
    assert int(gap.group(1)) >= 250, out.stdout
    assert "lab removed" in out.stdout
