"""One VRRP instance at run time: its Machine, its chain runner and the I/O that carries out
the machine's effects.

The machine decides; this module only does what the effects say, in the order given, and
synchronously: adverts and GARPs go out at once, and chain work is handed to the runner
(`want()` returns at once), so no effect ever waits for storage. Encoded adverts and ARP/NA
frames are cached, so a steady-state advert costs one sendmsg and no encoding.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from drbdha.chain.runner import Runner
from drbdha.clock import MonotonicClock
from drbdha.config import StorageConfig, VrrpInstanceConfig
from drbdha.daemon.advert_auth import AdvertAuth, split
from drbdha.errors import MalformedPacket
from drbdha.metrics import Metrics, fast_inc
from drbdha.net.frame_sender import FrameSender
from drbdha.net.frames import build_garp, build_unsolicited_na
from drbdha.net.vip import VipStep
from drbdha.net.vrrp_socket import Prepared, Received, VrrpSocket
from drbdha.status import PeerStatus
from drbdha.vrrp import auth_hmac, packet
from drbdha.vrrp.constants import PRIORITY_RESIGN, VRRP_GROUP_V4, VRRP_GROUP_V6
from drbdha.vrrp.events import (
    Activate,
    Deactivate,
    Effect,
    InvalidAdvert,
    SendAdvert,
    SendGarp,
    Transition,
)
from drbdha.vrrp.machine import Machine

IPAddress = IPv4Address | IPv6Address
LOG_REPEAT_INTERVAL = 10.0  # seconds between repeated logs of the same invalid-advert reason


@dataclass
class Instance:
    cfg: VrrpInstanceConfig
    sock: VrrpSocket
    frames: FrameSender
    metrics: Metrics
    log: Any
    storage: StorageConfig | None = None
    wall: Callable[[], float] = MonotonicClock().wall  # auth_hmac's sequence is wall time
    machine: Machine = field(init=False)
    auth: AdvertAuth | None = field(init=False, default=None)  # [vrrp_instance.auth_hmac]
    runner: Runner = field(init=False)  # set by the daemon, which owns the task
    scheduled: float | None = None  # the deadline this instance has in the daemon's heap
    takeover_started: float | None = None  # when the machine last asked for the chain
    deferred_logged: bool = False  # machine.takeover_deferred as last logged
    # priority -> [(encoded advert, sendmsg arguments, destination)], built on first use
    _adverts: dict[int, list[tuple[bytes, Prepared, IPAddress]]] = field(default_factory=dict)
    _garp_frames: list[bytes] = field(default_factory=list)
    _log_quiet_until: dict[str, float] = field(default_factory=dict)
    # the last datagram decode() accepted, and its advert (see receive)
    _last_key: tuple[Any, ...] | None = None
    _last_advert: packet.Advertisement | None = None

    def __post_init__(self) -> None:
        self.machine = Machine(self.cfg)
        self._set_auth()
        self.log = self.log.bind(instance=self.cfg.name, vrid=self.cfg.vrid)
        self.metrics.state.labels(self.cfg.name).state(self.machine.state.value)
        # Export the per-instance counters from the start, at 0: a backup that never sent must
        # scrape as adverts_sent_total 0 (as `drbdha status` says), not as a missing series
        # that rate() and dashboards read as "no data".
        # The children's inc() are kept: labels() is a dict lookup under a lock, and the
        # child's inc() checks itself on every call (metrics.fast_inc), on the hot path.
        m, name = self.metrics, self.cfg.name
        self._sent = fast_inc(m.adverts_sent.labels(name))
        self._received = fast_inc(m.adverts_received.labels(name))
        self._zero_sent = fast_inc(m.priority_zero_sent.labels(name))
        self._zero_received = fast_inc(m.priority_zero_received.labels(name))
        self.metrics.priority.labels(self.cfg.name).set(self.machine.effective_priority)

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def destinations(self) -> tuple[IPAddress, ...]:
        if self.cfg.unicast_peers:
            return self.cfg.unicast_peers
        return (VRRP_GROUP_V4,) if self.cfg.family == 4 else (VRRP_GROUP_V6,)

    def set_local_address(self, address: IPAddress | None) -> None:
        """The source of our adverts (primary IPv4 address or IPv6 link-local)."""
        if address != self.machine.local_address:
            self.machine.local_address = address
            self._adverts.clear()

    # ---- receive -------------------------------------------------------------------------

    def receive(self, rx: Received, now: float) -> list[Effect]:
        # A master sends the same bytes every interval: decode() is a pure function of what
        # it is given, so the last good result is reused for an identical message (and a
        # backup at 10 ms parses its master once instead of 100 times a second). With
        # auth_hmac the trailer differs in every advert and is checked first, each time
        # (an identical datagram is a replay); the cache holds the message alone.
        message, trailer = rx.payload, None
        if self.auth is not None:
            message, trailer = split(rx.payload, self.cfg.version, rx.src.version)
            checked = self.auth.check(message, trailer, rx.src, int(self.wall() * 1e9))
            if checked.outcome != auth_hmac.OK:
                self._refused(checked, rx.src, now)
                return []
            skew = checked.skew
            if skew is not None and 2 * abs(skew) > self.auth.verifier.window:
                self._skewed(skew, rx.src, now)
        key = (message, rx.src, rx.dst, rx.hop_limit, self.cfg.version)
        if key == self._last_key and self._last_advert is not None:
            advert = self._last_advert
        else:
            try:
                decoded = packet.decode(
                    message,
                    version=self.cfg.version,
                    src=rx.src,
                    dst=rx.dst,
                    hop_limit=rx.hop_limit,
                    # IPv6: the kernel's checksum covers the trailer too (keepalived's).
                    checksummed=rx.payload if trailer and rx.src.version == 6 else None,
                )
            except MalformedPacket as e:
                self._invalid(e.reason, dropped=True, now=now, src=rx.src, detail=e.detail)
                return []
            advert = decoded.advert
            self._last_key, self._last_advert = key, advert
        self._received(1)
        if advert.priority == PRIORITY_RESIGN:
            self._zero_received(1)
        return self.machine.receive(advert, rx.src, now)

    # ---- effects -------------------------------------------------------------------------

    def execute(self, effects: list[Effect], now: float) -> bool:
        """Carry out `effects` in order, without waiting for anything; True if the state
        changed."""
        transitions: list[Transition] = []
        for effect in effects:
            match effect:
                case SendAdvert(priority):
                    self._send_advert(priority, now)
                case Transition():
                    # Logged and counted after the packets are out: a takeover's first advert
                    # should not wait for a log line (keepalived sends first too).
                    transitions.append(effect)
                case Activate():
                    self.takeover_started = now
                    self.runner.want(True)
                case Deactivate():
                    self.takeover_started = None
                    self.runner.want(False)
                case SendGarp(reason):
                    if self.vip_up:
                        self.send_garp(reason)
                case InvalidAdvert(reason, dropped):
                    self._invalid(reason, dropped=dropped, now=now)
        for t in transitions:
            self._transition(t, now)
        return bool(transitions)

    @property
    def vip_up(self) -> bool:
        return self.runner.step_up(VipStep.name)

    def reconfigure(self, cfg: VrrpInstanceConfig) -> None:
        """Apply a reloaded configuration that keeps the instance's identity (daemon.py
        decides which keys qualify); encoded adverts are rebuilt on next use."""
        self.cfg = cfg
        self.machine.reconfigure(cfg)
        self._set_auth()
        self._adverts.clear()
        self._garp_frames.clear()
        self.metrics.priority.labels(self.name).set(self.machine.effective_priority)

    def peer_status(self, now: float) -> PeerStatus | None:
        peer = self.machine.last_peer
        if peer is None:
            return None
        return PeerStatus(
            address=str(peer.address),
            priority=peer.priority,
            last_seen_age_s=round(max(0.0, now - peer.seen_at), 3),
        )

    def warnings(self) -> list[str]:
        out = []
        if self.machine.local_address is None:
            out.append(f"no source address on {self.cfg.interface}")
        return out

    def _set_auth(self) -> None:
        """From the configuration's keys (read by config.load); a reload keeps the replay
        marks and our sequence."""
        auth = self.cfg.auth_hmac
        if auth is None:
            self.auth = None
            return
        keys = {k: v for k, v in auth.keys if isinstance(v, bytes)}
        self.auth = AdvertAuth.build(self.cfg, keys, self.auth)

    def _send_advert(self, priority: int, now: float) -> None:
        src = self.machine.local_address
        if src is None:
            return  # no source address yet: the machine is in FAULT for it soon
        encoded = self._adverts.get(priority)
        if encoded is None:
            encoded = self._adverts[priority] = self._encode(priority, src)
        trailer = b""
        if self.auth is not None:
            # Signed once per advert: one sequence number for every destination (the tag
            # leaves out the checksum, the only byte that differs between them).
            message = encoded[0][0]
            trailer = self.auth.sign(message, src, int(self.wall() * 1e9))[len(message) :]
        for payload, prepared, dst in encoded:
            try:
                self.sock.send_prepared(payload + trailer, prepared)
            except OSError as e:
                # A firewall's EPERM would otherwise log 100 lines a second at 10 ms adverts.
                if self._may_log("send_failed", now):
                    self.log.warning("vrrp.send_failed", dst=str(dst), error=str(e))
        self._sent(1)
        if priority == PRIORITY_RESIGN:
            self._zero_sent(1)

    def _encode(self, priority: int, src: IPAddress) -> list[tuple[bytes, Prepared, IPAddress]]:
        cfg = self.cfg
        interval = (
            round(cfg.advert_interval) if cfg.version == 2 else round(cfg.advert_interval * 100)
        )
        advert = packet.Advertisement(
            cfg.version, cfg.vrid, priority, interval, tuple(v.ip for v in cfg.virtual_ipaddress)
        )
        mode: packet.ChecksumMode = "rfc9568" if cfg.checksum_mode == "rfc9568" else "pseudo"
        return [
            (packet.encode(advert, src, dst, mode), self.sock.prepare(src, dst), dst)
            for dst in self.destinations
        ]

    def _transition(self, t: Transition, now: float) -> None:
        self.metrics.transitions.labels(self.name, t.old.value, t.new.value, t.reason).inc()
        self.metrics.state.labels(self.name).state(t.new.value)
        self.metrics.priority.labels(self.name).set(self.machine.effective_priority)
        self._log_quiet_until.clear()  # RFC 9568: error logs are rate-limited per state
        self.log.info(
            "vrrp.transition",
            old=t.old.value,
            new=t.new.value,
            reason=t.reason,
            monotonic=round(now, 6),
        )

    def send_garp(self, reason: str) -> None:
        if not self._garp_frames:
            mac = self.frames.mac
            self._garp_frames = [
                build_garp(mac, v.ip) if v.version == 4 else build_unsolicited_na(mac, v.ip)
                for v in self.cfg.virtual_ipaddress
            ]
        try:
            for _ in range(self.cfg.garp_master_repeat):
                for frame in self._garp_frames:
                    self.frames.send(frame)
        except OSError as e:
            self.log.warning("garp.send_failed", reason=reason, error=str(e))
            return
        self.metrics.garp_bursts.labels(self.name, reason).inc()
        self.log.debug("garp.sent", reason=reason, count=self.cfg.garp_master_repeat)

    def _may_log(self, what: str, now: float) -> bool:
        """At most one log line per `what` every LOG_REPEAT_INTERVAL (reset on transitions)."""
        if now < self._log_quiet_until.get(what, float("-inf")):
            return False
        self._log_quiet_until[what] = now + LOG_REPEAT_INTERVAL
        return True

    def _refused(self, checked: auth_hmac.Checked, src: IPAddress, now: float) -> None:
        """An advert auth_hmac does not let through (keepalived's counters' reasons)."""
        self.metrics.auth_refused.labels(self.name, checked.outcome).inc()
        if self._may_log(f"auth_{checked.outcome}", now):
            self.log.warning(
                "vrrp.auth_refused",
                reason=checked.outcome,
                src=str(src),
                key_id=checked.key_id,
                skew_s=checked.skew,
            )

    def _skewed(self, skew: int, src: IPAddress, now: float) -> None:
        """Accepted, but the sender's clock is more than half the window away from ours
        (keepalived warns too): a little more and its adverts are dropped as stale."""
        if self._may_log("auth_skew", now):
            assert self.auth is not None
            self.log.warning(
                "vrrp.auth_clock_skew",
                src=str(src),
                skew_s=skew,
                window_s=self.auth.verifier.window,
                hint="run NTP on both nodes",
            )

    def _invalid(self, reason: str, *, dropped: bool, now: float, **fields: Any) -> None:
        self.metrics.invalid_adverts.labels(self.name, reason).inc()
        if self._may_log(reason, now):
            fields = {k: str(v) for k, v in fields.items() if v not in ("", None)}
            self.log.warning("vrrp.invalid_advert", reason=reason, dropped=dropped, **fields)


def family_of(cfg: VrrpInstanceConfig) -> int:
    return socket.AF_INET if cfg.family == 4 else socket.AF_INET6
