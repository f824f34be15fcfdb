"""drbdha with a DRBD chain on the lab's two nodes, as the storage tests and the storage
benchmark drive it: the config they write, and views of each node through `drbdha status`,
`drbdadm` and `ip addr` (Storage), plus a Sampler that checks at most one Primary."""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import drbdha_toml
from cluster import BOOTED, NODES, REPO, RESOURCE, VIP, VMS, Lab, LabError, vrrp_instance
from polling import wait_until
from qga import AgentError

VRID = 62
PRIORITY = {"node1": 150, "node2": 100}
OTHER = {"node1": "node2", "node2": "node1"}
CONFIG = "/etc/drbdha/drbdha.toml"
TUNED = "ping-int 1; ping-timeout 5; timeout 9;"  # as the README recommends
# DRBD fencing through drbdha as the README recommends (8.4 keeps `fencing` in disk {}).
FENCING = {
    "disk": "fencing resource-and-stonith;",
    "handlers": 'fence-peer "/usr/bin/drbdha fence-peer";',
}
SECRET_FILE = "/etc/drbdha/peer.key"  # noqa: S105 (a path)
# The README's command (Fencing), word for word.
MAKE_SECRET = "umask 077; head -c 32 /dev/urandom | base64 > /etc/drbdha/peer.key"  # noqa: S105


MOUNTPOINT = "/srv/nfs"
FAIL_FLAG = "/run/drbdha-lab-fail"
EXPORT = "/srv/nfs/data"
# The keys of [storage.data] for the whole chain (filesystem, nfsd with its state on DRBD,
# the export), as config(nfs=True) writes them.
NFS_SECTION: dict[str, Any] = {
    "mountpoint": MOUNTPOINT,
    "fstype": "ext4",
    "nfs_state_dir": f"{MOUNTPOINT}/.nfs-state",
    "nfsv4_lease_time": 10,
    "nfsv4_grace_time": 10,
    "takeover_damping": 60,
    "checks": [
        # The lab's own check: fails while FAIL_FLAG exists (test_nfs_vms.py moves the
        # service so).
        {
            "name": "flag",
            "command": ["/bin/sh", "-c", f"! test -e {FAIL_FLAG}"],
            "interval": 1,
            "fall": 2,
            "rise": 2,
        }
    ],
    "exports": [
        {
            "path": EXPORT,
            "clients": ["10.77.1.0/24"],
            "fsid": 1,
            "options": "rw,sync,no_subtree_check,no_root_squash",
        }
    ],
}


def config(
    node: str,
    *,
    preempt: bool = False,
    demote_timeout: float = 10.0,
    peer: bool = True,
    nfs: bool = False,
    advert: float = 0.1,
    nfs_section: dict[str, Any] = NFS_SECTION,
) -> str:
    """drbdha.toml for `node`; `peer`: with the [peer] section fence-peer needs; `nfs`: the
    full chain (filesystem, nfsd with its state on DRBD, the export), `nfs_section` its keys."""
    return drbdha_toml.render(
        comment="Written by integration/lab/chainlab.py",
        daemon={"control_socket": "/run/drbdha/control.sock", "metrics_listen": "127.0.0.1:9943"},
        instances=[
            vrrp_instance("lab", VRID, PRIORITY[node], advert, preempt=preempt, storage="data")
        ],
        storage={
            "data": {
                "drbd_resource": RESOURCE,
                "promote_backoff": 5.0,
                "demote_timeout": demote_timeout,
                **(nfs_section if nfs else {}),
            }
        },
        peer={"address": VMS[OTHER[node]].addrs["svc"], "secret_file": SECRET_FILE}
        if peer
        else None,
    )


def roles(lab: Lab, node: str, timeout: float = 20) -> str | None:
    """DRBD's roles of r0 on `node`, "Primary/Secondary" (local/peer), None when r0 is down;
    /proc/drbd (DRBD 8.4) read through the guest agent's file calls, no process in the VM
    (`drbdadm role` would parse the DRBD configuration in a one-CPU emulated guest, and the
    Sampler asks twice a second). DRBD 9's /proc/drbd has no devices: `drbdsetup status`
    there (drbd_setup._status_9)."""
    if lab.drbd != "8.4":
        return lab._status_9(node)["role"]
    try:
        text = lab.agent(node).read_file("/proc/drbd", timeout).decode(errors="replace")
    except AgentError as e:
        raise LabError(f"{node}: {e}") from None
    for line in text.splitlines():
        fields = line.split()
        if fields[:1] == ["0:"]:
            return next((f[3:] for f in fields if f.startswith("ro:")), None)
    return None


