"""A small client for the qemu guest agent over a VM's virtio-serial unix socket (stdlib only).

Works whatever the state of the VM's network (a cut link, a firewall), which is what fault tests
need. Each request is one short transaction under an flock on a per-VM lock file: qemu's socket
chardev serves one client at a time, and holding it only per request lets several commands run
in one VM at once (a background writer and the test's own commands), from several processes.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import secrets
import shlex
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

GUEST_ENV = [
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME=/root",
    "LANG=C.UTF-8",
    "TERM=dumb",
]


class AgentError(RuntimeError):
    """The guest agent could not be reached or refused a request."""


class Agent:
    def __init__(self, socket_path: str, lock_path: str | None = None) -> None:
        self.socket_path = socket_path
        self.lock_path = lock_path or socket_path + ".lock"

    # -- one transaction ---------------------------------------------------------------------
    def request(self, execute: str, arguments: dict | None = None, timeout: float = 10.0) -> Any:
        """Send one command and return its "return" value; raise AgentError on failure."""
        deadline = time.monotonic() + timeout
        if not Path(self.socket_path).exists():
            raise AgentError(f"no agent socket {self.socket_path} (VM not running?)")
        with Path(self.lock_path).open("a") as lockf:
            while True:
                try:
                    fcntl.flock(lockf, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise AgentError(f"agent socket {self.socket_path} busy") from None
                    time.sleep(0.005)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.settimeout(max(0.1, deadline - time.monotonic()))
                _connect(s, self.socket_path, deadline)
                reader = _Reader(s, deadline)
                # Resynchronise: 0xFF resets the agent's parser, and its answer to
                # guest-sync-delimited is preceded by 0xFF, so any stale bytes are skipped.
                sync_id = secrets.randbelow(2**31 - 1) + 1
                s.sendall(
                    b"\xff"
                    + json.dumps(
                        {"execute": "guest-sync-delimited", "arguments": {"id": sync_id}}
                    ).encode()
                    + b"\n"
                )
                while True:
                    reader.skip_to_ff()
                    msg = reader.message()
                    if msg.get("return") == sync_id:
                        break
                cmd = {"execute": execute}
                if arguments is not None:
                    cmd["arguments"] = arguments
                s.sendall(json.dumps(cmd).encode() + b"\n")
                msg = reader.message()
            except (TimeoutError, OSError) as e:
                raise AgentError(f"agent {self.socket_path}: {e or type(e).__name__}") from None
            finally:
                s.close()
        if "error" in msg:
            raise AgentError(f"{execute}: {msg['error'].get('desc', msg['error'])}")
        return msg.get("return")

    def ping(self, timeout: float = 2.0) -> bool:
        try:
            self.request("guest-ping", timeout=timeout)
        except AgentError:
            return False
        return True

    # -- commands ----------------------------------------------------------------------------
    def spawn(
        self,
        cmd: str,
        input: bytes | None = None,  # noqa: A002 (named as in subprocess.run)
        timeout: float = 10.0,
    ) -> int:
        """Start `cmd` under /bin/sh in its own session; return its pid in the guest."""
        args = {
            "path": "/usr/bin/setsid",
            "arg": ["/bin/sh", "-c", cmd],
            "env": GUEST_ENV,
            "capture-output": True,
        }
        if input is not None:
            args["input-data"] = base64.b64encode(input).decode()
        return self.request("guest-exec", args, timeout=timeout)["pid"]

    def status(self, pid: int, timeout: float = 10.0) -> dict:
        return self.request("guest-exec-status", {"pid": pid}, timeout=timeout)

    def read_file(self, path: str, timeout: float = 10.0) -> bytes:
        """A small file's contents through the agent's own file calls: no process in the
        VM (each one costs a one-CPU emulated guest a fork, an exec and the status polls)."""
        handle = self.request("guest-file-open", {"path": path, "mode": "r"}, timeout)
        try:
            data = b""
            while True:
                got = self.request("guest-file-read", {"handle": handle, "count": 65536}, timeout)
                data += base64.b64decode(got.get("buf-b64", ""))
                if got.get("eof") or not got.get("count"):
                    return data
        finally:
            self.request("guest-file-close", {"handle": handle}, timeout)

    def run(
        self,
        cmd: str,
        timeout: float | None = 60.0,
        input: bytes | None = None,  # noqa: A002 (named as in subprocess.run)
    ) -> subprocess.CompletedProcess:
        """Run `cmd` to completion; CompletedProcess with text stdout/stderr.

        Raises subprocess.TimeoutExpired (after killing the command's session in the guest) when
        it outlives `timeout`, AgentError when the agent does not answer.
        """
        start = time.monotonic()
        deadline = None if timeout is None else start + timeout
        req_timeout = 10.0 if timeout is None else max(2.0, min(10.0, timeout))
        pid = self.spawn(cmd, input=input, timeout=req_timeout)
        delay = 0.01
        while True:
            st = self.status(pid, timeout=req_timeout)
            if st.get("exited"):
                break
            if deadline is not None and time.monotonic() > deadline:
                with contextlib.suppress(AgentError):
                    self.spawn(f"kill -KILL -- -{pid} 2>/dev/null || kill -KILL {pid}", timeout=5)
                raise subprocess.TimeoutExpired(cmd, timeout)
            time.sleep(delay)
            delay = min(delay * 1.5, 0.2)
        out = base64.b64decode(st.get("out-data", "")).decode(errors="replace")
        err = base64.b64decode(st.get("err-data", "")).decode(errors="replace")
        rc = st["exitcode"] if "exitcode" in st else -int(st.get("signal", 9))
        return subprocess.CompletedProcess(cmd, rc, out, err)


class _Reader:
    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.buf = b""

    def _fill(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        self.sock.settimeout(left)
        chunk = self.sock.recv(65536)
        if not chunk:
            raise OSError("agent closed the connection")
        self.buf += chunk

    def skip_to_ff(self) -> None:
        while b"\xff" not in self.buf:
            self.buf = b""
            self._fill()
        self.buf = self.buf[self.buf.index(b"\xff") + 1 :]

    def message(self) -> dict:
        while True:
            nl = self.buf.find(b"\n")
            if nl >= 0:
                line, self.buf = self.buf[:nl], self.buf[nl + 1 :]
                line = line.strip().lstrip(b"\xff")
                if not line:
                    continue
                try:
                    return json.loads(line)
                except ValueError:
                    continue
            self._fill()


def shell_join(argv: list[str]) -> str:
    return shlex.join(argv)


def _connect(s: socket.socket, path: str, deadline: float) -> None:
    """Connect to qemu's agent socket, waiting for room. qemu accepts one client at a time;
    while a VM is frozen its backlog fills with the sampler's abandoned attempts, and a Unix
    socket with a timeout answers a full backlog with EAGAIN at once instead of waiting
    (after a thaw qemu drains them one by one)."""
    while True:
        try:
            s.connect(path)
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
        else:
            return
