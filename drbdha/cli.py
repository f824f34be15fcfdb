"""The `drbdha` command. It imports nothing heavy at module level (no pyroute2, no net/), so
`drbdha check-config` and the later client commands start fast and run unprivileged."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from drbdha import __version__
from drbdha.config import DEFAULT_PATH, Config, load
from drbdha.errors import ConfigError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="drbdha", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"drbdha {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for name, text in (
        ("run", "run the daemon in the foreground (as systemd does)"),
        ("check-config", "validate a configuration file and list every error"),
    ):
        cmd = sub.add_parser(name, help=text, description=text)
        cmd.add_argument("-c", "--config", type=Path, default=DEFAULT_PATH,
                         help=f"configuration file (default {DEFAULT_PATH})")
    return p


def _load_or_report(path: Path) -> Config | None:
    try:
        return load(path)
    except ConfigError as e:
        print(f"drbdha: {len(e.problems)} error(s) in {path}:", file=sys.stderr)
        for key, msg in e.problems:
            print(f"  {key}: {msg}", file=sys.stderr)
        return None


def _check_config(path: Path) -> int:
    config = _load_or_report(path)
    if config is None:
        return EXIT_CONFIG
    print(f"{path}: ok")
    for inst in config.vrrp_instances:
        vips = ", ".join(str(v) for v in inst.virtual_ipaddress)
        print(f"  {inst.name}: VRRPv{inst.version} vrid {inst.vrid} on {inst.interface}, "
              f"priority {inst.priority}, every {inst.advert_interval:g}s, {vips}")
    return EXIT_OK


def _run(path: Path) -> int:
    config = _load_or_report(path)
    if config is None:
        return EXIT_CONFIG
    from drbdha import daemon, logs  # noqa: PLC0415  (heavy imports only for the daemon)

    logs.configure(config.daemon.log_level)
    return daemon.run(config)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        return _check_config(args.config)
    return _run(args.config)
