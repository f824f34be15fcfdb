"""The operations surface against real daemons in network namespaces: `drbdha status` (table,
--json, unreachable), status and the metrics endpoint agreeing field for field, `promtool
check metrics` on a live scrape, SIGHUP reload (good and broken files), the control socket
refusing non-root callers, force-failover in a two-node lab (done both ways, refused with the
peer down, refused on a backup with no master), and sd_notify/watchdog on a real datagram
socket.

Every lab runs VRRPv3 at 100 ms on one bridge (killing one daemon leaves the other's carrier
up). Counters are compared exactly where they cannot move (a backup sends nothing, a master
hears only what the test injects) and bracketed by two status reads where they do.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import select
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
from netlab import (
    DRBDHA,
    VIP4,
    DrbdhaNode,
    Host,
    Inst,
    Lab,
    addresses,
    assert_stays,
    node_config,
    run,
    wait_exactly_one_master,
)
from netns import inside
from polling import wait_until

from drbdha import control
from drbdha.vrrp import packet as codec

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
]

INTERVAL = 0.1
NOBODY = 65534
GROUP4 = "224.0.0.18"
IPPROTO_VRRP = 112
PROMTOOL = "/usr/bin/promtool"
PROBE = 2 * INTERVAL + 0.05  # handover.py: how long a resigned master waits for a peer
SLACK = 0.15  # scheduling slack on top of protocol times (seconds)


# ---- helpers ----------------------------------------------------------------------------


def cli(node: DrbdhaNode, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """`drbdha -c <node's config> ARGS` inside the node's namespace."""
    return run(
        node.host.ns, [DRBDHA, "-c", str(node.config_path), *args], check=False, timeout=timeout
    )


def status_doc(node: DrbdhaNode, *extra: str) -> dict[str, Any]:
    out = cli(node, "status", "--json", *extra)
    assert out.returncode == 0, f"status --json exited {out.returncode}: {out.stderr}"
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


def vi1(doc: dict[str, Any]) -> dict[str, Any]:
    (inst,) = doc["instances"]
    assert inst["name"] == "vi1"
    return inst


def socket_path(node: DrbdhaNode) -> Path:
    return node.lab.tmp / f"{node.host.name}.sock"


def rewrite_config(node: DrbdhaNode, text: str) -> None:
    node.config_path.write_text(text)


def node_toml(node: DrbdhaNode, instances: list[Inst]) -> str:
    """The file DrbdhaNode writes, with other instance settings."""
    return node_config(
        instances, metrics=node.metrics_listen, control_socket=str(socket_path(node))
    )


def scrape_text(node: DrbdhaNode) -> str:
    with inside(node.host.ns):
        url = f"http://{node.metrics_listen}/metrics"
        with urllib.request.urlopen(url, timeout=2) as resp:
            return str(resp.read().decode())


def table_rows(text: str) -> dict[str, str]:
    """`label value` rows of a one-instance `drbdha status` table."""
    rows = {}
    for line in text.splitlines():
        m = re.match(r"^  (\S+(?: \S+)?)\s{2,}(.*)$", line)
        if m:
            rows[m[1]] = m[2]
    return rows


def inject(host: Host, adverts: list[tuple[bytes, int]]) -> None:
    """Send raw VRRP payloads (with the given IP TTL) from `host` to the IPv4 group."""
    with inside(host.ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_VRRP)
    try:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(str(host.ip4)))
        for payload, ttl in adverts:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
            sock.sendto(payload, (GROUP4, 0))
    finally:
        sock.close()


