"""The effective DRBD configuration of a resource (what drbdha makes of it: drbd_advice.py).

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
- Any text that is not a dump drbdadm could print raises DrbdConfigError, never anything
  else: sections nested deeper than MAX_DEPTH, and `on` or `volume` sections without their
  name, included.
- DEFAULTS are what DRBD uses for an absent option; they are the same in 8.4 and 9 for every
  option here (quorum and on-no-quorum exist only in 9).
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

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
# How deep sections may nest; drbdadm's dumps go four deep (resource > on HOST > volume > disk).
MAX_DEPTH: Final = 16
_NAMED: Final = frozenset({"on", "volume"})  # sections that drbdadm always prints with a name


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
    addresses: tuple[str, ...] = ()
    """The replication addresses of those sections, without port ("10.0.0.1", "fe80::1")."""
    to_diskless: bool = False
    """A variant for a connection to a host whose `on` section has `disk none` (a DRBD 9
    tiebreaker): DRBD never fences a diskless peer."""
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


def _statements(
    tokens: list[tuple[str, bool]], i: int, *, top: bool, depth: int = 0
) -> tuple[list[_Stmt], int]:
    if depth > MAX_DEPTH:
        raise DrbdConfigError(f"drbdadm dump output nested deeper than {MAX_DEPTH} sections")
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
            block, i = _statements(tokens, i + 1, top=False, depth=depth + 1)
            if tok in _NAMED and not args:
                raise DrbdConfigError(f"'{tok} {{' without a name in drbdadm dump output")
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


def _connection_scopes(res: Sequence[_Stmt]) -> list[tuple[str, dict[str, str], bool]]:
    """(label, options, whether a host of it is diskless) of each connection section."""
    diskless = {
        s.args[0]
        for s in res
        if s.name == "on" and s.args and s.block
        if any(st.name == "disk" and st.args == ("none",) for st in s.block)
    }
    scopes: list[tuple[str, dict[str, str], bool]] = []
    for s in res:
        if s.block is None or s.name not in ("connection", "connection-mesh"):
            continue
        hosts = [h.args[0] for h in s.block if h.name == "host" and h.args]
        if s.name == "connection-mesh":
            label = "connection-mesh"
        else:
            label = f"connection {s.args[0] if s.args else '/'.join(hosts)}"
        scopes.append((label, _options(s.block), bool(diskless & set(hosts))))
    return scopes or [("", {}, False)]


def _build(
    resource: str, opts: dict[str, str], hosts: tuple[str, ...], addresses: tuple[str, ...]
) -> DrbdOptions:
    values: dict[str, Any] = {FIELDS[k]: v for k, v in opts.items()}  # all str | None fields
    return DrbdOptions(resource=resource, hosts=hosts, addresses=addresses, **values)


def _addresses(res: Sequence[_Stmt]) -> tuple[str, ...]:
    """`address [ipv4|ipv6] HOST:PORT` of each host section (9 may also list them in a
    connection's `host ... address` or `path` blocks: the `on` sections hold them all)."""
    hosts = [s.block for s in res if s.name in ("on", "floating") and s.block]
    return tuple(
        st.args[-1].rsplit(":", 1)[0].strip("[]")
        for block in hosts
        for st in block
        if st.name == "address" and st.args
    )


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
    addresses = _addresses(res)
    opts = _build(resource, base, hosts, addresses)
    variants = tuple(
        (
            conn_label,
            vol_label,
            dataclasses.replace(
                _build(resource, {**base, **vol, **conn}, hosts, addresses), to_diskless=diskless
            ),
        )
        for conn_label, conn, diskless in _connection_scopes(res)
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


def message(r: subprocess.CompletedProcess[str]) -> str:
    """What a failed drbdadm said, without the noise; its command and exit code if nothing."""
    lines = [ln.strip() for ln in (r.stderr or r.stdout or "").splitlines()]
    said = " ".join(ln for ln in lines if not _NOISE.match(ln))
    return f"drbdadm: {said}" if said else f"{' '.join(r.args)}: exit {r.returncode}"


def drbdadm(
    args: Sequence[str], *, config_file: Path | None = None, run: Run | None = None
) -> subprocess.CompletedProcess[str]:
    """`drbdadm [-c config_file] ARGS`, whatever its exit code. Raises DrbdConfigError when
    drbdadm is not installed or does not finish in DRBDADM_TIMEOUT."""
    argv = ["drbdadm", *(["-c", str(config_file)] if config_file else []), *args]
    try:
        return (run or _run)(argv)
    except FileNotFoundError:
        raise DrbdConfigError("drbdadm not found: install drbd-utils") from None
    except subprocess.TimeoutExpired:
        raise DrbdConfigError(f"{' '.join(argv)} did not finish in {DRBDADM_TIMEOUT:g} s") from None


def read_effective(
    resource: str, *, config_file: Path | None = None, run: Run = _run
) -> DrbdOptions:
    """Ask drbdadm for `resource`'s effective configuration (from `config_file` instead of
    /etc/drbd.conf when given). Raises DrbdConfigError in drbdadm's own words, e.g.
    "drbdadm: 'r0' not defined in your config (for this host)."""
    r = drbdadm(["-d", "dump", resource], config_file=config_file, run=run)
    if r.returncode != 0:
        raise DrbdConfigError(message(r))
    return parse_dump(r.stdout, resource)
