"""Authenticated adverts (issue 24, keepalived 2.4's auth_hmac) between real drbdha daemons
in network namespaces: a (priority 200) and b (100) sign and check with one key, VRRPv3
over IPv4 multicast, VRRPv2 and IPv6. Host x injects adverts built with scapy: unsigned
with priority 255, and signed with a key the group does not hold; neither moves the master
or the backup, each is counted by reason. The rollout from no authentication through
"receive-only" and "permissive" to "enforce", one SIGHUP at a time on both nodes, moves
nobody either. (keepalived 2.4.3 as a peer: integration/test_keepalived_auth.py.)
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from ipaddress import ip_address

import pytest
from netlab import DrbdhaNode, Host, Inst, Lab
from netlab.drbdha_node import node_config
from netns import inside
from polling import wait_until
from scapy.layers.inet import IP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from drbdha.vrrp import auth_hmac as ah
from drbdha.vrrp import packet

KEY = "hex:" + bytes(range(32)).hex()  # keepalived's own test key
OTHER_KEY = "an-ascii-key-nobody-else-holds-32b"
ENFORCE = {"keys": {"1": KEY}, "active_key": 1, "mode": "enforce"}
V3 = Inst(name="v3", vrid=61, vips=["10.250.0.111/24"])
V2 = Inst(name="v2", vrid=62, version=2, advert_interval=1, vips=["10.250.0.112/24"])
V6 = Inst(name="v6", vrid=64, vips=["fd00:250::114/64"])
GROUP4, MAC4 = "224.0.0.18", "01:00:5e:00:00:12"
SENT = 3


def insts(priority: int, auth: dict | None) -> list[Inst]:
    extra = {"auth_hmac": auth} if auth else {}
    return [replace(i, priority=priority, extra=extra) for i in (V3, V2, V6)]


def configure(node: DrbdhaNode, lab: Lab, auth: dict | None) -> None:
    node.instances = insts(node.instances[0].priority, auth)
    node.config_path.write_text(
        node_config(
            node.instances,
            metrics=node.metrics_listen,
            control_socket=str(lab.tmp / f"{node.host.name}.sock"),
        )
    )


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[Lab, DrbdhaNode, DrbdhaNode, Host]]:
    with Lab(["a", "b", "x"]) as lab:
        a = DrbdhaNode(lab, "a", insts(200, ENFORCE)).start()
        b = DrbdhaNode(lab, "b", insts(100, ENFORCE), metrics=False).start()
        for i in (V3, V2, V6):
            a.wait_state("master", i.name, timeout=10)
            b.wait_state("backup", i.name, timeout=10)
        yield lab, a, b, lab.host("x")


def forged(x: Host, *, key: bytes | None, priority: int = 255, late: float = 0.0) -> bytes:
    """A v3 advert for V3 from x, unsigned or signed with `key` (id 1) by a clock `late`
    seconds behind."""
    src = ip_address(str(x.ip4))
    advert = packet.Advertisement(3, V3.vrid, priority, 10, (ip_address("10.250.0.111"),))
    vrrp = packet.encode(advert, src, ip_address(GROUP4))
    if key is not None:
        origin = ah.Origin(src, 3, V3.vrid)
        at = time.time_ns() - int(late * 1e9)
        vrrp += ah.sign(vrrp, 1, key, ah.sequence_at(at), origin)
    ip = IP(src=str(x.ip4), dst=GROUP4, ttl=255, proto=112, tos=0xC0)
    return bytes(Ether(src=x.mac, dst=MAC4) / ip / Raw(vrrp))


def inject(x: Host, frame: bytes) -> None:
    with inside(x.ns):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    try:
        sock.bind((x.ifname, 0))
        for _ in range(SENT):
            sock.send(frame)
            time.sleep(0.01)
    finally:
        sock.close()


def refused(node: DrbdhaNode, reason: str, instance: str = "v3") -> float:
    return node.metric("drbdha_vrrp_auth_refused_total", vrrp_instance=instance, reason=reason)


def transitions(node: DrbdhaNode) -> int:
    return len(node.events("vrrp.transition"))


@pytest.mark.parametrize(
    ("case", "key", "reason"),
    [("unsigned", None, "missing"), ("wrong-key", OTHER_KEY.encode(), "invalid_hmac")],
)
def test_a_forged_priority_255_advert_moves_nobody(
    pair: tuple[Lab, DrbdhaNode, DrbdhaNode, Host], case: str, key: bytes | None, reason: str
) -> None:
    _lab, a, b, x = pair
    before, moves = refused(a, reason), transitions(a)
    inject(x, forged(x, key=key))
    wait_until(f"{case}: counted on a", lambda: refused(a, reason) >= before + SENT, 3, 0.02)
    time.sleep(0.5)  # several intervals: nothing may follow
    assert refused(a, reason) == before + SENT
    assert transitions(a) == moves, a.events("vrrp.transition")[moves:]
    assert a.state("v3") == "master"
    assert b.state("v3") == "backup"


def test_signed_adverts_carry_the_election_on_every_family_and_version(
    pair: tuple[Lab, DrbdhaNode, DrbdhaNode, Host],
) -> None:
    _lab, a, b, _x = pair
    # b is backup on all three only because it accepts a's signed adverts; a's scrape
    # counts none of b's refused (b is silent) and none of its own refused as ok.
    for i in (V3, V2, V6):
        assert b.state(i.name) == "backup"
        assert a.metric("drbdha_vrrp_adverts_sent_total", vrrp_instance=i.name) > 0
    a.kill()
    for i in (V3, V2, V6):
        b.wait_state("master", i.name, timeout=10)
    a.start()
    for i in (V3, V2, V6):
        a.wait_state("master", i.name, timeout=10)  # preempts with signed adverts
        b.wait_state("backup", i.name, timeout=10)


def test_the_rollout_moves_nobody() -> None:
    with Lab(["a", "b"]) as lab:
        a = DrbdhaNode(lab, "a", insts(200, None)).start()
        b = DrbdhaNode(lab, "b", insts(100, None), metrics=False).start()
        for i in (V3, V2, V6):
            a.wait_state("master", i.name, timeout=10)
            b.wait_state("backup", i.name, timeout=10)
        moves = transitions(a), transitions(b)
        steps = [
            {"keys": {"1": KEY}, "mode": "receive-only"},
            {"keys": {"1": KEY}, "active_key": 1, "mode": "permissive"},
            ENFORCE,
            # a rotation: key 2 added, then signed with, then key 1 dropped
            {"keys": {"1": KEY, "2": OTHER_KEY}, "active_key": 1, "mode": "enforce"},
            {"keys": {"1": KEY, "2": OTHER_KEY}, "active_key": 2, "mode": "enforce"},
            {"keys": {"2": OTHER_KEY}, "active_key": 2, "mode": "enforce"},
        ]
        for done, step in enumerate(steps, 1):
            for node in (b, a):  # one node after the other, as an admin does
                configure(node, lab, step)
                node.proc.signal(signal.SIGHUP)  # type: ignore[union-attr]
                wait_until(
                    f"{node.name} reloaded {step}",
                    lambda n=node, k=done: len(n.events("config.reloaded")) >= k,
                    10,
                    0.05,
                )
                time.sleep(0.5)
        assert (transitions(a), transitions(b)) == moves, (
            a.events("vrrp.transition"),
            b.events("vrrp.transition"),
        )
        assert all(n.state(i.name) == s for n, s in ((a, "master"), (b, "backup")) for i in (V3,))
        for reason in ah.REASONS:
            assert refused(a, reason) == 0, reason


def test_a_clock_near_the_edge_of_the_window_is_warned_about(
    pair: tuple[Lab, DrbdhaNode, DrbdhaNode, Host],
) -> None:
    _lab, a, _b, x = pair
    # Signed with the group's key by a clock 4 s behind (window 5 s): accepted, warned.
    inject(x, forged(x, key=bytes(range(32)), priority=1, late=4.0))
    wait_until("the skew warning", lambda: a.events("vrrp.auth_clock_skew"), 3, 0.05)
    (e,) = a.events("vrrp.auth_clock_skew")[:1]
    assert e["skew_s"] in (4, 5), e
    assert e["window_s"] == 5, e
    # 6 s behind: outside the window, dropped as stale.
    before = refused(a, "stale")
    inject(x, forged(x, key=bytes(range(32)), priority=1, late=6.5))
    wait_until("counted stale", lambda: refused(a, "stale") >= before + SENT, 3, 0.02)
    assert a.state("v3") == "master"


def test_a_resigning_master_signs_its_priority_0() -> None:
    """A master stopping sends priority 0 so the backup takes over at once (RFC 5798 §6.4.3):
    signed, the enforcing backup accepts it and takes over as `master_resigned`; were it
    unsigned, the backup would refuse it (`missing`) and wait out Master_Down_Interval."""
    with Lab(["a", "b"]) as lab:
        a = DrbdhaNode(lab, "a", [replace(V3, priority=200, extra={"auth_hmac": ENFORCE})])
        b = DrbdhaNode(lab, "b", [replace(V3, priority=100, extra={"auth_hmac": ENFORCE})])
        a.start()
        a.wait_state("master", "v3", timeout=10)
        b.start()
        b.wait_state("backup", "v3", timeout=10)
        a.terminate()
        b.wait_state("master", "v3", timeout=5)
        assert [t["reason"] for t in b.transitions("v3")][-1] == "master_resigned"
        assert refused(b, "missing") == 0
