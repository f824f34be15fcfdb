"""drbdha(8) and drbdha.toml(5), generated when the package is built, from what they
document, so that neither can drift from it:

- drbdha(8): the CLI's own argparse parser (what `--help` prints), rendered by
  argparse-manpage (Debian's python3-argparse-manpage: 1.2.2 in bookworm, 4.x in trixie);
  only the header line, NAME's one-line summary and EXIT STATUS/FILES/SEE ALSO are added
  here, the last three read from cli.py's docstring and config/'s defaults.
- drbdha.toml(5): etc/drbdha.toml, whose comments document every key. A comment block
  right above a key (set, or commented out as `# key = value`) is that key's text; one
  above a table header introduces the table; one followed by a blank line is a paragraph.
  A key directly below another key, with no comment of its own, shares that key's text.

    python3 -m drbdha.manpages OUTDIR [EXAMPLE]   # OUTDIR/drbdha.8, OUTDIR/drbdha.toml.5

Not used at run time. It lives in the package beside the parser it renders, so ruff, mypy
and the unit tests cover it like the rest.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from drbdha import __version__, cli
from drbdha.config import DEFAULT_PATH, DaemonConfig

EXAMPLE: Final = Path(__file__).resolve().parent.parent / "etc" / "drbdha.toml"
README: Final = Path("/usr/share/doc/drbdha/README.md")
SUMMARY: Final = "storage-aware VRRP failover daemon for DRBD-replicated NFS servers"

_KEY = re.compile(r"^(?P<hash>#\s?)?(?P<key>[a-z][a-z0-9_]*) = (?P<value>.+)$")
_TABLE = re.compile(r"^(?:#\s?)?(?P<table>\[\[?[a-z][a-z0-9_.]*\]\]?)$")


def roff(text: str) -> str:
    """Text for a roff line: backslashes and minus signs escaped, `code` in bold, and a
    leading '.' or "'" kept from reading as a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    text = re.sub(r"`([^`]+)`", r"\\fB\1\\fR", text)
    return "\\&" + text if text[:1] in (".", "'") else text


def _th(title: str, section: int, manual: str) -> str:
    return f'.TH {title} {section} "" "drbdha {__version__}" "{manual}"'


def _prose(lines: list[str]) -> list[str]:
    """Comment lines as roff paragraphs. Indented lines are a list under the text (the
    values of a choice, `"failover": ...`): each item starts at the list's own indentation,
    deeper lines continue it; every item is filled on its own, indented."""
    out: list[str] = []
    depth = 0  # the list's indentation, 0 outside a list
    for line in lines:
        indent = len(line) - len(line.lstrip(" "))
        if indent >= 2 and depth and indent > depth:  # an item's continuation
            out.append(roff(line.strip()))
            continue
        if indent >= 2:
            # .RS alone moves to the .TP text's indentation, the second one 2 further.
            out.extend([".RS", ".RS 2"] if not depth else [".br"])
            depth = indent
        elif depth:
            out.extend([".RE", ".RE"])
            depth = 0
        out.append(roff(line.strip()))
    if depth:
        out.extend([".RE", ".RE"])
    return out


@dataclass
class _Entry:
    tags: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)


def _tag(key: str, value: str, commented: bool) -> str:
    tag = f"\\fB{roff(key)}\\fR = {roff(value)}"
    return tag + " (commented out in the example)" if commented else tag


def keys_of(text: str) -> list[str]:
    """Every key etc/drbdha.toml shows, set or commented out, in order."""
    return [m["key"] for line in text.splitlines() if (m := _KEY.match(line.strip()))]


