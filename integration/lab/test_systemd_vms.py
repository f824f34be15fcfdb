"""drbdha under real systemd in both lab nodes: VRRP only (no DRBD, no storage chain).

Each test writes /etc/drbdha/drbdha.toml on both nodes (instance "lab" on eth0, the service
network, vrid 61, VRRPv3, VIP 10.77.1.100/24, priority 150 on node1 and 100 on node2), starts
drbdha with systemctl, and stops it at the end, checking that the VIP is released and removing
the file, so the tests do not depend on their order and leave the lab (and DRBD, which they never
touch) as they found it.

Adverts every ADVERT s (100 ms, as the issue asks; DRBDHA_LAB_ADVERT overrides): under TCG on a
loaded 2-core host a VM can stall for tens of ms, but the backup's Master_Down_Interval is
3 intervals plus skew (~340 ms), and no flap was seen; the tests check that the roles stay put
for seconds at a time, so a flap would fail them.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from collections.abc import Iterator
from typing import Any

import drbdha_toml
import pytest
from cluster import NODES, VIP, VMS, Lab, vrrp_instance
from polling import wait_until

pytestmark = pytest.mark.slow


VRID = 61
ADVERT = float(os.environ.get("DRBDHA_LAB_ADVERT", "0.1"))
PRIORITY = {"node1": 150, "node2": 100}
CONFIG = "/etc/drbdha/drbdha.toml"
OTHER = {"node1": "node2", "node2": "node1"}


def config(node: str, *, preempt: bool, priority: int | None = None) -> str:
    return drbdha_toml.render(
        comment="Written by integration/lab/test_systemd_vms.py",
        daemon={
            "control_socket": "/run/drbdha/control.sock",
            "metrics_listen": "127.0.0.1:9943",
            "log_level": "info",
        },
        instances=[vrrp_instance("lab", VRID, priority or PRIORITY[node], ADVERT, preempt=preempt)],
    )


class Cluster:
    """drbdha in the two nodes, seen through systemctl, `drbdha status` and `ip addr`."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab

    def write_config(self, node: str, *, preempt: bool, priority: int | None = None) -> None:
        self.lab.put(node, CONFIG, config(node, preempt=preempt, priority=priority), 0o600)

    def configure(self, *, preempt: bool) -> None:
        self.lab.parallel(lambda n: self.write_config(n, preempt=preempt), NODES)

    def start(self, nodes: tuple[str, ...] = NODES) -> None:
        """`systemctl restart` (returns once READY=1 arrived: Type=notify) in parallel."""

        def one(node: str) -> None:
            self.lab.exec(
                node, "systemctl reset-failed drbdha; systemctl restart drbdha", timeout=90
            )

        self.lab.parallel(one, nodes)

    def stop(self) -> None:
        self.lab.parallel(
            lambda n: self.lab.exec(
                n, "systemctl stop drbdha; systemctl reset-failed drbdha", check=False, timeout=120
            ),
            [n for n in NODES if self.lab.running(n)],
        )

    def show(self, node: str, *props: str) -> dict[str, str]:
        args = " ".join(f"-p {p}" for p in props)
        out = self.lab.exec(node, f"systemctl show drbdha {args}").stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def is_active(self, node: str) -> str:
        return self.lab.exec(node, "systemctl is-active drbdha", check=False).stdout.strip()

    def status(self, node: str) -> tuple[int, dict[str, Any] | None]:
        """(exit code of `drbdha status --json`, its document or None)."""
        r = self.lab.exec(node, "drbdha status --json", check=False, timeout=30)
        try:
            return r.returncode, json.loads(r.stdout)
        except ValueError:
            return r.returncode, None

    def instance(self, node: str) -> dict[str, Any] | None:
        _, doc = self.status(node)
        return doc["instances"][0] if doc and doc.get("instances") else None

    def states(self) -> dict[str, str | None]:
        def one(node: str) -> str | None:
            inst = self.instance(node)
            return inst["state"] if inst else None

        return dict(zip(NODES, self.lab.parallel(one, NODES), strict=True))

    def holders(self) -> list[str]:
        """The nodes that have the VIP on eth0."""

        def has(node: str) -> bool:
            out = self.lab.exec(node, "ip -4 -o addr show dev eth0").stdout
            return f" {VIP}/" in out

        running = [n for n in NODES if self.lab.running(n)]
        return [n for n, yes in zip(running, self.lab.parallel(has, running), strict=True) if yes]

    def wait_roles(self, master: str | None = None, timeout: float = 30.0) -> str:
        """Wait for exactly one MASTER and one BACKUP (`master` if given) with the VIP on the
        master only; returns the master."""

        def settled() -> str | None:
            st = self.states()
            masters = [n for n, s in st.items() if s == "master"]
            if len(masters) != 1 or st[OTHER[masters[0]]] != "backup":
                return None
            if master is not None and masters[0] != master:
                return None
            return masters[0] if self.holders() == masters else None

        return wait_until(f"one master ({master or 'either'}) holding the VIP", settled, timeout)

    def assert_stable(self, master: str, seconds: float) -> None:
        """The roles and the VIP stay put for `seconds` (dozens of advert intervals)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            st = self.states()
            assert st == {master: "master", OTHER[master]: "backup"}, st
            assert self.holders() == [master]
            time.sleep(0.5)


@pytest.fixture
def drbdha(lab: Lab) -> Iterator[Cluster]:
    cluster = Cluster(lab)
    cluster.stop()  # whatever a failed earlier test left running
    yield cluster
    cluster.stop()
    try:
        for node in NODES:
            if lab.running(node):
                assert cluster.is_active(node) == "inactive", node
        # Stopping resigns and removes the VIP: nobody holds it afterwards.
        assert cluster.holders() == [], "the VIP was not released by systemctl stop"
    finally:
        for node in NODES:
            if lab.running(node):
                lab.exec(
                    node, f"rm -f {CONFIG}; ip -4 addr del {VIP}/24 dev eth0 2>/dev/null; true"
                )


def client_reaches_vip(lab: Lab, master: str) -> None:
    """The client pings the VIP, and its neighbour entry for the VIP is the master's MAC."""
    lab.exec("client", f"ping -c 3 -i 0.2 -W 2 {VIP}", timeout=30)
    neigh = lab.exec("client", f"ip neigh show {VIP} dev eth0").stdout
    assert VMS[master].mac("svc") in neigh, neigh


