"""The VM lab as a pytest fixture: booted once per session, removed at the end.

Tests take `lab` (a cluster.Lab that is up: three VMs, drbdha installed from the working tree, DRBD
r0 Connected and UpToDate/UpToDate). A test that changes shared state puts it back (or calls
lab.heal() / lab.drbd_reset()). At the end of the session the lab is taken down, twice, and the
host is checked for anything left behind. DRBDHA_LAB_KEEP=1 keeps the lab up after the session
(a later session reuses it at once: `up` on a running lab only reinstalls drbdha).

When the run selects lab tests beside others, the lab tests go last and the lab boots in the
background (`lab up` at nice 19, so the VMs' emulation yields the CPU to the namespace tests'
daemons) while the unit and namespace tests run: on a fresh machine the image build and the
boot take minutes that would otherwise be spent waiting. DRBDHA_LAB_EARLY=0 turns that off.
integration/run-tests goes further: with pytest-xdist it runs the lab's tests on a worker of their
own beside the host's tests (the lab at nice 19 the same way), so the lab's twenty minutes no
longer wait for the host's six.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # drbdha_toml, polling

import image
from cluster import NETNS, Lab

HERE = Path(__file__).resolve().parent

EARLY_LOG = Path(f"/var/tmp/{NETNS}-early-up.log")  # noqa: S108 (root-only, beside the work dir)


def lab_skip_reason() -> str | None:
    if not shutil.which("qemu-system-x86_64"):
        return (
            "qemu-system-x86_64 not installed "
            "(apt-get install qemu-system-x86 qemu-utils mmdebstrap)"
        )
    if os.geteuid() != 0:
        return "the VM lab needs root (network namespaces, tap devices)"
    return None


class _Session:
    """The session's hold on the lab: the host-wide lock, and the background boot if any."""

    def __init__(self) -> None:
        self.lock: IO[str] | None = None
        self.early: subprocess.Popen[bytes] | None = None
        self.early_at = 0.0

    def acquire(self, wait: bool) -> bool:
        # One pytest session at a time per lab on a host (another one's teardown would take
        # this one's VMs down). The lock lives in the image cache, which is kept anyway.
        if self.lock is not None:
            return True
        cache = image.cache_dir()
        cache.mkdir(parents=True, exist_ok=True)
        lock = (cache / f".session-{NETNS}.lock").open("w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                lock.close()
                return False
            print(f"lab: waiting for another test session using the lab {NETNS}", file=sys.stderr)
            fcntl.flock(lock, fcntl.LOCK_EX)
        self.lock = lock
        return True

    def boot_early(self) -> None:
        with EARLY_LOG.open("wb") as log:
            self.early = subprocess.Popen(
                ["nice", "-n", "19", sys.executable, str(HERE / "lab"), "up"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.early_at = time.monotonic()

    def join_early(self) -> None:
        if self.early is None:
            return
        rc = self.early.wait()
        took = time.monotonic() - self.early_at
        self.early = None
        print(f"\nlab: the background `lab up` ended with {rc} ({took:.0f} s)")
        if rc != 0:
            # Start again from nothing rather than from a half-made lab (a node booted but
            # never checkpointed would cold-boot at every power-on).
            sys.stderr.write(EARLY_LOG.read_text(errors="replace")[-4000:])
            Lab().down()
        EARLY_LOG.unlink(missing_ok=True)


_SESSION = _Session()
DRBD9_ONLY = "runs on a DRBD 9 lab: DRBDHA_LAB_DRBD=9 (docs/lab.md, DRBD 9)"


def _is_lab_item(item: pytest.Item) -> bool:
    return HERE in Path(str(item.fspath)).parents


def _xdist_worker() -> bool:
    return bool(os.environ.get("PYTEST_XDIST_WORKER"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    del config
    # The lab's tests last (a stable sort keeps their order), so the background boot has the
    # unit and namespace tests' time to finish in.
    items.sort(key=_is_lab_item)
    # One DRBD per lab (its image): the drbd9 tests (three nodes, quorum) on a DRBD 9 lab,
    # the others on 8.4's two nodes.
    nine = Lab().drbd != "8.4"
    for item in filter(_is_lab_item, items):
        if nine and not item.get_closest_marker("drbd9"):
            item.add_marker(pytest.mark.skip(reason="an 8.4 lab test; this lab runs DRBD 9"))
        elif not nine and item.get_closest_marker("drbd9"):
            item.add_marker(pytest.mark.skip(reason=DRBD9_ONLY))


def pytest_collection_finish(session: pytest.Session) -> None:
    # (The namespace tests' own fixture is named `lab` too: look where the test lives.)
    wanted = any(_is_lab_item(i) and "lab" in getattr(i, "fixturenames", ()) for i in session.items)
    others = not all(_is_lab_item(i) for i in session.items)
    if not (wanted and others) or lab_skip_reason() or os.environ.get("DRBDHA_LAB_EARLY") == "0":
        return
    if _xdist_worker():
        return  # the lab's worker boots it at once (see `lab` below)
    if _SESSION.acquire(wait=False):
        _SESSION.boot_early()


def pytest_sessionfinish(session: pytest.Session) -> None:
    del session
    # A session that ended before any lab test (a failure with -x, ^C) still waits for the
    # boot it started, and removes the lab unless asked to keep it.
    if _SESSION.early is not None:
        _SESSION.join_early()
        if os.environ.get("DRBDHA_LAB_KEEP") != "1":
            Lab().down()


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    reason = lab_skip_reason()
    if reason:
        pytest.skip(reason)
    _SESSION.acquire(wait=True)
    _SESSION.join_early()
    if _xdist_worker():
        # Beside the host's tests the VMs' emulation runs at nice 19, as the background boot
        # does, so the namespace tests' daemons keep the CPU they need for 10 ms adverts;
        # once those are done nothing competes and the nice level costs nothing.
        os.nice(19 - os.nice(0))
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
