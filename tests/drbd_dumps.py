"""Real `drbdadm dump` output and the sources it came from, for the DRBD configuration
tests (test_drbd_config, test_drbd_findings, test_check_config).

tests/data/drbd/dump-*.txt are real output of `drbdadm -c FILE -d dump RES` (drbd-utils 9.22.0,
Debian bookworm, no DRBD kernel module; dump-8.4.txt from its /lib/drbd/drbdadm-84) for the
SOURCES below with @HOST@ = vm. To capture them again: write SOURCES[name] with @HOST@ replaced
by `uname -n` to a file and run that command with stdin from /dev/null. The tests marked
needs_drbdadm do just that on this host and check that drbdadm still prints what the fixture
holds; they skip where drbd-utils is not installed (integration/setup-host installs it).
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

from drbdha.resources.drbd_config import DrbdOptions, parse_dump

DATA = Path(__file__).parent / "data" / "drbd"
SBIN = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
DRBDADM = shutil.which("drbdadm", path=SBIN)
DRBDADM_84 = next(
    (p for p in ("/usr/lib/drbd/drbdadm-84", "/lib/drbd/drbdadm-84") if os.access(p, os.X_OK)),
    None,
)
needs_drbdadm = pytest.mark.skipif(
    DRBDADM is None, reason="drbdadm not installed (integration/setup-host installs drbd-utils)"
)
needs_drbdadm_84 = pytest.mark.skipif(
    DRBDADM_84 is None, reason="drbd-utils' drbdadm-84 not installed (drbd-utils has it)"
)
HOST = socket.gethostname()  # drbdadm matches `on NAME` against uname -n, the same name

SOURCES = {
    "9-two-nodes": """\
# DRBD 9, two nodes: common merged under the resource, one connection with its own timeout.
global { usage-count no; }
common {
  handlers { split-brain "/usr/lib/drbd/notify-split-brain.sh root"; }
  disk { on-io-error pass_on; }  # the resource says detach
  net { after-sb-0pri discard-zero-changes; ping-timeout 5; }
}
resource r0 {
  disk { on-io-error detach; }
  net { fencing resource-only; ping-int 1; protocol C; }
  handlers { fence-peer "/usr/local/sbin/fence-over-ssh --peer \\"nfs-b\\""; }
  on @HOST@ { node-id 0; device /dev/drbd0; disk /dev/vg0/nfs; meta-disk internal; address 127.0.0.1:7789; }
  on nfs-b { node-id 1; device /dev/drbd0; disk /dev/vg0/nfs; meta-disk internal; address 127.0.0.2:7789; }
  connection { host @HOST@; host nfs-b; net { timeout 9; } }
}
resource elsewhere {
  on nfs-c { node-id 0; device /dev/drbd9; disk /dev/vg0/x; meta-disk internal; address 127.0.0.3:7799; }
  on nfs-d { node-id 1; device /dev/drbd9; disk /dev/vg0/x; meta-disk internal; address 127.0.0.4:7799; }
}
""",  # noqa: E501  (a config file as an operator writes it)
    "9-three-nodes": """\
# DRBD 9, three nodes: quorum, two volumes (one with its own disk option), a mesh and a connection.
resource r2 {
  options { quorum majority; on-no-quorum io-error; on-no-data-accessible io-error; }
  net { protocol C; fencing dont-care; }
  volume 0 { device /dev/drbd10; disk /dev/vg0/a; meta-disk internal; }
  volume 1 { device /dev/drbd11; disk /dev/vg0/b; meta-disk internal; disk { disk-timeout 100; } }
  on @HOST@ { node-id 0; address 127.0.0.1:7790; }
  on nfs-b { node-id 1; address 127.0.0.2:7790; }
  on tiebreaker { node-id 2; address 127.0.0.3:7790; }
  connection-mesh { hosts @HOST@ nfs-b tiebreaker; net { ping-int 2; } }
  connection { host @HOST@; host nfs-b; net { protocol B; ping-int 1; } }
}
""",
    "8.4": """\
# DRBD 8.4 syntax: fencing in disk, a bare allow-two-primaries flag, protocol from common.
common {
  net { protocol A; }
  handlers { fence-peer "/usr/lib/drbd/crm-fence-peer.sh"; }
}
resource r0 {
  net { allow-two-primaries; after-sb-1pri discard-secondary; ping-int 2; ping-timeout 10; }
  disk { fencing resource-and-stonith; on-io-error call-local-io-error; }
  handlers { local-io-error "/usr/lib/drbd/notify-io-error.sh; halt -f"; }
  options { on-no-data-accessible suspend-io; }
  on @HOST@ { device /dev/drbd0; disk /dev/vg0/nfs; address 127.0.0.1:7789; meta-disk internal; }
  on nfs-b { device /dev/drbd0; disk /dev/vg0/nfs; address 127.0.0.2:7789; meta-disk internal; }
}
""",
}
RESOURCE = {"9-two-nodes": "r0", "9-three-nodes": "r2", "8.4": "r0"}


def fixture(name: str) -> DrbdOptions:
    return parse_dump((DATA / f"dump-{name}.txt").read_text(), RESOURCE[name])


def write_conf(tmp_path: Path, source: str) -> Path:
    path = tmp_path / "drbd.conf"
    path.write_text(source.replace("@HOST@", HOST))
    return path
