"""Model-level randomized test (issue 22 §2): two nodes running drbdha's pure parts (the VRRP
Machine, the chain Plan, the DRBD guard and the promotion gate) over a FAKE of DRBD, of the
two networks and of a client, driven by random faults and time steps (Hypothesis).

What is real here: vrrp.machine.Machine (election, resignation, force-failover, inhibitions),
chain.plan.Plan (the steps' order, rollback, a stuck stop), resources.drbd_guard.assess and
drbd_gates.promotion_refusal (inhibitions, latches, the gate right before `drbdadm primary`).
The glue between them follows the daemon (daemon/storage.py on_drbd/_judge/sync_inhibitions
and on_settled, daemon/instances.py's reconcile at start, daemon/handover.py for
force-failover, fencing/server.py's answer to an outdate request).

What is a fake (FakeDrbd, Node, Cluster below), kept to what DRBD 8.4 with `fencing
resource-and-stonith` and the fence-peer handler does for this job:
- protocol C: a write is acknowledged once on every connected disk; a Primary whose link is
  gone holds writes until its DRBD has noticed (PING_TIMEOUT) and the fence-peer handler has
  answered that the peer is outdated or unreachable (silence); any other answer keeps the
  I/O frozen, and drbdha's keeper asks again every second;
- `drbdadm primary` on a node whose peer is not connected runs the handler first;
- a node that wrote (as Primary) while disconnected has moved its data generation on: two
  such nodes meeting again is a split brain (both StandAlone); one such node resyncs the
  other; a node powered on comes back Consistent and can be promoted only once connected;
- the handler's answer (fencing/server.py): silence when the peer host is down, frozen or
  cut from the service network; a refusal when its drbdha is down or it is Primary;
  otherwise the peer outdates its copy;
- a lost link is tried again on DRBD's connect-int, so a heal meets the copies seconds later;
- the client writes, unless told to be idle, to the node its ARP entry names; the entry
  moves only when that node stops answering for the VIP; what it sends is what drbdha's
  reach watch sees (daemon/reach.py: a client's data on a VIP connection).

Invariants, checked at every tick:
- never two Primaries the client can reach both of (two Primaries with one node cut from the
  service network is the README's "Two nodes: what cannot be told apart");
- never two VIP holders the client can reach;
- the VIP only on a node whose chain is up below it (Primary, mounted, nfsd, exports);
- no promotion of a copy that lacks an acknowledged write, and no write acknowledged on one
  (documented, not failed: while a live node is cut off from its peer on both networks, or
  after the side the clients wrote to during such a cut lost its power before the heal);
- after every fault is healed and the cluster has had time: exactly one node serves, with
  every acknowledged write, unless a documented refusal stands (a latch, no UpToDate copy).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from fakes import params
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from drbdha.chain.plan import Action, Next, Plan
from drbdha.daemon import reach, stall
from drbdha.resources import drbd_guard as guard
from drbdha.resources.drbd_events import Connection, PeerVolume, Resource, Volume
from drbdha.resources.drbd_gates import promotion_refusal
from drbdha.vrrp.events import Activate, Deactivate, SendAdvert, State
from drbdha.vrrp.machine import Machine
from drbdha.vrrp.packet import Advertisement

TICK = 0.1
ADVERT = 1.0
PING_TIMEOUT = 1.0  # DRBD notices a dead link (ping-int + ping-timeout, tuned)
# A lost connection is tried again after this (the lab: a node back from a freeze was in
# WFConnection 0.6 s after it noticed, and its peer could be dead by then).
RECONNECT = 1.0
# DRBD's connect-int (its default; the README keeps it): a node waiting for its peer tries to
# connect every 10 s (and listens meanwhile), so a healed link meets again up to 10 s later
# (the lab's campaign: 13 s from a heal to the split brain found).
CONNECT_INT = 10.0
RESYNC = 1.0
RESTART = 2.0  # systemd's RestartSec after a crash of drbdha
KEEPER_EVERY = 1.0
STEP_TIME = 0.2
STEPS = ("drbd", "filesystem", "nfsd", "exports", "vip")
PRIORITY = (150, 100)
HOLD_OFF = 10.0
SETTLE = 60.0  # after the heal: Master_Down_Interval, restarts, resyncs, hold-offs
EXAMPLES = 2000 if os.environ.get("CI") else 300


RANK = {"UpToDate": 3, "Consistent": 2, "Outdated": 1, "Inconsistent": 0, "Diskless": -1}


class Violation(AssertionError):
    pass


def brief(writes: set[int]) -> str:
    """Missing writes, as a person reads them: how many, and the first few."""
    first = ", ".join(str(w) for w in sorted(writes)[:5])
    return f"{len(writes)} acknowledged writes ({first}{', ...' if len(writes) > 5 else ''})"


@dataclass
class FakeDrbd:
    """A FAKE of one node's DRBD resource (8.4, one volume, fencing resource-and-stonith)."""

    role: str = "Secondary"
    disk: str = "UpToDate"  # UpToDate | Consistent | Outdated | Inconsistent | Diskless
    data: frozenset[int] = frozenset()  # acknowledged writes on this backing disk
    conn: str = "Connected"  # Connected | Connecting | StandAlone
    lost_at: float | None = None  # the link is gone; DRBD has not noticed yet
    retry_at: float = 0.0  # no new connection before (connect-int after a lost one)
    attempt_at: float = 0.0  # its next attempt to connect (every CONNECT_INT)
    busy_until: float = 0.0  # drbdadm state changes fail until then (a hung drbdsetup)
    peer_fenced: bool = False  # the handler answered outdated or dead since the link went
    frozen_io: bool = False
    new_data: bool = False  # wrote while disconnected: its generation moved on
    split_brain: bool = False
    sync_until: float | None = None  # SyncTarget until then
    sync_to: str = "UpToDate"  # the disk state it ends with (the source's)
    keeper_at: float = 0.0
    peer_role_seen: str = "Secondary"  # what the connection last told of the peer
    peer_disk_seen: str = "UpToDate"


