"""The observation rule in Chains (chains.py `_note_link`, `heard`, `outdate_self`): a DRBD
Secondary that loses its link to a Primary peer and then still hears that peer's VRRP
adverts outdates its own copy.

Real Chains with real LatchStore/Metrics/clock (unused by these paths); fakes: `put` and
`apply` collect what they are given, FakeLog collects log events, the instance is a
SimpleNamespace with just the fields these methods read (name, storage, machine.state,
machine.last_peer) and its StorageState in chains.states, the DRBD facts are
test_drbd_step.res() snapshots, and
drbd.outdate is monkeypatched with fakes that answer or raise.
"""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from test_drbd_step import res

from drbdha.clock import MonotonicClock
from drbdha.config import StorageConfig
from drbdha.daemon.storage import Chains, OutdateSelf
from drbdha.daemon.storage_state import StorageState
from drbdha.latches import LatchStore
from drbdha.metrics import Metrics
from drbdha.resources import drbd
from drbdha.resources.drbd_events import Resource
from drbdha.vrrp.events import State
from drbdha.vrrp.machine import Peer

PEER = IPv4Address("192.0.2.2")

CONNECTED_TO_PRIMARY = res(peer_role="Primary")
LOST = res(connection="NetworkFailure", peer_role="Unknown", peer_disk="DUnknown")
CONNECTING = res(connection="Connecting", peer_role="Unknown", peer_disk="DUnknown")


class FakeLog:
    def __init__(
        self, events: list[tuple[str, str, dict[str, Any]]] | None = None, **bound: Any
    ) -> None:
        self.events = [] if events is None else events
        self.bound = bound

    def bind(self, **fields: Any) -> FakeLog:
        """As structlog's: a logger adding `fields` to each event, into the same list."""
        return FakeLog(self.events, **self.bound, **fields)

    def __getattr__(self, level: str) -> Any:
        if level not in ("debug", "info", "warning", "error", "critical"):
            raise AttributeError(level)
        return lambda event, **fields: self.events.append((level, event, self.bound | fields))

    def names(self) -> list[str]:
        return [e for _, e, _ in self.events]


def make(tmp_path: Path) -> tuple[Chains, list[object], FakeLog]:
    put: list[object] = []
    applied: list[Any] = []
    log = FakeLog()
    chains = Chains(
        lambda *a: applied.append(a),
        put.append,
        LatchStore(tmp_path / "latches.json"),
        Metrics(),
        log,
        MonotonicClock(),
    )
    return chains, put, log


def instance(
    chains: Chains,
    state: State = State.BACKUP,
    seen_at: float | None = None,
    trusted: frozenset[Any] = frozenset({PEER}),
) -> Any:
    """A fake instance with just what these methods read (name, storage, machine.state,
    machine.last_peer), its storage state registered with `chains` as Chains.build does."""
    peer = None if seen_at is None else Peer(PEER, 200, seen_at)
    inst = SimpleNamespace(
        name="lab",
        storage=StorageConfig(name="nfs", drbd_resource="r0"),
        machine=SimpleNamespace(state=state, last_peer=peer),
    )
    chains.states[inst.name] = StorageState(
        trusted_masters=trusted,  # [peer].address, as the README's setup has it
        fencing={"mode": "unfenced"},  # as fencing/status.py reads it from drbdadm dump
    )
    return inst


def lose_link(chains: Chains, inst: Any, at: float = 10.0, new: Resource = LOST) -> None:
    chains._note_link(inst, CONNECTED_TO_PRIMARY, new, at)


# ---- noting the link loss ------------------------------------------------------------------


@pytest.mark.parametrize("new", [LOST, CONNECTING], ids=["NetworkFailure", "Connecting"])
def test_losing_the_link_to_a_primary_is_noted(tmp_path: Path, new: Resource) -> None:
    chains, put, log = make(tmp_path)
    inst = instance(chains)
    lose_link(chains, inst, 10.0, new)
    assert chains.state(inst).link_lost_at == 10.0
    assert log.names() == ["drbd.peer_link_lost"]
    assert put == []


def test_a_consistent_disk_counts_as_good_data(tmp_path: Path) -> None:
    chains, _, _ = make(tmp_path)
    inst = instance(chains)
    lose_link(chains, inst, 10.0, res(disk="Consistent", connection="Connecting"))
    assert chains.state(inst).link_lost_at == 10.0


def test_the_first_loss_time_is_kept(tmp_path: Path) -> None:
    chains, _, log = make(tmp_path)
    inst = instance(chains)
    lose_link(chains, inst, 10.0)
    chains._note_link(inst, LOST, CONNECTING, 11.0)
    assert chains.state(inst).link_lost_at == 10.0
    assert log.names() == ["drbd.peer_link_lost"]


