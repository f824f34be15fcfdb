"""The NFS steps' parts that need no nfsd: the exports file, the nfs-server drop-in, the
state directory's layout, the connection records, and check-config's findings. The steps
themselves run on the lab's cluster (integration/lab/test_nfs_vms.py)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from drbdha.config import ExportConfig, StorageConfig
from drbdha.net.tickle import Connection
from drbdha.resources import nfs, nfs_advice, nfs_clients, proc

EXPORT = ExportConfig(Path("/srv/nfs/data"), ("192.0.2.0/24", "client.example"), 7, "rw,sync")


def test_the_exports_file_has_one_line_per_export_with_its_fsid() -> None:
    text = nfs.exports_text("data", [EXPORT])
    assert text.splitlines()[1:] == [
        '"/srv/nfs/data" 192.0.2.0/24(rw,sync,fsid=7) client.example(rw,sync,fsid=7)'
    ]
    assert nfs.exports_file("data") == Path("/etc/exports.d/drbdha-data.exports")


def test_the_dropins_start_rpc_nfsd_under_the_scope_and_sm_notify_from_the_vip() -> None:
    units = nfs.dropins("drbdha-lab", 16, 30, 45, "192.0.2.100")
    nfsd = units[Path("/run/systemd/system/nfs-server.service.d/50-drbdha.conf")].splitlines()
    assert nfsd[-3:-1] == ["[Service]", "ExecStart="]  # the packaged ExecStart is replaced
    assert nfsd[-1] == (
        'ExecStart=/usr/bin/unshare --uts /bin/sh -c \'hostname "$0" && exec '
        "/usr/sbin/rpc.nfsd -L 30 -G 45 16' drbdha-lab"
    )
    notify = units[Path("/run/systemd/system/rpc-statd-notify.service.d/50-drbdha.conf")]
    assert notify.splitlines()[-2:] == [
        "ExecStart=",
        "ExecStart=-/sbin/sm-notify -f -v 192.0.2.100",
    ]


def test_prepare_lays_out_the_state_directory_and_keeps_what_is_there(tmp_path: Path) -> None:
    local, state = tmp_path / "local", tmp_path / "state"
    (local / "sm").mkdir(parents=True)
    (local / "state").write_bytes(b"\x01\x00\x00\x00")
    nfs.prepare(state, local)
    for name, mode in {**nfs.STATE_DIRS, **nfs.STATE_FILES}.items():
        assert (state / name).stat().st_mode & 0o777 == mode, name
    assert state.stat().st_mode & 0o777 == 0o755  # statd must reach sm/ through it
    assert (state / "state").read_bytes() == b"\x01\x00\x00\x00"
    assert (state / "sm").stat().st_uid == (local / "sm").stat().st_uid
    (state / "sm" / "client").write_text("monitored")
    (local / "state").write_bytes(b"\x09\x00\x00\x00")
    nfs.prepare(state, local)  # again: nothing of the clients' state is touched
    assert (state / "sm" / "client").read_text() == "monitored"
    assert (state / "state").read_bytes() == b"\x01\x00\x00\x00"


def test_connection_records_survive_a_round_trip_and_a_torn_file(tmp_path: Path) -> None:
    path = tmp_path / nfs_clients.RECORD_FILE
    assert nfs_clients.read_records(path, Connection.from_json) == []
    conns = [Connection("10.0.0.100", 2049, "10.0.0.7", 801)]
    nfs_clients.write_records(path, conns)
    assert nfs_clients.read_records(path, Connection.from_json) == conns
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    path.write_text('{"connections": [["10.0.0.100", 2049, "10.0.0.7", 801], ["bad"]')
    parse = Connection.from_json
    assert nfs_clients.read_records(path, parse) == []  # torn: no tickles, no failure
    path.write_text('{"connections": [["10.0.0.100", 2049, "10.0.0.7", 801], ["bad"]]}')
    assert nfs_clients.read_records(path, parse) == conns  # the bad row alone is skipped
    assert not list(tmp_path.glob(".*.tmp"))


def storage(**kw: object) -> StorageConfig:
    return StorageConfig(name="data", drbd_resource="r0", **kw)  # type: ignore[arg-type]


def test_check_config_says_when_nfs_server_is_enabled() -> None:
    s = storage(mountpoint=Path("/srv/nfs"), nfs_state_dir=Path("/srv/nfs/s"), exports=(EXPORT,))
    (f,) = nfs_advice.findings(s, enabled=lambda _: True, which=lambda t: f"/usr/bin/{t}")
    assert (f.level, f.key) == ("error", "storage.data.nfs_state_dir")
    assert "systemctl disable --now nfs-server.service" in f.advice
    assert nfs_advice.findings(s, enabled=lambda _: False, which=lambda _: "/x") == []


def test_check_config_says_what_is_not_installed() -> None:
    s = storage(mountpoint=Path("/srv/nfs"), nfs_state_dir=Path("/srv/nfs/s"), exports=(EXPORT,))
    found = nfs_advice.findings(
        s, enabled=lambda _: False, which=lambda t: None if t in ("fuser", "exportfs") else t
    )
    assert [(f.level, f.message) for f in found] == [
        ("error", "not installed: fuser"),
        ("error", "not installed: exportfs"),
    ]
    assert nfs_advice.findings(storage(), enabled=lambda _: True, which=lambda _: None) == []


def test_status_shows_mount_nfsd_and_exports_as_the_chain_has_them() -> None:
    """The steps the composition builds describe themselves; the runner is a fake that
    holds them and says which are up."""
    from types import SimpleNamespace  # noqa: PLC0415

    from drbdha.daemon.compose import storage_steps  # noqa: PLC0415
    from drbdha.daemon.storage import steps_status  # noqa: PLC0415

    def status(s: StorageConfig, up: set[str]) -> dict[str, Any]:
        steps = storage_steps("lab", s, None, proc.Quiet(), "10.0.0.100")  # type: ignore[arg-type]
        fake_runner = SimpleNamespace(steps=steps, step_up=lambda name: name in up)
        return steps_status(fake_runner)  # type: ignore[arg-type]

    s = storage(mountpoint=Path("/srv/nfs"), nfs_state_dir=Path("/srv/nfs/s"), exports=(EXPORT,))
    got = status(s, {"drbd", "filesystem", "nfs_state", "nfsd"})
    assert got == {
        "mount": {"device": None, "mountpoint": "/srv/nfs", "fstype": "auto", "mounted": True},
        "nfsd": {"running": True, "threads": 8, "state_dir": "/srv/nfs/s", "scope": "drbdha-lab"},
        "exports": {"configured": 1, "exported": 0},
    }
    assert status(storage(), set()) == {}


def test_the_clients_step_tickles_the_recorded_clients_of_its_vips_and_records_new_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fakes: the Tickler's send and established (no raw socket, no sock_diag here) and the
    command runner; the record file is real."""
    import asyncio  # noqa: PLC0415

    from test_fencing_rule import FakeLog  # noqa: PLC0415

    from drbdha.resources.proc import Result  # noqa: PLC0415

    old = [Connection("10.0.0.100", 2049, "10.0.0.7", 801), Connection("10.9.9.9", 2049, "x", 1)]
    nfs_clients.write_records(tmp_path / nfs_clients.RECORD_FILE, old)
    sent: list[list[Connection]] = []
    now = [Connection("10.0.0.100", 2049, "10.0.0.8", 900)]
    fake_tickler = nfs_clients.Tickler(
        established=lambda _vips, _ports: now,
        send=lambda conns: sent.append(list(conns)) or 3,
        parse=Connection.from_json,
    )
    monkeypatch.setattr(nfs_clients, "RECORD_INTERVAL", 0.01)
    commands: list[tuple[str, ...]] = []

    async def run(argv: tuple[str, ...]) -> Result:
        commands.append(tuple(argv))
        return Result(tuple(argv), 0, "", "")

    log = FakeLog()
    step = nfs_clients.NfsClientsStep(["10.0.0.100"], tmp_path, fake_tickler, log, run=run)  # type: ignore[arg-type]

    async def main() -> None:
        await step.start()
        assert await step.held()
        await asyncio.sleep(0.1)
        await step.stop()
        assert not await step.held()
        await step.stop()  # again: nothing to do

    asyncio.run(main())
    assert sent == [old[:1]]  # only connections to our own VIP
    assert commands == [("systemctl", "restart", "rpc-statd-notify.service")]
    assert ("info", "nfs.clients_tickled", {"connections": 1, "segments": 3}) in log.events
    assert nfs_clients.read_records(tmp_path / nfs_clients.RECORD_FILE, Connection.from_json) == now


