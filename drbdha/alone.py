"""The DRBD resources whose copy on this node holds writes the peer's lacks
(drbd_guard.wrote_alone), kept across restarts of drbdha and reboots in
state_dir/wrote-alone.json: the peer channel refuses to outdate such a copy
(fencing/server.py, wire.NEWER), and a restart must not forget it while the peer is still
behind. Written only when it changes (a takeover with the peer gone, a resync done)."""

from __future__ import annotations

import json
from pathlib import Path

from drbdha import durable


class AloneStore:
    def __init__(self, path: Path | None) -> None:
        """`path` None: kept in memory only (tests, a daemon without a state directory)."""
        self.path = path
        self.held: set[str] = set()
        self.error: str | None = None  # the last load or save that failed

    def load(self) -> None:
        if self.path is None:
            return
        try:
            raw = json.loads(self.path.read_text())
            self.held = {r for r in raw["resources"] if isinstance(r, str)}
        except FileNotFoundError:
            self.held = set()
        except (OSError, ValueError, KeyError, TypeError) as e:
            # Unreadable: nothing is assumed (refusing every outdate would stop fencing).
            self.error = f"{self.path}: {e}"
            self.held = set()

    def set(self, resource: str, alone: bool) -> None:
        before = set(self.held)
        if alone:
            self.held.add(resource)
        else:
            self.held.discard(resource)
        if self.held == before or self.path is None:
            return
        data = json.dumps({"resources": sorted(self.held)}).encode() + b"\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            durable.replace(self.path, data)
            self.error = None
        except OSError as e:  # held in memory all the same; the daemon logs it
            self.error = f"{self.path}: {e}"