@pytest.mark.parametrize(
    "old",
    [
        pytest.param(res(peer_role="Secondary"), id="peer-was-secondary"),
        pytest.param(None, id="no-old-facts"),
        pytest.param(
            res(peer_role="Primary", connection="Connecting"), id="primary-but-not-connected"
        ),
    ],
)
def test_no_primary_peer_lost_nothing_noted(tmp_path: Path, old: Resource | None) -> None:
    chains, _, log = make(tmp_path)
    inst = instance(chains)
    chains._note_link(inst, old, LOST, 10.0)
    assert chains.state(inst).link_lost_at is None
    assert log.events == []


@pytest.mark.parametrize(
    "new",
    [
        pytest.param(res(role="Primary", connection="Connecting"), id="now-primary"),
        pytest.param(res(disk="Outdated", connection="Connecting"), id="disk-outdated"),
        pytest.param(res(disk="Inconsistent", connection="Connecting"), id="disk-inconsistent"),
        pytest.param(res(peer_role="Primary"), id="connected-again"),
        pytest.param(None, id="facts-unknown"),
    ],
)
def test_the_note_is_reset(tmp_path: Path, new: Resource | None) -> None:
    chains, _, _ = make(tmp_path)
    inst = instance(chains, seen_at=20.0)
    lose_link(chains, inst, 10.0)
    assert chains.state(inst).link_lost_at == 10.0
    chains._note_link(inst, LOST, new, 15.0)
    assert chains.state(inst).link_lost_at is None
    chains.heard(inst, 20.0)  # an advert after the reset changes nothing
    assert chains.state(inst).link_lost_at is None


def test_losing_the_link_while_outdated_is_not_noted(tmp_path: Path) -> None:
    chains, _, _ = make(tmp_path)
    inst = instance(chains)
    lose_link(chains, inst, 10.0, res(disk="Outdated", connection="Connecting"))
    assert chains.state(inst).link_lost_at is None


# ---- hearing the primary ---------------------------------------------------------------


def test_an_advert_after_the_loss_outdates_this_copy_once(tmp_path: Path) -> None:
    chains, put, log = make(tmp_path)
    inst = instance(chains)
    lose_link(chains, inst, 10.0)
    inst.machine.last_peer = Peer(PEER, 200, 10.5)
    chains.heard(inst, 10.5)
    assert put == [OutdateSelf("lab", "r0")]
    assert chains.state(inst).link_lost_at is None
    level, event, fields = log.events[-1]
    assert (level, event) == ("warning", "drbd.outdating_self")
    assert fields["primary"] == str(PEER)
    assert fields["after_ms"] == 500.0
    assert fields["resource"] == "r0"
    chains.heard(inst, 11.5)
    inst.machine.last_peer = Peer(PEER, 200, 11.5)
    chains.heard(inst, 11.5)
    assert put == [OutdateSelf("lab", "r0")]


# ---- whose adverts count (issue 19 §3: a VRID collision or a forged advert) ----------------

OTHER = IPv4Address("192.0.2.66")


@pytest.mark.parametrize(
    ("peer", "trusted"),
    [
        (Peer(OTHER, 200, 10.5), frozenset({PEER})),  # not [peer].address / unicast_peers
        (Peer(PEER, 200, 10.5, vips_match=False), frozenset({PEER})),  # another VRID's VIPs
        (Peer(OTHER, 200, 10.5), frozenset()),  # not the master heard before the loss
    ],
    ids=["unknown-address", "other-address-list", "not-the-known-master"],
)
def test_an_advert_from_another_router_is_no_proof(
    tmp_path: Path, peer: Peer, trusted: frozenset[Any]
) -> None:
    chains, put, _ = make(tmp_path)
    inst = instance(chains, trusted=trusted)
    inst.machine.last_peer = Peer(PEER, 200, 9.0)
    chains.heard(inst, 9.0)  # the real master, while replication was healthy
    lose_link(chains, inst, 10.0)
    inst.machine.last_peer = peer
    chains.heard(inst, 10.5)
    assert put == []
    assert chains.state(inst).link_lost_at == 10.0  # still waiting for the master


def test_without_peer_or_unicast_the_master_heard_before_the_loss_counts(tmp_path: Path) -> None:
    chains, put, _ = make(tmp_path)
    inst = instance(chains, trusted=frozenset())
    inst.machine.last_peer = Peer(PEER, 200, 9.0)
    chains.heard(inst, 9.0)
    lose_link(chains, inst, 10.0)
    inst.machine.last_peer = Peer(PEER, 200, 10.5)
    chains.heard(inst, 10.5)
    assert put == [OutdateSelf("lab", "r0")]