class Sampler(threading.Thread):
    """DRBD roles of both nodes about twice a second; records every confirmed moment with two
    Primaries.

    The two nodes are read in parallel, but each read happens at its own instant inside its
    VM, so a hand-over between the two reads (one node demoted, then the other promoted) shows
    as two Primaries that never coexisted. Such a sample is confirmed by reading the nodes one
    after the other (node1, node2, node1): node1 Primary before and after node2 was read
    Primary means both were Primary at once. DRBD's own view counts at once: a node reading
    `Primary/Primary` (its peer Primary too)."""

    def __init__(self, lab: Lab) -> None:
        super().__init__(daemon=True)
        self.lab = lab
        self.samples = 0
        self.unconfirmed = 0  # two Primaries in a parallel sample, not confirmed
        self.both_primary: list[float] = []
        self._halt = threading.Event()

    def role(self, node: str) -> str | None:
        """ "Primary/Secondary" (local/peer), None when not readable."""
        if not self.lab.running(node):
            return None
        try:
            return roles(self.lab, node, timeout=10)
        except (LabError, TimeoutError, subprocess.TimeoutExpired, OSError):
            return None  # a node that does not answer (powered off, booting) is not Primary

    @staticmethod
    def primary(role: str | None) -> bool:
        return role is not None and role.split("/")[0] == "Primary"

    def _confirmed(self) -> bool:
        return (
            self.primary(self.role(NODES[0]))
            and self.primary(self.role(NODES[1]))
            and self.primary(self.role(NODES[0]))
        )

    def run(self) -> None:
        while not self._halt.is_set():
            roles = self.lab.parallel(self.role, NODES)
            self.samples += 1
            if any(r == "Primary/Primary" for r in roles):
                self.both_primary.append(time.monotonic())
            elif sum(map(self.primary, roles)) > 1:
                if self._confirmed():
                    self.both_primary.append(time.monotonic())
                else:
                    self.unconfirmed += 1
            self._halt.wait(0.5)

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(30)


class Storage:
    def __init__(self, lab: Lab, drbd: dict[str, str] | None = None) -> None:
        self.lab = lab
        self.drbd = drbd or {}  # r0's sections (drbd_up's), for a node powered on again

    def configure(self, **kw: Any) -> None:
        """drbdha.toml on both nodes, and the peer channel's secret made with the README's
        command on node1 and copied to node2 (the README's scp, through the guest agent)."""
        assert f"({MAKE_SECRET})" in (REPO / "README.md").read_text(), "README changed"
        key = self.lab.exec("node1", f"({MAKE_SECRET}); cat {SECRET_FILE}").stdout
        mode = self.lab.exec("node1", f"stat -c %a {SECRET_FILE}").stdout.strip()
        assert mode == "600", f"the README's command made {SECRET_FILE} mode {mode}"
        self.lab.put("node2", SECRET_FILE, key, 0o600)
        self.lab.parallel(lambda n: self.lab.put(n, CONFIG, config(n, **kw), 0o600), NODES)
        self._configured = (key, kw)

    def configure_again(self, node: str) -> None:
        """What configure() wrote, on `node` again (a node resumed from its checkpoint has
        the files the checkpoint had)."""
        key, kw = self._configured
        self.lab.put(node, SECRET_FILE, key, 0o600)
        self.lab.put(node, CONFIG, config(node, **kw), 0o600)

    def power_on(self, node: str, **drbd: str) -> None:
        """`node`, powered off by a test, on again as a reboot leaves it: its configuration
        (r0 with `drbd`'s sections, by default those the cluster was made with; drbdha.toml,
        the peer key), DRBD up, drbdha started,
        nfs-server disabled as the README says. (It resumes from the checkpoint `up` made,
        whose files are older.)"""
        self.lab.start(node, checkpoint=BOOTED)
        self.lab.put(
            node, f"/etc/drbd.d/{RESOURCE}.res", self.lab.drbd_config(**(drbd or self.drbd))
        )
        self.configure_again(node)
        self.lab.exec(
            node,
            "if systemctl -q is-enabled nfs-server; then systemctl disable --now nfs-server; fi; "
            f"modprobe drbd && drbdadm up {RESOURCE} && systemctl reset-failed drbdha; "
            "systemctl start drbdha",
            timeout=180,
        )

    def start(self, *nodes: str) -> None:
        for node in nodes or NODES:  # in order: the first started is the first master
            self.lab.exec(
                node, "systemctl reset-failed drbdha; systemctl restart drbdha", timeout=90
            )

    def stop(self) -> None:
        running = [n for n in NODES if self.lab.running(n)]
        self.lab.parallel(
            lambda n: self.lab.exec(
                n, "systemctl stop drbdha; systemctl reset-failed drbdha", check=False, timeout=120
            ),
            running,
        )

    def doc(self, node: str) -> dict[str, Any] | None:
        # A Python start-up in a one-CPU emulated VM that is serving NFS: give it time.
        r = self.lab.exec(node, "drbdha status --json", check=False, timeout=90)
        try:
            return json.loads(r.stdout)["instances"][0]
        except (ValueError, KeyError, IndexError):
            return None

    def state(self, node: str) -> str | None:
        doc = self.doc(node) if self.lab.running(node) else None
        return doc["state"] if doc else None

    def role(self, node: str) -> str | None:
        both = roles(self.lab, node)
        return both.split("/")[0] if both else None

    def holds_vip(self, node: str) -> bool:
        out = self.lab.exec(node, "ip -4 -o addr show dev eth0").stdout
        return f" {VIP}/" in out

    def serving(self, node: str) -> bool:
        """MASTER, Primary, the VIP here, and the chain up. The cheap looks first: every
        command is a process in a one-CPU emulated VM, where a takeover competes with it
        (`drbdha status` is a Python start-up)."""
        if not (self.holds_vip(node) and self.role(node) == "Primary"):
            return False
        doc = self.doc(node)
        return bool(doc and doc["state"] == "master" and doc["vips_held"])

    def wait_serving(self, node: str, timeout: float = 60.0) -> None:
        wait_until(
            f"{node} serving (master, Primary, VIP)", lambda: self.serving(node), timeout, every=1.0
        )
        other = OTHER[node]
        if self.lab.running(other):
            assert self.role(other) != "Primary"
            assert not self.holds_vip(other)

    def journal(self, node: str, since: str = "") -> list[dict[str, Any]]:
        r = self.lab.exec(node, f"journalctl -u drbdha -o json {since} -q", check=False, timeout=30)
        out = []
        for line in r.stdout.splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def events(self, node: str, name: str) -> list[dict[str, Any]]:
        return [e for e in self.journal(node) if e.get("MESSAGE", "").startswith(name)]


