"""What the tests assert about a set of nodes: exactly one master holding the VIP and
reachable from a client, states that hold."""

from __future__ import annotations

import time
from collections.abc import Sequence
from ipaddress import ip_address
from typing import Any

from .commands import addresses, neigh, ping
from .hosts import Host


def vip_holders(nodes: Sequence[Any], vip: str) -> list[Any]:
    return [n for n in nodes if vip in addresses(n.host.ns, n.host.ifname)]


def _one_master(
    nodes: Sequence[Any], vip: str, client: Host | None, instance: str, expected: Any = None
) -> tuple[Any | None, str]:
    live = [n for n in nodes if n.running]
    states = {n.name: n.state(instance) for n in nodes}
    masters = [n for n in live if n.state(instance) == "master"]
    if len(masters) != 1:
        return None, f"states {states}"
    master = masters[0]
    if expected is not None and master is not expected:
        return None, f"states {states}, expected {expected.name} as master"
    holders = vip_holders(live, vip)
    if holders != [master]:
        return None, f"states {states}, VIP {vip} on {[h.name for h in holders]}"
    if client is not None:
        if not ping(client.ns, vip):
            return None, f"client cannot ping {vip} (states {states})"
        entry = neigh(client.ns).get(vip, {})
        if entry.get("lladdr") != master.host.mac:
            return None, (
                f"client neighbour {vip} -> {entry.get('lladdr')}, master "
                f"{master.name} has {master.host.mac}"
            )
    return master, ""


def wait_exactly_one_master(
    nodes: Sequence[Any],
    vip: str,
    client: Host | None = None,
    *,
    instance: str = "vi1",
    timeout: float = 10.0,
    expected: Any = None,
) -> Any:
    """Wait until exactly one running node reports MASTER, exactly one running node has
    `vip` on its interface and it is the master, and (with `client`) the client reaches the
    VIP and its neighbour cache maps the VIP to the master's MAC. Returns the master.

    With `expected`, keep waiting until that node is the one master: right after a start
    the lower-priority node can briefly be the only master before it is preempted.

    Nodes that were SIGKILLed are left out: a crashed daemon leaves its VIP on the
    interface, as a hung host would; a restarted one must reconcile it away."""
    last = ""
    deadline = time.monotonic() + timeout
    while True:
        master, last = _one_master(nodes, vip, client, instance, expected)
        if master is not None:
            return master
        if time.monotonic() >= deadline:
            tails = "\n".join(f"--- {n.name}\n{n.log_tail()}" for n in nodes)
            raise AssertionError(f"not exactly one master after {timeout} s: {last}\n{tails}")
        time.sleep(0.05)


def assert_exactly_one_master(
    nodes: Sequence[Any], vip: str, client: Host | None = None, *, instance: str = "vi1"
) -> Any:
    """The check of wait_exactly_one_master(), once, right now."""
    master, why = _one_master(nodes, vip, client, instance)
    assert master is not None, why
    return master


def assert_stays(
    nodes: Sequence[Any], expected: dict[str, str], duration: float, instance: str = "vi1"
) -> None:
    """Every node keeps its state for `duration` seconds (no flapping, no preemption)."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        now = {n.name: n.state(instance) for n in nodes}
        assert now == expected, f"expected {expected} to hold, got {now}"
        time.sleep(0.05)


def is_ipv6(address: str) -> bool:
    return ip_address(address).version == 6
