"""DRBD r0 on the lab's nodes (cluster.Lab)."""

from __future__ import annotations

import time

from qga import AgentError
from topology import DISK_DEV, DRBD_PORT, NODES, RESOURCE, VMS, LabError

RESYNCING = ("SyncSource", "SyncTarget", "PausedSyncS", "PausedSyncT")
# DRBD 8.4's dynamic resync controller off (c-plan-ahead 0) and a fixed rate far above what
# these VMs can move: a resync as fast as they can go.
HURRY = "drbdsetup disk-options 0 --c-plan-ahead=0 --resync-rate=500M"


class DrbdSetup:
    """DRBD r0 on the two nodes: its configuration, brought up and Connected
    UpToDate/UpToDate, reset from scratch, and its state. A part of cluster.Lab."""

    def drbd_config(self, net: str = "", disk: str = "", handlers: str = "") -> str:
        """r0 between the nodes; `net`, `disk` and `handlers` add options to those sections
        (e.g. the peer-loss timers "ping-int 1; ping-timeout 5;"; 8.4 keeps `fencing` in
        disk), empty for DRBD's defaults."""
        ons = "\n".join(
            f"    on {n} {{\n        address {VMS[n].addrs['repl']}:{DRBD_PORT};\n    }}"
            for n in NODES
        )
        sections = "".join(
            f"    {name} {{ {body} }}\n"
            for name, body in (("net", net), ("disk", disk), ("handlers", handlers))
            if body
        )
        return (
            f"# Written by the drbdha lab (`lab up`).\nresource {RESOURCE} {{\n"
            f"    device /dev/drbd0;\n    disk {DISK_DEV};\n    meta-disk internal;\n"
            f"{sections}{ons}\n}}\n"
        )

    def drbd_state(self, vm: str) -> dict:
        """{'role': 'Secondary/Secondary', 'cstate': 'Connected', 'dstate': 'UpToDate/UpToDate'}"""
        r = self.exec(
            vm,
            f"drbdadm role {RESOURCE}; drbdadm cstate {RESOURCE}; drbdadm dstate {RESOURCE}",
            check=False,
            timeout=20,
        )
        lines = r.stdout.split()
        if r.returncode != 0 or len(lines) != 3:
            return {
                "role": None,
                "cstate": None,
                "dstate": None,
                "error": (r.stderr or r.stdout).strip(),
            }
        return dict(zip(("role", "cstate", "dstate"), lines, strict=False))

    def _proc_drbd(self, vm: str) -> dict:
        """drbd_state() from /proc/drbd, read through the guest agent (no process in the VM:
        `drbdadm` parses the configuration in a one-CPU emulated guest, a second or so for
        three of them); None values while r0 is down or the module not loaded."""
        try:
            text = self.agent(vm).read_file("/proc/drbd", 20).decode(errors="replace")
        except (AgentError, OSError) as e:
            return {"role": None, "cstate": None, "dstate": None, "error": str(e)}
        for line in text.splitlines():
            fields = line.split()
            if fields[:1] == ["0:"]:
                got = {f[:2]: f[3:] for f in fields[1:] if f[2:3] == ":"}
                if all(k in got for k in ("cs", "ro", "ds")):
                    return {"role": got["ro"], "cstate": got["cs"], "dstate": got["ds"]}
        return {"role": None, "cstate": None, "dstate": None, "error": text.strip()[-200:]}

    def drbd_up(
        self, timeout: float = 180.0, net: str = "", disk: str = "", handlers: str = ""
    ) -> None:
        """Configure r0 on both nodes if needed, and wait for Connected + UpToDate/UpToDate.

        On fresh metadata the initial sync is skipped (new-current-uuid --clear-bitmap).
        `net`, `disk`, `handlers`: options for r0's sections (drbd_config), applied with
        `drbdadm adjust` (which also removes options no longer written).
        """
        conf = self.drbd_config(net, disk, handlers)
        script = f"""
set -e
modprobe drbd
cat > /etc/drbd.d/{RESOURCE}.res
# Configured at all (attached or not: a harness error can leave the minor Diskless, where
# `drbdadm up` fails): adjust attaches and connects what is missing; a disk stuck in an
# attach (Negotiating: adjust fails in drbdmeta) is taken down and up again.
if drbdsetup show {RESOURCE} 2>/dev/null | grep -q "^resource"; then
    drbdadm adjust {RESOURCE} || {{ drbdadm down {RESOURCE}; drbdadm up {RESOURCE}; }}
else
    if ! drbdadm dump-md {RESOURCE} >/dev/null 2>&1; then
        yes yes | drbdadm -- --force create-md {RESOURCE} >/dev/null 2>&1
        echo fresh
    fi
    drbdadm up {RESOURCE}
fi
"""
        results = self.parallel(lambda n: self.exec(n, script, input=conf, timeout=120), NODES)
        fresh = all("fresh" in r.stdout for r in results)
        deadline = time.monotonic() + timeout
        cleared = False
        hurried = False
        while True:
            states = self.parallel(self._proc_drbd, NODES)
            if all(
                s["cstate"] == "Connected" and s["dstate"] == "UpToDate/UpToDate" for s in states
            ):
                break
            if not hurried and any(s["cstate"] in RESYNCING for s in states):
                # A crashed Primary's activity log covers the whole (small) disk: DRBD's
                # default resync controller copies it at ~6 MB/s in these emulated VMs. At an
                # unthrottled rate for this resync only; r0's configured options again below.
                self.parallel(lambda n: self.exec(n, HURRY, check=False, timeout=30), NODES)
                hurried = True
                continue
            if (
                fresh
                and not cleared
                and all(s["cstate"] == "Connected" for s in states)
                and all(s["dstate"] == "Inconsistent/Inconsistent" for s in states)
            ):
                self.exec(NODES[0], f"drbdadm new-current-uuid --clear-bitmap {RESOURCE}/0")
                cleared = True
                self.log("drbd: fresh metadata, initial sync skipped")
                continue
            if time.monotonic() > deadline:
                raise LabError(
                    f"DRBD {RESOURCE} not Connected UpToDate/UpToDate in {timeout:.0f} s: "
                    f"{dict(zip(NODES, states, strict=False))} (try `lab drbd-reset`)"
                )
            time.sleep(0.5)
        if hurried:  # back to what r0.res says (adjust sets the changed options again)
            self.parallel(lambda n: self.exec(n, f"drbdadm adjust {RESOURCE}", timeout=60), NODES)
            self.log(f"drbd: {RESOURCE} resynced at an unthrottled rate, options adjusted back")
        self.log(
            f"drbd: {RESOURCE} Connected, UpToDate/UpToDate, roles "
            + ", ".join(
                f"{n}={s['role'].split('/')[0]}" for n, s in zip(NODES, states, strict=False)
            )
        )

    def drbd_reset(self) -> None:
        """Start DRBD from scratch: down, wipe the backing disks, new metadata, skip the sync."""
        script = f"""
set -e
drbdadm down {RESOURCE} 2>/dev/null || true
dd if=/dev/zero of={DISK_DEV} bs=1M count=8 oflag=direct status=none
mib=$(( $(blockdev --getsize64 {DISK_DEV}) / 1048576 ))
dd if=/dev/zero of={DISK_DEV} bs=1M seek=$((mib - 8)) count=8 oflag=direct status=none
"""
        self.parallel(lambda n: self.exec(n, script, timeout=60), NODES)
        self.drbd_up()
