"""Latches: a failed disk or a split brain that keeps this node out of the election until an
operator clears it (`drbdha clear-latch`). Kept in a file so that a restart, a crash or a
reboot does not forget them: a latched disk that came back by itself after a reboot is still
one the operator has to look at.

The file is JSON, {instance: {kind: {"reason": str, "since": unix time}}}, written atomically
and durably (durable.replace).

What never happens, whatever the file or the disk does:
- A file that cannot be read, or is not exactly that shape (a list, a kind not in KINDS, a
  missing reason, a `since` that is not a finite number...), never reads as "no latches":
  load() sets `load_error` (Chains.build then latches every storage instance, the error in
  status) and raises nothing.
- A latch that cannot be saved is held in memory all the same (`save_error` says why).
  While the file is unreadable, set() does not overwrite it: the file still stands for the
  latches nobody could read, until the operator clears them.
- A clear that cannot be written changes nothing, neither the file nor what is held, and
  raises LatchError with the reason (the control command is refused with it).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drbdha import durable
from drbdha.clock import Clock, MonotonicClock
from drbdha.defaults import LATCH_KINDS
from drbdha.errors import LatchError

KINDS = LATCH_KINDS  # the names live where the command line finds them cheaply


@dataclass(frozen=True, slots=True)
class Latch:
    kind: str
    reason: str
    since: float  # unix time (survives restarts, unlike the monotonic clock)


class LatchStore:
    def __init__(self, path: Path, clock: Clock | None = None) -> None:
        self.path = path
        self._clock = clock or MonotonicClock()  # wall(): a latch's `since`
        self._data: dict[str, dict[str, Latch]] = {}
        self.load_error: str | None = None
        self.save_error: str | None = None

    def load(self) -> None:
        """Read the file, replacing what the store held; never raises. A missing file is no
        latches; anything else that is not exactly the documented shape sets load_error."""
        self._data = {}
        self.load_error = None
        try:
            raw = json.loads(self.path.read_bytes().decode())
        except FileNotFoundError:
            return
        except (OSError, ValueError, RecursionError) as e:
            # ValueError: not UTF-8 or not JSON; RecursionError: nested too deep to parse.
            self.load_error = f"{self.path}: {e}"
            return
        try:
            self._data = _parse(raw)
        except _Shape as e:
            self.load_error = f"{self.path}: {e}"

    def of(self, instance: str) -> dict[str, Latch]:
        return dict(self._data.get(instance, {}))

    def set(self, instance: str, kind: str, reason: str) -> Latch:
        """Held from now on, even if the file cannot be written (a full or failing /var/lib):
        then save_error says why, and only a restart would forget it."""
        latch = Latch(kind, reason, self._clock.wall())
        self._data.setdefault(instance, {})[kind] = latch
        if self.load_error is not None:
            self.save_error = f"{self.path}: not saved, the file is unreadable (kept as it is)"
            return latch
        try:
            self._save(self._data)
            self.save_error = None
        except OSError as e:
            self.save_error = f"{self.path}: {e}"
        return latch

    def clear(self, instance: str, kind: str) -> bool:
        """Clear one latch and save the rest; False if it was not set. With load_error, the
        operator clears what the unreadable file stood for: it is written afresh with what
        is held now. Raises LatchError if the file cannot be written: then nothing changed."""
        if self.load_error is None and kind not in self._data.get(instance, {}):
            return False
        data = {
            i: {k: v for k, v in kinds.items() if (i, k) != (instance, kind)}
            for i, kinds in self._data.items()
        }
        try:
            self._save(data)
        except OSError as e:
            # e.g. "[Errno 30] Read-only file system", without the temporary file's name.
            why = f"[Errno {e.errno}] {e.strerror}" if e.errno and e.strerror else str(e)
            raise LatchError(str(self.path), f"cannot write {self.path}: {why}") from e
        self._data = data
        self.load_error = self.save_error = None
        return True

    def _save(self, held: dict[str, dict[str, Latch]]) -> None:
        data = {
            inst: {k: {"reason": v.reason, "since": v.since} for k, v in kinds.items()}
            for inst, kinds in held.items()
            if kinds
        }
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        durable.replace(self.path, json.dumps(data, indent=1).encode())


class _Shape(ValueError):
    """The file is JSON, but not of the latch file's shape: says where."""


def _parse(raw: Any) -> dict[str, dict[str, Latch]]:
    """The latches of a decoded file; _Shape if anything in it is not as _save writes it.
    All or nothing: one bad entry beside good ones is an error, never a partial read."""
    if not isinstance(raw, dict):
        raise _Shape(f"not an object of instances but {_kind_of(raw)}")
    out: dict[str, dict[str, Latch]] = {}
    for inst, kinds in raw.items():
        if not isinstance(kinds, dict):
            raise _Shape(f"{inst!r}: not an object of latches but {_kind_of(kinds)}")
        for kind, entry in kinds.items():
            where = f"{inst!r}.{kind!r}"
            if kind not in KINDS:
                raise _Shape(f"{where}: unknown latch kind (known: {', '.join(KINDS)})")
            if not isinstance(entry, dict):
                raise _Shape(f"{where}: not an object but {_kind_of(entry)}")
            reason, since = entry.get("reason"), entry.get("since")
            if not isinstance(reason, str):
                raise _Shape(f"{where}.reason: not text but {_kind_of(reason)}")
            out.setdefault(inst, {})[kind] = Latch(kind, reason, _since(since, where))
    return out


def _since(v: Any, where: str) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        try:
            f = float(v)
        except OverflowError:
            f = math.inf
        if math.isfinite(f):
            return f
    raise _Shape(f"{where}.since: not a finite unix time but {_kind_of(v)}")


def _kind_of(v: Any) -> str:
    """What a JSON value is, for an error message (never the value: it may be huge)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "text"
    return "a list" if isinstance(v, list) else "an object"
