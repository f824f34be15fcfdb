"""The `drbdha` command. It imports nothing heavy at module level (no asyncio, no pyroute2,
no net/), so the client commands start fast and `check-config` runs unprivileged.

Exit codes: run/check-config: 0 ok, 1 failed, 2 configuration error.
status: 0 healthy, 1 degraded, 3 daemon unreachable.
force-failover: 0 done, 1 refused, 2 timed out, 3 daemon unreachable.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drbdha import __version__
from drbdha.defaults import CONFIG as DEFAULT_PATH
from drbdha.defaults import CONTROL_SOCKET, LATCH_KINDS
from drbdha.errors import ConfigError

if TYPE_CHECKING:
    from drbdha.config import Config

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
FAILOVER_EXIT = {"done": 0, "refused": 1, "timed_out": 2}
EXIT_UNREACHABLE = 3  # status.EXIT_UNREACHABLE (status and control are imported when used:
# `fence-peer` runs in DRBD's helper path, where start-up time holds a promotion or I/O)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="drbdha", description="storage-aware VRRP failover daemon")
    p.add_argument("--version", action="version", version=f"drbdha {__version__}")
    p.add_argument(
        "-c",
        "--config",
        type=Path,
        default=DEFAULT_PATH,
        help=f"configuration file (default {DEFAULT_PATH})",
    )
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the daemon in the foreground (as systemd does)")
    sub.add_parser("check-config", help="validate the configuration and list every error")
    st = sub.add_parser(
        "status", help="show each instance's state; exit 0 healthy, 1 degraded, 3 unreachable"
    )
    st.add_argument("--json", action="store_true", help="print the status document as JSON")
    ff = sub.add_parser("force-failover", help="make the other node master (run on either node)")
    ff.add_argument("--instance", help="only this VRRP instance (default: all)")
    ff.add_argument(
        "--wait",
        type=float,
        default=10.0,
        help="seconds to wait for the other node to be master (default 10)",
    )
    ff.add_argument(
        "--hold-off",
        type=float,
        default=300.0,
        help="seconds during which this node will not take the role back by "
        "preemption (default 300)",
    )
    ff.add_argument(
        "--force",
        action="store_true",
        help="skip the safety checks (no master visible, DRBD peer not connected and "
        "UpToDate, ...)",
    )
    cl = sub.add_parser(
        "clear-latch",
        help="clear a disk or split-brain latch once fixed (refused while the disk is not "
        "UpToDate)",
    )
    cl.add_argument("--instance", help="only this VRRP instance (default: all)")
    cl.add_argument("--kind", choices=LATCH_KINDS, help="only this kind of latch")
    fp = sub.add_parser(
        "fence-peer",
        help="DRBD's fence-peer handler: outdate the peer's copy through its drbdha "
        "(exit 4 outdated, 3 inconsistent, 5 unreachable, 6 peer is Primary, 1 failed)",
    )
    fp.add_argument("--resource", help="DRBD resource (default: $DRBD_RESOURCE, set by drbdadm)")
    for cmd in (st, ff, sub.choices["clear-latch"]):
        cmd.add_argument(
            "--socket", type=Path, help="control socket (default: from the configuration)"
        )
    # Accept -c after the subcommand too (drbdha run -c FILE), as the unit file uses it.
    for cmd in sub.choices.values():
        cmd.add_argument(
            "-c", "--config", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
    return p


def _load_or_report(path: Path, *, on_this_host: bool = False) -> Config | None:
    """The configuration, or None with its problems printed. `on_this_host` (a start,
    check-config) adds what the file alone cannot say: whether each advert fits its
    interface's MTU here."""
    from drbdha.config import load  # noqa: PLC0415  (not on fence-peer's path to the daemon)

    try:
        config = load(path)
        if on_this_host and (problems := _over_mtu(config)):
            raise ConfigError(problems)
    except ConfigError as e:
        print(f"drbdha: {len(e.problems)} error(s) in {path}:", file=sys.stderr)
        for key, msg in e.problems:
            print(f"  {key}: {msg}", file=sys.stderr)
        return None
    return config


