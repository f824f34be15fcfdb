"""Where drbdha's files are unless the configuration says otherwise.

A module of its own, beside the configuration package rather than in it: the fence-peer
handler (`drbdha fence-peer`, in DRBD's helper path while a promotion waits) finds the
running daemon's control socket without importing the configuration's schema, validators
and loader, which a one-CPU emulated VM takes a few hundred milliseconds to load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

CONFIG: Final = Path("/etc/drbdha/drbdha.toml")
CONTROL_SOCKET: Final = Path("/run/drbdha/control.sock")