@pytest.mark.parametrize("seen_at", [9.0, 10.0], ids=["before", "same-instant"])
def test_no_advert_since_the_loss_is_not_proof_of_life(tmp_path: Path, seen_at: float) -> None:
    chains, put, _ = make(tmp_path)
    inst = instance(chains, seen_at=seen_at)
    lose_link(chains, inst, 10.0)
    chains.heard(inst, 12.0)
    assert put == []
    assert chains.state(inst).link_lost_at == 10.0  # still waiting for an advert


def test_no_peer_heard_at_all(tmp_path: Path) -> None:
    chains, put, _ = make(tmp_path)
    inst = instance(chains, seen_at=None)
    lose_link(chains, inst, 10.0)
    chains.heard(inst, 12.0)
    assert put == []


def test_a_master_does_not_outdate_itself(tmp_path: Path) -> None:
    chains, put, _ = make(tmp_path)
    inst = instance(chains, state=State.MASTER)
    lose_link(chains, inst, 10.0)
    inst.machine.last_peer = Peer(PEER, 200, 11.0)
    chains.heard(inst, 11.0)
    assert put == []


def test_an_instance_without_storage_is_left_alone(tmp_path: Path) -> None:
    chains, put, _ = make(tmp_path)
    inst = instance(chains, seen_at=11.0)
    chains.state(inst).link_lost_at = 10.0
    inst.storage = None
    chains.heard(inst, 11.0)
    assert put == []


# ---- outdating ---------------------------------------------------------------------------


def run_outdate_self(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, outdate: Any, *, watcher: bool = True
) -> FakeLog:
    chains, _, log = make(tmp_path)
    if watcher:
        chains.watchers["r0"] = SimpleNamespace(facts=lambda: LOST)  # type: ignore[assignment]
    monkeypatch.setattr(drbd, "outdate", outdate)
    asyncio.run(chains.outdate_self(OutdateSelf("lab", "r0")))
    return log


@pytest.mark.parametrize(
    ("outcome", "level"),
    [
        ("outdated", "warning"),
        ("inconsistent", "warning"),
        ("primary", "error"),
        ("failed", "error"),
    ],
)
def test_outdate_self_logs_the_outcome(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, outcome: str, level: str
) -> None:
    seen: list[tuple[str, Any, dict[str, Any]]] = []

    async def fake_outdate(resource: str, facts: Any, *_args: Any, **kw: Any) -> drbd.Outdated:
        seen.append((resource, facts(), kw))
        return drbd.Outdated(outcome, "Outdated", f"fake {outcome}")

    log = run_outdate_self(tmp_path, monkeypatch, fake_outdate)
    assert seen == [("r0", LOST, {"drop_link": False})]  # drops no link unless asked to
    assert log.events == [
        (
            level,
            "drbd.outdated_self",
            {
                "instance": "lab",
                "resource": "r0",
                "outcome": outcome,
                "disk": "Outdated",
                "detail": f"fake {outcome}",
            },
        )
    ]


def test_outdate_self_never_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(*_args: Any, **_kw: Any) -> drbd.Outdated:
        raise RuntimeError("drbdadm exploded")

    log = run_outdate_self(tmp_path, monkeypatch, broken)
    ((level, event, fields),) = log.events
    assert (level, event, fields["outcome"]) == ("error", "drbd.outdated_self", "failed")
    assert "drbdadm exploded" in fields["detail"]


def test_outdate_self_without_a_watcher_is_logged_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unused(*_args: Any, **_kw: Any) -> drbd.Outdated:
        raise AssertionError("not reached")

    log = run_outdate_self(tmp_path, monkeypatch, unused, watcher=False)
    assert [(lvl, e, f["outcome"]) for lvl, e, f in log.events] == [
        ("error", "drbd.outdated_self", "failed")
    ]


def test_outdate_self_is_bounded_in_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def hangs(*_args: Any, **_kw: Any) -> drbd.Outdated:
        await asyncio.Event().wait()
        raise AssertionError("not reached")

    monkeypatch.setattr("drbdha.daemon.storage.OUTDATE_TIMEOUT", 0.01)
    log = run_outdate_self(tmp_path, monkeypatch, hangs)
    ((level, _, fields),) = log.events
    assert (level, fields["outcome"]) == ("error", "failed")
    assert "not done in" in fields["detail"]
