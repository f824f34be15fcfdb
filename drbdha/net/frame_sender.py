"""Send prebuilt Ethernet frames (GARP, unsolicited NA) on one interface via AF_PACKET.

The socket is bound with protocol 0, so the kernel registers no receive hook for it and it
never queues a single incoming frame (keepalived gets the same by attaching a zero-length BPF
filter to an ETH_P_ARP socket). Only the integration tests exercise this module.
"""

from __future__ import annotations

import socket

from drbdha.net import OwnsSocket, ifindex


class FrameSender(OwnsSocket):
    def __init__(self, ifname: str) -> None:
        self.ifname = ifname
        ifindex(ifname)  # a clear NetError for a missing interface before the bind's OSError
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            # struct sockaddr_ll { sll_family; be16 sll_protocol = 0 (receive nothing);
            #                      int sll_ifindex; ... }: Python takes (ifname, protocol).
            self._sock.bind((ifname, 0))
            self._sock.setblocking(False)
        except OSError:
            self._sock.close()
            raise

    @property
    def mac(self) -> bytes:
        """The interface's current hardware address (6 bytes for Ethernet).

        getsockname() on a bound AF_PACKET socket returns (ifname, protocol, pkttype, hatype,
        address), the address read from the device at call time, so a changed MAC shows.
        """
        address: bytes = self._sock.getsockname()[4]
        return address

    def send(self, frame: bytes) -> None:
        """Send one complete Ethernet frame. A full queue raises BlockingIOError/ENOBUFS."""
        self._sock.send(frame)
