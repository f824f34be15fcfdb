"""DRBD r0 on the lab's nodes (cluster.Lab)."""

from __future__ import annotations

import json
import re
import time

from qga import AgentError
from topology import DISK_DEV, DRBD_PORT, NODES, RESOURCE, VMS, LabError

RESYNCING = ("SyncSource", "SyncTarget", "PausedSyncS", "PausedSyncT")
# DRBD 8.4's dynamic resync controller off (c-plan-ahead 0) and a fixed rate far above what
# these VMs can move: a resync as fast as they can go.
HURRY = "drbdsetup disk-options 0 --c-plan-ahead=0 --resync-rate=500M"
# DRBD 9 keeps the resync controller per peer device.
HURRY_9 = f"drbdadm -- --c-plan-ahead=0 --resync-rate=500M peer-device-options {RESOURCE}"

# DRBD 9: the client VM is r0's third node, diskless, a tiebreaker for quorum (issue 23). It
# reaches the nodes over the service network, the clients' own: a node that loses quorum has
# lost the tiebreaker and its peer, so no NFS client on that network reaches it either.
TIEBREAKER = "client"
# quorum majority: two of the three. on-no-quorum io-error (LINBIT's choice for services
# started on promotion, drbd-reactor's promoter.md): a Primary cut off fails its writes at
# once, so that nothing it is asked to write is acknowledged, and drbdha's release (nfsd,
# umount, demote) runs to its end instead of hanging on suspended I/O. on-no-data-accessible
# matches it, as drbd-reactor asks (drbdha check-config says so too).
QUORUM = "quorum majority; on-no-quorum io-error; on-no-data-accessible io-error;"
# DRBD 9 metadata with room for two peers' bitmaps, not the one diskful peer r0 has. With
# max-peers 1, DRBD 9.3.3 turns local activity-log updates off on a Secondary beside its
# Primary ("Disabling local AL-updates (optimization)"); promoted, it wrote no AL
# transaction for extents already active, its bitmap for the lost peer was gone after a
# power-off, and the resync skipped its writes: docs/reliability.md, finding 11.
CREATE_MD = {
    "8.4": f"drbdadm -- --force create-md {RESOURCE}",
    "9": f"drbdadm create-md --max-peers=2 --force {RESOURCE}",
}
# 8.4's names for DRBD 9's connection states (the tests read cstate as on 8.4).
CSTATE_84 = {"Connecting": "WFConnection"}


def _sections(net: str, disk: str, handlers: str) -> str:
    """r0's net, disk and handlers sections, those with options."""
    return "".join(
        f"    {name} {{ {body} }}\n"
        for name, body in (("net", net), ("disk", disk), ("handlers", handlers))
        if body
    )


