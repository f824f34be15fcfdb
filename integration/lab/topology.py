"""The lab's layout and its small host-side helpers: names, addresses and paths (one lab
per DRBDHA_LAB_NAME on a host), the VMs and networks, the errors, `ip -n NETNS` and
/proc readers. Stdlib only."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

# One lab per name on a host: its network namespace, its run and work directories.
NETNS = os.environ.get("DRBDHA_LAB_NAME", "drbdha-lab")
DEFAULT_RUN = f"/run/{NETNS}"
DEFAULT_WORK = f"/var/tmp/{NETNS}"  # noqa: S108 (a fixed, root-only lab directory)
DISK_NAME = "lab-vdb"
DISK_DEV = f"/dev/mapper/{DISK_NAME}"
DISK_SIZE = 96 * 1024 * 1024  # small: a full resync after a crashed Primary copies all of it
TRACE = os.environ.get("DRBDHA_LAB_TRACE") == "1"
BOOTED = "booted"  # the checkpoint `up` saves of each node it boots
ROOT_NODE = "root"  # qemu block node name of each VM's root overlay (checkpoints live there)
RESOURCE = "r0"
DRBD_PORT = 7789
VIP = "10.77.1.100"


@dataclasses.dataclass(frozen=True)
class Net:
    name: str  # "svc" / "repl" (the long names "service" / "replication" are accepted too)
    bridge: str
    host_addr: str  # the host's address on the bridge, inside the namespace
    prefix: int


NETS = {
    "svc": Net("svc", "lab-svc", "10.77.1.1", 24),
    "repl": Net("repl", "lab-repl", "10.77.2.1", 24),
}


NET_ALIASES = {"service": "svc", "svc": "svc", "replication": "repl", "repl": "repl"}


@dataclasses.dataclass(frozen=True)
class VM:
    name: str
    index: int
    addrs: dict  # net name -> address
    disk: bool  # has a DRBD backing disk

    def tap(self, net: str) -> str:
        return f"{self.name}-{net}"

    def mac(self, net: str) -> str:
        return f"52:54:00:77:{list(NETS).index(net) + 1:02x}:{self.index:02x}"


VMS = {
    "node1": VM("node1", 11, {"svc": "10.77.1.11", "repl": "10.77.2.11"}, True),
    "node2": VM("node2", 12, {"svc": "10.77.1.12", "repl": "10.77.2.12"}, True),
    "client": VM("client", 21, {"svc": "10.77.1.21"}, False),
}


NODES = ("node1", "node2")


def vrrp_instance(
    name: str, vrid: int, priority: int, advert: float, *, vip: str = VIP, **more: Any
) -> dict[str, Any]:
    """A [[vrrp_instance]] table (integration/drbdha_toml.py) for the lab's nodes: VRRPv3 on
    eth0, the service network, with `vip`/24; `more`: further keys, in order."""
    return {
        "name": name,
        "interface": "eth0",
        "vrid": vrid,
        "priority": priority,
        "version": 3,
        "advert_interval": advert,
        "virtual_ipaddress": [f"{vip}/24"],
        **more,
    }


class LabError(RuntimeError):
    pass


class CommandFailed(subprocess.CalledProcessError):
    """A command in a VM exited non-zero; str() shows where, and its output."""

    def __init__(self, node: str, returncode: int, cmd: str, output: str, stderr: str) -> None:
        super().__init__(returncode, cmd, output, stderr)
        self.node = node

    def __str__(self) -> str:
        def tail(s: str | None) -> str:
            s = (s or "").strip()
            return s[-2000:] if s else "(empty)"

        return (
            f"[{self.node}] exit {self.returncode}: {self.cmd}\n"
            f"--- stdout\n{tail(self.output)}\n--- stderr\n{tail(self.stderr)}"
        )


def _sh(cmd: list[str], check: bool = True, **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, text=True, capture_output=True, **kw)


def _ipn(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return _sh(["ip", "-n", NETNS, *args], check=check)


def _proc_state(pid: int) -> str | None:
    """The process state letter (R, S, T, Z...) or None if there is no such process."""
    try:
        with Path(f"/proc/{pid}/stat").open() as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def _rss_kib(pid: int) -> int | None:
    try:
        with Path(f"/proc/{pid}/status").open() as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None
