"""drbd_config: the `drbdadm dump` parser on real dumps (tests/drbd_dumps.py says where they
come from) and on hand-written text, and how drbdadm is run. The findings table:
test_drbd_findings; check-config on DRBD resources: test_check_config.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from drbd_dumps import (
    DATA,
    DRBDADM_84,
    HOST,
    RESOURCE,
    SOURCES,
    fixture,
    needs_drbdadm,
    needs_drbdadm_84,
    write_conf,
)

from drbdha.resources import drbd_config
from drbdha.resources.drbd_config import (
    DEFAULTS,
    FIELDS,
    DrbdConfigError,
    DrbdOptions,
    parse_dump,
    read_effective,
)

# ---- the parser on real dumps --------------------------------------------------------------------


def test_drbd9_two_nodes_has_common_merged_and_the_resource_winning() -> None:
    o = fixture("9-two-nodes")
    assert o.on_io_error == "detach"  # common says pass_on, the resource detach
    assert o.after_sb_0pri == "discard-zero-changes"  # from common
    assert (o.fencing, o.ping_int, o.ping_timeout, o.protocol) == ("resource-only", "1", "5", "C")
    assert o.fence_peer_handler == '/usr/local/sbin/fence-over-ssh --peer "nfs-b"'
    assert o.timeout is None  # only the connection sets it
    assert o.hosts == ("vm", "nfs-b")
    # One connection, whose timeout is the effective one.
    assert {v.timeout for _, _, v in o.variants} == {"9"}
    assert {c for c, _, _ in o.variants} == {"connection vm/nfs-b"}


def test_drbd9_three_nodes_has_a_variant_per_connection_and_volume() -> None:
    o = fixture("9-three-nodes")
    assert (o.quorum, o.on_no_quorum, o.on_no_data_accessible) == (
        "majority",
        "io-error",
        "io-error",
    )
    assert o.hosts == ("vm", "nfs-b", "tiebreaker")
    cells = {(c, v): opt for c, v, opt in o.variants}
    assert set(cells) == {
        (c, v) for c in ("connection vm/nfs-b", "connection-mesh") for v in ("volume 0", "volume 1")
    }
    assert cells["connection vm/nfs-b", "volume 0"].protocol == "B"
    assert cells["connection vm/nfs-b", "volume 0"].ping_int == "1"
    assert cells["connection-mesh", "volume 1"].ping_int == "2"
    assert cells["connection-mesh", "volume 1"].protocol == "C"
    assert cells["connection-mesh", "volume 1"].disk_timeout == "100"
    assert cells["connection-mesh", "volume 0"].disk_timeout is None


def test_drbd84_syntax_fencing_in_disk_and_a_bare_flag() -> None:
    o = fixture("8.4")
    assert o.fencing == "resource-and-stonith"  # 8.4 keeps it in disk {}
    assert o.allow_two_primaries == "yes"  # `allow-two-primaries;` dumped as yes
    assert o.protocol == "A"  # from common
    assert o.on_io_error == "call-local-io-error"
    assert o.local_io_error_handler == "/usr/lib/drbd/notify-io-error.sh; halt -f"
    assert o.fence_peer_handler == "/usr/lib/drbd/crm-fence-peer.sh"
    assert (o.ping_int, o.ping_timeout, o.after_sb_1pri) == ("2", "10", "discard-secondary")
    assert o.variants == ()  # nothing below the resource differs


def _same_but_host(a: DrbdOptions, b: DrbdOptions) -> None:
    assert a.resource == b.resource
    for name in FIELDS.values():
        assert getattr(a, name) == getattr(b, name), name
    assert [(c, v, *_fields(o)) for c, v, o in a.variants] == [
        (c, v, *_fields(o)) for c, v, o in b.variants
    ]


def _fields(o: DrbdOptions) -> tuple[Any, ...]:
    return tuple(getattr(o, name) for name in FIELDS.values())


def _with_host(name: str) -> DrbdOptions:
    text = re.sub(r"\bvm\b", HOST, (DATA / f"dump-{name}.txt").read_text())
    return parse_dump(text, RESOURCE[name])


@needs_drbdadm
@pytest.mark.parametrize("name", ["9-two-nodes", "9-three-nodes"])
def test_drbdadm_here_prints_what_the_fixture_holds(tmp_path: Path, name: str) -> None:
    live = read_effective(RESOURCE[name], config_file=write_conf(tmp_path, SOURCES[name]))
    _same_but_host(live, _with_host(name))
    assert live.hosts[0] == HOST


def _run84(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """drbd-utils' drbdadm-84 in place of drbdadm."""
    return drbd_config._run([str(DRBDADM_84), *argv[1:]])


