"""The full NFS cluster on the lab, as the NFS tests and the demo drive it: DRBD with the
README's timers and fencing, ext4 made on it once, drbdha's config with the whole chain
(filesystem, nfsd with its state on DRBD, the export) on both nodes, nfs-server disabled as
the README says; the client mounting the VIP and appending records (records.py) over NFS;
and what the nodes' journals say about a takeover, on the host's clock."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import records
from chainlab import EXPORT, FENCING, TUNED, Storage, fresh_cluster
from cluster import NETNS, NODES, RESOURCE, VIP, VMS, Lab

CLIENT_MOUNT = "/mnt/nfs"
RECORDS = "records"
MOUNT_OPTIONS = {"3": "vers=3,proto=tcp,hard", "4.2": "vers=4.2,hard"}


@contextlib.contextmanager
def nfs_cluster(
    lab: Lab, net: str = TUNED, advert: float = 0.1, fenced: bool = True, sample: bool = True
) -> Iterator[Storage]:
    """fresh_cluster with fencing and the README's timers (`net`: DRBD's net options, ""
    for its defaults; `advert`: drbdha's advert interval; `fenced` False: no fence-peer
    handler and no [peer], DRBD's fencing off; `sample`: fresh_cluster's), a new ext4 on r0
    with the export's directory, and drbdha's NFS config on both nodes (not started).
    Afterwards the client's mounts are gone."""
    with fresh_cluster(lab, sample, net=net, **(FENCING if fenced else {})) as s:
        # As the README says: drbdha starts nfsd on the master, nothing else may.
        # (disable costs a daemon-reload: only if the image had it enabled)
        lab.parallel(
            lambda n: lab.exec(
                n,
                "if systemctl -q is-enabled nfs-server; then systemctl disable --now nfs-server; "
                "else systemctl stop nfs-server; fi; rm -rf /srv/nfs",
            ),
            NODES,
        )
        lab.exec(
            "node1",
            f"drbdadm primary {RESOURCE} && mkfs.ext4 -q -F /dev/drbd0 && mkdir -p /mnt/new && "
            f"mount /dev/drbd0 /mnt/new && mkdir /mnt/new/data && umount /mnt/new && "
            f"drbdadm secondary {RESOURCE}",
            timeout=120,
        )
        s.configure(nfs=True, advert=advert, peer=fenced)
        try:
            yield s
        finally:
            # A mount of a server that is gone can hold the client's umount past a minute
            # (CI saw it once after a freeze test): umount(8) resolves the path first, which
            # asks the server; -c (--no-canonicalize) skips that. The next test needs the
            # mount point free.
            umount = f"umount -c -f -l {CLIENT_MOUNT}*; true"
            try:
                lab.exec("client", umount, check=False, timeout=60)
            except subprocess.TimeoutExpired:
                lab.exec("client", umount, check=False, timeout=180)


def mount_and_write(lab: Lab, *versions: str) -> dict[str, records.Writer]:
    """The client mounts the export once per NFS version and appends records to a file of
    its own on each (one writer per mount, each with its own collector); returns once each
    has 20 acknowledged."""
    writers = {}
    for i, version in enumerate(versions):
        mnt = f"{CLIENT_MOUNT}{version}"
        lab.exec(
            "client",
            f"mkdir -p {mnt} && mount -t nfs -o {MOUNT_OPTIONS[version]} {VIP}:{EXPORT} {mnt}",
            timeout=120,
        )
        w = records.Writer(lab, port=records.PORT + i)
        w.start("client", f"{mnt}/{RECORDS}-v{version}")
        writers[version] = w
    for w in writers.values():
        w.wait_for(20)
    return writers


def lost_on(lab: Lab, node: str, w: records.Writer) -> int:
    """How many of `w`'s acknowledged records are missing or damaged in its file on `node`
    (the export, on the filesystem `node` has mounted)."""
    name = w.target.rsplit("/", 1)[1]
    return len(records.check(lab, node, w, f"{EXPORT}/{name}")["missing"])


def events(lab: Lab, node: str, since: str, event: str = "") -> list[dict[str, Any]]:
    """drbdha's journal entries on `node` (the daemon's and the fence-peer handler's) since
    its clock read `since`, all or those with EVENT=event."""
    match = f" EVENT={event}" if event else ""
    r = lab.exec(
        node, f"journalctl -q -o json --since @{since} SYSLOG_IDENTIFIER=drbdha{match}", timeout=60
    )
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


@dataclass(frozen=True)
class Phase:
    """One part of a takeover on the host's clock: a bar from start to end (a moment when
    start == end)."""

    name: str
    start: float
    end: float


