"""Two nodes that heard each other on neither network were both Primary; at the heal the
service must stay with the copy the clients wrote to (docs/reliability.md: finding 7, the
master cut off on both networks, the clients on the node that took over, 220 records lost;
finding 8, the master's replication link and the backup's service link cut, the clients on
the master, 17 records lost). The node whose copy NFS clients reached while DRBD's peer was
away holds the role for it (drbd_guard.holds_for_clients, Machine.hold_for_data): it
advertises priority 254 until the copies have met and resynced, so the other, whatever its
priority, steps down by VRRP's own rule. The evidence is a client's data on a VIP
connection after the link was lost (daemon/reach.py, from the kernel's tcp_info).

Real: drbd_guard, the VRRP Machine, AloneStore on a real file, Chains, ReachWatch with
net/tickle.last_data over a real TCP connection on loopback. Fakes: `put` (the inbox) and
the applier (effects recorded), a SimpleNamespace instance as in test_stale_copy.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from ipaddress import ip_address
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
from drbdha.daemon.reach import ClientsHeard, ReachWatch
from drbdha.daemon.storage import Chains, OutdateSelf
from drbdha.daemon.storage_state import StorageState
from drbdha.latches import LatchStore
from drbdha.metrics import Metrics
from drbdha.net import tickle
from drbdha.resources.drbd import DrbdChanged
from drbdha.resources.drbd_guard import holds_for_clients
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
    ("before", "new", "reached", "expected"),
    [
        (False, PRIMARY_CUT, True, True),  # clients reached it with the peer cut off
        (False, PRIMARY_CUT, False, False),  # a takeover no client reached (finding 8)
        (False, PRIMARY, True, False),  # connected: the peer has every write
        (True, PRIMARY_CUT, False, True),  # serving on
        (True, SYNC_SOURCE, False, True),  # met again, the peer still behind
        (True, RESYNCED, False, False),  # equal copies: nothing to hold
        (True, SECONDARY_CUT, True, False),  # stepped down: it serves no more
        (True, None, False, True),  # no facts: nothing learnt
        (False, None, True, False),  # ... and nothing invented
    ],
    ids=[
        "reached-cut",
        "unreached-cut",
        "connected",
        "serving",
        "syncing",
        "resynced",
        "demoted",
        "no-facts",
        "no-facts-not-held",
    ],
)
def test_holds_for_clients(before: bool, new: Any, reached: bool, expected: bool) -> None:
    assert holds_for_clients(before, new, reached=reached) is expected


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
    assert (store.held, store.holding, store.error) == ({"r0"}, set(), None)
    store.set_holding("r0", True)
    again = AloneStore(path)
    again.load()
    assert (again.held, again.holding) == ({"r0"}, {"r0"})
    again.set("r0", False)
    again.set_holding("r0", False)
    assert json.loads(path.read_text()) == {"resources": [], "took_over": []}


def test_an_unreadable_store_assumes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "wrote-alone.json"
    path.write_text('{"resources": [], "took_over": 3}')
    store = AloneStore(path)
    store.load()
    assert store.error is not None
    assert (store.held, store.holding) == (set(), set())


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
        cfg=SimpleNamespace(virtual_ipaddress=[SimpleNamespace(ip=ip_address("192.0.2.100"))]),
        vip_up=True,
        runner=Runner("lab", [], lambda _report: None, MonotonicClock()),
    )
    room.states["lab"] = StorageState(trusted_masters=frozenset({PEER}))
    room.by_resource["r0"] = inst
    return SimpleNamespace(room=room, inst=inst, applied=applied, put=put, log=log, alone=alone)


def heard(t: Any, at: float, now: float) -> None:
    t.room.clients_heard(ClientsHeard("r0", at), now)


def test_clients_reached_after_the_link_was_lost_hold_until_the_copies_resync(
    tmp_path: Path,
) -> None:
    t = chains(tmp_path)
    t.room.on_drbd(DrbdChanged("r0", SECONDARY_CUT, PRIMARY_CUT), 10.0)
    assert not t.inst.machine.holding  # promoted: no client has reached it yet
    assert t.room.unheld() == [("r0", ["192.0.2.100"])]
    heard(t, 12.0, 12.5)
    assert t.inst.machine.holding
    assert t.room.unheld() == []  # nothing more to look for
    assert SendAdvert(HOLD_PRIORITY) in t.applied
    assert "drbd.holding_for_clients" in [e for _, e, _ in t.log.events]
    on_disk = AloneStore(tmp_path / "wrote-alone.json")
    on_disk.load()
    assert on_disk.holding == {"r0"}
    t.room.on_drbd(DrbdChanged("r0", PRIMARY_CUT, SYNC_SOURCE), 20.0)
    assert t.inst.machine.holding  # the peer is not caught up yet
    t.room.on_drbd(DrbdChanged("r0", SYNC_SOURCE, RESYNCED), 30.0)
    assert not t.inst.machine.holding
    assert "drbd.hold_released" in [e for _, e, _ in t.log.events]
    on_disk.load()
    assert on_disk.holding == set()


def test_the_master_that_lost_its_link_and_kept_its_clients_holds(tmp_path: Path) -> None:
    # Finding 8: only its replication link was cut; the clients still write to it.
    t = chains(tmp_path)
    t.room.on_drbd(DrbdChanged("r0", PRIMARY, PRIMARY_CUT), 10.0)
    assert not t.inst.machine.holding
    heard(t, 11.0, 11.2)
    assert t.inst.machine.holding
    assert t.alone.holding == {"r0"}


@pytest.mark.parametrize(
    ("at", "as_master", "facts"),
    [
        (9.9, True, PRIMARY_CUT),  # data from before the link was lost: the cut-off master
        (10.0, True, PRIMARY_CUT),  # ... or at the same moment
        (12.0, False, PRIMARY_CUT),  # stepped down since the look (a heal brought them)
        (12.0, True, PRIMARY),  # connected again
        (12.0, True, SECONDARY_CUT),  # not Primary
    ],
    ids=["before-the-loss", "at-the-loss", "backup", "connected", "secondary"],
)
def test_no_hold_without_evidence_from_after_the_loss(
    tmp_path: Path, at: float, as_master: bool, facts: Any
) -> None:
    t = chains(tmp_path, as_master=as_master)
    t.room.on_drbd(DrbdChanged("r0", PRIMARY, PRIMARY_CUT), 10.0)
    if facts is not PRIMARY_CUT:
        t.room.on_drbd(DrbdChanged("r0", PRIMARY_CUT, facts), 11.0)
    heard(t, at, 12.5)
    assert not t.room.states["lab"].holding
    assert t.alone.holding == set()


def test_evidence_counts_for_one_term_as_primary(tmp_path: Path) -> None:
    # Demoted and promoted again with the peer still away: the clients heard in the
    # first term are not evidence for the second (another node may have served between).
    t = chains(tmp_path)
    t.room.on_drbd(DrbdChanged("r0", PRIMARY, PRIMARY_CUT), 10.0)
    heard(t, 11.0, 11.5)
    t.room.on_drbd(DrbdChanged("r0", PRIMARY_CUT, SECONDARY_CUT), 12.0)
    assert not t.room.states["lab"].holding
    t.room.on_drbd(DrbdChanged("r0", SECONDARY_CUT, PRIMARY_CUT), 13.0)
    assert not t.room.states["lab"].holding
    assert not t.room.states["lab"].clients_reached


def test_a_master_looks_at_its_clients_before_it_hears_an_advert(tmp_path: Path) -> None:
    # A heal: the first advert from the other node decides who steps down, and a client
    # that came to us since the watch last looked must count (finding 10).
    t = chains(tmp_path)
    looks: list[Any] = []

    def last_data(vips: Any, _ports: Any) -> float:
        looks.append(list(vips))
        return 0.1

    t.room.last_data = last_data
    t.room.on_drbd(DrbdChanged("r0", SECONDARY_CUT, PRIMARY_CUT), 10.0)
    asyncio.run(t.room.last_look(t.inst, 12.0))
    assert looks == [["192.0.2.100"]]
    assert t.inst.machine.holding
    asyncio.run(t.room.last_look(t.inst, 12.5))  # held: nothing more to look for
    assert len(looks) == 1


def test_the_last_look_runs_the_real_socket_inside_the_daemons_event_loop(
    tmp_path: Path,
) -> None:
    # pyroute2's DiagSocket starts an event loop of its own: called in ours it raised
    # RuntimeError and took the daemon down at the first advert of a heal (the lab).
    t = chains(tmp_path)
    assert t.room.last_data is tickle.last_data
    t.room.on_drbd(DrbdChanged("r0", PRIMARY, PRIMARY_CUT), 10.0)
    asyncio.run(t.room.last_look(t.inst, 12.0))  # no client on 192.0.2.100: no hold
    assert not t.inst.machine.holding
    assert "drbd.clients_look_failed" not in [e for _, e, _ in t.log.events]


@pytest.mark.parametrize("facts", [PRIMARY, SECONDARY_CUT], ids=["connected", "secondary"])
def test_no_last_look_outside_the_partition(tmp_path: Path, facts: Any) -> None:
    t = chains(tmp_path)
    t.room.last_data = lambda _v, _p: pytest.fail("looked")  # type: ignore[assignment]
    t.room.on_drbd(DrbdChanged("r0", PRIMARY, facts), 10.0)
    asyncio.run(t.room.last_look(t.inst, 12.0))
    assert not t.inst.machine.holding


def test_a_failed_last_look_is_logged_and_changes_nothing(tmp_path: Path) -> None:
    t = chains(tmp_path)

    def broken(_v: Any, _p: Any) -> float:
        raise OSError("netlink")

    t.room.last_data = broken
    t.room.on_drbd(DrbdChanged("r0", PRIMARY, PRIMARY_CUT), 10.0)
    asyncio.run(t.room.last_look(t.inst, 12.0))
    assert "drbd.clients_look_failed" in [e for _, e, _ in t.log.events]
    assert not t.inst.machine.holding


def test_a_restarted_daemon_holds_on_from_the_store(tmp_path: Path) -> None:
    first = chains(tmp_path)
    first.room.on_drbd(DrbdChanged("r0", SECONDARY_CUT, PRIMARY_CUT), 10.0)
    heard(first, 11.0, 11.5)
    # drbdha restarts while the peer is still cut off: its first facts have no `old`.
    second = chains(tmp_path)
    assert second.alone.holding == {"r0"}
    state = second.room.states["lab"]
    state.holding = "r0" in second.alone.holding  # Chains.build's reading
    second.inst.machine.hold_for_data(state.holding, 11.0)
    second.room.on_drbd(DrbdChanged("r0", None, PRIMARY_CUT), 11.0)
    assert second.inst.machine.holding


# ---- the look at the clients' connections (reach.py, tickle.last_data) -------------------------


def test_last_data_is_the_age_of_the_latest_segment_a_client_sent() -> None:
    with socket.create_server(("127.0.0.1", 0)) as srv:
        port = srv.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            served, _ = srv.accept()
            with served:
                client.sendall(b"x")
                served.recv(1)
                time.sleep(0.3)
                idle = tickle.last_data(["127.0.0.1"], [port])
                client.sendall(b"y")
                served.recv(1)
                fresh = tickle.last_data(["127.0.0.1"], [port])
                other_port = tickle.last_data(["127.0.0.1"], [port + 1 if port < 65535 else 1])
                other_vip = tickle.last_data(["127.0.0.2"], [port])
    assert idle is not None
    assert idle >= 0.29
    assert fresh is not None
    assert fresh < idle
    assert (other_port, other_vip) == (None, None)


def test_the_watch_reports_when_a_client_last_sent_data() -> None:
    asyncio.run(watch_twice())


async def watch_twice() -> None:
    put: list[ClientsHeard] = []
    clock = SimpleNamespace(monotonic=lambda: 100.0)  # a FAKE clock, stopped at 100 s
    wanted = [("r0", ["192.0.2.100"])]
    looks: list[tuple[list[str], list[int]]] = []
    looked_twice = asyncio.Event()

    def last_data(vips: Any, ports: Any) -> float | None:
        looks.append((list(vips), list(ports)))
        if len(looks) == 2:
            loop.call_soon_threadsafe(looked_twice.set)
        return 2.5 if len(looks) == 1 else None

    loop = asyncio.get_running_loop()
    watch = ReachWatch(lambda: wanted, put.append, clock, last_data, poll=0.01)
    task = asyncio.create_task(watch.run())
    await asyncio.wait_for(looked_twice.wait(), 5.0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert put == [ClientsHeard("r0", 97.5)]
    assert looks[0][0] == ["192.0.2.100"]
    assert 2049 in looks[0][1]


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
    assert fields["reason"] == "peer_holds_for_clients"


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