@dataclass
class Daemon:
    """drbdha on one node: the real Machine and Plan, and the daemon's glue as a model."""

    machine: Machine
    plan: Plan
    in_flight: tuple[Next, float] | None = None
    last: Resource | None = None
    stale: bool = False  # daemon/stale.py: resume DRBD's I/O once the VIP is gone
    last_turn: float = 0.0  # daemon/stall.py: when the daemon last ran
    stalled_until: float = -1.0
    outdated_after_stall: bool = False
    suspect: bool = False  # drbd_guard.still_suspect: out of the election until guarded
    unsettled: bool = False  # a wish or a step the machine has not been told the end of
    peer_gone_since: float | None = None  # daemon/reach.py's evidence: DRBD's peer away since
    clients_reached: bool = False  # a client's data seen after that, while Primary and master
    reach_at: float = 0.0  # reach.ReachWatch's next look


@dataclass
class Node:
    index: int
    alive: bool = True
    frozen_until: float = 0.0
    svc: bool = True
    repl: bool = True
    drbd: FakeDrbd = field(default_factory=FakeDrbd)
    daemon: Daemon | None = None
    restart_at: float | None = None  # systemd restarts a crashed drbdha then
    kernel: set[str] = field(default_factory=set)  # the steps' effects in place
    latches: set[str] = field(default_factory=set)  # /var/lib/drbdha/latches.json
    wrote_alone: bool = False  # /var/lib/drbdha/wrote-alone.json (drbdha/alone.py)
    holding: bool = False  # the same file's "took_over" (drbd_guard.holds_for_clients)
    client_data_at: float = float("-inf")  # the client last sent data to this node's VIP
    alive_mark: float | None = None  # /run/drbdha/alive after an unclean end (clock.AliveMark)
    died_apart: bool = False  # powered off after a live peer was taken for dead

    @property
    def address(self) -> IPv4Address:
        return IPv4Address(f"10.0.0.{self.index + 1}")

    def frozen(self, now: float) -> bool:
        return now < self.frozen_until

    def running(self, now: float) -> bool:
        return self.alive and not self.frozen(now)


