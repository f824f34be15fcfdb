"""The tickle segment (RFC 9293 §3.1 layout, checksum over the pseudo header) and the
connection records the master writes. Sending it between real kernels:
integration/test_tickle_netns.py."""

from __future__ import annotations

import struct
from ipaddress import ip_address

import pytest

from drbdha.net.tickle import Connection, segment
from drbdha.vrrp.packet import internet_checksum


@pytest.mark.parametrize(("src", "dst"), [("10.0.0.1", "10.0.0.2"), ("2001:db8::1", "2001:db8::2")])
def test_segment_is_a_bare_ack_with_seq_and_ack_zero(src: str, dst: str) -> None:
    s, d = ip_address(src), ip_address(dst)
    seg = segment(s, 2049, d, 811)
    sport, dport, seq, ack, offset, flags, window, _, urgent = struct.unpack("!HHIIBBHHH", seg)
    assert (sport, dport, seq, ack, offset >> 4, flags, urgent) == (2049, 811, 0, 0, 5, 0x10, 0)
    assert window > 0
    if s.version == 4:
        pseudo = s.packed + d.packed + struct.pack("!BBH", 0, 6, 20)
    else:
        pseudo = s.packed + d.packed + struct.pack("!I3xB", 20, 6)
    assert internet_checksum(pseudo + seg) == 0  # a correct checksum sums to zero


def test_connection_records_round_trip_and_bad_ones_are_refused() -> None:
    c = Connection("10.0.0.100", 2049, "10.0.0.7", 948)
    assert Connection.from_json(c.as_json()) == c
    for bad in (
        ["10.0.0.100", 2049, "10.0.0.7"],
        ["x", 2049, "10.0.0.7", 1],
        ["10.0.0.100", 0, "10.0.0.7", 1],
        "ab",
    ):
        with pytest.raises(ValueError):
            Connection.from_json(bad)
