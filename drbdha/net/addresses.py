"""Idempotent VIP add/remove and the interface facts the daemon needs, over rtnetlink.

Why AsyncIPRoute and async methods: pyroute2 0.9's synchronous IPRoute drives a private
asyncio loop with run_until_complete(), which raises "This event loop is already running"
when called from the daemon's loop. AsyncIPRoute runs on the caller's loop; each request is
a netlink round trip of well under a millisecond, so nothing here needs a thread.

Idempotency (resource-agents' double start / double stop, pyroute2 dhcp/hooks.py):
  * add() uses RTM_NEWADDR with NLM_F_REPLACE|NLM_F_CREATE ('replace'): present or not, the
    address ends up with exactly the requested flags and lifetimes; no EEXIST.
  * remove() treats EADDRNOTAVAIL / ESRCH ("no such address") as success.

Address details (semantics.md §B4, keepalived):
  * IPv6 VIPs get IFA_F_NODAD, so they are usable at once instead of tentative for a second
    (and a VIP moving back and forth cannot fail DAD against a stale copy), and
    preferred_lft 0, so the kernel never picks a VIP as the source of the host's own traffic
    (the VIP is "deprecated", RFC 4862 §5.5.4, but still accepts connections).
  * IPv4 VIPs are added as keepalived does, without lifetimes: IPv4 source selection ignores
    "deprecated", so preferred_lft 0 would only make `ip addr` look alarming. An IPv4 VIP in
    the primary's subnet becomes a secondary address; one in another subnet gets passed in
    `exclude` to primary_address().
  * net.ipv4.conf.<if>.promote_secondaries is switched on before an IPv4 VIP is added, so
    deleting the primary address (or the VIP, if it became the primary of its subnet) does
    not flush every secondary of that subnet with it.

A missing interface raises NetError (also from remove(): the caller decides whether an absent
interface during shutdown is worth a log line). Other kernel refusals raise pyroute2's
NetlinkError (an OSError subclass) unchanged.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv6Interface, ip_address
from pathlib import Path
from typing import Any, Final, Self

from drbdha.net import NetError, flags_up, ifindex
from drbdha.net._pyroute2 import AsyncIPRoute, NetlinkError
from drbdha.vrrp.packet import IPAddress

# <linux/if_addr.h>
IFA_F_SECONDARY: Final = 0x01
IFA_F_NODAD: Final = 0x02
IFA_F_DADFAILED: Final = 0x08
IFA_F_TENTATIVE: Final = 0x40

IPInterface = IPv4Interface | IPv6Interface
_ABSENT: Final = (errno.EADDRNOTAVAIL, errno.ESRCH)
_PROC_CONF: Final = Path("/proc/sys/net/ipv4/conf")


@dataclass(frozen=True)
class AddressSnapshot:
    """The addresses of one family on one interface: (address, prefix length, IFA flags)."""

    version: int
    entries: tuple[tuple[IPAddress, int, int], ...]

    def has(self, iface: IPInterface) -> bool:
        return any(a == iface.ip and p == iface.network.prefixlen for a, p, _ in self.entries)

    def primary(self, exclude: frozenset[IPAddress] = frozenset()) -> IPAddress | None:
        """The source address for adverts, or None if there is none (yet).

        IPv4: the first primary (non-secondary) address not in `exclude` (the VIPs the daemon
        manages). IPv6: the link-local address once it has passed DAD (RFC 5798 §5.1.2.2:
        the source is the link-local address).
        """
        for addr, _, flags in self.entries:
            if addr in exclude:
                continue
            if self.version == 4 and not flags & IFA_F_SECONDARY:
                return addr
            if (
                self.version == 6
                and addr.is_link_local
                and not flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED)
            ):
                return addr
        return None


class Addresses:
    """rtnetlink operations on interfaces by name. Use as `async with Addresses() as a:`
    or call close(); the netlink socket is opened on first use, on the running loop."""

    def __init__(self) -> None:
        self._ipr: Any = None  # AsyncIPRoute; pyroute2 ships no type information

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    def _route(self) -> Any:
        if self._ipr is None:
            self._ipr = AsyncIPRoute()
        return self._ipr

    @staticmethod
    def ifindex(ifname: str) -> int:
        """The interface index; NetError if there is no such interface."""
        return ifindex(ifname)

    async def add(self, ifname: str, iface: IPInterface) -> None:
        """Make sure `iface` (address/prefix) is on `ifname`. Adding twice is a no-op."""
        index = ifindex(ifname)
        extra: dict[str, int] = {}
        if iface.version == 6:
            extra = {"flags": IFA_F_NODAD, "preferred_lft": 0}
        else:
            enable_promote_secondaries(ifname)
        await self._call(
            ifname,
            "replace",
            index=index,
            address=str(iface.ip),
            prefixlen=iface.network.prefixlen,
            **extra,
        )

    async def remove(self, ifname: str, iface: IPInterface) -> None:
        """Make sure `iface` is not on `ifname`. Removing an absent address is a no-op."""
        index = ifindex(ifname)
        try:
            await self._call(
                ifname, "del", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen
            )
        except NetlinkError as exc:
            if exc.code not in _ABSENT:
                raise

    async def snapshot(self, ifname: str, family: int) -> AddressSnapshot:
        """Every address of one family on `ifname`, in one netlink dump. Callers with many
        instances on an interface take one snapshot and ask it, not the kernel, per VIP."""
        version = 4 if family in (4, socket.AF_INET) else 6
        entries = []
        for msg in await self._dump_addresses(ifname, version):
            addr = _msg_address(msg)
            if addr is not None:
                entries.append((addr, int(msg["prefixlen"]), _msg_flags(msg)))
        return AddressSnapshot(version, tuple(entries))

    async def has(self, ifname: str, iface: IPInterface) -> bool:
        """Whether `iface` (the address with this prefix length) is on `ifname`."""
        return (await self.snapshot(ifname, iface.version)).has(iface)

    async def primary_address(
        self, ifname: str, family: int, exclude: frozenset[IPAddress] = frozenset()
    ) -> IPAddress | None:
        """The source address for adverts on `ifname`, or None; see AddressSnapshot.primary."""
        return (await self.snapshot(ifname, family)).primary(exclude)

    async def link_is_up(self, ifname: str) -> bool:
        """Administratively up and carrier present (IFF_UP and IFF_RUNNING)."""
        link = await self._link(ifname)
        return flags_up(link["flags"])

    async def mac(self, ifname: str) -> bytes:
        """The interface's hardware address (6 bytes for Ethernet)."""
        link = await self._link(ifname)
        address = link.get_attr("IFLA_ADDRESS") or ""
        return bytes.fromhex(address.replace(":", ""))

    async def _link(self, ifname: str) -> Any:
        links = await self._call(ifname, "link_get", index=ifindex(ifname))
        return links[0]

    async def _dump_addresses(self, ifname: str, version: int) -> list[Any]:
        family = socket.AF_INET if version == 4 else socket.AF_INET6
        result = await self._call(ifname, "dump", index=ifindex(ifname), family=family)
        return [msg async for msg in result]

    async def _call(self, ifname: str, command: str, **kwargs: Any) -> Any:
        ipr = self._route()
        try:
            if command == "link_get":
                return await ipr.link("get", **kwargs)
            return await ipr.addr(command, **kwargs)
        except NetlinkError as exc:
            # The interface vanished between the name lookup and the request.
            if exc.code == errno.ENODEV:
                raise NetError(f"interface {ifname!r} not found") from exc
            raise


def enable_promote_secondaries(ifname: str) -> None:
    """Set net.ipv4.conf.<ifname>.promote_secondaries = 1 (no write if already set)."""
    path = _PROC_CONF / ifname / "promote_secondaries"
    try:
        if path.read_text().strip() != "1":
            path.write_text("1\n")
    except FileNotFoundError as exc:
        raise NetError(f"interface {ifname!r} has no IPv4 configuration ({path})") from exc


def _msg_address(msg: Any) -> IPAddress | None:
    # IFA_LOCAL is the local address on point-to-point links; IFA_ADDRESS the peer there.
    text = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
    if not text:
        return None
    return ip_address(text)


def _msg_flags(msg: Any) -> int:
    # IFA_FLAGS (32 bits) supersedes the 8-bit ifa_flags field when present.
    flags = msg.get_attr("IFA_FLAGS")
    return int(flags if flags is not None else msg["flags"])
