"""A namespace lab for VRRP integration tests: hosts on one bridge, daemons, and checks.

    with Lab(["a", "b", "client"]) as lab:
        a = DrbdhaNode(lab, "a", [instance(vrid=51, priority=200, vips=[VIP4])])
        b = KeepalivedNode(lab, "b", [instance(vrid=51, priority=100, vips=[VIP4])])
        a.start(); b.start()
        master = wait_exactly_one_master([a, b], VIP4, lab.host("client"))

Topology: a hub namespace holds bridge `br0` (multicast snooping off, no STP); every host is
its own namespace with `eth0`, a veth whose peer is a bridge port in the hub. Host i (0-based,
in the order given) gets MAC 02:50:00:00:00:<10+i>, 10.250.0.<10+i>/24, fd00:250::<10+i>/64
and the EUI-64 link-local derived from that MAC, so "higher address" (the RFC 5798 tie
break, for IPv4 the primary address and for IPv6 the link-local) follows the host order.
Addresses exist only inside the lab's namespaces. Namespace names carry the pid and a
counter (integration/netns.py), so parallel runs never clash.

Cleanup is strict and also runs on failure: every process spawned in a lab namespace is
killed (first the handles we hold, then whatever `ip netns pids` still finds there), then
the namespaces are deleted, then the temporary directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_interface
from pathlib import Path
from typing import Any, Protocol, Self

import drbdha_toml
from netns import inside
from netns import run as _run_checked
from polling import wait_until

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"
DRBDHA = str(VENV_BIN / "drbdha") if (VENV_BIN / "drbdha").exists() else "drbdha"
KEEPALIVED = shutil.which("keepalived") or "/usr/sbin/keepalived"
PING = shutil.which("ping") or "/bin/ping"

SUBNET4 = "10.250.0"
SUBNET6 = "fd00:250::"
VIP4 = "10.250.0.100"
VIP6 = "fd00:250::100"
METRICS_PORT = 9942


# ---- commands in a namespace ------------------------------------------------------------


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


# ---- the lab ----------------------------------------------------------------------------


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


# ---- instance description shared by both daemons ----------------------------------------


@dataclass
class Inst:
    """One VRRP instance, written out as drbdha TOML or keepalived.conf."""

    name: str = "vi1"
    vrid: int = 51
    priority: int = 100
    version: int = 3
    advert_interval: float = 0.1
    vips: list[str] = field(default_factory=lambda: [f"{VIP4}/24"])
    preempt: bool = True
    preempt_delay: float = 0.0
    unicast_peers: list[str] = field(default_factory=list)
    checksum_mode: str = "pseudo"
    extra: dict[str, Any] = field(default_factory=dict)  # more drbdha keys / keepalived lines

    @property
    def vip_addresses(self) -> list[str]:
        return [str(ip_interface(v).ip) for v in self.vips]

    def drbdha_keys(self, ifname: str) -> dict[str, Any]:
        """This instance's [[vrrp_instance]] table."""
        return {
            "name": self.name,
            "interface": ifname,
            "vrid": self.vrid,
            "priority": self.priority,
            "version": self.version,
            "advert_interval": self.advert_interval,
            "virtual_ipaddress": self.vips,
            "preempt": self.preempt,
            "preempt_delay": self.preempt_delay,
            "unicast_peers": self.unicast_peers,
            "checksum_mode": self.checksum_mode,
            **self.extra,
        }


class Node(Protocol):
    name: str
    host: Host

    @property
    def running(self) -> bool: ...
    def state(self, instance: str = "vi1") -> str | None: ...


# ---- drbdha -----------------------------------------------------------------------------


def node_config(
    instances: Iterable[Inst],
    *,
    ifname: str = "eth0",
    metrics: str = "",
    control_socket: str = "/run/drbdha-test.sock",
    log_level: str = "info",
) -> str:
    """drbdha.toml for a lab host running `instances` on `ifname`."""
    return drbdha_toml.render(
        daemon={
            "control_socket": control_socket,
            "metrics_listen": metrics,
            "log_level": log_level,
        },
        instances=[inst.drbdha_keys(ifname) for inst in instances],
    )


