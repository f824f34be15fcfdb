"""Addresses (VIP add/remove, interface queries) in a network namespace (root only)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Coroutine, Iterator
from ipaddress import IPv4Address, IPv4Interface, IPv6Interface, ip_address
from pathlib import Path
from typing import Any, TypeVar

import pytest
from netns import Lab, inside, is_root, mac_of
from veth_pair import veth_pair

from drbdha.net import NetError
from drbdha.net.addresses import Addresses

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(not is_root(), reason="needs root for network namespaces"),
]

T = TypeVar("T")


@pytest.fixture
def lab() -> Iterator[tuple[Lab, str, str]]:
    with veth_pair() as pair:
        yield pair


def run_in(ns: str, coro: Coroutine[Any, Any, T]) -> T:
    with inside(ns):
        return asyncio.run(coro)


def addr_info(lab: Lab, ns: str, ifname: str) -> list[dict[str, Any]]:
    data = json.loads(lab.ip(ns, f"-j addr show dev {ifname}"))
    info: list[dict[str, Any]] = data[0]["addr_info"]
    return info


def find(lab: Lab, ns: str, address: str) -> dict[str, Any] | None:
    return next((i for i in addr_info(lab, ns, "a0") if i["local"] == address), None)


@pytest.mark.parametrize("vip", ["10.9.0.100/24", "10.9.5.5/32", "fd00::100/64", "fd00::200/128"])
def test_add_remove_idempotent(lab: tuple[Lab, str, str], vip: str) -> None:
    netlab, a, _ = lab
    iface: IPv4Interface | IPv6Interface = IPv4Interface(vip) if "." in vip else IPv6Interface(vip)

    async def body() -> list[bool]:
        async with Addresses() as addrs:
            seen = [await addrs.has("a0", iface)]
            await addrs.add("a0", iface)
            await addrs.add("a0", iface)  # double start
            seen.append(await addrs.has("a0", iface))
            return seen

    assert run_in(a, body()) == [False, True]
    entries = [i for i in addr_info(netlab, a, "a0") if i["local"] == str(iface.ip)]
    assert len(entries) == 1
    entry = entries[0]
    assert entry["prefixlen"] == iface.network.prefixlen
    if iface.version == 6:
        assert entry.get("nodad") is True
        assert not entry.get("tentative")
        assert entry["preferred_life_time"] == 0
        assert entry["valid_life_time"] == 4294967295  # forever
    else:
        promote = Path("/proc/sys/net/ipv4/conf/a0/promote_secondaries")
        with inside(a):
            assert promote.read_text().strip() == "1"

    async def remove() -> bool:
        async with Addresses() as addrs:
            await addrs.remove("a0", iface)
            await addrs.remove("a0", iface)  # double stop
            return await addrs.has("a0", iface)

    assert run_in(a, remove()) is False
    assert find(netlab, a, str(iface.ip)) is None
    assert find(netlab, a, "10.9.0.1") is not None  # the primary survived


def test_primary_address_ignores_vips(lab: tuple[Lab, str, str]) -> None:
    netlab, a, _ = lab
    # A VIP that becomes primary of its own subnet, listed before the real primary.
    netlab.ip(a, "-4 addr flush dev a0")
    netlab.ip(a, "addr add 10.9.5.5/32 dev a0")
    netlab.ip(a, "addr add 10.9.0.1/24 dev a0")
    vip_same_subnet = IPv4Interface("10.9.0.100/24")  # becomes a secondary

    async def body() -> tuple[Any, ...]:
        async with Addresses() as addrs:
            await addrs.add("a0", vip_same_subnet)
            return (
                await addrs.primary_address("a0", socket.AF_INET),
                await addrs.primary_address(
                    "a0", socket.AF_INET, exclude=frozenset({IPv4Address("10.9.5.5")})
                ),
                await addrs.primary_address("a0", socket.AF_INET6),
                await addrs.primary_address("lo", socket.AF_INET6),
            )

    first, primary, link_local, none = run_in(a, body())
    assert first == IPv4Address("10.9.5.5")  # without exclude the kernel's first primary
    assert primary == IPv4Address("10.9.0.1")
    mac = mac_of(a, "a0")
    assert link_local == ip_address(
        b"\xfe\x80" + bytes(6) + bytes([mac[0] ^ 2]) + mac[1:3] + b"\xff\xfe" + mac[3:]
    )
    assert none is None


def test_link_state_and_mac(lab: tuple[Lab, str, str]) -> None:
    netlab, a, b = lab

    async def state() -> tuple[bool, bytes, int]:
        async with Addresses() as addrs:
            return await addrs.link_is_up("a0"), await addrs.mac("a0"), addrs.ifindex("a0")

    up, mac, index = run_in(a, state())
    assert up is True
    assert mac == mac_of(a, "a0")
    with inside(a):
        assert index == socket.if_nametoindex("a0")
    netlab.ip(b, "link set b0 down")  # the peer going down removes a0's carrier
    assert run_in(a, state())[0] is False
    netlab.ip(b, "link set b0 up")
    netlab.ip(a, "link set a0 down")
    assert run_in(a, state())[0] is False


def test_missing_interface(lab: tuple[Lab, str, str]) -> None:
    _, a, _ = lab
    vip = IPv4Interface("10.9.0.100/24")

    async def body() -> list[str]:
        errors = []
        async with Addresses() as addrs:
            for call in (
                addrs.add("nope0", vip),
                addrs.remove("nope0", vip),
                addrs.has("nope0", vip),
                addrs.link_is_up("nope0"),
                addrs.primary_address("nope0", socket.AF_INET),
            ):
                try:
                    await call
                except NetError as exc:
                    errors.append(str(exc))
            return errors

    errors = run_in(a, body())
    assert len(errors) == 5
    assert all("nope0" in e for e in errors)
    with pytest.raises(NetError), inside(a):
        Addresses.ifindex("nope0")
