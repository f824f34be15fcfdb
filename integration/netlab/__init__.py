"""A namespace lab for VRRP integration tests: hosts on one bridge, daemons, and checks.

    with Lab(["a", "b", "client"]) as lab:
        a = DrbdhaNode(lab, "a", [Inst(vrid=51, priority=200, vips=[f"{VIP4}/24"])])
        b = KeepalivedNode(lab, "b", [Inst(vrid=51, priority=100, vips=[f"{VIP4}/24"])])
        a.start(); b.start()
        master = wait_exactly_one_master([a, b], VIP4, lab.host("client"))

Topology: a hub namespace holds bridge `br0` (multicast snooping off, no STP); every host is
its own namespace with `eth0`, a veth whose peer is a bridge port in the hub. Host i (0-based,
in the order given) gets MAC 02:50:00:00:00:<10+i>, 10.250.0.<10+i>/24, fd00:250::<10+i>/64
and the EUI-64 link-local derived from that MAC, so "higher address" (the RFC 5798 tie
break, for IPv4 the primary address and for IPv6 the link-local) follows the host order.
Addresses exist only inside the lab's namespaces. Namespace names carry the pid and a
counter (integration/netns.py), so parallel runs never clash.

One module per job: commands.py (commands and processes in a namespace), hosts.py (the
lab), instances.py (Inst, shared by both daemons), drbdha_node.py and keepalived_node.py (a
daemon on a host), checks.py (what the tests assert about a set of nodes).

Cleanup is strict and also runs on failure: every process spawned in a lab namespace is
killed (first the handles we hold, then whatever `ip netns pids` still finds there), then
the namespaces are deleted, then the temporary directory.
"""

from .checks import (
    assert_exactly_one_master,
    assert_stays,
    is_ipv6,
    vip_holders,
    wait_exactly_one_master,
)
from .commands import (
    PING,
    Process,
    addresses,
    link_down,
    link_up,
    mac,
    neigh,
    ping,
    run,
    spawn,
)
from .drbdha_node import DRBDHA, METRICS_PORT, REPO, VENV_BIN, DrbdhaNode, node_config
from .hosts import SUBNET4, SUBNET6, VIP4, VIP6, Host, Lab
from .instances import Inst, Node
from .keepalived_node import KEEPALIVED, KeepalivedNode, keepalived_conf

__all__ = [
    "DRBDHA",
    "KEEPALIVED",
    "METRICS_PORT",
    "PING",
    "REPO",
    "SUBNET4",
    "SUBNET6",
    "VENV_BIN",
    "VIP4",
    "VIP6",
    "DrbdhaNode",
    "Host",
    "Inst",
    "KeepalivedNode",
    "Lab",
    "Node",
    "Process",
    "addresses",
    "assert_exactly_one_master",
    "assert_stays",
    "is_ipv6",
    "keepalived_conf",
    "link_down",
    "link_up",
    "mac",
    "neigh",
    "node_config",
    "ping",
    "run",
    "spawn",
    "vip_holders",
    "wait_exactly_one_master",
]
