"""The advert's MTU budget (issue 24): the IP header, every VIP and auth_hmac's 28-byte
trailer must fit the interface's MTU. Host a's interface gets the IPv6 minimum, 1280: 76 IPv6
VIPs make a 1264-byte advert unsigned and 1292 signed, so only the trailer tips it over.
check-config and `drbdha run` refuse the signed file naming the room; a daemon running the
unsigned file keeps it when a reload would add the trailer, and goes on advertising.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
from netlab import DrbdhaNode, Host, Inst, Lab, run
from netlab.drbdha_node import DRBDHA, node_config
from polling import wait_until

KEY = "hex:" + bytes(range(32)).hex()
VIPS = [f"fd00:250::{0x1000 + i:x}/64" for i in range(76)]  # 40 + 8 + 76 * 16 = 1264 bytes
MTU = 1280


def insts(auth: bool) -> list[Inst]:
    extra = {"auth_hmac": {"keys": {"1": KEY}, "active_key": 1}} if auth else {}
    return [Inst(name="v6", vrid=71, priority=200, vips=VIPS, extra=extra)]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(["a"]) as lab:
        run(lab.host("a").ns, ["ip", "link", "set", "dev", "eth0", "mtu", str(MTU)])
        yield lab


def write(lab: Lab, host: Host, auth: bool, name: str) -> str:
    path = lab.tmp / name
    path.write_text(
        node_config(insts(auth), control_socket=str(lab.tmp / f"{host.name}-{name}.sock"))
    )
    return str(path)


def drbdha(host: Host, *args: str) -> subprocess.CompletedProcess[str]:
    return run(host.ns, [DRBDHA, *args], check=False, timeout=30)


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_a_signed_advert_past_the_mtu_is_refused_naming_the_room(lab: Lab, command: str) -> None:
    a = lab.host("a")
    signed = drbdha(a, command, "-c", write(lab, a, True, "signed.toml"))
    assert signed.returncode == 2, (signed.stdout, signed.stderr)
    assert "vrrp_instance[0].virtual_ipaddress" in signed.stderr
    assert "1292-byte advert; eth0's MTU is 1280 (room for 75)" in signed.stderr
    if command == "check-config":
        unsigned = drbdha(a, command, "-c", write(lab, a, False, "unsigned.toml"))
        assert unsigned.returncode == 0, unsigned.stderr


def test_a_reload_that_would_overflow_the_mtu_keeps_the_running_config(lab: Lab) -> None:
    node = DrbdhaNode(lab, "a", insts(False), metrics=True).start()
    node.wait_state("master", "v6", timeout=10)
    node.config_path.write_text(
        node_config(
            insts(True),
            metrics=node.metrics_listen,
            control_socket=str(lab.tmp / "a.sock"),
        )
    )
    node.proc.signal(signal.SIGHUP)  # type: ignore[union-attr]
    wait_until("reload refused", lambda: node.events("config.reload_failed"), 10, 0.05)
    problems = node.events("config.reload_failed")[0]["problems"]
    assert any("room for 75" in p for p in problems), problems
    sent = node.metric("drbdha_vrrp_adverts_sent_total", vrrp_instance="v6")
    time.sleep(0.5)
    assert node.metric("drbdha_vrrp_adverts_sent_total", vrrp_instance="v6") > sent
    assert node.state("v6") == "master"
    assert not node.events("config.reloaded")
