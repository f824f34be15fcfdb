"""drbdha with a test double in its chain: SlowStep, a step that takes DRBDHA_SLOW_STEP
seconds to start (a stand-in for a 20 s mount; nothing else differs from `drbdha run`).
Used by test_chain_netns.py to show that a slow takeover never delays an advert."""

from __future__ import annotations

import asyncio
import os
import sys

from drbdha import chains, cli


class SlowStep:
    name = "slow"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start_timeout = seconds + 30
        self.stop_timeout = 5.0
        self.up = False

    async def start(self) -> None:
        await asyncio.sleep(self.seconds)
        self.up = True

    async def stop(self) -> None:
        self.up = False

    async def held(self) -> bool:
        return self.up


_build = chains.Chains.build


def build(self: chains.Chains, inst: object, addresses: object) -> None:
    _build(self, inst, addresses)  # type: ignore[arg-type]
    runner = inst.runner  # type: ignore[attr-defined]
    steps = (SlowStep(float(os.environ["DRBDHA_SLOW_STEP"])), *runner.steps)
    inst.runner = type(runner)(runner.instance, steps, self.put, self.clock)  # type: ignore[attr-defined]


chains.Chains.build = build  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(cli.main())
