"""drbdha demo: the full cluster in VMs, one power-off of the NFS master, every record checked.

Builds (or reuses) the lab's VM image and boots node1, node2 (DRBD, kernel nfsd, drbdha
installed from this tree and started with systemctl) and a client; the client mounts the VIP
over NFSv3 and NFSv4.2 and appends checksummed records with an fsync each; `drbdha status` on
both nodes; node1 is powered off; node2 takes over, the client resumes; every acknowledged
record is checked on node2; a timeline picture of the takeover is written; the lab is removed.
The last line is `result: acknowledged=N intact=N lost=N stall=S.SSs` (stall: the longest time
one of the client's writes was blocked). Exit status 0 only if nothing was lost.

--quick: the namespace-only VRRP demo instead (no qemu needed, ~10 s).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "lab"))


def say(msg: str) -> None:
    print(msg if msg.startswith("==") or "\n" in msg else f"demo: {msg}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the namespace-only VRRP demo")
    ap.add_argument("--interval", type=float, default=0.1, help="--quick: advert interval, s")
    ap.add_argument("--keep", action="store_true", help="leave the lab running afterwards")
    ap.add_argument(
        "--picture",
        type=Path,
        default=Path("drbdha-takeover.png"),
        help="where the timeline goes (PNG, and SVG beside it); default: %(default)s",
    )
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("demo: run as root (it builds network namespaces and VMs)", file=sys.stderr)
        return 1
    if args.quick:
        import demo_quick  # noqa: PLC0415

        return demo_quick.demo(args.interval)
    return full(args.keep, args.picture)


def full(keep: bool, picture: Path) -> int:
    import demo_cluster  # noqa: PLC0415  (the lab's modules: sys.path above)
    import nfslab  # noqa: PLC0415
    import timeline  # noqa: PLC0415
    from cluster import Lab  # noqa: PLC0415

    t0 = time.monotonic()
    lab = Lab(log=lambda m: print(f"lab: {m}", flush=True))
    say("the VM image (built once, about a minute; cached), three VMs under emulation (~2 min)")
    try:
        lab.up()
        with nfslab.nfs_cluster(lab) as s:
            result = demo_cluster.power_off_master(lab, s, say=say)
    finally:
        if not keep:
            lab.down()
            say("lab removed")
    paths = timeline.draw(
        [result.timeline()], picture, "drbdha: the NFS master powered off, the peer takes over"
    )
    say(f"the takeover as a picture: {', '.join(map(str, paths))}")
    say(f"done in {time.monotonic() - t0:.0f} s")
    print(result.line())
    errors = sum(m.errors for m in result.mounts.values())
    if errors:
        say(f"FAILED: the client saw {errors} write errors")
    return 0 if result.lost == errors == 0 and result.acknowledged > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
