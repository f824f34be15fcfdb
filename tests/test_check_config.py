"""`drbdha check-config` (and `run`'s same checks) on DRBD resources: drbdadm run on the
sources in tests/drbd_dumps.py, the findings printed, and the exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from drbd_dumps import SOURCES, needs_drbdadm, write_conf

from drbdha import cli
from drbdha.resources import drbd_config, nfs_advice

# ---- check-config --------------------------------------------------------------------------------

TOML = """\
[[vrrp_instance]]
name = "nfs"
interface = "eth0"
vrid = 51
virtual_ipaddress = ["192.0.2.100/24"]
storage = "nfs"

[storage.nfs]
drbd_resource = "{resource}"
"""
INSTANCE_LINE = "  nfs: VRRPv3 vrid 51 on eth0, priority 100, every 1s, 192.0.2.100/24"


def configure(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    resource: str = "r0",
    drbd_source: str = SOURCES["9-two-nodes"],
    extra: str = "",
) -> Path:
    """drbdha.toml with the chain on `resource` (and `extra` after it), and drbdadm reading
    `drbd_source`; the path of drbdha.toml."""
    toml = tmp_path / "drbdha.toml"
    toml.write_text(TOML.format(resource=resource) + extra)
    monkeypatch.setenv("DRBDHA_DRBDADM_CONFIG", str(write_conf(tmp_path, drbd_source)))
    return toml


def check_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, resource: str, drbd_source: str
) -> int:
    toml = configure(tmp_path, monkeypatch, resource, drbd_source)
    return cli.main(["-c", str(toml), "check-config"])


@needs_drbdadm
def test_check_config_missing_resource_is_an_error_naming_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert check_config(tmp_path, monkeypatch, "r9", SOURCES["9-two-nodes"]) == cli.EXIT_CONFIG
    out, err = capsys.readouterr()
    assert INSTANCE_LINE in out.splitlines()
    assert (
        "  ERROR storage.nfs.drbd_resource: drbdadm: 'r9' not defined in your config "
        "(for this host)."
    ) in out.splitlines()
    assert "1 error(s) in the DRBD configuration" in err


@needs_drbdadm
def test_check_config_good_resource_prints_findings_and_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert check_config(tmp_path, monkeypatch, "r0", SOURCES["9-two-nodes"]) == cli.EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == INSTANCE_LINE  # the existing lines are unchanged
    assert lines[2] == "storage.nfs: DRBD resource r0 (for nfs)"
    # The fixture fences resource-only (I/O goes on while its handler runs): a warning only.
    assert lines[3].startswith("  WARNING fencing: resource-only: the Primary goes on writing")
    assert any(
        ln.startswith("  INFO ping-int: DRBD notices a dead peer within 1.5 s") for ln in lines
    )


@needs_drbdadm
def test_check_config_warnings_keep_exit_0_errors_make_it_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    warned = SOURCES["9-two-nodes"].replace("on-io-error detach", "on-io-error pass_on")
    assert check_config(tmp_path, monkeypatch, "r0", warned) == cli.EXIT_OK
    assert "  WARNING on-io-error: pass_on:" in capsys.readouterr().out
    wrong = SOURCES["9-two-nodes"].replace("protocol C;", "protocol C; allow-two-primaries yes;")
    assert check_config(tmp_path, monkeypatch, "r0", wrong) == cli.EXIT_CONFIG
    lines = capsys.readouterr().out.splitlines()
    i = next(i for i, ln in enumerate(lines) if ln.startswith("  ERROR allow-two-primaries:"))
    assert lines[3] == lines[i]  # errors first
    assert lines[i + 1] == "      advice: remove allow-two-primaries (the default is no)"


def test_check_config_without_drbdadm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def missing(*_: Any, **__: Any) -> subprocess.CompletedProcess[str]:
        raise FileNotFoundError("drbdadm")

    monkeypatch.setattr(drbd_config.subprocess, "run", missing)
    assert check_config(tmp_path, monkeypatch, "r0", "") == cli.EXIT_CONFIG
    out = capsys.readouterr().out
    assert "  ERROR storage.nfs.drbd_resource: drbdadm not found: install drbd-utils" in out


def test_check_config_without_storage_runs_no_drbdadm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def forbidden(*_: Any, **__: Any) -> subprocess.CompletedProcess[str]:
        raise AssertionError("drbdadm must not run")

    monkeypatch.setattr(drbd_config.subprocess, "run", forbidden)
    toml = tmp_path / "drbdha.toml"
    toml.write_text(TOML.split("storage =", maxsplit=1)[0])
    assert cli.main(["-c", str(toml), "check-config"]) == cli.EXIT_OK
    assert capsys.readouterr().out.splitlines()[1:] == [INSTANCE_LINE, "ok"]


@needs_drbdadm
def test_drbdha_command_line(tmp_path: Path) -> None:
    toml = tmp_path / "drbdha.toml"
    toml.write_text(TOML.format(resource="r9"))
    conf = write_conf(tmp_path, SOURCES["9-two-nodes"])
    env = {**os.environ, "DRBDHA_DRBDADM_CONFIG": str(conf)}
    r = subprocess.run(
        [sys.executable, "-m", "drbdha", "-c", str(toml), "check-config"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert r.returncode == 2, r.stderr
    assert "storage.nfs.drbd_resource: drbdadm: 'r9' not defined" in r.stdout


NFS_KEYS = """
mountpoint = "/srv/nfs"
nfs_state_dir = "/srv/nfs/.nfs-state"

