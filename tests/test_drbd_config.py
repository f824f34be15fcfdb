"""drbd_config: the `drbdadm dump` parser, the findings table, and check-config on DRBD resources.

tests/data/drbd/dump-*.txt are real output of `drbdadm -c FILE -d dump RES` (drbd-utils 9.22.0,
Debian bookworm, no DRBD kernel module; dump-8.4.txt from its /lib/drbd/drbdadm-84) for the
SOURCES below with @HOST@ = vm. To capture them again: write SOURCES[name] with @HOST@ replaced
by `uname -n` to a file and run that command with stdin from /dev/null. The tests marked
needs_drbdadm do just that on this host and check that drbdadm still prints what the fixture
holds; they skip where drbd-utils is not installed (integration/setup-host installs it).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from drbdha import cli
from drbdha.resources import drbd_config, nfs_advice
from drbdha.resources.drbd_advice import findings
from drbdha.resources.drbd_config import (
    DEFAULTS,
    FIELDS,
    DrbdConfigError,
    DrbdOptions,
    parse_dump,
    read_effective,
)

DATA = Path(__file__).parent / "data" / "drbd"
SBIN = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
DRBDADM = shutil.which("drbdadm", path=SBIN)
DRBDADM_84 = next(
    (p for p in ("/usr/lib/drbd/drbdadm-84", "/lib/drbd/drbdadm-84") if os.access(p, os.X_OK)),
    None,
)
needs_drbdadm = pytest.mark.skipif(
    DRBDADM is None, reason="drbdadm not installed (integration/setup-host installs drbd-utils)"
)
needs_drbdadm_84 = pytest.mark.skipif(
    DRBDADM_84 is None, reason="drbd-utils' drbdadm-84 not installed (drbd-utils has it)"
)
HOST = socket.gethostname()  # drbdadm matches `on NAME` against uname -n, the same name

SOURCES = {
    "9-two-nodes": """\
# DRBD 9, two nodes: common merged under the resource, one connection with its own timeout.
global { usage-count no; }
common {
  handlers { split-brain "/usr/lib/drbd/notify-split-brain.sh root"; }
  disk { on-io-error pass_on; }  # the resource says detach
  net { after-sb-0pri discard-zero-changes; ping-timeout 5; }
}
resource r0 {
  disk { on-io-error detach; }
  net { fencing resource-only; ping-int 1; protocol C; }
  handlers { fence-peer "/usr/local/sbin/fence-over-ssh --peer \\"nfs-b\\""; }
  on @HOST@ { node-id 0; device /dev/drbd0; disk /dev/vg0/nfs; meta-disk internal; address 127.0.0.1:7789; }
  on nfs-b { node-id 1; device /dev/drbd0; disk /dev/vg0/nfs; meta-disk internal; address 127.0.0.2:7789; }
  connection { host @HOST@; host nfs-b; net { timeout 9; } }
}
resource elsewhere {
  on nfs-c { node-id 0; device /dev/drbd9; disk /dev/vg0/x; meta-disk internal; address 127.0.0.3:7799; }
  on nfs-d { node-id 1; device /dev/drbd9; disk /dev/vg0/x; meta-disk internal; address 127.0.0.4:7799; }
}
""",  # noqa: E501  (a config file as an operator writes it)
    "9-three-nodes": """\
# DRBD 9, three nodes: quorum, two volumes (one with its own disk option), a mesh and a connection.
resource r2 {
  options { quorum majority; on-no-quorum io-error; on-no-data-accessible io-error; }
  net { protocol C; fencing dont-care; }
  volume 0 { device /dev/drbd10; disk /dev/vg0/a; meta-disk internal; }
  volume 1 { device /dev/drbd11; disk /dev/vg0/b; meta-disk internal; disk { disk-timeout 100; } }
  on @HOST@ { node-id 0; address 127.0.0.1:7790; }
  on nfs-b { node-id 1; address 127.0.0.2:7790; }
  on tiebreaker { node-id 2; address 127.0.0.3:7790; }
  connection-mesh { hosts @HOST@ nfs-b tiebreaker; net { ping-int 2; } }
  connection { host @HOST@; host nfs-b; net { protocol B; ping-int 1; } }
}
""",
    "8.4": """\
