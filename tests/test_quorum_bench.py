"""bench/quorum_bench.py's pure parts. Covered: the promoter snippet (rendered, each agent
parameter checked against the agent's metadata, the units drbd-reactor makes of it), r0 with
the promoter's options, what the benchmark reads from drbd-reactorctl and the journal, the
per-run figures, and the summary of canned runs. Also that the CLI refuses a DRBD 8.4 lab
without touching it. No lab, no VM."""

from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration" / "lab"))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "bench"))

import nfs_bench
import quorum_bench as qb
from chainlab import NFS_SECTION, TUNED
from cluster import VIP
from drbd_setup import DrbdSetup

# The parameters each agent takes, from its metadata in resource-agents 4.12.0 (Debian
# bookworm's package; identical to the upstream tag's heartbeat/<agent>), and those it
# requires (required="1").
AGENT_PARAMETERS = {
    "portblock": {
        "protocol", "portno", "action", "reset_local_on_unblock_stop", "ip", "tickle_dir",
        "sync_script", "direction",
    },
    "Filesystem": {
        "device", "directory", "fstype", "options", "statusfile_prefix", "run_fsck",
        "fast_stop", "force_clones", "force_unmount",
    },
    "nfsserver": {
        "nfs_init_script", "nfsv4_only", "nfs_no_notify", "nfs_notify_foreground",
        "nfs_smnotify_retry_time", "nfs_server_scope", "nfs_ip", "nfs_shared_infodir",
        "rpcpipefs_dir",
    },
    "exportfs": {
        "clientspec", "options", "directory", "fsid", "unlock_on_stop",
        "wait_for_leasetime_on_stop", "rmtab_backup",
    },
    "IPaddr2": {
        "ip", "nic", "cidr_netmask", "broadcast", "iflabel", "lvs_support",
        "lvs_ipv6_addrlabel", "lvs_ipv6_addrlabel_value", "mac", "clusterip_hash",
        "unique_clone_address", "arp_interval", "arp_count", "arp_count_refresh", "arp_bg",
        "arp_sender", "send_arp_opts", "flush_routes", "run_arping", "nodad",
        "noprefixroute", "preferred_lft", "network_namespace",
    },
}  # fmt: skip
REQUIRED = {
    "portblock": {"protocol", "portno", "action"},
    "Filesystem": {"device", "directory", "fstype"},
    "nfsserver": set(),
    "exportfs": {"clientspec", "directory", "fsid"},
    "IPaddr2": {"ip"},
}


@pytest.fixture
def snippet() -> str:
    return qb.render_snippet()


# ---------------------------------------------------------------------------------- snippet


def test_the_snippet_is_a_promoter_for_r0_with_the_labs_addresses(snippet: str) -> None:
    assert not re.search(r"@[A-Z_]+@", snippet)
    (promoter,) = tomllib.loads(snippet)["promoter"]
    r0 = promoter["resources"]["r0"]
    assert r0["on-drbd-demote-failure"] == "reboot-immediate"
    assert r0["on-quorum-loss"] == "shutdown"  # the default, written out
    assert r0["stop-services-on-exit"] is False
    assert "preferred-nodes" not in r0  # no fail-back to node1 when it comes back
    assert len(r0["start"]) == 6
    assert all(e.startswith("ocf:heartbeat:") for e in r0["start"])


def test_a_placeholder_nobody_fills_in_is_an_error() -> None:
    with pytest.raises(ValueError, match="@PORT@"):
        qb.render_snippet('start = ["x port=@PORT@ ip=@VIP@"]')


def test_linbits_start_list_in_order_as_drbd_reactor_names_its_units(snippet: str) -> None:
    units = qb.ocf_units(snippet)
    assert list(units) == [
        "ocf.rs@portblock_r0.service",
        "ocf.rs@fs_1_r0.service",
        "ocf.rs@nfsserver_r0.service",
        "ocf.rs@export_1_r0.service",
        "ocf.rs@virtual_ip_r0.service",
        "ocf.rs@portunblock_r0.service",
    ]
    assert [agent for agent, _ in units.values()] == [
        "portblock",
        "Filesystem",
        "nfsserver",
        "exportfs",
        "IPaddr2",
        "portblock",
    ]
    # drbd-reactor's escape_name keeps these as they are (src/systemd.rs): the unit names
    # the benchmark reads in the journal are the ones systemd has.
    for unit in units:
        assert re.fullmatch(r"ocf\.rs@[A-Za-z0-9:_.]+\.service", unit), unit


def test_every_parameter_is_one_the_agent_takes_and_none_required_is_missing(
    snippet: str,
) -> None:
    for unit, (agent, params) in qb.ocf_units(snippet).items():
        assert set(params) <= AGENT_PARAMETERS[agent], (unit, set(params) - AGENT_PARAMETERS[agent])
        assert REQUIRED[agent] <= set(params), (unit, REQUIRED[agent] - set(params))


