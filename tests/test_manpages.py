"""drbdha(8) and drbdha.toml(5) as drbdha/manpages.py generates them: every key of
etc/drbdha.toml and every subcommand and option of the CLI is in them, and man(1) renders
them without a warning."""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

from drbdha import cli, config, manpages

EXAMPLE = Path(__file__).resolve().parent.parent / "etc" / "drbdha.toml"


def _need_argparse_manpage() -> None:
    # argparse_manpage from 2.0 on (PyPI, trixie); build_manpages in 1.x (bookworm's 1.2.2)
    if not any(importlib.util.find_spec(m) for m in ("argparse_manpage", "build_manpages")):
        pytest.skip("argparse-manpage is not installed")


def _plain(page: str) -> str:
    """The page's text with roff's escapes undone, for searching."""
    for code in ("\\fB", "\\fR", "\\fI", "\\,", "\\/", "\\&"):
        page = page.replace(code, "")
    return page.replace("\\-", "-").replace("\\e", "\\")


def _render(tmp_path: Path, name: str, page: str) -> str:
    if shutil.which("man") is None:
        pytest.skip("man(1) is not installed")
    path = tmp_path / name
    path.write_text(page)
    r = subprocess.run(
        ["man", "--warnings", "-l", str(path)],
        capture_output=True,
        text=True,
        # Wide enough that no line wraps: nothing is hyphenated, the text can be searched.
        env={"MANWIDTH": "1000", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    return " ".join(r.stdout.split())


def test_config_page_has_every_key_of_the_example(tmp_path: Path) -> None:
    text = EXAMPLE.read_text()
    page = manpages.config_page(text)
    keys = manpages.keys_of(text)
    missing = [k for k in keys if f"\\fB{manpages.roff(k)}\\fR = " not in page]
    assert missing == []
    rendered = _render(tmp_path, "drbdha.toml.5", page)
    for table in ("[daemon]", "[[vrrp_instance]]", "[storage.nfs]", "[[storage.nfs.exports]]"):
        assert table in rendered
    assert "delete this line" in rendered.lower()


def test_the_generator_finds_every_key_config_py_declares() -> None:
    keys = set(manpages.keys_of(EXAMPLE.read_text()))
    for table in (
        config.DAEMON_OPTIONS,
        config.INSTANCE_OPTIONS,
        config.STORAGE_OPTIONS,
        config.CHECK_OPTIONS,
        config.EXPORT_OPTIONS,
        config.PEER_OPTIONS,
        config.AUTH_HMAC_OPTIONS,
    ):
        assert set(table) <= keys


def test_comment_blocks_become_key_texts_table_intros_and_paragraphs() -> None:
    page = manpages.config_page(
        "# Intro paragraph.\n\n"
        "# A table.\n[t]\n"
        "# Doc of a.\na = 1\n"
        "# Doc of b and c.\n# b = 2\n# c = 3\n"
        "# .leading dot and a \\ backslash\nd = 'x'\n"
    )
    lines = page.splitlines()
    assert lines[lines.index(".PP") + 1] == "Intro paragraph."
    assert lines[lines.index('.SS "[t]"') + 1] == "A table."
    assert "\\fBa\\fR = 1" in lines
    shared = (
        "\\fBb\\fR = 2 (commented out in the example), \\fBc\\fR = 3 (commented out in the example)"
    )
    assert lines[lines.index(shared) + 1] == "Doc of b and c."
    assert "\\&.leading dot and a \\e backslash" in lines


def test_indented_comment_lines_are_list_items() -> None:
    page = manpages.config_page(
        '# Pick one:\n#   "a": first,\n#        continued\n#   "b": second\nk = "a"\n'
    )
    body = page.split("\\fBk\\fR", 1)[1].splitlines()[1:]
    assert body[:8] == [
        "Pick one:",
        ".RS",
        ".RS 2",
        '"a": first,',
        "continued",
        ".br",
        '"b": second',
        ".RE",
    ]


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {
        o
        for a in parser._actions
        if a.help != argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)
        for o in a.option_strings
    }


def test_cli_page_has_every_subcommand_and_option(tmp_path: Path) -> None:
    _need_argparse_manpage()
    page = manpages.cli_page()
    assert page.startswith(".TH DRBDHA 8 ")
    text = _plain(page)
    parser = cli._parser()
    names = manpages.subcommands(parser)
    assert set(names) == {
        "run",
        "check-config",
        "status",
        "force-failover",
        "clear-latch",
        "fence-peer",
    }
    for name in names:
        assert f"'drbdha {name}'" in text
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for p in [parser, *subparsers.choices.values()]:
        assert {o for o in _options(p) if o not in text} == set()
    for line in manpages.exit_status():
        assert line in text
    rendered = _render(tmp_path, "drbdha.8", page)
    assert "drbdha - storage-aware VRRP failover daemon" in rendered


def test_main_writes_both_pages(tmp_path: Path) -> None:
    _need_argparse_manpage()
    assert manpages.main([str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["drbdha.8", "drbdha.toml.5"]
    assert manpages.main([]) == 2
