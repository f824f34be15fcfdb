"""Commands and processes in one namespace of the lab: run and wait, spawn and signal,
and what `ip` says about addresses, neighbours and links."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PING = shutil.which("ping") or "/bin/ping"


def run(
    ns: str, argv: Sequence[str], *, check: bool = True, timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    """Run `argv` inside namespace `ns` and wait for it."""
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, *argv],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"[{ns}] {' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}"
        )
    return proc


class Process:
    """A process started in a namespace. `ip netns exec` execs the command, so `pid` is the
    program itself and signals reach it directly."""

    def __init__(
        self, ns: str, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None
    ) -> None:
        self.ns, self.argv, self.log_path = ns, list(argv), log_path
        self._log = log_path.open("ab")
        self.popen = subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        self.pid = self.popen.pid

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.running:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait(5)

    def terminate(self) -> None:
        self.signal(signal.SIGTERM)

    def stop(self) -> None:
        self.signal(signal.SIGSTOP)

    def cont(self) -> None:
        self.signal(signal.SIGCONT)

    def wait(self, timeout: float) -> int | None:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self, grace: float = 3.0) -> None:
        """TERM, then KILL after `grace` seconds (resource-agents' escalation)."""
        if self.running:
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            if self.wait(grace) is None:
                self.signal(signal.SIGKILL)
                self.wait(5)
        self._log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def spawn(
    ns: str, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None
) -> Process:
    return Process(ns, argv, log_path, env)


def addresses(ns: str, ifname: str = "eth0") -> list[str]:
    """Addresses on `ifname` (without prefix length); none if the interface is gone."""
    proc = run(ns, ["ip", "-j", "addr", "show", "dev", ifname], check=False)
    if proc.returncode != 0 and "does not exist" in proc.stderr:
        return []
    if proc.returncode != 0:
        raise RuntimeError(f"[{ns}] ip addr show dev {ifname}: {proc.stderr.strip()}")
    out = proc.stdout
    return [a["local"] for link in json.loads(out or "[]") for a in link.get("addr_info", [])]


def neigh(ns: str) -> dict[str, dict[str, Any]]:
    """The neighbour cache of `ns`: address -> `ip -j neigh` entry (lladdr, state, ...)."""
    out = run(ns, ["ip", "-j", "neigh", "show"]).stdout
    return {e["dst"]: e for e in json.loads(out or "[]")}


def mac(ns: str, ifname: str = "eth0") -> str:
    out = run(ns, ["ip", "-j", "link", "show", "dev", ifname]).stdout
    address: str = json.loads(out)[0]["address"]
    return address


def link_down(ns: str, ifname: str = "eth0") -> None:
    run(ns, ["ip", "link", "set", ifname, "down"])


def link_up(ns: str, ifname: str = "eth0") -> None:
    run(ns, ["ip", "link", "set", ifname, "up"])


def ping(ns: str, address: str, timeout: int = 1) -> bool:
    return run(ns, [PING, "-n", "-c1", f"-W{timeout}", address], check=False).returncode == 0
