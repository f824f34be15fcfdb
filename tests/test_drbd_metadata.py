"""drbd_metadata: max-peers read from the DRBD metadata superblock, and check-config's
`max-peers` finding.

The superblocks are real: tests/data/drbd/metadata-*.txt are drbdmeta's own create-md output
(each file says how it was made), and as root with losetup and drbdmeta the loop tests make
metadata on a loop device and read it there, through check-config too.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from drbd_dumps import DATA, SBIN, SOURCES, needs_drbdadm, write_conf
from test_check_config import TOML

from drbdha import cli
from drbdha.resources import drbd_config
from drbdha.resources import drbd_metadata as md
from drbdha.resources.drbd_advice import Finding
from drbdha.resources.drbd_metadata import MetadataError, MetaDisk, Superblock

# ---- the superblocks drbdmeta made ---------------------------------------------------------


@dataclass(frozen=True)
class Made:
    """One tests/data/drbd/metadata-*.txt: the device size, drbdmeta's index argument, where
    drbdmeta's dump-md said the superblock is, its max-peers (None: 8.4, no such line) and
    the 4 KiB read there (the file leaves out its trailing zeros)."""

    size: int
    index: str
    md_offset: int
    max_peers: int | None
    block: bytes


def load(path: Path) -> Made:
    fields: dict[str, str] = {}
    data = b""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        if value:
            fields[key] = value
        else:
            data += bytes.fromhex(line)
    peers = fields["max_peers"]
    return Made(
        size=int(fields["size"]),
        index=fields["index"],
        md_offset=int(fields["md_offset"]),
        max_peers=None if peers == "-" else int(peers),
        block=data.ljust(md.BLOCK, b"\0"),
    )


FIXTURES = sorted(DATA.glob("metadata-*.txt"))


def image(tmp_path: Path, made: Made) -> Path:
    """A sparse file of the device's size with the superblock where drbdmeta wrote it."""
    path = tmp_path / "disk.img"
    with path.open("wb") as f:
        f.truncate(made.size)
        f.seek(made.md_offset)
        f.write(made.block)
    return path


def test_the_fixtures_are_there() -> None:
    names = {p.name for p in FIXTURES}
    assert "metadata-v09-internal-max-peers-1.txt" in names
    assert "metadata-v08-internal.txt" in names
    assert len(names) == 6


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_the_superblock_is_where_drbdmeta_put_it(path: Path) -> None:
    made = load(path)
    assert md.superblock_offset(made.size, made.index) == made.md_offset


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_max_peers_is_what_drbdmeta_made(path: Path, tmp_path: Path) -> None:
    made = load(path)
    version = "8.4" if made.max_peers is None else "9"
    expected = Superblock(version, made.max_peers or 1, made.md_offset)
    assert md.decode(made.block, made.md_offset) == expected
    assert md.read_superblock(str(image(tmp_path, made)), made.index) == expected


def block_with(magic: int | None = None, max_peers: int | None = None) -> bytes:
    b = bytearray(load(DATA / "metadata-v09-internal-max-peers-1.txt").block)
    if magic is not None:
        b[60:64] = magic.to_bytes(4, "big")
    if max_peers is not None:
        b[88:92] = max_peers.to_bytes(4, "big")
    return bytes(b)


@pytest.mark.parametrize(
    ("block", "said"),
    [
        (bytes(md.BLOCK), "no DRBD 8.4 or 9 metadata at byte 0 (magic 0x00000000)"),
        (block_with(magic=md.DRBD_MAGIC + 3), "no DRBD 8.4 or 9 metadata"),  # 0.7's magic
        (block_with(max_peers=0), "DRBD 9 metadata at byte 0 says max-peers 0"),
        (block_with(max_peers=32), "says max-peers 32"),  # DRBD_PEERS_MAX - 1 is the most
        (block_with()[:4095], "read 4095 bytes at byte 0, not 4096"),
    ],
    ids=["zeros", "v07-magic", "max-peers-0", "max-peers-32", "short"],
)
def test_decode_refuses_what_is_not_drbd_metadata(block: bytes, said: str) -> None:
    with pytest.raises(MetadataError, match=re.escape(said)):
        md.decode(block)


def test_decode_knows_84_metadata_in_use_by_its_magic() -> None:
    # DRBD_MD_MAGIC_84_UNCLEAN: read as 8.4, never as a max-peers at byte 88.
    assert md.decode(block_with(magic=md.DRBD_MAGIC + 5, max_peers=7)).version == "8.4"
    assert md.decode(block_with(max_peers=31)).max_peers == 31


