"""A master cut off on both networks meets, at the heal, the peer that took over from it
(docs/reliability.md, finding 7: campaign seed 100, fault 5 lost 220 acknowledged records).
The node that took over while its DRBD peer was cut off holds the role for its copy
(drbd_guard.took_over_alone, Machine.hold_for_data): it advertises priority 254 until the
copies have met and resynced, so the cut-off master, whatever its priority, steps down by
VRRP's own rule instead of taking the clients back onto its copy.

Real: drbd_guard, the VRRP Machine, AloneStore on a real file, Chains. Fakes: `put` (the
inbox) and the applier (effects recorded), a SimpleNamespace instance as in
test_stale_copy.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from test_drbd_step import res
from test_fencing_rule import FakeLog
from test_machine import PEER, adv, backup, machine, master, transitions

from drbdha.alone import AloneStore
from drbdha.chain.runner import Runner
from drbdha.clock import MonotonicClock
from drbdha.config import StorageConfig
from drbdha.daemon.storage import Chains, OutdateSelf
from drbdha.daemon.storage_state import StorageState
from drbdha.latches import LatchStore
from drbdha.metrics import Metrics
from drbdha.resources.drbd import DrbdChanged
from drbdha.resources.drbd_guard import took_over_alone
from drbdha.vrrp.events import SendAdvert, State, Transition
from drbdha.vrrp.machine import HOLD_PRIORITY

CUT = {"connection": "Connecting", "peer_role": "Unknown", "peer_disk": "DUnknown"}
SECONDARY = res()
SECONDARY_CUT = res(**CUT)
PRIMARY = res(role="Primary")
PRIMARY_CUT = res(role="Primary", **CUT)
SYNC_SOURCE = res(role="Primary", peer_disk="Inconsistent")
RESYNCED = res(role="Primary")


@pytest.mark.parametrize(
    ("before", "old", "new", "expected"),
    [
        (False, SECONDARY_CUT, PRIMARY_CUT, True),  # promoted with the peer cut off
        (False, PRIMARY, PRIMARY_CUT, False),  # the master that lost its link: no takeover
        (False, SECONDARY, PRIMARY, False),  # a takeover with the peer connected
        (True, PRIMARY_CUT, PRIMARY_CUT, True),  # serving on
        (True, PRIMARY_CUT, SYNC_SOURCE, True),  # met again, the peer still behind
        (True, SYNC_SOURCE, RESYNCED, False),  # equal copies: nothing to hold
        (True, PRIMARY_CUT, SECONDARY_CUT, False),  # stepped down: it serves no more
        (True, None, PRIMARY_CUT, True),  # a restarted daemon: the store remembers
        (False, None, PRIMARY_CUT, False),  # ... and does not invent it
        (True, PRIMARY_CUT, None, True),  # no facts: nothing learnt
    ],
    ids=[
        "promoted-cut",
        "link-lost",
        "connected",
        "serving",
        "syncing",
        "resynced",
        "demoted",
        "restart-held",
        "restart-not",
        "no-facts",
    ],
)
def test_took_over_alone(before: bool, old: Any, new: Any, expected: bool) -> None:
    assert took_over_alone(before, old, new) is expected


# ---- the VRRP machine ------------------------------------------------------------------------


def test_a_holding_master_advertises_254_at_once() -> None:
    m, at = master(priority=100)
    assert m.hold_for_data(True, at + 0.1) == [SendAdvert(HOLD_PRIORITY)]
    assert m.effective_priority == HOLD_PRIORITY
    assert m.hold_for_data(True, at + 0.2) == []  # no change, no advert
    assert m.hold_for_data(False, at + 0.3) == [SendAdvert(100)]
    assert m.effective_priority == 100


def test_the_hold_counts_only_while_master() -> None:
    m = backup(priority=100)
    assert m.hold_for_data(True, 0.1) == []
    assert m.effective_priority == 100  # a backup does not preempt by it


def test_the_address_owner_keeps_255() -> None:
    m = machine(priority=255)
    m.start(0.0)
    assert m.state is State.MASTER
    m.hold_for_data(True, 0.1)
    assert m.effective_priority == 255


def test_at_the_heal_the_cut_off_master_steps_down_and_the_holder_stays() -> None:
    # node1 (150) was cut off and stayed master; node2 (100) took over alone and holds.
    cut_off, at = master(priority=150)
    holder, _ = master(priority=100)
    holder.hold_for_data(True, at)
    # Both hear each other again. The holder hears a lower priority (150 < 254): it stays
    # and answers at once; the cut-off master hears 254 and steps down.
    assert transitions(holder.receive(adv(150), PEER, at + 1)) == []
    assert holder.state is State.MASTER
    effects = cut_off.receive(adv(HOLD_PRIORITY), PEER, at + 1)
    assert transitions(effects) == [Transition(State.MASTER, State.BACKUP, "higher_priority")]
    # ...and does not preempt it back while it holds.
    for k in range(2, 12):
        cut_off.receive(adv(HOLD_PRIORITY), PEER, at + k)
    assert cut_off.state is State.BACKUP


# ---- kept across restarts --------------------------------------------------------------------


def test_the_store_keeps_both_sets_and_reads_the_older_file(tmp_path: Path) -> None:
    path = tmp_path / "wrote-alone.json"
    path.write_text(json.dumps({"resources": ["r0"]}))  # written before took_over existed
    store = AloneStore(path)
    store.load()
    assert (store.held, store.took_over, store.error) == ({"r0"}, set(), None)
    store.set_took_over("r0", True)
    again = AloneStore(path)
    again.load()
    assert (again.held, again.took_over) == ({"r0"}, {"r0"})
    again.set("r0", False)
    again.set_took_over("r0", False)
    assert json.loads(path.read_text()) == {"resources": [], "took_over": []}


def test_an_unreadable_store_assumes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "wrote-alone.json"
    path.write_text('{"resources": [], "took_over": 3}')
    store = AloneStore(path)
    store.load()
    assert store.error is not None
    assert (store.held, store.took_over) == (set(), set())


# ---- the daemon's storage room ---------------------------------------------------------------


def chains(tmp_path: Path, *, as_master: bool = True) -> Any:
    applied: list[Any] = []
    put: list[Any] = []
    log = FakeLog()
    alone = AloneStore(tmp_path / "wrote-alone.json")
    alone.load()
    room = Chains(
        lambda _inst, effects, _now: applied.extend(effects),
        put.append,
        LatchStore(tmp_path / "latches.json"),
        Metrics(),
        log,
        MonotonicClock(),
        alone=alone,
    )
    m = master(priority=100)[0] if as_master else backup(priority=150)
    inst = SimpleNamespace(
        name="lab",
        storage=StorageConfig(name="nfs", drbd_resource="r0"),
        machine=m,
        vip_up=True,
        runner=Runner("lab", [], lambda _report: None, MonotonicClock()),
    )
    room.states["lab"] = StorageState(trusted_masters=frozenset({PEER}))
    room.by_resource["r0"] = inst
    return SimpleNamespace(room=room, inst=inst, applied=applied, put=put, log=log, alone=alone)


def test_a_takeover_with_the_peer_cut_off_holds_until_the_copies_resync(tmp_path: Path) -> None:
    t = chains(tmp_path)
    t.room.on_drbd(DrbdChanged("r0", SECONDARY_CUT, PRIMARY_CUT), 10.0)
    assert t.inst.machine.holding
    assert SendAdvert(HOLD_PRIORITY) in t.applied
    assert "drbd.took_over_alone" in [e for _, e, _ in t.log.events]
    on_disk = AloneStore(tmp_path / "wrote-alone.json")
    on_disk.load()
    assert on_disk.took_over == {"r0"}
    t.room.on_drbd(DrbdChanged("r0", PRIMARY_CUT, SYNC_SOURCE), 20.0)
    assert t.inst.machine.holding  # the peer is not caught up yet
    t.room.on_drbd(DrbdChanged("r0", SYNC_SOURCE, RESYNCED), 30.0)
    assert not t.inst.machine.holding
    assert "drbd.hold_released" in [e for _, e, _ in t.log.events]
    on_disk.load()
    assert on_disk.took_over == set()


def test_the_master_that_lost_its_link_does_not_hold(tmp_path: Path) -> None:
    t = chains(tmp_path)
    t.room.on_drbd(DrbdChanged("r0", PRIMARY, PRIMARY_CUT), 10.0)
    assert not t.inst.machine.holding
    assert t.alone.took_over == set()


def test_a_restarted_daemon_holds_on_from_the_store(tmp_path: Path) -> None:
    first = chains(tmp_path)
    first.room.on_drbd(DrbdChanged("r0", SECONDARY_CUT, PRIMARY_CUT), 10.0)
    # drbdha restarts while the peer is still cut off: its first facts have no `old`.
    second = chains(tmp_path)
    assert second.alone.took_over == {"r0"}
    state = second.room.states["lab"]
    state.took_over_alone = "r0" in second.alone.took_over  # Chains.build's reading
    second.inst.machine.hold_for_data(state.took_over_alone, 11.0)
    second.room.on_drbd(DrbdChanged("r0", None, PRIMARY_CUT), 11.0)
    assert second.inst.machine.holding


# ---- the master that stepped down for a holder ------------------------------------------------


def hear(t: Any, priority: int, now: float) -> None:
    t.inst.machine.receive(adv(priority), PEER, now)
    t.room.heard(t.inst, now)


def test_a_secondary_cut_off_that_hears_a_holder_outdates_its_copy_once(tmp_path: Path) -> None:
    # Stepped down at the heal, demoted, the replication link still gone: should the holder
    # die now, its silence must not get our older copy promoted.
    t = chains(tmp_path, as_master=False)
    t.room.states["lab"].drbd = SECONDARY_CUT
    hear(t, HOLD_PRIORITY, 1.0)
    hear(t, HOLD_PRIORITY, 1.1)
    assert [(e.resource, e.drop_link) for e in t.put if isinstance(e, OutdateSelf)] == [
        ("r0", False)
    ]
    (fields,) = [f for _, e, f in t.log.events if e == "drbd.outdating_self"]
    assert fields["reason"] == "peer_took_over_alone"


@pytest.mark.parametrize(
    ("priority", "facts"),
    [(100, SECONDARY_CUT), (HOLD_PRIORITY, SECONDARY), (HOLD_PRIORITY, PRIMARY_CUT)],
    ids=["an-ordinary-master", "connected", "still-primary"],
)
def test_no_outdate_without_a_holder_and_a_lost_link(
    tmp_path: Path, priority: int, facts: Any
) -> None:
    t = chains(tmp_path, as_master=False)
    t.room.states["lab"].drbd = facts
    hear(t, priority, 1.0)
    assert not [e for e in t.put if isinstance(e, OutdateSelf)]