def config_page(text: str) -> str:
    out = [
        _th("DRBDHA.TOML", 5, "File Formats"),
        ".SH NAME",
        "drbdha.toml \\- configuration of drbdha(8)",
        ".SH SYNOPSIS",
        roff(str(DEFAULT_PATH)),
        ".SH DESCRIPTION",
    ]
    comment: list[str] = []
    entry: _Entry | None = None  # the key entry still open (for keys that share its text)

    def flush_entry() -> None:
        nonlocal entry
        if entry is not None:
            out.extend([".TP", ", ".join(entry.tags), *_prose(entry.text)])
            entry = None

    for raw in text.splitlines():
        line = raw.strip()
        table, key = _TABLE.match(line), _KEY.match(line)
        if table:
            flush_entry()
            out.extend([f'.SS "{roff(table["table"])}"', *_prose(comment)])
            comment = []
        elif key:
            tag = _tag(key["key"], key["value"], commented=bool(key["hash"]))
            if entry is not None and not comment:
                entry.tags.append(tag)
            else:
                flush_entry()
                entry = _Entry([tag], comment)
            comment = []
        elif line.startswith("#"):
            flush_entry()
            comment.append(line[1:].removeprefix(" "))
        else:  # a blank line ends a key's group and a comment block
            flush_entry()
            if comment:
                out.extend([".PP", *_prose(comment)])
            comment = []
    flush_entry()
    files = [
        (
            DEFAULT_PATH,
            (
                "The configuration: `drbdha check-config` validates it, `systemctl reload "
                "drbdha` applies it (a file with errors is refused, the running one kept)."
            ),
        ),
        (README, "A two-node configuration explained; fencing; operation."),
    ]
    return _finish(out, files, "`drbdha`(8), `drbd.conf`(5), `exports`(5)")


def _finish(lines: list[str], files: list[tuple[Path, str]], see_also: str) -> str:
    lines = [*lines, ".SH FILES"]
    for path, what in files:
        lines += [".TP", roff(str(path)), roff(what)]
    lines += [".SH SEE ALSO", roff(see_also)]
    return "\n".join(lines) + "\n"


def _manpage_class() -> type:
    # The module moved in argparse-manpage 2; Debian has 1.2.2 (bookworm) and 4.x (trixie).
    try:
        from argparse_manpage.manpage import Manpage  # noqa: PLC0415
    except ImportError:
        from build_manpages.manpage import Manpage  # noqa: PLC0415
    return Manpage  # type: ignore[no-any-return]


def exit_status() -> list[str]:
    """The "Exit codes:" paragraph of cli.py's docstring, one line per command."""
    doc = (cli.__doc__ or "").split("Exit codes:", 1)[1]
    return [line.strip() for line in doc.strip().splitlines() if line.strip()]


def subcommands(parser: argparse.ArgumentParser) -> list[str]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return [name for a in actions for name in a.choices]


def cli_page() -> str:
    parser = cli._parser()
    # Both argparse-manpage series put this after NAME's "drbdha \-".
    parser.man_short_description = SUMMARY  # type: ignore[attr-defined]
    # The global options before the subcommands: argparse-manpage renders the groups in
    # order, and after the subcommands they would read as the last subcommand's options.
    parser._action_groups.sort(key=lambda g: any(a.choices for a in g._group_actions))
    lines = str(_manpage_class()(parser)).splitlines()
    # argparse-manpage writes section 1 and a title of its own: drbdha is a system daemon.
    lines[0] = _th("DRBDHA", 8, "System Administration")
    lines += [".SH EXIT STATUS", *(f"{roff(line)}\n.br" for line in exit_status())]
    daemon = DaemonConfig()
    files = [
        (DEFAULT_PATH, "The configuration, see `drbdha.toml`(5)."),
        (
            daemon.control_socket,
            "The control socket of `status`, `force-failover` and `clear-latch` (root only).",
        ),
        (daemon.state_dir, "Latches (a failed disk, a split brain), kept across restarts."),
        (README, "Installation, configuration, operation."),
    ]
    return _finish(lines, files, "`drbdha.toml`(5), `drbdadm`(8), `systemctl`(1), `exportfs`(8)")


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print("usage: python3 -m drbdha.manpages OUTDIR [EXAMPLE]", file=sys.stderr)
        return 2
    outdir = Path(argv[0])
    example = Path(argv[1]) if len(argv) > 1 else EXAMPLE
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "drbdha.8").write_text(cli_page())
    (outdir / "drbdha.toml.5").write_text(config_page(example.read_text()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
