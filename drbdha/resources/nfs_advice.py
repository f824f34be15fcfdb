"""check-config's findings about a chain's filesystem and NFS server: what would make the
first takeover fail, or make a node serve what it must not."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable

from drbdha.config import StorageConfig
from drbdha.resources.drbd_advice import Finding
from drbdha.resources.nfs import UNIT

NFS_TOOLS = ("rpc.nfsd", "exportfs", "sm-notify")


def unit_enabled(unit: str) -> bool:
    r = subprocess.run(
        ["systemctl", "is-enabled", "--quiet", unit], check=False, capture_output=True, timeout=10
    )
    return r.returncode == 0


def findings(
    storage: StorageConfig,
    *,
    enabled: Callable[[str], bool] = unit_enabled,
    which: Callable[[str], str | None] = shutil.which,
) -> list[Finding]:
    out = []
    key = f"storage.{storage.name}"
    if storage.mountpoint is not None:
        missing = [t for t in ("findmnt", "fuser", "mount") if which(t) is None]
        if missing:
            out.append(
                Finding("error", key, f"not installed: {', '.join(missing)}", "apt install psmisc")
            )
    if storage.nfs_state_dir is None:
        return out
    missing = [t for t in NFS_TOOLS if which(t) is None]
    if missing:
        out.append(
            Finding(
                "error",
                key,
                f"not installed: {', '.join(missing)}",
                "apt install nfs-kernel-server",
            )
        )
    elif enabled(UNIT):
        out.append(
            Finding(
                "error",
                f"{key}.nfs_state_dir",
                f"{UNIT} is enabled: at boot it would start nfsd with the local /var/lib/nfs, "
                "and the takeover refuses to bind the state directory under a running nfsd",
                f"systemctl disable --now {UNIT} (drbdha starts it on the master)",
            )
        )
    return out