@pytest.mark.parametrize(
    ("size", "index", "offset"),
    [
        (4096, "internal", 0),
        (8191, "internal", 0),  # the last whole, aligned 4 KiB
        ((1 << 40) + 512, "flex-internal", (1 << 40) - 4096),
        (4096, "flex-external", 0),
        ((256 << 20) + 4096, "2", 256 << 20),
    ],
)
def test_superblock_offset(size: int, index: str, offset: int) -> None:
    assert md.superblock_offset(size, index) == offset


@pytest.mark.parametrize(
    ("size", "index", "said"),
    [
        (4095, "internal", "4095 bytes are too few for internal metadata"),
        (0, "flex-external", "0 bytes are too few"),
        (256 << 20, "2", "too few for 2 metadata"),
        (1 << 20, "external", "meta-disk index 'external' is not one drbdha knows"),
    ],
)
def test_superblock_offset_refuses(size: int, index: str, said: str) -> None:
    with pytest.raises(MetadataError, match=re.escape(said)):
        md.superblock_offset(size, index)


# ---- reading the device --------------------------------------------------------------------


def test_without_o_direct_the_cache_is_dropped_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = load(DATA / "metadata-v09-internal-max-peers-2.txt")
    path = image(tmp_path, made)
    real_open = os.open
    dropped: list[tuple[int, int, int]] = []

    def no_direct(file: str, flags: int) -> int:
        if flags & os.O_DIRECT:  # what a file system without O_DIRECT answers
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(file, flags)

    monkeypatch.setattr(os, "open", no_direct)
    monkeypatch.setattr(
        os, "posix_fadvise", lambda *fd_offset_len_advice: dropped.append(fd_offset_len_advice[1:])
    )
    assert md.read_superblock(str(path), "internal").max_peers == 2
    assert dropped == [(made.md_offset, md.BLOCK, os.POSIX_FADV_DONTNEED)]


def test_an_unreadable_device_says_why(tmp_path: Path) -> None:
    with pytest.raises(MetadataError, match=r"cannot read .*/none: No such file or directory"):
        md.read_superblock(str(tmp_path / "none"), "internal")


