"""Health checks while serving: the chain's own (built in) and the admin's
(`[[storage.NAME.checks]]`), with keepalived's track-script semantics.

Rules:
- A check is failing after `fall` failures in a row and healthy again after `rise` successes
  in a row (CheckState, pure). It starts healthy: a check that has not run yet does not
  keep a node out.
- A failing check of weight 0 is a FAULT (`check:NAME`): a master releases its chain and
  the peer takes over; a backup stays out. Otherwise the priority drops by its weight.
- A check that starts failing on a master inhibits this node from taking the service
  (back) for `takeover_damping` seconds: a minimum time between two takeovers on one node
  (drbd-reactor waits 20 s too), so a flapping check cannot move the service back and
  forth, nor a lone node with a broken chain promote and release in a tight loop.
- The admin's checks run all the time (a backup whose check fails must not take over); the
  built-in ones only while the chain is up (they look at what it brought up), and their
  state is cleared when it goes down.
- Every check runs as its own task, bounded by its timeout; results reach the machine only
  through the inbox (CheckResult), like everything else. What the built-in checks look at
  (the filesystem, nfsd, the exports) is resources/storage_checks.py: here is the counting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from drbdha.config import CheckConfig, StorageConfig
from drbdha.net import tickle
from drbdha.resources import proc, storage_checks


@dataclass(frozen=True, slots=True)
class CheckResult:
    instance: str
    check: str
    ok: bool
    detail: str = ""


@dataclass(slots=True)
class CheckState:
    cfg: CheckConfig
    builtin: bool = False
    failing: bool = False
    streak: int = 0  # results in a row that disagree with `failing`
    last_ok: bool | None = None
    last_detail: str = ""
    runs: int = 0

    def result(self, ok: bool, detail: str = "") -> bool:
        """Count one result; True if the check changed between healthy and failing."""
        self.runs += 1
        self.last_ok, self.last_detail = ok, detail
        if ok != self.failing:  # agrees with the current state
            self.streak = 0
            return False
        self.streak += 1
        if self.streak < (self.cfg.rise if self.failing else self.cfg.fall):
            return False
        self.failing, self.streak = not self.failing, 0
        return True

    def reset(self) -> bool:
        """Back to healthy with no history (a built-in check when the chain goes down);
        True if it was failing."""
        was = self.failing
        self.failing, self.streak, self.last_ok, self.last_detail = False, 0, None, ""
        return was


def builtin_checks(storage: StorageConfig) -> list[CheckConfig]:
    if not storage.builtin_checks or storage.mountpoint is None:
        return []
    names = ["filesystem"]
    if storage.nfs_state_dir is not None:
        names += ["nfsd", "exports"]
    # Fall 2: one slow probe under load is not a failover. Rise 1: the chain is back.
    return [CheckConfig(n, (n,), interval=2.0, timeout=10.0, rise=1, fall=2) for n in names]


@dataclass
class Health:
    """One instance's checks: their states, and the penalty and faults they add up to."""

    instance: str
    storage: StorageConfig
    states: dict[str, CheckState] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for c in builtin_checks(self.storage):
            self.states[c.name] = CheckState(c, builtin=True)
        for c in self.storage.checks:
            self.states[c.name] = CheckState(c)

    @property
    def penalty(self) -> int:
        return sum(s.cfg.weight for s in self.states.values() if s.failing)

    def faults(self) -> set[str]:
        return {f"check:{n}" for n, s in self.states.items() if s.failing and s.cfg.weight == 0}

    def status(self) -> list[dict[str, object]]:
        return [
            {
                "name": n,
                "builtin": s.builtin,
                "failing": s.failing,
                "weight": s.cfg.weight,
                "last_ok": s.last_ok,
                "detail": s.last_detail,
                "runs": s.runs,
            }
            for n, s in self.states.items()
        ]


# ---- running them ------------------------------------------------------------------------


async def run_checks(
    health: Health,
    chain_up: Callable[[], bool],
    put: Callable[[object], None],
    run: proc.Run = proc.run,
) -> None:
    """Run every check of `health` for ever (the daemon cancels it), each on its own
    schedule; results go to `put` (the inbox)."""
    async with asyncio.TaskGroup() as tg:
        for name, state in health.states.items():
            probe = storage_checks.probe(
                health.storage, state.cfg, run, tickle.listening, builtin=state.builtin
            )
            tg.create_task(
                _loop(health.instance, name, state, probe, chain_up, put), name=f"check-{name}"
            )


async def _loop(  # noqa: PLR0917 (one check's whole context)
    instance: str,
    name: str,
    state: CheckState,
    probe: storage_checks.Probe,
    chain_up: Callable[[], bool],
    put: Callable[[object], None],
) -> None:
    while True:
        await asyncio.sleep(state.cfg.interval)
        if state.builtin and not chain_up():
            continue
        try:
            async with asyncio.timeout(state.cfg.timeout):
                ok, detail = await probe()
        except TimeoutError:
            ok, detail = False, f"no answer in {state.cfg.timeout:g} s"
        except Exception as e:  # a check that cannot run fails; the daemon goes on
            ok, detail = False, f"{type(e).__name__}: {e}"
        put(CheckResult(instance, name, ok, detail))