def nfsd_step(run: proc.Run) -> nfs.NfsdStep:
    return nfs.NfsdStep(
        scope="nfs-lab",
        threads=8,
        lease=10,
        grace=10,
        vip="192.0.2.100",
        timeouts=(30.0, 30.0),
        listening=lambda _: False,
        run=run,
    )


def test_nfsd_prepare_writes_the_dropins_and_reloads_systemd_only_when_they_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At the daemon's start, so that the first takeover does not pay for a daemon-reload."""
    monkeypatch.setattr(nfs, "NFSD_FS", tmp_path / "nfsd")  # mounted: no mount asked
    (tmp_path / "nfsd").mkdir()
    (tmp_path / "nfsd" / "threads").write_text("0\n")
    import asyncio  # noqa: PLC0415

    from drbdha.chain.step import StepFailed  # noqa: PLC0415
    from drbdha.resources.proc import Result  # noqa: PLC0415

    ran: list[list[str]] = []
    code = 0

    async def run(argv: Sequence[str]) -> Result:
        ran.append(list(argv))
        return Result(tuple(argv), code, "", "reload failed" if code else "")

    step = nfsd_step(run)
    step.dropins = {tmp_path / f"{p.parent.name}/{p.name}": t for p, t in step.dropins.items()}
    asyncio.run(step.prepare())
    assert ran == [["systemctl", "daemon-reload"]]
    assert all(p.read_text() == t for p, t in step.dropins.items())
    asyncio.run(step.prepare())
    assert ran == [["systemctl", "daemon-reload"]]  # unchanged: no second reload
    next(iter(step.dropins)).write_text("edited by hand\n")
    code = 1
    with pytest.raises(StepFailed) as failed:
        asyncio.run(step.prepare())
    assert failed.value.reason == "daemon_reload_failed"


