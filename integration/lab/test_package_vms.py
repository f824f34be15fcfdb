"""drbdha's Debian package in a lab node: what `up` installed (the .deb debian/build-deb makes
from the working tree), its man pages, unit and conffile; purge, the README's install
(`apt install ./dist/drbdha_*.deb`, edit the config, `drbdha check-config`,
`systemctl enable --now drbdha`), and an upgrade under the running daemon.

One node (NODE) takes the changes, the other is only looked at. The tests run in order and
each leaves NODE as the storage tests expect it: the tree's package installed, drbdha stopped
and disabled, /etc/drbdha/drbdha.toml the package's example, nothing in /var/lib/drbdha. A
test that fails midway makes install_drbdha() install the tree's package there again.
"""

from __future__ import annotations

import json
import time
import tomllib
from collections.abc import Iterator

import drbdha_toml
import pytest
from cluster import NODES, REPO, Lab, vrrp_instance
from polling import wait_until

pytestmark = pytest.mark.slow

NODE = "node2"
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
CONFIG = "/etc/drbdha/drbdha.toml"
EXAMPLE = (REPO / "etc" / "drbdha.toml").read_text()
VIP = "10.77.1.164"  # none of the other tests' (chainlab.VIP is .100)
# A VRRP instance without storage: what an admin's edit of the example may come to. Metrics
# on: with bookworm's python3-prometheus-client 0.16 this lab found the daemon failing at
# start there (start_http_server() returns None before 0.17).
EDITED = drbdha_toml.render(
    comment="Written by integration/lab/test_package_vms.py",
    daemon={"control_socket": "/run/drbdha/control.sock", "metrics_listen": "127.0.0.1:9943"},
    instances=[vrrp_instance("pkg", 64, 100, 0.1, vip=VIP)],
)
# Everything the package installs or makes, and systemd's records of it.
PATHS = (
    "/etc/drbdha",
    "/usr/bin/drbdha",
    "/usr/lib/python3/dist-packages/drbdha",
    "/usr/share/drbdha",
    "/usr/share/doc/drbdha",
    "/usr/share/man/man8/drbdha.8.gz",
    "/usr/share/man/man5/drbdha.toml.5.gz",
    "/lib/systemd/system/drbdha.service",
    "/usr/lib/systemd/system/drbdha.service",
    "/etc/systemd/system/multi-user.target.wants/drbdha.service",
    "/var/lib/drbdha",
)


@pytest.fixture
def node(lab: Lab) -> Iterator[str]:
    """NODE, given back as the next test expects it (see the module's docstring)."""
    yield NODE
    lab.exec(
        NODE,
        "systemctl disable --now drbdha; systemctl reset-failed drbdha; rm -rf /var/lib/drbdha; "
        f"ip -4 addr del {VIP}/24 dev eth0 2>/dev/null; true",
        check=False,
        timeout=120,
    )
    lab.install_drbdha([NODE])  # nothing to do unless a test left another package there
    lab.put(NODE, CONFIG, EXAMPLE, 0o644)


def _sh(lab: Lab, vm: str, cmd: str, timeout: float = 120) -> str:
    return lab.exec(vm, cmd, timeout=timeout).stdout


def test_up_installed_the_trees_package_with_debians_libraries(lab: Lab) -> None:
    probe = (
        "import drbdha.net._pyroute2, structlog, prometheus_client, systemd.daemon, pyroute2\n"
        "for m in drbdha, structlog, prometheus_client, systemd.daemon: print(m.__file__)\n"
        "print(pyroute2.__path__[0])\n"
    )
    script = (
        "dpkg-query -W -f='${Status} ${Version}\\n' drbdha; drbdha --version; "
        f"python3 -c '{probe}'; ls /usr/local/lib/python3*/dist-packages 2>/dev/null | wc -l"
    )
    for out in lab.parallel(lambda n: _sh(lab, n, script), NODES):
        status, version, *files, pyroute2, local = out.splitlines()
        assert status == f"install ok installed {VERSION}"
        assert version == f"drbdha {VERSION}"
        assert files == [
            "/usr/lib/python3/dist-packages/drbdha/__init__.py",
            "/usr/lib/python3/dist-packages/structlog/__init__.py",
            "/usr/lib/python3/dist-packages/prometheus_client/__init__.py",
            "/usr/lib/python3/dist-packages/systemd/daemon.py",
        ]
        assert pyroute2 == "/usr/share/drbdha/vendor/pyroute2"
        assert local == "0"  # no pip-installed library shadows Debian's


