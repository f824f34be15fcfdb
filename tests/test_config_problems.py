"""Configuration: every bad value gives a ConfigError naming the exact key path, every
problem of a file is reported at once."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import pytest
from config_cases import assert_one_problem
from config_cases import instance as _instance
from config_cases import paths as _paths
from config_cases import problems as _problems
from config_cases import write_config as _write

from drbdha.config import DAEMON_OPTIONS, INSTANCE_OPTIONS, load, parse
from drbdha.errors import ConfigError

# ---- every bad value names its key path ----------------------------------------------------


INSTANCE_BAD = [
    # key, bad value, message fragment
    ("name", 5, "string"),
    ("name", "", "non-empty"),
    ("name", ["a"], "string"),
    # Issue 19: names go into file names, drop-ins and comments.
    ("name", "nfs\n[Service]", "letters, digits, '_', '-', '.'"),
    ("name", "../../etc/x", "letters, digits"),
    ("name", "a b", "letters, digits"),
    ("name", 'a"b', "letters, digits"),
    ("name", "n\u00e9", "letters, digits"),
    ("name", ".nfs", "not '.' or '-' first"),
    ("name", "-nfs", "not '.' or '-' first"),
    ("name", "x" * 58, "57 at most"),
    ("interface", 0, "string"),
    ("interface", "a" * 16, "interface name"),
    ("interface", "eth 0", "interface name"),
    ("interface", "eth/0", "interface name"),
    ("interface", "..", "interface name"),  # /proc/sys/net/ipv4/conf/../promote_secondaries
    ("interface", "eth0:1", "interface name"),  # an address label, not an interface
    ("interface", "eth0\n", "interface name"),
    ("interface", "eth\x000", "interface name"),
    ("vrid", "51", "integer"),
    ("vrid", 51.0, "integer"),
    ("vrid", True, "integer"),
    ("vrid", 0, "1..255"),
    ("vrid", 256, "1..255"),
    ("vrid", -1, "1..255"),
    ("priority", 0, "1..255"),  # 0 is "resign" on the wire, not a configurable priority
    ("priority", 256, "1..255"),
    ("priority", "100", "integer"),
    ("priority", 100.5, "integer"),
    ("priority", False, "integer"),
    ("version", 1, "2..3"),
    ("version", 4, "2..3"),
    ("version", "3", "integer"),
    ("advert_interval", "1s", "number"),
    ("advert_interval", True, "number"),
    ("advert_interval", [1], "number"),
    ("advert_interval", math.nan, "number"),
    ("advert_interval", math.inf, "number"),
    ("advert_interval", 0, "0.01..255"),
    ("advert_interval", -1, "0.01..255"),
    ("advert_interval", 0.005, "0.01..255"),  # below the v3 centisecond
    ("advert_interval", 41, "40.95"),  # above the 12-bit v3 field
    ("advert_interval", 0.015, "centisecond"),
    ("advert_interval", 10**400, "0.01..255"),  # tomllib integers are unbounded
    ("virtual_ipaddress", "192.0.2.100/24", "list"),
    ("virtual_ipaddress", [], "at least 1"),
    ("virtual_ipaddress", ["192.0.2.100"], "address/prefix"),
    ("virtual_ipaddress", ["192.0.2.300/24"], "192.0.2.300"),
    ("virtual_ipaddress", ["192.0.2.100/33"], "33"),
    ("virtual_ipaddress", ["224.0.0.18/32"], "cannot be a virtual address"),
    ("virtual_ipaddress", ["0.0.0.0/0"], "cannot be a virtual address"),
    ("virtual_ipaddress", ["127.0.0.2/8"], "cannot be a virtual address"),
    ("virtual_ipaddress", [100], "address/prefix"),
    ("virtual_ipaddress", ["192.0.2.1/24", "192.0.2.1/24"], "duplicate"),
    ("virtual_ipaddress", ["192.0.2.1/24", "fd00::1/64"], "mixes IPv4 and IPv6"),
    ("virtual_ipaddress", [f"10.1.{i // 200}.{i % 200 + 1}/16" for i in range(256)], "255"),
    ("preempt", "yes", "true or false"),
    ("preempt", 1, "true or false"),
    ("preempt_delay", -1, "0..1000"),
    ("preempt_delay", 1001, "0..1000"),
    ("preempt_delay", "5", "number"),
    ("unicast_peers", "192.0.2.2", "list"),
    ("unicast_peers", ["peer-b"], "peer-b"),
    ("unicast_peers", [3221225986], "string"),  # ip_address(int) would be 192.0.2.2
    ("unicast_peers", [True], "string"),
    ("unicast_peers", ["192.0.2.2", "192.0.2.2"], "duplicate"),
    ("unicast_peers", ["fd00::2"], "same family"),
    # Issue 19: adverts sent there reach no peer (or this node itself).
    ("unicast_peers", ["0.0.0.0"], "unspecified address"),  # noqa: S104 (a value, not a bind)
    ("unicast_peers", ["127.0.0.1"], "loopback address"),
    ("unicast_peers", ["127.1.2.3"], "loopback address"),
    ("unicast_peers", ["224.0.0.18"], "multicast address"),
    ("unicast_peers", ["239.1.1.1"], "multicast address"),
    # a zone would never equal the zone-less source of a received advert: all dropped
    ("unicast_peers", ["192.0.2.2", "fe80::2%eth0"], "without a %zone"),
    ("checksum_mode", "message", "'pseudo', 'rfc9568'"),
    ("checksum_mode", 1, "'pseudo', 'rfc9568'"),
    ("checksum_mode", ["pseudo"], "'pseudo', 'rfc9568'"),
    ("garp_master_repeat", -1, "0..100"),
    ("garp_master_repeat", 101, "0..100"),
    ("garp_master_repeat", 1.5, "integer"),
    ("garp_master_delay", -0.1, "0..3600"),
    ("garp_master_delay", 3601, "0..3600"),
    ("garp_master_refresh", 86401, "0..86400"),
    ("garp_master_refresh", "60", "number"),
    ("storage", 5, "string"),
    ("storage", "", "non-empty"),
]


@pytest.mark.parametrize(("key", "value", "fragment"), INSTANCE_BAD)
def test_bad_instance_value(key: str, value: Any, fragment: str) -> None:
    problems = _problems({"vrrp_instance": [_instance(**{key: value})]})
    assert_one_problem(problems, f"vrrp_instance[0].{key}", fragment)


def test_every_instance_option_has_a_bad_value_case() -> None:
    assert {key for key, _, _ in INSTANCE_BAD} == set(INSTANCE_OPTIONS)


@pytest.mark.parametrize(
    ("overrides", "path", "fragment"),
    [
        ({"version": 2, "advert_interval": 1.5}, "advert_interval", "whole seconds"),
        ({"version": 2, "advert_interval": 0.5}, "advert_interval", "whole seconds"),
        ({"version": 3, "advert_interval": 100}, "advert_interval", "40.95"),
        ({"version": 2, "virtual_ipaddress": ["fd00::1/64"]}, "version", "IPv4 only"),
        ({"version": 2, "checksum_mode": "rfc9568"}, "checksum_mode", "VRRPv3 over IPv4"),
        (
            {"virtual_ipaddress": ["fd00::1/64"], "checksum_mode": "rfc9568"},
            "checksum_mode",
            "VRRPv3 over IPv4",
        ),
        (
            {"virtual_ipaddress": ["fd00::1/64"], "unicast_peers": ["192.0.2.2"]},
            "unicast_peers",
            "same family",
        ),
    ],
)
def test_cross_key_rules(overrides: dict[str, Any], path: str, fragment: str) -> None:
    problems = _problems({"vrrp_instance": [_instance(**overrides)]})
    assert_one_problem(problems, f"vrrp_instance[0].{path}", fragment)


def test_v2_whole_seconds_accepted() -> None:
    (inst,) = parse({"vrrp_instance": [_instance(version=2, advert_interval=255)]}).vrrp_instances
    assert inst.advert_interval == 255.0


@pytest.mark.parametrize("missing", ["name", "interface", "vrid", "virtual_ipaddress"])
def test_missing_required(missing: str) -> None:
    inst = _instance()
    del inst[missing]
    problems = _problems({"vrrp_instance": [inst]})
    assert problems == [(f"vrrp_instance[0].{missing}", "is required")]


def test_unknown_instance_key() -> None:
    problems = _problems({"vrrp_instance": [_instance(advert_int=1)]})
    assert problems == [("vrrp_instance[0].advert_int", "unknown key")]


def test_unknown_daemon_key() -> None:
    problems = _problems({"daemon": {"pidfile": "/run/x"}, "vrrp_instance": [_instance()]})
    assert problems == [("daemon.pidfile", "unknown key")]


def test_unknown_section() -> None:
    problems = _problems({"vrrp_instances": [_instance()], "vrrp_instance": [_instance()]})
    assert problems == [("vrrp_instances", "unknown section")]


@pytest.mark.parametrize("instances", [None, [], {}, "x", {"name": "vi"}])
def test_vrrp_instance_missing_or_not_an_array(instances: Any) -> None:
    data = {} if instances is None else {"vrrp_instance": instances}
    assert _paths(data) == {"vrrp_instance"}


def test_instance_not_a_table() -> None:
    problems = _problems({"vrrp_instance": [_instance(), 5]})
    assert problems == [("vrrp_instance[1]", "must be a table")]


def test_daemon_not_a_table() -> None:
    assert _paths({"daemon": ["x"], "vrrp_instance": [_instance()]}) == {"daemon"}


DAEMON_BAD = [
    ("control_socket", "run/drbdha.sock", "absolute"),
    ("control_socket", "", "non-empty"),
    ("control_socket", 5, "string"),
    ("control_socket", "/run/drbdha/ctl\n.sock", "quotes or control characters"),
    ("control_socket", "/run/drbdha/ctl\x00", "quotes or control characters"),
    ("metrics_listen", "9942", "host:port"),
    ("metrics_listen", 9942, "host:port"),
    ("metrics_listen", "localhost:9942", "IP address"),
    ("metrics_listen", "127.0.0.1:", "host:port"),
    ("metrics_listen", "127.0.0.1:0", "host:port"),
    ("metrics_listen", "127.0.0.1:65536", "host:port"),
    ("metrics_listen", "127.0.0.1:http", "host:port"),
    ("metrics_listen", "127.0.0.1:-1", "host:port"),
    ("metrics_listen", "127.0.0.1: 99", "host:port"),
    ("metrics_listen", "127.0.0.1:\u00b2", "host:port"),  # "²".isdigit() but int() fails
    ("metrics_listen", "127.0.0.1:\u0663\u0663", "host:port"),  # Arabic-Indic 33
    ("metrics_listen", "::1:9942", "[addr]:port"),  # ambiguous without brackets
    ("metrics_listen", "[127.0.0.1]:9942", "[addr]:port"),
    ("metrics_listen", "[]:9942", "IP address"),
    ("metrics_listen", "[::1:9942", "IP address"),
    ("metrics_listen", None, "host:port"),
    ("log_level", "verbose", "'debug', 'info', 'warning', 'error'"),
    ("log_level", 1, "'debug', 'info', 'warning', 'error'"),
    ("state_dir", "var/lib/drbdha", "absolute"),
    ("state_dir", '/var/lib/"drbdha"', "quotes or control characters"),
    ("example", True, "this is the example file"),
    ("example", "no", "true or false"),
]


@pytest.mark.parametrize(("key", "value", "fragment"), DAEMON_BAD)
def test_bad_daemon_value(key: str, value: Any, fragment: str) -> None:
    problems = _problems({"daemon": {key: value}, "vrrp_instance": [_instance()]})
    assert_one_problem(problems, f"daemon.{key}", fragment)


def test_every_daemon_option_has_a_bad_value_case() -> None:
    assert {key for key, _, _ in DAEMON_BAD} == set(DAEMON_OPTIONS)


def test_duplicate_names() -> None:
    data = {"vrrp_instance": [_instance(), _instance(vrid=52), _instance(vrid=53)]}
    problems = _problems(data)
    assert [p for p, _ in problems] == ["vrrp_instance[1].name", "vrrp_instance[2].name"]
    assert all("vrrp_instance[0]" in msg for _, msg in problems)


def test_duplicate_vrid_on_one_interface() -> None:
    data = {"vrrp_instance": [_instance(name="a"), _instance(name="b")]}
    problems = _problems(data)
    assert_one_problem(problems, "vrrp_instance[1].vrid", "vrrp_instance[0]")
    assert "eth0" in problems[0][1]


def test_same_vrid_elsewhere_is_fine() -> None:
    # RFC 5798 §5.2.3: a VRID is unique per interface *and* address family.
    parse(
        {
            "vrrp_instance": [
                _instance(name="a"),
                _instance(name="b", interface="eth1"),  # another interface
                _instance(name="c", virtual_ipaddress=["fd00::1/64"]),  # another family
            ]
        }
    )


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    text = """\
[daemon]
log_level = "loud"
metrics_listen = "nowhere"
color = true

