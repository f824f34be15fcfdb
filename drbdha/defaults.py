"""Where drbdha's files are unless the configuration says otherwise, and the latch kinds
the command line offers.

A module of its own, beside the configuration package rather than in it: the fence-peer
handler (`drbdha fence-peer`, in DRBD's helper path while a promotion waits) finds the
running daemon's control socket without importing the configuration's schema, validators
and loader, or latches.py's dataclasses, which a one-CPU emulated VM takes a few hundred
milliseconds to load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

CONFIG: Final = Path("/etc/drbdha/drbdha.toml")
CONTROL_SOCKET: Final = Path("/run/drbdha/control.sock")
LATCH_KINDS: Final = ("disk", "split-brain")  # latches.py: what each one means
# Beside the control socket: when a daemon last ran, left by one that did not stop cleanly
# (clock.AliveMark, daemon/stall.py).
ALIVE_NAME: Final = "alive"
STALL_WINDOW: Final = 30.0  # seconds after a stall in which a silent peer is not dead
