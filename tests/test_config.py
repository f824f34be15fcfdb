"""Configuration: a valid file gives the expected dataclasses; every bad value gives a
ConfigError naming the exact key path; nothing else is ever raised."""

from __future__ import annotations

import copy
import math
import re
from datetime import UTC, date, datetime, time
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drbdha.config import (
    DAEMON_OPTIONS,
    INSTANCE_OPTIONS,
    Config,
    DaemonConfig,
    VrrpInstanceConfig,
    load,
    parse,
)
from drbdha.errors import ConfigError

FULL_TOML = """\
[daemon]
control_socket = "/run/drbdha/ctl.sock"
metrics_listen = "[::1]:9100"
log_level = "debug"

[[vrrp_instance]]
name = "nfs"
interface = "eth0"
vrid = 51
priority = 200
version = 2
advert_interval = 2
virtual_ipaddress = ["192.0.2.100/24", "192.0.2.101/32"]
preempt = false
preempt_delay = 30
unicast_peers = ["192.0.2.2", "192.0.2.3"]
checksum_mode = "pseudo"
garp_master_repeat = 3
garp_master_delay = 2.5
garp_master_refresh = 0

[[vrrp_instance]]
name = "nfs6"
interface = "bond0.100"
vrid = 51
priority = 255
version = 3
advert_interval = 0.01
virtual_ipaddress = ["fd00::100/64"]

[[vrrp_instance]]
name = "fast"
interface = "eth1"
vrid = 7
advert_interval = 40.95
virtual_ipaddress = ["198.51.100.7/24"]
checksum_mode = "rfc9568"
"""

FULL_EXPECTED = Config(
    daemon=DaemonConfig(
        control_socket=Path("/run/drbdha/ctl.sock"),
        metrics_listen="[::1]:9100",
        log_level="debug",
    ),
    vrrp_instances=(
        VrrpInstanceConfig(
            name="nfs",
            interface="eth0",
            vrid=51,
            priority=200,
            version=2,
            advert_interval=2.0,
            virtual_ipaddress=(IPv4Interface("192.0.2.100/24"), IPv4Interface("192.0.2.101/32")),
            preempt=False,
            preempt_delay=30.0,
            unicast_peers=(IPv4Address("192.0.2.2"), IPv4Address("192.0.2.3")),
            checksum_mode="pseudo",
            garp_master_repeat=3,
            garp_master_delay=2.5,
            garp_master_refresh=0.0,
        ),
        VrrpInstanceConfig(
            name="nfs6",
            interface="bond0.100",
            vrid=51,  # same VRID and interface name as another family is fine: separate VR
            priority=255,
            version=3,
            advert_interval=0.01,
            virtual_ipaddress=(IPv6Interface("fd00::100/64"),),
        ),
        VrrpInstanceConfig(
            name="fast",
            interface="eth1",
            vrid=7,
            priority=100,
            version=3,
            advert_interval=40.95,
            virtual_ipaddress=(IPv4Interface("198.51.100.7/24"),),
            checksum_mode="rfc9568",
        ),
    ),
)


def _write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "drbdha.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def test_full_config(tmp_path: Path) -> None:
    path = _write(tmp_path, FULL_TOML)
    cfg = load(path)
    assert cfg == FULL_EXPECTED
    assert cfg.source == path
    nfs, nfs6, fast = cfg.vrrp_instances
    assert type(nfs.advert_interval) is float  # TOML integer 2 becomes 2.0 seconds
    assert type(nfs.preempt_delay) is float
    assert (nfs.family, nfs6.family, fast.family) == (4, 6, 4)
    assert nfs6.unicast_peers == ()


def test_defaults() -> None:
    cfg = parse({"vrrp_instance": [_instance()]})
    assert cfg.daemon == DaemonConfig(
        control_socket=Path("/run/drbdha/control.sock"),
        metrics_listen="127.0.0.1:9943",
        log_level="info",
    )
    (inst,) = cfg.vrrp_instances
    assert inst == VrrpInstanceConfig(
        name="vi",
        interface="eth0",
        vrid=51,
        priority=100,
        version=3,
        advert_interval=1.0,
        virtual_ipaddress=(IPv4Interface("192.0.2.100/24"),),
        preempt=True,
        preempt_delay=0.0,
        unicast_peers=(),
        checksum_mode="pseudo",
        garp_master_repeat=5,
        garp_master_delay=5.0,
        garp_master_refresh=60.0,
    )


EXAMPLE = Path(__file__).parent.parent / "etc" / "drbdha.toml"


