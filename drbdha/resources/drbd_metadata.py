"""How many peers a resource's DRBD 9 metadata has bitmaps for (max-peers), read from the
superblock on this node's disk: check-config's `max-peers` finding (docs/reliability.md,
finding 11: with max-peers 1, DRBD 9.3.3 lost a promoted Secondary's writes).

Rules:
- drbdadm says where the metadata is (`drbdadm -d dump-md RES`: a dry run that only prints
  the drbdmeta command it would run, one per volume with a disk on this node), and this
  module reads 4 KiB from there itself: `drbdadm dump-md` refuses a disk DRBD has attached
  (drbdmeta opens it O_EXCL, drbdmeta_linux.c v07_style_md_open_device()).
- The device is opened read-only and never written. decode() and superblock_offset() are
  pure.
- findings() never raises: a disk it cannot read, or metadata it does not know, is an "info"
  finding that says why max-peers was not checked.
"""

from __future__ import annotations

import errno
import mmap
import os
import shlex
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from drbdha.errors import DrbdhaError
from drbdha.resources import drbd_config
from drbdha.resources.drbd_advice import Finding

# ---- the superblock ------------------------------------------------------------------------
# From the vendored sources (drbd-9.3.3, drbd-utils-9.34.0 and its drbd-headers):
# - Where it is. Internal metadata ends the backing disk, its superblock in the last 4 KiB
#   of it that are 4 KiB-aligned: byte (size & ~4095) - 4096 (DRBD drbd/drbd_int.h
#   drbd_md_ss(): "last 4k aligned block of 4k size", (capacity & ~7) - 8 sectors; drbdmeta.c
#   v07_style_md_get_byte_offset(DRBD_MD_INDEX_FLEX_INT)). External metadata starts with it:
#   at byte 0 of `meta-disk /dev/X` (DRBD_MD_INDEX_FLEX_EXT), at N * 128 MiB for
#   `meta-disk /dev/X[N]` (the same two functions, "external, some index").
# - What is in it, all big-endian. DRBD 9: struct meta_data_on_disk_9 (drbd_meta_data.h):
#   magic (be_u32) at byte 60, bm_max_peers (be_u32) at 88. DRBD 8.4: struct md_on_disk_08
#   (drbdmeta.c; meta_data_on_disk_84 in DRBD 9's drbd_legacy_84.c) has its magic at byte
#   60 too ("to have the magic at the same position as in v07, and v08") and no max-peers
#   field: one bitmap (drbdmeta.c md_disk_08_to_cpu() and drbd_md_decode_84(): max_peers = 1).
# - The magics: DRBD_MAGIC 0x83740267 (linux/drbd.h), DRBD_MD_MAGIC_08 = +4,
#   DRBD_MD_MAGIC_84_UNCLEAN = +5 (drbdmeta's v08 accepts both), DRBD_MD_MAGIC_09 = +6.
# - max-peers is valid from 1 to DRBD_PEERS_MAX - 1 = 31 (drbdmeta.c is_valid_md()).
BLOCK: Final = 4096
EXTERNAL_SLOT: Final = 128 << 20  # MD_RESERVED_SECT_07 sectors, in bytes
_MAGIC_AT: Final = 60
_MAX_PEERS_AT: Final = 88
DRBD_MAGIC: Final = 0x83740267
MAGICS: Final = {DRBD_MAGIC + 4: "8.4", DRBD_MAGIC + 5: "8.4", DRBD_MAGIC + 6: "9"}
MAX_PEERS_LIMIT: Final = 31
READ_TIMEOUT: Final = 5.0  # seconds for one 4 KiB read; a hung disk must not hang the start


class MetadataError(DrbdhaError):
    """The superblock could not be read, or is not DRBD 8.4 or 9 metadata; says why."""


@dataclass(frozen=True, slots=True)
class Superblock:
    version: str  # "9" or "8.4"
    max_peers: int  # 1 for 8.4, which has one bitmap
    offset: int  # where it was read, in bytes


