"""The loop's own inbox events. Every other event comes from the room that makes it (the
runner's reports, DRBD's changes, checks, control requests, ...): `InboxEvent` names them
all, so the loop's dispatch is typed by one union."""

from __future__ import annotations

from dataclasses import dataclass

from drbdha.chain.runner import ChainReconciled, ChainSettled, StepReport
from drbdha.control import ControlRequest
from drbdha.daemon.health import CheckResult
from drbdha.daemon.power import PowerAction
from drbdha.daemon.probe import PeerProbed, ProbePeer
from drbdha.daemon.reach import ClientsHeard
from drbdha.daemon.stale import HoldApart, PeerServes, ResumeToRelease
from drbdha.daemon.stall import Stalled
from drbdha.daemon.storage import OutdateSelf
from drbdha.fencing.keeper import KeepFencing
from drbdha.net.heartbeat import HeartbeatSocket
from drbdha.resources.drbd import DrbdChanged

SocketKey = tuple[str, int]  # (interface, address family)


@dataclass(frozen=True, slots=True)
class Readable:
    """A VRRP socket has datagrams queued. One object per socket, so no allocation per packet."""

    key: SocketKey


@dataclass(frozen=True, slots=True)
class HeartbeatReadable:
    sock: HeartbeatSocket


@dataclass(frozen=True, slots=True)
class NetlinkReadable:
    pass


@dataclass(frozen=True, slots=True)
class Stop:
    signal: str


@dataclass(frozen=True, slots=True)
class Reload:
    pass


InboxEvent = (
    Readable
    | HeartbeatReadable
    | NetlinkReadable
    | Stop
    | Reload
    | ControlRequest
    | StepReport
    | ChainSettled
    | ChainReconciled
    | DrbdChanged
    | CheckResult
    | OutdateSelf
    | PowerAction
    | KeepFencing
    | PeerServes
    | ResumeToRelease
    | HoldApart
    | Stalled
    | ProbePeer
    | PeerProbed
    | ClientsHeard
)
