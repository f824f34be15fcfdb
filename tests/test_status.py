"""The status document: builders from snapshots, health exit codes, the rendered table."""

from __future__ import annotations

import copy
import json
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

import pytest

from drbdha.config import VrrpInstanceConfig
from drbdha.metrics import Metrics
from drbdha.status import (
    EXIT_DEGRADED,
    EXIT_HEALTHY,
    Counters,
    counters_by_instance,
    counters_from_registry,
    document,
    format_duration,
    health,
    instance_status,
    render_table,
    status_line,
)
from drbdha.vrrp.events import State, Transition
from drbdha.vrrp.machine import Snapshot

CFG = VrrpInstanceConfig(
    name="nfs",
    interface="eth0",
    vrid=51,
    priority=150,
    version=3,
    advert_interval=1.0,
    virtual_ipaddress=(IPv4Interface("10.0.0.100/24"),),
)
NO_COUNTS = Counters(adverts_sent=0, adverts_received=0, invalid={})


def snap(state: State, **kw: Any) -> Snapshot:
    fields: dict[str, Any] = {
        "state": state,
        "effective_priority": 150,
        "master_address": None,
        "master_adver_interval": 1.0,
        "faults": (),
        "last_transition": None,
        "last_transition_at": None,
        "preempt_hold_off_until": float("-inf"),
    }
    fields.update(kw)
    return Snapshot(**fields)


def doc_of(*instances: Any) -> dict[str, Any]:
    d = document(
        version="0.1.0",
        pid=4242,
        uptime_s=7384.2,
        config_path="/etc/drbdha/drbdha.toml",
        instances=instances,
    )
    received: dict[str, Any] = json.loads(json.dumps(d))  # what the CLI gets over the socket
    return received


def lines(doc: dict[str, Any]) -> list[str]:
    return render_table(doc).splitlines()


# ---- example documents -------------------------------------------------------------------

MASTER = instance_status(
    CFG,
    snap(
        State.MASTER,
        master_address=IPv4Address("10.0.0.1"),
        last_transition=Transition(State.BACKUP, State.MASTER, "master_down"),
        last_transition_at=1000.0,
    ),
    now=1192.0,
    counters=Counters(adverts_sent=192, adverts_received=40, invalid={"ttl": 2, "checksum": 1}),
    storage={
        "drbd": {
            "resource": "r0",
            "role": "Primary",
            "disk": "UpToDate",
            "peer_role": "Secondary",
            "peer_disk": "UpToDate",
            "connection": "Connected",
        },
        "mount": None,
        "nfsd": None,
        "exports": None,
    },
)

BACKUP = instance_status(
    CFG,
    snap(
        State.BACKUP,
        effective_priority=100,
        master_address=IPv4Address("10.0.0.2"),
        last_transition=Transition(State.INITIALIZE, State.BACKUP, "startup"),
        last_transition_at=10.0,
        preempt_hold_off_until=130.0,
    ),
    now=100.0,
    counters=Counters(adverts_sent=0, adverts_received=90, invalid={}),
    peer={"address": "10.0.0.2", "priority": 150, "last_seen_age_s": 0.42},
)

FAULT = instance_status(
    CFG,
    snap(
        State.FAULT,
        faults=("link",),
        last_transition=Transition(State.MASTER, State.FAULT, "link"),
        last_transition_at=50.0,
    ),
    now=65.0,
    counters=NO_COUNTS,
)

WARNED = instance_status(
    CFG,
    snap(State.BACKUP, master_address=IPv4Address("10.0.0.2")),
    now=5.0,
    counters=NO_COUNTS,
    latches=[
        {
            "kind": "split-brain",
            "reason": "r0 connected StandAlone after split brain",
            "age_s": 3720.0,
        }
    ],
    warnings=["peer DRBD disk Outdated", "no advert from 10.0.0.2 for 30s"],
)


