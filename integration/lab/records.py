"""Checksummed, synchronously written records on the Primary's DRBD device, acknowledged to the
host as each write returns, and checked afterwards on each node's backing disk.

The writer (WRITER, run in a node) writes record N of a run (a random run id is in every record,
so what an earlier run left on the disk never counts) at N * 512 bytes of /dev/drbd0 with O_DSYNC:
when pwrite returns, the record is on stable storage (DRBD protocol C: on both disks while
connected). It then sends "N start_s took_s" over TCP to the collector, which runs in the lab's
network namespace on the host (10.77.1.1), so the count of acknowledged records survives the
node being powered off. An acknowledged record the host never heard of (in flight at the kill)
is not counted: the check can only undercount what was promised, never invent a loss.

check() reads the backing disk of a node (the data area starts at sector 0 with internal
metadata) and reports which of records 0..N-1 are present and intact.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from cluster import DISK_DEV, NETNS, Lab

PORT = 7900
HOST = "10.77.1.1"  # the host's address on the service network, inside NETNS
RECORD = 512
# An application appending records, not a stress test: at full speed (0) the writer alone
# kept the one-CPU emulated VMs busy (nfsd, DRBD's replication on both nodes), which slowed
# every takeover step it was there to watch. A blocked write still shows as one long write.
PACE = 0.05

WRITER = r"""
import hashlib, os, socket, struct, sys, time
host, port, interval, run = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
target = sys.argv[5]
# The device: O_DSYNC. A file (on NFS): a write, then fsync, as an application appends.
device = target.startswith("/dev/")
fd = os.open(target, os.O_WRONLY | (os.O_DSYNC if device else os.O_CREAT | os.O_TRUNC), 0o644)
ack = socket.create_connection((host, port), timeout=10)
ack.settimeout(None)
n, rid = 0, bytes.fromhex(run)
while True:
    body = struct.pack("<8s16sQd", b"DRBDHA01", rid, n, time.time()).ljust(480, b"\0")
    rec = body + hashlib.sha256(body).digest()[:32]
    t0 = time.monotonic()
    try:
        os.pwrite(fd, rec, n * 512)
        if not device:
            os.fsync(fd)
    except OSError as e:
        ack.sendall(f"error {n} {e.errno}\n".encode())
        time.sleep(0.5)
        continue
    took = time.monotonic() - t0
    ack.sendall(f"{n} {time.time() - took:.6f} {took:.6f}\n".encode())
    n += 1
    if interval:
        time.sleep(interval)
