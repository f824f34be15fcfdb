"""The campaign's sampler (campaign.py): both nodes, about twice a second, read through the
guest agent's file calls (no process in the VMs), against three invariants:

- never two DRBD Primaries;
- never two nodes holding the VIP;
- never the VIP on a node whose chain is not up (DRBD Primary, the filesystem mounted, nfsd
  running).

A node's reads are one after the other, never one instant: a sample that breaks an
invariant is confirmed by reading again (for two nodes: node1, node2, node1, so that node1
held the role both before and after node2 was seen holding it; for the VIP without the
chain: the VIP still there after the chain was seen down). Only confirmed samples count; the
unconfirmed ones are counted beside them, so a sampler that never confirms would show.
"""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cluster import NODES, VIP, LabError
from qga import AgentError

if TYPE_CHECKING:
    from cluster import Lab

MOUNTPOINT = "/srv/nfs"
READ_TIMEOUT = 2.0  # a node that takes longer is loaded or dying: that sample is skipped
EVERY = 0.5


@dataclass(frozen=True)
class NodeView:
    primary: bool
    vip: bool
    mounted: bool
    nfsd: bool
    suspended: bool = False  # DRBD holds its I/O (/proc/drbd's "s" flag)
    diskless: bool = False

    @property
    def frozen(self) -> bool:
        """A Primary whose I/O DRBD holds, or that has no disk (two Primaries are never
        connected, so none to write through): it acknowledges no write. A node back from a
        freeze past its peer's takeover, on its way out (daemon/stale.py)."""
        return self.primary and (self.suspended or self.diskless)

    @property
    def chain_up(self) -> bool:
        return self.primary and self.mounted and self.nfsd


@dataclass
class Violation:
    kind: str  # two_primaries | two_vip_holders | vip_without_chain
    at: float  # host clock (time.time())
    fault: int  # the campaign's fault index at that moment (-1: between faults)
    detail: str
    views: dict[str, NodeView | None] = field(default_factory=dict)


@dataclass
class Tally:
    samples: int = 0
    unconfirmed: int = 0
    violations: list[Violation] = field(default_factory=list)


def _read(lab: Lab, node: str, path: str) -> str | None:
    try:
        return lab.agent(node).read_file(path, READ_TIMEOUT).decode(errors="replace")
    except (AgentError, LabError, OSError, TimeoutError, subprocess.TimeoutExpired):
        return None


def local_addresses(fib_trie: str) -> set[str]:
    """The addresses /proc/net/fib_trie lists as this host's own (`/32 host LOCAL`)."""
    out, last = set(), ""
    for line in fib_trie.splitlines():
        text = line.strip()
        if text.startswith("|--"):
            last = text[3:].strip()
        elif text.startswith("/32 host LOCAL") and last:
            out.add(last)
    return out


def drbd_primary(proc_drbd: str) -> tuple[bool, bool]:
    """(Primary, I/O suspended) from /proc/drbd (8.4): `ro:Primary/...` and the flags
    field after the protocol letter, `r-----` running or `s-----` suspended."""
    for line in proc_drbd.splitlines():
        fields = line.split()
        if fields[:1] == ["0:"]:
            primary = any(f.startswith("ro:Primary/") for f in fields)
            flags = next((f for f in fields if len(f) == 6 and f[0] in "rs" and "-" in f), "")
            return primary, flags.startswith("s")
    return False, False


def view(lab: Lab, node: str) -> NodeView | None:
    """The node as it is now, the VIP read first (a release drops the VIP first and a
    takeover adds it last, so reading it first can only miss a violation, never invent
    one); None when the node cannot be read (powered off, frozen, overloaded)."""
    if not lab.running(node) or lab.frozen(node):
        return None
    trie = _read(lab, node, "/proc/net/fib_trie")
    drbd = _read(lab, node, "/proc/drbd")
    mounts = _read(lab, node, "/proc/mounts")
    if trie is None or drbd is None or mounts is None:
        return None
    threads = _read(lab, node, "/proc/fs/nfsd/threads")
    primary, suspended = drbd_primary(drbd)
    return NodeView(
        primary=primary,
        suspended=suspended,
        diskless="ds:Diskless/" in drbd,
        vip=VIP in local_addresses(trie),
        mounted=any(line.split()[1:2] == [MOUNTPOINT] for line in mounts.splitlines()),
        nfsd=bool(threads and threads.strip() not in ("", "0")),
    )


