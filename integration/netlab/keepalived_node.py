"""keepalived on one lab host: its keepalived.conf, its process, its notify FIFO."""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import signal
import threading
import time
from collections.abc import Iterable, Sequence
from ipaddress import ip_interface
from pathlib import Path
from typing import Self

from polling import wait_until

from .commands import Process
from .hosts import Host, Lab
from .instances import Inst

KEEPALIVED = shutil.which("keepalived") or "/usr/sbin/keepalived"


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
            if family6:  # keepalived leaves IPv6 unicast at hop limit 64, which RFC 5798 drops
                body.append("    unicast_ttl 255")
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
        binary: str = KEEPALIVED,
    ) -> None:
        """`binary`: another keepalived (integration/build-keepalived's 2.4.3)."""
        self.binary = binary
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
                self.binary,
                "-n",
                "-l",
                "-D",
                # VRRP only; a build without LVS (build-keepalived's) runs nothing else and
                # has no -P.
                *(["-P"] if self.binary == KEEPALIVED else []),
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
