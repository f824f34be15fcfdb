"""What drbdha makes of a resource's DRBD options (drbd_config.py reads them).

Rules:
- findings() is pure: an "error" makes check-config exit 2, and check-config is the unit's
  ExecStartPre, so errors are kept to settings that lose data or defeat a takeover.
- Every variant (a connection or volume with values of its own) is checked.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Final, Literal

from drbdha.resources.drbd_config import DrbdOptions
from drbdha.resources.repl_watch import DEAD_AFTER

# ---- findings ------------------------------------------------------------------------------

Level = Literal["error", "warning", "info"]
LEVELS: Final[tuple[Level, ...]] = ("error", "warning", "info")


@dataclass(frozen=True, slots=True)
class Finding:
    level: Level
    key: str
    """The DRBD option the finding is about."""
    message: str
    advice: str = ""


def findings(
    opts: DrbdOptions,
    *,
    master_down_interval: float,
    advert_interval: float,
    promote_timeout: float | None = None,
    fence_timeout: float | None = None,
    heartbeat: float = 0.0,
) -> list[Finding]:
    """What drbdha makes of `opts`, errors first. `heartbeat`: the storage section's
    replication_heartbeat (0: off). `fence_timeout` is the [peer] section's
    (None: drbdha.toml has none, so `drbdha fence-peer` cannot work). Every variant (a
    connection and volume with values of their own) is checked; a finding that not all of
    them share names the connections or volumes it holds for."""
    paths = opts.variants or (("", "", opts),)
    found = {
        (c, v): _check(
            o,
            master_down_interval,
            advert_interval,
            promote_timeout,
            fence_timeout,
            heartbeat=heartbeat,
        )
        for c, v, o in paths
    }
    unique = list(dict.fromkeys(f for fs in found.values() for f in fs))
    out = []
    for f in unique:
        scope = _scope(found, {path for path, fs in found.items() if f in fs})
        out.append(dataclasses.replace(f, message=f"{scope}: {f.message}") if scope else f)
    return sorted(out, key=lambda f: LEVELS.index(f.level))


def _scope(paths: dict[tuple[str, str], list[Finding]], where: set[tuple[str, str]]) -> str:
    """The shortest name for the (connection, volume) grid cells in `where`: nothing when it
    is all of them, the connections (or volumes) when it is whole rows (or columns)."""
    if len(where) == len(paths):
        return ""
    conns = list(dict.fromkeys(c for c, _ in paths))
    vols = list(dict.fromkeys(v for _, v in paths))
    rows = [c for c in conns if all((c, v) in where for v in vols)]
    if where == {(c, v) for c in rows for v in vols}:
        return ", ".join(rows)
    cols = [v for v in vols if all((c, v) in where for c in conns)]
    if where == {(c, v) for c in conns for v in cols}:
        return ", ".join(v or "other volumes" for v in cols)
    return "; ".join(", ".join(x for x in p if x) for p in paths if p in where)


def _check(
    o: DrbdOptions,
    mdi: float,
    advert: float,
    promote_timeout: float | None,
    fence_timeout: float | None,
    *,
    heartbeat: float = 0.0,
) -> list[Finding]:
    return [
        *_on_io_error(o),
        *_fencing(o, advert, fence_timeout, heartbeat),
        *_peer_loss(o, mdi, advert, promote_timeout),
        *_timeout(o),
        *_after_sb(o),
        *_quorum(o),
        *_replication(o),
    ]


def _number(o: DrbdOptions, option: str) -> float | None:
    try:
        return float(o.get(option) or "")
    except ValueError:
        return None  # drbdadm validated it; a unit suffix we do not know is left alone


def _on_io_error(o: DrbdOptions) -> list[Finding]:
    out: list[Finding] = []
    policy = o.get("on-io-error")
    if policy == "pass_on":
        out.append(
            Finding(
                "warning",
                "on-io-error",
                "pass_on: a failing disk goes Inconsistent and I/O is retried on the peer; the "
                "disk never goes Failed/Diskless, so drbdha's disk-loss guard (which watches for "
                "the detach) does not see it and the Primary goes on serving from the peer's "
                "disk alone (metadata errors still detach)",
                "set on-io-error detach; (the default since 8.4): drbdha then hands over to the "
                "UpToDate peer and latches the failed disk",
            )
        )
    elif policy == "call-local-io-error":
        handler = o.local_io_error_handler
        out.append(
            Finding(
                "info",
                "on-io-error",
                f"call-local-io-error: runs the local-io-error handler ({handler}) first, then "
                "detaches as detach does, and drbdha sees the detach; a handler that reboots or "
                "halts the node makes it a node failure, which VRRP handles"
                if handler
                else "call-local-io-error without a local-io-error handler: it detaches as "
                "detach does, and drbdha sees the detach",
                "" if handler else "say on-io-error detach; if that is what you mean",
            )
        )
    disk_timeout = _number(o, "disk-timeout")
    if disk_timeout:
        out.append(
            Finding(
                "warning",
                "disk-timeout",
                f"disk-timeout {o.disk_timeout} force-detaches a hung disk after "
                f"{disk_timeout / 10:g} s; the DRBD manual calls this dangerous: it may lead to "
                "a kernel panic (late DMA into re-used pages)",
                "leave disk-timeout at 0 (the default)",
            )
        )
    return out


_PACEMAKER_HANDLERS: Final = re.compile(r"crm-fence-peer|stonith_admin-fence-peer")
DRBDHA_HANDLER: Final = re.compile(r"\bdrbdha\b.*\bfence-peer\b")
RECOMMENDED: Final = (
    'fencing resource-and-stonith; and handlers { fence-peer "/usr/bin/drbdha fence-peer"; }, '
    "with a [peer] section in drbdha.toml (README: Fencing)"
)


def unfenced_window(o: DrbdOptions, advert: float, heartbeat: float) -> str:
    """The window an unfenced resource leaves, in the words check-config and status use:
    from the moment the Primary's DRBD writes alone after a replication link failure (at
    the earliest `timeout` for a write in flight, or ping-int + ping-timeout) until drbdha
    has this Secondary outdated (resources/repl_watch.py: the heartbeat's silence, one more
    interval, an advert; without the heartbeat, DRBD's own ping timers and an advert)."""
    ping = (_number(o, "ping-int") or 10.0) + (_number(o, "ping-timeout") or 5.0) / 10
    alone = min((_number(o, "timeout") or 60.0) / 10, ping)
    if heartbeat > 0:
        ours = (DEAD_AFTER + 1) * heartbeat + advert
        how = (
            f"drbdha sees the replication heartbeat ({heartbeat:g} s) silent while the "
            f"Primary still advertises and outdates this copy within {ours:.2g} s"
        )
    else:
        ours = ping + advert
        how = (
            f"with replication_heartbeat = 0, drbdha outdates this copy at the first advert "
            f"after this DRBD notices the cut, within {ours:.2g} s"
        )
    window = ours - alone
    said = (
        f"writes the Primary acknowledges in the {window:.2g} s between are lost if it dies then"
        if window > 0
        else "no acknowledged write is at risk on this configuration"
    )
    return (
        f"unfenced: after a replication link failure {how} (plus drbdadm's own time); the "
        f"Primary's DRBD writes alone after {alone:g} s at the earliest (timeout, or "
        f"ping-int + ping-timeout): {said}"
    )


QUORUM_NOTE = "DRBD quorum keeps a minority partition from writing"


def quorum_window(o: DrbdOptions, advert: float, heartbeat: float) -> tuple[str, bool]:
    """What quorum alone leaves open, in the words check-config and status use, and whether
    a write is at risk. After a replication link failure both disk nodes keep quorum
    through the tiebreaker. The Primary's DRBD writes alone from `timeout` (a write in
    flight) or ping-int + ping-timeout; DRBD outdates the Secondary only when its own DRBD
    notices the loss (ping-int + ping-timeout: nothing in flight) and its lost-peer exchange
    through the tiebreaker finds the Primary (drbd_state.c, twopc_after_lost_peer). If the
    Primary dies in between, the exchange finds no Primary and the Secondary's copy, which
    lacks those writes, is UpToDate again (seen in the lab). drbdha's replication heartbeat
    closes that window as it does unfenced (resources/repl_watch.py)."""
    text = unfenced_window(o, advert, heartbeat).removeprefix("unfenced: ")
    return f"without a fence-peer handler, {text}", "no acknowledged write" not in text


def fencing_summary(
    o: DrbdOptions, advert: float, fence_timeout: float | None, heartbeat: float = 0.0
) -> dict[str, str | None]:
    """How `o` is fenced, for `drbdha status` (status.FencingStatus): as its connection to
    the peer with a disk is (with a tiebreaker, fencing may be set on that one alone)."""
    o = next((v for _, _, v in o.variants if not v.to_diskless), o)
    policy, handler = o.get("fencing"), o.fence_peer_handler
    fenced = policy in ("resource-only", "resource-and-stonith") and handler is not None
    quorum = o.get("quorum") not in (None, "off")
    if policy == "dont-care" and quorum:
        mode, note = "quorum", f"{QUORUM_NOTE}; {quorum_window(o, advert, heartbeat)[0]}"
    elif fenced and handler and DRBDHA_HANDLER.search(handler) and fence_timeout is None:
        mode = "failing"
        note = "drbdha fence-peer without a [peer] section: every call fails (check-config)"
    elif fenced and handler and DRBDHA_HANDLER.search(handler) and quorum:
        mode = "quorum_and_handler"
        note = f"{QUORUM_NOTE}; the handler outdates the peer at a replication link failure"
    elif fenced and handler and DRBDHA_HANDLER.search(handler):
        mode = "handler"
        note = (
            "I/O is held at a replication link failure until the peer is outdated"
            if policy == "resource-and-stonith"
            else "resource-only: I/O goes on while the handler runs"
        )
    elif fenced:
        mode, note = "other_handler", f"fenced by {handler}"
    else:
        mode, note = "unfenced", unfenced_window(o, advert, heartbeat)
    return {"mode": mode, "policy": policy, "handler": handler, "note": note}


def _fencing(
    o: DrbdOptions, advert: float, fence_timeout: float | None, heartbeat: float
) -> list[Finding]:
    if o.to_diskless:
        return []  # DRBD never fences a diskless peer (a tiebreaker): nothing to advise
    policy = o.get("fencing")
    handler = o.fence_peer_handler
    if policy == "dont-care":
        if o.get("quorum") != "off":
            text, at_risk = quorum_window(o, advert, heartbeat)
            return [
                Finding(
                    "warning" if at_risk else "info",
                    "fencing",
                    f"dont-care with quorum: {text}",
                    "keep replication_heartbeat on and DRBD's timeout above its reaction"
                    if at_risk
                    else "",
                )
            ]
        never = "; the fence-peer handler is never called" if handler else ""
        return [
            Finding(
                "warning",
                "fencing",
                f"dont-care (the default): {unfenced_window(o, advert, heartbeat)}{never}",
                f"set {RECOMMENDED}",
            )
        ]
    if policy not in ("resource-only", "resource-and-stonith"):
        return []
    stonith = policy == "resource-and-stonith"
    level: Level = "error" if stonith else "warning"
    consequence = (
        "a Primary that loses the peer freezes its I/O until the handler succeeds, so every "
        "replication link failure hangs NFS until `drbdadm resume-io`"
        if stonith
        else "promoting a Consistent disk (after both nodes restarted) with the peer unreachable "
        "is refused"
    )
    out: list[Finding] = []
    if handler is None:
        out.append(
            Finding(
                level,
                "fence-peer",
                f"fencing {policy} without a fence-peer handler: drbdadm then answers 0, which "
                f"DRBD logs as 'fence-peer helper broken' and counts as fencing failed: "
                f"{consequence}",
                f"add {RECOMMENDED}",
            )
        )
    elif _PACEMAKER_HANDLERS.search(handler):
        out.append(
            Finding(
                level,
                "fence-peer",
                f"{handler} works through Pacemaker (cibadmin, crm_mon, stonith_admin), which "
                f"drbdha replaces: without Pacemaker it cannot fence and fails: {consequence}",
                f"use {RECOMMENDED}",
            )
        )
    elif DRBDHA_HANDLER.search(handler) and fence_timeout is None:
        out.append(
            Finding(
                level,
                "fence-peer",
                f"{handler} needs a [peer] section in drbdha.toml (the peer's service address "
                f"and the shared secret); without one it always fails: {consequence}",
                "add [peer] with address and secret_file (etc/drbdha.toml)",
            )
        )
    elif stonith:
        frozen = (
            f", or for fence_timeout ({fence_timeout:g} s) when the peer is down"
            if DRBDHA_HANDLER.search(handler) and fence_timeout is not None
            else ""
        )
        out.append(
            Finding(
                "info",
                "fencing",
                f"resource-and-stonith: a Primary that loses the replication link freezes its "
                f"I/O until {handler} has outdated the peer{frozen}; if it fails, I/O stays "
                "frozen until `drbdadm resume-io`",
            )
        )
    if not stonith:
        out.append(
            Finding(
                "warning",
                "fencing",
                "resource-only: the Primary goes on writing while the fence-peer handler runs, "
                "so writes it acknowledges before the peer is outdated can be missing from a "
                "copy that may still be promoted",
                "set fencing resource-and-stonith; (I/O waits for the handler, which takes a "
                "round trip, or fence_timeout when the peer is down)",
            )
        )
    return out


def _peer_loss(
    o: DrbdOptions, mdi: float, advert: float, promote_timeout: float | None
) -> list[Finding]:
    ping_int, ping_timeout = _number(o, "ping-int"), _number(o, "ping-timeout")
    if ping_int is None or ping_timeout is None:
        return []
    # The control stream is idle for ping-int, then a ping waits ping-timeout for its ack
    # ("PingAck did not arrive in time", LINBIT/drbd drbd/drbd_receiver.c set_rcvtimeo()).
    detect = ping_int + ping_timeout / 10
    extra = detect - mdi
    said = (
        f"DRBD notices a dead peer within {detect:g} s (ping-int {ping_int:g} s + "
        f"ping-timeout {ping_timeout / 10:g} s); VRRP declares the master down after "
        f"{mdi:.2f} s (Master_Down_Interval at {advert:g} s adverts)"
    )
    out: list[Finding] = []
    if extra <= 0:
        out.append(Finding("info", "ping-int", f"{said}: DRBD adds nothing to a takeover"))
    elif ping_int > 1 or ping_timeout > 5:
        out.append(
            Finding(
                "warning",
                "ping-int",
                f"{said}; drbdha promotes only once DRBD sees the peer gone, so a takeover "
                f"takes up to {extra:.2f} s longer than VRRP alone",
                "set ping-int 1; and ping-timeout 5; (0.5 s) in the net section: DRBD then "
                "notices within 1.5 s",
            )
        )
    else:
        out.append(
            Finding(
                "info",
                "ping-int",
                f"{said}: a takeover waits up to {extra:.2f} s for DRBD; ping-int cannot go "
                "below 1 s",
            )
        )
    if promote_timeout is not None and extra >= promote_timeout:
        out.append(
            Finding(
                "warning",
                "ping-int",
                f"DRBD may see the dead peer {extra:.2f} s after VRRP does, but promote_timeout "
                f"is {promote_timeout:g} s: drbdha stops waiting for the peer to leave Primary "
                "and the takeover fails",
                "lower ping-int and ping-timeout, or raise promote_timeout in [storage]",
            )
        )
    return out


def _timeout(o: DrbdOptions) -> list[Finding]:
    timeout = _number(o, "timeout")
    limits = {name: _number(o, name) for name in ("ping-int", "connect-int")}
    if timeout is None:
        return []
    over = [f"{n} {v:g} s" for n, v in limits.items() if v is not None and timeout / 10 >= v]
    if not over:
        return []
    lowest = min(v for v in limits.values() if v is not None)
    return [
        Finding(
            "warning",
            "timeout",
            f"timeout {timeout:g} ({timeout / 10:g} s) is not lower than {' and '.join(over)}; "
            "the DRBD manual says it must be lower than connect-int and ping-int (DRBD itself "
            "does not check)",
            f"set timeout {max(1, int(lowest * 10) - 1)}; or lower (tenths of a second) in the "
            "net section",
        )
    ]


# after-sb-0pri policies that resolve a split brain without losing a write, and those that
# throw away the writes of one node (drbdsetup-options.xml, after-sb-0pri).
_SAFE_0PRI: Final = frozenset({"disconnect", "discard-zero-changes"})
_DISCARD_WHY: Final = (
    "a split brain in drbdha's setup means both nodes were master and Primary and NFS clients "
    "were told their writes on each were done; resolving it automatically throws one node's "
    "writes away, where drbdha latches the split brain for an operator to decide"
)


def _after_sb(o: DrbdOptions) -> list[Finding]:
    p0 = o.get("after-sb-0pri") or "disconnect"
    out: list[Finding] = []
    if p0 == "discard-zero-changes":
        out.append(
            Finding(
                "info",
                "after-sb-0pri",
                "discard-zero-changes resolves a split brain only when one node wrote nothing "
                "since; no write is lost, otherwise it disconnects",
            )
        )
    elif p0 not in _SAFE_0PRI:
        out.append(
            Finding(
                "error", "after-sb-0pri", f"{p0}: {_DISCARD_WHY}", "set after-sb-0pri disconnect;"
            )
        )
    for key in ("after-sb-1pri", "after-sb-2pri"):
        policy = o.get(key) or "disconnect"
        if policy == "disconnect":
            continue
        if policy in ("discard-secondary", "violently-as0p") or p0 not in _SAFE_0PRI:
            why = (
                "the DRBD manual says violently-as0p can crash the Primary and should not be used"
                if policy == "violently-as0p"
                else _DISCARD_WHY
            )
            out.append(Finding("error", key, f"{policy}: {why}", f"set {key} disconnect;"))
        else:  # consensus / call-pri-lost-after-sb follow a safe after-sb-0pri
            out.append(
                Finding(
                    "info",
                    key,
                    f"{policy} takes after-sb-0pri's decision ({p0}), which loses no write",
                    f"say {key} disconnect; if that is what you mean" if p0 == "disconnect" else "",
                )
            )
    return out


def _quorum(o: DrbdOptions) -> list[Finding]:
    quorum = o.get("quorum") or "off"
    if quorum == "off":
        return []
    out: list[Finding] = []
    needs_both = quorum in ("majority", "all") or (quorum.isdigit() and int(quorum) >= 2)
    if len(o.hosts) == 2 and needs_both:
        out.append(
            Finding(
                "warning",
                "quorum",
                f"quorum {quorum} with two nodes: the survivor of a crash is alone, has no "
                "quorum, and drbdha will not promote it (no_quorum), so a dead master is never "
                "taken over",
                "add a diskless tiebreaker node, or use fencing instead of quorum with two nodes",
            )
        )
    onq, ond = o.get("on-no-quorum"), o.get("on-no-data-accessible")
    if onq == "suspend-io":
        out.append(
            Finding(
                "warning",
                "on-no-quorum",
                f"quorum {quorum} with on-no-quorum suspend-io (the default): a Primary that "
                "loses quorum holds its I/O; drbdha resigns, and stopping nfsd and the "
                "unmount wait on that I/O until their timeouts: the release is stuck and "
                "on_demote_failure applies",
                "set on-no-quorum io-error; and on-no-data-accessible io-error; (as "
                "drbd-reactor's promoter does): writes fail at once and nothing is acknowledged",
            )
        )
    if onq != ond:
        out.append(
            Finding(
                "warning",
                "on-no-data-accessible",
                f"quorum {quorum} with on-no-quorum {onq} but on-no-data-accessible {ond}; the "
                "DRBD manual says to set them to the same value (on-no-data-accessible takes "
                "precedence)",
                f"set on-no-data-accessible {onq}; (or both to io-error)",
            )
        )
    return out


def _replication(o: DrbdOptions) -> list[Finding]:
    out: list[Finding] = []
    if o.get("allow-two-primaries") == "yes":
        out.append(
            Finding(
                "error",
                "allow-two-primaries",
                "drbdha runs DRBD single-primary: with two primaries allowed, a promotion while "
                "the peer is still Primary succeeds and two nodes mount one non-cluster file "
                "system (corruption)",
                "remove allow-two-primaries (the default is no)",
            )
        )
    protocol = o.get("protocol")
    if protocol == "A":
        out.append(
            Finding(
                "warning",
                "protocol",
                "A: a write completes once it is on the local disk and in the TCP send buffer; "
                "writes NFS clients were told are done can be lost when the Primary dies and the "
                "peer takes over",
                "set protocol C; (the default)",
            )
        )
        if o.get("fencing") == "resource-and-stonith":
            out.append(
                Finding(
                    "error",
                    "protocol",
                    "protocol A with fencing resource-and-stonith: the DRBD kernel refuses this "
                    "pair (ERR_STONITH_AND_PROT_A)",
                    "set protocol C;",
                )
            )
    elif protocol == "B":
        out.append(
            Finding(
                "warning",
                "protocol",
                "B: a write completes once the peer has received it, before it is on the peer's "
                "disk; when both nodes fail together (a power cut), acknowledged writes may be "
                "lost",
                "set protocol C; (the default)",
            )
        )
    return out