def superblock_offset(size: int, index: str) -> int:
    """The byte offset of the superblock on a device of `size` bytes, for drbdmeta's index
    argument as drbdadm gives it: "internal", "flex-internal", "flex-external" or N."""
    if index in ("internal", "flex-internal"):
        offset = (size & ~(BLOCK - 1)) - BLOCK
    elif index == "flex-external":
        offset = 0
    elif index.isdigit():
        offset = int(index) * EXTERNAL_SLOT
    else:
        raise MetadataError(f"meta-disk index {index!r} is not one drbdha knows")
    if offset < 0 or offset + BLOCK > size:
        raise MetadataError(f"{size} bytes are too few for {index} metadata")
    return offset


def decode(block: bytes, offset: int = 0) -> Superblock:
    """The superblock's version and max-peers. Raises MetadataError for anything else."""
    if len(block) < BLOCK:
        raise MetadataError(f"read {len(block)} bytes at byte {offset}, not {BLOCK}")
    (magic,) = struct.unpack_from(">I", block, _MAGIC_AT)
    version = MAGICS.get(magic)
    if version is None:
        raise MetadataError(f"no DRBD 8.4 or 9 metadata at byte {offset} (magic {magic:#010x})")
    if version == "8.4":
        return Superblock("8.4", 1, offset)
    (max_peers,) = struct.unpack_from(">I", block, _MAX_PEERS_AT)
    if not 1 <= max_peers <= MAX_PEERS_LIMIT:
        raise MetadataError(f"DRBD 9 metadata at byte {offset} says max-peers {max_peers}")
    return Superblock("9", max_peers, offset)


def _read(path: str, index: str) -> Superblock:
    # O_RDONLY: DRBD holds an attached backing disk open exclusively, which keeps out only
    # other exclusive openers; a plain read-only open still works, and writes nothing.
    # O_DIRECT, and without it where EINVAL says it is not supported, as drbdmeta does.
    flags = os.O_RDONLY | os.O_CLOEXEC
    try:
        fd, direct = os.open(path, flags | os.O_DIRECT), True
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
        fd, direct = os.open(path, flags), False
    try:
        offset = superblock_offset(os.lseek(fd, 0, os.SEEK_END), index)
        # DRBD writes the superblock below the page cache of the device it sits on, so a
        # cached copy can be stale: read past the cache (O_DIRECT), or drop it first.
        if not direct:
            os.posix_fadvise(fd, offset, BLOCK, os.POSIX_FADV_DONTNEED)
        with mmap.mmap(-1, BLOCK) as buf:  # page-aligned, as O_DIRECT wants
            n = os.preadv(fd, [buf], offset)
            return decode(buf[:n], offset)
    finally:
        os.close(fd)


def read_superblock(path: str, index: str, timeout: float = READ_TIMEOUT) -> Superblock:
    """The superblock of the metadata at `path` (drbdmeta's index argument `index`).
    Raises MetadataError with the reason: unreadable, too slow, or not DRBD metadata."""
    outcome: list[Superblock | Exception] = []

    def work() -> None:
        try:
            outcome.append(_read(path, index))
        except Exception as e:  # handed to the caller, who raises it
            outcome.append(e)

    # A daemon thread: a read stuck on a dead disk cannot be cancelled, but need not hold
    # up check-config (or the daemon's start) with it.
    t = threading.Thread(target=work, name="drbd-metadata-read", daemon=True)
    t.start()
    t.join(timeout)
    if not outcome:
        raise MetadataError(f"no answer from {path} within {timeout:g} s")
    result = outcome[0]
    if isinstance(result, OSError):
        root = result.errno in (errno.EACCES, errno.EPERM) and os.geteuid() != 0
        why = f"{result.strerror or result}{' (root reads it)' if root else ''}"
        raise MetadataError(f"cannot read {path}: {why}") from result
    if isinstance(result, Exception):
        raise result
    return result


# ---- where this node's metadata is ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MetaDisk:
    minor: int
    device: str  # what holds the metadata: the backing disk when it is internal
    index: str  # drbdmeta's argument: "internal", "flex-external", "flex-internal" or N


# drbdadm_main.c _adm_drbdmeta() prints `drbdmeta MINOR v09 DEVICE INDEX dump-md`, the
# device shell-quoted; drbdadm-84 prints v08. A volume without a disk here instead makes it
# say "requires a local disk" and exit 10, after the volumes that have one.
_NO_DISK: Final = "requires a local disk"