def _over_mtu(config: Config) -> list[tuple[str, str]]:
    from drbdha.net.vrrp_socket import over_mtu  # noqa: PLC0415

    return over_mtu(config.vrrp_instances)


def _check_config(path: Path) -> int:
    config = _load_or_report(path, on_this_host=True)
    if config is None:
        return EXIT_CONFIG
    print(f"{path}: valid")
    for inst in config.vrrp_instances:
        vips = ", ".join(str(v) for v in inst.virtual_ipaddress)
        auth = inst.auth_hmac
        ids = [k for k, _ in auth.keys] if auth else []
        signed = f", auth_hmac {auth.mode} (keys {ids})" if auth else ""
        print(
            f"  {inst.name}: VRRPv{inst.version} vrid {inst.vrid} on {inst.interface}, "
            f"priority {inst.priority}, every {inst.advert_interval:g}s, {vips}{signed}"
        )
    errors = sum(_check_storage(config, i) for i in range(len(config.vrrp_instances)))
    if errors:
        print(f"drbdha: {errors} error(s) in the DRBD configuration", file=sys.stderr)
        return EXIT_CONFIG
    print("ok")
    return EXIT_OK


def _check_storage(config: Config, index: int, quiet: bool = False) -> int:
    """Print what drbdha makes of the DRBD resource of vrrp_instance[index]'s [storage]
    section (if it has one), errors first, each with its advice; return the number of errors.
    `quiet`: the findings only, on stderr (the daemon's start).

    `drbdadm dump` needs no root and no kernel module, so this stays unprivileged; only
    max-peers is read from the disk, and without root it says it was not checked.
    DRBDHA_DRBDADM_CONFIG=FILE makes drbdadm read FILE instead of /etc/drbd.conf: for the
    tests, and for checking a DRBD configuration before installing it.
    """
    inst = config.vrrp_instances[index]
    storage = config.storage_of(inst)
    if storage is None:
        return 0  # nothing to check: the advice modules stay unloaded (a VRRP-only daemon)

    import os  # noqa: PLC0415  (only check-config with storage needs drbdadm)

    from drbdha.resources import drbd_advice, drbd_config, drbd_metadata, nfs_advice  # noqa: PLC0415
    from drbdha.vrrp.timers import master_down_interval  # noqa: PLC0415

    out = sys.stderr if quiet else sys.stdout
    if not quiet:
        print(f"storage.{storage.name}: DRBD resource {storage.drbd_resource} (for {inst.name})")
    env = os.environ.get("DRBDHA_DRBDADM_CONFIG")
    config_file = Path(env) if env else None
    try:
        opts = drbd_config.read_effective(storage.drbd_resource, config_file=config_file)
    except drbd_config.DrbdConfigError as e:
        print(f"  ERROR storage.{storage.name}.drbd_resource: {e}", file=out)
        return 1
    found = drbd_advice.findings(
        opts,
        master_down_interval=master_down_interval(
            inst.version, inst.priority, inst.advert_interval
        ),
        advert_interval=inst.advert_interval,
        promote_timeout=storage.promote_timeout,
        fence_timeout=config.peer.fence_timeout if config.peer else None,
        heartbeat=storage.replication_heartbeat,
    )
    found += drbd_metadata.findings(storage.drbd_resource, config_file=config_file)
    found += _check_peer(config, opts)
    found += nfs_advice.findings(storage)
    if quiet:  # at the daemon's start: what needs the admin's eye, not the notes
        found = [f for f in found if f.level != "info"]
    for f in sorted(found, key=lambda f: drbd_advice.LEVELS.index(f.level)):
        print(f"  {f.level.upper()} {f.key}: {f.message}", file=out)
        if f.advice:
            print(f"      advice: {f.advice}", file=out)
    if not found and not quiet:
        print("  no findings")
    return sum(f.level == "error" for f in found)


