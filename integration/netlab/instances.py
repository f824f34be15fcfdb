"""One VRRP instance as both daemons are given it, and what a node of either kind offers."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import ip_interface
from typing import Any, Protocol

from .hosts import VIP4, Host


@dataclass
class Inst:
    """One VRRP instance, written out as drbdha TOML or keepalived.conf."""

    name: str = "vi1"
    vrid: int = 51
    priority: int = 100
    version: int = 3
    advert_interval: float = 0.1
    vips: list[str] = field(default_factory=lambda: [f"{VIP4}/24"])
    preempt: bool = True
    preempt_delay: float = 0.0
    unicast_peers: list[str] = field(default_factory=list)
    checksum_mode: str = "pseudo"
    extra: dict[str, Any] = field(default_factory=dict)  # more drbdha keys / keepalived lines

    @property
    def vip_addresses(self) -> list[str]:
        return [str(ip_interface(v).ip) for v in self.vips]

    def drbdha_keys(self, ifname: str) -> dict[str, Any]:
        """This instance's [[vrrp_instance]] table."""
        return {
            "name": self.name,
            "interface": ifname,
            "vrid": self.vrid,
            "priority": self.priority,
            "version": self.version,
            "advert_interval": self.advert_interval,
            "virtual_ipaddress": self.vips,
            "preempt": self.preempt,
            "preempt_delay": self.preempt_delay,
            "unicast_peers": self.unicast_peers,
            "checksum_mode": self.checksum_mode,
            **self.extra,
        }


class Node(Protocol):
    name: str
    host: Host

    @property
    def running(self) -> bool: ...
    def state(self, instance: str = "vi1") -> str | None: ...
