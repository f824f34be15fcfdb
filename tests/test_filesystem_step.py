"""The filesystem step's pure parts: which mounts are ours, when fsck runs, which device a
DRBD chain mounts, and where the step sits in the chain. The step itself runs on real loop
devices in integration/test_filesystem_loop.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from test_drbd_step import res
from test_fencing_rule import FakeLog

from drbdha.chain.step import StepFailed
from drbdha.config import ExportConfig, StorageConfig
from drbdha.daemon import compose as steps
from drbdha.resources.drbd_events import Volume
from drbdha.resources.filesystem import (
    Device,
    FilesystemConfig,
    FilesystemStep,
    Mount,
    drbd_device,
    needs_fsck,
    ours,
)
from drbdha.resources.nfs import NfsdStep

VIP = "192.0.2.100"
DRBD0 = Device("/dev/drbd0", "147:0")
MOUNTS = [
    Mount("/", "/dev/vda", "254:0", "ext4", 1, 0),
    Mount("/var/lib/nfs/rpc_pipefs", "sunrpc", "0:40", "rpc_pipefs", 9, 1),  # hidden below
    Mount("/srv/nfs", "/dev/drbd0", "147:0", "ext4", 2, 1),
    Mount("/srv/nfs/scratch", "scratch", "0:52", "tmpfs", 3, 2),
    Mount("/srv/nfs/scratch/deeper", "x", "0:53", "tmpfs", 4, 3),
    Mount("/var/lib/nfs", "/dev/drbd0[/state]", "147:0", "ext4", 5, 1),
    Mount("/var/lib/nfs/rpc_pipefs", "sunrpc", "0:41", "rpc_pipefs", 6, 5),  # on top
    Mount("/srv/nfs-other", "/dev/vdc", "254:32", "ext4", 7, 1),  # a sibling, not below
    Mount("/srv/btrfs", "/dev/drbd0", "0:61", "btrfs", 8, 1),  # anonymous MAJ:MIN
]


def test_ours_is_every_mount_of_the_device_and_what_is_on_top_children_first() -> None:
    found = ours(MOUNTS, DRBD0)
    assert [m.id for m in found] == [4, 3, 2, 6, 5, 8]


def test_a_missing_device_node_is_matched_by_path_only() -> None:
    gone = Device("/dev/drbd9", "")
    unrelated = [Mount("/proc", "proc", "", "proc", 1, 0)]  # an empty MAJ:MIN must not match
    assert ours(unrelated, gone) == []


@pytest.mark.parametrize(
    ("policy", "fstype", "journal", "want"),
    [
        ("auto", "ext2", False, True),
        ("auto", "ext4", True, False),
        ("auto", "ext4", False, True),
        ("auto", "xfs", None, False),
        ("auto", "vfat", None, True),
        ("never", "ext2", False, False),
        ("always", "xfs", None, True),
    ],
)
def test_fsck_policy(policy: str, fstype: str, journal: bool | None, want: bool) -> None:
    assert needs_fsck(policy, fstype, journal) is want


def test_the_drbd_device_is_the_only_volume_of_the_resource() -> None:
    assert drbd_device(res(), "r0") == "/dev/drbd0"
    two = dataclasses.replace(
        res(), devices=(*res().devices, Volume(1, 1, "UpToDate", False, None, None))
    )
    with pytest.raises(StepFailed, match="2 volumes: set `device`"):
        drbd_device(two, "r0")
    with pytest.raises(StepFailed, match="not up"):
        drbd_device(None, "r0")


def test_a_chain_without_mountpoint_has_no_filesystem_step() -> None:
    storage = StorageConfig(name="nfs", drbd_resource="r0")
    assert steps.storage_steps("lab", storage, _Watcher(), FakeLog(), VIP) == []  # type: ignore[arg-type]


def test_the_filesystem_step_mounts_the_resources_device() -> None:
    log = FakeLog()
    storage = StorageConfig(name="nfs", drbd_resource="r0", mountpoint=Path("/srv/nfs"))
    (fs,) = steps.storage_steps("lab", storage, _Watcher(), log.bind(instance="lab"), VIP)  # type: ignore[arg-type]
    assert isinstance(fs, FilesystemStep)
    assert fs.cfg == FilesystemConfig("/srv/nfs", "auto", "", "auto", 60.0, 30.0)
    assert fs.device() == "/dev/drbd0"
    fs.log.info("filesystem.fsck", exit_code=0)
    assert log.events[-1] == ("info", "filesystem.fsck", {"instance": "lab", "exit_code": 0})
    storage = dataclasses.replace(storage, device=Path("/dev/vg/data"))
    (fs,) = steps.storage_steps("lab", storage, _Watcher(), log, VIP)  # type: ignore[arg-type]
    assert fs.device() == "/dev/vg/data"


def test_an_nfs_chain_has_its_steps_in_order() -> None:
    export = ExportConfig(Path("/srv/nfs/data"), ("192.0.2.0/24",), 1)
    storage = StorageConfig(
        name="nfs",
        drbd_resource="r0",
        mountpoint=Path("/srv/nfs"),
        services=("nginx.service",),
        nfs_state_dir=Path("/srv/nfs/state"),
        exports=(export,),
    )
    chain = steps.storage_steps("lab", storage, _Watcher(), FakeLog(), VIP)  # type: ignore[arg-type]
    assert [s.name for s in chain] == ["filesystem", "services", "nfs_state", "nfsd", "exports"]
    nfsd = chain[3]
    assert isinstance(nfsd, NfsdStep)
    units = "".join(nfsd.dropins.values())
    assert "' drbdha-lab\n" in units  # the default scope, from the instance name
    assert f"sm-notify -f -v {VIP}\n" in units


class _Watcher:
    """Stands in for a DrbdWatcher: only its facts() is read."""

    def facts(self) -> object:
        return res()
