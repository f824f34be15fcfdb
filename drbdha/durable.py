"""Replacing a small file so that a power cut leaves the old contents or the new, never a
mixture or nothing: a temporary file beside it, fsync, rename over it, fsync of the
directory (which makes the rename itself durable). Used for what the next start, or the next
master, must find: the latches, the NFS clients' connections."""

from __future__ import annotations

import os
from pathlib import Path


def replace(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Raises OSError if any part fails (a full disk, an I/O error): the caller decides what
    an unsaved file means."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
