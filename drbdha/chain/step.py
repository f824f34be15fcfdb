"""The step protocol. Every step is idempotent (start on a started step and stop on a stopped
one do nothing and succeed), and says whether it is held now, so a restarted daemon can find
what a previous run left up. Timeouts are the runner's business; a step only has to be
cancellable (subprocesses are killed on cancellation, see resources/proc.py)."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


class StepFailed(Exception):
    """A start or stop that did not succeed. `reason` is a short label (metrics, status);
    `backoff` asks the machine to wait before trying to take over again (DRBD said no good
    data, or the peer is not fenced: retrying at once would only hammer it)."""

    def __init__(self, reason: str, detail: str = "", *, backoff: bool = False) -> None:
        self.reason = reason
        self.detail = detail
        self.backoff = backoff
        super().__init__(f"{reason}: {detail}" if detail else reason)


class Step(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def start_timeout(self) -> float: ...
    @property
    def stop_timeout(self) -> float: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def held(self) -> bool: ...


@runtime_checkable
class Described(Protocol):
    """A step that adds to `drbdha status`: {section: fields}, from what it was given and
    whether the chain has it up (never by running a command: status must be instant).
    Sections two steps share (nfsd: the state directory's step and nfsd's) are merged."""

    def describe(self, up: bool) -> dict[str, dict[str, Any]]: ...
