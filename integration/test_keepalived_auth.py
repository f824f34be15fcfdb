"""auth_hmac against keepalived 2.4.3 (issue 24), built from the vendored tarball by
integration/build-keepalived (cached). One drbdha and one keepalived sign with the same key
in "enforce" mode: VRRPv3 over IPv4 and IPv6, multicast and unicast, and VRRPv2 multicast
and unicast; drbdha as the master and as the backup. The backup stays backup only because
it accepts the master's signed adverts; the master killed, the backup takes over. A forged
unsigned advert with priority 255 moves neither an enforcing keepalived master nor an
enforcing drbdha master. The rollout and a key rotation by reloads move nobody in a mixed
group either.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from ipaddress import ip_address
from pathlib import Path

import pytest
from netlab import VIP4, VIP6, DrbdhaNode, Host, Inst, KeepalivedNode, Lab, wait_exactly_one_master
from netlab.drbdha_node import node_config
from netlab.keepalived_node import keepalived_conf
from polling import wait_until
from scapy.layers.inet import IP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from test_auth_hmac_netns import inject

from drbdha.vrrp import packet

REPO = Path(__file__).resolve().parent.parent
KEY = bytes(range(32))
TOML_AUTH = {"keys": {"1": "hex:" + KEY.hex()}, "active_key": 1, "mode": "enforce"}
KA_AUTH = [
    "auth_hmac {",
    f"    key 1 hex:{KEY.hex()}",
    "    active_key 1",
    "    mode enforce",
    "}",
]

pytestmark = pytest.mark.keepalived
NO_TARBALL = 3  # build-keepalived's exit when the vendored tarball is not there


@pytest.fixture(scope="module")
def keepalived_243() -> str:
    r = subprocess.run(
        [str(REPO / "integration" / "build-keepalived")],
        check=False,
        capture_output=True,
        text=True,
    )
    if r.returncode == NO_TARBALL:
        pytest.skip(r.stderr.strip())
    if r.returncode != 0:
        pytest.fail(f"build-keepalived failed:\n{r.stderr}")
    return r.stdout.splitlines()[-1]


def inst(version: int, mode: str, priority: int, peer: Host, *, keepalived: bool) -> Inst:
    """`mode`: mc4 / uc4 (IPv4 multicast / unicast), v6 / uc6 (IPv6 multicast / unicast to
    the peer's link-local address)."""
    extra: dict[str, object] = {"keepalived": KA_AUTH} if keepalived else {"auth_hmac": TOML_AUTH}
    unicast = {"uc4": [str(peer.ip4)], "uc6": [str(peer.ll6)]}
    return Inst(
        priority=priority,
        version=version,
        advert_interval=0.1 if version == 3 else 1,
        vips=[f"{VIP6}/64"] if mode in ("v6", "uc6") else [f"{VIP4}/24"],
        unicast_peers=unicast.get(mode, []),
        extra=extra,
    )


CASES = [
    pytest.param(version, mode, master, id=f"v{version}-{mode}-{master}_master")
    for version, mode in ((3, "mc4"), (3, "uc4"), (3, "v6"), (3, "uc6"), (2, "mc4"), (2, "uc4"))
    for master in ("drbdha", "keepalived")
]


@pytest.mark.parametrize(("version", "mode", "master"), CASES)
def test_signed_adverts_interoperate(
    lab: Lab, keepalived_243: str, version: int, mode: str, master: str
) -> None:
    ha, hb = lab.host("a"), lab.host("b")
    d_prio, k_prio = (150, 100) if master == "drbdha" else (100, 150)
    d = DrbdhaNode(lab, ha, [inst(version, mode, d_prio, hb, keepalived=False)])
    k = KeepalivedNode(
        lab, hb, [inst(version, mode, k_prio, ha, keepalived=True)], binary=keepalived_243
    )
    first, second = (d, k) if master == "drbdha" else (k, d)
    timeout = 3.0 if version == 3 else 5.0  # v2: Master_Down_Interval 3.6 s at 1 s adverts
    settle = 1.5 if version == 3 else 4.0  # past the backup's Master_Down_Interval (0.36 s, 3.6 s)
    first.start()
    first.wait_state("master", timeout=timeout * 2)
    second.start()
    second.wait_state("backup", timeout=timeout * 2)
    vip = VIP6 if mode in ("v6", "uc6") else VIP4
    client = lab.host("client")
    time.sleep(settle)  # the backup has accepted adverts, or it would be master by now
    assert states_taken(second) == ["backup"]
    assert wait_exactly_one_master([d, k], vip, client, timeout=timeout, expected=first) is first
    if master == "drbdha":
        refused = d.metric("drbdha_vrrp_auth_refused_total", vrrp_instance="vi1", reason="missing")
        assert refused == 0
    first.kill()
    assert wait_exactly_one_master([d, k], vip, client, timeout=timeout * 2, expected=second) is (
        second
    )


def states_taken(node: DrbdhaNode | KeepalivedNode) -> list[str]:
    """Every state `node` went through, from its log or notify FIFO: a moment as master
    shows even if it was taken back."""
    if isinstance(node, KeepalivedNode):
        return [state for _, _, state in node.history]
    return [t["new"] for t in node.transitions()]


@pytest.mark.parametrize("master", ["drbdha", "keepalived"])
def test_a_forged_unsigned_255_moves_no_enforcing_master(
    make_lab: Callable[..., Lab], keepalived_243: str, master: str
) -> None:
    lab = make_lab("a", "b", "client", "x")
    ha, hb, x = lab.host("a"), lab.host("b"), lab.host("x")
    d_prio, k_prio = (150, 100) if master == "drbdha" else (100, 150)
    d = DrbdhaNode(lab, ha, [inst(3, "mc4", d_prio, hb, keepalived=False)])
    k = KeepalivedNode(
        lab, hb, [inst(3, "mc4", k_prio, ha, keepalived=True)], binary=keepalived_243
    )
    first, second = (d, k) if master == "drbdha" else (k, d)
    first.start()
    first.wait_state("master", timeout=6)
    second.start()
    second.wait_state("backup", timeout=6)
    advert = packet.Advertisement(3, 51, 255, 10, (ip_address(VIP4),))
    vrrp = packet.encode(advert, ip_address(str(x.ip4)), ip_address("224.0.0.18"))
    ip = IP(src=str(x.ip4), dst="224.0.0.18", ttl=255, proto=112, tos=0xC0)
    inject(x, bytes(Ether(src=x.mac, dst="01:00:5e:00:00:12") / ip / Raw(vrrp)))
    time.sleep(1.0)  # ten intervals: a master that took it would have stepped down
    assert first.state() == "master"
    assert second.state() == "backup"
    assert [e["new"] for e in d.transitions()] == (
        ["backup", "master"] if master == "drbdha" else ["backup"]
    )


def ka_auth(keys: dict[int, bytes], active: int | None, mode: str) -> list[str]:
    lines = [f"    key {k} hex:{v.hex()}" for k, v in keys.items()]
    if active is not None:
        lines.append(f"    active_key {active}")
    return ["auth_hmac {", *lines, f"    mode {mode}", "}"]


def test_a_rollout_and_a_rotation_in_a_mixed_group_move_nobody(
    lab: Lab, keepalived_243: str
) -> None:
    """keepalived's documented order, one node after the other, drbdha by SIGHUP and
    keepalived by its own reload (SIGHUP): no auth, receive-only, permissive, enforce; then
    key 2 added, signed with, key 1 dropped. drbdha is master throughout."""
    ha, hb = lab.host("a"), lab.host("b")
    key2 = bytes(range(100, 132))
    d = DrbdhaNode(lab, ha, [Inst(priority=150)])
    k = KeepalivedNode(lab, hb, [Inst(priority=100)], binary=keepalived_243)
    d.start()
    d.wait_state("master", timeout=6)
    k.start()
    k.wait_state("backup", timeout=6)
    steps: list[tuple[dict[int, bytes], int | None, str]] = [
        ({1: KEY}, None, "receive-only"),
        ({1: KEY}, 1, "permissive"),
        ({1: KEY}, 1, "enforce"),
        ({1: KEY, 2: key2}, 1, "enforce"),
        ({1: KEY, 2: key2}, 2, "enforce"),
        ({2: key2}, 2, "enforce"),
    ]
    for done, (keys, active, mode) in enumerate(steps, 1):
        head = k.conf.read_text().split("vrrp_instance")[0]
        k.conf.write_text(head + ka_block(k, keys, active, mode))
        k.proc.signal(signal.SIGHUP)  # type: ignore[union-attr]
        time.sleep(1.0)
        table: dict[str, object] = {"keys": {str(i): "hex:" + v.hex() for i, v in keys.items()}}
        write_drbdha(d, lab, {**table, "mode": mode, **({"active_key": active} if active else {})})
        d.proc.signal(signal.SIGHUP)  # type: ignore[union-attr]
        wait_until(
            f"drbdha reloaded step {done}",
            lambda n=done: len(d.events("config.reloaded")) >= n,
            10,
            0.05,
        )
        time.sleep(1.0)  # ten intervals on the new settings
        assert (d.state(), k.state()) == ("master", "backup"), (done, mode)
    assert states_taken(d) == ["backup", "master"]
    assert states_taken(k) == ["backup"]
    for reason in ("missing", "invalid_hmac", "unknown_key", "replay", "stale", "malformed"):
        assert d.metric("drbdha_vrrp_auth_refused_total", vrrp_instance="vi1", reason=reason) == 0


def write_drbdha(d: DrbdhaNode, lab: Lab, auth: dict[str, object] | None) -> None:
    d.instances = [Inst(priority=150, extra={"auth_hmac": auth} if auth else {})]
    d.config_path.write_text(
        node_config(
            d.instances,
            metrics=d.metrics_listen,
            control_socket=str(lab.tmp / f"{d.host.name}.sock"),
        )
    )


def ka_block(k: KeepalivedNode, keys: dict[int, bytes], active: int | None, mode: str) -> str:
    conf = keepalived_conf(
        [Inst(priority=100, extra={"keepalived": ka_auth(keys, active, mode)})],
        host=k.host,
        fifo=k.fifo,
    )
    return "vrrp_instance" + conf.split("vrrp_instance", 1)[1]