def logged_at(entry: dict[str, Any]) -> float:
    """When drbdha logged a journal entry, on the node's wall clock: its own TIMESTAMP
    field (journald's reception time lags by seconds in a loaded emulated VM)."""
    stamp = entry.get("TIMESTAMP")
    if stamp:
        return dt.datetime.fromisoformat(stamp).timestamp()
    return int(entry["__REALTIME_TIMESTAMP"]) / 1e6


def takeover_phases(entries: list[dict[str, Any]], offset: float) -> list[Phase]:
    """The takeover in a node's journal entries (node clock minus host clock = offset):
    the VRRP transition to master, then each step of the chain as it started."""
    out = []
    for e in entries:
        at = logged_at(e) - offset
        kind = e.get("EVENT", "")
        if kind == "vrrp.transition" and e.get("NEW") == "master":
            out.append(Phase("VRRP master", at, at))
        elif kind == "vrrp.takeover_deferred":  # master down, but DRBD still sees the peer
            out.append(Phase("VRRP deferred", at, at))
        elif kind == "takeover.inhibition_cleared" and e.get("REASON") == "peer_primary":
            out.append(Phase("DRBD peer gone", at, at))
        elif kind == "step.started":
            out.append(Phase(e["STEP"], at - float(e["TOOK_MS"]) / 1000, at))
    return out


def client_tcpdump(*args: str) -> list[str]:
    """argv of tcpdump in the lab's namespace on the client's tap on the service network (what
    reaches the client's NIC), `args` after the interface."""
    return ["ip", "netns", "exec", NETNS, "tcpdump", "-i", VMS["client"].tap("svc"), *args]


class ClientCapture:
    """tcpdump on the client's tap (what reaches its NIC): each TCP reset the VIP sends it,
    told apart as a refused connect (the answer to the client's SYN) or the reset of a
    connection the client had (what a tickle sets off on purpose, or a new master's answer
    to a segment of a connection it never had)."""

    def __init__(self) -> None:
        self.refused = 0
        self.resets = 0
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        syn_rst = f"tcp and host {VIP} and (tcp[tcpflags] & (tcp-syn|tcp-rst) != 0)"
        self._proc = subprocess.Popen(
            client_tcpdump("-nn", "-l", "-S", syn_rst),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    def stop(self) -> None:
        assert self._proc is not None
        self._proc.terminate()
        out, _ = self._proc.communicate(timeout=10)
        self.refused, self.resets = count_resets(out)


def count_resets(tcpdump: str) -> tuple[int, int]:
    """(refused, resets) from tcpdump -nn lines of SYN and RST segments between the client
    and the VIP."""
    connecting: set[str] = set()  # the client's ports with a SYN not yet answered
    refused = resets = 0
    for line in tcpdump.splitlines():
        fields = line.split()
        try:
            i = fields.index("IP")
            src, dst, flags = (
                fields[i + 1],
                fields[i + 3].rstrip(":"),
                fields[fields.index("Flags") + 1].rstrip(","),
            )
        except (ValueError, IndexError):
            continue
        if src.startswith(f"{VIP}."):
            port = dst.rsplit(".", 1)[1]
            if "R" in flags:
                if port in connecting:
                    refused += 1
                else:
                    resets += 1
            connecting.discard(port)
        elif flags == "[S]":
            connecting.add(src.rsplit(".", 1)[1])
    return refused, resets


class ScopeCapture:
    """tcpdump (to a pcap) of what the VIP's port 2049 sends the client: which node's NIC
    (source MAC) sent a segment carrying a given byte string, such as the NFS server scope
    of an EXCHANGE_ID reply (RFC 8881 18.35: a client reclaims its state on a new server only
    when the scope is the same)."""

    def __init__(self, lab: Lab) -> None:
        self.path = lab.work / "scope.pcap"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.path.unlink(missing_ok=True)
        only = f"tcp and src host {VIP} and src port 2049"
        self._proc = subprocess.Popen(
            client_tcpdump("-U", "-w", str(self.path), only),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        assert self._proc is not None
        self._proc.terminate()
        self._proc.wait(timeout=10)

    def senders_of(self, needle: bytes) -> set[str]:
        """The nodes whose segments carried `needle`, by their NICs' MAC addresses."""
        from scapy.all import Ether, rdpcap  # noqa: PLC0415 (heavy; only this check needs it)

        by_mac = {VMS[n].mac("svc").lower(): n for n in NODES}
        return {
            by_mac.get(p[Ether].src.lower(), p[Ether].src)
            for p in rdpcap(str(self.path))
            if Ether in p and needle in bytes(p)
        }