def _check_peer(config: Config, opts: Any) -> list[Any]:
    """The [peer] section against this resource: the secret must be usable and the channel
    must not run over DRBD's own link (a cut link would cut the fence with it)."""
    import os  # noqa: PLC0415

    from drbdha.fencing.secret import SecretError, read_secret  # noqa: PLC0415
    from drbdha.resources.drbd_advice import Finding  # noqa: PLC0415

    peer = config.peer
    if peer is None:
        return []
    out = []
    try:
        read_secret(peer.secret_file)
    except SecretError as e:
        if os.geteuid() != 0 and peer.secret_file.exists():
            out.append(Finding("info", "peer.secret_file", f"{e} (root checks it)"))
        else:
            out.append(Finding("error", "peer.secret_file", str(e), "see README: Fencing"))
    if _is_own_address(str(peer.address)):
        out.append(
            Finding(
                "error",
                "peer.address",
                f"{peer.address} is this node's own address: the fence request would ask this "
                "node's drbdha, never the peer's",
                "use the other node's address on the service network (where VRRP runs)",
            )
        )
    if str(peer.address) in opts.addresses:
        out.append(
            Finding(
                "error",
                "peer.address",
                f"{peer.address} is a DRBD replication address of {opts.resource}: the fence "
                "request would take the link whose failure it is for",
                "use the peer's address on the service network (where VRRP runs)",
            )
        )
    return out


def _is_own_address(address: str) -> bool:
    """Whether `address` is one of this host's: a socket binds to it only then (unless the
    kernel allows binding any address, in which case nothing can be told here)."""
    import socket  # noqa: PLC0415
    from ipaddress import ip_address  # noqa: PLC0415

    v6 = ip_address(address).version == 6
    nonlocal_bind = Path(f"/proc/sys/net/ipv{6 if v6 else 4}/ip_nonlocal_bind")
    try:
        if nonlocal_bind.read_text().strip() != "0":
            return False
    except OSError:
        pass
    with socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((address, 0))
        except OSError:
            return False
    return True


def _run(path: Path) -> int:
    config = _load_or_report(path, on_this_host=True)
    if config is None:
        return EXIT_CONFIG
    # What check-config finds, in this process: a configuration it calls wrong does not start
    # (the unit ran check-config as ExecStartPre before: a second Python start-up, which in the
    # lab's emulated VMs doubled every start).
    errors = sum(_check_storage(config, i, quiet=True) for i in range(len(config.vrrp_instances)))
    if errors:
        print(f"drbdha: {errors} error(s): see `drbdha check-config`", file=sys.stderr)
        return EXIT_CONFIG
    from drbdha import daemon, logs  # noqa: PLC0415  (heavy imports only for the daemon)

    logs.configure(config.daemon.log_level)
    return daemon.run(config)


def _socket_path(args: argparse.Namespace) -> Path:
    if args.socket is not None:
        return Path(args.socket)
    from drbdha.config import load  # noqa: PLC0415

    try:
        return load(args.config).daemon.control_socket
    except ConfigError:
        pass
    # An invalid file (say, mid-edit before a reload) must not send us to the wrong socket:
    # use its control_socket if that much can be read, and say so.
    path = CONTROL_SOCKET
    if not Path(args.config).exists():
        return path
    import tomllib  # noqa: PLC0415

    try:
        with Path(args.config).open("rb") as f:
            raw = tomllib.load(f).get("daemon", {}).get("control_socket")
        if isinstance(raw, str) and raw.startswith("/"):
            path = Path(raw)
    except (OSError, tomllib.TOMLDecodeError, AttributeError):
        pass
    print(
        f"drbdha: warning: {args.config} is not valid; using control socket {path}", file=sys.stderr
    )
    return path


def _ask(
    args: argparse.Namespace, payload: dict[str, Any], timeout: float
) -> dict[str, Any] | None:
    from drbdha import control  # noqa: PLC0415

    try:
        reply = control.request(_socket_path(args), payload, timeout=timeout)
    except control.ControlError as e:
        print(f"drbdha: {e}", file=sys.stderr)
        return None
    return reply


