"""on_demote_failure = "reboot" or "poweroff": a node whose demote failed may still hold
the storage; by policy it takes itself out (resource-agents' and drbd-reactor's answer to a
failed stop), through systemd, or the kernel's sysrq when systemd does not act in time."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from drbdha.resources import proc

POLICY_TIMEOUT = 30.0  # seconds systemd gets to start a reboot/poweroff before sysrq
SYSRQ = {"reboot": "b", "poweroff": "o"}


class PowerAction:
    """Inbox event: reboot or power off this node (on_demote_failure)."""

    def __init__(self, action: str) -> None:
        self.action = action


async def power_action(action: str, log: Any) -> None:
    """Through systemd; if it does not get going in time, the kernel's sysrq. Logged first:
    after this line there may be no more."""
    log.critical("node.power_action", action=action, via="systemctl")
    try:
        async with asyncio.timeout(POLICY_TIMEOUT):
            r = await proc.run(["systemctl", action, "--no-block"])
        if r.ok:
            await asyncio.sleep(POLICY_TIMEOUT)  # systemd is taking us down
    except (TimeoutError, OSError) as e:
        log.critical("node.power_action_failed", action=action, error=str(e))
    log.critical("node.power_action", action=action, via="sysrq")
    try:
        _sysrq(SYSRQ[action])
    except OSError as e:
        # Nothing more we can do from here: the node stays in FAULT (never advertises).
        log.critical("node.power_action_failed", action=action, via="sysrq", error=str(e))


def _sysrq(key: str) -> None:
    Path("/proc/sysrq-trigger").write_text(key)
