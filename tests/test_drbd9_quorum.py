"""DRBD 9 with quorum and a diskless tiebreaker (issue 23): what the daemon's storage room
does with a three-node resource's facts. A Primary that loses quorum resigns at once (the
VIP leaves; DRBD fails its writes, on-no-quorum), and takes part again when quorum is back;
a Secondary without quorum never takes over; every peer's connection is in the metrics
under drbd-reactor's names.

Real: drbd_guard, the VRRP Machine, Chains, Metrics (a registry of its own). Fakes: those of
test_holds_for_clients.chains (the inbox and the applier record what they are given)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from drbd_dumps import needs_drbdadm, write_conf
from drbd_facts import drbd84, peer, res, vol
from test_holds_for_clients import chains

from drbdha.chain.runner import Runner
from drbdha.clock import MonotonicClock
from drbdha.resources import drbd, proc
from drbdha.resources.drbd import DrbdChanged
from drbdha.resources.drbd_advice import fencing_summary, findings
from drbdha.resources.drbd_config import read_effective
from drbdha.vrrp.events import State, Transition

# node1's view: node2 (node-id 1) with a disk over the replication link, and the tiebreaker
# (node-id 2), diskless, over the service network.
NODE2, TIEBREAKER = 1, 2
HEALTHY = (peer(node=NODE2), peer(node=TIEBREAKER, peer_disk="Diskless", peer_client=True))
ISOLATED = (
    peer("Connecting", "Unknown", "DUnknown", node=NODE2),
    peer("Connecting", "Unknown", "DUnknown", node=TIEBREAKER),
)


def primary(*, quorum: bool, connections: tuple[Any, ...]) -> Any:
    return res(role="Primary", devices=(vol(quorum=quorum),), connections=connections)


def test_the_tiebreakers_connection_is_no_replication_link() -> None:
    cut = (peer("Connecting", "Unknown", "DUnknown", node=NODE2), HEALTHY[1])
    assert res(connections=HEALTHY).connected
    assert not res(connections=cut).connected  # the tiebreaker has no copy
    assert res(connections=HEALTHY[:1]).connected  # two nodes, as on 8.4


def sample(t: Any, family: str, **labels: str) -> float | None:
    value = t.room.metrics.registry.get_sample_value(family, labels)
    return None if value is None else float(value)


def test_a_primary_cut_off_from_both_peers_resigns_and_says_why(tmp_path: Path) -> None:
    t = chains(tmp_path)
    serving = primary(quorum=True, connections=HEALTHY)
    t.room.on_drbd(DrbdChanged("r0", None, serving), 1.0)
    assert t.inst.machine.state is State.MASTER
    t.room.on_drbd(DrbdChanged("r0", serving, primary(quorum=False, connections=ISOLATED)), 2.0)
    assert "no_quorum" in t.inst.machine.inhibitions
    assert t.inst.machine.state is not State.MASTER
    assert any(isinstance(e, Transition) and e.old is State.MASTER for e in t.applied)
    assert (
        "info",
        "takeover.inhibited",
        {"instance": "lab", "reason": "no_quorum"},
    ) in t.log.events
    dev = {"name": "r0", "volume": "0", "minor": "1"}
    assert sample(t, "drbd_device_quorum", **dev) == 0.0
    # It could not write: its copy has nothing the others lack (no wrote-alone mark, which
    # would make it refuse to be outdated), and it holds nothing for clients.
    st = t.room.states["lab"]
    assert (st.quorum_lost, st.wrote_alone, st.holding) == (True, False, False)
    assert "drbd.quorum_lost" in t.log.names()


def test_the_primary_without_quorum_releases_past_the_nfs_steps_io_errors(
    tmp_path: Path,
) -> None:
    """The lab's first run: `exportfs -r` failed on the filesystem's I/O errors, the
    release stopped there, and node1 stayed Primary with the filesystem mounted."""
    t = chains(tmp_path)
    names = ("drbd", "filesystem", "nfs_state", "nfsd", "exports", "vip")
    t.inst.runner = Runner("lab", [Named(n) for n in names], lambda _r: None, MonotonicClock())
    serving = primary(quorum=True, connections=HEALTHY)
    lost = primary(quorum=False, connections=ISOLATED)
    t.room.on_drbd(DrbdChanged("r0", None, serving), 1.0)
    t.room.on_drbd(DrbdChanged("r0", serving, lost), 2.0)
    given_up = t.inst.runner._abandoned
    assert given_up == {"nfs_state", "nfsd", "exports"}  # the unmount and demote must work
    demoted = res(devices=(vol(quorum=False),), connections=ISOLATED)
    t.room.on_drbd(DrbdChanged("r0", lost, demoted), 3.0)
    assert t.inst.runner._abandoned == frozenset()  # released: the next start is strict


class Named:
    """A step that is only its name (the runner is not run here)."""

    def __init__(self, name: str) -> None:
        self.name = name


def test_quorum_back_clears_the_inhibition(tmp_path: Path) -> None:
    t = chains(tmp_path)
    lost = primary(quorum=False, connections=ISOLATED)
    t.room.on_drbd(DrbdChanged("r0", None, lost), 1.0)
    assert "no_quorum" in t.inst.machine.inhibitions
    t.room.on_drbd(DrbdChanged("r0", lost, res(connections=HEALTHY)), 2.0)
    assert "no_quorum" not in t.inst.machine.inhibitions


def test_a_secondary_without_quorum_never_takes_over(tmp_path: Path) -> None:
    t = chains(tmp_path, as_master=False)
    alone = res(devices=(vol(quorum=False),), connections=ISOLATED)
    t.room.on_drbd(DrbdChanged("r0", None, alone), 1.0)
    assert "no_quorum" in t.inst.machine.inhibitions
    assert t.inst.machine.state is not State.MASTER


def test_every_peer_has_its_series_under_drbd_reactors_names(tmp_path: Path) -> None:
    t = chains(tmp_path, as_master=False)
    t.room.on_drbd(DrbdChanged("r0", None, res(connections=HEALTHY)), 1.0)
    for node_id in (NODE2, TIEBREAKER):
        labels = {"name": "r0", "conn_name": f"node{node_id + 1}", "peer_node_id": str(node_id)}
        assert sample(t, "drbd_connection_state", drbd_connection_state="Connected", **labels) == 1
    dev = {"name": "r0", "volume": "0", "minor": "1"}
    assert sample(t, "drbd_device_quorum", **dev) == 1.0
    assert sample(t, "drbd_device_client", **dev) == 0.0
    assert sample(t, "drbd_resource_maypromote", name="r0") == 1.0
    assert sample(t, "drbd_resource_promotionscore", name="r0") == 10101.0
    # The tiebreaker's connection goes: its series goes with the old state, not left at 1.
    t.room.on_drbd(DrbdChanged("r0", res(connections=HEALTHY), res(connections=HEALTHY[:1])), 2.0)
    gone = {"name": "r0", "conn_name": "node3", "peer_node_id": "2"}
    assert sample(t, "drbd_connection_state", drbd_connection_state="Connected", **gone) is None


def readme_three_nodes() -> str:
    """The README's three-node resource, as written there, for this host as node1."""
    text = (Path(__file__).parent.parent / "README.md").read_text()
    section = text.split("### Three nodes", 1)[1]
    block = section.split("```\n", 2)[1]
    return block.replace("node1", "@HOST@")