"""

CHECK = r"""
import hashlib, json, mmap, os, struct, sys
dev, count, run = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3])
if dev.startswith("/dev/"):
    # O_DIRECT: what is on the disk, not what a page cache kept (an aligned buffer: mmap's).
    fd = os.open(dev, os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, max(4096, -(-count * 512 // 4096) * 4096))
    os.preadv(fd, [buf], 0)
    data = bytes(buf)
else:  # a file on the filesystem this node just mounted: read from its disk
    data = open(dev, "rb").read()
missing = []
for n in range(count):
    rec = data[n * 512:(n + 1) * 512]
    body, digest = rec[:480], rec[480:]
    ok = len(rec) == 512 and hashlib.sha256(body).digest()[:32] == digest
    if ok:
        magic, rid, seq, _ = struct.unpack_from("<8s16sQd", body)
        ok = magic == b"DRBDHA01" and rid == run and seq == n  # this run's, not an older one
    if not ok:
        missing.append(n)
print(json.dumps({"count": count, "missing": missing}))
"""


@dataclass
class Acks:
    """What the collector heard: acknowledged records, each write's start and latency."""

    starts: list[float] = field(default_factory=list)  # wall clock (the node's) per record
    took: list[float] = field(default_factory=list)
    errors: int = 0

    @property
    def acknowledged(self) -> int:
        return len(self.took)

    def longest_write(self, after: float = 0.0) -> float:
        """The longest single write (s) started at or after `after` (the node's wall clock)."""
        pairs = zip(self.starts, self.took, strict=True)
        return max((t for s, t in pairs if s >= after), default=0.0)


class Writer:
    """Start with start(node); stop() ends the writer (if its node still runs) and the collector."""

    def __init__(self, lab: Lab, interval: float = PACE, port: int = PORT) -> None:
        """`interval`: seconds between one acknowledged record and the next write; `port`:
        the collector's (one per writer running at the same time)."""
        self.lab = lab
        self.interval = interval
        self.port = port
        self.acks = Acks()
        self.run_id = secrets.token_hex(16)  # in every record: the disk keeps older runs' records
        self.node: str | None = None
        self.target = ""
        self._collector: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def start(self, node: str, target: str = "/dev/drbd0") -> None:
        """Write on `node` to `target`: the DRBD device, or a file (on an NFS mount)."""
        # A test that failed before stop() leaves its collector on the port: end it, or
        # every later writer on this port fails to bind (one failure became five in CI).
        left = _COLLECTORS.pop(self.port, None)
        if left is not None and left.poll() is None:
            left.terminate()
            left.wait(10)
        self._collector = subprocess.Popen(
            ["ip", "netns", "exec", NETNS, "python3", "-u", "-c", _COLLECTOR, HOST, str(self.port)],
            stdout=subprocess.PIPE,
            text=True,
        )
        _COLLECTORS[self.port] = self._collector
        assert self._collector.stdout is not None
        assert self._collector.stdout.readline().strip() == "listening"
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.node = node
        # One script per writer: a second writer's put used to rewrite the file the first
        # one's python3 was still about to read, which then ran an empty script and exited
        # without a word (the campaign's "0 records in 120 s", the NFSv3 writer each time).
        script = f"/root/writer-{self.port}.py"
        self.lab.put(node, script, WRITER)
        self.target = target
        self.lab.exec(
            node,
            f"setsid -f python3 {script} {HOST} {self.port} {self.interval} "
            f"{self.run_id} {target} >/root/writer-{self.port}.log 2>&1 </dev/null",
        )

    def _read(self) -> None:
        assert self._collector is not None
        assert self._collector.stdout is not None
        for line in self._collector.stdout:
            parts = line.split()
            if parts and parts[0] == "error":
                self.acks.errors += 1
            elif len(parts) == 3:
                self.acks.starts.append(float(parts[1]))
                self.acks.took.append(float(parts[2]))

    def wait_for(self, count: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.acks.acknowledged < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {self.acks.acknowledged} records in {timeout:.0f} s")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.node is not None and self.lab.running(self.node):
            mine = f"[w]riter-{self.port}.py {HOST} {self.port} "
            self.lab.exec(self.node, f"pkill -f '{mine}'", check=False, timeout=20)
        if self._collector is not None:
            self._collector.terminate()
            self._collector.wait(10)
        if self._reader is not None:
            self._reader.join(10)


# The collector running on each port in this process (Writer.start ends one left behind).
_COLLECTORS: dict[int, subprocess.Popen[str]] = {}

# No SO_REUSEPORT: with it a collector left behind (a test that failed before stop()) and a
# new one would share the port, the kernel would hand each new connection to either, and a
# writer whose acknowledgements reached the old one would look like a writer that gets
# nothing through. Without it the new collector fails to bind, loudly.
_COLLECTOR = r"""
import socket, sys
srv = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("listening", flush=True)
while True:
    conn, _ = srv.accept()
    for line in conn.makefile("r"):
        sys.stdout.write(line)
        sys.stdout.flush()
"""


def check(lab: Lab, node: str, writer: Writer, where: str = DISK_DEV) -> dict[str, Any]:
    """{"count": N, "missing": [...]} for `writer`'s acknowledged records 0..N-1 on `node`'s
    backing disk, or in the file `where` (records of an earlier run at the same place count
    as missing)."""
    count = writer.acks.acknowledged
    lab.put(node, "/root/check.py", CHECK)
    r = lab.exec(node, f"python3 /root/check.py {where} {count} {writer.run_id}", timeout=60)
    return json.loads(r.stdout)
