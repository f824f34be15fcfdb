"""The peer probe: a takeover held back only because DRBD still shows the silent master as a
connected Primary asks DRBD to check that peer now, instead of waiting for DRBD's own
detection (ping-int + ping-timeout of silence on the replication link; 10.5 s with DRBD's
defaults, and seconds more under load).

Rules:
- Once per deferral, only while `peer_primary` is the one inhibition (every other gate
  passes) and the peer went silent: a peer whose last advert had priority 0 is handing
  over and demotes by itself.
- The probe is one `drbdadm primary` (drbd.probe_peer). It is safe because DRBD's own
  single-primary rule refuses it while the peer answers; when the peer is dead, DRBD's
  retry may promote us, through the fence-peer handler like any promote.
- A promote the probe made belongs to the chain from then on: a takeover that goes ahead
  finds DRBD Primary (its step has nothing to do); one that does not (an advert came back,
  a fault) has the runner adopt the DRBD step and demote it, with a failed demote
  escalated like any failed stop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from drbdha.clock import Clock
from drbdha.daemon.instance import Instance
from drbdha.metrics import Metrics
from drbdha.resources import drbd
from drbdha.resources.drbd import DrbdStep
from drbdha.vrrp.events import State

SILENT_PEER_ONLY = frozenset({"peer_primary"})


@dataclass(frozen=True, slots=True)
class ProbePeer:
    """Inbox event: probe the peer of `resource` now, for at most `timeout` seconds."""

    instance: str
    resource: str
    timeout: float


@dataclass(frozen=True, slots=True)
class PeerProbed:
    """Inbox event: the probe's outcome (drbd.Probed.outcome)."""

    instance: str
    outcome: str


class PeerProbe:
    def __init__(
        self, put: Callable[[object], None], metrics: Metrics, log: Any, clock: Clock
    ) -> None:
        self.put = put
        self.metrics = metrics
        self.log = log
        self.clock = clock
        # instance name -> this deferral's probe: "asked", "promoted" or "done"
        self.state: dict[str, str] = {}

    def deferred(self, inst: Instance, now: float) -> None:
        """The machine's takeover just became deferred: probe if the rules allow."""
        m = inst.machine
        peer = m.last_peer
        if (
            inst.storage is None
            or inst.name in self.state
            or frozenset(m.inhibitions) != SILENT_PEER_ONLY
            or peer is None  # never heard a master: nothing went silent
            or peer.priority == 0
            # Heard within the interval: not silent (under load the timer and an advert can
            # meet in one turn of the loop, as at a backup's start).
            or now - peer.seen_at < m.master_down_interval
        ):
            return
        self.state[inst.name] = "asked"
        self.put(ProbePeer(inst.name, inst.storage.drbd_resource, inst.storage.promote_timeout))

    async def run(self, ev: ProbePeer) -> None:
        """Beside the loop. Never raises: it runs in the daemon's task group."""
        t0 = self.clock.monotonic()
        try:
            async with asyncio.timeout(ev.timeout):
                r = await drbd.probe_peer(ev.resource)
        except TimeoutError:
            r = drbd.Probed("failed", f"no answer in {ev.timeout:g} s")
        except Exception as e:  # logged; the daemon must go on
            r = drbd.Probed("failed", repr(e))
        self.metrics.peer_probes.labels(ev.instance, r.outcome).inc()
        level = "error" if r.outcome == "failed" else "warning"
        getattr(self.log, level)(
            "drbd.peer_probed",
            instance=ev.instance,
            resource=ev.resource,
            outcome=r.outcome,
            detail=r.detail,
            took_ms=round((self.clock.monotonic() - t0) * 1000, 1),
        )
        self.put(PeerProbed(ev.instance, r.outcome))

    def probed(self, inst: Instance, ev: PeerProbed) -> None:
        self.state[inst.name] = "promoted" if ev.outcome == "promoted" else "done"
        self.settle(inst)

    def settle(self, inst: Instance) -> None:
        """After every machine input: hand a promote the probe made to the chain."""
        probe = self.state.get(inst.name)
        if probe is None:
            return
        m = inst.machine
        if probe == "done" and not m.takeover_deferred:
            del self.state[inst.name]  # the next deferral may probe again
        if probe != "promoted" or m.takeover_deferred:
            return  # nothing made, or the takeover may still go ahead
        del self.state[inst.name]
        if m.state is State.MASTER:
            return  # the chain's DRBD step finds us Primary
        adopted = inst.runner.adopt(DrbdStep.name)
        self.log.warning(
            "drbd.peer_probe_undone",
            instance=inst.name,
            state=m.state.value,
            action="demoting" if adopted else "left to the chain (its DRBD step is busy)",
        )
