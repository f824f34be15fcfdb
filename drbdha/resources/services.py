"""The services step: the admin's systemd units that use the filesystem (an HTTP server
reading the same data, a backup agent), started once it is mounted and stopped before it
is unmounted, so they never run on the backup's empty mountpoint and never hold the
filesystem when it must go.

`systemctl start` waits for each unit's own notion of started; a unit that fails to start
fails the takeover (the chain rolls back), a unit that fails to stop fails the release
(never swallowed: on_demote_failure applies), as the rest of the chain."""

from __future__ import annotations

from collections.abc import Sequence

from drbdha.chain.step import StepFailed
from drbdha.resources import proc


class ServicesStep:
    name = "services"

    def __init__(self, units: Sequence[str], timeout: float, run: proc.Run = proc.run) -> None:
        self.units = tuple(units)
        self.start_timeout = self.stop_timeout = timeout
        self.run = run

    async def held(self) -> bool:
        # is-active exits 0 if any of the units is active.
        return (await self.run(["systemctl", "is-active", "--quiet", *self.units])).ok

    async def start(self) -> None:
        r = await self.run(["systemctl", "start", *self.units])
        if not r.ok:
            raise StepFailed("service_start_failed", r.summary())

    async def stop(self) -> None:
        r = await self.run(["systemctl", "stop", *self.units])
        if not r.ok:
            raise StepFailed("service_stop_failed", r.summary())
