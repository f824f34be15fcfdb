"""The TCP tickle between real kernels in namespaces: a client whose server vanished without a
word (the master powered off after acknowledging its last request) is reset within a round
trip of the new master's tickle, instead of waiting for its TCP keepalive.

    client 10.9.0.10 --- hub bridge --- old (VIP 10.9.0.100, listener on 2049)
                                    \\-- new (VIP added after the old one died)
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from netns import Lab, inside, mac_of

from drbdha.net import tickle

VIP = "10.9.0.100"
CLIENT = "10.9.0.10"
NFS = 2049


@pytest.fixture
def lab() -> Iterator[tuple[Lab, str, str, str]]:
    with Lab() as lab:
        hub, client, old, new = (lab.add_ns(t) for t in ("hub", "cl", "old", "new"))
        for ns, port in ((client, "p0"), (old, "p1"), (new, "p2")):
            lab.veth(ns, "eth0", hub, port)
        lab.bridge(hub, "br0", ["p0", "p1", "p2"])
        lab.ip(client, f"addr add {CLIENT}/24 dev eth0")
        lab.ip(old, f"addr add {VIP}/24 dev eth0")
        yield lab, client, old, new


def connect(client: str, old: str) -> tuple[socket.socket, socket.socket, socket.socket]:
    with inside(old):
        listener = socket.create_server((VIP, NFS))
    with inside(client):
        conn = socket.create_connection((VIP, NFS), timeout=5)
    accepted, _ = listener.accept()
    # A request and its reply: the client has nothing unacknowledged, like an NFS client
    # whose last WRITE the master answered.
    conn.sendall(b"request")
    assert accepted.recv(7) == b"request"
    accepted.sendall(b"reply")
    assert conn.recv(5) == b"reply"
    return listener, accepted, conn


def test_established_lists_the_clients_of_the_vip(lab: tuple[Lab, str, str, str]) -> None:
    _, client, old, _ = lab
    listener, accepted, conn = connect(client, old)
    try:
        with inside(old):
            found = tickle.established([VIP], [NFS])
            assert tickle.listening(NFS)
            assert not tickle.listening(NFS + 1)
        assert found == [tickle.Connection(VIP, NFS, CLIENT, conn.getsockname()[1])]
        with inside(old):
            assert tickle.established([VIP], [NFS + 1]) == []
            assert tickle.established(["10.9.0.101"], [NFS]) == []
    finally:
        for s in (conn, accepted, listener):
            s.close()


def test_a_tickle_resets_the_silent_client_at_once(lab: tuple[Lab, str, str, str]) -> None:
    nslab, client, old, new = lab
    listener, accepted, conn = connect(client, old)
    try:
        with inside(old):
            (record,) = tickle.established([VIP], [NFS])
        # The old master dies: no FIN, no RST ever reaches the client.
        nslab.ip(old, "link set eth0 down")
        accepted.close()
        listener.close()
        # The new master has the VIP (and a listener, as nfsd would); the client's neighbour
        # entry points at it (the GARP's job, tested elsewhere).
        nslab.ip(new, f"addr add {VIP}/24 dev eth0")
        with inside(new):
            listener = socket.create_server((VIP, NFS))
        new_mac = mac_of(new, "eth0").hex(":")
        nslab.ip(client, f"neigh replace {VIP} lladdr {new_mac} dev eth0 nud reachable")
        # Without the tickle the client hears nothing: it would wait for its keepalive.
        conn.settimeout(1.0)
        with pytest.raises(TimeoutError):
            conn.recv(1)
        with inside(new):
            assert tickle.send([record]) == tickle.REPEAT
        conn.settimeout(2.0)
        with pytest.raises(ConnectionResetError):
            conn.recv(1)
    finally:
        for s in (conn, accepted, listener):
            s.close()


def test_no_tickle_from_an_address_this_node_does_not_hold(
    lab: tuple[Lab, str, str, str],
) -> None:
    new = lab[3]
    record = tickle.Connection(VIP, NFS, CLIENT, 40000)
    with inside(new):  # no VIP here
        assert tickle.send([record]) == 0
