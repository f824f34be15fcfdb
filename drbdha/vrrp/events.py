"""What the state machine returns: effects for the daemon to carry out, in order."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class State(enum.StrEnum):
    INITIALIZE = "initialize"
    BACKUP = "backup"
    MASTER = "master"
    FAULT = "fault"


@dataclass(frozen=True, slots=True)
class Transition:
    old: State
    new: State
    reason: str


@dataclass(frozen=True, slots=True)
class SendAdvert:
    """Send one advertisement now with this priority (0 = resign, RFC 5798 §6.4.3)."""

    priority: int


@dataclass(frozen=True, slots=True)
class Activate:
    """Bring the chain up: storage, then the VIP as its last step (with its GARP burst)."""


@dataclass(frozen=True, slots=True)
class Deactivate:
    """Take the chain down in reverse: the VIP first, then the storage below it."""


@dataclass(frozen=True, slots=True)
class SendGarp:
    """Announce every virtual address: a burst of gratuitous ARPs / unsolicited NAs."""

    reason: str


@dataclass(frozen=True, slots=True)
class InvalidAdvert:
    """A well-formed advert that policy refused (`dropped`) or that only warrants a warning."""

    reason: str
    dropped: bool


Effect = Transition | SendAdvert | Activate | Deactivate | SendGarp | InvalidAdvert

# Reasons policy gives for refusing an advert; with packet.MALFORMED_REASONS these are the
# label values of the invalid-advert counter.
POLICY_REASONS = ("interval_mismatch", "unknown_peer", "addr_list")