class Sampler(threading.Thread):
    """Samples until stop(); `fault` is set by the campaign so that each violation names the
    fault it happened in."""

    def __init__(self, lab: Lab) -> None:
        super().__init__(daemon=True)
        self.lab = lab
        self.fault = -1
        self.tally = Tally()
        self._halt = threading.Event()
        # The nodes whose service link is cut right now (set by the campaign when it
        # strikes, emptied at the heal): no client reaches them, whatever they serve.
        self.cut_off: frozenset[str] = frozenset()
        # (fault, nodes serving, nodes cut off then): each change
        self._served: list[tuple[int, frozenset[str], frozenset[str]]] = []

    def note_serving(self, serving: frozenset[str]) -> None:
        """What a sample saw serving (VIP and chain up), kept when it changes."""
        change = (self.fault, serving, self.cut_off)
        if serving and (not self._served or self._served[-1] != change):
            self._served.append(change)

    def served_last(self, fault: int) -> str | None:
        """The node seen serving last during `fault` (with the VIP and its chain up) where
        clients could reach it: the copy they wrote to, which split-brain repair keeps. A
        node serving while cut off is left out of that moment only: once healed, what it
        serves is reached (seed 100 fault 74: the isolated master served again after the
        heal and took the writes; leaving it out for the whole fault discarded them, while
        the node kept had served only behind its own cut service link)."""
        for f, nodes, cut_off in reversed(self._served):
            if f != fault:
                continue
            left = nodes - cut_off
            if len(left) == 1:
                return next(iter(left))
        return None

    def _confirm_pair(self, attr: str) -> bool:
        first = view(self.lab, NODES[0])
        second = view(self.lab, NODES[1])
        again = view(self.lab, NODES[0])
        return all(v is not None and getattr(v, attr) for v in (first, second, again))

    def _confirm_vip_without_chain(self, node: str) -> bool:
        v = view(self.lab, node)
        if v is None or not v.vip or v.chain_up:
            return False
        again = view(self.lab, node)
        return again is not None and again.vip

    def _flag(self, kind: str, detail: str, views: dict[str, NodeView | None]) -> None:
        self.tally.violations.append(Violation(kind, time.time(), self.fault, detail, views))
        self.lab.log(f"campaign: VIOLATION {kind} during fault {self.fault}: {detail}")

    def sample(self) -> None:
        views = dict(zip(NODES, self.lab.parallel(lambda n: view(self.lab, n), NODES), strict=True))
        self.tally.samples += 1
        seen = {n: v for n, v in views.items() if v is not None}
        serving = frozenset(n for n, v in seen.items() if v.vip and v.chain_up)
        self.note_serving(serving)
        for attr, kind in (("primary", "two_primaries"), ("vip", "two_vip_holders")):
            if len(seen) == 2 and all(getattr(v, attr) for v in seen.values()):
                if self._confirm_pair(attr):
                    frozen = any(v.frozen for v in seen.values())
                    self._flag(f"{kind}_one_frozen" if frozen else kind, repr(views), views)
                else:
                    self.tally.unconfirmed += 1
        for node, v in seen.items():
            if v.vip and not v.chain_up:
                if self._confirm_vip_without_chain(node):
                    self._flag("vip_without_chain", f"{node}: {v!r}", {node: v})
                else:
                    self.tally.unconfirmed += 1

    def run(self) -> None:
        while not self._halt.is_set():
            t0 = time.monotonic()
            self.sample()
            self._halt.wait(max(0.0, EVERY - (time.monotonic() - t0)))

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(30)