def test_start_watchdog_reload_and_kill_9(drbdha: Cluster, lab: Lab) -> None:
    """One life cycle (CI time: each start of the daemons costs seconds under emulation):
    started together, an election, status, the watchdog fed; a reload that raises node2's
    priority (it preempts) and one of a broken file (refused, running on); then SIGKILL of
    the master's daemon: the peer takes over, systemd restarts the killed one, which takes
    the role back (priority 200 and preempt)."""
    drbdha.configure(preempt=True)
    drbdha.start()  # both at once: an election
    for node in NODES:
        # Type=notify: `active` (not `activating`) means READY=1 arrived.
        assert drbdha.is_active(node) == "active", node
    master = drbdha.wait_roles("node1")  # preempt and priority 150: node1 wins
    status_and_watchdog(drbdha, lab, master)
    reload_priority_then_a_broken_file(drbdha, lab)
    kill_9_the_master_and_systemd_restarts_it(drbdha, lab)


def status_and_watchdog(drbdha: Cluster, lab: Lab, master: str) -> None:
    backup = OTHER[master]
    for node in NODES:
        r = lab.exec(node, "drbdha status", check=False)
        assert r.returncode == 0, (node, r.stdout, r.stderr)
        state = "MASTER" if node == master else "BACKUP"
        assert state in r.stdout, (node, r.stdout)
    assert drbdha.holders() == [master]
    client_reaches_vip(lab, master)

    # STATUS= from the daemon, as `systemctl status` shows it.
    for node, state in ((master, "MASTER"), (backup, "BACKUP")):
        wait_until(
            f"StatusText of {node} saying {state}",
            lambda n=node, s=state: s in drbdha.show(n, "StatusText")["StatusText"],
            timeout=10,
        )
        assert "healthy" in drbdha.show(node, "StatusText")["StatusText"]

    # The watchdog: armed (WatchdogSec=) and fed; the service outlives a full period untouched
    # (unfed, systemd would have killed it by then).
    before = {
        n: drbdha.show(n, "WatchdogUSec", "MainPID", "NRestarts", "WatchdogTimestampMonotonic")
        for n in NODES
    }
    usec = {n: before[n]["WatchdogUSec"] for n in NODES}
    assert all(v not in ("0", "infinity", "") for v in usec.values()), usec
    period = _seconds(usec["node1"])
    assert period > 0
    time.sleep(period + 2)
    for node in NODES:
        after = drbdha.show(
            node, "ActiveState", "MainPID", "NRestarts", "WatchdogTimestampMonotonic"
        )
        assert after["ActiveState"] == "active", (node, after)
        assert after["MainPID"] == before[node]["MainPID"], (node, before[node], after)
        assert after["NRestarts"] == before[node]["NRestarts"], (node, before[node], after)
        # systemd records each WATCHDOG=1 it accepts: the last one is recent.
        last = int(after["WatchdogTimestampMonotonic"])
        assert last > int(before[node]["WatchdogTimestampMonotonic"]), (node, before[node], after)
    drbdha.assert_stable(master, 2)


