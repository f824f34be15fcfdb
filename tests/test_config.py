"""Configuration: a valid file gives the expected dataclasses, the file itself is read or
refused by name, and nothing but a ConfigError is ever raised (the bad values, each named at
its key path: test_config_problems)."""

from __future__ import annotations

import copy
import math
import re
from datetime import UTC
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from pathlib import Path
from typing import Any

import pytest
from config_cases import instance as _instance
from config_cases import write_config as _write
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
    ((key, msg),) = _load_problems(EXAMPLE)
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


# ---- the file itself ------------------------------------------------------------------------


def _load_problems(path: Path) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as exc:
        load(path)
    return exc.value.problems


def _file_problem(path: Path) -> str:
    """load(path) fails with one problem, at the file itself: its message."""
    [(where, msg)] = _load_problems(path)
    assert where == str(path)
    return msg


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    assert _load_problems(path) == [(str(path), "file not found")]


def test_bad_toml(tmp_path: Path) -> None:
    msg = _file_problem(_write(tmp_path, "[daemon\nlog_level = 'info'\n"))
    assert msg.startswith("not valid TOML")
    assert "line 1" in msg  # tomllib's position reaches the operator


def test_duplicate_toml_key(tmp_path: Path) -> None:
    path = _write(tmp_path, "[daemon]\nlog_level = 'info'\nlog_level = 'debug'\n")
    assert _load_problems(path)[0][1].startswith("not valid TOML")


def test_not_utf8(tmp_path: Path) -> None:
    # Regression: tomllib let UnicodeDecodeError escape.
    path = _write(tmp_path, b'[daemon]\nlog_level = "\xff"\n')
    assert _file_problem(path).startswith("not valid TOML")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    # Regression: IsADirectoryError escaped as a traceback.
    assert _file_problem(tmp_path).startswith("cannot read")


def test_huge_integer_from_toml(tmp_path: Path) -> None:
    # Regression: tomllib integers are unbounded; math.isfinite() overflowed on them.
    text = FULL_TOML.replace("advert_interval = 2\n", "advert_interval = " + "9" * 400 + "\n")
    found = _load_problems(_write(tmp_path, text))
    assert [p for p, _ in found] == ["vrrp_instance[0].advert_interval"]


def test_toml_datetime_value(tmp_path: Path) -> None:
    text = FULL_TOML.replace("preempt_delay = 30\n", "preempt_delay = 1979-05-27T07:32:00Z\n")
    found = _load_problems(_write(tmp_path, text))
    assert [p for p, _ in found] == ["vrrp_instance[0].preempt_delay"]


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
        "vrrp_instance.auth_hmac": config.AUTH_HMAC_OPTIONS,
    }
    missing = [
        f"{table}.{key}"
        for table, options in tables.items()
        for key in options
        if not re.search(rf"^#? ?{key} = ", text, re.MULTILINE)
    ]
    assert missing == []