def test_the_parameters_serve_drbdhas_export_on_this_lab(snippet: str) -> None:
    units = {
        unit.removeprefix("ocf.rs@"): params for unit, (_, params) in qb.ocf_units(snippet).items()
    }
    vip = VIP
    assert units["portblock_r0.service"] == {
        "action": "block",
        "ip": vip,
        "portno": "2049",
        "protocol": "tcp",
    }
    assert units["fs_1_r0.service"] == {
        "device": "/dev/drbd0",
        "directory": "/srv/nfs",
        "fstype": "ext4",
        "run_fsck": "no",
    }
    assert units["nfsserver_r0.service"] == {
        "nfs_shared_infodir": "/srv/nfs/nfs",
        "nfs_ip": vip,
        "nfs_server_scope": vip,
    }
    (export,) = NFS_SECTION["exports"]  # drbdha's: the same directory, clients, fsid, options
    assert units["export_1_r0.service"] == {
        "clientspec": export["clients"][0],
        "directory": export["path"],
        "fsid": str(export["fsid"]),
        "options": export["options"],
    }
    assert units["virtual_ip_r0.service"] == {"ip": vip, "cidr_netmask": "24"}
    assert units["portunblock_r0.service"] == {
        "action": "unblock",
        "ip": vip,
        "portno": "2049",
        "protocol": "tcp",
        "tickle_dir": "/srv/nfs/tickle",
        "reset_local_on_unblock_stop": "1",
    }


def test_the_directories_the_agents_use_are_the_ones_made_on_the_filesystem(snippet: str) -> None:
    units = dict(qb.ocf_units(snippet).values())
    made = qb.MAKE_FS.split("mkdir ", 1)[1].split(" && ", 1)[0].split()
    assert units["nfsserver"]["nfs_shared_infodir"] in made
    assert units["exportfs"]["directory"] in made
    assert "/srv/nfs/tickle" in made


# ---------------------------------------------------------------------------------- DRBD


class Nine(DrbdSetup):
    drbd = "9"


def test_r0_gets_the_promoters_options_in_its_options_section_once() -> None:
    res = Nine().drbd_config(net=TUNED)
    out = qb.with_promoter_options(res)
    (options,) = [line for line in out.splitlines() if line.strip().startswith("options {")]
    assert "auto-promote no;" in options
    assert "on-suspended-primary-outdated force-secondary;" in options
    assert "quorum majority;" in options  # the lab's own are kept
    assert out.replace(qb.PROMOTER_OPTIONS + " ", "") == res
    with pytest.raises(ValueError, match="options"):
        qb.with_promoter_options("resource r0 {\n}\n")


# ---------------------------------------------------------------------------------- readers


def test_drbd_reactorctl_status_tree_with_and_without_colour() -> None:
    status = (
        "/etc/drbd-reactor.d/r0.toml:\n"
        "Promoter: Currently active on this node\n"
        "\x1b[1;32m\u25cf\x1b[0m drbd-services@r0.target\n"
        "\u25cf \u251c\u2500 drbd-promote@r0.service\n"
        "\x1b[1;31m\u00d7\x1b[0m \u251c\u2500 ocf.rs@nfsserver_r0.service \n"
        "\u25cb \u2514\u2500 ocf.rs@portunblock_r0.service \x1b[34m(frozen)\x1b[0m\n"
    )
    assert qb.reactorctl_units(status) == {
        "drbd-services@r0.target": "active",
        "drbd-promote@r0.service": "active",
        "ocf.rs@nfsserver_r0.service": "failed",
        "ocf.rs@portunblock_r0.service": "inactive",
    }


def entry(at: float, **fields: str) -> dict[str, Any]:
    return {"__REALTIME_TIMESTAMP": str(round(at * 1e6)), **fields}


def test_the_takeover_phases_from_systemds_and_drbd_reactors_journal() -> None:
    promote, fs = qb.PROMOTE, "ocf.rs@fs_1_r0.service"
    done = {"JOB_TYPE": "start", "JOB_RESULT": "done"}
    entries = [  # node clock 2 s ahead of the host's; the fault at 100 (host)
        entry(101.0, UNIT=promote, MESSAGE_ID=qb.STARTING),  # before the fault
        entry(
            103.0, SYSLOG_IDENTIFIER="drbd-reactor", MESSAGE="resource 'r0' may promote after 0ms"
        ),
        entry(103.1, UNIT=promote, MESSAGE_ID=qb.STARTING),
        entry(103.4, UNIT=promote, **done),
        entry(103.5, UNIT=fs, MESSAGE_ID=qb.STARTING),
        entry(104.5, UNIT=fs, **done),
        entry(104.6, UNIT=fs, **done),  # a second start job: the first counts
        entry(104.7, UNIT="ssh.service", MESSAGE_ID=qb.STARTING),
    ]
    phases = qb.reactor_phases(entries, 2.0, 100.0)
    assert [(p.name, round(p.start, 3), round(p.end, 3)) for p in phases] == [
        ("may promote", 100.0, 101.0),
        ("promote", 101.1, 101.4),
        ("fs_1", 101.5, 102.5),
    ]