def as_nobody(path: Path, payload: dict[str, Any]) -> dict[str, Any]:
    """Fork a child that drops to uid/gid 65534 and calls control.request(path, payload);
    return what it got: {"result": "reply"|"unavailable"|<exception name>, ...}."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        out: dict[str, Any] = {}
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            out["uid"] = os.getuid()
            try:
                out.update(result="reply", reply=control.request(path, payload, timeout=5))
            except control.ControlUnavailable as e:
                out.update(result="unavailable", code=e.code, error=str(e))
            except Exception as e:
                out.update(result=type(e).__name__, error=str(e))
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    assert data, "the unprivileged child reported nothing"
    result: dict[str, Any] = json.loads(data)
    assert result["uid"] == NOBODY
    return result


def metric(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def start_pair(lab: Lab) -> tuple[DrbdhaNode, DrbdhaNode]:
    """a (priority 150) master, b (100) backup. a starts first and becomes master alone, so
    no start-up race (b's Master_Down_Interval ending before a's) shows up as a flap."""
    a = DrbdhaNode(lab, "a", [Inst(priority=150)]).start()
    a.wait_state("master", timeout=5)
    b = DrbdhaNode(lab, "b", [Inst(priority=100)]).start()
    b.wait_state("backup", timeout=5)
    assert wait_exactly_one_master([a, b], VIP4, lab.host("client")) is a
    return a, b


# ---- a running pair shared by the read-only tests -----------------------------------------


@dataclass
class Pair:
    lab: Lab
    a: DrbdhaNode  # master, priority 150
    b: DrbdhaNode  # backup, priority 100
    client: Host


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    with Lab(["a", "b", "client"]) as lab:
        a, b = start_pair(lab)
        yield Pair(lab, a, b, lab.host("client"))


# ---- 1. the CLI against a running daemon -------------------------------------------------


def test_status_table_shows_each_node(pair: Pair) -> None:
    a, b = pair.a, pair.b
    assert VIP4 in addresses(a.host.ns)
    assert VIP4 not in addresses(b.host.ns)

    for node, state, master, held, prio in (
        (a, "MASTER", "this node", "held", "150 (configured 150)"),
        (b, "BACKUP", str(a.host.ip4), "not held", "100 (configured 100)"),
    ):
        out = cli(node, "status")
        assert out.returncode == 0, out.stderr
        assert out.stderr == ""
        header = out.stdout.splitlines()[0]
        assert header.startswith("drbdha ")
        assert node.proc is not None
        assert f"pid {node.proc.pid}," in header, header
        assert header.endswith(": healthy"), header
        assert "vi1  (VRRPv3 vrid 51 on eth0)" in out.stdout
        rows = table_rows(out.stdout)
        assert rows["state"] == state, out.stdout
        assert rows["master"] == master, out.stdout
        assert rows["vips"] == f"{VIP4}/24 ({held})", out.stdout
        assert rows["priority"] == prio, out.stdout
        assert rows["advert interval"].startswith("0.1s"), out.stdout
        assert rows["faults"] == "-", out.stdout
        assert rows["warnings"] == "-", out.stdout


def test_status_json_matches_each_node(pair: Pair) -> None:
    a, b = pair.a, pair.b
    assert a.proc is not None
    # On the master: every field is the node's real state.
    doc = status_doc(a)
    assert doc["daemon"]["pid"] == a.proc.pid
    assert doc["daemon"]["health"] == "healthy"
    assert doc["daemon"]["config_path"] == str(a.config_path)
    ia = vi1(doc)
    assert ia["state"] == "master"
    assert ia["is_master"] is True
    assert (ia["interface"], ia["vrid"], ia["version"]) == ("eth0", 51, 3)
    assert ia["priority"] == 150
    assert ia["effective_priority"] == 150
    assert ia["vips"] == [f"{VIP4}/24"]
    assert ia["vips_held"] is True
    assert ia["master_address"] == str(a.host.ip4)
    assert ia["advert_interval"] == INTERVAL
    assert ia["master_adver_interval"] == INTERVAL
    assert ia["faults"] == []
    assert ia["warnings"] == []
    assert ia["latches"] == []
    assert ia["last_transition"]["new"] == "master"
    assert ia["last_transition"]["reason"] == a.transitions()[-1]["reason"]
    assert ia["counters"]["adverts_sent"] > 0

    # --json on the backup: it knows the master and its priority from the adverts.
    ib = vi1(status_doc(b))
    assert ib["state"] == "backup"
    assert ib["is_master"] is False
    assert ib["priority"] == 100
    assert ib["effective_priority"] == 100
    assert ib["vips_held"] is False
    assert ib["master_address"] == str(a.host.ip4)
    assert ib["peer"]["address"] == str(a.host.ip4)
    assert ib["peer"]["priority"] == 150
    assert ib["peer"]["last_seen_age_s"] < 3 * INTERVAL
    assert ib["counters"]["adverts_sent"] == 0
    assert ib["counters"]["adverts_received"] > 0


def test_status_without_daemon_exits_3(pair: Pair) -> None:
    a = pair.a
    # No socket file, and a stale socket file nobody listens on.
    missing = pair.lab.tmp / "nobody-here.sock"
    stale = pair.lab.tmp / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(stale))  # closed without unlink: the file a SIGKILLed daemon leaves
    for path in (missing, stale):
        for args in (("status",), ("status", "--json")):
            out = cli(a, *args, "--socket", str(path))
            assert out.returncode == 3, (out.returncode, out.stdout, out.stderr)
            assert out.stdout == ""
            assert "Traceback" not in out.stderr
            assert out.stderr.startswith("drbdha: drbdha is not running"), out.stderr
            assert str(path) in out.stderr
    # A config whose daemon was never started: the socket comes from the file.
    never = pair.lab.tmp / "never.toml"
    never.write_text(node_config([Inst()], control_socket=str(missing)))
    out = run(a.host.ns, [DRBDHA, "-c", str(never), "status"], check=False)
    assert out.returncode == 3
    assert "not running" in out.stderr
    assert "Traceback" not in out.stderr


# ---- 2. status and metrics agree ---------------------------------------------------------


def test_status_and_metrics_agree_field_for_field(pair: Pair) -> None:
    a, b, client = pair.a, pair.b, pair.client
    before = {n.name: vi1(status_doc(n))["counters"] for n in (a, b)}
    # From the client: 3 valid adverts at priority 50 (below both nodes, so nobody changes
    # state; the master re-asserts, the backup ignores), 2 at TTL 1 and 4 with a bad
    # checksum. Each reaches both nodes. The backup is silent, so the master's received
    # count moves only by what we inject: it can be compared exactly.
    vips = (IPv4Address(VIP4),)
    good = codec.encode(codec.Advertisement(3, 51, 50, 10, vips), client.ip4, IPv4Address(GROUP4))
    bad_csum = good[:6] + bytes([good[6] ^ 0xFF, good[7]]) + good[8:]
    inject(client, [(good, 255)] * 3 + [(good, 1)] * 2 + [(bad_csum, 255)] * 4)
    want_invalid = {
        n.name: {
            **before[n.name]["invalid"],
            "ttl": before[n.name]["invalid"].get("ttl", 0) + 2,
            "checksum": before[n.name]["invalid"].get("checksum", 0) + 4,
        }
        for n in (a, b)
    }
    for n in (a, b):
        wait_until(
            f"{n.name} invalid counters",
            lambda n=n: vi1(status_doc(n))["counters"]["invalid"] == want_invalid[n.name],
            5,
            every=0.05,
        )
    ca = wait_until(
        "master received the 3 injected adverts",
        lambda: (
            (c := vi1(status_doc(a))["counters"])["adverts_received"]
            == before[a.name]["adverts_received"] + 3
            and c
        ),
        5,
        every=0.05,
    )
    assert ca["adverts_received"] == before[a.name]["adverts_received"] + 3

    for node in (a, b):
        first = status_doc(node)
        samples = node.scrape()
        second = status_doc(node)
        s1, s2 = vi1(first), vi1(second)
        lab = {"vrrp_instance": "vi1"}
        assert s1["state"] == s2["state"], "state changed during the comparison"
        c1, c2 = s1["counters"], s2["counters"]
        for key, family in (
            ("adverts_sent", "drbdha_vrrp_adverts_sent_total"),
            ("adverts_received", "drbdha_vrrp_adverts_received_total"),
        ):
            value = metric(samples, family, **lab)
            assert value is not None, f"{family} missing from the scrape"
            # The scrape was taken between two status reads: a counter that moves (the
            # master's sent, the backup's received, 10 per second) lies between them; one
            # that does not move must be equal to both.
            assert c1[key] <= value <= c2[key], (node.name, key, c1[key], value, c2[key])
            if c1[key] == c2[key]:
                assert value == c1[key]
        assert c1["invalid"] == c2["invalid"] == want_invalid[node.name]
        scraped_invalid = {
            dict(labels)["reason"]: int(v)
            for (name, labels), v in samples.items()
            if name == "drbdha_vrrp_invalid_adverts_total"
            and dict(labels)["vrrp_instance"] == "vi1"
        }
        assert scraped_invalid == c1["invalid"]
        for state in ("initialize", "backup", "master", "fault"):
            value = metric(samples, "drbdha_vrrp_state", drbdha_vrrp_state=state, **lab)
            assert value == (1.0 if state == s1["state"] else 0.0), (node.name, state, value)
        prio = metric(samples, "drbdha_vrrp_effective_priority", **lab)
        assert prio == s1["effective_priority"]
        t = s1["last_transition"]
        assert (
            metric(
                samples,
                "drbdha_vrrp_transitions_total",
                **{"from": t["old"], "to": t["new"], "reason": t["reason"]},
                **lab,
            )
            >= 1
        )

    # The exact cases: the backup never sent, the master heard only the injected adverts.
    sb = vi1(status_doc(b))
    assert sb["counters"]["adverts_sent"] == 0
    assert b.metric("drbdha_vrrp_adverts_sent_total", vrrp_instance="vi1") == 0
    sa = vi1(status_doc(a))
    assert sa["counters"]["adverts_received"] == ca["adverts_received"]
    assert (
        a.metric("drbdha_vrrp_adverts_received_total", vrrp_instance="vi1")
        == ca["adverts_received"]
    )
    # Nobody changed state for the injected adverts.
    assert (sa["state"], sb["state"]) == ("master", "backup")


# ---- 3. promtool on a live scrape --------------------------------------------------------


def test_promtool_check_metrics_on_live_scrape(pair: Pair) -> None:
    if not Path(PROMTOOL).exists():
        pytest.skip("promtool is not installed")
    for node in (pair.a, pair.b):
        text = scrape_text(node)
        # The scrape is non-trivial: state, counters and a filled histogram.
        assert 'drbdha_vrrp_state{drbdha_vrrp_state="' in text
        assert "drbdha_vrrp_adverts_sent_total" in text
        assert "drbdha_loop_timer_lateness_seconds_bucket" in text
        out = subprocess.run(
            [PROMTOOL, "check", "metrics"],
            input=text,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert (out.stdout.strip(), out.stderr.strip()) == ("", ""), out.stdout + out.stderr


# ---- 4. reload ---------------------------------------------------------------------------


def test_sighup_reload_applies_in_place_and_keeps_running_on_broken_file(
    make_lab: Callable[..., Lab],
) -> None:
    lab = make_lab("a")
    a = DrbdhaNode(lab, "a", [Inst(priority=150)]).start()
    a.wait_state("master", timeout=5)
    assert a.proc is not None
    pid = a.proc.pid
    doc = status_doc(a)
    assert doc["daemon"]["pid"] == pid
    assert vi1(doc)["priority"] == 150
    transitions = len(a.transitions())

    # A good file with a new priority: applied in place, no restart, no transition.
    rewrite_config(a, node_toml(a, [Inst(priority=120)]))
    a.proc.signal(signal.SIGHUP)
    reloaded = wait_until("config.reloaded", lambda: a.events("config.reloaded"), 5, every=0.02)
    assert reloaded[-1]["updated"] == ["vi1"]
    assert reloaded[-1]["restarted"] == []
    assert reloaded[-1]["added"] == []
    inst = vi1(status_doc(a))
    assert (inst["priority"], inst["effective_priority"], inst["state"]) == (120, 120, "master")
    assert status_doc(a)["daemon"]["pid"] == pid
    assert a.proc.running
    assert len(a.transitions()) == transitions
    assert a.metric("drbdha_vrrp_effective_priority", vrrp_instance="vi1") == 120
    assert VIP4 in addresses(a.host.ns)

    # Broken files: the daemon keeps running on the old config and says why.
    broken = [
        (node_toml(a, [Inst(priority=300)]), "vrrp_instance[0].priority"),
        ("[daemon\nthis is not toml\n", ""),
    ]
    for text, key in broken:
        rewrite_config(a, text)
        seen = len(a.events("config.reload_failed"))
        a.proc.signal(signal.SIGHUP)
        failed = wait_until(
            "config.reload_failed",
            lambda seen=seen: a.events("config.reload_failed")[seen:],
            5,
            every=0.02,
        )
        event = failed[0]
        assert event["level"] == "error"
        assert event["path"] == str(a.config_path)
        assert event["action"] == "kept the running configuration"
        assert event["problems"], event
        if key:
            assert any(p.startswith(f"{key}: ") and "300" in p for p in event["problems"]), event
        time.sleep(3 * INTERVAL)  # anything a bad apply broke would show within an interval
        # The file is broken, so the CLI cannot read the socket path from it: name it.
        doc = status_doc(a, "--socket", str(socket_path(a)))
        inst = vi1(doc)
        assert doc["daemon"]["pid"] == pid
        assert a.proc.running
        assert (inst["priority"], inst["state"], inst["vips_held"]) == (120, "master", True)
        assert len(a.transitions()) == transitions
        assert VIP4 in addresses(a.host.ns)
        assert cli(a, "status", "--socket", str(socket_path(a))).returncode == 0
    assert len(a.events("config.reloaded")) == 1


def test_sighup_adds_restarts_and_removes_instances(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab("a")
    a = DrbdhaNode(lab, "a", [Inst(priority=150)]).start()
    a.wait_state("master", timeout=5)
    assert a.proc is not None
    second = Inst(name="vi2", vrid=52, priority=150, vips=["10.250.0.200/24"])

    # Added: the new instance starts and wins; the running one is untouched.
    rewrite_config(a, node_toml(a, [Inst(priority=150), second]))
    a.proc.signal(signal.SIGHUP)
    event = wait_until("config.reloaded", lambda: a.events("config.reloaded"), 5, every=0.02)[-1]
    assert (event["added"], event["updated"], event["restarted"]) == (["vi2"], [], [])
    wait_until("vi2's VIP", lambda: "10.250.0.200" in addresses(a.host.ns), 5, every=0.02)
    states = {i["name"]: i["state"] for i in status_doc(a)["instances"]}
    assert states == {"vi1": "master", "vi2": "master"}

    # A changed address list restarts that instance: its old VIP goes, the new one comes.
    moved = Inst(name="vi2", vrid=52, priority=150, vips=["10.250.0.201/24"])
    rewrite_config(a, node_toml(a, [Inst(priority=150), moved]))
    a.proc.signal(signal.SIGHUP)
    wait_until("second reload", lambda: len(a.events("config.reloaded")) == 2, 5, every=0.02)
    assert a.events("config.reloaded")[-1]["restarted"] == ["vi2"]
    wait_until("vi2's new VIP", lambda: "10.250.0.201" in addresses(a.host.ns), 5, every=0.02)
    assert "10.250.0.200" not in addresses(a.host.ns)

    # Removed: it resigns and releases its VIP; vi1 keeps its own.
    rewrite_config(a, node_toml(a, [Inst(priority=150)]))
    a.proc.signal(signal.SIGHUP)
    wait_until("third reload", lambda: len(a.events("config.reloaded")) == 3, 5, every=0.02)
    assert a.events("config.reloaded")[-1]["removed"] == ["vi2"]
    assert "10.250.0.201" not in addresses(a.host.ns)
    assert VIP4 in addresses(a.host.ns)
    assert [i["name"] for i in status_doc(a)["instances"]] == ["vi1"]


# ---- 5. the control socket is root only --------------------------------------------------


def test_control_socket_refuses_non_root(pair: Pair) -> None:
    a = pair.a
    path = socket_path(a)
    # As created: the socket is 0600 in a 0700 directory, so connect() itself fails.
    assert path.stat().st_mode & 0o777 == 0o600
    got = as_nobody(path, {"command": control.STATUS})
    assert (got["result"], got["code"]) == ("unavailable", "permission"), got
    assert "reply" not in got

    # Make it reachable: now only the daemon's SO_PEERCRED check stands in the way.
    directory = path.parent
    mode = directory.stat().st_mode & 0o777
    refused_before = len(a.events("control.refused"))
    directory.chmod(0o777)
    path.chmod(0o777)
    try:
        for payload in (
            {"command": control.STATUS},
            {"command": control.FORCE_FAILOVER, "wait": 1, "force": True},
        ):
            got = as_nobody(path, payload)
            assert got["result"] == "unavailable", got
            assert got["code"] == "permission", got
            assert got["error"] == "permission denied: root only", got  # the server's answer
    finally:
        path.chmod(0o600)
        directory.chmod(mode)
    refused = wait_until(
        "control.refused logged",
        lambda: a.events("control.refused")[refused_before:],
        2,
        every=0.02,
    )
    assert len(refused) == 2
    assert all(e["uid"] == NOBODY and e["reason"] == "not root" for e in refused)
    # The refused force-failover did nothing; root is still served.
    assert vi1(status_doc(a))["state"] == "master"
    assert pair.b.state() == "backup"
    assert VIP4 in addresses(a.host.ns)


# ---- 6. force-failover -------------------------------------------------------------------


def _last_line(out: subprocess.CompletedProcess[str]) -> str:
    return out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""


def test_force_failover_moves_mastership_and_refuses_without_peer(lab: Lab) -> None:
    client = lab.host("client")
    a, b = start_pair(lab)

    # On the master: it resigns, b takes over, a holds off preemption.
    out = cli(a, "force-failover", "--wait", "5", "--hold-off", "60")
    assert out.returncode == 0, out.stdout + out.stderr
    assert _last_line(out) == "done", out.stdout
    assert re.search(rf"vi1: now backup, peer {b.host.ip4} \(priority 100\)", out.stdout), (
        out.stdout
    )
    assert wait_exactly_one_master([a, b], VIP4, client) is b
    assert a.transitions()[-1]["reason"] == "resign"
    assert b.transitions()[-1]["reason"] == "master_resigned"
    ia = vi1(status_doc(a))
    assert ia["state"] == "backup"
    assert 50 < ia["preempt_hold_off_remaining_s"] <= 60
    # a has the higher priority and preempt on, but it is held off: b stays master.
    assert_stays([a, b], {a.name: "backup", b.name: "master"}, 5 * INTERVAL)

    # On the (new) backup: a takes it back at priority 254.
    out = cli(a, "force-failover", "--wait", "5", "--hold-off", "60")
    assert out.returncode == 0, out.stdout + out.stderr
    assert _last_line(out) == "done", out.stdout
    assert re.search(r"vi1: now master", out.stdout), out.stdout
    assert wait_exactly_one_master([a, b], VIP4, client) is a
    b.wait_state("backup")
    assert a.transitions()[-1]["reason"] == "force_failover"
    assert b.transitions()[-1]["reason"] == "higher_priority"
    ia = vi1(status_doc(a))
    assert (ia["priority"], ia["effective_priority"]) == (150, 254)
    assert vi1(status_doc(b))["peer"]["priority"] == 254

    # The peer's daemon dies (it was backup, so it holds no VIP): the resignation is not
    # answered and a takes the role straight back, within ~2 intervals.
    assert b.proc is not None
    b.kill()
    assert VIP4 not in addresses(b.host.ns)
    out = cli(a, "force-failover", "--wait", "5")
    assert out.returncode == 1, out.stdout + out.stderr
    m = re.search(
        r"^refused: vi1: no peer took over within (\d+) ms of resigning; "
        r"mastership taken back$",
        out.stdout,
        re.MULTILINE,
    )
    assert m, out.stdout
    # The probe window is 2 intervals + 50 ms; SLACK covers a late loop turn or CLI start.
    assert int(m[1]) <= (PROBE + SLACK) * 1000, out.stdout
    assert wait_exactly_one_master([a, b], VIP4, client) is a
    resign, back = a.transitions()[-2:]
    assert (resign["new"], resign["reason"]) == ("backup", "resign")
    # handover_failed when the probe window ends first; master_down if the loop turned late
    # enough for Master_Down_Interval (3.4 intervals) to end first.
    assert back["new"] == "master"
    assert back["reason"] in ("handover_failed", "master_down")
    assert back["monotonic"] - resign["monotonic"] <= PROBE + SLACK
    assert a.events("handover.refused")[-1]["reason"] == "no peer took over"
    ia = vi1(status_doc(a))
    assert ia["state"] == "master"
    assert ia["preempt_hold_off_remaining_s"] == 0


def test_force_failover_on_backup_without_master_is_refused(
    make_lab: Callable[..., Lab],
) -> None:
    lab = make_lab("a", "client")
    # A 1 s interval leaves ~3.6 s of BACKUP after start-up with nobody advertising: plenty
    # of time for the CLI.
    lone = DrbdhaNode(lab, "a", [Inst(priority=100, advert_interval=1.0)]).start()
    lone.wait_state("backup", timeout=2)
    out = cli(lone, "force-failover", "--wait", "2")
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stderr.strip() == (
        "refused: vi1: no master is advertising; nothing to take "
        "over from (use --force to override)"
    ), out.stderr
    assert lone.state() == "backup"
    assert VIP4 not in addresses(lone.host.ns)
    assert lone.events("handover.refused")
    # --force skips the check: it takes over at once.
    out = cli(lone, "force-failover", "--wait", "3", "--force")
    assert out.returncode == 0, out.stdout + out.stderr
    assert _last_line(out) == "done", out.stdout
    assert lone.transitions()[-1]["reason"] == "force_failover"
    assert wait_exactly_one_master([lone], VIP4, lab.host("client")) is lone


# ---- 7. sd_notify and the watchdog on a real socket --------------------------------------


class NotifyListener:
    """An AF_UNIX datagram socket standing in for systemd's NOTIFY_SOCKET. Records every
    datagram with its arrival time and the sender's pid (SCM_CREDENTIALS)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(str(path))
        self.messages: list[tuple[float, int, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        ucred = struct.Struct("3i")
        while not self._stop.is_set():
            ready, _, _ = select.select([self.sock], [], [], 0.05)
            if not ready:
                continue
            data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(ucred.size))
            at = time.monotonic()
            pid = -1
            for level, kind, raw in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = ucred.unpack(raw[: ucred.size])[0]
            with self._lock:
                self.messages.append((at, pid, data.decode()))

    def since(self, t: float = 0.0) -> list[tuple[float, int, str]]:
        with self._lock:
            return [m for m in self.messages if m[0] >= t]

    def with_line(self, line: str, t: float = 0.0) -> list[tuple[float, int, str]]:
        return [m for m in self.since(t) if line in m[2].split("\n")]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def _status_of(message: str) -> str | None:
    return next((x[len("STATUS=") :] for x in message.split("\n") if x.startswith("STATUS=")), None)


def test_systemd_notify_and_watchdog_on_a_real_socket(
    make_lab: Callable[..., Lab], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab = make_lab("a")
    listener = NotifyListener(tmp_path / "notify")
    lab.on_cleanup(listener.close)
    # systemd's environment for Type=notify with WatchdogSec=200ms; no WATCHDOG_PID, and not
    # a journal stream (logs stay JSON on stdout for DrbdhaNode to read).
    monkeypatch.setenv("NOTIFY_SOCKET", str(listener.path))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    a = DrbdhaNode(lab, "a", [Inst(priority=150)]).start()
    assert a.proc is not None
    pid = a.proc.pid

    (ready_at, _, ready), *_ = wait_until(
        lambda: f"READY=1; log:\n{a.log_tail()}",
        lambda: listener.with_line("READY=1"),
        10,
        every=0.02,
    )
    # READY comes after the VRRP sockets are open and the instance has started.
    started = a.transitions()
    assert started, "READY=1 before the instance started"
    assert started[0]["new"] in ("backup", "master")
    assert started[0]["monotonic"] <= ready_at
    assert _status_of(ready) == "healthy: vi1 BACKUP", ready
    assert socket_path(a).exists()
    assert vi1(status_doc(a))["state"] in ("backup", "master")
    # Alone, it takes over: a STATUS= line says so.
    a.wait_state("master", timeout=3)
    wait_until(
        "STATUS= with MASTER",
        lambda: any(_status_of(m) == "healthy: vi1 MASTER" for _, _, m in listener.since()),
        2,
        every=0.02,
    )

    # WATCHDOG=1 every half WatchdogSec (100 ms), from the daemon's own pid.
    t0 = time.monotonic()
    time.sleep(1.0)
    pings = [at for at, _, _ in listener.with_line("WATCHDOG=1", t0) if at <= t0 + 1.0]
    assert len(pings) >= 5, pings
    gaps = [y - x for x, y in itertools.pairwise(pings)]
    assert max(gaps) < 0.2, f"systemd would have killed it: gaps {gaps}"
    assert {p for _, p, _ in listener.since()} == {pid}, "every datagram comes from the main pid"

    # A stopped main loop stops feeding the watchdog; it resumes with the loop.
    a.proc.stop()
    stopped_at = time.monotonic()
    time.sleep(0.6)
    late = listener.with_line("WATCHDOG=1", stopped_at + 0.05)
    assert late == [], f"WATCHDOG=1 while SIGSTOPped: {late}"
    a.proc.cont()
    cont_at = time.monotonic()
    wait_until(
        "WATCHDOG=1 after SIGCONT",
        lambda: len(listener.with_line("WATCHDOG=1", cont_at)) >= 3,
        1.0,
        every=0.02,
    )

    # Reload: RELOADING=1 with MONOTONIC_USEC, then READY=1 again.
    hup_at = time.monotonic()
    a.proc.signal(signal.SIGHUP)
    reloading = wait_until(
        "RELOADING=1", lambda: listener.with_line("RELOADING=1", hup_at), 2, every=0.02
    )
    usec = next(
        int(x.split("=", 1)[1])
        for x in reloading[0][2].split("\n")
        if x.startswith("MONOTONIC_USEC=")
    )
    assert hup_at <= usec / 1e6 <= reloading[0][0]
    wait_until(
        "READY=1 after reload",
        lambda: listener.with_line("READY=1", reloading[0][0]),
        2,
        every=0.02,
    )

    # SIGTERM: STOPPING=1, then a clean exit.
    term_at = time.monotonic()
    a.proc.terminate()
    wait_until("STOPPING=1", lambda: listener.with_line("STOPPING=1", term_at), 3, every=0.02)
    assert a.proc.wait(5) == 0, a.log_tail()
    assert a.events("daemon.stopped")
    assert VIP4 not in addresses(a.host.ns)
    assert {p for _, p, _ in listener.since()} == {pid}
