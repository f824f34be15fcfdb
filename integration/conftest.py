"""Integration tests: root, network namespaces, real peers.

Every test here runs in namespaces it creates (integration/netlab.py) and needs root and
`ip netns`; without them the whole directory is skipped with the reason. Tests that run real
keepalived carry the `keepalived` mark and are skipped when it is not installed.

    sudo .venv/bin/pytest integration -q --ignore=integration/lab
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from netlab import KEEPALIVED, Lab

HERE = Path(__file__).parent


def _netns_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "integration tests need root (network namespaces, raw sockets)"
    if shutil.which("ip") is None:
        return "iproute2 `ip` not found"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, check=False)
    if probe.returncode != 0:
        return f"`ip netns` does not work here: {probe.stderr.decode().strip()}"
    return None


def _keepalived_missing() -> str | None:
    if shutil.which("keepalived") or Path(KEEPALIVED).exists():
        return None
    return "keepalived is not installed (apt-get install keepalived)"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    del config
    no_netns = _netns_unavailable()
    no_keepalived = _keepalived_missing()
    for item in items:
        if HERE not in Path(str(item.fspath)).parents:
            continue
        item.add_marker(pytest.mark.netns)
        if no_netns:
            item.add_marker(pytest.mark.skip(reason=no_netns))
        elif no_keepalived and item.get_closest_marker("keepalived"):
            item.add_marker(pytest.mark.skip(reason=no_keepalived))


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook, only there with -n
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """Two work units under `pytest -n 2` (integration/run-tests): the VM lab's tests on one
    worker, everything else on the other, each in collection order. The host's tests stay on
    one worker because namespace tests must not run two at once (they share the CPU budget
    of their 10 ms adverts); the lab is one cluster, booted once. (xdist's own `loadgroup`
    does not group on pytest 9.2: pytest-dev/pytest-xdist#1386.)"""
    from xdist.scheduler import LoadScopeScheduling  # noqa: PLC0415 (only with -n)

    class LabBesideHost(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "lab" if nodeid.startswith("integration/lab/") else "host"

    return LabBesideHost(config, log)


@pytest.fixture
def make_lab() -> Iterator[Callable[..., Lab]]:
    """Build labs with the given host names; all are torn down after the test."""
    labs: list[Lab] = []

    def make(*hosts: str) -> Lab:
        lab = Lab(hosts or ("a", "b", "client"))
        labs.append(lab)
        return lab.__enter__()

    try:
        yield make
    finally:
        for lab in reversed(labs):
            lab.cleanup()


@pytest.fixture
def lab(make_lab: Callable[..., Lab]) -> Lab:
    """Hosts a and b for the routers, client for the neighbour-cache check."""
    return make_lab("a", "b", "client")
