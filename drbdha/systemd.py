"""systemd service notification (sd_notify(3)), modelled on drbd-reactor's src/systemd.rs.

Rules:
- Outside systemd (no NOTIFY_SOCKET) every method is a no-op that returns False.
- Messages go through systemd-python's `systemd.daemon.notify` (imported lazily, so the CLI
  never loads it). If systemd-python is missing but systemd did hand us a NOTIFY_SOCKET, the
  datagram is sent with the stdlib instead: a Type=notify unit whose READY=1 is silently
  dropped would be killed at TimeoutStartSec with no hint why.
- WATCHDOG=1 is sent only from the main loop, after a turn (`watchdog(now)`); a stuck loop
  stops pinging and systemd kills it. Nothing here runs on a thread or a timer of its own.
- Children must not inherit NOTIFY_SOCKET (drbdadm, mount, exportfs would otherwise be able
  to talk to systemd in our name): pass `child_env()` to every subprocess.
- Time is an argument (`now`, monotonic seconds); the default clock is only a fallback.
"""

from __future__ import annotations

import importlib
import os
import socket
from collections.abc import Callable, Mapping
from typing import Final

from drbdha.clock import Clock, MonotonicClock

NOTIFY_ENV: Final = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")

Sender = Callable[[str], bool]


def _systemd_python_sender() -> Sender | None:
    try:
        # Optional dependency, loaded on demand. By name, because the repository's systemd/
        # directory (the unit file) would shadow the package for static analysis.
        daemon = importlib.import_module("systemd.daemon")
    except ImportError:
        return None

    def send(message: str) -> bool:
        return bool(daemon.notify(message))

    return send


def _stdlib_sender(address: str) -> Sender:
    # sd_notify(3): a leading "@" names a socket in the abstract namespace.
    target = "\0" + address[1:] if address.startswith("@") else address

    def send(message: str) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto(message.encode(), target)
        return True

    return send


class Notifier:
    """sd_notify wrapper. Every method returns True when a datagram was sent."""

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        clock: Clock | None = None,
        pid: int | None = None,
    ) -> None:
        own_env = env is None or env is os.environ
        env = os.environ if env is None else env
        self._clock = clock or MonotonicClock()
        self._socket = env.get("NOTIFY_SOCKET") or None
        self._send: Sender | None = None
        if self._socket is not None:
            # sd_notify() reads the process environment, so systemd-python only serves when
            # that is where the socket came from (tests may pass their own mapping).
            python = _systemd_python_sender() if own_env else None
            self._send = python or _stdlib_sender(self._socket)
        self._watchdog_interval = _watchdog_interval(env, os.getpid() if pid is None else pid)
        self._last_watchdog: float | None = None

    @property
    def enabled(self) -> bool:
        return self._send is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings (half of WatchdogSec), or None when systemd does not
        watch us."""
        return self._watchdog_interval

    # ---- messages ------------------------------------------------------------------------

    def ready(self, status: str | None = None) -> bool:
        """After config, sockets and reconciliation; again after a completed reload."""
        return self._notify("READY=1", status)

    def status(self, text: str) -> bool:
        return self._notify(None, text)

    def stopping(self, status: str | None = None) -> bool:
        return self._notify("STOPPING=1", status)

    def reloading(self, status: str | None = None, now: float | None = None) -> bool:
        """RELOADING=1 with MONOTONIC_USEC (CLOCK_MONOTONIC, microseconds), as systemd >= 253
        requires for Type=notify-reload; older systemd ignores the extra field. Send ready()
        when the reload is done, whatever its outcome."""
        now = self._clock.monotonic() if now is None else now
        return self._notify(f"RELOADING=1\nMONOTONIC_USEC={int(now * 1_000_000)}", status)

    def extend_timeout(self, seconds: float, status: str | None = None) -> bool:
        """Ask for `seconds` more before systemd's start/stop/reload timeout fires (a long
        promote, mount or umount). Repeat before it runs out."""
        usec = max(1, int(seconds * 1_000_000))
        return self._notify(f"EXTEND_TIMEOUT_USEC={usec}", status)

    def watchdog(self, now: float | None = None) -> bool:
        """Call after every main-loop turn. Pings only when due, so a busy loop costs one
        comparison per turn."""
        if self._watchdog_interval is None or self._send is None:
            return False
        now = self._clock.monotonic() if now is None else now
        due = self.next_watchdog_due(now)
        if due is not None and now < due:
            return False
        self._last_watchdog = now
        return self._notify("WATCHDOG=1", None)

    def next_watchdog_due(self, now: float) -> float | None:
        """Absolute monotonic time of the next WATCHDOG=1, for the loop's wake-up deadline;
        None when the watchdog is off."""
        if self._watchdog_interval is None or self._send is None:
            return None
        if self._last_watchdog is None:
            return now
        return self._last_watchdog + self._watchdog_interval

    def child_env(self) -> dict[str, str]:
        return child_env()

    # ---- helpers -------------------------------------------------------------------------

    def _notify(self, message: str | None, status: str | None) -> bool:
        if self._send is None:
            return False
        lines = [message] if message else []
        if status is not None:
            # One datagram, newline-separated assignments: a newline inside STATUS= would
            # start a bogus assignment.
            lines.append("STATUS=" + " ".join(status.split()))
        if not lines:
            return False
        try:
            return self._send("\n".join(lines))
        except OSError:
            # systemd went away (or is restarting); the daemon's job is not to die for it.
            return False


def child_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for subprocesses: ours minus the sd_notify variables."""
    env = os.environ if env is None else env
    return {k: v for k, v in env.items() if k not in NOTIFY_ENV}


WATCHDOG_SHARE = 10  # pings per WatchdogSec


def _watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """sd_watchdog_enabled(3): WATCHDOG_USEC, valid only for WATCHDOG_PID if that is set."""
    wpid = env.get("WATCHDOG_PID")
    if wpid:
        try:
            if int(wpid) != pid:
                return None
        except ValueError:
            return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    # A tenth of the period, not sd_watchdog_enabled(3)'s usual half: a VM frozen for 6 s
    # (the fault campaign) comes back with systemd's timer past 10 s since a ping sent 5 s
    # before the freeze, and systemd killed a daemon that was about to run fine. A stuck
    # loop is still killed after the full period.
    return usec / 1_000_000 / WATCHDOG_SHARE
