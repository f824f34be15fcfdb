"""A small, generic network-namespace lab for integration tests (root only).

    with Lab() as lab:
        a, b = lab.add_ns("a"), lab.add_ns("b")
        lab.veth(a, "a0", b, "b0")
        lab.ip(a, "addr add 10.9.0.1/24 dev a0")
        with inside(a):
            sock = VrrpSocket("a0", AF_INET)   # the socket stays in `a` after the block

Namespace names are unique per process and test (dhn<pid>x<n>-<tag>); interface names need
no uniqueness because each lives in a fresh namespace. Deleting a namespace deletes its
interfaces, so cleanup is "delete every namespace we created", also on failure. DAD is off
in every namespace so link-local addresses are usable at once.

inside(ns) switches only the calling thread (setns(2) is per thread) and switches back on
exit. Sockets, netlink sockets and AF_PACKET sockets keep the namespace they were created in,
so one test process can drive several namespaces without subprocesses; /proc/sys/net and
if_nametoindex() follow the thread's current namespace.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import socket
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self

from polling import wait_until

from drbdha.net import OwnsSocket

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = Path("/run/netns")
ETH_P_ALL = 0x0003

_libc = ctypes.CDLL(None, use_errno=True)
_counter = itertools.count()


def is_root() -> bool:
    return os.geteuid() == 0


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextmanager
def inside(ns: str) -> Iterator[None]:
    """Run the block (this thread only) in network namespace `ns`."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(NETNS_RUN_DIR / ns, os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)


def run(*argv: str) -> str:
    """Run a command, raise with its stderr on failure, return stdout."""
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip()}")
    return proc.stdout


def sysctl(ns: str, key: str, value: str) -> None:
    with inside(ns):
        Path("/proc/sys", *key.split(".")).write_text(value + "\n")


class Lab:
    def __init__(self) -> None:
        self.namespaces: list[str] = []

    def __enter__(self) -> Self:
        sweep_stale()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def add_ns(self, tag: str) -> str:
        name = f"dhn{os.getpid()}x{next(_counter)}-{tag}"
        run("ip", "netns", "add", name)
        self.namespaces.append(name)
        for key in ("all", "default"):
            sysctl(name, f"net.ipv6.conf.{key}.accept_dad", "0")
        run("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def veth(self, ns1: str, if1: str, ns2: str, if2: str, *, up: bool = True) -> None:
        run("ip", "-n", ns1, "link", "add", if1, "type", "veth", "peer", "name", if2, "netns", ns2)
        if up:
            self.ip(ns1, f"link set {if1} up")
            self.ip(ns2, f"link set {if2} up")

    def bridge(self, ns: str, name: str, ports: list[str]) -> None:
        self.ip(ns, f"link add {name} type bridge")
        for port in ports:
            self.ip(ns, f"link set {port} master {name} up")
        self.ip(ns, f"link set {name} up")

    def ip(self, ns: str, args: str) -> str:
        return run("ip", "-n", ns, *args.split())

    def cleanup(self) -> None:
        while self.namespaces:
            subprocess.run(["ip", "netns", "del", self.namespaces.pop()], check=False)


def sweep_stale() -> None:
    """Delete namespaces left behind by test processes that no longer exist (e.g. killed)."""
    if not NETNS_RUN_DIR.is_dir():
        return
    for entry in NETNS_RUN_DIR.iterdir():
        pid, sep, _ = entry.name.removeprefix("dhn").partition("x")
        if entry.name.startswith("dhn") and sep and pid.isdigit() and not _alive(int(pid)):
            subprocess.run(["ip", "netns", "del", entry.name], check=False)


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def mac_of(ns: str, ifname: str) -> bytes:
    with inside(ns):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            sock.bind((ifname, 0))
            address: bytes = sock.getsockname()[4]
            return address
        finally:
            sock.close()


class Capture(OwnsSocket):
    """Every frame seen on `ifname` in `ns` (AF_PACKET, ETH_P_ALL), non-blocking; close() and
    `with` as drbdha's own socket adapters."""

    def __init__(self, ns: str, ifname: str) -> None:
        with inside(ns):
            self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            self._sock.bind((ifname, ETH_P_ALL))
        self._sock.setblocking(False)

    def frames(self) -> list[bytes]:
        out: list[bytes] = []
        while True:
            try:
                out.append(self._sock.recv(65535))
            except BlockingIOError:
                return out

    def wait(self, match: Callable[[bytes], bool], timeout: float = 3.0) -> bytes:
        seen: list[bytes] = []

        def found() -> bytes | None:
            seen.extend(self.frames())
            return next((f for f in seen if match(f)), None)

        frame = wait_until("a matching frame", found, timeout, every=0.02)
        assert frame is not None  # wait_until returns only a truthy value
        return frame