@needs_drbdadm_84
def test_drbdadm_84_here_prints_what_the_fixture_holds(tmp_path: Path) -> None:
    live = read_effective("r0", config_file=write_conf(tmp_path, SOURCES["8.4"]), run=_run84)
    _same_but_host(live, _with_host("8.4"))


# ---- the parser on hand-written text -------------------------------------------------------------


def test_plain_dump_of_the_whole_file_merges_common_itself() -> None:
    text = """
    common { net { ping-int 3; protocol B; } disk { on-io-error pass_on; } }
    resource r0 { net { protocol C; } on a { disk /dev/sdb; } on b { disk /dev/sdb; } }
    resource r1 { net { protocol A; } }
    """
    o = parse_dump(text, "r0")
    assert (o.ping_int, o.protocol, o.on_io_error) == ("3", "C", "pass_on")
    assert o.hosts == ("a", "b")  # `disk /dev/sdb;` inside `on` is a statement, not a section


def test_comments_quotes_and_escapes() -> None:
    text = r"""
    resource r0 {  # a comment } with a brace
        handlers { fence-peer "/bin/x --say \"hi; there\" {}"; }
        net { ping-int 1; }  # another
    }
    """
    o = parse_dump(text, "r0")
    assert o.fence_peer_handler == '/bin/x --say "hi; there" {}'
    assert o.ping_int == "1"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("resource r0 { net { ping-int 1; }", "ends inside a section"),
        ("resource r0 { } }", "unbalanced"),
        ("resource r0 { net { ping-int 1 } }", "unexpected '}' after 'ping-int'"),
        ('resource r0 { handlers { fence-peer "/bin/x; } }', "cannot read"),
        ("resource r0 { ; }", "unexpected ';'"),
        ("resource r1 { }", "'r0' is not in the drbdadm dump output"),
    ],
)
def test_unreadable_dump_is_a_config_error(text: str, match: str) -> None:
    with pytest.raises(DrbdConfigError, match=re.escape(match)):
        parse_dump(text, "r0")


def test_absent_options_fall_back_to_drbd_defaults() -> None:
    o = DrbdOptions(resource="r0", ping_int="1")
    assert o.get("ping-int") == "1"
    assert o.get("ping-timeout") == "5"  # tenths: 0.5 s
    assert o.get("timeout") == "60"  # tenths: 6 s
    assert (o.get("on-io-error"), o.get("fencing"), o.get("protocol")) == (
        "detach",
        "dont-care",
        "C",
    )
    assert o.get("after-sb-2pri") == "disconnect"
    assert o.get("fence-peer") is None  # a handler has no default
    assert set(DEFAULTS) <= set(FIELDS)


# ---- running drbdadm -----------------------------------------------------------------------------


class Recorder:
    def __init__(self, *, returncode: int = 0, stdout: str = "", stderr: str = "") -> None:
        self.calls: list[list[str]] = []
        self.result = (returncode, stdout, stderr)

    def __call__(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(argv))
        return subprocess.CompletedProcess(list(argv), *self.result)


def test_read_effective_runs_one_dry_run_dump() -> None:
    rec = Recorder(stdout="resource r0 { net { ping-int 1; } }")
    assert read_effective("r0", run=rec).ping_int == "1"
    assert read_effective("r0", config_file=Path("/etc/drbd.d/new.res"), run=rec).ping_int == "1"
    assert rec.calls == [
        ["drbdadm", "-d", "dump", "r0"],
        ["drbdadm", "-c", "/etc/drbd.d/new.res", "-d", "dump", "r0"],
    ]


