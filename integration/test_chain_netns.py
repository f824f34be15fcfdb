"""The chain runs apart from the VRRP loop: a takeover that spends 20 s in a step does not
delay one advert. Two real daemons at 10 ms adverts (Master_Down_Interval ~34 ms): if the
master's loop stalled for more than two intervals the backup would take over. The master's
chain has SlowStep (integration/slow_chain_daemon.py) before the VIP."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from netlab import VIP4, DrbdhaNode, Inst, Lab, addresses, wait_until

pytestmark = pytest.mark.slow

SLOW = 20.0
INTERVAL = 0.01
HERE = Path(__file__).resolve().parent


class SlowChainNode(DrbdhaNode):
    def start(self) -> SlowChainNode:
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
        self.proc = self.lab.spawn(
            self.host, argv, log, env={"PYTHONUNBUFFERED": "1", "DRBDHA_SLOW_STEP": str(SLOW)}
        )
        return self


def test_a_20s_step_delays_no_advert(lab: Lab) -> None:
    a = SlowChainNode(lab, "a", [Inst(priority=200, advert_interval=INTERVAL)]).start()
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
    wait_until(lambda: VIP4 in addresses(a.host.ns), SLOW + 10, what="VIP after the slow step")
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