def test_man_pages_unit_and_conffile(lab: Lab) -> None:
    out = _sh(lab, NODES[0], "MANWIDTH=80 man -P cat drbdha | head -n 8")
    assert out.startswith("DRBDHA(8)"), out
    assert "NAME" in out, out
    out = _sh(lab, NODES[0], "MANWIDTH=80 man -P cat 5 drbdha.toml | head -n 8")
    assert out.startswith("DRBDHA.TOML(5)"), out
    # The unit as installed, unchanged: verify exits 0 on some findings too, so no output.
    r = lab.exec(NODES[0], "systemd-analyze verify drbdha.service", check=False, timeout=120)
    assert (r.returncode, r.stdout + r.stderr) == (0, "")
    conffiles = _sh(lab, NODES[0], "dpkg-query -W -f='${Conffiles}' drbdha").split()
    assert conffiles[0] == CONFIG


def test_purge_leaves_nothing_then_the_readmes_apt_install(lab: Lab, node: str) -> None:
    lab.forget_install(node)
    t0 = time.monotonic()
    _sh(lab, node, "apt purge -y drbdha")
    purge = time.monotonic() - t0
    left = _sh(
        lab,
        node,
        "dpkg -L drbdha >/dev/null 2>&1 && echo 'dpkg -L drbdha'; "
        + "".join(f"test -e {p} && echo {p}; " for p in PATHS)
        # Anything else by that name on the root file system (/run, /proc: other mounts).
        + "find / -xdev -path /var/log/journal -prune -o -name '*drbdha*' -print; true",
    )
    assert left.split() == []
    deb = lab.build_deb()
    took = lab.install_deb(node, deb, "apt install")  # the README's command
    print(f"purge {purge:.1f} s, apt install {took:.1f} s")
    assert _sh(lab, node, f"cat {CONFIG}; stat -c %a {CONFIG}") == EXAMPLE + "644\n"
    r = lab.exec(node, "drbdha check-config", check=False, timeout=60)
    assert r.returncode == 2, r
    assert "this is the example file" in r.stdout + r.stderr
    r = lab.exec(node, "systemctl is-enabled drbdha; systemctl is-active drbdha", check=False)
    assert r.stdout.split() == ["disabled", "inactive"]  # the package starts nothing


def _main_pid(lab: Lab, node: str) -> int:
    return int(_sh(lab, node, "systemctl show -p MainPID --value drbdha"))


def _status(lab: Lab, node: str) -> dict:
    """The daemon's status document ({} while it does not answer)."""
    r = lab.exec(node, "drbdha status --json", check=False, timeout=60)
    try:
        return json.loads(r.stdout)
    except ValueError:
        return {}


def _master(lab: Lab, node: str) -> dict:
    """The status document once the one instance is master (it is alone on its VRID)."""

    def master() -> dict:
        doc = _status(lab, node)
        return doc if [i["state"] for i in doc.get("instances", [])] == ["master"] else {}

    return wait_until(f"{node} master", master, 60, every=1.0)


def test_readme_start_then_upgrade_restarts_the_running_daemon(lab: Lab, node: str) -> None:
    # The README: edit the example (here: replaced by a VRRP instance alone), check, enable.
    lab.put(node, CONFIG, EDITED, 0o644)
    _sh(lab, node, "drbdha check-config")
    _sh(lab, node, "systemctl enable --now drbdha")
    before = _master(lab, node)
    assert before["daemon"]["version"] == VERSION
    assert before["daemon"]["pid"] == _main_pid(lab, node)
    newer = lab.build_deb("+lab1")
    took = lab.install_deb(node, newer, "apt install -y")
    out = _sh(lab, node, "systemctl is-active drbdha; systemctl is-enabled drbdha")
    assert out.split() == ["active", "enabled"]
    assert _sh(lab, node, "drbdha --version").strip() == f"drbdha {VERSION}+lab1"
    after = _master(lab, node)
    assert after["daemon"]["version"] == f"{VERSION}+lab1", "not restarted onto the new code"
    assert after["daemon"]["pid"] == _main_pid(lab, node) != before["daemon"]["pid"]
    assert _sh(lab, node, f"cat {CONFIG}") == EDITED  # the admin's edit kept
    print(f"upgrade {took:.1f} s")
    # Back to the tree's package for the next tests: the node resumed from its checkpoint
    # (seconds) rather than a downgrade (a minute and a half of py3compile under emulation).
    if lab.restore(node):
        assert _sh(lab, node, "drbdha --version").strip() == f"drbdha {VERSION}"