def test_nfsd_prepare_mounts_nfsds_filesystem_when_it_is_not_mounted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The module's load on the backup, before any takeover; the mount's failure is the
    prepare's (the takeover then leaves it to nfs-server, which requires the same unit)."""
    import asyncio  # noqa: PLC0415

    from drbdha.chain.step import StepFailed  # noqa: PLC0415
    from drbdha.resources.proc import Result  # noqa: PLC0415

    monkeypatch.setattr(nfs, "NFSD_FS", tmp_path / "nfsd")  # not mounted
    ran: list[list[str]] = []

    async def run(argv: Sequence[str]) -> Result:
        ran.append(list(argv))
        failed = argv[1] == "start"
        return Result(tuple(argv), int(failed), "", "no nfsd module" if failed else "")

    step = nfsd_step(run)
    step.dropins = {tmp_path / f"{p.parent.name}/{p.name}": t for p, t in step.dropins.items()}
    with pytest.raises(StepFailed) as failed:
        asyncio.run(step.prepare())
    assert failed.value.reason == "nfsd_fs_mount_failed"
    assert ran == [["systemctl", "daemon-reload"], ["systemctl", "start", "proc-fs-nfsd.mount"]]


@pytest.mark.parametrize(
    ("load_state", "stopped"),
    [("loaded", ["fsidd.service"]), ("not-found", []), (None, [])],
    ids=["trixie", "bookworm", "systemctl-failed"],
)
def test_nfsd_stop_stops_the_optional_helpers_that_are_installed(
    load_state: str | None, stopped: list[str]
) -> None:
    """trixie's fsidd holds /var/lib/nfs open and outlives nfs-server; bookworm has no
    fsidd.service, and `systemctl stop` of a unit that does not exist fails."""
    import asyncio  # noqa: PLC0415

    from drbdha.resources.proc import Result  # noqa: PLC0415

    ran: list[list[str]] = []

    async def run(argv: Sequence[str]) -> Result:
        ran.append(list(argv))
        if argv[1] == "show":
            return Result(tuple(argv), 1 if load_state is None else 0, f"{load_state}\n", "")
        return Result(tuple(argv), 0, "", "")

    step = nfsd_step(run)
    asyncio.run(step.stop())
    assert ran[0] == ["systemctl", "show", "-p", "LoadState", "--value", "fsidd.service"]
    assert ran[1] == ["systemctl", "stop", nfs.UNIT, *nfs.HELPERS, *stopped]


def test_written_files_are_readable_by_all_under_drbdhas_umask(tmp_path: Path) -> None:
    """systemd warns at every reload about a drop-in that is not world-readable; an exports
    file is 0644 like /etc/exports. A file already right in content gets its mode fixed."""
    import os  # noqa: PLC0415

    path = tmp_path / "nfs-server.service.d" / "50-drbdha.conf"
    old = os.umask(0o077)
    try:
        assert nfs.write_if_changed(path, "[Service]\n")
        assert path.stat().st_mode & 0o777 == 0o644
        path.chmod(0o600)  # written by an older drbdha
        assert not nfs.write_if_changed(path, "[Service]\n")
        assert path.stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)