class DrbdSetup:
    """DRBD r0 on the two nodes: its configuration, brought up and Connected
    UpToDate/UpToDate, reset from scratch, and its state. A part of cluster.Lab."""

    drbd: str  # cluster.Lab's: "8.4" or "9"

    def drbd_vms(self) -> tuple[str, ...]:
        """The VMs r0 runs on: the nodes, and on DRBD 9 the tiebreaker too."""
        return NODES if self.drbd == "8.4" else (*NODES, TIEBREAKER)

    def drbd_config(self, net: str = "", disk: str = "", handlers: str = "") -> str:
        """r0 between the nodes; `net`, `disk` and `handlers` add options to those sections
        (e.g. the peer-loss timers "ping-int 1; ping-timeout 5;"; 8.4 keeps `fencing` in
        disk, 9 in net), empty for DRBD's defaults. On DRBD 9, r0 has three nodes and quorum
        (drbd_config_9)."""
        if self.drbd != "8.4":
            return self.drbd_config_9(net, disk, handlers)
        ons = "\n".join(
            f"    on {n} {{\n        address {VMS[n].addrs['repl']}:{DRBD_PORT};\n    }}"
            for n in NODES
        )
        sections = _sections(net, disk, handlers)
        return (
            f"# Written by the drbdha lab (`lab up`).\nresource {RESOURCE} {{\n"
            f"    device /dev/drbd0;\n    disk {DISK_DEV};\n    meta-disk internal;\n"
            f"{sections}{ons}\n}}\n"
        )

    def drbd_config_9(self, net: str, disk: str, handlers: str) -> str:
        """r0 on three DRBD 9 nodes: node1 and node2 with disks, replicating over the
        replication network, and the diskless tiebreaker, connected to each over the
        service network; quorum majority (QUORUM)."""
        hosts = "".join(
            f"    on {vm} {{\n        node-id {i};\n"
            f"        disk {DISK_DEV if VMS[vm].disk else 'none'};\n"
            f"        address {self._drbd_addr(vm, 'repl' if VMS[vm].disk else 'svc')};\n    }}\n"
            for i, vm in enumerate(self.drbd_vms())
        )
        # DRBD 9 takes `fencing` in net (chainlab.FENCING writes it in disk, as on 8.4), and
        # here only on the connection between the disks: the tiebreaker, diskless, cannot be
        # outdated, so with fencing on its connections a Primary refuses to let it go down
        # ("Refusing to be Primary while peer is not outdated").
        fencing = " ".join(re.findall(r"fencing [\w-]+;", disk))
        disk = re.sub(r"\s*fencing [\w-]+;", "", disk).strip()
        pairs = [("repl", *NODES)] + [("svc", n, TIEBREAKER) for n in NODES]
        connections = "".join(
            f"    connection {{\n        host {a} address {self._drbd_addr(a, net_)};\n"
            f"        host {b} address {self._drbd_addr(b, net_)};\n"
            + (f"        net {{ {fencing} }}\n" if fencing and net_ == "repl" else "")
            + "    }\n"
            for net_, a, b in pairs
        )
        sections = _sections(net, disk, handlers)
        return (
            f"# Written by the drbdha lab (`lab up`, DRBD 9).\nresource {RESOURCE} {{\n"
            f"    device /dev/drbd0;\n    meta-disk internal;\n    options {{ {QUORUM} }}\n"
            f"{sections}{hosts}{connections}}}\n"
        )

    @staticmethod
    def _drbd_addr(vm: str, net: str) -> str:
        return f"{VMS[vm].addrs[net]}:{DRBD_PORT}"

    def drbd_state(self, vm: str) -> dict:
        """{'role': 'Secondary/Secondary', 'cstate': 'Connected', 'dstate': 'UpToDate/UpToDate'}"""
        if self.drbd != "8.4":
            return self._proc_drbd(vm)
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
        three of them); None values while r0 is down or the module not loaded. On DRBD 9,
        from `drbdsetup status --json` (_status_9)."""
        if self.drbd != "8.4":
            return self._status_9(vm)
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

    def _status_9(self, vm: str) -> dict:
        """_proc_drbd's answer on DRBD 9, in 8.4's terms, between `vm` and the other node
        with a disk (for the tiebreaker: node1); with "quorum" and "peers" (each peer's
        connection state) besides. drbdsetup, not drbdadm: no configuration to parse."""
        down = {"role": None, "cstate": None, "dstate": None}
        r = self.exec(vm, f"drbdsetup status {RESOURCE} --json", check=False, timeout=20)
        try:
            (res,) = json.loads(r.stdout) if r.returncode == 0 else [None]
            (dev,) = res["devices"]
        except (ValueError, TypeError, KeyError):
            return {**down, "error": (r.stderr or r.stdout).strip()[-200:]}
        other = next(n for n in NODES if n != vm)
        conns = {c["name"]: c for c in res.get("connections", [])}
        conn = conns.get(other, {})
        (pdev,) = conn.get("peer_devices") or [{}]
        cstate = conn.get("connection-state", "StandAlone")
        if cstate == "Connected" and pdev.get("replication-state", "Off") != "Established":
            cstate = pdev.get("replication-state", "Off")  # SyncSource... as 8.4 shows them
        return {
            "role": f"{res['role']}/{conn.get('peer-role', 'Unknown')}",
            "cstate": CSTATE_84.get(cstate, cstate),
            "dstate": f"{dev['disk-state']}/{pdev.get('peer-disk-state', 'DUnknown')}",
            "quorum": dev.get("quorum"),
            "peers": {name: c.get("connection-state") for name, c in conns.items()},
        }

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
    if [ "$1" = disk ] && ! drbdadm dump-md {RESOURCE} >/dev/null 2>&1; then
        yes yes | {CREATE_MD[self.drbd]} >/dev/null 2>&1
        echo fresh
    fi
    drbdadm up {RESOURCE}
fi
"""
        vms = self.drbd_vms()
        results = self.parallel(
            lambda n: self.exec(
                n,
                f"set -- {'disk' if VMS[n].disk else 'diskless'}\n{script}",
                input=conf,
                timeout=120,
            ),
            vms,
        )
        fresh = all("fresh" in r.stdout for n, r in zip(vms, results, strict=True) if VMS[n].disk)
        hurry = HURRY if self.drbd == "8.4" else HURRY_9
        deadline = time.monotonic() + timeout
        cleared = reconnected = False
        hurried = False
        while True:
            states = self.parallel(self._proc_drbd, NODES)
            if (
                all(
                    s["cstate"] == "Connected" and s["dstate"] == "UpToDate/UpToDate"
                    for s in states
                )
                and self._tiebreaker_connected()
            ):
                break
            if not reconnected and self._reconnect_standalone():
                reconnected = True
                continue
            if not hurried and any(s["cstate"] in RESYNCING for s in states):
                # A crashed Primary's activity log covers the whole (small) disk: DRBD's
                # default resync controller copies it at ~6 MB/s in these emulated VMs. At an
                # unthrottled rate for this resync only; r0's configured options again below.
                self.parallel(lambda n: self.exec(n, hurry, check=False, timeout=30), NODES)
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

    def _tiebreaker_connected(self) -> bool:
        """On DRBD 9, the tiebreaker Connected to both nodes (on 8.4 there is none)."""
        if self.drbd == "8.4":
            return True
        peers = self._status_9(TIEBREAKER).get("peers") or {}
        return all(peers.get(n) == "Connected" for n in NODES)

    def _reconnect_standalone(self) -> bool:
        """On DRBD 9, connect again each connection left StandAlone (a tiebreaker that
        declined a node with an old copy stays so after the resync, which `drbdadm adjust`
        does not undo), at both ends, as the README tells an admin to. Whether it did."""
        if self.drbd == "8.4":
            return False
        standalone = [
            (vm, peer)
            for vm in self.drbd_vms()
            for peer, cstate in (self._status_9(vm).get("peers") or {}).items()
            if cstate == "StandAlone"
        ]
        if any(TIEBREAKER in pair for pair in standalone):
            # A tiebreaker that still exposes an older data generation declines the node
            # again ("Current UUID of peer does not match my exposed UUID"): it holds no
            # data, so DRBD is restarted there and takes the nodes' generation.
            self.exec(TIEBREAKER, f"drbdadm down {RESOURCE}; drbdadm up {RESOURCE}", timeout=60)
        for vm, peer in standalone:
            if vm != TIEBREAKER:
                self.exec(vm, f"drbdadm connect {RESOURCE}:{peer}", check=False, timeout=60)
        return bool(standalone)

    def drbd_reset(self) -> None:
        """Start DRBD from scratch: down, wipe the backing disks, new metadata, skip the sync."""
        if self.drbd != "8.4":
            self.exec(TIEBREAKER, f"drbdadm down {RESOURCE} 2>/dev/null || true", timeout=60)
        script = f"""
set -e
drbdadm down {RESOURCE} 2>/dev/null || true
dd if=/dev/zero of={DISK_DEV} bs=1M count=8 oflag=direct status=none
mib=$(( $(blockdev --getsize64 {DISK_DEV}) / 1048576 ))
dd if=/dev/zero of={DISK_DEV} bs=1M seek=$((mib - 8)) count=8 oflag=direct status=none
"""
        self.parallel(lambda n: self.exec(n, script, timeout=60), NODES)
        self.drbd_up()
