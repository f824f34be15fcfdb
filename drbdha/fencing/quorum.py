"""The fence-peer answer "the peer is dead" (exit 5) on a DRBD 9 resource with quorum.

DRBD takes exit 5 as "the peer is Outdated" and then counts it out of the vote: when every
absent node is Outdated, the other partition cannot promote, so the rest has quorum
(drbd_state.c calc_quorum). On a node cut off from both its peers that is exactly wrong:
its peer is silent because *this* node is isolated, the peer and the tiebreaker are the
majority and take over, and the isolated Primary, given quorum back by our answer, writes
on: a split brain at the heal (seen in the lab: the Primary cut off on both networks, the
handler answered 5, DRBD showed it quorate again and both ends went StandAlone).

So with quorum the silence is read against this node's own quorum:
- this node lacks quorum: "failed" (exit 1). DRBD keeps the peer's disk state and holds
  this node's I/O; the node stays without quorum and writes nothing. In the lab its
  release then stopped at a busy unmount (FAULT) until the heal, where DRBD found the
  peer's data newer and outdated it: no split brain, but no clean release either, which
  is why the README's three-node setup has no handler.
- a Secondary with quorum (a promotion): the answer stands. The peer, outside our majority,
  has no quorum and cannot write.
- a Primary with quorum: the answer stands only once DRBD has had time to notice the loss
  of the other connections too (ping-int + ping-timeout after the handler started: the
  tiebreaker's link may be cut with the peer's and still look alive). Its I/O is held by
  DRBD meanwhile (fencing resource-and-stonith).

Standard library only: it runs in the handler's process (cli._fence_peer).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

Run = Callable[[Sequence[str]], str]  # a command's stdout; raises OSError/SubprocessError

POLL: Final = 0.1  # seconds between looks at DRBD's quorum
MARGIN: Final = 0.5  # seconds beyond DRBD's own detection time
MAX_SETTLE: Final = 15.0  # never hold a Primary's I/O longer than this for the look
_OPTION: Final = re.compile(r"^\s*([\w-]+)\s+([^;\s]+)\s*;", re.MULTILINE)


def run(cmd: Sequence[str]) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=5).stdout


def quorum_options(show: str) -> tuple[str, float] | None:
    """(quorum, seconds DRBD needs to notice a dead peer) from `drbdsetup show
    --show-defaults`, or None when quorum is off or absent (DRBD 8.4)."""
    pairs = _OPTION.findall(show)
    quorum = dict(pairs).get("quorum", "off")
    if quorum == "off":
        return None

    def slowest(key: str, default: str) -> float:  # each connection has its own net options
        return max((float(v) for k, v in pairs if k == key), default=float(default))

    return quorum, slowest("ping-int", "10") + slowest("ping-timeout", "5") / 10  # tenths


def has_quorum(status: dict[str, Any]) -> bool:
    """This node's quorum from one resource of `drbdsetup status --json`: all volumes."""
    return all(d.get("quorum", True) for d in status.get("devices", []))


def settle(
    answer_dead: bool,
    resource: str,
    started: float,
    *,
    run: Run = run,
    now: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str | None:
    """Why a "dead peer" answer must not be given on `resource`, or None when it may (or
    when quorum is off, or DRBD cannot be asked: then quorum plays no part in the answer).
    `started`: when the handler started, on `now`'s clock."""
    if not answer_dead:
        return None
    try:
        options = quorum_options(run(["drbdsetup", "show", "--show-defaults", resource]))
    except (OSError, subprocess.SubprocessError):
        return None
    if options is None:
        return None
    quorum, detect = options
    until = started + min(detect + MARGIN, MAX_SETTLE)
    while True:
        try:
            (status,) = json.loads(run(["drbdsetup", "status", "--json", resource]))
        except (OSError, subprocess.SubprocessError, ValueError):
            return "the peer is silent and this node's quorum cannot be read"
        if not has_quorum(status):
            return (
                f"the peer is silent and this node has no quorum ({quorum}): this node is "
                "the one cut off; answering 'dead' would give it quorum back"
            )
        if status.get("role") != "Primary" or now() >= until:
            return None
        sleep(POLL)
