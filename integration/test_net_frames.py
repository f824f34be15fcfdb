"""FrameSender: GARP and unsolicited NA reach the peer and move its neighbour entry."""

from __future__ import annotations

import json
import select
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv6Address

import pytest
from netns import Capture, Lab, inside, is_root, mac_of
from polling import wait_until
from veth_pair import veth_pair

from drbdha.net import NetError
from drbdha.net.frame_sender import FrameSender
from drbdha.net.frames import build_garp, build_unsolicited_na

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(not is_root(), reason="needs root for network namespaces"),
]

STALE_MAC = "02:00:00:00:00:99"


@pytest.fixture
def lab() -> Iterator[tuple[Lab, str, str]]:
    with veth_pair("10.9.0.2/24") as pair:
        yield pair


def neigh_mac(lab: Lab, ns: str, address: str) -> str | None:
    entries = json.loads(lab.ip(ns, f"-j neigh show {address} dev b0"))
    return entries[0].get("lladdr") if entries else None


def _mac_str(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


@pytest.mark.parametrize("vip", ["10.9.0.100", "fd00::100"])
def test_frame_updates_peer_neighbour_cache(lab: tuple[Lab, str, str], vip: str) -> None:
    netlab, a, b = lab
    # Linux updates an *existing* entry from a GARP / unsolicited NA (and creates one only
    # with arp_accept / accept_untracked_na), so B starts with a stale entry elsewhere.
    netlab.ip(b, f"neigh add {vip} lladdr {STALE_MAC} dev b0 nud stale")
    with inside(a):
        sender = FrameSender("a0")
    with sender, Capture(b, "b0") as cap:
        assert sender.mac == mac_of(a, "a0")
        if "." in vip:
            frame = build_garp(sender.mac, IPv4Address(vip))
        else:
            frame = build_unsolicited_na(sender.mac, IPv6Address(vip))
        sender.send(frame)
        assert cap.wait(lambda f: f[: len(frame)] == frame)
        wait_until(
            f"{b} to map {vip} to the sender's MAC",
            lambda: neigh_mac(netlab, b, vip) == _mac_str(sender.mac),
            3.0,
            every=0.02,
        )
        # Bound with protocol 0: the sender itself never has anything to read.
        assert select.select([sender], [], [], 0.05)[0] == []


def test_missing_interface() -> None:
    with pytest.raises(NetError):
        FrameSender("no-such-if0")