def test_healthy_master() -> None:
    doc = doc_of(MASTER)
    assert health(doc) == EXIT_HEALTHY
    assert doc["daemon"]["health"] == "healthy"
    out = lines(doc)
    assert out[0] == ("drbdha 0.1.0, pid 4242, up 2h03m, config /etc/drbdha/drbdha.toml: healthy")
    assert out[1] == ""
    assert out[2] == "nfs  (VRRPv3 vrid 51 on eth0)"
    assert "  state            MASTER" in out
    assert "  priority         150 (configured 150)" in out
    assert "  master           this node" in out
    assert "  advert interval  1s (master's 1s)" in out
    assert "  vips             10.0.0.100/24 (held)" in out
    assert "  preempt          yes" in out
    assert "  peer             -" in out
    assert "  adverts          sent 192, received 40, invalid 3 (checksum 1, ttl 2)" in out
    assert "  drbd             r0: Primary/UpToDate, peer Secondary/UpToDate, Connected" in out
    assert "  mount            -" in out
    assert "  nfsd             -" in out
    assert "  exports          -" in out
    assert "  last transition  BACKUP -> MASTER (master_down), 3m12s ago" in out
    assert "  faults           -" in out
    assert "  latches          -" in out
    assert "  warnings         -" in out


def test_backup_with_peer_and_hold_off() -> None:
    doc = doc_of(BACKUP)
    assert health(doc) == EXIT_HEALTHY
    inst = doc["instances"][0]
    assert inst["is_master"] is False
    assert inst["vips_held"] is False
    assert inst["preempt_hold_off_remaining_s"] == 30.0
    out = lines(doc)
    assert "  state            BACKUP" in out
    assert "  priority         100 (configured 150)" in out
    assert "  master           10.0.0.2" in out
    assert "  vips             10.0.0.100/24 (not held)" in out
    assert "  preempt          yes (held off for 30s)" in out
    assert "  peer             10.0.0.2, priority 150, seen 0.4s ago" in out
    assert "  adverts          sent 0, received 90, invalid 0" in out
    assert "  drbd             -" in out
    assert "  last transition  INITIALIZE -> BACKUP (startup), 1m30s ago" in out


def test_fault_is_degraded() -> None:
    doc = doc_of(MASTER, FAULT)
    assert health(doc) == EXIT_DEGRADED
    assert doc["daemon"]["health"] == "degraded"
    out = lines(doc)
    assert out[0].endswith(": DEGRADED")
    assert "  state            FAULT" in out
    assert "  faults           link" in out
    assert "  last transition  MASTER -> FAULT (link), 15s ago" in out
    assert "  master           -" in out


def test_latches_and_warnings_are_degraded_and_listed_one_per_line() -> None:
    doc = doc_of(WARNED)
    assert health(doc) == EXIT_DEGRADED
    text = render_table(doc)
    assert (
        "  latches          split-brain: r0 connected StandAlone after split brain, "
        "set 1h02m ago\n"
        "  alerts           -\n"
        "  warnings         peer DRBD disk Outdated\n"
        "                   no advert from 10.0.0.2 for 30s\n"
    ) in text
    assert "  last transition  -" in text.splitlines()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({}, EXIT_HEALTHY),
        ({"state": "initialize"}, EXIT_DEGRADED),
        ({"faults": ["no_address"]}, EXIT_DEGRADED),
        ({"latches": [{"kind": "disk", "reason": "io error", "age_s": 1.0}]}, EXIT_DEGRADED),
        ({"warnings": ["x"]}, EXIT_DEGRADED),
    ],
)
def test_health_table(change: dict[str, Any], expected: int) -> None:
    doc = doc_of(BACKUP)
    doc["instances"][0].update(change)
    assert health(doc) == expected


def test_no_instances_is_degraded() -> None:
    doc = doc_of()
    assert health(doc) == EXIT_DEGRADED
    assert "no instances configured" in render_table(doc)


def test_render_tolerates_missing_fields() -> None:
    # An older or newer daemon may send fewer fields; the table shows "-" instead of failing.
    doc = {"daemon": {}, "instances": [{"name": "x", "state": "backup"}]}
    out = lines(doc)
    assert out[0] == "drbdha -, pid -, up -, config -: healthy"
    assert "  master           -" in out
    assert "  adverts          -" in out


def test_storage_placeholders_render_generically() -> None:
    doc = doc_of(MASTER)
    doc["instances"][0]["storage"]["mount"] = {
        "device": "/dev/drbd0",
        "mountpoint": "/srv",
        "mounted": True,
    }
    assert "  mount            device=/dev/drbd0 mountpoint=/srv mounted=yes" in lines(doc)


