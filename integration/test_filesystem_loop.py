"""The filesystem step on real loop devices and real mounts (root; no DRBD needed: the step
only sees a block device).

Each test makes its own image file, loop device and mountpoint under tmp_path and removes
them, unmounting first whatever a failed test left mounted.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from drbdha.chain.step import StepFailed
from drbdha.resources.filesystem import FilesystemConfig, FilesystemStep

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (loop devices, mount)")


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60).stdout


@dataclass
class Recorder:
    """The step's log: keeps what it was told (event, fields), whatever the level."""

    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def info(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))

    warning = info

    def named(self, event: str) -> list[dict[str, Any]]:
        return [f for e, f in self.events if e == event]


@dataclass
class Disk:
    device: str
    mountpoint: Path
    log: Recorder

    def step(self, **kw: Any) -> FilesystemStep:
        cfg = FilesystemConfig(mountpoint=str(self.mountpoint), **kw)
        return FilesystemStep(cfg, lambda: self.device, log=self.log)

    def mkfs(self, *argv: str) -> None:
        sh(*argv, self.device)


def mounted_targets() -> list[str]:
    return sh("findmnt", "--list", "-n", "-o", "TARGET").split()


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    image = tmp_path / "disk.img"
    with image.open("wb") as f:
        f.truncate(64 << 20)
    device = sh("losetup", "--find", "--show", str(image)).strip()
    d = Disk(device, tmp_path / "mnt", Recorder())
    try:
        d.mkfs("mkfs.ext4", "-q", "-F")
        yield d
    finally:
        for target in sorted(mounted_targets(), key=len, reverse=True):
            if target.startswith(str(tmp_path)):
                subprocess.run(["umount", target], check=False, capture_output=True)
        subprocess.run(["losetup", "-d", device], check=False, capture_output=True)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_double_mount_and_double_unmount(disk: Disk) -> None:
    step = disk.step()
    assert not run(step.held())
    run(step.start())  # the mountpoint does not exist yet: made by mount --mkdir
    assert str(disk.mountpoint) in mounted_targets()
    run(step.start())  # already mounted: nothing happens
    assert mounted_targets().count(str(disk.mountpoint)) == 1
    assert run(step.held())
    (disk.mountpoint / "f").write_text("kept")
    run(step.stop())
    assert str(disk.mountpoint) not in mounted_targets()
    assert not run(step.held())
    run(step.stop())  # already unmounted: nothing happens
    run(step.start())
    assert (disk.mountpoint / "f").read_text() == "kept"
    run(step.stop())


def test_another_filesystem_on_the_mountpoint_is_refused(disk: Disk) -> None:
    disk.mountpoint.mkdir()
    sh("mount", "-t", "tmpfs", "other", str(disk.mountpoint))
    with pytest.raises(StepFailed) as e:
        run(disk.step().start())
    assert e.value.reason == "mountpoint_busy"
    assert not run(disk.step().held())  # a tmpfs there is not ours to unmount
    run(disk.step().stop())
    assert str(disk.mountpoint) in mounted_targets()


def holder(cwd: Path, *, ignore_term: bool) -> subprocess.Popen[bytes]:
    """A process with its working directory on the mount (and an open file there)."""
    code = (
        "import os, signal, sys, time\n"
        + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if ignore_term else "")
        + "f = open('held', 'w'); print('ready', flush=True); time.sleep(600)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], cwd=cwd, stdout=subprocess.PIPE)
    assert p.stdout is not None
    assert p.stdout.readline() == b"ready\n"
    return p


def test_a_holder_that_ignores_term_is_killed_and_the_unmount_succeeds(disk: Disk) -> None:
    step = disk.step(stop_timeout=4.0)
    run(step.start())
    stubborn = holder(disk.mountpoint, ignore_term=True)
    polite = holder(disk.mountpoint, ignore_term=False)
    try:
        t0 = time.monotonic()
        run(step.stop())
        took = time.monotonic() - t0
        assert str(disk.mountpoint) not in mounted_targets()
        assert polite.wait(5) == -signal.SIGTERM
        assert stubborn.wait(5) == -signal.SIGKILL
        signalled = disk.log.named("filesystem.holders_signalled")
        sent = [(f["signal"], tuple(f["pids"])) for f in signalled]
        assert sent[0] == ("SIGTERM", tuple(sorted([stubborn.pid, polite.pid])))
        assert ("SIGKILL", (stubborn.pid,)) in sent
        # KILL only once half the stop budget (2 s) was spent on TERM.
        assert took >= 2.0, took
    finally:
        for p in (stubborn, polite):
            p.kill()
            p.wait()