def test_drbdadm_words_without_the_modinfo_noise() -> None:
    rec = Recorder(
        returncode=1,
        stderr="sh: 1: modinfo: not found\n'r0' not defined in your config (for this host).\n"
        ".sh: 1: modinfo: not found\n",
    )
    with pytest.raises(DrbdConfigError) as e:
        read_effective("r0", run=rec)
    assert str(e.value) == "drbdadm: 'r0' not defined in your config (for this host)."


def test_silent_failure_names_the_command() -> None:
    with pytest.raises(DrbdConfigError, match=r"^drbdadm -d dump r0: exit 3$"):
        read_effective("r0", run=Recorder(returncode=3))


def test_missing_drbdadm_says_what_to_install() -> None:
    def missing(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        raise FileNotFoundError(argv[0])

    with pytest.raises(DrbdConfigError, match=r"^drbdadm not found: install drbd-utils$"):
        read_effective("r0", run=missing)


def test_hung_drbdadm_is_an_error_not_a_hang() -> None:
    def hung(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        raise subprocess.TimeoutExpired(list(argv), drbd_config.DRBDADM_TIMEOUT)

    with pytest.raises(DrbdConfigError, match="did not finish in 10 s"):
        read_effective("r0", run=hung)


def test_child_runs_in_english_without_the_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("LANG", "de_DE.UTF-8")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    code = (
        "import os; print(os.environ['LC_ALL'], 'NOTIFY_SOCKET' in os.environ, os.environ['PATH'])"
    )
    r = drbd_config._run([sys.executable, "-c", code])
    assert r.stdout.split() == ["C", "False", "/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"]


@needs_drbdadm
@pytest.mark.parametrize(
    ("resource", "source", "said"),
    [
        (
            "nope",
            SOURCES["9-two-nodes"],
            "drbdadm: 'nope' not defined in your config (for this host).",
        ),
        # Defined, but not for this host: drbdadm says the same.
        (
            "elsewhere",
            SOURCES["9-two-nodes"],
            "drbdadm: 'elsewhere' not defined in your config (for this host).",
        ),
    ],
)
def test_drbdadm_error_texts(tmp_path: Path, resource: str, source: str, said: str) -> None:
    with pytest.raises(DrbdConfigError) as e:
        read_effective(resource, config_file=write_conf(tmp_path, source))
    assert str(e.value) == said


@needs_drbdadm
def test_drbdadm_error_for_a_missing_or_broken_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.conf"
    with pytest.raises(DrbdConfigError) as e:
        read_effective("r0", config_file=missing)
    assert str(e.value) == f"drbdadm: Can not open '{missing}'."
    broken = write_conf(tmp_path, "resource r0 {\n net { ping-int 1 }\n}\n")
    with pytest.raises(DrbdConfigError) as e:
        read_effective("r0", config_file=broken)
    assert str(e.value) == f"drbdadm: {broken}:2: Parse error: ';' expected, but got '}}' (TK 125)"


@needs_drbdadm
def test_an_address_missing_here_is_no_error(tmp_path: Path) -> None:
    source = SOURCES["9-two-nodes"].replace("127.0.0.1", "192.0.2.1")  # TEST-NET-1: not here
    assert read_effective("r0", config_file=write_conf(tmp_path, source)).ping_int == "1"


@needs_drbdadm
def test_drbdadm_is_found_without_sbin_in_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # an unprivileged user's PATH
    conf = write_conf(tmp_path, SOURCES["9-two-nodes"])
    assert read_effective("r0", config_file=conf).fencing == "resource-only"


@needs_drbdadm_84
def test_drbdadm_84_error_text(tmp_path: Path) -> None:
    with pytest.raises(DrbdConfigError) as e:
        read_effective("nope", config_file=write_conf(tmp_path, SOURCES["8.4"]), run=_run84)
    assert str(e.value) == "drbdadm: 'nope' not defined in your config (for this host)."