# DRBD 8.4 syntax: fencing in disk, a bare allow-two-primaries flag, protocol from common.
common {
  net { protocol A; }
  handlers { fence-peer "/usr/lib/drbd/crm-fence-peer.sh"; }
}
resource r0 {
  net { allow-two-primaries; after-sb-1pri discard-secondary; ping-int 2; ping-timeout 10; }
  disk { fencing resource-and-stonith; on-io-error call-local-io-error; }
  handlers { local-io-error "/usr/lib/drbd/notify-io-error.sh; halt -f"; }
  options { on-no-data-accessible suspend-io; }
  on @HOST@ { device /dev/drbd0; disk /dev/vg0/nfs; address 127.0.0.1:7789; meta-disk internal; }
  on nfs-b { device /dev/drbd0; disk /dev/vg0/nfs; address 127.0.0.2:7789; meta-disk internal; }
}
""",
}
RESOURCE = {"9-two-nodes": "r0", "9-three-nodes": "r2", "8.4": "r0"}


def fixture(name: str) -> DrbdOptions:
    return parse_dump((DATA / f"dump-{name}.txt").read_text(), RESOURCE[name])


def write_conf(tmp_path: Path, source: str) -> Path:
    path = tmp_path / "drbd.conf"
    path.write_text(source.replace("@HOST@", HOST))
    return path


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


@needs_drbdadm_84
def test_drbdadm_84_here_prints_what_the_fixture_holds(tmp_path: Path) -> None:
    def run84(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        return drbd_config._run([str(DRBDADM_84), *argv[1:]])

    live = read_effective("r0", config_file=write_conf(tmp_path, SOURCES["8.4"]), run=run84)
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
    def run84(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        return drbd_config._run([str(DRBDADM_84), *argv[1:]])

    with pytest.raises(DrbdConfigError) as e:
        read_effective("nope", config_file=write_conf(tmp_path, SOURCES["8.4"]), run=run84)
    assert str(e.value) == "drbdadm: 'nope' not defined in your config (for this host)."


# ---- findings ------------------------------------------------------------------------------------

MDI = 3 * 1.0 + (256 - 100) / 256  # VRRPv3, priority 100, 1 s adverts
# What drbdha asks for (README "DRBD settings to pair with it", with a timeout below ping-int
# and drbdha's own fence-peer handler): only the peer-loss and fencing notes are left.
CLEAN: dict[str, str | None] = {
    "on_io_error": "detach",
    "fencing": "resource-and-stonith",
    "fence_peer_handler": "/usr/bin/drbdha fence-peer",
    "ping_int": "1",
    "ping_timeout": "5",
    "timeout": "9",
}
CRM = "/usr/lib/drbd/crm-fence-peer.9.sh"
CASES: list[Any] = [
    pytest.param({}, MDI, [("info", "ping-int"), ("info", "fencing")], id="clean"),
    pytest.param(
        dict.fromkeys(CLEAN),
        MDI,
        [("warning", "fencing"), ("warning", "ping-int")],
        id="all-defaults",
    ),
    pytest.param(
        {"on_io_error": "pass_on"},
        MDI,
        [("warning", "on-io-error"), ("info", "fencing")],
        id="pass_on",
    ),
    pytest.param(
        {"on_io_error": "call-local-io-error", "local_io_error_handler": "/sbin/halt -f"},
        MDI,
        [("info", "on-io-error"), ("info", "fencing")],
        id="call-local-io-error",
    ),
    pytest.param(
        {"on_io_error": "call-local-io-error"},
        MDI,
        [("info", "on-io-error"), ("info", "fencing")],
        id="call-local-io-error-no-handler",
    ),
    pytest.param(
        {"disk_timeout": "100"},
        MDI,
        [("warning", "disk-timeout"), ("info", "fencing")],
        id="disk-timeout",
    ),
    pytest.param({"disk_timeout": "0"}, MDI, [("info", "fencing")], id="disk-timeout-0"),
    pytest.param({"fencing": "dont-care"}, MDI, [("warning", "fencing")], id="dont-care"),
    pytest.param(
        {
            "fencing": "dont-care",
            "quorum": "majority",
            "on_no_quorum": "io-error",
            "on_no_data_accessible": "io-error",
            "hosts": ("a", "b", "tiebreaker"),
        },
        MDI,
        [],
        id="dont-care-with-quorum",
    ),
    pytest.param(
        {"fencing": "resource-only", "fence_peer_handler": None},
        MDI,
        [("warning", "fence-peer"), ("warning", "fencing")],
        id="resource-only-no-handler",
    ),
    pytest.param(
        {"fence_peer_handler": None}, MDI, [("error", "fence-peer")], id="stonith-no-handler"
    ),
    pytest.param(
        {"fencing": "resource-only", "fence_peer_handler": CRM},
        MDI,
        [("warning", "fence-peer"), ("warning", "fencing")],
        id="crm-fence-peer",
    ),
    pytest.param(
        {"fence_peer_handler": CRM}, MDI, [("error", "fence-peer")], id="crm-fence-peer-stonith"
    ),
    pytest.param(
        {"fence_peer_handler": "/usr/lib/drbd/stonith_admin-fence-peer.sh"},
        MDI,
        [("error", "fence-peer")],
        id="stonith_admin-fence-peer",
    ),
    pytest.param(
        {"fencing": "resource-only"}, MDI, [("warning", "fencing")], id="drbdha-resource-only"
    ),
    pytest.param(
        {"fence_peer_handler": "/usr/local/sbin/fence-over-ssh"},
        MDI,
        [("info", "fencing")],
        id="stonith-own-handler",
    ),
    pytest.param(
        {"ping_int": "10"},
        MDI,
        [("warning", "ping-int"), ("info", "fencing")],
        id="ping-int-default",
    ),
    pytest.param(
        {"ping_timeout": "10"},
        MDI,
        [("info", "ping-int"), ("info", "fencing")],
        id="ping-timeout-1s",
    ),
    pytest.param(
        {},
        0.3 + 156 / 256 * 0.1,
        [("info", "ping-int"), ("info", "fencing")],
        id="fast-adverts-floor",
    ),
    pytest.param(
        {"ping_int": "120", "ping_timeout": "300"},
        MDI,
        [("warning", "ping-int"), ("warning", "ping-int"), ("info", "fencing")],
        id="peer-loss-beyond-promote-timeout",
    ),
    pytest.param(
        {"timeout": "60"},
        MDI,
        [("warning", "timeout"), ("info", "fencing")],
        id="timeout-above-ping-int",
    ),
    pytest.param(
        {"timeout": "10", "connect_int": "1"},
        MDI,
        [("warning", "timeout"), ("info", "fencing")],
        id="timeout-eq",
    ),
    pytest.param(
        {"after_sb_0pri": "discard-least-changes"},
        MDI,
        [("error", "after-sb-0pri"), ("info", "fencing")],
        id="0pri-discard-least-changes",
    ),
    pytest.param(
        {"after_sb_0pri": "discard-node-b"},
        MDI,
        [("error", "after-sb-0pri"), ("info", "fencing")],
        id="0pri-node",
    ),
    pytest.param(
        {"after_sb_0pri": "discard-zero-changes"},
        MDI,
        [("info", "after-sb-0pri"), ("info", "fencing")],
        id="0pri-discard-zero-changes",
    ),
    pytest.param(
        {"after_sb_1pri": "discard-secondary"},
        MDI,
        [("error", "after-sb-1pri"), ("info", "fencing")],
        id="1pri-discard-secondary",
    ),
    pytest.param(
        {"after_sb_1pri": "consensus"},
        MDI,
        [("info", "after-sb-1pri"), ("info", "fencing")],
        id="1pri-consensus",
    ),
    pytest.param(
        {"after_sb_0pri": "discard-younger-primary", "after_sb_1pri": "consensus"},
        MDI,
        [("error", "after-sb-0pri"), ("error", "after-sb-1pri"), ("info", "fencing")],
        id="1pri-consensus-on-discard",
    ),
    pytest.param(
        {"after_sb_2pri": "violently-as0p"},
        MDI,
        [("error", "after-sb-2pri"), ("info", "fencing")],
        id="2pri-violently",
    ),
    pytest.param(
        {"after_sb_2pri": "call-pri-lost-after-sb"},
        MDI,
        [("info", "after-sb-2pri"), ("info", "fencing")],
        id="2pri-call-pri-lost",
    ),
    pytest.param(
        {"quorum": "majority"},
        MDI,
        [("warning", "quorum"), ("warning", "on-no-data-accessible"), ("info", "fencing")],
        id="quorum-two-nodes",
    ),
    pytest.param(
        {
            "quorum": "2",
            "on_no_quorum": "suspend-io",
            "on_no_data_accessible": "suspend-io",
            "hosts": ("a", "b", "c"),
        },
        MDI,
        [("info", "fencing")],
        id="quorum-three-nodes",
    ),
    pytest.param(
        {"allow_two_primaries": "yes"},
        MDI,
        [("error", "allow-two-primaries"), ("info", "fencing")],
        id="dual-primary",
    ),
    pytest.param({"allow_two_primaries": "no"}, MDI, [("info", "fencing")], id="single-primary"),
    pytest.param(
        {"protocol": "A"},
        MDI,
        [("error", "protocol"), ("warning", "protocol"), ("info", "fencing")],
        id="protocol-A",
    ),
    pytest.param(
        {"protocol": "B"}, MDI, [("warning", "protocol"), ("info", "fencing")], id="protocol-B"
    ),
    pytest.param(
        {"protocol": "A", "fencing": "resource-and-stonith"},
        MDI,
        [("error", "protocol"), ("warning", "protocol"), ("info", "fencing")],
        id="protocol-A-stonith",
    ),
]


def _opts(**changes: Any) -> DrbdOptions:
    kw: dict[str, Any] = {"hosts": ("a", "b"), **CLEAN, **changes}
    return DrbdOptions(resource="r0", **kw)


@pytest.mark.parametrize(("changes", "mdi", "expected"), CASES)
def test_findings_table(
    changes: dict[str, Any], mdi: float, expected: list[tuple[str, str]]
) -> None:
    found = findings(
        _opts(**changes),
        master_down_interval=mdi,
        advert_interval=1.0,
        promote_timeout=30,
        fence_timeout=1.0,
    )
    # Every case also has the peer-loss note unless it says something else about ping-int.
    if not any(key == "ping-int" for _, key in expected):
        expected = [*expected, ("info", "ping-int")]
    assert sorted((f.level, f.key) for f in found) == sorted(expected)
    # Errors first, then warnings, then notes; every error and warning says what to do.
    assert [f.level for f in found] == sorted(
        (f.level for f in found), key=("error", "warning", "info").index
    )
    assert all(f.advice for f in found if f.level != "info")


def test_peer_loss_numbers() -> None:
    def peer_loss(mdi: float, **changes: Any) -> list[str]:
        return [
            f.message
            for f in findings(_opts(**changes), master_down_interval=mdi, advert_interval=1.0)
            if f.key == "ping-int"
        ]

    (slow,) = peer_loss(MDI, ping_int="10")
    assert "within 10.5 s (ping-int 10 s + ping-timeout 0.5 s)" in slow
    assert "after 3.61 s" in slow
    assert "up to 6.89 s longer" in slow
    (floor,) = peer_loss(0.36)
    assert "waits up to 1.14 s for DRBD" in floor
    (none,) = peer_loss(MDI)
    assert none.endswith("DRBD adds nothing to a takeover")


def test_timeout_advice_stays_below_ping_int() -> None:
    (f,) = [
        f
        for f in findings(_opts(timeout="60"), master_down_interval=MDI, advert_interval=1.0)
        if f.key == "timeout"
    ]
    assert "timeout 60 (6 s) is not lower than ping-int 1 s" in f.message
    assert f.advice.startswith("set timeout 9;")


def test_findings_name_the_connection_or_volume_they_hold_for() -> None:
    found = findings(fixture("9-three-nodes"), master_down_interval=MDI, advert_interval=1.0)
    messages = {(f.level, f.key): f.message for f in found}
    assert messages["warning", "protocol"].startswith("connection vm/nfs-b: B:")
    assert messages["warning", "disk-timeout"].startswith("volume 1: disk-timeout 100")
    timeouts = [f.message for f in found if f.key == "timeout"]
    assert [m.split(":")[0] for m in timeouts] == ["connection vm/nfs-b", "connection-mesh"]
    assert ("warning", "fencing") not in messages  # quorum majority with a tiebreaker


def test_findings_shared_by_every_variant_carry_no_scope() -> None:
    found = findings(fixture("9-two-nodes"), master_down_interval=MDI, advert_interval=1.0)
    assert [(f.level, f.key) for f in found] == [
        ("warning", "fencing"),  # resource-only
        ("info", "ping-int"),
        ("info", "after-sb-0pri"),
    ]
    assert found[1].message.startswith("DRBD notices a dead peer within 1.5 s")


def test_drbd84_fixture_findings() -> None:
    found = findings(fixture("8.4"), master_down_interval=MDI, advert_interval=1.0)
    assert [(f.level, f.key) for f in found if f.level == "error"] == [
        ("error", "fence-peer"),
        ("error", "after-sb-1pri"),
        ("error", "allow-two-primaries"),
        ("error", "protocol"),
    ]


# ---- check-config --------------------------------------------------------------------------------

TOML = """\
[[vrrp_instance]]
name = "nfs"
interface = "eth0"
vrid = 51
virtual_ipaddress = ["192.0.2.100/24"]
storage = "nfs"

