"""The chain runner: one asyncio task per chain that brings the steps to the machine's wish.

It never touches the machine. The daemon tells it what is wanted (`want()`, synchronous, so
an effect never waits for storage), and it reports every step and every resting point back
through the inbox as StepReport and ChainSettled events. A slow step therefore delays
nothing but the chain: the loop goes on sending adverts (the 20 s mount case).

Before anything else the task finds what a previous run left up (reconcile, then prepare)
and reports it as ChainReconciled; the daemon starts the machine on that report. A reload
that adds an instance therefore awaits no storage work either. A wish made meanwhile (a
stop) applies to what was found.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from drbdha.chain.plan import Action, Next, Plan, Settled, StepState
from drbdha.chain.step import Step, StepFailed
from drbdha.clock import Clock


@dataclass(frozen=True, slots=True)
class StepReport:
    instance: str
    step: str
    action: Action
    ok: bool
    took: float
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ChainReconciled:
    """What a previous run left up (`held`: step names) and the steps whose preparation
    failed, as (step, error). `serial` names the runner: a report from one that was since
    replaced (the instance restarted by a reload) is stale."""

    instance: str
    serial: int
    held: tuple[str, ...]
    prepare_failed: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class ChainSettled:
    instance: str
    generation: int
    settled: Settled


_serials = itertools.count(1)


class Runner:
    def __init__(
        self,
        instance: str,
        steps: Sequence[Step],
        report: Callable[[object], None],
        clock: Clock,
    ) -> None:
        self.instance = instance
        self.steps = tuple(steps)
        self.plan = Plan(tuple(s.name for s in self.steps))
        self.last: dict[str, StepReport] = {}
        self._abandoned: frozenset[str] = frozenset()  # abandon()
        self._report = report
        self._clock = clock
        self._wake = asyncio.Event()
        self._reported_generation = -1
        self._idle = asyncio.Event()
        self.serial = next(_serials)
        self.found: ChainReconciled | None = None
        self._found = asyncio.Event()

    async def reconcile(self) -> tuple[str, ...]:
        """Find what a previous run left up (after kill -9 or a crash); returns those steps.
        A wish made meanwhile is kept."""
        held = []
        for s in self.steps:
            try:
                held.append(await asyncio.wait_for(s.held(), s.stop_timeout))
            except Exception:  # a timeout, a failure, a bug: all unknown
                held.append(True)  # unknown counts as held: the safe reading for a stop
        wanted = self.plan.wanted
        self.plan = Plan(self.plan.names, tuple(held))
        if wanted is not None:
            self.plan.want(wanted)
        return self.plan.held

    async def prepare(self) -> list[tuple[str, str]]:
        """What steps can do before any takeover, done at start instead of on a takeover's
        clock (nfsd: its unit's drop-ins and the daemon-reload they need). Each bounded by
        the step's start timeout; returns (step, error) for those that failed, which only
        means the takeover does that work itself."""
        failed = []
        for s in self.steps:
            prepare = getattr(s, "prepare", None)
            if prepare is None:
                continue
            try:
                await asyncio.wait_for(prepare(), s.start_timeout)
            except TimeoutError:
                failed.append((s.name, f"timed out after {s.start_timeout:g} s"))
            except StepFailed as e:
                failed.append((s.name, str(e)))
            except Exception as e:  # a bug in a step: the takeover does it
                failed.append((s.name, f"error: {e!r}"))
        return failed

    async def wait_found(self) -> ChainReconciled:
        """What the task found (start-up waits for every runner: nothing advertises yet)."""
        await self._found.wait()
        assert self.found is not None
        return self.found

    async def _find(self) -> None:
        held = await self.reconcile()
        failed = [] if self.plan.wanted is False else await self.prepare()  # not if stopping
        self.found = ChainReconciled(self.instance, self.serial, held, tuple(failed))
        self._found.set()
        self._report(self.found)

    def abandon(self, names: frozenset[str]) -> None:
        """The storage under these steps is being given up on purpose (a stale copy whose
        disk was detached: daemon/stale.py): a failed stop of one of them is reported as
        failed but does not stop the release. The steps below them (the unmount, the
        demote) must still succeed, so a stop that matters is never swallowed."""
        self._abandoned = names

    def want(self, up: bool) -> None:
        if self.plan.want(up):
            self._idle.clear()
            self._wake.set()

    def adopt(self, name: str) -> bool:
        """Plan.adopt for the step `name`, and the runner woken to act on it."""
        if not self.plan.adopt(self.plan.names.index(name)):
            return False
        self._idle.clear()
        self._wake.set()
        return True

    @property
    def generation(self) -> int:
        return self.plan.generation

    def is_up(self) -> bool:
        """Every step is up (the chain serves)."""
        return all(s is StepState.UP for s in self.plan.states)

    def step_up(self, name: str) -> bool:
        """The step named `name` (its class's `name`) is in this chain and up."""
        plan = self.plan
        return name in plan.names and plan.states[plan.names.index(name)] is StepState.UP

    @property
    def stop_budget(self) -> float:
        """Seconds the whole chain may take to stop (its steps one after another)."""
        return sum(s.stop_timeout for s in self.steps)

    async def run(self) -> None:
        if self.found is None:  # once per runner: a restarted task goes on from there
            await self._find()
        while True:
            nxt = self.plan.next()
            if nxt is None:
                self._settle()
                await self._wake.wait()
                self._wake.clear()
                continue
            await self._do(nxt)

    async def wait_idle(self) -> None:
        """Wait until the chain rests (shutdown: the caller bounds it with asyncio.timeout)."""
        await self._idle.wait()

    def _settle(self) -> None:
        settled = self.plan.settled()
        if settled is None:
            if self.plan.wanted is None:
                self._idle.set()
            return
        self._idle.set()
        if self._reported_generation == self.plan.generation:
            return  # one report per wish: a resting chain only wakes for a new one
        self._reported_generation = self.plan.generation
        self._report(ChainSettled(self.instance, self.plan.generation, settled))

    async def _do(self, nxt: Next) -> None:
        step = self.steps[nxt.index]
        self.plan.begin(nxt)
        start = nxt.action is Action.START
        budget = step.start_timeout if start else step.stop_timeout
        t0 = self._clock.monotonic()
        error: str | None = None
        backoff = False
        try:
            async with asyncio.timeout(budget):
                await (step.start() if start else step.stop())
        except StepFailed as e:
            error, backoff = str(e), e.backoff
        except TimeoutError:
            error = f"timeout: not done in {budget:g} s"
        except Exception as e:  # a bug in a step is a failed step, never a dead runner
            error = f"error: {e!r}"
        took = self._clock.monotonic() - t0
        given_up = not start and step.name in self._abandoned
        self.plan.done(error is None or given_up, error, backoff)
        report = StepReport(self.instance, step.name, nxt.action, error is None, took, error)
        self.last[step.name] = report
        self._report(report)