def test_example_config_is_refused_until_edited(tmp_path: Path) -> None:
    """The example is what the package installs as /etc/drbdha/drbdha.toml: its one error is
    `example = true`, which says what to do; without that line it is a valid configuration."""
    with pytest.raises(ConfigError) as e:
        load(EXAMPLE)
    ((key, msg),) = e.value.problems
    assert key == "daemon.example"
    assert "delete this line" in msg
    edited = EXAMPLE.read_text().replace("example = true\n", "")
    assert edited != EXAMPLE.read_text()
    assert load(_write(tmp_path, edited)).vrrp_instances


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_example_config_stops_check_config_and_run(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from drbdha import cli  # noqa: PLC0415 (the command, not the loader)

    assert cli.main([command, "-c", str(EXAMPLE)]) == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    assert "daemon.example: this is the example file" in err


def test_example_false_or_absent_is_no_setting() -> None:
    for daemon in ({"example": False}, {}):
        assert parse({"daemon": daemon, "vrrp_instance": [_instance()]}).daemon == DaemonConfig()


def test_dataclasses_are_frozen() -> None:
    cfg = parse({"vrrp_instance": [_instance()]})
    with pytest.raises(AttributeError):
        cfg.vrrp_instances[0].priority = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("key", "value", "want"),
    [
        ("advert_interval", 1, 1.0),
        ("advert_interval", 0.01, 0.01),
        ("advert_interval", 0.1, 0.1),
        ("advert_interval", 40.95, 40.95),
        ("advert_interval", 4.1, 4.1),  # 4.1 * 100 = 409.99999999999994 in binary floats
        ("priority", 255, 255),
        ("priority", 1, 1),
        ("vrid", 255, 255),
        ("unicast_peers", ["192.0.2.9"], (IPv4Address("192.0.2.9"),)),
        ("name", "x" * 57, "x" * 57),
        ("name", "vr_eth0_51", "vr_eth0_51"),  # bench/vrrp_bench.py's
        ("name", "nfs.a-1_b", "nfs.a-1_b"),
        ("virtual_ipaddress", [f"10.0.{i // 200}.{i % 200 + 1}/16" for i in range(255)], 255),
    ],
)
def test_boundary_values_accepted(key: str, value: Any, want: Any) -> None:
    (inst,) = parse({"vrrp_instance": [_instance(**{key: value})]}).vrrp_instances
    got = getattr(inst, key)
    assert (len(got) if isinstance(want, int) and isinstance(got, tuple) else got) == want


@pytest.mark.parametrize(
    "listen",
    ["", "127.0.0.1:9942", "0.0.0.0:1", ":9942", "[::1]:65535", "[::]:9942", "[fe80::1%eth0]:9942"],
)
def test_metrics_listen_good_forms(listen: str) -> None:
    cfg = parse({"daemon": {"metrics_listen": listen}, "vrrp_instance": [_instance()]})
    assert cfg.daemon.metrics_listen == listen


# ---- every bad value names its key path ----------------------------------------------------


def _instance(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "vi",
        "interface": "eth0",
        "vrid": 51,
        "virtual_ipaddress": ["192.0.2.100/24"],
    }
    base.update(overrides)
    return base


def _problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as exc:
        parse(data)
    problems = exc.value.problems
    assert problems, "a ConfigError must carry at least one problem"
    for path, msg in problems:
        assert isinstance(path, str)
        assert isinstance(msg, str)
        assert msg
        assert path in str(exc.value)
    return problems


def _paths(data: dict[str, Any]) -> set[str]:
    return {path for path, _ in _problems(data)}


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
    assert [path for path, _ in problems] == [f"vrrp_instance[0].{key}"]
    assert fragment in problems[0][1]


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
    assert [p for p, _ in problems] == [f"vrrp_instance[0].{path}"]
    assert fragment in problems[0][1]


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
    assert [p for p, _ in problems] == [f"daemon.{key}"]
    assert fragment in problems[0][1]


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
    assert [p for p, _ in problems] == ["vrrp_instance[1].vrid"]
    assert "vrrp_instance[0]" in problems[0][1]
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


# ---- the file itself ------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as exc:
        load(path)
    assert exc.value.problems == [(str(path), "file not found")]


def test_bad_toml(tmp_path: Path) -> None:
    path = _write(tmp_path, "[daemon\nlog_level = 'info'\n")
    with pytest.raises(ConfigError) as exc:
        load(path)
    [(where, msg)] = exc.value.problems
    assert where == str(path)
    assert msg.startswith("not valid TOML")
    assert "line 1" in msg  # tomllib's position reaches the operator


def test_duplicate_toml_key(tmp_path: Path) -> None:
    path = _write(tmp_path, "[daemon]\nlog_level = 'info'\nlog_level = 'debug'\n")
    with pytest.raises(ConfigError) as exc:
        load(path)
    assert exc.value.problems[0][1].startswith("not valid TOML")


def test_not_utf8(tmp_path: Path) -> None:
    # Regression: tomllib let UnicodeDecodeError escape.
    path = _write(tmp_path, b'[daemon]\nlog_level = "\xff"\n')
    with pytest.raises(ConfigError) as exc:
        load(path)
    [(where, msg)] = exc.value.problems
    assert where == str(path)
    assert msg.startswith("not valid TOML")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    # Regression: IsADirectoryError escaped as a traceback.
    with pytest.raises(ConfigError) as exc:
        load(tmp_path)
    [(where, msg)] = exc.value.problems
    assert where == str(tmp_path)
    assert msg.startswith("cannot read")