[storage.nfs]
drbd_resource = "{resource}"
"""
INSTANCE_LINE = "  nfs: VRRPv3 vrid 51 on eth0, priority 100, every 1s, 192.0.2.100/24"


def check_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, resource: str, drbd_source: str
) -> int:
    toml = tmp_path / "drbdha.toml"
    toml.write_text(TOML.format(resource=resource))
    monkeypatch.setenv("DRBDHA_DRBDADM_CONFIG", str(write_conf(tmp_path, drbd_source)))
    return cli.main(["-c", str(toml), "check-config"])


@needs_drbdadm
def test_check_config_missing_resource_is_an_error_naming_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert check_config(tmp_path, monkeypatch, "r9", SOURCES["9-two-nodes"]) == cli.EXIT_CONFIG
    out, err = capsys.readouterr()
    assert INSTANCE_LINE in out.splitlines()
    assert (
        "  ERROR storage.nfs.drbd_resource: drbdadm: 'r9' not defined in your config "
        "(for this host)."
    ) in out.splitlines()
    assert "1 error(s) in the DRBD configuration" in err


@needs_drbdadm
def test_check_config_good_resource_prints_findings_and_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert check_config(tmp_path, monkeypatch, "r0", SOURCES["9-two-nodes"]) == cli.EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == INSTANCE_LINE  # the existing lines are unchanged
    assert lines[2] == "storage.nfs: DRBD resource r0 (for nfs)"
    # The fixture fences resource-only (I/O goes on while its handler runs): a warning only.
    assert lines[3].startswith("  WARNING fencing: resource-only: the Primary goes on writing")
    assert any(
        ln.startswith("  INFO ping-int: DRBD notices a dead peer within 1.5 s") for ln in lines
    )


@needs_drbdadm
def test_check_config_warnings_keep_exit_0_errors_make_it_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    warned = SOURCES["9-two-nodes"].replace("on-io-error detach", "on-io-error pass_on")
    assert check_config(tmp_path, monkeypatch, "r0", warned) == cli.EXIT_OK
    assert "  WARNING on-io-error: pass_on:" in capsys.readouterr().out
    wrong = SOURCES["9-two-nodes"].replace("protocol C;", "protocol C; allow-two-primaries yes;")
    assert check_config(tmp_path, monkeypatch, "r0", wrong) == cli.EXIT_CONFIG
    lines = capsys.readouterr().out.splitlines()
    i = next(i for i, ln in enumerate(lines) if ln.startswith("  ERROR allow-two-primaries:"))
    assert lines[3] == lines[i]  # errors first
    assert lines[i + 1] == "      advice: remove allow-two-primaries (the default is no)"


def test_check_config_without_drbdadm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def missing(*_: Any, **__: Any) -> subprocess.CompletedProcess[str]:
        raise FileNotFoundError("drbdadm")

    monkeypatch.setattr(drbd_config.subprocess, "run", missing)
    assert check_config(tmp_path, monkeypatch, "r0", "") == cli.EXIT_CONFIG
    out = capsys.readouterr().out
    assert "  ERROR storage.nfs.drbd_resource: drbdadm not found: install drbd-utils" in out


def test_check_config_without_storage_runs_no_drbdadm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def forbidden(*_: Any, **__: Any) -> subprocess.CompletedProcess[str]:
        raise AssertionError("drbdadm must not run")

    monkeypatch.setattr(drbd_config.subprocess, "run", forbidden)
    toml = tmp_path / "drbdha.toml"
    toml.write_text(TOML.split("storage =", maxsplit=1)[0])
    assert cli.main(["-c", str(toml), "check-config"]) == cli.EXIT_OK
    assert capsys.readouterr().out.splitlines()[1:] == [INSTANCE_LINE, "ok"]


@needs_drbdadm
def test_drbdha_command_line(tmp_path: Path) -> None:
    toml = tmp_path / "drbdha.toml"
    toml.write_text(TOML.format(resource="r9"))
    conf = write_conf(tmp_path, SOURCES["9-two-nodes"])
    env = {**os.environ, "DRBDHA_DRBDADM_CONFIG": str(conf)}
    r = subprocess.run(
        [sys.executable, "-m", "drbdha", "-c", str(toml), "check-config"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert r.returncode == 2, r.stderr
    assert "storage.nfs.drbd_resource: drbdadm: 'r9' not defined" in r.stdout


NFS_KEYS = """
mountpoint = "/srv/nfs"
nfs_state_dir = "/srv/nfs/.nfs-state"

