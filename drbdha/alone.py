"""What this node's copy of each DRBD resource holds that the peer's lacks, kept across
restarts of drbdha and reboots in state_dir/wrote-alone.json:

- `held`: the copy has writes the peer's lacks (drbd_guard.wrote_alone): the peer channel
  refuses to outdate it (fencing/server.py, wire.NEWER);
- `holding`: NFS clients reached it while it was Primary with its peer cut off, and it
  serves since (drbd_guard.holds_for_clients): VRRP holds the role for it
  (Machine.hold_for_data). Kept in the file under its first name, "took_over", so that a
  hold written by an older drbdha survives the upgrade.

A restart must not forget either while the peer is still behind. Written only when it
changes (writes alone, clients reached alone, a resync done)."""

from __future__ import annotations

import json
from collections.abc import MutableSet
from pathlib import Path

from drbdha import durable


class AloneStore:
    def __init__(self, path: Path | None) -> None:
        """`path` None: kept in memory only (tests, a daemon without a state directory)."""
        self.path = path
        self.held: set[str] = set()
        self.holding: set[str] = set()
        self.error: str | None = None  # the last load or save that failed

    def load(self) -> None:
        if self.path is None:
            return
        try:
            raw = json.loads(self.path.read_text())
            self.held = {r for r in raw["resources"] if isinstance(r, str)}
            self.holding = {r for r in raw.get("took_over", []) if isinstance(r, str)}
        except FileNotFoundError:
            self.held, self.holding = set(), set()
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            # Unreadable: nothing is assumed (refusing every outdate would stop fencing).
            self.error = f"{self.path}: {e}"
            self.held, self.holding = set(), set()

    def set(self, resource: str, alone: bool) -> None:
        self._change(self.held, resource, alone)

    def set_holding(self, resource: str, holding: bool) -> None:
        self._change(self.holding, resource, holding)

    def _change(self, names: MutableSet[str], resource: str, member: bool) -> None:
        if (resource in names) == member:
            return
        if member:
            names.add(resource)
        else:
            names.discard(resource)
        if self.path is None:
            return
        doc = {"resources": sorted(self.held), "took_over": sorted(self.holding)}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            durable.replace(self.path, json.dumps(doc).encode() + b"\n")
            self.error = None
        except OSError as e:  # held in memory all the same; the daemon logs it
            self.error = f"{self.path}: {e}"
