"""What the chain does next: a pure function of the wish and the progress so far.

Rules (tested without an event loop in tests/test_chain_plan.py):
- Start in order, stop in reverse; the latest wish wins, between steps (a step in flight is
  never abandoned half done: every step is idempotent, so the reverse pass cleans it up).
- A failed start rolls back: every step not down is stopped in reverse, the failed one
  included (its start may have done part of its work), and the chain does not try again
  until a new wish arrives. The machine resigns meanwhile.
- A failed stop is never swallowed: the step stays `failed`, the chain is stuck and does
  nothing more by itself; the daemon applies the configured escalation.
- No wish yet (`wanted is None`, right after a restart) means leave everything as found.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class StepState(enum.StrEnum):
    DOWN = "down"
    STARTING = "starting"
    UP = "up"
    STOPPING = "stopping"
    FAILED = "failed"


class Action(enum.StrEnum):
    START = "start"
    STOP = "stop"


@dataclass(frozen=True, slots=True)
class Next:
    index: int
    action: Action


@dataclass(frozen=True, slots=True)
class Settled:
    """The chain reached a resting point: `up` when every step is up."""

    up: bool
    ok: bool
    failed_step: str | None = None
    failed_action: Action | None = None
    error: str | None = None
    backoff: bool = False  # the failure asks for a pause before the next takeover


class Plan:
    def __init__(self, names: tuple[str, ...], held: tuple[bool, ...] | None = None) -> None:
        self.names = names
        held = held or (False,) * len(names)
        self.states = [StepState.UP if h else StepState.DOWN for h in held]
        self.wanted: bool | None = None
        self.generation = 0
        self.rolling_back = False
        self.stuck = False
        self.failure: Settled | None = None
        self._in_flight: Next | None = None

    def want(self, up: bool) -> bool:
        """Record the machine's wish; True if it changed (a new generation)."""
        if up == self.wanted:
            return False
        self.wanted = up
        self.generation += 1
        if not self.stuck:
            self.rolling_back = False
            self.failure = None
        return True

    def adopt(self, index: int) -> bool:
        """A step found up that the chain did not start (DRBD promoted by the peer probe):
        held from now on, in a new generation, so a chain that is to be down stops it and
        reports how that went. False if the step is not down or a step is in flight."""
        if self._in_flight is not None or self.states[index] is not StepState.DOWN:
            return False
        self.states[index] = StepState.UP
        self.generation += 1
        return True

    @property
    def target(self) -> bool | None:
        return False if self.rolling_back else self.wanted

    def next(self) -> Next | None:
        if self.stuck or self._in_flight is not None or self.target is None:
            return None
        if self.target:
            for i, s in enumerate(self.states):
                if s is not StepState.UP:
                    return Next(i, Action.START)
            return None
        for i in reversed(range(len(self.states))):
            if self.states[i] is not StepState.DOWN:
                return Next(i, Action.STOP)
        return None

    def begin(self, nxt: Next) -> None:
        self._in_flight = nxt
        busy = StepState.STARTING if nxt.action is Action.START else StepState.STOPPING
        self.states[nxt.index] = busy

    def done(self, ok: bool, error: str | None = None, backoff: bool = False) -> None:
        nxt, self._in_flight = self._in_flight, None
        if nxt is None:
            msg = "bug: Plan.done() without a step in flight"
            raise RuntimeError(msg)
        name = self.names[nxt.index]
        if ok:
            self.states[nxt.index] = StepState.UP if nxt.action is Action.START else StepState.DOWN
            return
        self.states[nxt.index] = StepState.FAILED
        self.failure = Settled(False, False, name, nxt.action, error, backoff)
        if nxt.action is Action.START:
            self.rolling_back = True
        else:
            self.stuck = True

    def settled(self) -> Settled | None:
        """The resting point reached, or None while there is work left (or no wish)."""
        if self._in_flight is not None or self.target is None:
            return None
        if self.stuck:
            return self.failure
        if self.next() is not None:
            return None
        if self.rolling_back:
            return self.failure
        return Settled(up=bool(self.target), ok=True)

    @property
    def held(self) -> tuple[str, ...]:
        """Steps that are (or may be) holding something: anything not down."""
        pairs = zip(self.names, self.states, strict=True)
        return tuple(n for n, s in pairs if s is not StepState.DOWN)