[[storage.nfs.exports]]
path = "/srv/nfs/data"
clients = ["192.0.2.0/24"]
fsid = 1
"""


def nfs_config_with_nfs_server_enabled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config with the NFS chain, on a host (as nfs_advice sees it) with nfs-kernel-server
    installed and enabled at boot; DRBD's configuration from the fixture."""
    real = nfs_advice.findings
    monkeypatch.setattr(
        nfs_advice,
        "findings",
        lambda s: real(s, enabled=lambda _: True, which=lambda t: f"/usr/sbin/{t}"),
    )
    toml = tmp_path / "drbdha.toml"
    toml.write_text(TOML.format(resource="r0") + NFS_KEYS)
    monkeypatch.setenv("DRBDHA_DRBDADM_CONFIG", str(write_conf(tmp_path, SOURCES["9-two-nodes"])))
    return toml


@needs_drbdadm
def test_check_config_says_nfs_server_must_not_start_at_boot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = nfs_config_with_nfs_server_enabled(tmp_path, monkeypatch)
    assert cli.main(["-c", str(toml), "check-config"]) == cli.EXIT_CONFIG
    out = capsys.readouterr().out
    assert "  ERROR storage.nfs.nfs_state_dir: nfs-server.service is enabled" in out


@needs_drbdadm
def test_run_refuses_to_start_on_what_check_config_calls_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The unit has no ExecStartPre=check-config: `run` makes the same checks itself."""
    toml = nfs_config_with_nfs_server_enabled(tmp_path, monkeypatch)
    monkeypatch.setattr("drbdha.daemon.run", lambda _: pytest.fail("the daemon must not start"))
    assert cli.main(["-c", str(toml), "run"]) == cli.EXIT_CONFIG
    out, err = capsys.readouterr()
    assert out == ""
    assert "  ERROR storage.nfs.nfs_state_dir: nfs-server.service is enabled" in err
    assert "drbdha: 1 error(s): see `drbdha check-config`" in err
    assert "WARNING fencing" in err  # warnings are shown at start too, and do not stop it
    assert "INFO" not in err


@needs_drbdadm
def test_check_config_refuses_this_nodes_own_address_as_the_peer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # 127.0.0.1 is this host's (check-config binds to it); the fence request would only
    # ever reach this node's own drbdha.
    key = tmp_path / "peer.key"
    key.write_text("k" * 44)
    key.chmod(0o600)
    toml = tmp_path / "drbdha.toml"
    toml.write_text(
        TOML.format(resource="r0") + f'\n[peer]\naddress = "127.0.0.1"\nsecret_file = "{key}"\n'
    )
    monkeypatch.setenv("DRBDHA_DRBDADM_CONFIG", str(write_conf(tmp_path, SOURCES["9-two-nodes"])))
    assert cli.main(["-c", str(toml), "check-config"]) == cli.EXIT_CONFIG
    out = capsys.readouterr().out
    assert "ERROR peer.address: 127.0.0.1 is this node's own address" in out


@needs_drbdadm
def test_check_config_states_the_unfenced_window_with_the_heartbeat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    unfenced = SOURCES["9-two-nodes"].replace("fencing resource-only; ", "")
    # The fixture's timers: ping-int 1 s, timeout 0.9 s; adverts every 1 s. The advert that
    # proves the Primary alive comes after the Primary's DRBD went on: a 0.7 s window, said.
    for heartbeat, said in (
        ("0.1", "within 1.6 s (plus drbdadm's own time)"),
        ("0.1", "writes alone after 0.9 s at the earliest"),
        ("0.1", "in the 0.7 s between are lost if it dies then"),
        ("0", "with replication_heartbeat = 0, drbdha outdates this copy"),
    ):
        toml = tmp_path / "drbdha.toml"
        toml.write_text(TOML.format(resource="r0") + f"replication_heartbeat = {heartbeat}\n")
        monkeypatch.setenv("DRBDHA_DRBDADM_CONFIG", str(write_conf(tmp_path, unfenced)))
        assert cli.main(["-c", str(toml), "check-config"]) == cli.EXIT_OK
        out = capsys.readouterr().out
        assert said in out, out