def test_the_source_timestamp_counts_over_journalds_reception() -> None:
    e = {"__REALTIME_TIMESTAMP": "5000000", "_SOURCE_REALTIME_TIMESTAMP": "4000000"}
    assert qb.entry_time(e) == 4.0


def test_failed_promotions_after_the_fault_are_counted() -> None:
    failed = {"UNIT": qb.PROMOTE, "JOB_TYPE": "start", "JOB_RESULT": "failed"}
    entries = [
        entry(99.0, **failed),  # before the fault
        entry(120.0, **failed),
        entry(140.0, **failed),
        entry(141.0, UNIT=qb.PROMOTE, JOB_TYPE="start", JOB_RESULT="done"),
        entry(142.0, UNIT="ocf.rs@fs_1_r0.service", JOB_TYPE="start", JOB_RESULT="failed"),
    ]
    assert qb.failed_promotions(entries, 0.0, 100.0) == 2


def test_two_primaries_and_with_quorum_on_both() -> None:
    assert qb.two_primaries([(True, True), (True, True)]) == "quorate"
    assert qb.two_primaries([(True, False), (True, True)]) == "primary"
    assert qb.two_primaries([(True, True), (False, True)]) is None


def test_the_server_is_the_one_node_with_the_vip_and_the_primary_role() -> None:
    assert qb.pick_server({"node1": (True, True), "node2": (False, False)}) == "node1"
    assert qb.pick_server({"node1": (True, False), "node2": (False, True)}) is None
    assert qb.pick_server({"node1": (True, True), "node2": (True, True)}) is None
    assert qb.pick_server({"node2": (True, True)}) == "node2"  # node1 powered off


def test_the_first_write_and_the_longest_wait_after_the_heal() -> None:
    done = [1.0, 2.0, 10.0, 10.5, 13.0]
    assert qb.first_after(done, 5.0) == 5.0
    assert qb.longest_gap(done, 5.0) == 5.0
    assert qb.first_after(done, 10.2) == 0.3
    assert qb.longest_gap(done, 10.2) == 2.5
    assert qb.first_after(done, 20.0) is None
    assert qb.longest_gap(done, 20.0) is None


# ---------------------------------------------------------------------------------- runs


def mount(stall: float, lost: int | None = 0, done: list[float] | None = None) -> dict[str, Any]:
    return {
        "acknowledged": 500,
        "lost": lost,
        "errors": 0,
        "stall_s": stall,
        "first_write_after_fault_s": 3.0,
        "done": [99.0, 100.5, 130.2, 199.5] if done is None else done,
    }


def run(stack: str, fault: str, stalls: tuple[float, float], **over: Any) -> dict[str, Any]:
    """A run as measure() returns it, with run_one's additions and figures()."""
    r: dict[str, Any] = {
        "stack": stack,
        "fault": fault,
        "run": 1,
        "timers": "tuned",
        "resumed": True,
        "refused": 0,
        "resets": 1,
        "split_brain": False,
        "fault_at": 100.0,
        "waited_until": 200.0,
        "checked_on": "node2",
        "phases": [{"name": "promote", "start": 101.0, "end": 102.0}],
        "mounts": {"NFSv3": mount(stalls[0]), "NFSv4.2": mount(stalls[1])},
        "promote_failures": 0,
    }
    marks = over.pop("marks", {"healed_at": 130.0, "resynced_at": 142.0, "went_down": []})
    seen = over.pop("seen", {"primary": [], "quorate": []})
    r.update(over)
    qb.figures(r, marks, seen)
    return r


def test_figures_after_the_heal_and_a_mount_still_blocked_at_the_give_up() -> None:
    r = run("reactor", "isolation", (4.0, 5.0))
    assert r["served_after_heal_s"] == 0.2
    assert r["resynced_after_heal_s"] == 12.0
    assert r["mounts"]["NFSv3"]["stall_after_heal_s"] == 69.3
    assert not r["mounts"]["NFSv3"]["stuck"]
    assert r["server"] == "node2"

    blocked = mount(0.5, lost=None, done=[99.0, 100.0])
    r = run("reactor", "isolation", (4.0, 5.0), resumed=False, marks={"healed_at": 130.0})
    r["mounts"]["NFSv3"] = blocked
    qb.figures(r, {"healed_at": 130.0}, {"primary": [1.0], "quorate": []})
    assert r["mounts"]["NFSv3"]["stuck"]
    assert r["served_after_heal_s"] is None  # the NFSv3 mount never wrote again
    assert r["resynced_after_heal_s"] is None
    assert r["two_primaries"] == 1


