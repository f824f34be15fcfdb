"""The processes the bench starts (drbdha, keepalived, CPU hogs): started and stopped, their
configs with the same settings for both, what /proc says about them, and the sweep of an
earlier run that was SIGKILLed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import drbdha_toml
from polling import wait_until

from vrrp import ROOT, log

# VRRP_BENCH_DRBDHA: another drbdha executable to measure (e.g. a wrapper running an older
# checkout), for before/after figures from the same lab and load.
DRBDHA = Path(os.environ.get("VRRP_BENCH_DRBDHA") or ROOT / ".venv" / "bin" / "drbdha")
KEEPALIVED = "/usr/sbin/keepalived"
AUTH_KEY = bytes(range(32))  # --auth: both implementations sign and check with this key
AUTH: dict[str, str] = {}  # --auth: {"keepalived": the 2.4.3 binary}; empty: no auth


def use_auth(keepalived: str) -> None:
    """Adverts signed and checked (auth_hmac, enforce) by both, keepalived 2.4.3 built by
    integration/build-keepalived (Debian's has no auth_hmac)."""
    AUTH["keepalived"] = keepalived


TMP_PREFIX = "drbdha-bench-"
IMPLS = ("drbdha", "keepalived")
PY_HOGS = """import multiprocessing as m, time
end = time.time() + {seconds}
def spin():
    while time.time() < end:
        pass
ps = [m.Process(target=spin) for _ in range({n})]
[p.start() for p in ps]
[p.join() for p in ps]
"""


class Procs:
    """Every process the bench starts, so that all of them go on exit whatever happens."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.live: list[subprocess.Popen[bytes]] = []
        self._pidfile = tmp / "pids"

    def start(
        self, argv: list[str], logfile: Path, *, ns: str | None = None
    ) -> subprocess.Popen[bytes]:
        full = ["ip", "netns", "exec", ns, *argv] if ns else argv
        with logfile.open("ab") as out:
            proc = subprocess.Popen(
                full,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.live.append(proc)
        with self._pidfile.open("a") as f:
            f.write(f"{proc.pid}\n")
        return proc

    def stop(
        self, proc: subprocess.Popen[bytes], extra_pids: Sequence[int] = (), timeout: float = 8.0
    ) -> None:
        if proc.poll() is None:
            with suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        for pid in extra_pids:  # e.g. a keepalived child left behind by a SIGKILLed parent
            if _cmdline(pid) and str(self.tmp) in _cmdline(pid):
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if proc in self.live:
            self.live.remove(proc)

    def stop_all(self) -> None:
        for proc in list(reversed(self.live)):
            try:
                self.stop(proc, timeout=5)
            except Exception as e:
                log(f"cleanup: {e}")

    @contextmanager
    def hogs(self, on: bool, seconds: float, n: int = 2) -> Iterator[None]:
        """`n` CPU hogs (stress-ng, or Python spinners without it) while the block runs."""
        if not on or n <= 0:
            yield
            return
        # --timeout: the hogs end by themselves even if this process is SIGKILLed.
        argv = (
            [
                "stress-ng",
                "--cpu",
                str(n),
                "--cpu-method",
                "int64",
                "--timeout",
                f"{int(seconds) + 60}s",
                "--quiet",
            ]
            if shutil.which("stress-ng")
            else [
                sys.executable,
                "-c",
                PY_HOGS.format(seconds=seconds + 60, n=n),
            ]
        )
        proc = self.start(argv, self.tmp / "hogs.log")
        try:
            time.sleep(0.5)
            yield
        finally:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            self.stop(proc)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def sweep_stale_runs() -> None:
    """Kill daemons of an earlier bench run that was SIGKILLed (their namespaces are swept by
    Lab). Only pids that run from that run's private directory are touched."""
    for d in Path(tempfile.gettempdir()).glob(f"{TMP_PREFIX}*"):
        owner = d.name.removeprefix(TMP_PREFIX).split("-")[0]
        if not owner.isdigit() or Path(f"/proc/{owner}").exists():
            continue
        pidfile = d / "pids"
        if pidfile.exists():
            for line in pidfile.read_text().split():
                pid = int(line)
                for p in [pid, *_children(pid)]:
                    if str(d) in _cmdline(p):
                        with suppress(ProcessLookupError):
                            os.kill(p, signal.SIGKILL)
        shutil.rmtree(d, ignore_errors=True)


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def sched_ns(pid: int) -> int:
    """CPU time of all threads in ns (/proc/PID/task/*/schedstat), a finer cross-check of
    the 1/CLK_TCK-resolution utime+stime."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with suppress(OSError):
            total += int((task / "schedstat").read_text().split()[0])
    return total


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


def memory_kb(pid: int) -> tuple[int, int | None]:
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    pss = None
    with suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss, pss


# ---- the two implementations -----------------------------------------------------------------


@dataclass(frozen=True)
class Inst:
    interface: str
    vrid: int
    priority: int
    version: int
    interval: float
    vip: str


@dataclass
class Running:
    impl: str
    node: str
    proc: subprocess.Popen[bytes]
    logfile: Path
    pids: list[int] = field(default_factory=list)  # processes to account (drbdha: 1, ka: 2)
    t_start: float = field(default_factory=time.monotonic)

    def log_text(self) -> str:
        return self.logfile.read_text(errors="replace")


class Implementations:
    def __init__(self, procs: Procs, tmp: Path) -> None:
        self.procs, self.tmp = procs, tmp
        self._n = 0

    def start(self, impl: str, ns: str, node: str, insts: Sequence[Inst]) -> Running:
        self._n += 1
        tag = f"{impl}-{node}-{self._n}"
        logfile = self.tmp / f"{tag}.log"
        if impl == "drbdha":
            conf = self.tmp / f"{tag}.toml"
            conf.write_text(drbdha_config(insts, self.tmp / f"{tag}.sock"))
            t_start = time.monotonic()
            proc = self.procs.start([str(DRBDHA), "run", "-c", str(conf)], logfile, ns=ns)
            run = Running(impl, node, proc, logfile, [proc.pid], t_start)
            wait_until(
                f"{tag} to start",
                lambda: "daemon.started" in run.log_text() or proc.poll() is not None,
                60 + 0.3 * len(insts),
                every=0.05,
            )
        else:
            conf = self.tmp / f"{tag}.conf"
            conf.write_text(keepalived_config(insts, node))
            t_start = time.monotonic()
            binary = AUTH.get("keepalived", KEEPALIVED)
            proc = self.procs.start(
                [
                    binary,
                    "-n",
                    "-l",
                    "-G",
                    *(["-P"] if binary == KEEPALIVED else []),  # a VRRP-only build has no -P
                    "-f",
                    str(conf),
                    "-p",
                    str(self.tmp / f"{tag}.pid"),
                    "-r",
                    str(self.tmp / f"{tag}.vrrp.pid"),
                ],
                logfile,
                ns=ns,
            )
            run = Running(impl, node, proc, logfile, [proc.pid], t_start)
            child = wait_until(
                f"{tag} VRRP child",
                lambda: _children(proc.pid) or proc.poll() is not None,
                30,
                every=0.02,
            )
            if proc.poll() is None:
                run.pids.append(child[0])
            wait_until(
                f"{tag} to start",
                lambda: (
                    "Entering BACKUP STATE" in run.log_text()
                    or "Entering MASTER STATE" in run.log_text()
                    or proc.poll() is not None
                ),
                60 + 0.3 * len(insts),
                every=0.05,
            )
        if proc.poll() is not None:
            raise RuntimeError(f"{tag} exited with {proc.returncode}:\n{run.log_text()[-3000:]}")
        return run

    def stop(self, run: Running) -> None:
        self.procs.stop(run.proc, run.pids[1:])


def drbdha_config(insts: Sequence[Inst], sock: Path) -> str:
    return drbdha_toml.render(
        daemon={
            "control_socket": str(sock),
            "metrics_listen": "127.0.0.1:9942",
            "log_level": "info",
        },
        instances=[
            {
                "name": f"vr_{i.interface}_{i.vrid}",
                "interface": i.interface,
                "vrid": i.vrid,
                "priority": i.priority,
                "version": i.version,
                "advert_interval": i.interval,
                "virtual_ipaddress": [i.vip],
                "garp_master_repeat": 5,
                "garp_master_delay": 0.0,
                "garp_master_refresh": 0.0,
                **_drbdha_auth(),
            }
            for i in insts
        ],
    )


def _keepalived_auth() -> list[str]:
    key = f"        key 1 hex:{AUTH_KEY.hex()}"
    return ["    auth_hmac {", key, "        active_key 1", "    }"]


def _drbdha_auth() -> dict[str, Any]:
    if not AUTH:
        return {}
    keys = {"1": "hex:" + AUTH_KEY.hex()}
    return {"auth_hmac": {"keys": keys, "active_key": 1, "mode": "enforce"}}


def keepalived_config(insts: Sequence[Inst], node: str) -> str:
    out = [
        "global_defs {",
        f"    router_id {node}",
        "    vrrp_garp_master_repeat 5",
        "    vrrp_garp_master_delay 0",
        "    vrrp_garp_master_refresh 0",
        "}",
    ]
    for i in insts:
        interval = f"{i.interval:g}" if i.version == 3 else str(round(i.interval))
        out += [
            f"vrrp_instance vr_{i.interface}_{i.vrid} {{",
            "    state BACKUP",
            f"    interface {i.interface}",
            f"    virtual_router_id {i.vrid}",
            f"    priority {i.priority}",
            f"    version {i.version}",
            f"    advert_int {interval}",
            "    virtual_ipaddress {",
            f"        {i.vip}",
            "    }",
            *(
                [
                    "    auth_hmac {",
                    f"        key 1 hex:{AUTH_KEY.hex()}",
                    "        active_key 1",
                    "    }",
                ]
                if AUTH
                else []
            ),
            "}",
        ]
    return "\n".join(out) + "\n"
