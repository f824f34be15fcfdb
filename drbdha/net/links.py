"""Link up/down and address-change events from rtnetlink, for the daemon's one inbox.

LinkWatcher owns a plain AF_NETLINK socket subscribed to RTMGRP_LINK, RTMGRP_IPV4_IFADDR and
RTMGRP_IPV6_IFADDR. It is non-blocking: register fileno() with loop.add_reader() and call
read() when readable. Messages are decoded with pyroute2's MarshalRtnl.

Why a raw socket and not IPRoute().bind(): pyroute2 0.9's AsyncIPRoute attaches its socket
to the loop as a datagram endpoint and reads it itself, which cannot coexist with
add_reader(), and the sync IPRoute cannot run inside the daemon's loop at all. A raw socket
gives one fd, read synchronously, with the overflow case under our control.

Edges only (drbd-reactor: "if old == new, return None"): the kernel sends RTM_NEWLINK for
many reasons (MTU, stats, promiscuity), so a LinkEvent is emitted only when the up state of
a watched interface changes. The initial state comes from a link dump in the constructor and
is readable with is_up(). Address changes on watched interfaces yield one AddressEvent per
interface per read(); the daemon then rechecks its primary address and VIPs (our own VIP
adds and removes show up here too). If the socket's receive queue overflows (ENOBUFS),
events were lost: the watcher asks the kernel for a fresh link dump, whose replies turn into
LinkEvents for whatever changed, and reports an AddressEvent for every watched interface.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from drbdha.net import OwnsSocket, flags_up
from drbdha.net._pyroute2 import MarshalRtnl

# <linux/rtnetlink.h>
RTMGRP_LINK: Final = 0x1
RTMGRP_IPV4_IFADDR: Final = 0x10
RTMGRP_IPV6_IFADDR: Final = 0x100
RTM_NEWLINK: Final = 16
RTM_DELLINK: Final = 17
RTM_GETLINK: Final = 18
RTM_NEWADDR: Final = 20
RTM_DELADDR: Final = 21
# <linux/netlink.h>
NLM_F_REQUEST: Final = 0x1
NLM_F_DUMP: Final = 0x300
NLMSG_ERROR: Final = 2
NLMSG_DONE: Final = 3

_RCVBUF: Final = 1 << 20
_DUMP_TIMEOUT: Final = 2.0  # seconds to wait for the initial link dump
# struct nlmsghdr { u32 len; u16 type; u16 flags; u32 seq; u32 pid; } + struct ifinfomsg
# { u8 family; u8 pad; u16 type; s32 index; u32 flags; u32 change; }
_GETLINK = struct.Struct("=IHHIIBxHiII")


@dataclass(frozen=True, slots=True)
class LinkEvent:
    ifname: str
    up: bool  # IFF_UP and IFF_RUNNING (carrier); False also when the interface vanished


@dataclass(frozen=True, slots=True)
class AddressEvent:
    ifname: str


WatchEvent = LinkEvent | AddressEvent


class LinkWatcher(OwnsSocket):
    def __init__(self, ifnames: Iterable[str]) -> None:
        self.ifnames = frozenset(ifnames)
        self._up: dict[str, bool] = {}  # last known state of watched interfaces
        self._names: dict[int, str] = {}  # ifindex -> ifname, for address messages
        self._marshal = MarshalRtnl()
        self._seq = 0
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
            # Subscribe before dumping, so no change can fall between dump and subscription.
            self._sock.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
            self._initial_dump()
            self._sock.setblocking(False)
        except OSError:
            self._sock.close()
            raise

    def is_up(self, ifname: str) -> bool:
        """Last known state of a watched interface (False if it does not exist)."""
        return self._up.get(ifname, False)

    def read(self) -> list[WatchEvent]:
        """Drain the socket; return the edges and address changes seen, in order."""
        events: list[WatchEvent] = []
        while True:
            try:
                data = self._sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                self._request_dump()
                events.extend(AddressEvent(name) for name in sorted(self.ifnames))
                continue
            for msg in self._marshal.parse(data):
                self._handle(msg, events)
        return _dedupe_addresses(events)

    def _request_dump(self) -> int:
        self._seq += 1
        request = _GETLINK.pack(
            _GETLINK.size, RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, self._seq, 0, 0, 0, 0, 0, 0
        )
        self._sock.send(request)
        return self._seq

    def _initial_dump(self) -> None:
        seq = self._request_dump()
        self._sock.settimeout(_DUMP_TIMEOUT)
        done = False
        while not done:
            for msg in self._marshal.parse(self._sock.recv(65536)):
                header = msg["header"]
                if header["sequence_number"] == seq and header["type"] == NLMSG_ERROR:
                    raise OSError(errno.EIO, f"link dump failed: {header.get('error')}")
                done = done or (header["sequence_number"] == seq and header["type"] == NLMSG_DONE)
                self._handle(msg, [])  # the starting state is not an edge

    def _handle(self, msg: Any, events: list[WatchEvent]) -> None:
        kind = msg["header"]["type"]
        if kind in (RTM_NEWLINK, RTM_DELLINK):
            self._handle_link(msg, kind == RTM_NEWLINK, events)
        elif kind in (RTM_NEWADDR, RTM_DELADDR):
            name = self._names.get(msg["index"])
            if name in self.ifnames:
                events.append(AddressEvent(name))

    def _handle_link(self, msg: Any, exists: bool, events: list[WatchEvent]) -> None:
        index: int = msg["index"]
        name: str | None = msg.get_attr("IFLA_IFNAME")
        old_name = self._names.pop(index, None)
        if exists and name is not None:
            self._names[index] = name
        if old_name is not None and old_name != name:
            self._set(old_name, False, events)  # renamed away from a watched name
        if name is not None:
            self._set(name, exists and flags_up(msg["flags"]), events)

    def _set(self, name: str, up: bool, events: list[WatchEvent]) -> None:
        if name not in self.ifnames:
            return
        if self._up.get(name, False) != up:
            events.append(LinkEvent(name, up))
        self._up[name] = up


def _dedupe_addresses(events: list[WatchEvent]) -> list[WatchEvent]:
    """Keep every LinkEvent and only the first AddressEvent per interface."""
    seen: set[str] = set()
    result: list[WatchEvent] = []
    for event in events:
        if isinstance(event, AddressEvent):
            if event.ifname in seen:
                continue
            seen.add(event.ifname)
        result.append(event)
    return result
