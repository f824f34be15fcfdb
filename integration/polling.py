"""The one polling helper of the namespace tests, the VM lab, the demo and the benchmarks.

    wait_until("the VIP on a", lambda: VIP4 in addresses(a.host.ns), 5, every=0.02)

Like drbd-reactor's run_and_expect(). Stdlib only: the VM lab imports it too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    what: str | Callable[[], str],
    predicate: Callable[[], T],
    timeout: float = 30.0,
    every: float = 0.2,
) -> T:
    """Call `predicate` every `every` seconds until it returns something truthy, and return
    that; after `timeout` seconds an AssertionError naming `what` (a callable is asked only
    then, e.g. for a log tail) and the last value. The pace is the caller's: 0.02 s where a
    look is a syscall (namespaces), 0.2 s or more where it is a command in an emulated VM."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            text = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout:g} s waiting for {text}: {value!r}")
        time.sleep(every)
