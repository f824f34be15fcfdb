"""Run a command for a step: asynchronous (the loop keeps turning), bounded, killed when the
caller is cancelled or times out, with a clean environment.

NOTIFY_SOCKET is removed from the child's environment (drbd-reactor does the same): a child
that speaks sd_notify would otherwise talk for us. The child gets its own process group so
a kill reaches whatever it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

KILL_GRACE = 2.0  # seconds between TERM and KILL for a cancelled command


@dataclass(frozen=True, slots=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def summary(self) -> str:
        """The command and the last line it wrote, for logs and errors."""
        out = (self.stderr.strip() or self.stdout.strip()).splitlines()
        tail = out[-1] if out else "no output"
        return f"{' '.join(self.argv)}: exit {self.returncode}: {tail}"


Run = Callable[[Sequence[str]], Awaitable["Result"]]
"""What steps take to run commands: `run` below, or a fake in unit tests."""


class Log(Protocol):
    """What steps log through: the daemon's structlog logger, bound to the instance."""

    def info(self, event: str, **fields: Any) -> Any: ...
    def warning(self, event: str, **fields: Any) -> Any: ...


class Quiet:
    """A Log that drops everything (steps built without one)."""

    def info(self, event: str, **fields: Any) -> None:
        del event, fields

    def warning(self, event: str, **fields: Any) -> None:
        del event, fields


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    env.setdefault("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    env["LC_ALL"] = "C"  # tools' messages are matched in English
    return env


async def run(argv: Sequence[str]) -> Result:
    """Run argv to its end. Callers bound it with asyncio.timeout(): on cancellation the
    child's process group gets TERM, then KILL, before the CancelledError goes on."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=child_env(),
        start_new_session=True,
    )
    try:
        out, err = await proc.communicate()
    except BaseException:
        await _kill(proc)
        raise
    return Result(
        tuple(argv),
        proc.returncode or 0,
        out.decode(errors="replace"),
        err.decode(errors="replace"),
    )


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            async with asyncio.timeout(KILL_GRACE):
                await proc.wait()
        except TimeoutError:
            continue
        return