def test_a_holder_that_cannot_be_signalled_fails_the_stop_and_the_mount_stays(
    disk: Disk,
) -> None:
    # The step never signals its own process; this test's process holding a file stands in
    # for a holder that does not die (in D state, say). The stop must fail with the reason,
    # and must not have hidden the mount with a lazy unmount.
    step = disk.step(stop_timeout=2.0)
    run(step.start())
    with (disk.mountpoint / "open").open("w"):
        with pytest.raises(StepFailed) as e:
            run(step.stop())
        assert e.value.reason == "unmount_failed"
        assert "target is busy" in e.value.detail
        assert str(disk.mountpoint) in mounted_targets()
    run(step.stop())
    assert str(disk.mountpoint) not in mounted_targets()


def test_submounts_and_binds_of_the_device_go_first(disk: Disk, tmp_path: Path) -> None:
    step = disk.step()
    run(step.start())
    sub = disk.mountpoint / "sub"
    sub.mkdir()
    sh("mount", "-t", "tmpfs", "scratch", str(sub))
    (disk.mountpoint / "state").mkdir()
    elsewhere = tmp_path / "var-lib-nfs"  # as the NFS state directory's bind
    elsewhere.mkdir()
    sh("mount", "--bind", str(disk.mountpoint / "state"), str(elsewhere))
    assert run(step.held())
    run(step.stop())
    left = [t for t in mounted_targets() if t.startswith(str(tmp_path))]
    assert left == []
    sh("losetup", "-d", disk.device)  # only possible once nothing holds the device
    assert disk.device not in sh("losetup", "--list", "-n", "-O", "NAME")


@pytest.mark.parametrize(
    ("mkfs", "policy", "checked"),
    [
        (("mkfs.ext2", "-q", "-F"), "auto", True),  # no journal: checked
        (("mkfs.ext4", "-q", "-F", "-O", "^has_journal"), "auto", True),
        (("mkfs.ext4", "-q", "-F"), "auto", False),  # the journal is replayed at mount
        (("mkfs.ext2", "-q", "-F"), "never", False),
        (("mkfs.ext4", "-q", "-F"), "always", True),
    ],
)
def test_fsck_policy(disk: Disk, mkfs: tuple[str, ...], policy: str, checked: bool) -> None:
    disk.mkfs(*mkfs)
    step = disk.step(fsck=policy)
    run(step.start())
    assert str(disk.mountpoint) in mounted_targets()
    fscks = disk.log.named("filesystem.fsck")
    assert fscks == ([{"device": disk.device, "exit_code": 0}] if checked else [])
    run(step.stop())


def test_fsck_errors_left_fail_the_takeover_and_nothing_is_mounted(disk: Disk) -> None:
    disk.mkfs("mkfs.ext2", "-q", "-F")
    # A cleared root inode is beyond what preen mode (-a) may repair: "UNEXPECTED
    # INCONSISTENCY; RUN fsck MANUALLY", exit 4. State "not clean", as a crashed Primary
    # leaves a mounted ext2 (a clean one is not even looked at by preen mode).
    sh("debugfs", "-w", "-R", "clri <2>", disk.device)
    sh("debugfs", "-w", "-R", "ssv state 0", disk.device)
    with pytest.raises(StepFailed) as e:
        run(disk.step().start())
    assert e.value.reason == "fsck_failed"
    assert e.value.backoff
    assert [f["exit_code"] for f in disk.log.named("filesystem.fsck")] == [4]
    assert str(disk.mountpoint) not in mounted_targets()


def test_no_filesystem_on_the_device_is_a_clear_failure(disk: Disk) -> None:
    sh("wipefs", "-a", disk.device)
    with pytest.raises(StepFailed) as e:
        run(disk.step().start())
    assert e.value.reason == "no_filesystem"
    assert disk.device in e.value.detail
