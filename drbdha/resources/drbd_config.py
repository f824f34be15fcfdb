"""The effective DRBD configuration of a resource, and what drbdha makes of it.

`drbdha check-config` runs `drbdadm -d dump RES`. With --dry-run, drbdadm dump prints the
resource *expanded*: the common section's options merged in and resource options carried into
connections and volumes (drbd-utils user/v9/drbdadm_main.c: `if (!is_dump || dry_run ||
verbose) expand_common();`); a plain `dump RES` prints the resource as written and leaves
common out. --dry-run also skips the "IP ... not found on this host" check, which is DRBD's
business at run time, not ours here (verify_ips(): `dry_run == 1 && no_tty`). dump runs
nothing either way, needs no root and no kernel module.

Rules:
- parse_dump() is pure: the text of a dump in, the options as written (strings, None when
  absent) out. Options inherit common -> resource -> volume / connection; a resource whose
  volumes or connections set their own values gets one variant per distinct combination, and
  findings() checks each.
- DEFAULTS are what DRBD uses for an absent option; they are the same in 8.4 and 9 for every
  option here (quorum and on-no-quorum exist only in 9).
- findings() is pure: an "error" makes check-config exit 2, and check-config is the unit's
  ExecStartPre, so errors are kept to settings that lose data or defeat a takeover.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from drbdha.errors import DrbdhaError

DRBDADM_TIMEOUT: Final = 10.0  # seconds for one drbdadm dump

# DRBD's value for an absent option. Sources (the same numbers in both):
# - DRBD 9: LINBIT/drbd-headers linux/drbd_limits.h (DRBD_*_DEF) and drbd-utils
#   documentation/v9/drbdsetup-options.xml ("The default value is 10 seconds" for ping-int,
#   "0.5 seconds ... tenths of a second" for ping-timeout, "6 seconds" for timeout, ...).
# - DRBD 8.4: drbd-utils user/v84/linux/drbd_limits.h and documentation/v84/drbd.conf.xml.
# on-io-error: detach since 8.4 (EP_DETACH in both headers; the 8.3 users guide says pass_on
# "is the default for historical reasons"). A DRBD 8.4.11 kernel reports the same values
# (`drbdsetup show --show-defaults`, tests/data/drbd/drbd-8.4-facts.md).
DEFAULTS: Final[dict[str, str]] = {
    "on-io-error": "detach",  # DRBD_ON_IO_ERROR_DEF EP_DETACH
    "fencing": "dont-care",  # DRBD_FENCING_DEF FP_DONT_CARE
    "ping-int": "10",  # DRBD_PING_INT_DEF, seconds
    "ping-timeout": "5",  # DRBD_PING_TIMEO_DEF, tenths of a second
    "timeout": "60",  # DRBD_TIMEOUT_DEF, tenths of a second
    "connect-int": "10",  # DRBD_CONNECT_INT_DEF, seconds
    "after-sb-0pri": "disconnect",  # DRBD_AFTER_SB_0P_DEF ASB_DISCONNECT
    "after-sb-1pri": "disconnect",
    "after-sb-2pri": "disconnect",
    "quorum": "off",  # DRBD_QUORUM_DEF QOU_OFF (9 only)
    "on-no-quorum": "suspend-io",  # DRBD_ON_NO_QUORUM_DEF ONQ_SUSPEND_IO (9 only)
    "on-no-data-accessible": "io-error",  # DRBD_ON_NO_DATA_DEF OND_IO_ERROR
    "allow-two-primaries": "no",  # DRBD_ALLOW_TWO_PRIMARIES_DEF 0
    "protocol": "C",  # DRBD_PROTOCOL_DEF DRBD_PROT_C
    "disk-timeout": "0",  # DRBD_DISK_TIMEOUT_DEF 0: disabled
}

# DRBD option name -> DrbdOptions field. Names are unique across the net, disk, options and
# handlers sections, so one namespace holds them (8.4 puts fencing in disk, 9 in net).
FIELDS: Final[dict[str, str]] = {
    "on-io-error": "on_io_error",
    "fencing": "fencing",
    "fence-peer": "fence_peer_handler",
    "local-io-error": "local_io_error_handler",
    "ping-int": "ping_int",
    "ping-timeout": "ping_timeout",
    "timeout": "timeout",
    "connect-int": "connect_int",
    "after-sb-0pri": "after_sb_0pri",
    "after-sb-1pri": "after_sb_1pri",
    "after-sb-2pri": "after_sb_2pri",
    "quorum": "quorum",
    "on-no-quorum": "on_no_quorum",
    "on-no-data-accessible": "on_no_data_accessible",
    "allow-two-primaries": "allow_two_primaries",
    "protocol": "protocol",
    "disk-timeout": "disk_timeout",
}
_SECTIONS: Final = frozenset({"net", "disk", "options", "handlers"})


class DrbdConfigError(DrbdhaError):
    """drbdadm is missing, the resource is not defined for this host, or the dump is unreadable."""


@dataclass(frozen=True)
class DrbdOptions:
    """The options of one resource as written (None: absent, DRBD uses DEFAULTS). Units are
    DRBD's: ping-int and connect-int in seconds, ping-timeout and timeout in tenths."""

    resource: str
    on_io_error: str | None = None
    fencing: str | None = None
    fence_peer_handler: str | None = None
    local_io_error_handler: str | None = None
    ping_int: str | None = None
    ping_timeout: str | None = None
    timeout: str | None = None
    connect_int: str | None = None
    after_sb_0pri: str | None = None
    after_sb_1pri: str | None = None
    after_sb_2pri: str | None = None
    quorum: str | None = None
    on_no_quorum: str | None = None
    on_no_data_accessible: str | None = None
    allow_two_primaries: str | None = None
    protocol: str | None = None
    disk_timeout: str | None = None
    hosts: tuple[str, ...] = ()
    """Names of the `on HOST` (and `floating`) sections."""
    variants: tuple[tuple[str, str, DrbdOptions], ...] = ()
    """(connection, volume, options) for every connection x volume, when some connection or
    volume sets its own values ("connection vm/peer", "volume 0"); empty when none do."""

    def get(self, option: str) -> str | None:
        """The effective value of a DRBD option: as written, else DRBD's default."""
        value: str | None = getattr(self, FIELDS[option])
        return DEFAULTS.get(option) if value is None else value


