"""Two and three drbdha daemons on one bridge: election, crash, link cut, resign, IPv6,
unicast, nopreempt, and the equal-priority tie after a healed partition.

VRRPv3 at 100 ms keeps each case to a second or two; one VRRPv2 case runs at 1 s. Every case
ends in wait_exactly_one_master(): one MASTER, the VIP on that node only, and the client's
neighbour cache pointing at its MAC.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from netlab import (
    VIP4,
    VIP6,
    DrbdhaNode,
    Host,
    Inst,
    Lab,
    addresses,
    assert_stays,
    link_down,
    link_up,
    run,
    wait_exactly_one_master,
)
from polling import wait_until

from drbdha.vrrp.timers import master_down_interval, skew_time

INTERVAL = 0.1
# Scheduling and log-reading slack on top of protocol times (seconds).
SLACK = 0.25


def _takeover_time(node: DrbdhaNode, since: float) -> tuple[float, str]:
    """Seconds from `since` (monotonic) to `node` becoming master, and the reason logged."""
    t = next(e for e in reversed(node.transitions()) if e["new"] == "master")
    return t["monotonic"] - since, t["reason"]


def _a_master_over_b(
    lab: Lab, vip: str = VIP4, *, a_only: dict[str, Any] | None = None, **both: Any
) -> tuple[Host, DrbdhaNode, DrbdhaNode]:
    """Start a (priority 200) and b (priority 100), both with the instance options `both`
    and a with `a_only` too; (client, a, b) once a is the one master with `vip`."""
    client = lab.host("client")
    a = DrbdhaNode(lab, "a", [Inst(priority=200, **both, **(a_only or {}))]).start()
    b = DrbdhaNode(lab, "b", [Inst(priority=100, **both)]).start()
    assert wait_exactly_one_master([a, b], vip, client, expected=a) is a
    return client, a, b


def test_two_daemons_kill_master_then_restart_preempts(lab: Lab) -> None:
    client, a, b = _a_master_over_b(lab)

    killed_at = time.monotonic()
    a.kill()
    assert wait_exactly_one_master([a, b], VIP4, client, expected=b) is b
    elapsed, reason = _takeover_time(b, killed_at)
    mdi = master_down_interval(3, 100, INTERVAL)
    assert reason == "master_down"
    # The last advert left at most one interval before the kill.
    assert mdi - INTERVAL - 0.02 <= elapsed <= mdi + SLACK, elapsed
    assert VIP4 in addresses(a.host.ns), "SIGKILL leaves the VIP behind (no shutdown path)"

    # Restarted with the stale VIP still on its interface: it must remove it, start as
    # backup, then preempt the lower-priority master and take the VIP back.
    a.start()
    a.wait_state("master", timeout=5)
    assert [t["new"] for t in a.transitions()] == ["backup", "master"]
    assert a.transitions()[-1]["reason"] == "preempt"
    assert a.events("vip.reconciled"), "stale VIP was not reconciled at start-up"
    assert wait_exactly_one_master([a, b], VIP4, client, expected=a) is a
    b.wait_state("backup")


def test_three_daemons_fail_over_in_priority_order(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab("a", "b", "c", "client")
    client = lab.host("client")
    a = DrbdhaNode(lab, "a", [Inst(priority=100)]).start()
    b = DrbdhaNode(lab, "b", [Inst(priority=150)]).start()
    c = DrbdhaNode(lab, "c", [Inst(priority=250)]).start()
    nodes = [a, b, c]
    assert wait_exactly_one_master(nodes, VIP4, client, expected=c) is c
    assert_stays(nodes, {a.name: "backup", b.name: "backup", c.name: "master"}, 0.5)

    c.kill()
    assert wait_exactly_one_master(nodes, VIP4, client, expected=b) is b
    assert a.state() == "backup"
    b.kill()
    assert wait_exactly_one_master(nodes, VIP4, client, expected=a) is a


def test_link_cut_on_master(lab: Lab) -> None:
    client, a, b = _a_master_over_b(lab)

    link_down(a.host.ns)
    a.wait_state("fault", timeout=2)
    assert VIP4 not in addresses(a.host.ns), "a faulted master must release its VIP"
    assert wait_exactly_one_master([a, b], VIP4, client, expected=b) is b

    link_up(a.host.ns)
    a.wait_state("master", timeout=5)
    assert [t["new"] for t in a.transitions()][-3:] == ["fault", "backup", "master"]
    assert wait_exactly_one_master([a, b], VIP4, client, expected=a) is a


def test_sigterm_resigns_with_priority_zero(lab: Lab) -> None:
    client, a, b = _a_master_over_b(lab)

    stopped_at = time.monotonic()
    assert a.terminate() == 0
    b.wait_state("master", timeout=2)
    elapsed, reason = _takeover_time(b, stopped_at)
    assert reason == "master_resigned"
    # Skew_Time (~61 ms) instead of Master_Down_Interval (~361 ms): the priority-0 path.
    assert elapsed < master_down_interval(3, 100, INTERVAL), elapsed
    assert elapsed < skew_time(3, 100, INTERVAL) + SLACK, elapsed
    assert VIP4 not in addresses(a.host.ns), "SIGTERM must remove the VIP"
    assert wait_exactly_one_master([a, b], VIP4, client, expected=b) is b


def test_ipv6_vip(lab: Lab) -> None:
    client, a, b = _a_master_over_b(lab, VIP6, vips=[f"{VIP6}/64"])
    a.kill()
    assert wait_exactly_one_master([a, b], VIP6, client, expected=b) is b


def test_unicast_peers(lab: Lab) -> None:
    client = lab.host("client")
    ha, hb = lab.host("a"), lab.host("b")
    a = DrbdhaNode(lab, ha, [Inst(priority=200, unicast_peers=[str(hb.ip4)])]).start()
    b = DrbdhaNode(lab, hb, [Inst(priority=100, unicast_peers=[str(ha.ip4)])]).start()
    assert wait_exactly_one_master([a, b], VIP4, client, expected=a) is a
    assert_stays([a, b], {a.name: "master", b.name: "backup"}, 0.5)
    a.kill()
    assert wait_exactly_one_master([a, b], VIP4, client, expected=b) is b


def test_nopreempt_keeps_the_running_master(lab: Lab) -> None:
    client = lab.host("client")
    b = DrbdhaNode(lab, "b", [Inst(priority=100)]).start()
    b.wait_state("master", timeout=3)
    a = DrbdhaNode(lab, "a", [Inst(priority=200, preempt=False)]).start()
    a.wait_state("backup", timeout=3)
    assert_stays([a, b], {a.name: "backup", b.name: "master"}, 1.0)
    assert wait_exactly_one_master([a, b], VIP4, client, expected=b) is b
    b.kill()
    assert wait_exactly_one_master([a, b], VIP4, client, expected=a) is a


def test_preempt_delay(lab: Lab) -> None:
    b = DrbdhaNode(lab, "b", [Inst(priority=100)]).start()
    b.wait_state("master", timeout=3)
    a = DrbdhaNode(lab, "a", [Inst(priority=200, preempt_delay=1.0)]).start()
    a.wait_state("backup", timeout=3)
    started = a.transitions()[0]["monotonic"]
    a.wait_state("master", timeout=4)
    waited = a.transitions()[-1]["monotonic"] - started
    # Held off for preempt_delay after first hearing b, then Master_Down_Interval.
    assert 1.0 <= waited <= 1.0 + master_down_interval(3, 200, INTERVAL) + SLACK, waited
    assert wait_exactly_one_master([a, b], VIP4, lab.host("client"), expected=a) is a


def test_equal_priority_tie_after_partition_heals(lab: Lab) -> None:
    """Both become master while partitioned; after the heal the higher primary address
    (b, 10.250.0.11) wins (RFC 5798 §6.4.3), and the client follows it."""
    client = lab.host("client")
    a = DrbdhaNode(lab, "a", [Inst(priority=100)])
    b = DrbdhaNode(lab, "b", [Inst(priority=100)])
    lab.partition(a.host)
    a.start()
    b.start()
    a.wait_state("master", timeout=3)
    b.wait_state("master", timeout=3)
    lab.heal(a.host)
    assert wait_exactly_one_master([a, b], VIP4, client, expected=b) is b
    assert a.transitions()[-1]["reason"] == "higher_priority"


@pytest.mark.slow
def test_vrrp_v2_one_second(lab: Lab) -> None:
    client = lab.host("client")
    a = DrbdhaNode(lab, "a", [Inst(priority=200, version=2, advert_interval=1)]).start()
    b = DrbdhaNode(lab, "b", [Inst(priority=100, version=2, advert_interval=1)]).start()
    assert wait_exactly_one_master([a, b], VIP4, client, timeout=8, expected=a) is a
    killed_at = time.monotonic()
    a.kill()
    assert wait_exactly_one_master([a, b], VIP4, client, timeout=8, expected=b) is b
    elapsed, _ = _takeover_time(b, killed_at)
    mdi = master_down_interval(2, 100, 1.0)  # 3.61 s
    assert mdi - 1.0 - 0.02 <= elapsed <= mdi + SLACK, elapsed


def test_several_instances_in_one_daemon(lab: Lab) -> None:
    """Two instances per daemon, masters on different nodes."""
    client = lab.host("client")
    v1, v2 = "10.250.0.101", "10.250.0.102"

    def insts(p1: int, p2: int) -> list[Inst]:
        return [
            Inst(name="i1", vrid=61, priority=p1, vips=[f"{v1}/24"]),
            Inst(name="i2", vrid=62, priority=p2, vips=[f"{v2}/24"]),
        ]

    a = DrbdhaNode(lab, "a", insts(200, 100)).start()
    b = DrbdhaNode(lab, "b", insts(100, 200)).start()
    assert wait_exactly_one_master([a, b], v1, client, instance="i1", expected=a) is a
    assert wait_exactly_one_master([a, b], v2, client, instance="i2", expected=b) is b
    b.kill()
    assert wait_exactly_one_master([a, b], v2, client, instance="i2", expected=a) is a
    wait_until("i1 unaffected", lambda: a.state("i1") == "master", 1, every=0.02)


def test_mixed_checksum_modes(lab: Lab) -> None:
    """A v3 IPv4 router sending RFC 9568 message-only checksums and one sending the
    pseudo-header form understand each other: either form is accepted on receive."""
    client, a, b = _a_master_over_b(lab, a_only={"checksum_mode": "rfc9568"})
    assert_stays([a, b], {a.name: "master", b.name: "backup"}, 0.5)
    for node in (a, b):
        refused = sum(
            v
            for (name, _), v in node.scrape().items()
            if name == "drbdha_vrrp_invalid_adverts_total"
        )
        assert refused == 0, node.name
    assert b.metric("drbdha_vrrp_adverts_received_total", vrrp_instance="vi1") > 3
    a.terminate()
    assert wait_exactly_one_master([a, b], VIP4, client, expected=b) is b
    assert b.transitions()[-1]["reason"] == "master_resigned"


def test_primary_address_removed_is_a_fault(lab: Lab) -> None:
    """Without its primary address a router cannot advertise (nor win a tie): FAULT, VIP
    released; the address back means backup, then preemption."""
    client, a, b = _a_master_over_b(lab)
    ha = a.host
    run(ha.ns, ["ip", "addr", "del", f"{ha.ip4}/24", "dev", ha.ifname])
    a.wait_state("fault", timeout=2)
    assert a.transitions()[-1]["reason"] == "fault:no_address"
    assert wait_exactly_one_master([a, b], VIP4, client, expected=b) is b
    run(ha.ns, ["ip", "addr", "add", f"{ha.ip4}/24", "dev", ha.ifname])
    a.wait_state("master", timeout=3)
    assert wait_exactly_one_master([a, b], VIP4, client, expected=a) is a


def test_interface_deleted_under_the_daemon(lab: Lab) -> None:
    """The interface vanishes (a VLAN or bond deleted): every instance on it goes FAULT, the
    daemon keeps running (it used to die on the failed VIP removal), and stops cleanly."""
    client, ha = lab.host("client"), lab.host("a")
    insts = [Inst(priority=200), Inst(name="v6", vrid=52, priority=200, vips=[f"{VIP6}/64"])]
    a = DrbdhaNode(lab, ha, insts).start()
    b = DrbdhaNode(lab, "b", [Inst(priority=100)]).start()
    assert wait_exactly_one_master([a, b], VIP4, client, expected=a) is a
    a.wait_state("master", "v6", timeout=2)
    run(ha.ns, ["ip", "link", "del", ha.ifname])
    a.wait_state("fault", timeout=2)
    a.wait_state("fault", "v6", timeout=2)
    assert wait_exactly_one_master([a, b], VIP4, client, expected=b) is b
    time.sleep(0.3)
    assert a.running, a.log_tail()
    assert a.terminate() == 0, a.log_tail()
    assert not [e for e in a.events() if "exception" in e or e["level"] == "error"]
