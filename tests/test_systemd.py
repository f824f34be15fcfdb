"""sd_notify against a real AF_UNIX datagram socket, as systemd's own notify socket is; plus
`systemd-analyze verify` on the shipped unit when the tool is installed."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import stat
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from drbdha import systemd as drbdha_systemd
from drbdha.systemd import Notifier, child_env

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "drbdha.service"

HAVE_SYSTEMD_PYTHON = importlib.util.find_spec("systemd") is not None

BACKENDS = [
    pytest.param(
        "systemd-python",
        marks=pytest.mark.skipif(not HAVE_SYSTEMD_PYTHON, reason="systemd-python not installed"),
    ),
    "stdlib",
]


class NotifySocket:
    """The receiving end: what systemd would read, with the sender's credentials."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(address)
        self.sock.settimeout(2.0)

    def recv(self) -> tuple[bytes, int]:
        """(datagram, sender pid)."""
        data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        pid = -1
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid, _, _ = struct.unpack("3i", payload[:12])
        return data, pid

    def pending(self) -> bytes | None:
        self.sock.setblocking(False)
        try:
            return self.sock.recv(4096)
        except BlockingIOError:
            return None
        finally:
            self.sock.settimeout(2.0)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "stdlib":
        monkeypatch.setattr(drbdha_systemd, "_systemd_python_sender", lambda: None)
    return str(request.param)


@pytest.fixture
def notify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str) -> Iterator[NotifySocket]:
    del backend  # only its side effect (the backend choice) matters
    path = str(tmp_path / "n")
    receiver = NotifySocket(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield receiver
    receiver.sock.close()


def test_ready_is_sent_by_this_process(notify: NotifySocket) -> None:
    assert Notifier().ready()
    data, pid = notify.recv()
    assert data.rstrip(b"\n") == b"READY=1"
    # NotifyAccess=main accepts only the main PID: the message must come from us.
    assert pid == os.getpid()


def test_ready_with_status(notify: NotifySocket) -> None:
    Notifier().ready("2 instances: nfs master, web backup")
    assert notify.recv()[0].rstrip(b"\n") == b"READY=1\nSTATUS=2 instances: nfs master, web backup"


def test_status_newlines_do_not_forge_assignments(notify: NotifySocket) -> None:
    Notifier().status("nfs master\nREADY=1")
    assert notify.recv()[0].rstrip(b"\n") == b"STATUS=nfs master READY=1"


def test_stopping(notify: NotifySocket) -> None:
    Notifier().stopping("releasing VIPs")
    assert notify.recv()[0].rstrip(b"\n") == b"STOPPING=1\nSTATUS=releasing VIPs"


def test_reloading_carries_monotonic_usec(notify: NotifySocket) -> None:
    Notifier().reloading(now=12.5)
    assert notify.recv()[0].rstrip(b"\n") == b"RELOADING=1\nMONOTONIC_USEC=12500000"


def test_extend_timeout(notify: NotifySocket) -> None:
    Notifier().extend_timeout(30, status="promoting r0")
    assert notify.recv()[0].rstrip(b"\n") == b"EXTEND_TIMEOUT_USEC=30000000\nSTATUS=promoting r0"


def test_watchdog_pings_at_a_tenth_of_the_period(
    notify: NotifySocket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")  # WatchdogSec=10s
    sd = Notifier()
    assert sd.watchdog_interval == 1.0
    assert sd.next_watchdog_due(100.0) == 100.0  # never pinged: due now
    assert sd.watchdog(100.0)
    assert notify.recv()[0].rstrip(b"\n") == b"WATCHDOG=1"
    assert sd.next_watchdog_due(100.5) == 101.0
    assert not sd.watchdog(100.9)  # a busy loop does not flood systemd
    assert notify.pending() is None
    assert sd.watchdog(101.0)
    assert notify.recv()[0].rstrip(b"\n") == b"WATCHDOG=1"
    assert sd.next_watchdog_due(101.0) == 102.0


def test_watchdog_pid_ours_enables(notify: NotifySocket, monkeypatch: pytest.MonkeyPatch) -> None:
    del notify
    monkeypatch.setenv("WATCHDOG_USEC", "3000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert Notifier().watchdog_interval == 0.3


def test_watchdog_pid_mismatch_disables(
    notify: NotifySocket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for our parent
    sd = Notifier()
    assert sd.watchdog_interval is None
    assert sd.next_watchdog_due(0.0) is None
    assert not sd.watchdog(0.0)
    assert notify.pending() is None


@pytest.mark.parametrize("value", ["", "0", "-5", "ten"])
def test_bad_watchdog_usec_disables(
    notify: NotifySocket, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    del notify
    monkeypatch.setenv("WATCHDOG_USEC", value)
    assert Notifier().watchdog_interval is None


def test_vanished_socket_never_raises(notify: NotifySocket, tmp_path: Path) -> None:
    notify.sock.close()
    (tmp_path / "n").unlink()
    assert not Notifier().ready()


def test_abstract_socket(monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    del backend
    name = f"drbdha-test-{os.getpid()}"
    receiver = NotifySocket("\0" + name)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert Notifier().ready()
        assert receiver.recv()[0].rstrip(b"\n") == b"READY=1"
    finally:
        receiver.sock.close()


def test_without_notify_socket_everything_is_a_noop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    sd = Notifier()
    assert not sd.enabled
    assert not sd.ready()
    assert not sd.status("x")
    assert not sd.stopping()
    assert not sd.reloading()
    assert not sd.extend_timeout(5)
    assert not sd.watchdog(1.0)
    assert sd.next_watchdog_due(1.0) is None


def test_child_env_drops_notify_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    monkeypatch.setenv("WATCHDOG_PID", "1")
    monkeypatch.setenv("LANG", "C.UTF-8")
    env = Notifier().child_env()
    assert not {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"} & env.keys()
    assert env["LANG"] == "C.UTF-8"
    assert os.environ["NOTIFY_SOCKET"] == "/run/systemd/notify"  # ours is untouched
    assert child_env({"NOTIFY_SOCKET": "x", "PATH": "/bin"}) == {"PATH": "/bin"}


# ---- the unit file -----------------------------------------------------------------------


def _unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_unit_declares_notify_and_watchdog() -> None:
    s = _unit_settings()
    assert s["Type"] == ["notify"]
    assert s["NotifyAccess"] == ["main"]
    assert s["WatchdogSec"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["RuntimeDirectoryMode"] == ["0700"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify checks that ExecStart= binaries exist; point them at a stub so the test does not
    # depend on drbdha being installed in /usr/bin.
    stub = tmp_path / "drbdha"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    unit = tmp_path / "drbdha.service"
    unit.write_text(UNIT.read_text().replace("/usr/bin/drbdha", str(stub)))
    r = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    # Only complaints about our unit count; the host's other units are not ours to judge.
    ours = [ln for ln in (r.stdout + r.stderr).splitlines() if "drbdha.service" in ln]
    assert r.returncode == 0, r.stdout + r.stderr
    assert ours == [], "\n".join(ours)
