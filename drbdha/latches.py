"""Latches: a failed disk or a split brain that keeps this node out of the election until an
operator clears it (`drbdha clear-latch`). Kept in a file so that a restart, a crash or a
reboot does not forget them: a latched disk that came back by itself after a reboot is still
one the operator has to look at.

The file is JSON, {instance: {kind: {"reason": str, "since": unix time}}}, written atomically
and durably (durable.replace).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drbdha import durable

KINDS = ("disk", "split-brain")


@dataclass(frozen=True, slots=True)
class Latch:
    kind: str
    reason: str
    since: float  # unix time (survives restarts, unlike the monotonic clock)


class LatchStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._data: dict[str, dict[str, Latch]] = {}
        self.load_error: str | None = None
        self.save_error: str | None = None

    def load(self) -> None:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            # Unreadable latches must not read as "no latches": keep what we can say.
            self.load_error = f"{self.path}: {e}"
            return
        for inst, kinds in _dict(raw).items():
            for kind, v in _dict(kinds).items():
                if kind in KINDS and isinstance(v, dict):
                    reason = str(v.get("reason", "unknown"))
                    self._data.setdefault(inst, {})[kind] = Latch(
                        kind, reason, float(v.get("since", 0))
                    )

    def of(self, instance: str) -> dict[str, Latch]:
        return dict(self._data.get(instance, {}))

    def set(self, instance: str, kind: str, reason: str) -> Latch:
        """Held from now on, even if the file cannot be written (a full or failing /var/lib):
        then save_error says why, and only a restart would forget it."""
        latch = Latch(kind, reason, time.time())
        self._data.setdefault(instance, {})[kind] = latch
        try:
            self._save()
            self.save_error = None
        except OSError as e:
            self.save_error = f"{self.path}: {e}"
        return latch

    def clear(self, instance: str, kind: str) -> bool:
        if self.load_error is not None:
            # The operator clears what an unreadable file stood for: start it afresh.
            self.load_error = None
            self._save()
            return True
        if kind not in self._data.get(instance, {}):
            return False
        del self._data[instance][kind]
        self._save()
        return True

    def _save(self) -> None:
        data = {
            inst: {k: {"reason": v.reason, "since": v.since} for k, v in kinds.items()}
            for inst, kinds in self._data.items()
            if kinds
        }
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        durable.replace(self.path, json.dumps(data, indent=1).encode())


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}
