"""The channel's shared secret: a root-only file, the same on both nodes."""

from __future__ import annotations

from pathlib import Path

from drbdha.rootfile import SecretError, read_root_only

__all__ = ["MIN_LENGTH", "SecretError", "read_root_only", "read_secret"]

MIN_LENGTH = 32  # bytes of secret text; `head -c 32 /dev/urandom | base64` gives 44


def read_secret(path: Path) -> bytes:
    """The key, refusing a file anyone but root (or us) could read or replace: whoever holds
    it can outdate this node's copy."""
    key = read_root_only(path).strip()
    if len(key) < MIN_LENGTH:
        raise SecretError(
            f"{path}: {len(key)} bytes, at least {MIN_LENGTH} needed "
            "(head -c 32 /dev/urandom | base64)"
        )
    return key
