"""The chain's last step, after the VIP: bring the NFS clients back at once.

On start (the VIP is up, nfsd listens):
1. the tickles: each client connection the previous master recorded gets a bare ACK from
   the VIP, so a client with nothing unacknowledged learns within a round trip that its
   connection is gone (net/tickle.py says why it would otherwise wait for its keepalive);
2. `sm-notify -f -v VIP` (rpc-statd-notify.service, with the nfsd step's drop-in): statd's
   peers (NFSv3 lock holders) are told to reclaim their locks from the VIP, not from this
   node's own address;
3. the recorder: while this node serves, its clients' connections to the VIP are written
   to the state directory on DRBD every RECORD_INTERVAL (only when they change), so the
   next master finds them there even if this one dies without a word.
A failure in 1 or 2 is logged, never fails the takeover: the service is already up, and
rolling it back would cost the clients far more than a missed tickle.

The TCP side (the tickle segments, the sock_diag read of connections) is net/tickle.py's;
resources/ does not import net/, so the chain's composition passes it in as a `Tickler`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from drbdha import durable
from drbdha.resources import proc

RECORD_INTERVAL = 1.0  # seconds; a connection made since the last record misses its tickle
RECORD_FILE = "drbdha-clients.json"
NLM_TCPPORT = Path("/proc/sys/fs/nfs/nlm_tcpport")  # lockd's port, when the admin fixed it


class Connection(Protocol):
    """One client connection to the VIP (net/tickle.Connection)."""

    @property
    def vip(self) -> str: ...

    def as_json(self) -> list[object]: ...


C = TypeVar("C", bound=Connection)


@dataclass(frozen=True)
class Tickler(Generic[C]):
    """What this step needs of net/tickle.py."""

    established: Callable[[Sequence[str], Sequence[int]], Sequence[C]]
    send: Callable[[Sequence[C]], int]  # the segments sent
    parse: Callable[[object], C]  # a record's row; ValueError if it is none


def nfs_ports() -> list[int]:
    ports = [2049]
    with contextlib.suppress(OSError, ValueError):
        lockd = int(NLM_TCPPORT.read_text())
        if lockd:
            ports.append(lockd)
    return ports


def read_records(path: Path, parse: Callable[[object], C]) -> list[C]:
    """The recorded connections; [] or the good rows of a damaged record, never an error."""
    try:
        data = json.loads(path.read_bytes())
        rows = data["connections"]
    except FileNotFoundError:
        return []
    # A torn or damaged record costs the tickles, never the takeover. ValueError includes
    # UnicodeDecodeError; RecursionError is json.loads on arrays nested about 1,000 deep.
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return []
    out = []
    for row in rows if isinstance(rows, list) else []:
        with contextlib.suppress(ValueError):
            out.append(parse(row))
    return out


def write_records(path: Path, connections: Sequence[Connection]) -> None:
    """Atomically and durably: the reader is the next master, after this one may have lost
    power."""
    durable.replace(path, json.dumps({"connections": [c.as_json() for c in connections]}).encode())


class NfsClientsStep:
    name = "nfs_clients"

    def __init__(
        self,
        vips: Sequence[str],
        state_dir: Path,
        tickler: Tickler[Any],
        log: proc.Log,
        *,
        run: proc.Run = proc.run,
        timeout: float = 10.0,
    ) -> None:
        self.vips = tuple(vips)
        self.record = state_dir / RECORD_FILE
        self.tickler = tickler
        self.log = log
        self.run = run
        self.start_timeout = self.stop_timeout = timeout
        self._recorder: asyncio.Task[None] | None = None

    async def held(self) -> bool:
        return self._recorder is not None and not self._recorder.done()

    async def start(self) -> None:
        if await self.held():
            return
        await self._tickle()
        await self._notify()
        # Owned by this step: stop() cancels it and waits for it.
        self._recorder = asyncio.create_task(self._record(), name="nfs-clients-recorder")

    async def _tickle(self) -> None:
        try:
            parse = self.tickler.parse
            records = await asyncio.to_thread(read_records, self.record, parse)
            conns = [c for c in records if c.vip in self.vips]
            sent = await asyncio.to_thread(self.tickler.send, conns)
        except OSError as e:
            self.log.warning("nfs.tickle_failed", error=str(e))
            return
        self.log.info("nfs.clients_tickled", connections=len(conns), segments=sent)

    async def _notify(self) -> None:
        # sm-notify binds a privileged port and drops to statd's user, which drbdha's own
        # capabilities do not allow: its unit runs it (the nfsd step's drop-in adds -f -v).
        r = await self.run(["systemctl", "restart", "rpc-statd-notify.service"])
        if not r.ok:
            self.log.warning("nfs.sm_notify_failed", error=r.summary())

    async def stop(self) -> None:
        task, self._recorder = self._recorder, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _record(self) -> None:
        last: Sequence[Connection] | None = None
        while True:
            try:
                established = self.tickler.established
                conns = await asyncio.to_thread(established, self.vips, nfs_ports())
                if conns != last:
                    await asyncio.to_thread(write_records, self.record, conns)
                    last = conns
            except Exception as e:  # a full disk, a netlink error: the service goes on, and
                # the step's stop must not inherit a dead recorder's exception (a failed stop)
                self.log.warning("nfs.record_failed", error=f"{type(e).__name__}: {e}")
            await asyncio.sleep(RECORD_INTERVAL)