def test_huge_integer_from_toml(tmp_path: Path) -> None:
    # Regression: tomllib integers are unbounded; math.isfinite() overflowed on them.
    text = FULL_TOML.replace("advert_interval = 2\n", "advert_interval = " + "9" * 400 + "\n")
    with pytest.raises(ConfigError) as exc:
        load(_write(tmp_path, text))
    assert [p for p, _ in exc.value.problems] == ["vrrp_instance[0].advert_interval"]


def test_toml_datetime_value(tmp_path: Path) -> None:
    text = FULL_TOML.replace("preempt_delay = 30\n", "preempt_delay = 1979-05-27T07:32:00Z\n")
    with pytest.raises(ConfigError) as exc:
        load(_write(tmp_path, text))
    assert [p for p, _ in exc.value.problems] == ["vrrp_instance[0].preempt_delay"]


# ---- nothing but ConfigError, whatever the input ----------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
toml_scalars = st.datetimes(timezones=st.sampled_from([None, UTC])) | st.dates() | st.times()
plausible_strings = st.sampled_from(
    [
        "",
        "eth0",
        "192.0.2.1/24",
        "fd00::1/64",
        "192.0.2.2",
        "fd00::2",
        "pseudo",
        "rfc9568",
        "info",
        "/run/x.sock",
        "127.0.0.1:9942",
        "[::1]:1",
        "::1:9942",
        "0.0.0.0/0",
        "x" * 20,
    ]
)
values = json_values | toml_scalars | plausible_strings | st.lists(plausible_strings, max_size=3)


def _table(options: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    keys = st.sampled_from(sorted(options)) | st.text(max_size=6)
    return st.dictionaries(keys, values, max_size=len(options) + 2)


@st.composite
def configs(draw: st.DrawFn) -> dict[str, Any]:
    data: dict[str, Any] = draw(st.dictionaries(st.text(max_size=6), values, max_size=2))
    if draw(st.booleans()):
        data["daemon"] = draw(_table(DAEMON_OPTIONS) | values)
    if draw(st.booleans()):
        # Start from a valid instance now and then, so cross-key rules get reached.
        instance = st.builds(
            lambda base, extra: {**base, **extra},
            st.just(_instance()) | st.just({}),
            _table(INSTANCE_OPTIONS),
        )
        data["vrrp_instance"] = draw(st.lists(instance | values, max_size=3) | values)
    return data


@given(configs())
def test_random_configs_give_config_or_config_error(data: dict[str, Any]) -> None:
    snapshot = copy.deepcopy(data)
    try:
        cfg = parse(data)
    except ConfigError as e:
        assert e.problems
        assert all(isinstance(p, str) and isinstance(m, str) for p, m in e.problems)
    else:
        assert isinstance(cfg, Config)
        assert cfg.vrrp_instances
    assert data == snapshot or _has_nan(snapshot)  # parse() never mutates its input


def _has_nan(value: Any) -> bool:
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, dict):
        return any(_has_nan(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_nan(v) for v in value)
    return False


@given(st.binary(max_size=200))
def test_random_files_give_config_or_config_error(raw: bytes) -> None:
    # tmp_path is function-scoped and hypothesis reuses it; write a fresh file per example.
    import tempfile  # noqa: PLC0415 - only this test needs it

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.toml"
        path.write_bytes(raw)
        try:
            load(path)
        except ConfigError as e:
            assert e.problems


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
    assert [p for p, _ in problems] == ["vrrp_instance[0].unicast_peers"]
    assert fragment in problems[0][1]


def test_ipv6_peers_with_ipv6_vips() -> None:
    (inst,) = parse(
        {
            "vrrp_instance": [
                _instance(
                    virtual_ipaddress=["fd00::100/64"],
                    unicast_peers=["fe80::2"],
                )
            ]
        }
    ).vrrp_instances
    assert inst.unicast_peers == (IPv6Address("fe80::2"),)
    assert inst.family == 6


def test_every_key_is_documented_in_etc() -> None:
    """etc/drbdha.toml is the reference: each key appears there, set or commented out."""
    from drbdha import config  # noqa: PLC0415 (the tables, not the names imported above)

    text = (Path(__file__).parent.parent / "etc" / "drbdha.toml").read_text()
    tables = {
        "daemon": config.DAEMON_OPTIONS,
        "vrrp_instance": config.INSTANCE_OPTIONS,
        "storage": config.STORAGE_OPTIONS,
        "peer": config.PEER_OPTIONS,
    }
    missing = [
        f"{table}.{key}"
        for table, options in tables.items()
        for key in options
        if not re.search(rf"^#? ?{key} = ", text, re.MULTILINE)
    ]
    assert missing == []
