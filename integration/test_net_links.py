"""LinkWatcher: link edges and address changes from netlink in a namespace (root only)."""

from __future__ import annotations

import asyncio
import select
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from netns import Lab, inside, is_root

from drbdha.net.links import AddressEvent, LinkEvent, LinkWatcher, WatchEvent

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(not is_root(), reason="needs root for network namespaces"),
]


@pytest.fixture
def lab() -> Iterator[tuple[Lab, str, str]]:
    with Lab() as lab:
        a, b = lab.add_ns("a"), lab.add_ns("b")
        lab.veth(a, "a0", b, "b0")
        lab.veth(a, "a1", b, "b1")  # not watched: its events must not show up
        yield lab, a, b


def collect(watcher: LinkWatcher, until: WatchEvent, timeout: float = 3.0) -> list[WatchEvent]:
    """Read events until `until` shows up; fail after `timeout` seconds."""
    events: list[WatchEvent] = []
    while until not in events:
        assert select.select([watcher], [], [], timeout)[0], f"no {until} within {timeout} s"
        events.extend(watcher.read())
    return events


def test_link_edges_and_addresses(lab: tuple[Lab, str, str]) -> None:
    netlab, a, b = lab
    with inside(a):
        watcher = LinkWatcher(["a0", "gone0"])
    with watcher:
        assert watcher.is_up("a0") is True
        assert watcher.is_up("gone0") is False
        assert watcher.read() == []

        netlab.ip(a, "link set a1 down")
        netlab.ip(a, "link set a0 down")
        events = collect(watcher, LinkEvent("a0", False))
        # Down also drops a0's IPv6 link-local address, hence possibly an AddressEvent too.
        assert [e for e in events if isinstance(e, LinkEvent)] == [LinkEvent("a0", False)]
        assert all(e.ifname == "a0" for e in events)

        netlab.ip(a, "link set a0 up")
        events = collect(watcher, LinkEvent("a0", True))
        assert events.count(LinkEvent("a0", True)) == 1
        assert all(e.ifname == "a0" for e in events)

        netlab.ip(b, "link set b0 down")  # carrier loss, a0 stays administratively up
        assert LinkEvent("a0", False) in collect(watcher, LinkEvent("a0", False))
        netlab.ip(b, "link set b0 up")
        collect(watcher, LinkEvent("a0", True))
        assert watcher.is_up("a0") is True

        netlab.ip(a, "addr add 10.9.0.1/24 dev a1")
        netlab.ip(a, "addr add 10.9.0.1/24 dev a0")
        netlab.ip(a, "addr add fd00::1/64 dev a0")
        events = collect(watcher, AddressEvent("a0"))
        assert events.count(AddressEvent("a0")) <= 2  # de-duplicated per read()
        assert all(e.ifname == "a0" for e in events)

        netlab.ip(a, "link del a0")  # the peer b0 goes with it
        events = collect(watcher, LinkEvent("a0", False))
        assert watcher.is_up("a0") is False


def test_with_asyncio_add_reader(lab: tuple[Lab, str, str]) -> None:
    netlab, a, _ = lab

    async def body() -> list[WatchEvent]:
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[WatchEvent] = asyncio.Queue()
        with inside(a):
            watcher = LinkWatcher(["a0"])
        with watcher:

            def on_readable() -> None:
                for event in watcher.read():
                    inbox.put_nowait(event)

            loop.add_reader(watcher, on_readable)
            try:
                netlab.ip(a, "link set a0 down")
                return [await asyncio.wait_for(inbox.get(), 3.0)]
            finally:
                loop.remove_reader(watcher)

    assert asyncio.run(body()) == [LinkEvent("a0", False)]


def test_overflow_resyncs(lab: tuple[Lab, str, str], tmp_path: Path) -> None:
    """ENOBUFS means lost events: expect an AddressEvent and the link state from a dump."""
    netlab, a, _ = lab
    with inside(a):
        watcher = LinkWatcher(["a0"])
    with watcher:
        watcher._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256)  # the minimum
        netlab.ip(a, "link set a0 down")
        batch = tmp_path / "batch"
        batch.write_text("".join(f"addr add 10.1.0.{i}/32 dev a0\n" for i in range(1, 200)))
        netlab.ip(a, f"-batch {batch}")
        events = collect(watcher, LinkEvent("a0", False))
        # Without the overflow the link edge would come first (it happened first); after it,
        # the ENOBUFS AddressEvent leads and the edge arrives from the resync dump.
        assert events[0] == AddressEvent("a0")
        assert watcher.is_up("a0") is False
