"""drbdha's Debian package in the lab's nodes (cluster.Lab)."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from topology import NODES, REPO, VIP, LabError, _sh

# What debian/build-deb builds the package from: drbdha/ and pyproject.toml (the wheel), the
# unit, the example, debian/ (with the vendored wheel), and what goes to /usr/share/doc.
PACKAGE_INPUTS = (
    "pyproject.toml",
    "README.md",
    "drbdha",
    "systemd",
    "etc",
    "contrib/grafana",
    "debian",
)


def package_digest() -> str:
    """sha256 of PACKAGE_INPUTS as debian/build-deb takes them (the files git sees: tracked
    and untracked, less what .gitignore excludes): each one's path, executable bit and content
    (a symlink: its target). A change anywhere else (tests, docs) builds nothing again."""
    ls = _sh(
        [
            "git",
            "-C",
            str(REPO),
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
            "--",
            *PACKAGE_INPUTS,
        ]
    )
    h = hashlib.sha256()
    for rel in sorted(set(ls.stdout.split("\0")) - {""}):
        p = REPO / rel
        if p.is_symlink():
            what = b"-> " + str(p.readlink()).encode()
        elif p.is_file():
            what = (b"x " if os.access(p, os.X_OK) else b"f ") + hashlib.sha256(
                p.read_bytes()
            ).digest()
        else:  # tracked, deleted in the tree: build-deb skips it too
            continue
        h.update(rel.encode() + b"\0" + what + b"\0")
    return h.hexdigest()


class Packages:
    """drbdha's .deb built from the working tree and installed in the nodes, and the
    nfsd drop-ins a booted node gets before its checkpoint. A part of cluster.Lab."""

    def nfs_dropins(self, vm: str) -> None:
        """The systemd drop-ins drbdha's nfsd step writes at its first start after a boot, for
        the lab's NFS config (scope drbdha-lab, 8 threads, lease and grace 10 s, the VIP),
        written with drbdha's own function, and the daemon-reload they need, before the
        checkpoint. A node resumed from it is a node on which drbdha has run since boot: in
        these one-CPU emulated VMs that reload takes 8 s idle and over 60 s while drbdha
        starts beside it, once per resume otherwise. Other values only cost that reload."""
        script = (
            "from drbdha.resources.nfs import write_if_changed, dropins\n"
            f"for p, t in dropins('drbdha-lab', 8, 10, 10, '{VIP}').items():\n"
            "    write_if_changed(p, t)\n"
        )
        self.exec(vm, "python3 - && systemctl daemon-reload", input=script, timeout=180)

    def build_deb(self, suffix: str = "") -> Path:
        """drbdha_<version>_all.deb built from the working tree by `debian/build-deb`, into the
        work directory; built again only when what the package is built from changed
        (package_digest()). `suffix`: DRBDHA_VERSION_SUFFIX, the same tree as a later version
        ("+lab1": 0.1.0+lab1), for an upgrade."""
        digest = package_digest()
        debs = self.work / "deb"
        out = debs / f"{digest}{suffix}"
        if built := sorted(out.glob("drbdha_*_all.deb")):
            return built[0]
        debs.mkdir(parents=True, exist_ok=True)
        for old in debs.iterdir():  # builds of trees that are gone
            if not old.name.startswith(digest):
                shutil.rmtree(old, ignore_errors=True)
        t0 = time.monotonic()
        tmp = debs / f".{out.name}.building"
        shutil.rmtree(tmp, ignore_errors=True)
        # pip for debian/fetch-vendor, the first time only: this interpreter's (the lab runs
        # under the repository's .venv in CI; Debian's python3 may have none).
        env = {**os.environ, "PYTHON": sys.executable, "DRBDHA_VERSION_SUFFIX": suffix}
        r = _sh([str(REPO / "debian" / "build-deb"), str(tmp)], check=False, env=env)
        if r.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise LabError(f"debian/build-deb failed:\n{(r.stdout + r.stderr)[-3000:]}")
        tmp.rename(out)
        (deb,) = out.glob("drbdha_*_all.deb")
        self.log(f"{deb.name} built from {REPO} in {time.monotonic() - t0:.1f} s")
        return deb

    def _installed(self, vm: str) -> str | None:
        """What install_deb() last installed in `vm` (while it ran from this overlay): the
        package_digest() of the tree, with the version suffix if it had one."""
        try:
            return self._p(vm, "installed").read_text().strip()
        except OSError:
            return None

    def forget_install(self, vm: str) -> None:
        """drbdha in `vm` is no longer known to be the tree's package (a test removes or
        replaces it): the next install_drbdha() installs it there again."""
        self._p(vm, "installed").unlink(missing_ok=True)

    def install_deb(self, vm: str, deb: Path, command: str = "dpkg -i") -> float:
        """Install a .deb build_deb() made in `vm` (the seconds it took): copied to
        /root/dist/, then `cd /root && COMMAND ./dist/NAME.deb` (as the README says, with
        `apt install`). dpkg -i installs the same version again, or an older one. A running
        drbdha is restarted by the package (its postinst: try-restart)."""
        self.forget_install(vm)
        t0 = time.monotonic()
        script = (
            f"set -e; cd /root; rm -rf dist; mkdir dist; cat > dist/{deb.name}; "
            f"DEBIAN_FRONTEND=noninteractive {command} ./dist/{deb.name} </dev/null; rm -r dist; "
            # On disk now: a `lab kill` (power cut) in the next ~30 s would otherwise leave the
            # files just written empty after the reboot (ext4 delayed allocation).
            "sync"
        )
        self.exec(vm, script, input=deb.read_bytes(), timeout=300)
        self._p(vm, "installed").write_text(deb.parent.name + "\n")
        return time.monotonic() - t0

    def install_drbdha(self, vms: Iterable[str] = NODES, force: bool = False) -> None:
        """Build drbdha's .deb from the working tree (build_deb()) and install it in the nodes,
        as a package: /usr/bin/drbdha, the unit (neither enabled nor started by the package),
        /etc/drbdha/drbdha.toml the example. A running drbdha is restarted onto the new code.
        Nothing is done when the tree is what was installed last (unless `force`)."""
        vms = list(vms)
        digest = package_digest()
        if not force and all(self._installed(vm) == digest for vm in vms):
            # Unchanged since the last install (an `up` of a running lab): nothing to do, and
            # the nodes' checkpoints stay valid.
            self.log(f"drbdha unchanged on {', '.join(vms)}")
            return
        deb = self.build_deb()
        for vm in vms:  # a checkpoint from before would resume the code it replaces
            self._checkpoints(vm).unlink(missing_ok=True)
        # dpkg --force-confnew --force-confmiss: /etc/drbdha/drbdha.toml becomes the package's,
        # whatever a test left there or removed (each test writes its own before starting
        # drbdha), and dpkg never stops to ask. A Depends the image lacks fails here.
        took = self.parallel(
            lambda vm: self.install_deb(vm, deb, "dpkg -i --force-confnew --force-confmiss"), vms
        )
        self.log(
            f"{deb.name} installed on "
            + ", ".join(f"{vm} ({t:.1f} s)" for vm, t in zip(vms, took, strict=True))
        )
