"""The daemon's wiring, one module per job (docs/architecture.md):

- loop.py: the one asyncio loop and its inbox turns; `Daemon`, `run`.
- inbox.py: the inbox and its timerfd; events.py: every event the inbox carries.
- instance.py: one VRRP instance at run time, carrying out its machine's effects.
- compose.py: the steps of each instance's chain, in order.
- storage.py: the storage side of an instance (runner reports, DRBD verdicts, latches, the
  observation rule); health.py: the checks' rise/fall counting.
- handover.py: force-failover; probe.py: the peer probe; supervise.py: background tasks.

`Daemon` and `run` are loaded on first use: importing one of the rooms (a unit test of
health.py, say) must not pull in the loop and everything it wires.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from drbdha.daemon.loop import Daemon, run

__all__ = ["Daemon", "run"]


def __getattr__(name: str) -> Any:
    if name in ("Daemon", "run"):
        from drbdha.daemon import loop  # noqa: PLC0415 (lazy: see above)

        return getattr(loop, name)
    raise AttributeError(name)
