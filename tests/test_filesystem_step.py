"""The filesystem step's pure parts: which mounts are ours, when fsck runs, which device a
DRBD chain mounts, and where the step sits in the chain. The step itself runs on real loop
devices in integration/test_filesystem_loop.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from test_drbd_step import res
from test_fencing_rule import instance, make

from drbdha.chain.step import StepFailed
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

DRBD0 = Device("/dev/drbd0", "147:0")
MOUNTS = [
    Mount("/", "/dev/vda", "254:0", "ext4"),
    Mount("/srv/nfs", "/dev/drbd0", "147:0", "ext4"),
    Mount("/srv/nfs/scratch", "scratch", "0:52", "tmpfs"),
    Mount("/srv/nfs/scratch/deeper", "x", "0:53", "tmpfs"),
    Mount("/var/lib/nfs", "/dev/drbd0[/state]", "147:0", "ext4"),
    Mount("/srv/nfs-other", "/dev/vdc", "254:32", "ext4"),  # a sibling, not below
    Mount("/srv/btrfs", "/dev/drbd0", "0:61", "btrfs"),  # anonymous MAJ:MIN
]


def test_ours_is_every_mount_of_the_device_and_everything_below_deepest_first() -> None:
    targets = [m.target for m in ours(MOUNTS, DRBD0, "/srv/nfs")]
    assert targets[0] == "/srv/nfs/scratch/deeper"
    assert set(targets) == {
        "/srv/nfs",
        "/srv/nfs/scratch",
        "/srv/nfs/scratch/deeper",
        "/var/lib/nfs",
        "/srv/btrfs",
    }
    assert targets.index("/srv/nfs/scratch") < targets.index("/srv/nfs")


def test_a_missing_device_node_is_matched_by_path_only() -> None:
    gone = Device("/dev/drbd9", "")
    unrelated = [Mount("/proc", "proc", "", "proc")]  # an empty MAJ:MIN must not match
    assert ours(unrelated, gone, "/srv/nfs") == []


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


def test_a_chain_without_mountpoint_has_no_filesystem_step(tmp_path: Path) -> None:
    chains, _, _ = make(tmp_path)
    inst = instance()
    watcher = chains.watchers.setdefault("r0", _Watcher())  # type: ignore[arg-type]
    assert chains._filesystem(inst, inst.storage, watcher) == []


def test_the_filesystem_step_mounts_the_resources_device(tmp_path: Path) -> None:
    chains, _, log = make(tmp_path)
    inst = instance()
    storage = dataclasses.replace(inst.storage, mountpoint=Path("/srv/nfs"), fsck="never")
    (fs,) = chains._filesystem(inst, storage, _Watcher())  # type: ignore[arg-type]
    assert isinstance(fs, FilesystemStep)
    assert fs.cfg == FilesystemConfig("/srv/nfs", "auto", "", "never", 60.0, 30.0)
    assert fs.device() == "/dev/drbd0"
    fs.log("filesystem.fsck", exit_code=0)
    assert log.events[-1] == ("info", "filesystem.fsck", {"instance": "lab", "exit_code": 0})
    storage = dataclasses.replace(storage, device=Path("/dev/vg/data"))
    (fs,) = chains._filesystem(inst, storage, _Watcher())  # type: ignore[arg-type]
    assert fs.device() == "/dev/vg/data"


class _Watcher:
    """Stands in for a DrbdWatcher: only its facts() is read."""

    def facts(self) -> object:
        return res()
