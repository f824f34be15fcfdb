"""SIGHUP reload against a real daemon in a network namespace: a good file applied in place,
broken files refused while the daemon keeps running on the old one, and instances added,
restarted and removed.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest
from netlab import VIP4, DrbdhaNode, Inst, Lab, addresses, node_config
from ops_common import INTERVAL, cli, socket_path, status_doc, vi1
from polling import wait_until

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
]


# ---- helpers -----------------------------------------------------------------------------


def rewrite_config(node: DrbdhaNode, text: str) -> None:
    node.config_path.write_text(text)


def node_toml(node: DrbdhaNode, instances: list[Inst]) -> str:
    """The file DrbdhaNode writes, with other instance settings."""
    return node_config(
        instances, metrics=node.metrics_listen, control_socket=str(socket_path(node))
    )


# ---- reload ------------------------------------------------------------------------------


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
