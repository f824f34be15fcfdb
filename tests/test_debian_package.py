"""The Debian package as debian/build-deb builds it from this tree: its files, conffile,
dependencies and maintainer scripts, lintian, the man pages against the CLI and the example
configuration, the unit under systemd-analyze verify, and the vendored pyroute2 under
Debian's python3.

The build (about 15 s, plus 10 s of lintian) runs once for the module, in a copy of the
tree (debian/build-deb): nothing is left in the working tree. debian/fetch-vendor gets the
pyroute2 wheel through pip the first time, if debian/vendor/ does not have it yet. Without
debhelper & co. the build tests are skipped, except in CI (CI=true), where they fail.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import drbdha
from drbdha import cli, manpages
from drbdha.net import _pyroute2

TREE = Path(__file__).resolve().parent.parent
BUILD_TOOLS = ("dpkg-buildpackage", "dh", "pybuild", "lintian", "argparse-manpage")
# What CI must install to build and check the package: debian/control's Build-Depends and
# lintian (and pip for debian/fetch-vendor, which the test takes from this interpreter).
APT = (
    "debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools "
    "python3-argparse-manpage lintian"
)
DEB_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"}


def _require(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t, path=DEB_ENV["PATH"]) is None]
    if not missing:
        return
    msg = f"{', '.join(missing)} not installed (apt-get install {APT})"
    if os.environ.get("CI") == "true":
        pytest.fail(msg)
    pytest.skip(msg)


def _run(*argv: str | Path, env: dict[str, str] | None = None, cwd: str | None = None) -> str:
    r = subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        env=env or DEB_ENV,
        cwd=cwd,
        check=False,
    )
    assert r.returncode == 0, f"{argv}: {r.stdout}\n{r.stderr}"
    return r.stdout


# ---- without a build -----------------------------------------------------------------


def test_one_version_everywhere() -> None:
    changelog = (TREE / "debian" / "changelog").read_text().splitlines()[0]
    debian = re.fullmatch(r"drbdha \((?P<v>[^)]+)\) \S+; urgency=\w+", changelog)
    assert debian is not None
    pyproject = tomllib.loads((TREE / "pyproject.toml").read_text())["project"]["version"]
    assert debian["v"] == pyproject == drbdha.__version__


def test_vendored_pyroute2_only_for_the_packaged_drbdha(tmp_path: Path) -> None:
    packaged = _pyroute2.DIST_PACKAGES / "drbdha" / "net" / "_pyroute2.py"
    path = ["/somewhere"]
    _pyroute2.use_vendored(path, vendor=tmp_path, here=packaged)
    _pyroute2.use_vendored(path, vendor=tmp_path, here=packaged)
    assert path == [str(tmp_path), "/somewhere"]  # first, and once
    path = []
    _pyroute2.use_vendored(path, vendor=tmp_path / "absent", here=packaged)
    _pyroute2.use_vendored(path, vendor=tmp_path, here=TREE / "drbdha" / "net" / "_pyroute2.py")
    assert path == []  # no vendor directory, or a drbdha of a venv or a clone


@pytest.mark.parametrize("suffix", ["lab1", "+", "+lab/1", "+.lab1", "+lab1.", "+lab 1"])
def test_build_deb_refuses_a_version_suffix_debian_and_pep440_would_not_take(
    suffix: str, tmp_path: Path
) -> None:
    # Refused before anything is fetched or built (the VM lab builds "+lab1" for an upgrade).
    r = subprocess.run(
        [TREE / "debian" / "build-deb", tmp_path],
        capture_output=True,
        text=True,
        env={**DEB_ENV, "DRBDHA_VERSION_SUFFIX": suffix},
        check=False,
    )
    assert r.returncode == 2, r
    assert "DRBDHA_VERSION_SUFFIX" in r.stderr
    assert list(tmp_path.iterdir()) == []


# The Exec*= settings whose first word systemd runs (systemd.service(5)).
EXEC_KEYS = (
    "ExecCondition",
    "ExecStartPre",
    "ExecStart",
    "ExecStartPost",
    "ExecReload",
    "ExecStop",
    "ExecStopPost",
)


def _exec_binaries(unit: str) -> list[str]:
    """The program of each Exec*= line, without systemd's prefixes (@-:+!)."""
    out = []
    for line in unit.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() in EXEC_KEYS and value.strip():
            out.append(value.strip().lstrip("@-:+!").split()[0])
    return out


def _depends(control: str, package: str) -> set[str]:
    """The names in `package`'s Depends in debian/control (no substvars, no alternatives:
    only what is certain to be installed with it)."""
    stanza = next(p for p in control.split("\n\n") if f"\nPackage: {package}\n" in f"\n{p}\n")
    lines = [ln for ln in stanza.splitlines() if not ln.startswith("#")]
    field = re.search(r"^Depends:(.*(?:\n[ \t].*)*)", "\n".join(lines), re.MULTILINE)
    assert field is not None
    names = {d.strip().split()[0] for d in field[1].split(",") if d.strip()}
    return {n for n in names if not n.startswith("${") and "|" not in n}


