"""The few QEMU Machine Protocol commands the lab uses (stdlib only, like the rest of the lab):
pausing a VM, saving and loading its checkpoint, resuming it.

QMP is JSON lines over the VM's unix socket (-qmp unix:...,server=on): a greeting, then
`qmp_capabilities`, then one answer per command, with asynchronous events in between
(skipped here). Snapshots are jobs: started by one command, followed with query-jobs.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any, Self


class MonitorError(RuntimeError):
    """QMP refused a command, or a job it ran failed."""


class Monitor:
    def __init__(self, path: str, timeout: float = 30.0) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        self._sock.connect(path)
        self._file = self._sock.makefile("rw", encoding="utf-8")
        self._read()  # the greeting
        self.cmd("qmp_capabilities")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()
        self._sock.close()

    def _read(self) -> dict[str, Any]:
        while True:
            line = self._file.readline()
            if not line:
                raise MonitorError("QMP socket closed")
            msg = json.loads(line)
            if "event" not in msg:
                return msg

    def cmd(self, name: str, **arguments: Any) -> Any:
        self._file.write(json.dumps({"execute": name, "arguments": arguments}) + "\n")
        self._file.flush()
        answer = self._read()
        if "error" in answer:
            raise MonitorError(f"{name}: {answer['error'].get('desc', answer['error'])}")
        return answer.get("return")

    def job(self, name: str, timeout: float = 120.0, **arguments: Any) -> None:
        """Run a job-based command (snapshot-save, snapshot-load, snapshot-delete) to its end."""
        job_id = f"lab-{name}"
        self.cmd(name, **{"job-id": job_id}, **arguments)
        deadline = time.monotonic() + timeout
        while True:
            (job,) = [j for j in self.cmd("query-jobs") if j["id"] == job_id]
            if job["status"] == "concluded":
                break
            if time.monotonic() > deadline:
                raise MonitorError(f"{name} still {job['status']} after {timeout:.0f} s")
            time.sleep(0.05)
        self.cmd("job-dismiss", id=job_id)
        if "error" in job:
            raise MonitorError(f"{name}: {job['error']}")