def _seconds(systemd_span: str) -> float:
    """'10s', '1min 30s', '500ms' -> seconds."""
    units = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0}
    total = 0.0
    for word in systemd_span.split():
        num = word.rstrip("abcdefghijklmnopqrstuvwxyz")
        total += float(num) * units[word[len(num) :]]
    return total


def reload_priority_then_a_broken_file(drbdha: Cluster, lab: Lab) -> None:
    pid = drbdha.show("node2", "MainPID")["MainPID"]

    # A priority change applies in place: node2 at 200 > 150 preempts node1.
    drbdha.write_config("node2", preempt=True, priority=200)
    lab.exec("node2", "systemctl reload drbdha")
    wait_until(
        "node2 to run with priority 200",
        lambda: (drbdha.instance("node2") or {}).get("priority") == 200,
        timeout=20,
    )
    inst = drbdha.instance("node2")
    assert inst is not None
    assert inst["effective_priority"] == 200, inst
    drbdha.wait_roles("node2", timeout=20)
    assert drbdha.show("node2", "MainPID")["MainPID"] == pid  # reloaded, not restarted

    # A broken file: the reload is refused, the daemon keeps running with the old config.
    cursor = lab.exec("node2", "journalctl -u drbdha -n 0 --show-cursor -q").stdout
    cursor = cursor.strip().rsplit("cursor: ", 1)[-1]
    lab.put("node2", CONFIG, config("node2", preempt=True, priority=300) + "vrid = [\n", 0o600)
    lab.exec("node2", "systemctl reload drbdha")

    def refused() -> bool:
        log = lab.exec(
            "node2",
            f"journalctl -u drbdha -o cat --after-cursor {shlex.quote(cursor)}",
            check=False,
        ).stdout
        return "reload_failed" in log

    wait_until("the reload of a broken file to be refused in the journal", refused, timeout=20)
    assert drbdha.is_active("node2") == "active"
    assert drbdha.show("node2", "MainPID")["MainPID"] == pid
    code, doc = drbdha.status("node2")
    assert code == 0, (code, doc)
    assert doc is not None
    assert doc["instances"][0]["priority"] == 200, doc["instances"][0]
    drbdha.assert_stable("node2", 2)
    # The file is whole again for the restart below (at priority 200).
    drbdha.write_config("node2", preempt=True, priority=200)


def kill_9_the_master_and_systemd_restarts_it(drbdha: Cluster, lab: Lab) -> None:
    before = drbdha.show("node2", "MainPID", "NRestarts")
    since = lab.exec("node1", "date +%s").stdout.strip()
    lab.exec("node2", "systemctl kill -s KILL drbdha")

    # node1 takes over: MASTER and the VIP on its eth0 (node2 may still have the VIP until its
    # restarted daemon reconciles it: a SIGKILLed daemon removes nothing). Read from node1's
    # journal: node2's daemon is back within seconds and takes the role back, so polling the
    # state could miss node1's turn.
    def took_over() -> str | None:
        log = lab.exec(
            "node1",
            f"journalctl -u drbdha -q -o cat --since @{since} EVENT=vrrp.transition "
            "+ EVENT=vip.added",
            check=False,
        ).stdout
        return log if "new=master reason=master_down" in log and "vip.added" in log else None

    log = wait_until("node1 master with the VIP after the kill", took_over, 60, every=1)
    print(log)

    # systemd restarts the killed daemon (Restart=on-failure, RestartSec=2).
    def restarted() -> dict[str, str] | None:
        now = drbdha.show("node2", "ActiveState", "MainPID", "NRestarts")
        ok = (
            now["ActiveState"] == "active"
            and now["MainPID"] not in ("0", before["MainPID"])
            and int(now["NRestarts"]) == int(before["NRestarts"]) + 1
        )
        return now if ok else None

    wait_until("systemd to restart drbdha on node2", restarted, timeout=60)
    # Priority 200 and preempt: the restarted node2 takes the role back, and the VIP its
    # killed daemon left is accounted for (on node2 only).
    drbdha.wait_roles("node2", timeout=20)
    drbdha.assert_stable("node2", 3)
    assert drbdha.holders() == ["node2"]
    client_reaches_vip(lab, "node2")