def _status(args: argparse.Namespace) -> int:
    from drbdha import control, status  # noqa: PLC0415

    reply = _ask(args, {"command": control.STATUS}, timeout=5.0)
    if reply is None:
        return EXIT_UNREACHABLE
    if not reply.get("ok"):
        print(f"drbdha: {reply.get('error')}", file=sys.stderr)
        return EXIT_UNREACHABLE
    doc = reply["status"]
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(status.render_table(doc), end="")
    return status.health(doc)


def _force_failover(args: argparse.Namespace) -> int:
    from drbdha import control  # noqa: PLC0415

    payload = {
        "command": control.FORCE_FAILOVER,
        "wait": args.wait,
        "hold_off": args.hold_off,
        "force": args.force,
    }
    if args.instance:
        payload["instance"] = args.instance
    reply = _ask(args, payload, timeout=args.wait + 10.0)
    if reply is None:
        return EXIT_UNREACHABLE
    if not reply.get("ok"):
        print(f"refused: {reply.get('error')}", file=sys.stderr)
        return FAILOVER_EXIT["refused"]
    outcome = reply.get("outcome", "timed_out")
    for inst in reply.get("instances", []):
        peer = inst.get("peer") or {}
        print(
            f"  {inst['name']}: now {inst['state']}, peer {peer.get('address', '-')} "
            f"(priority {peer.get('priority', '-')}), {inst['elapsed_s']:.2f}s"
        )
    line = outcome.replace("_", " ")
    print(f"{line}: {reply['reason']}" if reply.get("reason") else line)
    return FAILOVER_EXIT.get(outcome, FAILOVER_EXIT["timed_out"])


def _clear_latch(args: argparse.Namespace) -> int:
    from drbdha import control  # noqa: PLC0415

    payload: dict[str, Any] = {"command": control.CLEAR_LATCH}
    if args.instance:
        payload["instance"] = args.instance
    if args.kind:
        payload["kind"] = args.kind
    reply = _ask(args, payload, timeout=10.0)
    if reply is None:
        return EXIT_UNREACHABLE
    if not reply.get("ok"):
        print(f"refused: {reply.get('error')}", file=sys.stderr)
        return EXIT_FAILED
    for c in reply.get("cleared", []):
        print(f"cleared: {c['instance']} {c['kind']}")
    return EXIT_OK


def _distrust_after_crash(answer: Any, run_dir: Path) -> Any:
    """No daemon answered, and the last one ended uncleanly within STALL_WINDOW (its mark is
    left behind): this node may have been frozen with it (systemd's watchdog kills a daemon
    frozen 10 s), so a silent peer may have served meanwhile; not dead, then (see
    daemon/stall.py). A daemon gone for longer (a crash loop) no longer counts."""
    from drbdha.clock import AliveMark  # noqa: PLC0415
    from drbdha.defaults import ALIVE_NAME, STALL_WINDOW  # noqa: PLC0415
    from drbdha.fencing import handler, wire  # noqa: PLC0415

    left = AliveMark(run_dir / ALIVE_NAME).left_behind()
    if answer.outcome != wire.UNREACHABLE or left is None or left > STALL_WINDOW:
        return answer
    detail = f"the peer is silent, but drbdha here ended uncleanly {left:.0f} s ago"
    return handler.Answer(wire.FAILED, detail)


def _against_quorum(answer: Any, resource: str, started: float) -> Any:
    """A silent peer on a resource with DRBD quorum is dead only if this node has quorum
    (fencing/quorum.py); otherwise the answer is "failed"."""
    from drbdha.fencing import handler, quorum, wire  # noqa: PLC0415

    why = quorum.settle(answer.outcome == wire.UNREACHABLE, resource, started)
    return answer if why is None else handler.Answer(wire.FAILED, why)


