"""drbdha with test doubles in its chain (nothing else differs from `drbdha run`), each
switched on by an environment variable; test_chain_netns.py uses them.

- DRBDHA_SLOW_STEP=S: SlowStep takes S seconds to start (a stand-in for a 20 s mount): a
  slow takeover never delays an advert.
- DRBDHA_SLOW_HELD=S: SlowStep takes S seconds to answer held() (a slow reconcile: drbdadm,
  findmnt): a reload that adds the instance never delays another instance's adverts.
- DRBDHA_SLOW_STOP=S: SlowStep takes S seconds to stop (a slow unmount or demote): the
  loop goes on serving while a stop releases the chain.
- DRBDHA_SLOW_ONLY=name,...: SlowStep only in these instances (default: all).
- DRBDHA_FAILING_WATCHER=S: a DRBD watcher double for resource "fake" whose run() raises S
  seconds after each start (a bug in a background task).
- DRBDHA_FAIL_LOOP_AFTER=S: the main loop raises S seconds after it began (a fatal error).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from drbdha import cli, daemon
from drbdha.daemon import storage as chains
from drbdha.resources import drbd_crosscheck


class SlowStep:
    name = "slow"

    def __init__(self, start_s: float, held_s: float, stop_s: float = 0.0) -> None:
        self.start_s = start_s
        self.held_s = held_s
        self.stop_s = stop_s
        self.start_timeout = start_s + 30
        self.stop_timeout = held_s + stop_s + 5
        self.up = False

    async def start(self) -> None:
        await asyncio.sleep(self.start_s)
        self.up = True

    async def stop(self) -> None:
        await asyncio.sleep(self.stop_s)
        self.up = False

    async def held(self) -> bool:
        await asyncio.sleep(self.held_s)
        return self.up


class FailingWatcher:
    """Stands in for a DrbdWatcher (synced, no facts) whose run() has a bug."""

    def __init__(self, after: float) -> None:
        self.after = after
        self.runs = 0
        self.synced = asyncio.Event()
        self.synced.set()

    def facts(self) -> None:
        return None

    async def run(self) -> None:
        self.runs += 1
        await asyncio.sleep(self.after)
        msg = f"test double: watcher run {self.runs} raised"
        raise RuntimeError(msg)


def _env(name: str) -> float | None:
    value = os.environ.get(name)
    return float(value) if value else None


_build = chains.Chains.build


def build(self: chains.Chains, inst: object, *args: object, **kw: object) -> None:
    _build(self, inst, *args, **kw)  # type: ignore[arg-type]
    fail_after = _env("DRBDHA_FAILING_WATCHER")
    if fail_after is not None and "fake" not in self.watchers:
        self.watchers["fake"] = FailingWatcher(fail_after)  # type: ignore[assignment]
        drbd_crosscheck.CHECK_INTERVAL = 3600.0  # no drbdsetup to compare the double with
    only = os.environ.get("DRBDHA_SLOW_ONLY")
    start_s, held_s = _env("DRBDHA_SLOW_STEP"), _env("DRBDHA_SLOW_HELD")
    stop_s = _env("DRBDHA_SLOW_STOP")
    slow = (start_s, held_s, stop_s) != (None, None, None)
    if not slow or (only and inst.name not in only.split(",")):  # type: ignore[attr-defined]
        return
    runner = inst.runner  # type: ignore[attr-defined]
    steps = (SlowStep(start_s or 0.0, held_s or 0.0, stop_s or 0.0), *runner.steps)
    inst.runner = type(runner)(runner.instance, steps, self.put, self.clock)  # type: ignore[attr-defined]


chains.Chains.build = build  # type: ignore[method-assign]

_turn = daemon.Daemon._turn
_began: list[float] = []


async def turn(self: daemon.Daemon) -> None:
    fail_after = _env("DRBDHA_FAIL_LOOP_AFTER")
    if fail_after is not None:
        _began[:] = _began or [time.monotonic()]
        if time.monotonic() - _began[0] >= fail_after:
            msg = "test double: the main loop raised"
            raise RuntimeError(msg)
    await _turn(self)


daemon.Daemon._turn = turn  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(cli.main())