class Cluster:
    def __init__(self) -> None:
        self.now = 0.0
        self.nodes = [Node(0), Node(1)]
        self.acked: set[int] = set()
        self.next_write = 0
        self.adverts: list[tuple[float, int, Advertisement]] = []
        self.documented: set[str] = set()
        self.cut_off_alive = False  # a live peer was taken for dead (fence() says when)
        # The node the client's ARP entry for the VIP names: it moves only when that node no
        # longer answers for the VIP and another does (a GARP it hears); a node that takes
        # the VIP with its service link cut is never heard.
        self.arp: int | None = None
        self.idle_until = 0.0  # the client sends nothing until then (an idle client)
        for n in self.nodes:
            self.start_daemon(n)

    def peer(self, n: Node) -> Node:
        return self.nodes[1 - n.index]

    # ---- the FAKE networks -----------------------------------------------------------------

    def svc_ok(self, a: Node, b: Node) -> bool:
        return a.running(self.now) and b.running(self.now) and a.svc and b.svc

    def repl_ok(self) -> bool:
        a, b = self.nodes
        return self.now >= max(a.frozen_until, b.frozen_until) and all(
            n.alive and n.repl for n in self.nodes
        )

    def client_reaches(self, n: Node) -> bool:
        return n.running(self.now) and n.svc and "vip" in n.kernel

    def client_node(self) -> Node | None:
        """The node the client's packets reach, if any (its ARP entry, self.arp)."""
        if self.arp is None or not self.client_reaches(self.nodes[self.arp]):
            holders = [n for n in self.nodes if self.client_reaches(n)]
            self.arp = holders[0].index if holders else self.arp
        n = self.nodes[self.arp] if self.arp is not None else None
        return n if n is not None and self.client_reaches(n) else None

    # ---- the FAKE DRBD ---------------------------------------------------------------------

    def resource(self, n: Node) -> Resource:
        d, peer = n.drbd, self.peer(n).drbd
        connected = d.conn == "Connected"
        peer_disk = peer.disk if connected else ("Outdated" if d.peer_fenced else "DUnknown")
        if connected and d.lost_at is not None:
            peer_disk = d.peer_disk_seen
        if d.sync_until is not None:
            disk = "Inconsistent"
        elif peer.sync_until is not None and connected:
            peer_disk = "Inconsistent"
            disk = d.disk
        else:
            disk = d.disk
        return Resource(
            name="r0",
            role=d.role,
            suspended=d.frozen_io,
            may_promote=None,
            promotion_score=None,
            force_io_failures=False,
            devices=(Volume(0, 0, disk, client=False, quorum=None, open=None),),
            connections=(
                Connection(
                    peer_node_id=1 - n.index,
                    conn_name="peer",
                    connection=d.conn,
                    role=d.peer_role_seen if connected else "Unknown",
                    volumes=(PeerVolume(0, "Established", peer_disk, False, None),),
                ),
            ),
            split_brain=d.split_brain,
            suspended_by=frozenset({"fencing"}) if d.frozen_io else frozenset(),
        )

    def fence(self, asker: Node) -> str:
        """The fence-peer handler's answer about the other node (fencing/server.py):
        "outdated" (exit 4), "dead" (exit 5, silence), "primary" or "newer" (exit 6: the
        peer serves, or wrote alone since the copies last met) or "refused" (exit 1: DRBD
        keeps the freeze)."""
        peer = self.peer(asker)
        if not self.svc_ok(asker, peer):
            dm = asker.daemon
            if dm is not None and (self.now <= dm.stalled_until or dm.suspect):
                return "refused"  # daemon/stall.py: we were stopped; silence is not death
            left = self.now - asker.alive_mark if asker.alive_mark is not None else None
            if dm is None and left is not None and left <= stall.WINDOW:
                return "refused"  # cli._distrust_after_crash: the handler alone
            if peer.running(self.now):
                # A live, running peer cut off on both networks: the README's "Two nodes:
                # what cannot be told apart". What follows is documented, not a violation.
                self.cut_off_alive = True
            return "dead"
        if peer.daemon is None:
            return "refused"
        if peer.drbd.role == "Primary":
            return "primary"
        if peer.wrote_alone:
            return "newer"
        if peer.drbd.disk != "Diskless":
            peer.drbd.disk = "Outdated"
        peer.drbd.sync_until = None
        return "outdated"

    def link_lost(self, n: Node) -> None:
        """n's DRBD has noticed that its link is gone."""
        d, peer = n.drbd, self.peer(n).drbd
        if d.conn != "StandAlone":
            d.conn = "Connecting"
        d.lost_at, d.retry_at = None, self.now + RECONNECT
        d.attempt_at = d.retry_at
        if peer.conn == "Connected" and peer.lost_at is None:
            peer.lost_at = self.now  # the connection is gone for the peer too
        if d.sync_until is not None:  # a resync cut short leaves the target Inconsistent
            d.sync_until, d.disk = None, "Inconsistent"
        if d.role == "Primary" and not d.peer_fenced:
            d.frozen_io = True
            self.try_fence(n)

    def try_fence(self, n: Node) -> None:
        d = n.drbd
        answer = self.fence(n)
        if answer in ("outdated", "dead"):
            d.peer_fenced, d.frozen_io = True, False
        elif answer in ("primary", "newer") and n.daemon is not None:
            self.stale_copy(n)

    def stale_copy(self, n: Node) -> None:
        """daemon/storage.py stale_copy: latch, resign, resume once the VIP is gone."""
        assert n.daemon is not None
        if n.daemon.stale:
            return
        n.daemon.stale, n.wrote_alone = True, False
        n.latches.add("disk")
        self.judge(n)
        self.apply(n, n.daemon.machine.resign(self.now, 0.0))

    def connect(self) -> None:
        a, b = self.nodes
        da, db = a.drbd, b.drbd
        if "StandAlone" in (da.conn, db.conn) or "Connected" in (da.conn, db.conn):
            return
        if self.now < max(da.retry_at, db.retry_at):
            return
        if da.new_data and db.new_data:
            for d in (da, db):
                d.conn, d.split_brain = "StandAlone", True
            return
        for d, other in ((da, db), (db, da)):
            if d.role == "Primary" and d.disk == "Diskless" and d.new_data and not other.new_data:
                # 8.4: "Can only connect to data with current UUID": a diskless Primary
                # serves the data it exposed, never an older copy.
                d.conn = "StandAlone"
                return
        source, target = (a, b) if self.newer(a, b) else (b, a)
        s, t = source.drbd, target.drbd
        if t.role == "Primary" and s.new_data and t.disk != "Diskless":
            return  # "I shall become SyncTarget, but I am primary!": DRBD drops the link
        for d in (da, db):
            d.conn, d.peer_fenced, d.frozen_io, d.lost_at = "Connected", False, False, None
        # The data generations decide the direction (the newer one syncs the other), then
        # the disk states: the target ends with the source's state (an Outdated source
        # leaves two Outdated copies); a Consistent copy meeting its peer is UpToDate.
        if "Diskless" not in (s.disk, t.disk) and s.disk != "Inconsistent":
            if s.disk == "Consistent":
                s.disk = "UpToDate"
            if s.new_data or s.data != t.data or RANK[s.disk] > RANK[t.disk]:
                t.sync_until, t.sync_to = self.now + RESYNC, s.disk
            elif t.disk == "Consistent":
                t.disk = s.disk
        for d in (s, t):  # a detached disk keeps its generation for when it is attached
            d.new_data = d.new_data and d.disk == "Diskless"
        da.peer_role_seen, db.peer_role_seen = db.role, da.role

    @staticmethod
    def newer(a: Node, b: Node) -> bool:
        return (a.drbd.new_data, RANK[a.drbd.disk]) >= (b.drbd.new_data, RANK[b.drbd.disk])

    def drbd_tick(self) -> None:
        ok = self.repl_ok()
        if ok and all(n.drbd.conn == "Connected" for n in self.nodes):
            for n in self.nodes:  # a cut shorter than the ping timeout: nothing dropped
                peer = self.peer(n).drbd
                n.drbd.lost_at = None
                n.drbd.peer_role_seen = peer.role
                n.drbd.peer_disk_seen = "Inconsistent" if peer.sync_until else peer.disk
        for n in self.nodes:
            d = n.drbd
            if not n.running(self.now) or d.conn != "Connected":
                continue
            if not ok and d.lost_at is None:
                d.lost_at = self.now
            if d.lost_at is not None and self.now - d.lost_at >= PING_TIMEOUT:
                self.link_lost(n)
                self.after_stall(n)  # storage.on_drbd: the change itself is seen
        attempt = False
        for n in self.nodes:
            d = n.drbd
            waiting = n.running(self.now) and d.conn == "Connecting"
            if waiting and self.now >= max(d.retry_at, d.attempt_at):
                attempt, d.attempt_at = True, self.now + CONNECT_INT
        if ok and attempt:
            self.connect()
        for n in self.nodes:
            d = n.drbd
            source = self.peer(n).drbd
            if d.sync_until is not None and source.disk == "Diskless":
                d.sync_until, d.disk = None, "Inconsistent"  # the source lost its disk
            if d.sync_until is not None and self.now >= d.sync_until and d.conn == "Connected":
                d.sync_until, d.disk = None, d.sync_to
                d.data = source.data
            if d.frozen_io and n.running(self.now) and self.now >= d.keeper_at:
                d.keeper_at = self.now + KEEPER_EVERY  # drbdha's keeper (fencing/keeper.py)
                if n.daemon is not None:
                    self.try_fence(n)

    def promote(self, n: Node) -> str | None:
        """`drbdadm primary`: None when promoted, else why not."""
        d = n.drbd
        if d.role == "Primary":
            return None
        if d.disk != "UpToDate" or d.sync_until is not None:
            return "no_uptodate_disk"
        if d.conn == "Connected":
            if d.peer_role_seen == "Primary":
                return "peer_primary"
            if d.lost_at is not None:
                return "state_change_timed_out"  # the peer never answers the request
        elif not d.peer_fenced:
            answer = self.fence(n)
            if answer in ("primary", "newer"):
                d.disk = "Outdated"  # exit 6: DRBD outdates the asking Secondary
                return "peer_serves"
            if answer == "refused":
                return "fence_refused"
            d.peer_fenced = True
        missing = self.acked - d.data
        if missing:
            self.violation(f"t={self.now:.1f}: node{n.index + 1} promoted without {brief(missing)}")
        d.role = "Primary"
        if d.conn != "Connected":
            d.new_data = True
        return None

    def violation(self, what: str) -> None:
        if not self.cut_off_alive:
            raise Violation(what)
        self.documented.add("a live peer cut off on both networks taken for dead (README)")

    # ---- the client -------------------------------------------------------------------------

    def write(self) -> None:
        n = self.client_node()
        if n is None or self.now < self.idle_until:
            return
        n.client_data_at = self.now  # a request, acknowledged or not (reach.py looks)
        d, peer = n.drbd, self.peer(n)
        if d.role != "Primary" or d.frozen_io or not {"filesystem", "nfsd"} <= n.kernel:
            return
        if d.conn == "Connected" and (d.lost_at is not None or not self.repl_ok()):
            return  # protocol C: the write waits until DRBD has noticed and fenced
        if d.disk == "Diskless" and (peer.drbd.disk != "UpToDate" or peer.drbd.sync_until):
            return  # no good copy to read or write: I/O errors (on-no-data-accessible)
        targets = [] if d.disk == "Diskless" else [d]
        if d.conn == "Connected" and peer.drbd.disk != "Diskless":
            targets.append(peer.drbd)
        if not targets or (d.disk == "Diskless" and d.conn != "Connected"):
            return
        if d.conn != "Connected" and not d.peer_fenced:
            return
        missing = self.acked - targets[0].data
        if missing:
            where = f"t={self.now:.1f}: node{n.index + 1}"
            what = f"{where} acknowledges a write on a copy without {brief(missing)}"
            if self.svc_ok(n, peer) and not peer.died_apart:
                # The peer that has them is on the service network with us, heard: not a
                # live peer taken for dead, whatever happened before (findings 7 and 8:
                # which of two Primaries keeps the service at the heal is drbdha's choice).
                raise Violation(what)
            if peer.died_apart:
                # The nodes were cut apart, the clients wrote to the peer, and the peer lost
                # its power before the copies met: its writes are on its disk alone, and
                # nobody was left to say so (README, "Two nodes").
                self.documented.add("the clients' side of a partition died before the heal")
            self.violation(what)
        if d.conn != "Connected" and d.disk != "Diskless":
            d.new_data = True  # DRBD's first write without the peer moves the generation
        w = self.next_write
        self.next_write += 1
        for t in targets:
            t.data = t.data | {w}
        self.acked.add(w)

    # ---- drbdha (the daemon's glue around the real parts) -----------------------------------

    def start_daemon(self, n: Node) -> None:
        """daemon/instances.py: reconcile what is held, the first verdict, start (resume when
        a previous run left DRBD Primary)."""
        held = tuple((n.drbd.role == "Primary") if s == "drbd" else (s in n.kernel) for s in STEPS)
        plan = Plan(STEPS, held)
        machine = Machine(
            params(version=3, priority=PRIORITY[n.index], advert_interval=ADVERT, preempt=False),
            n.address,
        )
        machine.hold_for_data(n.holding, self.now)  # storage.py build
        n.daemon = Daemon(machine, plan, last_turn=self.now)
        if n.alive_mark is not None and self.now - n.alive_mark >= stall.THRESHOLD:
            n.daemon.stalled_until = self.now + stall.WINDOW  # loop.py: a mark left behind
        n.alive_mark = None
        n.restart_at = None
        resume = n.drbd.role == "Primary"
        stale = resume and n.drbd.frozen_io and self.fence(n) in ("primary", "newer")
        if stale:  # serving.py _stale_at_start: asked before resuming
            resume = False
        if not resume and any(held):
            plan.want(False)
        self.judge(n)
        if stale:
            self.stale_copy(n)
        self.apply(n, machine.start(self.now, resume=resume))
        if resume and machine.state is not State.MASTER:
            plan.want(False)  # daemon/instances.py _start_machine

    def judge(self, n: Node) -> None:
        """daemon/storage.py on_drbd/_judge/sync_inhibitions."""
        assert n.daemon is not None
        new = self.resource(n)
        old, n.daemon.last = n.daemon.last, new
        n.wrote_alone = guard.wrote_alone(n.wrote_alone, new, stale=n.daemon.stale)
        self.note_peer_gone(n.daemon, new)
        self.hold(n, n.daemon.clients_reached)
        n.daemon.suspect = guard.still_suspect(n.daemon.suspect, new)
        verdict = guard.assess(
            old,
            new,
            on_disk_loss="failover",
            latched=frozenset(n.latches),
            suspect=n.daemon.suspect,
        )
        n.latches |= {kind for kind, _ in verdict.latch}
        m = n.daemon.machine
        held = set(m.inhibitions) & guard.MANAGED
        for name in sorted(held - verdict.inhibitions):
            self.apply(n, m.set_inhibit(name, False, self.now))
        for name in sorted(verdict.inhibitions - held):
            self.apply(
                n,
                m.set_inhibit(
                    name,
                    True,
                    self.now,
                    resign=name not in guard.NO_RESIGN,
                    blocks_preempt=name not in guard.PREEMPT_OK,
                ),
            )

    def note_peer_gone(self, dm: Daemon, new: Resource) -> None:
        """suspicion._note_peer_gone."""
        if new.connected:
            dm.peer_gone_since = None
        elif dm.peer_gone_since is None:
            dm.peer_gone_since = self.now
        if new.connected or new.role != "Primary":
            dm.clients_reached = False

    def hold(self, n: Node, reached: bool) -> None:
        """suspicion.note_holding."""
        assert n.daemon is not None
        holds = guard.holds_for_clients(n.holding, self.resource(n), reached=reached)
        if holds != n.holding:
            n.holding = holds
            self.apply(n, n.daemon.machine.hold_for_data(holds, self.now))

    def look_for_clients(self, n: Node, *, now: bool = False) -> None:
        """reach.ReachWatch once a POLL (or suspicion.last_look, `now`: a master about to
        hear an advert), then suspicion.clients_heard."""
        dm, d = n.daemon, n.drbd
        assert dm is not None
        if not now:
            if self.now < dm.reach_at:
                return
            dm.reach_at = self.now + reach.POLL
        if n.holding or d.role != "Primary" or d.conn == "Connected" or "vip" not in n.kernel:
            return
        if dm.machine.state is not State.MASTER or dm.peer_gone_since is None:
            return
        if n.client_data_at > dm.peer_gone_since:
            dm.clients_reached = True
            self.hold(n, True)

    def apply(self, n: Node, effects: list) -> None:
        assert n.daemon is not None
        for e in effects:
            if isinstance(e, SendAdvert):
                p = n.daemon.machine.params
                adv = Advertisement(
                    3, p.vrid, e.priority, round(ADVERT * 100), (p.virtual_ipaddress[0].ip,)
                )
                self.adverts.append((self.now + TICK, n.index, adv))
            elif isinstance(e, Activate):
                n.daemon.unsettled |= n.daemon.plan.want(True)
            elif isinstance(e, Deactivate):
                n.daemon.unsettled |= n.daemon.plan.want(False)

    def run_step(self, n: Node, nxt: Next) -> tuple[bool, str | None]:
        """A step's start or stop on the FAKE kernel: (ok, error)."""
        name, start = STEPS[nxt.index], nxt.action is Action.START
        d = n.drbd
        if name == "drbd":
            if not start:
                d.role = "Secondary"
                return True, None
            why = promotion_refusal(
                self.resource(n), split_brain_latched="split-brain" in n.latches
            )
            if why is None:
                why = self.promote(n)
            return why is None, why
        if start and d.role != "Primary":
            return False, "not primary"
        if start:
            n.kernel.add(name)
        else:
            n.kernel.discard(name)
        return True, None

    def daemon_tick(self, n: Node) -> None:
        dm = n.daemon
        assert dm is not None
        if self.resource(n) != dm.last:
            self.judge(n)
        self.after_stall(n)
        d = n.drbd  # suspicion.hold_apart: `drbdadm disconnect`
        if (
            n.wrote_alone
            and d.disk == "Diskless"
            and d.role == "Secondary"
            and d.conn == "Connected"
        ):
            d.conn = "StandAlone"
            peer = self.peer(n).drbd
            if peer.conn == "Connected":
                peer.conn = "Connecting"
        if dm.stale and n.drbd.frozen_io and "vip" not in n.kernel:
            n.drbd.disk = "Diskless"  # stale.ResumeToRelease: detach --force, resume-io
            n.drbd.frozen_io = False
            n.drbd.peer_fenced = True
        self.look_for_clients(n)
        m = dm.machine
        t = m.get_timer()
        if t is not None and t <= self.now:
            self.apply(n, m.handle_timer(self.now))
        if dm.in_flight is not None:
            nxt, due = dm.in_flight
            if self.now < due:
                return
            promoting = STEPS[nxt.index] == "drbd" and nxt.action is Action.START
            # drbd.py _wait_for_peer_to_demote, bounded by the step's start timeout
            if promoting and self.resource(n).peer_primary and self.now - due < 10.0:
                return
            ok, error = self.run_step(n, nxt)
            dm.in_flight = None
            dm.plan.done(ok, error, backoff=not ok)
            dm.unsettled = True
        if dm.unsettled and dm.in_flight is None:
            self.settle(n)
        nxt = dm.plan.next()
        if nxt is not None and dm.in_flight is None:
            dm.plan.begin(nxt)
            dm.in_flight = (nxt, self.now + STEP_TIME)

    def settle(self, n: Node) -> None:
        """The runner's ChainSettled, once per wish or step: also when a wish found nothing
        to do (the chain down already), which the machine waits for too."""
        dm = n.daemon
        assert dm is not None
        m, settled = dm.machine, dm.plan.settled()
        if settled is None:
            return
        dm.unsettled = False
        if settled.ok:
            self.apply(n, m.chain_settled(settled.up, self.now))
        elif settled.failed_action is Action.START:
            self.apply(n, m.chain_settled(False, self.now) + m.chain_failed(self.now, 5.0))
        else:
            self.apply(n, m.set_fault("stop_failed", True, self.now))

    def stall_watch(self, n: Node) -> None:
        """stall.StallWatch: it runs on a timer of its own, before anything else."""
        dm = n.daemon
        if dm is None:
            return
        if self.now - dm.last_turn >= stall.THRESHOLD + TICK:
            dm.stalled_until, dm.outdated_after_stall = self.now + stall.WINDOW, False
            dm.machine.resumed(self.now)  # loop.py _stalled, before the timers
        dm.last_turn = self.now

    def after_stall(self, n: Node) -> None:
        """suspicion.after_stall: a Secondary whose link is lost soon after a stall."""
        dm, d = n.daemon, n.drbd
        if dm is None:
            return
        if dm.suspect and not self.outdate_refused(n):
            d.disk = "Outdated"  # storage.outdate_self, tried again until it goes through
        if self.now > dm.stalled_until or dm.outdated_after_stall:
            return
        if d.role == "Secondary" and d.conn != "Connected" and d.disk == "UpToDate":
            dm.outdated_after_stall = dm.suspect = True
            self.judge(n)  # the stalled_copy inhibition first
            if not self.outdate_refused(n):
                d.disk = "Outdated"

    def outdate_refused(self, n: Node) -> bool:
        """Does `drbdadm outdate` fail now? While a `drbdadm primary` runs (its fence-peer
        handler may wait; the lab: drbdmeta's exit 20 beside the peer probe), and while
        the FAKE is told drbdadm is busy."""
        dm = n.daemon
        if dm is None:
            return False
        if self.now < n.drbd.busy_until:
            return True
        if dm.in_flight is None:
            return False
        nxt = dm.in_flight[0]
        return STEPS[nxt.index] == "drbd" and nxt.action is Action.START

    def deliver(self) -> None:
        due = [a for a in self.adverts if a[0] <= self.now]
        self.adverts = [a for a in self.adverts if a[0] > self.now]
        for _, src, adv in due:
            a, b = self.nodes[src], self.nodes[1 - src]
            if self.svc_ok(a, b) and b.daemon is not None:
                if b.daemon.machine.state is State.MASTER:
                    self.look_for_clients(b, now=True)  # loop.py _read_socket: last_look
                self.apply(b, b.daemon.machine.receive(adv, a.address, self.now))

    # ---- time ------------------------------------------------------------------------------

    def tick(self) -> None:
        self.now = round(self.now + TICK, 6)
        for n in self.nodes:
            if n.running(self.now):
                self.stall_watch(n)
        self.drbd_tick()
        for n in self.nodes:
            if not n.running(self.now):
                continue
            if n.daemon is None and n.restart_at is not None and self.now >= n.restart_at:
                self.start_daemon(n)
            if n.daemon is not None:
                self.daemon_tick(n)
        self.deliver()
        self.write()
        self.check()

    def run(self, seconds: float) -> None:
        for _ in range(round(seconds / TICK)):
            self.tick()

    def check(self) -> None:
        a, b = self.nodes
        for n in self.nodes:
            if n.alive and "vip" in n.kernel:
                below = {"filesystem", "nfsd", "exports"} <= n.kernel
                if not (below and n.drbd.role == "Primary"):
                    raise Violation(f"t={self.now:.1f}: node{n.index + 1} VIP without its chain")
        # Two Primaries, or two VIP holders, happen with two nodes and no power switch when a
        # node is cut off from both networks (README) or frozen across its peer's takeover;
        # what must never follow is an acknowledged write on a stale copy (write(), promote())
        # and more than one server once healed (the test's end).
        if all(n.running(self.now) and n.drbd.role == "Primary" for n in self.nodes):
            self.documented.add("two Primaries" if a.svc and b.svc else "two Primaries, isolated")
        if all(self.client_reaches(n) for n in self.nodes):
            self.documented.add("two VIP holders")

    # ---- faults ------------------------------------------------------------------------------

    def power_off(self, n: Node) -> None:
        n.died_apart = n.died_apart or self.cut_off_alive
        n.alive, n.daemon, n.restart_at, n.kernel = False, None, None, set()
        n.alive_mark = None  # /run is gone with the power
        peer = self.peer(n).drbd
        if peer.conn == "Connected" and peer.lost_at is None:
            peer.lost_at = self.now  # its connection died with this node
        d = n.drbd
        d.role, d.frozen_io, d.lost_at, d.sync_until = "Secondary", False, None, None
        d.conn = "Connecting"
        if d.disk == "UpToDate":
            d.disk = "Consistent"  # after the reboot, until it meets its peer

    def power_on(self, n: Node) -> None:
        if n.alive:
            return
        n.alive, n.frozen_until = True, 0.0
        d = n.drbd
        d.peer_fenced, d.split_brain = False, False  # the kernel forgets; the latch stays
        d.retry_at = d.attempt_at = self.now  # DRBD is started at boot and connects
        if d.disk == "Diskless":
            d.disk = "Outdated"  # the old backing disk, attached at boot: not UpToDate
        self.start_daemon(n)

    def kill_drbdha(self, n: Node) -> None:
        if n.alive and n.daemon is not None:
            n.alive_mark = n.daemon.last_turn  # clock.AliveMark: an unclean end
            n.daemon, n.restart_at = None, self.now + RESTART

    def stop_drbdha(self, n: Node) -> None:
        """`systemctl stop drbdha`: the chain released in reverse order (the DRBD demote
        last), then the daemon exits; it stays down until started again."""
        if not n.running(self.now) or n.daemon is None:
            return
        n.kernel.clear()
        n.drbd.role = "Secondary"
        n.daemon, n.restart_at = None, None

    def force_failover(self, n: Node) -> None:
        """daemon/handover.py: the master resigns, a backup takes over at priority 254."""
        if not n.running(self.now) or n.daemon is None:
            return
        m = n.daemon.machine
        if m.state is State.MASTER:
            self.apply(n, m.resign(self.now, HOLD_OFF, 2.0))
        elif m.state is State.BACKUP and not (set(m.inhibitions) - guard.PREEMPT_OK):
            peer = m.last_peer
            if peer is not None and self.now - peer.seen_at <= m.master_down_interval:
                self.apply(n, m.take_over(self.now, 254, HOLD_OFF, guard.PREEMPT_OK))

    def heal(self) -> None:
        for n in self.nodes:
            n.svc = n.repl = True
            n.frozen_until = 0.0
            self.power_on(n)
            if n.daemon is None:
                self.start_daemon(n)

    def serving(self) -> list[Node]:
        return [
            n
            for n in self.nodes
            if n.alive
            and "vip" in n.kernel
            and n.drbd.role == "Primary"
            and not n.drbd.frozen_io
            and n.daemon is not None
            and n.daemon.machine.state is State.MASTER
        ]

    def refusal(self) -> str | None:
        """A documented reason for nobody to serve (README: latches, no UpToDate copy)."""
        if any(n.latches for n in self.nodes):
            return "latch"
        if not any(n.drbd.disk == "UpToDate" for n in self.nodes):
            return "no_uptodate_copy"
        return None


