"""Bad input: crafted adverts on the wire, and broken configuration files.

Adverts. One drbdha daemon runs four instances on host d: v3 IPv4 multicast (vrid 51), v2
IPv4 (vrid 52, 1 s), v3 IPv4 unicast with d's configured peer (vrid 53), v3 IPv6 (vrid 54).
It runs either alone (every instance master) or as backup of keepalived on host `peer`
(drbdha as master when keepalived is missing). Host x injects Ethernet frames built with scapy
on an AF_PACKET socket. Each crafted advert carries priority 254, so if it were accepted a
master would step down. After each kind: the daemon still runs, no instance changed state, and
drbdha_vrrp_invalid_adverts_total{instance, reason} rose by exactly the number sent. A valid
advert sent the same way is counted as received (the control that proves the path).

Config. `drbdha check-config` and `drbdha run` on broken files exit 2 and name the key on
stderr; nothing ever prints a traceback.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import drbdha_toml
import pytest
from netlab import (
    DRBDHA,
    DrbdhaNode,
    Host,
    Inst,
    KeepalivedNode,
    Lab,
    addresses,
    run,
)
from netns import inside
from polling import wait_until
from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.layers.vrrp import VRRP, VRRPv3
from scapy.packet import Packet, Raw

from drbdha.errors import MalformedPacket
from drbdha.vrrp import packet as codec

V3M = Inst(name="v3m", vrid=51, vips=["10.250.0.101/24"])
V2M = Inst(name="v2m", vrid=52, version=2, advert_interval=1, vips=["10.250.0.102/24"])
V6M = Inst(name="v6m", vrid=54, vips=["fd00:250::104/64"])
GROUP4, GROUP6 = "224.0.0.18", "ff02::12"
MAC4, MAC6 = "01:00:5e:00:00:12", "33:33:00:00:00:12"
SENT = 3  # frames per case


def _instances(peer: Host, prio: int, d: Host | None = None) -> list[Inst]:
    unicast = Inst(
        name="v3u",
        vrid=53,
        vips=["10.250.0.103/24"],
        unicast_peers=[str(peer.ip4 if d is None else d.ip4)],
    )
    return [Inst(**{**vars(i), "priority": prio}) for i in (V3M, V2M, unicast, V6M)]


@dataclass
class Target:
    lab: Lab
    daemon: DrbdhaNode
    role: str
    d: Host
    x: Host
    peer: Host
    states: dict[str, str]

    def current(self) -> dict[str, str | None]:
        return {n: self.daemon.state(n) for n in self.states}


@pytest.fixture(scope="module", params=["master", "backup"])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    role = request.param
    with Lab(["d", "peer", "x"]) as lab:
        d, peer, x = lab.host("d"), lab.host("peer"), lab.host("x")
        if role == "backup":
            peer_insts = _instances(peer, 200, d=d)
            if shutil.which("keepalived"):
                other: Any = KeepalivedNode(lab, peer, peer_insts)
            else:
                other = DrbdhaNode(lab, peer, peer_insts, metrics=False)
            other.start()
            for inst in peer_insts:
                other.wait_state("master", inst.name, timeout=8)
        daemon = DrbdhaNode(lab, d, _instances(peer, 100)).start()
        states = {i.name: role for i in _instances(peer, 100)}
        for name in states:
            daemon.wait_state(role, name, timeout=8)
        yield Target(lab, daemon, role, d, x, peer, states)


# ---- frames -----------------------------------------------------------------------------


def _v4(t: Target, vrrp: Packet | bytes, *, ttl: int = 255, unicast: bool = False) -> bytes:
    dst_ip, dst_mac = (str(t.d.ip4), t.d.mac) if unicast else (GROUP4, MAC4)
    payload = Raw(vrrp) if isinstance(vrrp, bytes) else vrrp
    frame = (
        Ether(src=t.x.mac, dst=dst_mac)
        / IP(src=str(t.x.ip4), dst=dst_ip, ttl=ttl, proto=112, tos=0xC0)
        / payload
    )
    return bytes(frame)


def _v6(t: Target, vrrp: Packet, *, hlim: int = 255) -> bytes:
    frame = (
        Ether(src=t.x.mac, dst=MAC6)
        / IPv6(src=str(t.x.ll6), dst=GROUP6, hlim=hlim, nh=112, tc=0xC0)
        / vrrp
    )
    return bytes(frame)


def _adv3(vrid: int = 51, vip: str = "10.250.0.101", **kw: Any) -> Packet:
    return VRRPv3(**{"vrid": vrid, "priority": 254, "adv": 10, "addrlist": [vip], **kw})


def _adv2(**kw: Any) -> Packet:
    fields = {"vrid": 52, "priority": 254, "adv": 1, "addrlist": ["10.250.0.102"], **kw}
    return VRRP(**fields)


def _vrrp_bytes(frame: bytes) -> bytes:
    return frame[14 + 20 :]


def _random_payload(t: Target) -> tuple[bytes, str]:
    """Random bytes with our VRID at byte 1; the reason is whatever the codec says first
    (predicted here with drbdha's own decoder, so the daemon's wiring is what is tested)."""
    rng = random.Random(5798)  # noqa: S311 (test data, not crypto)
    while True:
        data = bytearray(rng.randbytes(rng.randrange(2, 40)))
        data[1] = 51
        try:
            codec.decode(
                bytes(data), version=3, src=t.x.ip4, dst=IPv4Address(GROUP4), hop_limit=255
            )
        except MalformedPacket as e:
            return bytes(data), e.reason


Case = Callable[[Target], tuple[str, str, bytes]]  # -> (instance, reason, frame)

CASES: dict[str, Case] = {
    "ttl_254": lambda t: ("v3m", "ttl", _v4(t, _adv3(), ttl=254)),
    "bad_checksum": lambda t: ("v3m", "checksum", _v4(t, _adv3(chksum=0xDEAD))),
    "wrong_version": lambda t: (
        "v3m",
        "version",
        _v4(t, _adv2(vrid=51, addrlist=["10.250.0.101"])),
    ),
    "wrong_type": lambda t: ("v3m", "type", _v4(t, _adv3(type=2))),
    "truncated": lambda t: ("v3m", "length", _v4(t, _vrrp_bytes(_v4(t, _adv3()))[:6])),
    "truncated_address": lambda t: ("v3m", "length", _v4(t, _vrrp_bytes(_v4(t, _adv3()))[:10])),
    "count_mismatch": lambda t: ("v3m", "count", _v4(t, _adv3(ipcount=2))),
    "interval_zero": lambda t: ("v3m", "interval", _v4(t, _adv3(adv=0))),
    "random_bytes": lambda t: ("v3m", _random_payload(t)[1], _v4(t, _random_payload(t)[0])),
    "unknown_unicast_source": lambda t: (
        "v3u",
        "unknown_peer",
        _v4(t, _adv3(vrid=53, vip="10.250.0.103"), unicast=True),
    ),
    "v2_interval_mismatch": lambda t: ("v2m", "interval_mismatch", _v4(t, _adv2(adv=2))),
    "v2_auth": lambda t: ("v2m", "auth", _v4(t, _adv2(authtype=1))),
    "v2_bad_checksum": lambda t: ("v2m", "checksum", _v4(t, _adv2(chksum=0xBEEF))),
    "ipv6_hop_limit_254": lambda t: (
        "v6m",
        "ttl",
        _v6(t, _adv3(vrid=54, vip="fd00:250::104"), hlim=254),
    ),
    "ipv6_wrong_type": lambda t: (
        "v6m",
        "type",
        _v6(t, _adv3(vrid=54, vip="fd00:250::104", type=3)),
    ),
}


def _inject(t: Target, frame: bytes, count: int = SENT) -> None:
    with inside(t.x.ns):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    try:
        sock.bind((t.x.ifname, 0))
        for _ in range(count):
            sock.send(frame)
            time.sleep(0.01)
    finally:
        sock.close()


def _counter(t: Target, name: str, instance: str, **labels: str) -> float:
    # The label is vrrp_instance: Prometheus owns `instance` (the scrape target).
    return t.daemon.metric(name, vrrp_instance=instance, **labels)


def _assert_undisturbed(t: Target, transitions_before: int) -> None:
    assert t.daemon.running, f"daemon died:\n{t.daemon.log_tail()}"
    assert t.current() == t.states
    after = len(t.daemon.events("vrrp.transition"))
    assert after == transitions_before, t.daemon.events("vrrp.transition")[transitions_before:]
    if t.role == "master":
        held = addresses(t.d.ns)
        assert {"10.250.0.101", "10.250.0.102", "10.250.0.103", "fd00:250::104"} <= set(held)
    tracebacks = [e for e in t.daemon.events() if "exception" in e]
    assert not tracebacks, tracebacks
    assert "Traceback" not in t.daemon.proc.output()  # type: ignore[union-attr]


@pytest.mark.parametrize("case", list(CASES))
def test_crafted_advert_is_refused_and_counted(target: Target, case: str) -> None:
    instance, reason, frame = CASES[case](target)
    metric = "drbdha_vrrp_invalid_adverts_total"
    before = _counter(target, metric, instance=instance, reason=reason)
    transitions = len(target.daemon.events("vrrp.transition"))
    _inject(target, frame)

    def count() -> float:
        return _counter(target, metric, instance=instance, reason=reason)

    wait_until(
        lambda: (
            f"{metric}{{vrrp_instance={instance},reason={reason}}} {before} -> "
            f"{count()}, log tail:\n{target.daemon.log_tail()}"
        ),
        lambda: count() >= before + SENT,
        3,
        every=0.02,
    )
    # Several master intervals: a refused advert must not have reset or moved anything.
    time.sleep(0.4)
    assert count() == before + SENT
    _assert_undisturbed(target, transitions)


def test_valid_advert_control(target: Target) -> None:
    """The same injection path with a valid advert: counted as received, and a master
    steps down for it (then takes over again when it stops)."""
    metric = "drbdha_vrrp_adverts_received_total"
    before = _counter(target, metric, instance="v3m")
    _inject(target, _v4(target, _adv3()), count=1)
    wait_until(
        "valid advert counted",
        lambda: _counter(target, metric, instance="v3m") >= before + 1,
        3,
        every=0.02,
    )
    if target.role == "master":
        target.daemon.wait_state("master", "v3m", timeout=3)
        assert [t["new"] for t in target.daemon.transitions("v3m")][-2:] == ["backup", "master"]
    assert target.current() == target.states


# ---- broken configuration ---------------------------------------------------------------

GOOD = drbdha_toml.render(
    daemon={"metrics_listen": ""},
    instances=[
        {
            "name": "vi1",
            "interface": "eth0",
            "vrid": 51,
            "virtual_ipaddress": ["10.250.0.100/24"],
        }
    ],
)


def _with(extra: str = "", drop: str = "") -> str:
    lines = [ln for ln in GOOD.splitlines() if not (drop and ln.startswith(drop + " "))]
    return "\n".join(lines) + "\n" + extra + "\n"


def _swap(old: str, new: str) -> str:
    return GOOD.replace(old, new)


VI = "vrrp_instance[0]."  # the key path of the one instance's keys
VIP = "10.250.0.100/24"
BAD_CONFIGS: dict[str, tuple[str | bytes, str]] = {
    "vrid_out_of_range": (_swap("vrid = 51", "vrid = 256"), VI + "vrid"),
    "unknown_key": (_with("prio = 5"), VI + "prio"),
    "missing_interface": (_with(drop="interface"), VI + "interface"),
    "v2_fractional_interval": (_with("version = 2\nadvert_interval = 0.5"), VI + "advert_interval"),
    "v3_interval_too_fine": (_with("advert_interval = 0.015"), VI + "advert_interval"),
    "vip_not_a_list": (_swap(f'["{VIP}"]', f'"{VIP}"'), VI + "virtual_ipaddress"),
    "vip_garbage": (_swap(VIP, "10.250.0.300/24"), VI + "virtual_ipaddress"),
    "vip_without_prefix": (_swap(VIP, "10.250.0.100"), VI + "virtual_ipaddress"),
    "mixed_families": (_swap(f'"{VIP}"', f'"{VIP}", "fd00::1/64"'), VI + "virtual_ipaddress"),
    "peer_family": (_with('unicast_peers = ["fd00::2"]'), VI + "unicast_peers"),
    "v2_ipv6": (_swap(VIP, "fd00::100/64") + "version = 2\n", VI + "version"),
    "version_4": (_with("version = 4"), VI + "version"),
    "huge_priority": (_with("priority = 99999999999999999999999999999"), VI + "priority"),
    "priority_bool": (_with("priority = true"), VI + "priority"),
    "infinite_interval": (_with("advert_interval = inf"), VI + "advert_interval"),
    "nan_delay": (_with("preempt_delay = nan"), VI + "preempt_delay"),
    "preempt_string": (_with('preempt = "yes"'), VI + "preempt"),
    "checksum_mode": (_with('checksum_mode = "both"'), VI + "checksum_mode"),
    "metrics_listen": (
        _swap('metrics_listen = ""', 'metrics_listen = "nope"'),
        "daemon.metrics_listen",
    ),
    "metrics_port_range": (
        _swap('metrics_listen = ""', 'metrics_listen = "127.0.0.1:70000"'),
        "daemon.metrics_listen",
    ),
    "interface_name_too_long": (_swap('"eth0"', '"a-very-long-interface-name"'), VI + "interface"),
    "no_instance": ('[daemon]\nmetrics_listen = ""\n', "vrrp_instance"),
    "instance_not_table": ("vrrp_instance = [1, 2]\n", "vrrp_instance[0]"),
    "duplicate_vrid": (
        GOOD + GOOD.split("\n", 3)[3].replace('"vi1"', '"vi2"'),
        "vrrp_instance[1].vrid",
    ),
    "unknown_section": (GOOD + "\n[bogus]\nx = 1\n", "bogus"),
    "toml_syntax": (GOOD + "vrid = = 5\n", "not valid TOML"),
    "not_utf8": (b"\xff\xfe[daemon]\n\x80\x81", "not valid TOML"),
    "empty_file": ("", "vrrp_instance"),
}


@pytest.fixture(scope="module")
def cfg_host() -> Iterator[Host]:
    with Lab(["cfg"]) as lab:
        yield lab.host("cfg")


def _drbdha(host: Host, *args: str) -> subprocess.CompletedProcess[str]:
    return run(host.ns, [DRBDHA, *args], check=False, timeout=20)


@pytest.mark.parametrize("command", ["check-config", "run"])
@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_exits_2_naming_the_key(
    cfg_host: Host, tmp_path: Path, case: str, command: str
) -> None:
    content, key = BAD_CONFIGS[case]
    path = tmp_path / "drbdha.toml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    proc = _drbdha(cfg_host, command, "-c", str(path))
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert key in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("command", ["check-config", "run"])
@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_unreadable_config_path(cfg_host: Host, tmp_path: Path, kind: str, command: str) -> None:
    path = tmp_path / "nope.toml" if kind == "missing" else tmp_path
    proc = _drbdha(cfg_host, command, "-c", str(path))
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert str(path) in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_all_errors_listed_at_once(cfg_host: Host, tmp_path: Path) -> None:
    path = tmp_path / "drbdha.toml"
    path.write_text(_with("prio = 5\nversion = 7", drop="interface").replace("51", "0"))
    proc = _drbdha(cfg_host, "check-config", "-c", str(path))
    assert proc.returncode == 2
    for key in (
        "vrrp_instance[0].prio",
        "vrrp_instance[0].version",
        "vrrp_instance[0].interface",
        "vrrp_instance[0].vrid",
    ):
        assert key in proc.stderr, proc.stderr


@pytest.mark.parametrize("problem", ["missing_interface", "metrics_port_in_use"])
def test_run_time_errors_are_reported_without_traceback(
    cfg_host: Host, tmp_path: Path, problem: str
) -> None:
    """Valid files that cannot run here: a clear one-line failure, exit 1, and no VIP."""
    path = tmp_path / "drbdha.toml"
    blocker = None
    if problem == "missing_interface":
        path.write_text(GOOD.replace('"eth0"', '"nope0"'))
        expect = "nope0"
    else:
        with inside(cfg_host.ns):
            blocker = socket.socket()
            blocker.bind(("127.0.0.1", 0))
            blocker.listen()
        port = blocker.getsockname()[1]
        path.write_text(GOOD.replace('metrics_listen = ""', f'metrics_listen = "127.0.0.1:{port}"'))
        expect = "daemon.failed"
    try:
        proc = _drbdha(cfg_host, "run", "-c", str(path))
    finally:
        if blocker is not None:
            blocker.close()
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, (proc.returncode, out)
    assert expect in out, out
    assert "Traceback" not in out, out
    assert "10.250.0.100" not in addresses(cfg_host.ns, "eth0")