def parse_dry_run(text: str) -> list[MetaDisk]:
    """The metadata locations in `drbdadm -d dump-md RES` output; other lines are skipped."""
    out = []
    for line in text.splitlines():
        try:
            words = shlex.split(line)
        except ValueError:
            continue
        if len(words) == 6 and words[0].endswith("drbdmeta") and words[-1] == "dump-md":
            _, minor, _, device, index, _ = words
            if minor.isdigit():
                out.append(MetaDisk(int(minor), device, index))
    return out


def meta_disks(
    resource: str, *, config_file: Path | None = None, run: drbd_config.Run | None = None
) -> list[MetaDisk]:
    """Where this node keeps `resource`'s metadata, volume by volume (none when this node is
    diskless). drbdadm resolves the host, volumes and inheritance as DRBD will; the dry run
    needs neither root nor the kernel module. Raises DrbdConfigError when drbdadm fails."""
    r = drbd_config.drbdadm(["-d", "dump-md", resource], config_file=config_file, run=run)
    found = parse_dry_run(r.stdout)
    if r.returncode != 0 and not found and _NO_DISK not in (r.stderr or ""):
        raise drbd_config.DrbdConfigError(drbd_config.message(r))
    return found


# ---- the finding ---------------------------------------------------------------------------

Read = Callable[[str, str], Superblock]

_WHY: Final = (
    "a Secondary whose metadata has room for one peer turns its activity-log updates off "
    "while its only peer with a disk is Primary (drbd_nl.c __update_mdf_al_disabled), and "
    "DRBD 9.3.3 lost a promoted Secondary's writes when it crashed before its old Primary "
    "was back: its bitmap for that peer was gone and the resync copied nothing "
    "(docs/reliability.md, finding 11)"
)


def _advice(resource: str, disk: MetaDisk) -> str:
    # drbdmeta create-md over valid metadata asks, then writes new metadata (current UUID
    # "just created"), which DRBD syncs in full from the peer (drbd_receiver.c
    # RULE_JUST_CREATED_SELF). A bitmap slot is one bit per 4 KiB (drbdmeta.c bm_bytes()),
    # and internal metadata that grows takes it from the end of the data: create-md
    # refuses when a file system it recognises reaches there (check_for_existing_data()).
    room = (
        "at the end of the backing disk, so grow the disk by that much first (create-md "
        "refuses when the file system would reach into it)"
        if disk.index in ("internal", "flex-internal")
        else f"on {disk.device}"
    )
    return (
        f"re-create the metadata with --max-peers=2 on this node while it is Secondary and "
        f"the peer serves: `drbdadm down {resource}; drbdadm create-md --max-peers=2 "
        f"{resource}; drbdadm up {resource}`; DRBD then resyncs this disk in full from the "
        f"peer (no second copy until it ends). The second bitmap needs 32 MiB per TiB more "
        f"{room}. Then the other node, the same way, after the resync"
    )


def _finding(resource: str, disk: MetaDisk, read: Read) -> Finding:
    name = f"{disk.device} (minor {disk.minor})"
    try:
        sb = read(disk.device, disk.index)
    except MetadataError as e:
        return Finding("info", "max-peers", f"{name}: not checked: {e}")
    if sb.version == "8.4":
        return Finding(
            "info",
            "max-peers",
            f"{name}: DRBD 8.4 metadata, one bitmap and no max-peers: nothing to check on "
            "DRBD 8.4 (a DRBD 9 module uses it only in drbd8 compatibility mode, as max-peers 1)",
        )
    if sb.max_peers < 2:
        return Finding(
            "warning",
            "max-peers",
            f"{name}: DRBD 9 metadata for one peer (max-peers {sb.max_peers}): {_WHY}",
            _advice(resource, disk),
        )
    return Finding(
        "info",
        "max-peers",
        f"{name}: DRBD 9 metadata for {sb.max_peers} peers (max-peers {sb.max_peers})",
    )


def findings(
    resource: str,
    *,
    config_file: Path | None = None,
    run: drbd_config.Run | None = None,
    read: Read = read_superblock,
) -> list[Finding]:
    """One finding per volume with a disk on this node: a warning for DRBD 9 metadata with
    max-peers below 2, otherwise an info that says what was found or why it was not
    checked."""
    try:
        disks = meta_disks(resource, config_file=config_file, run=run)
    except drbd_config.DrbdConfigError as e:
        return [Finding("info", "max-peers", f"not checked: {e}")]
    return [_finding(resource, d, read) for d in disks]