[[vrrp_instance]]
name = "a"
interface = "eth0"
vrid = 300
priority = 0
version = 2
advert_interval = 0.5
virtual_ipaddress = ["fd00::1/64"]

[[vrrp_instance]]
interface = "eth0"
vrid = 1
virtual_ipaddress = ["192.0.2.1/24"]
checksum_mode = "fast"

[extra]
"""
    with pytest.raises(ConfigError) as exc:
        load(_write(tmp_path, text))
    paths = [p for p, _ in exc.value.problems]
    assert paths == sorted(paths)
    assert set(paths) == {
        "daemon.log_level",
        "daemon.metrics_listen",
        "daemon.color",
        "vrrp_instance[0].vrid",
        "vrrp_instance[0].priority",
        "vrrp_instance[0].advert_interval",
        "vrrp_instance[0].version",
        "vrrp_instance[1].name",
        "vrrp_instance[1].checksum_mode",
        "extra",
    }
    assert len(paths) == len(set(paths))
    message = str(exc.value)
    for path in paths:
        assert path in message


def test_datetime_types_are_rejected_as_values() -> None:
    for value in (datetime(2024, 1, 1, tzinfo=UTC), date(2024, 1, 1), time(12, 0)):
        assert _paths({"vrrp_instance": [_instance(preempt_delay=value)]}) == {
            "vrrp_instance[0].preempt_delay"
        }


@pytest.mark.parametrize(
    ("peer", "fragment"),
    [
        ("::", "unspecified address"),
        ("::1", "loopback address"),
        ("::ffff:127.0.0.1", "loopback address"),  # IPv4-mapped: ipaddress says not loopback
        ("ff02::12", "multicast address"),
        ("fe80::2%eth0", "without a %zone"),
    ],
)
def test_ipv6_unicast_peers_must_be_another_host(peer: str, fragment: str) -> None:
    inst = _instance(virtual_ipaddress=["fd00::100/64"], unicast_peers=[peer])
    problems = _problems({"vrrp_instance": [inst]})
    assert_one_problem(problems, "vrrp_instance[0].unicast_peers", fragment)