def _owners(path: str) -> list[str]:
    """The packages that ship `path` on this host (dpkg -S), under /bin or /usr/bin: bookworm
    ships most programs in /bin, trixie (merged /usr) in /usr/bin."""
    merged = path.removeprefix("/usr") if path.startswith("/usr/") else "/usr" + path
    for candidate in (path, merged):
        r = subprocess.run(
            ["dpkg", "-S", candidate], capture_output=True, text=True, env=DEB_ENV, check=False
        )
        owners = [
            name.strip()
            for line in r.stdout.splitlines()
            if not line.startswith("diversion by ") and line.endswith(f": {candidate}")
            for name in line.removesuffix(f": {candidate}").split(",")
        ]
        if owners:
            return owners
    return []


def test_every_exec_binary_of_the_unit_is_on_a_minimal_debian() -> None:
    """A minimal install (debootstrap --variant=minbase, a container image) has the
    Essential and Priority: required packages and what drbdha depends on, nothing more:
    bookworm's procps (/bin/kill) is Priority: important, absent there."""
    _require("dpkg", "dpkg-query")
    unit = (TREE / "systemd" / "drbdha.service").read_text()
    depends = _depends((TREE / "debian" / "control").read_text(), "drbdha")
    binaries = [b for b in _exec_binaries(unit) if b != "/usr/bin/drbdha"]  # its own
    assert binaries, "no Exec*= line found"
    missing: dict[str, object] = {}
    for binary in binaries:
        owners = {  # package: "<Essential> <Priority>", e.g. procps: "no important"
            o.split(":")[0]: _run("dpkg-query", "-W", "-f", "${Essential} ${Priority}", o)
            for o in _owners(binary)
        }
        minimal = [o for o, f in owners.items() if f.startswith("yes ") or f.endswith(" required")]
        if not minimal and not depends & owners.keys():
            missing[binary] = owners or "no package on this host ships it"
    assert missing == {}


# ---- the built package ---------------------------------------------------------------


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _require(*BUILD_TOOLS)
    out = tmp_path_factory.mktemp("deb")
    # pip for fetch-vendor: this interpreter's (Debian's python3 may have none).
    env = {**DEB_ENV, "PYTHON": sys.executable, "TMPDIR": str(out)}
    r = subprocess.run(
        [TREE / "debian" / "build-deb", out], capture_output=True, text=True, env=env, check=False
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    (built,) = out.glob("drbdha_*_all.deb")
    assert built.name == f"drbdha_{drbdha.__version__}_all.deb"
    return built


@pytest.fixture(scope="module")
def root(deb: Path) -> Path:
    """The package's files, unpacked."""
    root = deb.parent / "root"
    _run("dpkg-deb", "-x", deb, root)
    return root


@pytest.fixture(scope="module")
def unit_dir(root: Path) -> Path:
    # bookworm's debhelper installs units in /lib/systemd/system, trixie's in /usr/lib/...
    (unit,) = root.glob("**/systemd/system/drbdha.service")
    return unit.parent


def _control(deb: Path, name: str) -> str:
    return _run("dpkg-deb", "--info", deb, name)


@pytest.mark.slow
def test_file_list(deb: Path, unit_dir: Path) -> None:
    files = {
        line.split()[-1].removeprefix(".") for line in _run("dpkg-deb", "-c", deb).splitlines()
    }
    unit = "/" + str(unit_dir.relative_to(deb.parent / "root") / "drbdha.service")
    assert unit in {"/lib/systemd/system/drbdha.service", "/usr/lib/systemd/system/drbdha.service"}
    want = {
        "/usr/bin/drbdha",
        unit,
        "/etc/drbdha/drbdha.toml",
        "/usr/share/man/man8/drbdha.8.gz",
        "/usr/share/man/man5/drbdha.toml.5.gz",
        "/usr/share/doc/drbdha/README.md",
        "/usr/share/doc/drbdha/grafana/drbdha.json",
        "/usr/share/doc/drbdha/copyright",
        "/usr/lib/python3/dist-packages/drbdha/cli.py",
        "/usr/share/drbdha/vendor/pyroute2/iproute/linux.py",
    }
    assert want - files == set()
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]
    assert _control(deb, "conffiles").split() == ["/etc/drbdha/drbdha.toml"]


@pytest.mark.slow
def test_dependencies(deb: Path) -> None:
    fields = {f: _run("dpkg-deb", "--field", deb, f).strip() for f in ("Depends", "Recommends")}
    depends = {d.split()[0] for d in fields["Depends"].split(", ")}
    assert {"python3-systemd", "python3-structlog", "python3-prometheus-client"} <= depends
    assert "procps" in depends  # /bin/kill (ExecReload=)
    assert "python3-pyroute2" not in depends  # carried in /usr/share/drbdha/vendor
    assert "python3-structlog (>= 22.1)" in fields["Depends"]  # pyproject.toml's bounds
    assert set(fields["Recommends"].split(", ")) == {"drbd-utils", "nfs-kernel-server"}


