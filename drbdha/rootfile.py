"""A root-only file's bytes: the peer channel's secret, the auth_hmac keys. Whoever can read
such a file can move this node's storage, so any other owner or mode is refused."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from drbdha.errors import DrbdhaError


class SecretError(DrbdhaError):
    """The secret file is missing, readable by others, or too short."""


def read_root_only(path: Path) -> bytes:
    """A key file's bytes (at most 4 KiB), refusing one that is not a regular file owned by
    root (or us) with no access for group or others (SecretError, with the reason)."""
    try:
        # O_NONBLOCK: a FIFO must not block us before the checks below refuse it.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise SecretError(f"{path}: not found") from None
    except OSError as e:
        raise SecretError(f"{path}: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SecretError(f"{path}: not a regular file")
        if st.st_uid not in (0, os.geteuid()):
            raise SecretError(f"{path}: owned by uid {st.st_uid}, must be root's")
        if st.st_mode & 0o077:
            raise SecretError(
                f"{path}: mode {stat.S_IMODE(st.st_mode):04o} lets others read it; chmod 600"
            )
        return os.read(fd, 4096)
    except OSError as e:
        raise SecretError(f"{path}: {e.strerror or e}") from None
    finally:
        os.close(fd)