@needs_drbdadm
def test_the_readmes_three_node_resource_is_quorum_with_no_window_left(tmp_path: Path) -> None:
    # Quorum, no fence-peer handler, the README's timers and drbdha's default heartbeat
    # (0.1 s): the Secondary is outdated within 0.7 s of a replication cut, before the
    # Primary's DRBD writes alone (timeout 0.9 s).
    opts = read_effective("r0", config_file=write_conf(tmp_path, readme_three_nodes()))
    found = findings(opts, master_down_interval=0.4, advert_interval=0.1, heartbeat=0.1)
    assert [f.level for f in found if f.level != "info"] == [], found
    summary = fencing_summary(opts, 0.1, None, 0.1)
    assert summary["mode"] == "quorum", summary
    assert "no acknowledged write is at risk" in (summary["note"] or "")


def test_an_outdate_drops_the_data_link_only_and_keeps_the_tiebreakers() -> None:
    # `drbdadm disconnect --force r0` would drop the tiebreaker's connection too, and this
    # node's quorum with it; on 8.4 (one connection) the resource is the link.
    assert drbd.data_link("r0", res(connections=HEALTHY)) == "r0:node2"
    assert drbd.data_link("r0", drbd84()) == "r0"
    assert drbd.data_link("r0", None) == "r0"


def test_the_outdate_and_the_reconnect_name_that_link() -> None:
    asyncio.run(outdate_and_reconnect())


async def outdate_and_reconnect() -> None:
    ran: list[list[str]] = []

    async def run(cmd: Sequence[str]) -> proc.Result:
        # A fake drbdadm: every command succeeds; dstate answers Outdated.
        ran.append(list(cmd))
        out = "Outdated\n" if cmd[1] == "dstate" else ""
        return proc.Result(tuple(cmd), 0, out, "")

    done = await drbd.outdate("r0", lambda: res(connections=HEALTHY), run)
    assert (done.outcome, done.reconnect, done.link) == ("outdated", True, "r0:node2")
    assert ran[0] == ["drbdadm", "disconnect", "--force", "r0:node2"]
    assert ran[1] == ["drbdsetup", "outdate", "1"]  # vol 0 is minor 1 in drbd_facts
    await drbd.reconnect(done.link, run)
    assert ran[-1] == ["drbdadm", "connect", "r0:node2"]


def test_on_drbd_9_the_outdate_names_each_minor_to_drbdsetup() -> None:
    # drbd-utils 9.34's `drbdadm outdate r0` runs `drbdsetup outdate r0 0`, which drbdsetup
    # refuses, then drbdmeta on the attached disk (exit 20): in the lab it never outdated.
    two = res(connections=HEALTHY, devices=(vol(0), vol(1)))
    assert drbd.outdate_commands("r0", two) == [
        ["drbdsetup", "outdate", "1"],
        ["drbdsetup", "outdate", "2"],
    ]
    assert drbd.outdate_commands("r0", drbd84()) == [["drbdadm", "outdate", "r0"]]
    assert drbd.outdate_commands("r0", None) == [["drbdadm", "outdate", "r0"]]
