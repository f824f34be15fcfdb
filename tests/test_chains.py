"""The daemon's storage glue that runs without a loop or a kernel: the force-failover
storage pre-check, the power action's fallback to sysrq, and the latch store."""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from test_drbd_step import res
from test_fencing_rule import instance, make

from drbdha import durable
from drbdha.daemon import power
from drbdha.daemon.handover import _storage_refusal
from drbdha.latches import LatchStore
from drbdha.resources.proc import Result
from drbdha.vrrp.events import State


def inst(state: State = State.MASTER) -> Any:
    return SimpleNamespace(storage=object(), machine=SimpleNamespace(state=state))


@pytest.mark.parametrize(
    ("facts", "state", "refused"),
    [
        (res(), State.MASTER, None),
        (res(), State.BACKUP, None),
        (None, State.MASTER, "DRBD state unknown"),
        (res(connection="Connecting", peer_disk="DUnknown"), State.MASTER, "not connected"),
        (res(peer_disk="Inconsistent"), State.MASTER, "not connected and UpToDate"),
        (res(disk="Outdated"), State.BACKUP, "this node's disk is Outdated"),
    ],
)
def test_force_failover_storage_precheck(facts: Any, state: State, refused: str | None) -> None:
    why = _storage_refusal(inst(state), facts)
    if refused is None:
        assert why is None
    else:
        assert why is not None
        assert refused in why


def test_vrrp_only_instances_have_no_storage_precheck() -> None:
    assert _storage_refusal(SimpleNamespace(storage=None), None) is None  # type: ignore[arg-type]


class Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def critical(self, event: str, **kw: Any) -> None:
        self.events.append((event, kw))


def test_power_action_falls_back_to_sysrq(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []

    async def systemctl_fails(argv: Any) -> Result:
        calls.append(tuple(argv))
        return Result(tuple(argv), 1, "", "Failed to connect to bus")

    monkeypatch.setattr(power.proc, "run", systemctl_fails)
    monkeypatch.setattr(power, "_sysrq", calls.append)
    log = Log()
    asyncio.run(power.power_action("reboot", log))
    assert calls == [("systemctl", "reboot", "--no-block"), "b"]
    assert [e for e, _ in log.events] == ["node.power_action", "node.power_action"]


def test_power_action_survives_a_failing_sysrq(monkeypatch: pytest.MonkeyPatch) -> None:
    async def timeout(_argv: Any) -> Result:
        raise TimeoutError

    def denied(key: str) -> None:
        raise PermissionError(key)

    monkeypatch.setattr(power.proc, "run", timeout)
    monkeypatch.setattr(power, "_sysrq", denied)
    log = Log()
    asyncio.run(power.power_action("poweroff", log))
    assert log.events[-1][0] == "node.power_action_failed"


def test_latches_survive_a_restart_and_clear(tmp_path: Path) -> None:
    path = tmp_path / "state" / "latches.json"
    store = LatchStore(path)
    store.load()
    store.set("nfs", "disk", "disk Failed while Primary")
    again = LatchStore(path)
    again.load()
    assert set(again.of("nfs")) == {"disk"}
    assert again.of("nfs")["disk"].reason == "disk Failed while Primary"
    assert again.clear("nfs", "disk")
    assert not again.clear("nfs", "disk")
    third = LatchStore(path)
    third.load()
    assert third.of("nfs") == {}


def test_unreadable_latches_are_reported_not_forgotten_silently(tmp_path: Path) -> None:
    path = tmp_path / "latches.json"
    path.write_text("{not json")
    store = LatchStore(path)
    store.load()
    assert store.load_error is not None


def test_clearing_after_an_unreadable_file_starts_it_afresh(tmp_path: Path) -> None:
    path = tmp_path / "latches.json"
    path.write_text("{not json")
    store = LatchStore(path)
    store.load()
    assert store.clear("nfs", "disk")
    again = LatchStore(path)
    again.load()
    assert again.load_error is None
    assert again.of("nfs") == {}


def test_a_latch_that_cannot_be_saved_is_held_all_the_same(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("a file where the state directory should be")
    store = LatchStore(tmp_path / "state" / "latches.json")
    latch = store.set("nfs", "disk", "detached")
    assert store.of("nfs") == {"disk": latch}
    assert store.save_error is not None
    assert "state/latches.json" in store.save_error


# ---- clear-latch when the latch file cannot be written (issue 19 §3) ---------------------


def latched_chains(tmp_path: Path) -> tuple[Any, Any]:
    c, _, _ = make(tmp_path)
    c.latches.set("lab", "disk", "disk Failed while Primary")
    i = instance(c)
    i.machine.inhibitions = ()
    i.machine.set_inhibit = lambda *_a, **_k: []
    c.state(i).drbd = res()
    c.state(i).latches = {"disk": c.latches.of("lab")["disk"]}
    c.state(i).alerts = {}
    return c, i


def test_a_clear_latch_that_cannot_be_written_is_refused_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c, i = latched_chains(tmp_path)

    def read_only(*_a: Any, **_k: Any) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(durable, "replace", read_only)
    why = c.clear_latch(i, "disk", 1.0)
    assert why is not None
    assert "Read-only file system" in why
    assert "disk" in c.state(i).latches  # still latched: nothing changed


def test_a_latch_held_only_in_memory_is_cleared_when_asked(tmp_path: Path) -> None:
    # An unreadable file latched every instance; the first clear rewrote the file, so the
    # others' latches are no longer in it. Clearing them must still lift them.
    c, i = latched_chains(tmp_path)
    c.latches.clear("lab", "disk")  # the file no longer has it; memory still does
    assert c.clear_latch(i, "disk", 1.0) is None
    assert "disk" not in c.state(i).latches
