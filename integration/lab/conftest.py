"""The VM lab as a pytest fixture: booted once per session, removed at the end.

Tests take `lab` (a cluster.Lab that is up: three VMs, drbdha installed from the working tree, DRBD
r0 Connected and UpToDate/UpToDate). A test that changes shared state puts it back (or calls
lab.heal() / lab.drbd_reset()). At the end of the session the lab is taken down, twice, and the
host is checked for anything left behind. DRBDHA_LAB_KEEP=1 keeps the lab up after the session
(a later session reuses it at once: `up` on a running lab only reinstalls drbdha).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import image
from cluster import NETNS, Lab


def lab_skip_reason() -> str | None:
    if not shutil.which("qemu-system-x86_64"):
        return (
            "qemu-system-x86_64 not installed "
            "(apt-get install qemu-system-x86 qemu-utils mmdebstrap)"
        )
    if os.geteuid() != 0:
        return "the VM lab needs root (network namespaces, tap devices)"
    return None


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    reason = lab_skip_reason()
    if reason:
        pytest.skip(reason)
    # One pytest session at a time per lab on a host (another one's teardown would take this
    # one's VMs down). The lock lives in the image cache, which is kept anyway.
    cache = image.cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / f".session-{NETNS}.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"lab: waiting for another test session using the lab {NETNS}", file=sys.stderr)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield from _session(Lab())


def _session(the_lab: Lab) -> Iterator[Lab]:
    keep = os.environ.get("DRBDHA_LAB_KEEP") == "1"
    try:
        the_lab.up()
    except BaseException:
        if not keep:
            the_lab.down()
        raise
    yield the_lab
    if keep:
        return
    the_lab.down()
    the_lab.down()
    left = the_lab.leftovers()
    assert not left, f"the lab left things behind on the host: {left}"
