"""The lab itself: a hub namespace with bridge `br0` and one namespace per host on it
(see the package's docstring for the addresses), torn down strictly."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Self

from netns import run as _run_checked
from polling import wait_until

from .commands import Process, addresses, spawn

SUBNET4 = "10.250.0"
SUBNET6 = "fd00:250::"
VIP4 = "10.250.0.100"
VIP6 = "fd00:250::100"


@dataclass(frozen=True)
class Host:
    name: str
    ns: str
    index: int
    port: str  # the bridge port in the hub namespace
    ifname: str = "eth0"

    @property
    def mac(self) -> str:
        return f"02:50:00:00:00:{10 + self.index:02x}"

    @property
    def ip4(self) -> IPv4Address:
        return IPv4Address(f"{SUBNET4}.{10 + self.index}")

    @property
    def ip6(self) -> IPv6Address:
        return IPv6Address(f"{SUBNET6}{10 + self.index:x}")

    @property
    def ll6(self) -> IPv6Address:
        # EUI-64 from the MAC: flip the U/L bit of 02 -> 00, insert ff:fe.
        return IPv6Address(f"fe80::50:ff:fe00:{10 + self.index:x}")


class Lab:
    def __init__(self, hosts: Sequence[str] = ("a", "b", "client")) -> None:
        import netns  # noqa: PLC0415 (a sibling module; imported here to keep the API small)

        self._ns = netns.Lab()
        self.names = list(hosts)
        self.hosts: dict[str, Host] = {}
        self.hub = ""
        self.tmp = Path(tempfile.mkdtemp(prefix=f"drbdha-it{os.getpid()}-"))
        self.processes: list[Process] = []
        self._closers: list[Callable[[], None]] = []

    def __enter__(self) -> Self:
        try:
            self._build()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def _build(self) -> None:
        self.hub = self._ns.add_ns("hub")
        _run_checked(
            "ip",
            "-n",
            self.hub,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
            "stp_state",
            "0",
        )
        _run_checked("ip", "-n", self.hub, "link", "set", "br0", "up")
        for i, name in enumerate(self.names):
            ns = self._ns.add_ns(name)
            host = Host(name, ns, i, f"p{i}")
            self._ns.veth(ns, "eth0", self.hub, host.port, up=False)
            ip = self._ns.ip
            ip(ns, f"link set eth0 address {host.mac}")
            ip(self.hub, f"link set {host.port} master br0 up")
            ip(ns, f"addr add {host.ip4}/24 dev eth0")
            ip(ns, f"addr add {host.ip6}/64 dev eth0 nodad")
            ip(ns, "link set eth0 up")
            self.hosts[name] = host
        for host in self.hosts.values():
            wait_until("link-local", partial(_has_address, host, str(host.ll6)), 5, every=0.02)

    def host(self, name: str) -> Host:
        return self.hosts[name]

    def spawn(
        self, host: Host, argv: Sequence[str], log_name: str, env: dict[str, str] | None = None
    ) -> Process:
        proc = spawn(host.ns, argv, self.tmp / log_name, env)
        self.processes.append(proc)
        return proc

    def on_cleanup(self, fn: Callable[[], None]) -> None:
        self._closers.append(fn)

    def partition(self, host: Host) -> None:
        """Cut `host` off the bridge while its own link stays up (carrier present): the
        bridge port is set to STP state disabled, which drops every frame both ways."""
        _run_checked(
            "ip", "netns", "exec", self.hub, "bridge", "link", "set", "dev", host.port, "state", "0"
        )

    def heal(self, host: Host) -> None:
        _run_checked(
            "ip", "netns", "exec", self.hub, "bridge", "link", "set", "dev", host.port, "state", "3"
        )

    def cleanup(self) -> None:
        for fn in reversed(self._closers):
            with contextlib.suppress(Exception):
                fn()
        self._closers.clear()
        # Nothing is checked after the test, so no graceful stop: SIGKILL everything at once
        # (a TERM-then-wait per process costs a second per keepalived).
        for proc in self.processes:
            with contextlib.suppress(Exception):
                proc.signal(signal.SIGKILL)
        for proc in self.processes:
            with contextlib.suppress(Exception):
                proc.close(grace=2.0)
        self.processes.clear()
        for ns in list(self._ns.namespaces):
            _kill_all_in(ns)
        self._ns.cleanup()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _has_address(host: Host, address: str) -> bool:
    return address in addresses(host.ns, host.ifname)


def _kill_all_in(ns: str) -> None:
    """SIGKILL whatever still runs in a lab namespace (e.g. a keepalived child whose parent
    was SIGKILLed); only processes we started can live in namespaces we created."""
    out = subprocess.run(
        ["ip", "netns", "pids", ns], capture_output=True, text=True, check=False
    ).stdout
    for pid in out.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