def test_a_switch_over_has_no_heal() -> None:
    r = run("drbdha", "switch-over", (1.0, 1.0), marks={"said": "ok", "went_down": []})
    assert r["healed_at"] is None
    assert r["served_after_heal_s"] is None
    assert r["mounts"]["NFSv3"]["served_after_heal_s"] is None
    assert r["switch_over_said"] == "ok"


def canned() -> list[dict[str, Any]]:
    return [
        run("drbdha", "isolation", (1.0, 2.0)),
        run("reactor", "isolation", (4.0, 8.0)),
        run("drbdha", "isolation", (3.0, 2.0)),
        run(
            "reactor",
            "isolation",
            (8.0, 4.0),
            split_brain=True,
            seen={"primary": [1.0, 2.0], "quorate": [2.0]},
        ),
        run("drbdha", "repl-cut", (0.5, 0.5), checked_on="node1"),
        run(
            "reactor",
            "repl-cut",
            (60.0, 60.0),
            checked_on=None,
            promote_failures=3,
            marks={"healed_at": 130.0, "went_down": ["node2"]},
        ),
    ]


def test_the_summary_per_fault_stack_and_nfs_version() -> None:
    text = "\n".join(qb.summary(canned()))
    print(text)
    assert text.index("== isolation") < text.index("== repl-cut")  # FAULTS' order
    assert "== isolation (runs: drbdha 2, reactor 2)" in text
    iso = text.split("== repl-cut")[0]
    assert "NFSv3   drbdha : stall median 2.00 s, max 3.00 s" in iso
    assert "NFSv3   reactor: stall median 6.00 s, max 8.00 s" in iso
    assert "NFSv3   drbdha/reactor: median stall 0.33" in iso
    assert "NFSv4.2 drbdha/reactor: median stall 0.33" in iso
    assert "lost 0 of 1000 (not checked in 0)" in iso
    assert "reactor: split brain in 1 (two Primaries seen in 1)" in iso
    assert "drbdha : split brain in 0" in iso
    assert "served 0.20 s, resynced 12.00 s" in iso
    assert "served by node2 2x" in iso
    repl = text.split("== repl-cut")[1]
    assert "drbdha : split brain in 0" in repl
    assert "served by node1 1x" in repl
    assert "served by none 1x" in repl
    assert "never resynced in 1" in repl
    assert "failed promotions in 1; a node went down by itself in 1" in repl


def test_the_phase_summary_of_nfs_bench_reads_these_runs() -> None:
    lines = nfs_bench.phase_summary(canned())
    assert any("promote" in line for line in lines)


def test_summarize_reads_the_json_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "q.json"
    path.write_text("".join(json.dumps(r) + "\n" for r in canned()) + "\n")
    assert qb.main(["--summarize", str(path)]) == 0
    assert "== isolation (runs: drbdha 2, reactor 2)" in capsys.readouterr().out


def test_a_printed_run_has_no_long_lists() -> None:
    shown = qb.shown(canned()[0])
    assert "phases" not in shown
    assert "done" not in shown["mounts"]["NFSv3"]
    json.dumps(shown)


# ---------------------------------------------------------------------------------- CLI


def test_an_84_lab_is_refused_with_the_command_that_makes_a_9_one() -> None:
    why = qb.refusal(SimpleNamespace(drbd="8.4"))
    assert why is not None
    assert "DRBDHA_LAB_DRBD=9 integration/lab/lab up" in why
    assert qb.refusal(SimpleNamespace(drbd="9")) is None


def test_the_cli_refuses_an_84_lab_without_bringing_it_up(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Lab84:
        drbd = "8.4"

        def up(self) -> None:
            raise AssertionError("the lab must not be brought up")

    monkeypatch.setattr(qb, "Lab", Lab84)
    assert qb.main(["--runs", "1"]) == 2
    assert "needs the DRBD 9 lab" in capsys.readouterr().err


def test_unknown_faults_and_stacks_are_usage_errors() -> None:
    with pytest.raises(SystemExit):
        qb.parse(["--faults", "power-off,meteor"])
    with pytest.raises(SystemExit):
        qb.parse(["--stacks", "pacemaker"])
    args = qb.parse([])
    assert args.faults.split(",") == list(qb.FAULTS)
    assert args.stacks.split(",") == ["drbdha", "reactor"]
    assert (args.runs, args.hold) == (5, 30.0)


def test_the_bench_runs_the_promoter_without_bookworms_broken_portblock() -> None:
    units = qb.ocf_units(qb.without_portblock(qb.render_snippet()))
    assert [agent for agent, _ in units.values()] == [
        "Filesystem",
        "nfsserver",
        "exportfs",
        "IPaddr2",
    ]
