"""The VIP as the chain's last step: add every address (pyroute2 'replace', so a second
start is a no-op), then announce it with a GARP/NA burst. Stop removes them; a failed
removal is a failed stop. `held()` reads the interface, so a restart finds a VIP left up."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drbdha.chain.step import StepFailed
from drbdha.config import VrrpInstanceConfig
from drbdha.net import NetError
from drbdha.net.addresses import Addresses


class VipStep:
    name = "vip"

    def __init__(
        self,
        cfg: VrrpInstanceConfig,
        addresses: Addresses,
        announce: Callable[[str], None],
        log: Any,
        timeout: float = 10.0,
    ) -> None:
        self.cfg = cfg
        self.addresses = addresses
        self.announce = announce
        self.log = log
        self.start_timeout = self.stop_timeout = timeout

    async def start(self) -> None:
        failed = []
        for vip in self.cfg.virtual_ipaddress:
            try:
                await self.addresses.add(self.cfg.interface, vip)
            except (OSError, NetError) as e:
                failed.append(f"{vip}: {e}")
            else:
                self.log.info("vip.added", address=str(vip), interface=self.cfg.interface)
        if failed:
            raise StepFailed("vip_add_failed", "; ".join(failed))
        self.announce("takeover")

    async def stop(self) -> None:
        failed = []
        for vip in self.cfg.virtual_ipaddress:
            try:
                await self.addresses.remove(self.cfg.interface, vip)
            except NetError:
                # The interface itself is gone (deleted VLAN, bond, veth) and its addresses
                # with it: nothing is left to remove.
                continue
            except OSError as e:
                failed.append(f"{vip}: {e}")
            else:
                self.log.info("vip.removed", address=str(vip), interface=self.cfg.interface)
        if failed:
            raise StepFailed("vip_remove_failed", "; ".join(failed))

    async def held(self) -> bool:
        try:
            snap = await self.addresses.snapshot(self.cfg.interface, self.cfg.family)
        except NetError:
            return False
        return any(snap.has(v) for v in self.cfg.virtual_ipaddress)