# ---- the random schedule ---------------------------------------------------------------------

node = st.integers(0, 1)
actions = st.one_of(
    st.tuples(st.just("run"), st.floats(0.1, 8.0)),
    st.tuples(st.just("power_off"), node),
    st.tuples(st.just("power_on"), node),
    st.tuples(st.just("kill_drbdha"), node),
    st.tuples(st.just("stop_drbdha"), node),
    st.tuples(st.just("cut"), node, st.sampled_from(["svc", "repl"])),
    st.tuples(st.just("uncut"), node, st.sampled_from(["svc", "repl"])),
    st.tuples(st.just("freeze"), node, st.floats(0.5, 8.0)),
    st.tuples(st.just("disk_fail"), node),
    st.tuples(st.just("force_failover"), node),
    st.tuples(st.just("drbdadm_busy"), node, st.floats(1.0, 60.0)),
    st.tuples(st.just("idle"), st.floats(0.5, 20.0)),
)


def act(c: Cluster, action: tuple) -> None:
    kind, *args = action
    n = c.nodes[args[0]] if args and kind not in ("run", "idle") else None
    match kind:
        case "run":
            c.run(args[0])
        case "power_off":
            c.power_off(n)
        case "power_on":
            c.power_on(n)
        case "kill_drbdha":
            c.kill_drbdha(n)
        case "stop_drbdha":
            c.stop_drbdha(n)
        case "cut":
            setattr(n, args[1], False)
        case "uncut":
            setattr(n, args[1], True)
        case "freeze":
            # Only with drbdha running there: a node frozen while its drbdha is down (a
            # crash, a restart) cannot know it was stopped, and DRBD's handler alone takes a
            # silent peer for dead (README, "What two nodes cannot tell apart").
            if n.alive and n.daemon is not None:
                n.frozen_until = c.now + args[1]
                c.run(args[1])
        case "disk_fail":
            if n.alive:
                n.drbd.disk, n.drbd.sync_until = "Diskless", None
        case "force_failover":
            c.force_failover(n)
        case "drbdadm_busy":
            n.drbd.busy_until = c.now + args[1]
        case "idle":
            c.idle_until = c.now + args[0]