def test_document_is_json_and_schema_keys() -> None:
    doc = doc_of(MASTER)
    assert set(doc) == {"daemon", "instances"}
    assert set(doc["daemon"]) == {"version", "pid", "uptime_s", "config_path", "health"}
    assert set(doc["instances"][0]) == {
        "name",
        "interface",
        "vrid",
        "version",
        "state",
        "priority",
        "effective_priority",
        "master_address",
        "is_master",
        "advert_interval",
        "master_adver_interval",
        "vips",
        "vips_held",
        "preempt",
        "preempt_hold_off_remaining_s",
        "faults",
        "last_transition",
        "counters",
        "peer",
        "storage",
        "latches",
        "inhibitions",
        "holding_for_data",
        "alerts",
        "warnings",
    }
    assert doc["instances"][0]["last_transition"] == {
        "old": "backup",
        "new": "master",
        "reason": "master_down",
        "age_s": 192.0,
    }
    assert doc["instances"][0]["storage"]["drbd"]["role"] == "Primary"
    assert set(doc["instances"][0]["storage"]) == {"drbd", "mount", "nfsd", "exports"}


def test_counters_agree_with_the_metrics_registry() -> None:
    m = Metrics()
    m.adverts_sent.labels("nfs").inc(7)
    m.adverts_received.labels("nfs").inc(3)
    m.invalid_adverts.labels("nfs", "ttl").inc(2)
    m.adverts_sent.labels("other").inc(100)
    m.invalid_adverts.labels("other", "checksum").inc()
    assert counters_from_registry(m.registry, "nfs") == {
        "adverts_sent": 7,
        "adverts_received": 3,
        "invalid": {"ttl": 2},
    }
    assert counters_from_registry(m.registry, "absent") == {
        "adverts_sent": 0,
        "adverts_received": 0,
        "invalid": {},
    }


def test_render_does_not_mutate() -> None:
    doc = doc_of(MASTER, WARNED)
    before = copy.deepcopy(doc)
    render_table(doc)
    assert doc == before


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0, "0.0s"),
        (0.42, "0.4s"),
        (9.96, "10s"),
        (12.7, "13s"),
        (192, "3m12s"),
        (7384, "2h03m"),
        (3 * 86400 + 7 * 3600, "3d07h"),
    ],
)
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


def test_counters_by_instance_in_one_pass() -> None:
    m = Metrics()
    m.adverts_sent.labels("a").inc(2)
    m.invalid_adverts.labels("b", "ttl").inc()
    by = counters_by_instance(m.registry)
    assert by["a"] == {"adverts_sent": 2, "adverts_received": 0, "invalid": {}}
    assert by["b"] == {"adverts_sent": 0, "adverts_received": 0, "invalid": {"ttl": 1}}


def test_status_line_for_systemd() -> None:
    assert status_line(doc_of(MASTER, BACKUP)) == "healthy: nfs MASTER, nfs BACKUP"
    assert status_line(doc_of(FAULT)) == "degraded: nfs FAULT (link)"
    assert status_line(doc_of()) == "degraded: no instances"


def test_checks_row_shows_each_check_and_why_a_failing_one_fails() -> None:
    doc = doc_of(MASTER)
    doc["instances"][0]["storage"]["checks"] = [
        {
            "name": "filesystem",
            "builtin": True,
            "failing": False,
            "weight": 0,
            "last_ok": True,
            "detail": "",
            "runs": 9,
        },
        {
            "name": "web",
            "builtin": False,
            "failing": True,
            "weight": 0,
            "last_ok": False,
            "detail": "curl: exit 7",
            "runs": 4,
        },
        {
            "name": "nfsd",
            "builtin": True,
            "failing": False,
            "weight": 0,
            "last_ok": None,
            "detail": "",
            "runs": 0,
        },
    ]
    row = [line for line in lines(doc) if line.startswith("  checks")]
    assert row == ["  checks           filesystem ok, web FAILING (curl: exit 7), nfsd not run yet"]


def test_a_hold_for_data_is_shown_beside_the_priority() -> None:
    doc = doc_of(MASTER)
    doc["instances"][0].update(effective_priority=254, holding_for_data=True)
    (row,) = [line for line in lines(doc) if line.startswith("  priority")]
    assert "254 (configured" in row
    assert "holding: clients reached this copy with the DRBD peer cut off" in row
