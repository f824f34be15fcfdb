"""The operations surface against a running pair of daemons in network namespaces, one
pair shared by these read-only tests: `drbdha status` (table, --json, unreachable), status
and the metrics endpoint agreeing field for field, `promtool check metrics` on a live scrape,
and the control socket refusing non-root callers.

Every lab runs VRRPv3 at 100 ms on one bridge (killing one daemon leaves the other's carrier
up). Counters are compared exactly where they cannot move (a backup sends nothing, a master
hears only what the test injects) and bracketed by two status reads where they do.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
from netlab import DRBDHA, VIP4, DrbdhaNode, Host, Inst, Lab, addresses, node_config, run
from netns import inside
from ops_common import INTERVAL, cli, socket_path, start_pair, status_doc, vi1
from polling import wait_until

from drbdha import control
from drbdha.vrrp import packet as codec

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
]

NOBODY = 65534
GROUP4 = "224.0.0.18"
IPPROTO_VRRP = 112
PROMTOOL = "/usr/bin/promtool"


# ---- helpers -----------------------------------------------------------------------------


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


# ---- a running pair shared by the read-only tests ----------------------------------------


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


# ---- the CLI against a running daemon ----------------------------------------------------


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


# ---- status and metrics agree ------------------------------------------------------------


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


# ---- promtool on a live scrape -----------------------------------------------------------


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


# ---- the control socket is root only -----------------------------------------------------


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