def test_without_root_a_refused_read_says_root_reads_it(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(*_: str) -> Superblock:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(md, "_read", refused)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(MetadataError) as e:
        md.read_superblock("/dev/sdb", "internal")
    assert str(e.value) == "cannot read /dev/sdb: Permission denied (root reads it)"


def test_a_hung_disk_is_given_up_on(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()

    def hung(*_: str) -> Superblock:
        release.wait()
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(md, "_read", hung)
    try:
        with pytest.raises(MetadataError, match=r"no answer from /dev/sdb within 0\.01 s"):
            md.read_superblock("/dev/sdb", "internal", timeout=0.01)
    finally:
        release.set()


def test_a_bug_in_the_read_is_not_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: str) -> Superblock:
        raise ValueError("bug")

    monkeypatch.setattr(md, "_read", broken)
    with pytest.raises(ValueError, match="bug"):
        md.read_superblock("/dev/sdb", "internal")


# ---- where drbdadm says the metadata is ----------------------------------------------------

# Real output of `drbdadm -c FILE -d dump-md RES` (drbd-utils 9.22.0; the 8.4 line from its
# /lib/drbd/drbdadm-84), with what it wrote on stderr and its exit code.
DRY_RUNS = {
    "two-volumes": (
        0,
        (
            "drbdmeta 10 v09 /dev/vg0/a internal dump-md\n"
            "drbdmeta 11 v09 /dev/vg0/b internal dump-md\n"
        ),
        "",
        [MetaDisk(10, "/dev/vg0/a", "internal"), MetaDisk(11, "/dev/vg0/b", "internal")],
    ),
    "external-and-diskless": (
        10,
        (
            "drbdmeta 20 v09 /dev/vg0/meta flex-external dump-md\n"
            "drbdmeta 21 v09 /dev/vg0/meta2 1 dump-md\n"
        ),
        "The dump-md command requires a local disk, but the configuration gives none.\n",
        [MetaDisk(20, "/dev/vg0/meta", "flex-external"), MetaDisk(21, "/dev/vg0/meta2", "1")],
    ),
    "quoted": (
        0,
        "drbdmeta 40 v09 /dev/disk/by-id/a\\ b internal dump-md\n",
        "",
        [MetaDisk(40, "/dev/disk/by-id/a b", "internal")],
    ),
    "8.4": (
        0,
        "drbdmeta 0 v08 /dev/vg0/nfs internal dump-md\n",
        "",
        [MetaDisk(0, "/dev/vg0/nfs", "internal")],
    ),
    "diskless-here": (
        10,
        "",
        (
            "sh: 1: modinfo: not found\n"
            "The dump-md command requires a local disk, but the configuration gives none.\n"
        ),
        [],
    ),
}


class FakeDrbdadm:
    def __init__(self, rc: int, stdout: str, stderr: str = "") -> None:
        self.result = (rc, stdout, stderr)
        self.argv: list[str] = []

    def __call__(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        self.argv = list(argv)
        rc, out, err = self.result
        return subprocess.CompletedProcess(argv, rc, out, err)


@pytest.mark.parametrize("name", DRY_RUNS)
def test_meta_disks_from_drbdadms_dry_run(name: str) -> None:
    rc, out, err, disks = DRY_RUNS[name]
    run = FakeDrbdadm(rc, out, err)
    assert md.meta_disks("r0", config_file=Path("/etc/x.conf"), run=run) == disks
    assert run.argv == ["drbdadm", "-c", "/etc/x.conf", "-d", "dump-md", "r0"]


def test_meta_disks_passes_drbdadms_refusal_on() -> None:
    run = FakeDrbdadm(10, "", "'r9' not defined in your config (for this host).\n")
    with pytest.raises(drbd_config.DrbdConfigError) as e:
        md.meta_disks("r9", run=run)
    assert str(e.value) == "drbdadm: 'r9' not defined in your config (for this host)."


@needs_drbdadm
@pytest.mark.parametrize(
    ("name", "resource", "disks"),
    [
        ("9-two-nodes", "r0", [MetaDisk(0, "/dev/vg0/nfs", "internal")]),
        (
            "9-three-nodes",
            "r2",
            [MetaDisk(10, "/dev/vg0/a", "internal"), MetaDisk(11, "/dev/vg0/b", "internal")],
        ),
    ],
)
def test_meta_disks_with_this_hosts_drbdadm(
    name: str, resource: str, disks: list[MetaDisk], tmp_path: Path
) -> None:
    conf = write_conf(tmp_path, SOURCES[name])
    assert md.meta_disks(resource, config_file=conf) == disks


# ---- the finding ---------------------------------------------------------------------------


def fixed(sb: Superblock | MetadataError) -> md.Read:
    def read(*_: str) -> Superblock:
        if isinstance(sb, MetadataError):
            raise sb
        return sb

    return read


def findings(name: str, sb: Superblock | MetadataError) -> list[Finding]:
    rc, out, err, _ = DRY_RUNS[name]
    return md.findings("r0", run=FakeDrbdadm(rc, out, err), read=fixed(sb))


def test_max_peers_1_is_a_warning_with_the_way_out() -> None:
    [f] = findings("quoted", Superblock("9", 1, 0))
    assert (f.level, f.key) == ("warning", "max-peers")
    assert f.message.startswith(
        "/dev/disk/by-id/a b (minor 40): DRBD 9 metadata for one peer (max-peers 1): a "
        "Secondary whose metadata has room for one peer turns its activity-log updates off"
    )
    assert f.message.endswith("(docs/reliability.md, finding 11)")
    assert "`drbdadm down r0; drbdadm create-md --max-peers=2 r0; drbdadm up r0`" in f.advice
    assert "resyncs this disk in full from the peer" in f.advice
    assert "32 MiB per TiB more at the end of the backing disk" in f.advice


def test_external_metadata_needs_the_room_on_its_meta_disk() -> None:
    warned = findings("external-and-diskless", Superblock("9", 1, 0))
    assert [f.level for f in warned] == ["warning", "warning"]
    assert "32 MiB per TiB more on /dev/vg0/meta." in warned[0].advice


def test_max_peers_2_and_84_metadata_are_notes() -> None:
    [two] = findings("quoted", Superblock("9", 2, 0))
    assert (two.level, two.key) == ("info", "max-peers")
    assert (
        two.message == "/dev/disk/by-id/a b (minor 40): DRBD 9 metadata for 2 peers (max-peers 2)"
    )
    [old] = findings("8.4", Superblock("8.4", 1, 0))
    assert old.level == "info"
    assert old.message.startswith("/dev/vg0/nfs (minor 0): DRBD 8.4 metadata, one bitmap and no")


def test_what_cannot_be_read_is_not_checked_and_says_why() -> None:
    [f] = findings("8.4", MetadataError("cannot read /dev/vg0/nfs: No such file or directory"))
    assert (f.level, f.key) == ("info", "max-peers")
    assert f.message == (
        "/dev/vg0/nfs (minor 0): not checked: cannot read /dev/vg0/nfs: No such file or directory"
    )


def test_a_diskless_node_has_nothing_to_check() -> None:
    assert findings("diskless-here", Superblock("9", 1, 0)) == []


def test_without_drbdadm_max_peers_is_not_checked() -> None:
    def missing(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        raise FileNotFoundError(argv[0])

    [f] = md.findings("r0", run=missing)
    assert f == Finding("info", "max-peers", "not checked: drbdadm not found: install drbd-utils")


# ---- check-config, on a file and on a real loop device ---------------------------------------

DRBD_CONF = """\
resource r0 {
  net { ping-int 1; ping-timeout 5; timeout 9; fencing dont-care; }
  options { quorum majority; on-no-quorum io-error; on-no-data-accessible io-error; }
  on @HOST@ { node-id 0; device /dev/drbd0; disk @DISK@; meta-disk internal; address 127.0.0.1:7789; }
  on nfs-b { node-id 1; device /dev/drbd0; disk /dev/sdb; meta-disk internal; address 127.0.0.2:7789; }
  on tiebreaker { node-id 2; device /dev/drbd0; disk none; address 127.0.0.3:7789; }
  connection-mesh { hosts @HOST@ nfs-b tiebreaker; }
}
"""  # noqa: E501  (a config file as an operator writes it)


def check_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, disk: str) -> int:
    toml = tmp_path / "drbdha.toml"
    toml.write_text(TOML.format(resource="r0"))
    conf = write_conf(tmp_path, DRBD_CONF.replace("@DISK@", disk))
    monkeypatch.setenv("DRBDHA_DRBDADM_CONFIG", str(conf))
    return cli.main(["-c", str(toml), "check-config"])


@needs_drbdadm
def test_check_config_warns_about_max_peers_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    disk = image(tmp_path, load(DATA / "metadata-v09-internal-max-peers-1.txt"))
    assert check_config(tmp_path, monkeypatch, str(disk)) == cli.EXIT_OK  # a warning only
    lines = capsys.readouterr().out.splitlines()
    warning = f"  WARNING max-peers: {disk} (minor 0): DRBD 9 metadata for one peer (max-peers 1)"
    [i] = [i for i, line in enumerate(lines) if line.startswith(warning)]
    assert lines[i + 1].startswith("      advice: re-create the metadata with --max-peers=2")


@needs_drbdadm
def test_check_config_on_a_missing_disk_says_not_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    disk = tmp_path / "gone"
    assert check_config(tmp_path, monkeypatch, str(disk)) == cli.EXIT_OK
    assert (
        f"  INFO max-peers: {disk} (minor 0): not checked: cannot read {disk}: No such file or "
        "directory"
    ) in capsys.readouterr().out.splitlines()


LOSETUP = shutil.which("losetup", path=SBIN)
DRBDMETA = shutil.which("drbdmeta", path=SBIN)
needs_loop = pytest.mark.skipif(
    os.geteuid() != 0 or LOSETUP is None or DRBDMETA is None,
    reason="needs root, losetup and drbd-utils' drbdmeta (a loop device with real metadata)",
)


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[str]:
    """A loop device on a sparse 64 MiB + 3.5 KiB file (its end is not 4 KiB-aligned),
    detached and its file removed afterwards."""
    backing = tmp_path / "disk.img"
    with backing.open("wb") as f:
        f.truncate((64 << 20) + 3584)
    argv = [str(LOSETUP), "--find", "--show", str(backing)]
    device = subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()
    try:
        yield device
    finally:
        subprocess.run([str(LOSETUP), "-d", device], check=False, capture_output=True)
        backing.unlink()


def drbdmeta(*args: str) -> str:
    r = subprocess.run(
        [str(DRBDMETA), "--force", *args],
        check=True,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    return r.stdout


@needs_loop
@pytest.mark.parametrize(("fmt", "max_peers"), [("v09", "1"), ("v09", "2"), ("v08", None)])
def test_metadata_made_by_drbdmeta_on_a_loop_device(
    loop: str, fmt: str, max_peers: str | None
) -> None:
    drbdmeta("0", fmt, loop, "internal", "create-md", *([max_peers] if max_peers else []))
    dump = drbdmeta("0", fmt, loop, "internal", "dump-md")
    offset = re.search(r"^# md_offset (\d+)$", dump, re.MULTILINE)
    assert offset is not None
    expected = Superblock("9" if max_peers else "8.4", int(max_peers or 1), int(offset[1]))
    assert md.read_superblock(loop, "internal") == expected  # O_DIRECT on a block device


@needs_loop
@needs_drbdadm
def test_check_config_on_a_loop_device(
    loop: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    drbdmeta("0", "v09", loop, "internal", "create-md", "1")
    assert check_config(tmp_path, monkeypatch, loop) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert f"  WARNING max-peers: {loop} (minor 0): DRBD 9 metadata for one peer" in out
    drbdmeta("0", "v09", loop, "internal", "create-md", "2")
    assert check_config(tmp_path, monkeypatch, loop) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert f"  INFO max-peers: {loop} (minor 0): DRBD 9 metadata for 2 peers (max-peers 2)" in out
