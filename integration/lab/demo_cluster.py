"""The full cluster's demo, and the NFS power-off test's code path: drbdha under systemd on
node1 and node2 with the whole chain, the client writing over NFSv3 and NFSv4.2 through the
VIP, the master powered off, the peer taking over, every acknowledged record checked on it.

integration/demo runs it on a lab of its own (booted, then removed); test_nfs_vms.py runs it
on the test session's lab and asserts on the Result, whose line() is the demo's last line.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nfslab import Phase, events, logged_at, lost_on, mount_and_write, takeover_phases
from timeline import Timeline

if TYPE_CHECKING:
    import records
    from chainlab import Storage
    from cluster import Lab

VERSIONS = ("3", "4.2")
MASTER, PEER = "node1", "node2"


@dataclass
class Mount:
    """One client mount through the power-off."""

    version: str
    acknowledged: int
    lost: int
    errors: int  # writes that failed on the client (an NFS error is a broken promise too)
    stall: float  # the longest single write, s: how long the application was blocked
    resumed_after_vip: float  # the first write done after the VIP came up on the peer, s
    done: list[float] = field(repr=False, default_factory=list)  # completions, host clock


@dataclass
class Result:
    mounts: dict[str, Mount]
    killed_at: float  # host clock, just before the qemu process was killed
    vip_at: float  # host clock, the VIP added on the peer
    phases: list[Phase]
    fence_peer: dict[str, Any] | None  # the peer's fence-peer handler run, from its journal

    @property
    def acknowledged(self) -> int:
        return sum(m.acknowledged for m in self.mounts.values())

    @property
    def lost(self) -> int:
        return sum(m.lost for m in self.mounts.values())

    @property
    def stall(self) -> float:
        return max(m.stall for m in self.mounts.values())

    def line(self) -> str:
        return (
            f"result: acknowledged={self.acknowledged} intact={self.acknowledged - self.lost} "
            f"lost={self.lost} stall={self.stall:.2f}s"
        )

    def timeline(self, label: str = "drbdha") -> Timeline:
        return Timeline(
            label,
            self.killed_at,
            self.phases,
            {f"NFSv{v}": m.done for v, m in self.mounts.items()},
        )


def phases_after(entries: list[dict[str, Any]], offset: float, fault_at: float) -> list[Phase]:
    """The takeover in the new master's journal entries after the fault (host clock), the
    detection a bar from the fault to the VRRP transition."""
    found = [p for p in takeover_phases(entries, offset) if p.end >= fault_at]
    moments = {p.name: p.end for p in reversed(found) if p.start == p.end}  # the first of each
    out = []
    if "VRRP master" in moments:
        detected = moments.get("VRRP deferred", moments["VRRP master"])
        out.append(Phase("VRRP detection", fault_at, detected))
        if "VRRP deferred" in moments:
            # DRBD still saw a connected Primary: drbdha waits for DRBD's own peer-loss time.
            out.append(Phase("DRBD peer loss", detected, moments.get("DRBD peer gone", detected)))
    return out + [p for p in found if p.start != p.end]


def show_status(lab: Lab, node: str, say: Callable[[str], None]) -> None:
    say(f"== drbdha status on {node}")
    say(lab.exec(node, "drbdha status", check=False, timeout=90).stdout.rstrip())


def power_off_master(
    lab: Lab, s: Storage, versions: tuple[str, ...] = VERSIONS, say: Callable[[str], None] = print
) -> Result:
    """On nfslab.nfs_cluster's cluster: start drbdha on node1 (the master) and node2, mount
    and write, power node1 off, wait for every mount to write 50 more records, check them
    all on node2."""
    since = lab.exec(PEER, "date +%s").stdout.strip()
    s.start(MASTER, PEER)
    s.wait_serving(MASTER, timeout=120)
    say(f"drbdha started on {MASTER} and {PEER} (systemctl start drbdha): {MASTER} serves")
    show_status(lab, MASTER, say)
    show_status(lab, PEER, say)
    writers = mount_and_write(lab, *versions)
    say(
        "the client mounted the VIP's export with "
        + " and ".join(f"NFSv{v}" for v in versions)
        + " and appends 512-byte records, fsync after each: "
        + ", ".join(f"{w.acks.acknowledged} acknowledged on NFSv{v}" for v, w in writers.items())
    )
    say(f"powering {MASTER} off (its qemu process killed: no shutdown, no goodbye)")
    killed_at = time.time()
    lab.kill(MASTER)
    for w in writers.values():
        w.wait_for(w.acks.acknowledged + 50, timeout=180)
    for w in writers.values():
        w.stop()
    result = _result(lab, writers, since, killed_at)
    say(
        f"{PEER} took over: the VIP {result.vip_at - killed_at:.2f} s after the power-off; "
        + "; ".join(
            f"NFSv{v} wrote again {m.resumed_after_vip:.2f} s after the VIP"
            for v, m in result.mounts.items()
        )
    )
    show_status(lab, PEER, say)
    say("the takeover on the new master, seconds after the power-off:")
    width = max((len(p.name) for p in result.phases), default=0)
    for p in result.phases:
        span = f"{p.start - killed_at:6.2f} - {p.end - killed_at:6.2f}" if p.end > p.start else ""
        say(f"  {p.name:<{width}} {span:>15}  done at {p.end - killed_at:.2f}")
    say(
        f"every acknowledged record checked in its file on {PEER}: "
        + ", ".join(f"NFSv{v} {m.lost} of {m.acknowledged} lost" for v, m in result.mounts.items())
    )
    return result


def _result(lab: Lab, writers: dict[str, records.Writer], since: str, killed_at: float) -> Result:
    entries = events(lab, PEER, since)
    peer_offset, client_offset = lab.clock_offset(PEER), lab.clock_offset("client")
    (vip,) = [e for e in entries if e.get("EVENT") == "vip.added"]
    vip_at = logged_at(vip) - peer_offset
    phases = phases_after(entries, peer_offset, killed_at)
    mounts = {}
    for version, w in writers.items():
        done = [st + t - client_offset for st, t in zip(w.acks.starts, w.acks.took, strict=True)]
        mounts[version] = Mount(
            version,
            w.acks.acknowledged,
            lost_on(lab, PEER, w),
            w.acks.errors,
            w.acks.longest_write(),
            min(d for d in done if d > vip_at) - vip_at,
            done,
        )
        phases.append(
            Phase(f"NFSv{version} resumed", vip_at, vip_at + mounts[version].resumed_after_vip)
        )
    fence = [e for e in entries if e.get("EVENT") == "fence.peer"]
    return Result(mounts, killed_at, vip_at, phases, fence[-1] if fence else None)
