"""The channel's shared secret: a root-only file, the same on both nodes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from drbdha.errors import DrbdhaError

MIN_LENGTH = 32  # bytes of secret text; `head -c 32 /dev/urandom | base64` gives 44


class SecretError(DrbdhaError):
    """The secret file is missing, readable by others, or too short."""


def read_secret(path: Path) -> bytes:
    """The key, refusing a file anyone but root (or us) could read or replace: whoever holds
    it can outdate this node's copy."""
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
        key = os.read(fd, 4096).strip()
    except OSError as e:
        raise SecretError(f"{path}: {e.strerror or e}") from None
    finally:
        os.close(fd)
    if len(key) < MIN_LENGTH:
        raise SecretError(
            f"{path}: {len(key)} bytes, at least {MIN_LENGTH} needed "
            "(head -c 32 /dev/urandom | base64)"
        )
    return key