@contextlib.contextmanager
def fresh_cluster(lab: Lab, sample: bool = True, **drbd: str) -> Iterator[Storage]:
    """Both nodes running, links healed, drbdha stopped, DRBD r0 Connected UpToDate with the
    given sections (drbd_up's net/disk/handlers), both Secondary, no drbdha state; a Sampler
    for the whole block (unless `sample` is False: the caller samples itself). Afterwards:
    drbdha stopped, no VIP left behind, never two Primaries, the config and state removed,
    and a node the block powered off on again (from the checkpoint `up` made: DRBD down
    there until the next drbd_up)."""
    s = Storage(lab, drbd)
    s.stop()
    for node in NODES:
        if not lab.running(node):  # powered off by an earlier test: as it was after `up`
            lab.start(node, checkpoint=BOOTED)
    if all(lab.running(vm) for vm in VMS):
        lab.heal()
    else:  # the client too (no test powers it off): `up` boots it (and heals)
        lab.up(install=False, drbd=False)
    for node in NODES:  # a lab that was up before this session has none yet
        if not lab.has_checkpoint(node, BOOTED):
            writers = "/root/[w]riter-[0-9]*.py"
            lab.exec(node, f"pkill -f '{writers}'; drbdadm down {RESOURCE}", check=False)
            lab.checkpoint(node, BOOTED)
    try:
        lab.drbd_up(**drbd)
    except LabError as e:
        # What a failed test (or a fault campaign) left: a split brain, a detached disk.
        # Every user of this block starts from new data anyway.
        lab.log(f"drbd: {e}; starting r0 from scratch")
        lab.drbd_reset()
        lab.drbd_up(**drbd)
    lab.parallel(
        lambda n: lab.exec(
            n,
            # A writer a failed test left behind would hold the device open. ([w]: the
            # pattern must not match this shell's own command line.)
            f"pkill -f '/root/[w]riter-[0-9]*.py'; sleep 0.5; drbdadm secondary {RESOURCE}; "
            "rm -rf /var/lib/drbdha",
            check=False,
        ),
        NODES,
    )
    sampler = Sampler(lab)
    if sample:
        sampler.start()
    try:
        yield s
        sampler.stop()
        s.stop()
        assert not sampler.both_primary, f"two Primaries at {sampler.both_primary}"
        assert sampler.samples > 0 or not sample
        for node in [n for n in NODES if lab.running(n)]:
            assert not s.holds_vip(node), f"{node} kept the VIP after systemctl stop"
    finally:
        sampler.stop()
        lab.parallel(
            lambda n: lab.exec(
                n,
                f"rm -f {CONFIG} {SECRET_FILE}; rm -rf /var/lib/drbdha; "
                f"ip -4 addr del {VIP}/24 dev eth0 2>/dev/null; true",
                check=False,
            ),
            [n for n in NODES if lab.running(n)],
        )
        for node in NODES:  # a node the test powered off: on again, as after `up` (DRBD down)
            if not lab.running(node):
                lab.start(node, checkpoint=BOOTED)