def _fence_peer(args: argparse.Namespace) -> int:
    """Exit codes are DRBD's (fencing/handler.py); everything that goes wrong is 1, which
    DRBD treats as "fencing failed": the safe side. The running daemon is asked first: it
    holds the configuration and the key, and its peer watch has measured the peer's silence
    since the takeover's DRBD step began (fencing/watch.py). Without a daemon to answer
    (stopped, an older one), the handler does the same job itself. No structlog here: DRBD's
    promotion (and a frozen Primary's I/O) waits for this process, and importing it costs
    more than all of the handler's work on a slow machine. For the same reason a handler
    the daemon answered logs nothing: the daemon logs `fence.peer` (no systemd.journal)."""
    import os  # noqa: PLC0415
    import time  # noqa: PLC0415

    from drbdha import control  # noqa: PLC0415
    from drbdha.fencing import handler, wire  # noqa: PLC0415

    def ask_daemon(socket_path: Path) -> handler.Answer | None:
        """The running daemon's answer, or None when none answers it (none listening, an
        older daemon without the command, a broken reply): then the job is done here,
        which is never less safe than asking."""
        # The daemon's answer may take the handler's whole deadline and a peer's reply.
        wait = handler.DEADLINE + handler.RESULT_TIMEOUT + 5.0
        # The configuration we were given goes with the request: a daemon running from
        # another one (another key, another peer) must not answer for it.
        payload = {"command": control.FENCE_PEER, "resource": resource, "config": config_path}
        try:
            r = control.request(socket_path, payload, timeout=wait)
        except control.ControlError:
            return None
        outcome, detail, reply = r.get("outcome"), r.get("detail"), r.get("reply")
        if not r.get("ok") or outcome not in (*wire.OUTCOMES, wire.UNREACHABLE):
            return None
        return handler.Answer(str(outcome), str(detail), reply if isinstance(reply, dict) else {})

    started = time.monotonic()
    resource = args.resource or os.environ.get("DRBD_RESOURCE")
    if not resource:
        print("drbdha fence-peer: no resource (--resource or DRBD_RESOURCE)", file=sys.stderr)
        return wire.EXIT_FAILED
    peer: str | None = None
    config_path = os.path.realpath(args.config)
    answer = ask_daemon(CONTROL_SOCKET)
    via = "daemon"
    if answer is None:
        config = _load_or_report(args.config)
        if config is None:
            handler.log("fence.peer", resource=resource, outcome="failed", detail="invalid config")
            return wire.EXIT_FAILED
        peer = str(config.peer.address) if config.peer else None
        if config.daemon.control_socket != CONTROL_SOCKET:
            answer = ask_daemon(config.daemon.control_socket)
        if answer is None:
            answer, via = handler.fence_peer(config, resource), "handler"
            answer = _distrust_after_crash(answer, config.daemon.control_socket.parent)
    answer = _against_quorum(answer, resource, started)
    code: int = answer.exit_code
    if via != "daemon":  # the daemon logged `fence.peer` with its answer (serving.py)
        handler.log(
            "fence.peer",
            resource=resource,
            peer=peer,
            via=via,
            outcome=answer.outcome,
            exit_code=code,
            detail=answer.detail,
            peer_disk=answer.reply.get("disk"),
            peer_role=answer.reply.get("role"),
            took_ms=round((time.monotonic() - started) * 1000, 1),
        )
    # The kernel's helper path may start us without fds 0-2 (sys.stdout is then None).
    print(f"drbdha fence-peer {resource}: {answer.outcome} ({answer.detail}), exit {code}")
    return code


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    commands = {
        "check-config": lambda: _check_config(args.config),
        "run": lambda: _run(args.config),
        "status": lambda: _status(args),
        "force-failover": lambda: _force_failover(args),
        "clear-latch": lambda: _clear_latch(args),
        "fence-peer": lambda: _fence_peer(args),
    }
    try:
        return commands[args.command]()
    except BrokenPipeError:  # `drbdha status --json | head`: the reader left, nothing to say
        sys.stderr.close()
        return EXIT_FAILED
