"""The chain runs apart from the VRRP loop, and nothing beside the loop takes it down.

- A takeover that spends 20 s in a step does not delay one advert. Two real daemons at 10 ms
  adverts (Master_Down_Interval ~34 ms): if the master's loop stalled for more than two
  intervals the backup would take over. The master's chain has SlowStep before the VIP.
- A background task that raises is logged, counted and restarted, and the chain runners go
  on: a stop still releases the chain at once (issue 19 §3, supervised tasks).
- A fatal error in the loop still releases the chain before the daemon ends.
- A stop is a state of the one loop: while a slow step releases, `drbdha status` answers.
- A reload that adds an instance whose reconcile is slow delays no other instance's advert:
  the runner reconciles in its own task and reports back (issue 19 §3).

The doubles are in integration/slow_chain_daemon.py, switched on by environment variables."""

from __future__ import annotations

import itertools
import json
import signal
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any, Self

import pytest
from netlab import SUBNET4, VIP4, DrbdhaNode, Host, Inst, Lab, addresses, node_config
from netns import inside
from polling import wait_until

pytestmark = pytest.mark.slow

SLOW = 20.0
INTERVAL = 0.01
HERE = Path(__file__).resolve().parent
ETH_P_IP = 0x0800
SO_TIMESTAMPNS = 35  # asm-generic/socket.h: a struct timespec of the arrival, in a cmsg