class DrbdhaNode:
    """drbdha on one lab host. State comes from its JSON log (`vrrp.transition` events)."""

    kind = "drbdha"

    def __init__(
        self, lab: Lab, host: str | Host, instances: Sequence[Inst], *, metrics: bool = True
    ) -> None:
        self.lab = lab
        self.host = host if isinstance(host, Host) else lab.host(host)
        self.name = f"drbdha@{self.host.name}"
        self.instances = list(instances)
        self.metrics_listen = f"127.0.0.1:{METRICS_PORT}" if metrics else ""
        self.config_path = lab.tmp / f"{self.host.name}.toml"
        self.config_path.write_text(
            node_config(
                self.instances,
                metrics=self.metrics_listen,
                control_socket=str(lab.tmp / f"{self.host.name}.sock"),
            )
        )
        self.proc: Process | None = None
        self.starts = 0
        self._events: list[dict[str, Any]] = []
        self._offset = 0
        self._partial = b""
        self._log_path: Path | None = None

    # lifecycle
    def start(self) -> Self:
        assert self.proc is None or not self.proc.running, "already running"
        self.starts += 1
        log = f"{self.host.name}-drbdha-{self.starts}.log"
        self._events, self._offset, self._partial = [], 0, b""
        self._log_path = self.lab.tmp / log
        self.proc = self.lab.spawn(
            self.host,
            [DRBDHA, "run", "-c", str(self.config_path)],
            log,
            env={"PYTHONUNBUFFERED": "1"},
        )
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.running

    def kill(self) -> None:
        """Crash: SIGKILL, so no priority-0 advert and the VIP stays on the interface."""
        assert self.proc is not None
        self.proc.kill()

    def terminate(self, wait: float = 5.0) -> int | None:
        assert self.proc is not None
        self.proc.terminate()
        return self.proc.wait(wait) if wait else None

    # log
    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        if self._log_path is not None and self._log_path.exists():
            with self._log_path.open("rb") as f:
                f.seek(self._offset)
                chunk = f.read()
            self._offset += len(chunk)
            data = self._partial + chunk
            lines = data.split(b"\n")
            self._partial = lines.pop()
            for line in lines:
                if line.startswith(b"{"):
                    with contextlib.suppress(ValueError):
                        self._events.append(json.loads(line))
        return [e for e in self._events if name is None or e.get("event") == name]

    def state(self, instance: str = "vi1") -> str | None:
        if not self.running:
            return None
        state = None
        for e in self.events("vrrp.transition"):
            if e.get("instance") == instance:
                state = e["new"]
        return state

    def transitions(self, instance: str = "vi1") -> list[dict[str, Any]]:
        return [e for e in self.events("vrrp.transition") if e.get("instance") == instance]

    def wait_state(self, state: str, instance: str = "vi1", timeout: float = 10.0) -> None:
        def reached() -> bool:
            if self.proc is not None and not self.proc.running:
                raise AssertionError(
                    f"{self.name} exited with {self.proc.popen.returncode} "
                    f"while waiting for {state}; log tail:\n{self.log_tail()}"
                )
            return self.state(instance) == state

        wait_until(
            lambda: (
                f"{self.name} {instance} -> {state} (now "
                f"{self.state(instance)}); log tail:\n{self.log_tail()}"
            ),
            reached,
            timeout,
            every=0.02,
        )

    def log_tail(self, lines: int = 15) -> str:
        if self._log_path is None or not self._log_path.exists():
            return "(no log)"
        return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-lines:])

    # metrics
    def scrape(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """All samples from the daemon's /metrics, fetched from inside its namespace."""
        from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

        with inside(self.host.ns):
            url = f"http://{self.metrics_listen}/metrics"
            with urllib.request.urlopen(url, timeout=2) as resp:
                text = resp.read().decode()
        samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples[(s.name, frozenset(s.labels.items()))] = s.value
        return samples

    def metric(self, name: str, **labels: str) -> float:
        return self.scrape().get((name, frozenset(labels.items())), 0.0)


# ---- keepalived -------------------------------------------------------------------------


def keepalived_conf(
    instances: Iterable[Inst], *, host: Host, fifo: Path, global_extra: Sequence[str] = ()
) -> str:
    out = [
        "global_defs {",
        f"    router_id ka_{host.name}",
        f"    vrrp_notify_fifo {fifo}",
        "    vrrp_garp_master_delay 5",
        "    vrrp_garp_master_repeat 5",
        *(f"    {line}" for line in global_extra),
        "}",
    ]
    for inst in instances:
        family6 = ip_interface(inst.vips[0]).version == 6
        advert = f"{inst.advert_interval:g}"
        body = [
            "    state BACKUP",
            f"    interface {host.ifname}",
            f"    virtual_router_id {inst.vrid}",
            f"    priority {inst.priority}",
            f"    version {inst.version}",
            f"    advert_int {advert}",
        ]
        if not inst.preempt:
            body.append("    nopreempt")
        if inst.preempt_delay:
            body.append(f"    preempt_delay {inst.preempt_delay:g}")
        if inst.unicast_peers:
            src = host.ll6 if family6 else host.ip4
            body.append(f"    unicast_src_ip {src}")
            body += ["    unicast_peer {", *(f"        {p}" for p in inst.unicast_peers), "    }"]
        body += [
            "    virtual_ipaddress {",
            *(f"        {v} dev {host.ifname}" for v in inst.vips),
            "    }",
        ]
        body += [f"    {line}" for line in inst.extra.get("keepalived", [])]
        out += [f"vrrp_instance {inst.name} {{", *body, "}"]
    return "\n".join(out) + "\n"


_KA_STATES = {
    "MASTER": "master",
    "BACKUP": "backup",
    "FAULT": "fault",
    "STOP": "stop",
    "DELETED": "stop",
}
_FIFO_LINE = re.compile(r'^INSTANCE "(?P<name>[^"]+)" (?P<state>\w+) (?P<prio>\d+)')


class KeepalivedNode:
    """keepalived 2.2.7 on one lab host. State comes from its notify FIFO, which a thread
    reads (lines like `INSTANCE "vi1" MASTER 100`)."""

    kind = "keepalived"

    def __init__(
        self,
        lab: Lab,
        host: str | Host,
        instances: Sequence[Inst],
        *,
        global_extra: Sequence[str] = (),
    ) -> None:
        self.lab = lab
        self.host = host if isinstance(host, Host) else lab.host(host)
        self.name = f"keepalived@{self.host.name}"
        self.instances = list(instances)
        base = lab.tmp / f"{self.host.name}-ka"
        self.fifo = base.with_suffix(".fifo")
        self.conf = base.with_suffix(".conf")
        self.pidfile = base.with_suffix(".pid")
        self.vrrp_pidfile = base.with_suffix(".vrrp.pid")
        self.conf.write_text(
            keepalived_conf(
                self.instances, host=self.host, fifo=self.fifo, global_extra=global_extra
            )
        )
        self.proc: Process | None = None
        self.starts = 0
        self.history: list[tuple[float, str, str]] = []  # (monotonic, instance, state)
        self._states: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reader: threading.Thread | None = None
        self._fd: int | None = None
        lab.on_cleanup(self._close_fifo)

    def start(self) -> Self:
        assert self.proc is None or not self.proc.running, "already running"
        if not self.fifo.exists():
            os.mkfifo(self.fifo, 0o600)
        if self._fd is None:
            # O_RDWR: never blocks on open and never sees EOF when keepalived restarts.
            self._fd = os.open(self.fifo, os.O_RDWR | os.O_NONBLOCK)
            self._stop.clear()
            self._reader = threading.Thread(target=self._read_fifo, daemon=True)
            self._reader.start()
        with self._lock:
            self._states.clear()
        self.starts += 1
        for p in (self.pidfile, self.vrrp_pidfile):
            p.unlink(missing_ok=True)
        self.proc = self.lab.spawn(
            self.host,
            [
                KEEPALIVED,
                "-n",
                "-l",
                "-D",
                "-P",
                "-f",
                str(self.conf),
                "-p",
                str(self.pidfile),
                "-r",
                str(self.vrrp_pidfile),
            ],
            f"{self.host.name}-keepalived-{self.starts}.log",
        )
        return self

    def _read_fifo(self) -> None:
        buf = b""
        assert self._fd is not None
        fd = self._fd
        while not self._stop.is_set():
            ready, _, _ = select.select([fd], [], [], 0.1)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 4096)
            except (BlockingIOError, OSError):
                continue
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                m = _FIFO_LINE.match(raw.decode(errors="replace"))
                # MASTER_RX_LOWER_PRI is an event, not a state: the instance stays master.
                if m and m["state"] in _KA_STATES:
                    with self._lock:
                        state = _KA_STATES[m["state"]]
                        self._states[m["name"]] = state
                        self.history.append((time.monotonic(), m["name"], state))

    def _close_fifo(self) -> None:
        self._stop.set()
        if self._reader is not None:
            self._reader.join(2)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.running

    def vrrp_pid(self) -> int | None:
        try:
            return int(self.vrrp_pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def state(self, instance: str = "vi1") -> str | None:
        if not self.running:
            return None
        with self._lock:
            return self._states.get(instance)

    def wait_state(self, state: str, instance: str = "vi1", timeout: float = 10.0) -> None:
        wait_until(
            lambda: (
                f"{self.name} {instance} -> {state} (now "
                f"{self.state(instance)}); log tail:\n{self.log_tail()}"
            ),
            lambda: self.state(instance) == state,
            timeout,
            every=0.02,
        )

    def wait_ready(self, timeout: float = 10.0) -> None:
        """The VRRP child is up and every instance has reported a state."""
        wait_until(
            lambda: f"{self.name} ready; log tail:\n{self.log_tail()}",
            lambda: self.vrrp_pid() is not None and all(self.state(i.name) for i in self.instances),
            timeout,
            every=0.02,
        )

    def log_tail(self, lines: int = 15) -> str:
        if self.proc is None:
            return "(not started)"
        return "\n".join(self.proc.output().splitlines()[-lines:])

    def kill(self) -> None:
        """Crash: freeze the parent so it cannot respawn the VRRP child, SIGKILL the child
        (no priority-0 advert, VIPs stay), then SIGKILL the parent."""
        assert self.proc is not None
        child = self.vrrp_pid()
        self.proc.stop()
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        self.proc.kill()
        with self._lock:
            self._states.clear()

    def terminate(self, wait: float = 5.0) -> int | None:
        """Graceful stop: keepalived's VRRP child sends priority 0 and removes its VIPs."""
        assert self.proc is not None
        self.proc.terminate()
        return self.proc.wait(wait) if wait else None


# ---- assertions -------------------------------------------------------------------------


def vip_holders(nodes: Sequence[Any], vip: str) -> list[Any]:
    return [n for n in nodes if vip in addresses(n.host.ns, n.host.ifname)]


def _one_master(
    nodes: Sequence[Any], vip: str, client: Host | None, instance: str, expected: Any = None
) -> tuple[Any | None, str]:
    live = [n for n in nodes if n.running]
    states = {n.name: n.state(instance) for n in nodes}
    masters = [n for n in live if n.state(instance) == "master"]
    if len(masters) != 1:
        return None, f"states {states}"
    master = masters[0]
    if expected is not None and master is not expected:
        return None, f"states {states}, expected {expected.name} as master"
    holders = vip_holders(live, vip)
    if holders != [master]:
        return None, f"states {states}, VIP {vip} on {[h.name for h in holders]}"
    if client is not None:
        if not ping(client.ns, vip):
            return None, f"client cannot ping {vip} (states {states})"
        entry = neigh(client.ns).get(vip, {})
        if entry.get("lladdr") != master.host.mac:
            return None, (
                f"client neighbour {vip} -> {entry.get('lladdr')}, master "
                f"{master.name} has {master.host.mac}"
            )
    return master, ""


def wait_exactly_one_master(
    nodes: Sequence[Any],
    vip: str,
    client: Host | None = None,
    *,
    instance: str = "vi1",
    timeout: float = 10.0,
    expected: Any = None,
) -> Any:
    """Wait until exactly one running node reports MASTER, exactly one running node has
    `vip` on its interface and it is the master, and (with `client`) the client reaches the
    VIP and its neighbour cache maps the VIP to the master's MAC. Returns the master.

    With `expected`, keep waiting until that node is the one master: right after a start
    the lower-priority node can briefly be the only master before it is preempted.

    Nodes that were SIGKILLed are left out: a crashed daemon leaves its VIP on the
    interface, as a hung host would; a restarted one must reconcile it away."""
    last = ""
    deadline = time.monotonic() + timeout
    while True:
        master, last = _one_master(nodes, vip, client, instance, expected)
        if master is not None:
            return master
        if time.monotonic() >= deadline:
            tails = "\n".join(f"--- {n.name}\n{n.log_tail()}" for n in nodes)
            raise AssertionError(f"not exactly one master after {timeout} s: {last}\n{tails}")
        time.sleep(0.05)


def assert_exactly_one_master(
    nodes: Sequence[Any], vip: str, client: Host | None = None, *, instance: str = "vi1"
) -> Any:
    """The check of wait_exactly_one_master(), once, right now."""
    master, why = _one_master(nodes, vip, client, instance)
    assert master is not None, why
    return master


def assert_stays(
    nodes: Sequence[Any], expected: dict[str, str], duration: float, instance: str = "vi1"
) -> None:
    """Every node keeps its state for `duration` seconds (no flapping, no preemption)."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        now = {n.name: n.state(instance) for n in nodes}
        assert now == expected, f"expected {expected} to hold, got {now}"
        time.sleep(0.05)


def is_ipv6(address: str) -> bool:
    return ip_address(address).version == 6