[[storage.nfs.exports]]
path = "/srv/nfs/data"
clients = ["192.0.2.0/24"]
fsid = 1
"""


def nfs_config_with_nfs_server_enabled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config with the NFS chain, on a host (as nfs_advice sees it) with nfs-kernel-server
    installed and enabled at boot; DRBD's configuration from the fixture."""
    real = nfs_advice.findings
    monkeypatch.setattr(
        nfs_advice,
        "findings",
        lambda s: real(s, enabled=lambda _: True, which=lambda t: f"/usr/sbin/{t}"),
    )
    return configure(tmp_path, monkeypatch, extra=NFS_KEYS)


@needs_drbdadm
def test_check_config_says_nfs_server_must_not_start_at_boot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = nfs_config_with_nfs_server_enabled(tmp_path, monkeypatch)
    assert cli.main(["-c", str(toml), "check-config"]) == cli.EXIT_CONFIG
    out = capsys.readouterr().out
    assert "  ERROR storage.nfs.nfs_state_dir: nfs-server.service is enabled" in out


@needs_drbdadm
def test_run_refuses_to_start_on_what_check_config_calls_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The unit has no ExecStartPre=check-config: `run` makes the same checks itself."""
    toml = nfs_config_with_nfs_server_enabled(tmp_path, monkeypatch)
    monkeypatch.setattr("drbdha.daemon.run", lambda _: pytest.fail("the daemon must not start"))
    assert cli.main(["-c", str(toml), "run"]) == cli.EXIT_CONFIG
    out, err = capsys.readouterr()
    assert out == ""
    assert "  ERROR storage.nfs.nfs_state_dir: nfs-server.service is enabled" in err
    assert "drbdha: 1 error(s): see `drbdha check-config`" in err
    assert "WARNING fencing" in err  # warnings are shown at start too, and do not stop it
    assert "INFO" not in err


@needs_drbdadm
def test_check_config_refuses_this_nodes_own_address_as_the_peer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # 127.0.0.1 is this host's (check-config binds to it); the fence request would only
    # ever reach this node's own drbdha.
    key = tmp_path / "peer.key"
    key.write_text("k" * 44)
    key.chmod(0o600)
    peer = f'\n[peer]\naddress = "127.0.0.1"\nsecret_file = "{key}"\n'
    toml = configure(tmp_path, monkeypatch, extra=peer)
    assert cli.main(["-c", str(toml), "check-config"]) == cli.EXIT_CONFIG
    out = capsys.readouterr().out
    assert "ERROR peer.address: 127.0.0.1 is this node's own address" in out


@needs_drbdadm
def test_check_config_states_the_unfenced_window_with_the_heartbeat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    unfenced = SOURCES["9-two-nodes"].replace("fencing resource-only; ", "")
    # The fixture's timers: ping-int 1 s, timeout 0.9 s; adverts every 1 s. The advert that
    # proves the Primary alive comes after the Primary's DRBD went on: a 0.7 s window, said.
    for heartbeat, said in (
        ("0.1", "within 1.6 s (plus drbdadm's own time)"),
        ("0.1", "writes alone after 0.9 s at the earliest"),
        ("0.1", "in the 0.7 s between are lost if it dies then"),
        ("0", "with replication_heartbeat = 0, drbdha outdates this copy"),
    ):
        extra = f"replication_heartbeat = {heartbeat}\n"
        toml = configure(tmp_path, monkeypatch, drbd_source=unfenced, extra=extra)
        assert cli.main(["-c", str(toml), "check-config"]) == cli.EXIT_OK
        out = capsys.readouterr().out
        assert said in out, out