class DoubleNode(DrbdhaNode):
    """drbdha with the test doubles of slow_chain_daemon.py that `env` switches on."""

    def __init__(self, *args: object, env: dict[str, str], **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.env = env

    def start(self) -> DoubleNode:
        self.starts += 1
        log = f"{self.host.name}-drbdha-{self.starts}.log"
        self._events, self._offset, self._partial = [], 0, b""
        self._log_path = self.lab.tmp / log
        argv = [
            sys.executable,
            str(HERE / "slow_chain_daemon.py"),
            "run",
            "-c",
            str(self.config_path),
        ]
        self.proc = self.lab.spawn(self.host, argv, log, env={"PYTHONUNBUFFERED": "1", **self.env})
        return self


def test_a_20s_step_delays_no_advert(lab: Lab) -> None:
    slow = {"DRBDHA_SLOW_STEP": str(SLOW)}
    a = DoubleNode(lab, "a", [Inst(priority=200, advert_interval=INTERVAL)], env=slow).start()
    a.wait_state("master", timeout=10)
    started = time.monotonic()
    b = DrbdhaNode(lab, "b", [Inst(priority=100, advert_interval=INTERVAL)], metrics=False).start()
    b.wait_state("backup", timeout=10)
    # While a's chain sits in its 20 s step: b hears every advert and never takes over, and
    # a does not hold the VIP yet (it is the chain's last step).
    while time.monotonic() - started < SLOW - 3:
        assert b.state() == "backup", b.log_tail()
        assert VIP4 not in addresses(a.host.ns)
        time.sleep(0.2)
    wait_until(
        "VIP after the slow step", lambda: VIP4 in addresses(a.host.ns), SLOW + 10, every=0.02
    )
    assert [t["new"] for t in b.transitions()] == ["backup"], b.transitions()
    steps = {e["step"]: e["took_ms"] for e in a.events("step.started")}
    assert steps["slow"] >= SLOW * 1000 * 0.95
    # The loop served its timers on time throughout: none near Master_Down_Interval (36 ms
    # here; the backup staying backup above is that on the wire). A host with busy neighbours
    # (the lab's VMs, still up at this point of a CI run) may delay a rare one past 10 ms:
    # one in 2,002 was seen.
    late = a.scrape()
    total = late[("drbdha_loop_timer_lateness_seconds_count", frozenset())]
    on_time = late[("drbdha_loop_timer_lateness_seconds_bucket", frozenset({("le", "0.01")}))]
    within = late[("drbdha_loop_timer_lateness_seconds_bucket", frozenset({("le", "0.05")}))]
    print(f"loop timers: {total:.0f} served, {total - on_time:.0f} more than 10 ms late")
    assert total > SLOW / INTERVAL * 0.9  # the adverts kept going, 100 a second
    assert total - on_time <= total * 0.005
    assert within == total


def test_a_failing_background_task_cancels_no_chain(lab: Lab) -> None:
    """A DRBD watcher double raises 2 s after each start. Before supervision it took the task
    group down: the runners were cancelled, and the daemon waited out the release budget and
    exited with the VIP still up."""
    env = {"DRBDHA_FAILING_WATCHER": "2"}
    a = DoubleNode(lab, "a", [Inst(priority=200, advert_interval=0.1)], env=env).start()
    a.wait_state("master", timeout=10)
    wait_until("VIP", lambda: VIP4 in addresses(a.host.ns), 10, every=0.02)
    wait_until(
        lambda: f"two restarts; log tail:\n{a.log_tail()}",
        lambda: len(a.events("task.restarting")) >= 2,
        15,
        every=0.02,
    )
    failed = a.events("task.failed")
    assert failed[0]["task"] == "drbd_watcher:fake", failed
    assert "test double: watcher run 1 raised" in failed[0]["error"]
    assert "Traceback" in failed[0]["exception"]
    assert [e["in_s"] for e in a.events("task.restarting")][:2] == [1.0, 2.0]
    assert a.metric("drbdha_task_failures_total", task="drbd_watcher:fake") >= 2
    assert a.running
    assert a.state() == "master"
    assert VIP4 in addresses(a.host.ns)
    # The runner was never cancelled: a stop releases the chain at once.
    t0 = time.monotonic()
    assert a.terminate(wait=15) == 0, a.log_tail()
    print(f"stopped in {time.monotonic() - t0:.2f} s")
    assert time.monotonic() - t0 < 3
    assert VIP4 not in addresses(a.host.ns)
    assert len(a.events("vip.removed")) == 1, a.log_tail(30)
    assert not a.events("daemon.stopped_holding")


def test_a_fatal_error_releases_the_chain_first(lab: Lab) -> None:
    """The main loop raises 3 s in, while master with the VIP: the chain is released (the
    runners are still there), then the daemon ends with the error."""
    env = {"DRBDHA_FAIL_LOOP_AFTER": "3"}
    a = DoubleNode(lab, "a", [Inst(priority=200, advert_interval=0.1)], env=env).start()
    a.wait_state("master", timeout=10)
    wait_until("VIP", lambda: VIP4 in addresses(a.host.ns), 10, every=0.02)
    assert a.proc is not None
    rc = a.proc.wait(15)
    assert rc not in (None, 0), a.log_tail()
    assert VIP4 not in addresses(a.host.ns)
    assert len(a.events("vip.removed")) == 1, a.log_tail(30)
    assert not a.events("daemon.stopped_holding")
    assert "test double: the main loop raised" in a.proc.output()


def test_status_answers_while_a_stop_releases_a_slow_chain(lab: Lab) -> None:
    """SIGTERM to a master whose chain takes 4 s to stop: the loop turns on through the
    release (not a second loop inside it), so status answers during it, showing the machine
    shut down and the slow step stopping, the VIP already gone; then the daemon ends 0."""
    from ops_common import cli  # noqa: PLC0415

    env = {"DRBDHA_SLOW_STOP": "4"}
    a = DoubleNode(lab, "a", [Inst(priority=200, advert_interval=0.1)], env=env).start()
    a.wait_state("master", timeout=10)
    wait_until("VIP", lambda: VIP4 in addresses(a.host.ns), 10, every=0.02)
    assert a.proc is not None
    a.proc.terminate()
    stopping_at = time.monotonic()

    def releasing() -> dict[str, Any] | None:
        out = cli(a, "status", "--json")
        assert out.returncode == 1, out.stderr  # answered, degraded: it is shutting down
        (inst,) = json.loads(out.stdout)["instances"]
        steps = {s["name"]: s["state"] for s in inst["storage"]["chain"]}
        return inst if steps.get("slow") == "stopping" else None

    inst = wait_until("status during the release", releasing, 3.5, every=0.1)
    assert time.monotonic() - stopping_at < 4.0  # answered inside the 4 s stop
    assert inst["state"] == "initialize", inst
    assert VIP4 not in addresses(a.host.ns)
    assert a.proc.wait(15) == 0, a.log_tail()
    assert not a.events("daemon.stopped_holding"), a.log_tail(30)
    assert a.events("step.stopped")[-1]["step"] == "slow"


class AdvertTimes:
    """When the adverts of one VRID reached `host` (the kernel's receive time of each, taken
    from SO_TIMESTAMPNS, so a busy test process does not stretch the gaps), read by a
    thread. An AF_PACKET datagram socket gets each IPv4 packet from its header on."""

    def __init__(self, host: Host, vrid: int) -> None:
        self.vrid = vrid
        self.times: list[float] = []
        with inside(host.ns):
            self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
        self._sock.bind((host.ifname, ETH_P_IP))
        self._sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self._sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data, ancillary, _, _ = self._sock.recvmsg(2048, 64)
            except TimeoutError:
                continue
            ihl = (data[0] & 0x0F) * 4
            if len(data) <= ihl + 1 or data[9] != 112 or data[ihl + 1] != self.vrid:
                continue
            for level, kind, raw in ancillary:
                if (level, kind) == (socket.SOL_SOCKET, SO_TIMESTAMPNS):
                    sec, nsec = struct.unpack("qq", raw[:16])
                    self.times.append(sec + nsec / 1e9)

    def max_gap(self, since: float, until: float) -> float:
        """The longest silence between `since` and `until` (wall clock, as the stamps)."""
        stamps = [since, *(t for t in self.times if since < t < until), until]
        return max(b - a for a, b in itertools.pairwise(stamps))


def test_a_reload_that_adds_a_slow_instance_delays_no_advert(lab: Lab) -> None:
    """vi1 advertises every 10 ms. A reload adds vi2, whose reconcile takes 5 s (SlowStep's
    held(), a stand-in for a storage chain's drbdadm, findmnt and daemon-reload). Before,
    the loop awaited that reconcile and vi1 was silent for the whole 5 s; now vi1's longest
    gap stays within a few intervals, and vi2 starts once its runner reported."""
    env = {"DRBDHA_SLOW_HELD": "5", "DRBDHA_SLOW_ONLY": "vi2"}
    vi1 = Inst(priority=200, advert_interval=INTERVAL)
    a = DoubleNode(lab, "a", [vi1], env=env).start()
    a.wait_state("master", timeout=10)
    vi2 = Inst(name="vi2", vrid=52, priority=200, vips=[f"{SUBNET4}.101/24"])
    a.config_path.write_text(
        node_config([vi1, vi2], metrics=a.metrics_listen, control_socket=str(lab.tmp / "a.sock"))
    )
    assert a.proc is not None
    with AdvertTimes(lab.host("b"), vi1.vrid) as adverts:
        time.sleep(1)
        hup = time.time()
        a.proc.signal(signal.SIGHUP)
        wait_until(
            lambda: f"config.reloaded; log tail:\n{a.log_tail()}",
            lambda: a.events("config.reloaded"),
            15,
            every=0.02,
        )
        a.wait_state("master", instance="vi2", timeout=20)
        started = time.time()
        time.sleep(0.5)
    gap = adverts.max_gap(hup - 0.5, started)
    print(
        f"vi1: {len(adverts.times)} adverts, longest gap {gap * 1000:.1f} ms "
        f"from 0.5 s before the reload until vi2 started {started - hup:.2f} s after it"
    )
    assert started - hup >= 5, "vi2 started before its 5 s reconcile ended"
    assert gap < 3 * INTERVAL + 0.05
    assert a.state() == "master"
