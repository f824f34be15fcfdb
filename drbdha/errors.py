"""The error hierarchy.

Anything a peer or an operator can cause carries a typed reason, so it can be counted and
reported without parsing message text.
"""

from __future__ import annotations


class DrbdhaError(Exception):
    """Base of every error drbdha raises on purpose."""


class ConfigError(DrbdhaError):
    """One or more configuration errors, each tied to a key path such as vrrp_instance[0].vrid."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{path}: {msg}" for path, msg in problems))


class MalformedPacket(DrbdhaError):
    """A received advertisement that fails a packet-level check.

    `reason` is one of packet.MALFORMED_REASONS and becomes a metric label.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class LatchError(DrbdhaError):
    """The latch file could not be written, so a latch was not cleared (latches.py).

    Nothing changed: the file and the latches held in memory are as they were. `reason`
    is one line for the operator, such as "cannot write /var/lib/drbdha/latches.json:
    [Errno 30] Read-only file system"; `path` is the latch file.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(reason)
