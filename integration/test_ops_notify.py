"""sd_notify and the watchdog on a real datagram socket standing in for systemd's
NOTIFY_SOCKET: READY, STATUS, WATCHDOG (and its stop while the loop is stopped), RELOADING,
STOPPING.
"""

from __future__ import annotations

import itertools
import os
import select
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from netlab import VIP4, DrbdhaNode, Inst, Lab, addresses
from ops_common import socket_path, status_doc, vi1
from polling import wait_until

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
]


# ---- sd_notify and the watchdog on a real socket -----------------------------------------


class NotifyListener:
    """An AF_UNIX datagram socket standing in for systemd's NOTIFY_SOCKET. Records every
    datagram with its arrival time and the sender's pid (SCM_CREDENTIALS)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(str(path))
        self.messages: list[tuple[float, int, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        ucred = struct.Struct("3i")
        while not self._stop.is_set():
            ready, _, _ = select.select([self.sock], [], [], 0.05)
            if not ready:
                continue
            data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(ucred.size))
            at = time.monotonic()
            pid = -1
            for level, kind, raw in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = ucred.unpack(raw[: ucred.size])[0]
            with self._lock:
                self.messages.append((at, pid, data.decode()))

    def since(self, t: float = 0.0) -> list[tuple[float, int, str]]:
        with self._lock:
            return [m for m in self.messages if m[0] >= t]

    def with_line(self, line: str, t: float = 0.0) -> list[tuple[float, int, str]]:
        return [m for m in self.since(t) if line in m[2].split("\n")]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def _status_of(message: str) -> str | None:
    return next((x[len("STATUS=") :] for x in message.split("\n") if x.startswith("STATUS=")), None)


def test_systemd_notify_and_watchdog_on_a_real_socket(
    make_lab: Callable[..., Lab], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab = make_lab("a")
    listener = NotifyListener(tmp_path / "notify")
    lab.on_cleanup(listener.close)
    # systemd's environment for Type=notify with WatchdogSec=200ms; no WATCHDOG_PID, and not
    # a journal stream (logs stay JSON on stdout for DrbdhaNode to read).
    monkeypatch.setenv("NOTIFY_SOCKET", str(listener.path))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    a = DrbdhaNode(lab, "a", [Inst(priority=150)]).start()
    assert a.proc is not None
    pid = a.proc.pid

    (ready_at, _, ready), *_ = wait_until(
        lambda: f"READY=1; log:\n{a.log_tail()}",
        lambda: listener.with_line("READY=1"),
        10,
        every=0.02,
    )
    # READY comes after the VRRP sockets are open and the instance has started.
    started = a.transitions()
    assert started, "READY=1 before the instance started"
    assert started[0]["new"] in ("backup", "master")
    assert started[0]["monotonic"] <= ready_at
    assert _status_of(ready) == "healthy: vi1 BACKUP", ready
    assert socket_path(a).exists()
    assert vi1(status_doc(a))["state"] in ("backup", "master")
    # Alone, it takes over: a STATUS= line says so.
    a.wait_state("master", timeout=3)
    wait_until(
        "STATUS= with MASTER",
        lambda: any(_status_of(m) == "healthy: vi1 MASTER" for _, _, m in listener.since()),
        2,
        every=0.02,
    )

    # WATCHDOG=1 every tenth of WatchdogSec (20 ms), from the daemon's own pid.
    t0 = time.monotonic()
    time.sleep(1.0)
    pings = [at for at, _, _ in listener.with_line("WATCHDOG=1", t0) if at <= t0 + 1.0]
    assert len(pings) >= 5, pings
    gaps = [y - x for x, y in itertools.pairwise(pings)]
    assert max(gaps) < 0.2, f"systemd would have killed it: gaps {gaps}"
    assert {p for _, p, _ in listener.since()} == {pid}, "every datagram comes from the main pid"

    # A stopped main loop stops feeding the watchdog; it resumes with the loop.
    a.proc.stop()
    stopped_at = time.monotonic()
    time.sleep(0.6)
    late = listener.with_line("WATCHDOG=1", stopped_at + 0.05)
    assert late == [], f"WATCHDOG=1 while SIGSTOPped: {late}"
    a.proc.cont()
    cont_at = time.monotonic()
    wait_until(
        "WATCHDOG=1 after SIGCONT",
        lambda: len(listener.with_line("WATCHDOG=1", cont_at)) >= 3,
        1.0,
        every=0.02,
    )

    # Reload: RELOADING=1 with MONOTONIC_USEC, then READY=1 again.
    hup_at = time.monotonic()
    a.proc.signal(signal.SIGHUP)
    reloading = wait_until(
        "RELOADING=1", lambda: listener.with_line("RELOADING=1", hup_at), 2, every=0.02
    )
    usec = next(
        int(x.split("=", 1)[1])
        for x in reloading[0][2].split("\n")
        if x.startswith("MONOTONIC_USEC=")
    )
    assert hup_at <= usec / 1e6 <= reloading[0][0]
    wait_until(
        "READY=1 after reload",
        lambda: listener.with_line("READY=1", reloading[0][0]),
        2,
        every=0.02,
    )

    # SIGTERM: STOPPING=1, then a clean exit.
    term_at = time.monotonic()
    a.proc.terminate()
    wait_until("STOPPING=1", lambda: listener.with_line("STOPPING=1", term_at), 3, every=0.02)
    assert a.proc.wait(5) == 0, a.log_tail()
    assert a.events("daemon.stopped")
    assert VIP4 not in addresses(a.host.ns)
    assert {p for _, p, _ in listener.since()} == {pid}
