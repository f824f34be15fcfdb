"""Health checks: rise/fall counting (pure), what failing checks do to the machine (a real
Machine through Chains.on_check: FAULT for weight 0, a lower priority otherwise, and the
takeover damping), and the check loop running real commands (/bin/true, /bin/false, a
sleep past its timeout).

Fakes: FakeLog (test_fencing_rule) collects log events; the instance is a SimpleNamespace
with the fields Chains reads (name, storage, machine), its StorageState holding the checks;
`apply` collects effects."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fakes import params
from test_fencing_rule import FakeLog

from drbdha.clock import MonotonicClock
from drbdha.config import CheckConfig, StorageConfig
from drbdha.daemon import health
from drbdha.daemon.health import CheckResult, CheckState, Health
from drbdha.daemon.storage import Chains
from drbdha.daemon.storage_state import StorageState
from drbdha.latches import LatchStore
from drbdha.metrics import Metrics
from drbdha.resources import storage_checks
from drbdha.vrrp.events import State
from drbdha.vrrp.machine import Machine


def test_fall_failures_in_a_row_make_it_failing_and_rise_successes_healthy() -> None:
    s = CheckState(CheckConfig("c", ("/bin/true",), rise=2, fall=3))
    assert [s.result(False), s.result(False), s.result(True)] == [False, False, False]
    assert not s.failing  # a success in between starts the count again
    assert [s.result(False), s.result(False), s.result(False)] == [False, False, True]
    assert s.failing
    assert [s.result(True), s.result(False), s.result(True), s.result(True)] == [
        False,
        False,
        False,
        True,
    ]
    assert not s.failing
    assert s.runs == 10


def test_builtin_checks_follow_the_chain() -> None:
    fs_only = StorageConfig(name="d", drbd_resource="r0", mountpoint=Path("/srv"))
    assert [c.name for c in health.builtin_checks(fs_only)] == ["filesystem"]
    nfs = StorageConfig(
        name="d", drbd_resource="r0", mountpoint=Path("/srv"), nfs_state_dir=Path("/srv/s")
    )
    assert [c.name for c in health.builtin_checks(nfs)] == ["filesystem", "nfsd", "exports"]
    off = StorageConfig(name="d", drbd_resource="r0", mountpoint=Path("/srv"), builtin_checks=False)
    assert health.builtin_checks(off) == []
    assert health.builtin_checks(StorageConfig(name="d", drbd_resource="r0")) == []


USER = CheckConfig("web", ("/bin/false",), rise=1, fall=1, weight=0)
WEIGHTED = CheckConfig("load", ("/bin/false",), rise=1, fall=1, weight=30)


def setup(tmp_path: Path, *checks: CheckConfig, damping: float = 20.0) -> tuple[Chains, Any]:
    storage = StorageConfig(name="d", drbd_resource="r0", checks=checks, takeover_damping=damping)
    m = Machine(params(priority=150))
    m.start(0.0)
    m.handle_timer(m.get_timer() or 0.0)
    m.chain_settled(True, 4.0)
    assert m.state is State.MASTER
    inst = SimpleNamespace(name="lab", storage=storage, machine=m)
    applied: list[Any] = []
    chains = Chains(
        lambda _inst, effects, _now: applied.extend(effects),
        lambda _ev: None,
        LatchStore(tmp_path / "latches.json"),
        Metrics(),
        FakeLog(),
        MonotonicClock(),
    )
    chains.states[inst.name] = StorageState(health=Health("lab", storage))
    return chains, inst


def test_a_failing_weight_zero_check_faults_the_master_and_damps_its_return(
    tmp_path: Path,
) -> None:
    chains, inst = setup(tmp_path, USER)
    chains.on_check(inst, CheckResult("lab", "web", False, "exit 1"), 10.0)
    assert inst.machine.state is State.FAULT
    assert "check:web" in inst.machine.faults
    assert inst.machine.inhibitions["takeover_damped"] == 30.0
    assert chains.log.events[-1][:2] == ("warning", "check.failing")
    chains.on_check(inst, CheckResult("lab", "web", True), 12.0)
    assert inst.machine.state is State.BACKUP  # healthy again, but held out until 30.0
    assert "takeover_damped" in inst.machine.inhibitions
    assert (
        chains.metrics.registry.get_sample_value(
            "drbdha_check_failing", {"vrrp_instance": "lab", "check": "web"}
        )
        == 0.0
    )


def test_a_failing_weighted_check_lowers_the_priority(tmp_path: Path) -> None:
    chains, inst = setup(tmp_path, WEIGHTED, damping=0.0)
    chains.on_check(inst, CheckResult("lab", "load", False), 10.0)
    assert inst.machine.state is State.MASTER  # a higher backup preempts; we do not resign
    assert inst.machine.effective_priority == 120
    assert "takeover_damped" not in inst.machine.inhibitions  # damping 0: none
    chains.on_check(inst, CheckResult("lab", "load", True), 11.0)
    assert inst.machine.effective_priority == 150


def test_unknown_checks_and_results_that_change_nothing_are_ignored(tmp_path: Path) -> None:
    chains, inst = setup(tmp_path, USER)
    chains.on_check(inst, CheckResult("lab", "nope", False), 10.0)
    chains.on_check(inst, CheckResult("lab", "web", True), 10.0)
    assert inst.machine.state is State.MASTER
    assert chains.log.events == []


def test_the_check_loop_runs_commands_and_times_them_out() -> None:
    storage = StorageConfig(
        name="d",
        drbd_resource="r0",
        checks=(
            CheckConfig("ok", ("/bin/true",), interval=0.1),
            CheckConfig("bad", ("/bin/false",), interval=0.1),
            CheckConfig("slow", ("/bin/sleep", "5"), interval=0.1, timeout=0.2),
            CheckConfig("gone", ("/nonexistent/check",), interval=0.1),
        ),
    )
    results: list[CheckResult] = []

    async def main() -> None:
        seen_all = asyncio.Event()

        def put(r: CheckResult) -> None:
            results.append(r)
            if {r.check for r in results} == {"ok", "bad", "slow", "gone"}:
                seen_all.set()

        task = asyncio.create_task(health.run_checks(Health("lab", storage), lambda: True, put))
        try:
            async with asyncio.timeout(5):
                await seen_all.wait()
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(main())
    by = {r.check: r for r in results}
    assert by["ok"].ok
    assert not by["bad"].ok
    assert "exit 1" in by["bad"].detail
    assert (by["slow"].ok, by["slow"].detail) == (False, "no answer in 0.2 s")
    # A program that is not there fails its check; it does not end the loop (or the daemon).
    assert not by["gone"].ok
    assert by["gone"].detail.startswith("FileNotFoundError")


def test_the_exports_check_reads_etab(tmp_path: Path) -> None:
    etab = tmp_path / "etab"
    check = storage_checks._Exports(["/srv/nfs/data", "/srv/nfs/b"], etab)
    assert asyncio.run(check()) == (False, f"{etab}: No such file or directory")
    etab.write_text("/srv/nfs/data\t10.77.1.0/24(rw,sync,fsid=1)\n")
    assert asyncio.run(check()) == (False, "not exported: ['/srv/nfs/b']")
    etab.write_text("/srv/nfs/data\t10.77.1.0/24(rw,fsid=1)\n/srv/nfs/b\t*(ro,fsid=2)\n")
    assert asyncio.run(check()) == (True, "")
