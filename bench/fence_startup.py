#!/usr/bin/env python3
"""The fence-peer handler's fixed cost under emulation, A/B: `drbdha fence-peer --resource
nosuch` on node2 (the backup, its daemon running and answering: a refusal, so nothing is
fenced), 15 runs per package, two rounds, with the package of the commit given (--old,
built by `debian/build-deb` in a worktree) and with the working tree's. Prints min /
median / max in ms per round. Needs the lab up (`integration/lab/lab up`).

    git worktree add /tmp/old COMMIT && (cd /tmp/old && debian/build-deb)
    .venv/bin/python bench/fence_startup.py --old /tmp/old/dist/drbdha_0.1.0_all.deb
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration" / "lab"))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent / "integration"))

from cluster import Lab
from nfslab import nfs_cluster

# Each run timed in the guest (date's nanoseconds around the command), then min/median/max.
RUNS = r"""
for i in $(seq 15); do
    s=$(date +%s%N); drbdha fence-peer --resource nosuch >/dev/null 2>&1; e=$(date +%s%N)
    echo $(( (e - s) / 1000000 ))
done | sort -n | awk '{a[NR]=$1}
    END {print "min", a[1], "median", a[int((NR+1)/2)], "max", a[NR], "ms, n", NR}'
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--old", type=Path, required=True, help="the .deb to compare with")
    p.add_argument("--rounds", type=int, default=2)
    a = p.parse_args()
    lab = Lab()
    new_deb = lab.build_deb()

    def measure(tag: str) -> None:
        r = lab.exec("node2", "systemctl is-active drbdha; " + RUNS, timeout=300)
        print(tag, r.stdout.strip().replace("\n", " | "), flush=True)

    with nfs_cluster(lab) as s:
        s.start("node1", "node2")
        s.wait_serving("node1", timeout=120)
        time.sleep(5)
        for rnd in range(a.rounds):
            measure(f"round {rnd} working tree:")
            lab.install_deb("node2", a.old, "dpkg -i --force-confold")
            time.sleep(8)  # the package's postinst restarted drbdha: let it settle
            measure(f"round {rnd} {a.old.name} (--old):")
            lab.install_deb("node2", new_deb, "dpkg -i --force-confold")
            time.sleep(8)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