@pytest.mark.slow
def test_maintainer_scripts_never_start_and_restart_only_a_running_daemon(deb: Path) -> None:
    postinst, prerm = _control(deb, "postinst"), _control(deb, "prerm")
    # Install: neither enabled nor started. Upgrade: try-restart, which restarts the daemon
    # only if it runs; a stopped one stays stopped.
    assert "try-restart 'drbdha.service'" in postinst
    assert not re.search(r"deb-systemd-invoke (start|restart)\b", postinst)
    assert "if deb-systemd-helper debian-installed 'drbdha.service'" in postinst  # --no-enable
    assert "new installations run enable" not in postinst  # the enabling snippet's comment
    # Removal stops it (debian/drbdha.prerm; --no-start drops debhelper's own stop).
    assert '[ "$1" = remove ]' in prerm
    assert "deb-systemd-invoke stop drbdha.service" in prerm
    assert "rm -rf /var/lib/drbdha" in _control(deb, "postrm")


@pytest.mark.slow
def test_lintian_has_no_errors_or_warnings(deb: Path) -> None:
    r = subprocess.run(
        ["lintian", "--pedantic", "--info", deb],
        capture_output=True,
        text=True,
        env=DEB_ENV,
        check=False,
    )
    tags = [line for line in r.stdout.splitlines() if re.match(r"[A-Z]: ", line)]
    print("\n".join(tags))  # informational tags too, for the log
    assert [t for t in tags if t[0] in "EW"] == []
    assert r.returncode == 0, r.stderr


def _page(root: Path, path: str) -> str:
    return gzip.decompress((root / path).read_bytes()).decode()


@pytest.mark.slow
def test_man_pages_cover_every_subcommand_and_key(root: Path) -> None:
    drbdha8 = _page(root, "usr/share/man/man8/drbdha.8.gz")
    text = drbdha8.replace("\\-", "-")
    for name in manpages.subcommands(cli._parser()):
        assert f"'drbdha {name}'" in text
    toml5 = _page(root, "usr/share/man/man5/drbdha.toml.5.gz")
    conf = (root / "etc/drbdha/drbdha.toml").read_text()
    assert conf == (TREE / "etc" / "drbdha.toml").read_text()
    missing = [k for k in manpages.keys_of(conf) if f"\\fB{manpages.roff(k)}\\fR = " not in toml5]
    assert missing == []
    for page in ("man8/drbdha.8.gz", "man5/drbdha.toml.5.gz"):
        r = subprocess.run(
            ["man", "--warnings", "-l", root / "usr/share/man" / page],
            capture_output=True,
            text=True,
            env={**DEB_ENV, "MANWIDTH": "80"},
            check=False,
        )
        assert (r.returncode, r.stderr) == (0, ""), page
        assert "SEE ALSO" in r.stdout


@pytest.mark.slow
def test_systemd_analyze_verify_the_installed_unit(root: Path, unit_dir: Path) -> None:
    """The unit as the package installs it, unchanged, in a root made of the package and
    the host's own units (sysinit.target & co.) and /bin/kill (ExecReload=)."""
    _require("systemd-analyze")
    shutil.copytree(
        "/lib/systemd/system",
        unit_dir,
        dirs_exist_ok=True,
        symlinks=True,
        ignore=lambda _dir, names: [n for n in names if n.startswith("drbdha")],
    )
    (root / "bin").mkdir(exist_ok=True)
    shutil.copy2("/bin/kill", root / "bin" / "kill")
    r = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", "drbdha.service"],
        capture_output=True,
        text=True,
        env=DEB_ENV,
        check=False,
    )
    # verify exits 0 on unknown keys and bad values too: any output is a finding.
    assert (r.returncode, r.stdout + r.stderr) == (0, "")


def _packaged_env(root: Path) -> dict[str, str]:
    return {
        **DEB_ENV,
        "PYTHONPATH": f"{root}/usr/share/drbdha/vendor:{root}/usr/lib/python3/dist-packages",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


@pytest.mark.slow
def test_packaged_cli_and_vendored_pyroute2_run_on_debians_python3(root: Path) -> None:
    env = _packaged_env(root)
    out = _run("/usr/bin/python3", "-m", "drbdha", "--version", env=env, cwd="/")
    assert out.strip() == f"drbdha {drbdha.__version__}"
    probe = (
        "import pyroute2, drbdha.net._pyroute2 as p; print(pyroute2.__path__[0], p.AsyncIPRoute)"
    )
    out = _run("/usr/bin/python3", "-c", probe, env=env, cwd="/")
    assert out.startswith(f"{root}/usr/share/drbdha/vendor/pyroute2 ")


@pytest.mark.slow
def test_packaged_daemon_imports_with_debians_libraries(root: Path) -> None:
    """The daemon's modules with Debian's structlog, prometheus-client and systemd (the
    package's Depends), where they are installed."""
    has = subprocess.run(
        ["/usr/bin/python3", "-c", "import structlog, prometheus_client, systemd.daemon"],
        check=False,
        capture_output=True,
    )
    if has.returncode != 0:
        pytest.skip("python3-structlog, python3-prometheus-client, python3-systemd not installed")
    probe = "import drbdha.daemon, drbdha.logs, drbdha.metrics"
    _run("/usr/bin/python3", "-c", probe, env=_packaged_env(root), cwd="/")