# What lost data before its fix, always tried (docs/reliability.md, findings 1, 2, 6-8, 10).
KNOWN = (
    [("freeze", 0, 4.4375), ("power_off", 1)],
    [("freeze", 1, 2.0), ("freeze", 0, 2.0)],
    [("freeze", 1, 6.0), ("power_off", 0)] + [("run", 8.0)] * 5,
    [("freeze", 1, 6.0), ("run", 0.5), ("power_off", 0)] + [("run", 8.0)] * 5,
    # the outdate after the stall fails for longer than the stall window
    [("drbdadm_busy", 1, 45.0), ("freeze", 1, 6.0), ("power_off", 0)] + [("run", 8.0)] * 5,
    # finding 7: the master cut off on both networks, the peer takes over; the service
    # network heals first
    [("cut", 0, "svc"), ("cut", 0, "repl"), ("run", 8.0), ("uncut", 0, "svc"), ("run", 8.0)],
    # finding 8: the master's replication link and the backup's service link, cut apart
    [("cut", 0, "repl"), ("run", 0.3), ("cut", 1, "svc"), ("run", 8.0), ("run", 8.0)],
    # finding 10: finding 7's cut with the client idle until 0.1 s before the heal, so that
    # the watch had not looked since it came to node2
    [
        ("cut", 0, "svc"),
        ("cut", 0, "repl"),
        ("idle", 12.3),
        ("run", 12.4),
        ("uncut", 0, "svc"),
        ("uncut", 0, "repl"),
        ("run", 8.0),
    ],
)


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None)
@given(schedule=st.lists(actions, min_size=1, max_size=12))
@example(schedule=KNOWN[0])
@example(schedule=KNOWN[1])
@example(schedule=KNOWN[2])
@example(schedule=KNOWN[3])
@example(schedule=KNOWN[4])
@example(schedule=KNOWN[5])
@example(schedule=KNOWN[6])
@example(schedule=KNOWN[7])
def test_random_faults_lose_nothing_and_heal_to_one_server(schedule: list[tuple]) -> None:
    c = Cluster()
    c.run(6.0)  # node1 is master and serves
    assert [n.index for n in c.serving()] == [0]
    for action in schedule:
        act(c, action)
    c.heal()
    c.run(SETTLE)
    serving = c.serving()
    why = c.refusal()
    event(f"after the heal: {len(serving)} serving, refusal {why}")
    for d in sorted(c.documented):
        event(d)
    if why is None:
        assert len(serving) == 1, f"{len(serving)} nodes serve after the heal"
    if c.cut_off_alive:
        return  # the README's two-node case: the admin chooses the copy (a latch holds)
    holders = [n for n in c.nodes if n.alive and "vip" in n.kernel]
    assert len(holders) <= 1, "two VIP holders after the heal"
    for n in serving:
        missing = c.acked - n.drbd.data
        assert not missing, f"node{n.index + 1} serves without {brief(missing)}"