# ---- parsing ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Stmt:
    name: str
    args: tuple[str, ...]
    block: tuple[_Stmt, ...] | None  # None: `name args;`, a tuple: `name args { ... }`


_TOKEN: Final = re.compile(r'\s+|#[^\n]*|"((?:[^"\\]|\\.)*)"|([{};])|([^\s{};"#]+)')


def _tokens(text: str) -> list[tuple[str, bool]]:
    """(text, is_punct) tokens; quoted strings lose their quotes and escapes."""
    out: list[tuple[str, bool]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise DrbdConfigError(f"cannot read drbdadm dump output at {text[pos : pos + 20]!r}")
        pos = m.end()
        quoted, punct, word = m.groups()
        if quoted is not None:
            out.append((re.sub(r"\\(.)", r"\1", quoted), False))
        elif punct is not None:
            out.append((punct, True))
        elif word is not None:
            out.append((word, False))
    return out


def _statements(tokens: list[tuple[str, bool]], i: int, *, top: bool) -> tuple[list[_Stmt], int]:
    stmts: list[_Stmt] = []
    while i < len(tokens):
        tok, punct = tokens[i]
        if punct and tok == "}":
            if top:
                raise DrbdConfigError("unbalanced '}' in drbdadm dump output")
            return stmts, i + 1
        if punct:
            raise DrbdConfigError(f"unexpected {tok!r} in drbdadm dump output")
        args: list[str] = []
        i += 1
        while i < len(tokens) and not tokens[i][1]:
            args.append(tokens[i][0])
            i += 1
        if i == len(tokens):
            raise DrbdConfigError(f"drbdadm dump output ends inside {tok!r}")
        if tokens[i][0] == "{":
            block, i = _statements(tokens, i + 1, top=False)
            stmts.append(_Stmt(tok, tuple(args), tuple(block)))
        elif tokens[i][0] == ";":
            stmts.append(_Stmt(tok, tuple(args), None))
            i += 1
        else:
            raise DrbdConfigError(f"unexpected '}}' after {tok!r} in drbdadm dump output")
    if not top:
        raise DrbdConfigError("drbdadm dump output ends inside a section")
    return stmts, i


def _options(block: Sequence[_Stmt]) -> dict[str, str]:
    """The options this block's net/disk/options/handlers sections set (not nested deeper)."""
    out: dict[str, str] = {}
    for s in block:
        if s.block is not None and s.name in _SECTIONS:
            for o in s.block:
                if o.block is None and o.name in FIELDS:
                    out[o.name] = " ".join(o.args) if o.args else "yes"  # a bare flag is yes
    return out


def _volume_scopes(res: Sequence[_Stmt]) -> list[tuple[str, dict[str, str]]]:
    per_volume = {s.args[0]: _options(s.block) for s in res if s.name == "volume" and s.block}
    scopes = [(f"volume {v}", opts) for v, opts in per_volume.items()]
    if not per_volume:
        scopes.append(("", {}))  # implicit volume, or volumes only inside `on HOST`
    for host in res:
        if host.name != "on" or not host.block:
            continue
        if own := _options(host.block):  # the implicit volume's disk section on this host
            scopes.append((f"on {host.args[0]}", own))
        for s in host.block:
            if s.name == "volume" and s.block and _options(s.block):
                own = {**per_volume.get(s.args[0], {}), **_options(s.block)}
                scopes.append((f"volume {s.args[0]} on {host.args[0]}", own))
    return scopes


def _connection_scopes(res: Sequence[_Stmt]) -> list[tuple[str, dict[str, str]]]:
    scopes: list[tuple[str, dict[str, str]]] = []
    for s in res:
        if s.block is None or s.name not in ("connection", "connection-mesh"):
            continue
        if s.name == "connection-mesh":
            label = "connection-mesh"
        else:
            hosts = [h.args[0] for h in s.block if h.name == "host" and h.args]
            label = f"connection {s.args[0] if s.args else '/'.join(hosts)}"
        scopes.append((label, _options(s.block)))
    return scopes or [("", {})]


def _build(resource: str, opts: dict[str, str], hosts: tuple[str, ...]) -> DrbdOptions:
    values: dict[str, Any] = {FIELDS[k]: v for k, v in opts.items()}  # all str | None fields
    return DrbdOptions(resource=resource, hosts=hosts, **values)


def parse_dump(text: str, resource: str) -> DrbdOptions:
    """The options of `resource` from `drbdadm dump` (whole file: common is merged in) or
    `drbdadm dump RES` output. Raises DrbdConfigError when the resource is not in it."""
    top, _ = _statements(_tokens(text), 0, top=True)
    res = next(
        (s.block for s in top if s.name == "resource" and s.args[:1] == (resource,) and s.block),
        None,
    )
    if res is None:
        raise DrbdConfigError(f"'{resource}' is not in the drbdadm dump output")
    common = next((s.block for s in top if s.name == "common" and s.block), ())
    base = {**_options(common), **_options(res)}
    hosts = tuple(
        s.args[0] if s.name == "on" else s.args[-1]
        for s in res
        if s.name in ("on", "floating") and s.args
    )
    opts = _build(resource, base, hosts)
    variants = tuple(
        (conn_label, vol_label, _build(resource, {**base, **vol, **conn}, hosts))
        for conn_label, conn in _connection_scopes(res)
        for vol_label, vol in _volume_scopes(res)
    )
    if all(v == opts for _, _, v in variants):
        return opts  # nothing below the resource changes anything
    return dataclasses.replace(opts, variants=variants)


# ---- running drbdadm ---------------------------------------------------------------------

Run = Callable[[Sequence[str]], subprocess.CompletedProcess[str]]

# drbdadm probes the kernel module with `modinfo`; on a host without kmod the shell says so on
# stderr. That is noise here (dump needs no module), never the reason for a failure.
_NOISE: Final = re.compile(r"^\.?(sh: \d+: \S+: not found)?$")  # and a stray "." line


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    # check-config runs unprivileged too, and a user's PATH seldom has the sbin directories.
    path = [p for p in env.get("PATH", "/usr/bin:/bin").split(os.pathsep) if p]
    path += [d for d in ("/usr/local/sbin", "/usr/sbin", "/sbin") if d not in path]
    env["PATH"] = os.pathsep.join(path)
    env["LC_ALL"] = "C"  # drbdadm's messages are shown and matched in English
    return subprocess.run(
        list(argv),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=DRBDADM_TIMEOUT,
        check=False,
    )


def _message(r: subprocess.CompletedProcess[str]) -> str:
    lines = [ln.strip() for ln in (r.stderr or r.stdout or "").splitlines()]
    said = " ".join(ln for ln in lines if not _NOISE.match(ln))
    return f"drbdadm: {said}" if said else f"{' '.join(r.args)}: exit {r.returncode}"


def _dump(argv: list[str], run: Run) -> str:
    try:
        r = run(argv)
    except FileNotFoundError:
        raise DrbdConfigError("drbdadm not found: install drbd-utils") from None
    except subprocess.TimeoutExpired:
        raise DrbdConfigError(f"{' '.join(argv)} did not finish in {DRBDADM_TIMEOUT:g} s") from None
    if r.returncode != 0:
        raise DrbdConfigError(_message(r))
    return r.stdout


def read_effective(
    resource: str, *, config_file: Path | None = None, run: Run = _run
) -> DrbdOptions:
    """Ask drbdadm for `resource`'s effective configuration (from `config_file` instead of
    /etc/drbd.conf when given). Raises DrbdConfigError in drbdadm's own words, e.g.
    "drbdadm: 'r0' not defined in your config (for this host)."""
    config = ["-c", str(config_file)] if config_file else []
    return parse_dump(_dump(["drbdadm", *config, "-d", "dump", resource], run), resource)


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
) -> list[Finding]:
    """What drbdha makes of `opts`, errors first. Every variant (a connection and volume
    with values of their own) is checked; a finding that not all of them share names the
    connections or volumes it holds for."""
    paths = opts.variants or (("", "", opts),)
    found = {
        (c, v): _check(o, master_down_interval, advert_interval, promote_timeout)
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
    o: DrbdOptions, mdi: float, advert: float, promote_timeout: float | None
) -> list[Finding]:
    return [
        *_on_io_error(o),
        *_fencing(o),
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


def _fencing(o: DrbdOptions) -> list[Finding]:
    policy = o.get("fencing")
    handler = o.fence_peer_handler
    if policy == "dont-care":
        if o.get("quorum") != "off":
            return []  # DRBD 9 quorum keeps a minority partition from writing
        return [
            Finding(
                "warning",
                "fencing",
                "dont-care (the default): when the replication link and VRRP's link fail "
                "together, both nodes become master and Primary and their data diverge (split "
                "brain); nothing outdates the peer first"
                + ("; the fence-peer handler is never called" if handler else ""),
                "set fencing resource-only; with a fence-peer handler that reaches the peer by "
                "another path, or (DRBD 9) quorum with a third, tiebreaker node",
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
    if handler is None:
        return [
            Finding(
                level,
                "fence-peer",
                f"fencing {policy} without a fence-peer handler: drbdadm then answers 0, which "
                f"DRBD logs as 'fence-peer helper broken' and counts as fencing failed: "
                f"{consequence}",
                'add handlers { fence-peer "/path/to/your-fence-peer"; } (exit 4: peer outdated, '
                "5: peer down, 7: peer stonithed), or set fencing dont-care;",
            )
        ]
    if _PACEMAKER_HANDLERS.search(handler):
        return [
            Finding(
                level,
                "fence-peer",
                f"{handler} works through Pacemaker (cibadmin, crm_mon, stonith_admin), which "
                f"drbdha replaces: without Pacemaker it cannot fence and fails: {consequence}",
                "use a fence-peer handler that outdates the peer without Pacemaker (for example "
                "over ssh: `drbdadm outdate RES` on the peer; exit 4 when done, 5 when the peer "
                "is down)",
            )
        ]
    if stonith:
        return [
            Finding(
                "info",
                "fencing",
                f"resource-and-stonith: a Primary that loses the peer freezes its I/O until "
                f"{handler} returns; if it fails, I/O stays frozen until `drbdadm resume-io`",
            )
        ]
    return []


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
