"""Builds and caches the lab's VM image (Python stdlib only).

One Debian root file system for every VM, bootstrapped with mmdebstrap, turned into a raw ext4
image (`mkfs.ext4 -d`, no loop device) plus the kernel and initrd for direct kernel boot. The
release is the host's (its own apt sources) unless DRBDHA_LAB_SUITE (`lab up --suite`) names
another, which comes from Debian's default mirror. The result is cached under a directory named by
a hash of everything that goes into it (this file, the files in guest/, the apt sources, the
release), so it is rebuilt only when one of those changes, and each release has its own.

The image has drbdha's runtime dependencies from Debian (the package's Depends) and not drbdha:
the lab installs the .deb it builds from the working tree (cluster.py, install_drbdha).

DRBD is Debian's 8.4 (the kernel's module, Debian's drbd-utils) unless DRBDHA_LAB_DRBD=9:
then the image has the DRBD 9.3.3 module built for its kernel and drbd-utils 9.34 instead
(build-drbd9, from the vendored sources, cached apart), and a cache entry of its own. The DRBD 9
image also has what the benchmarks run beside drbdha there: LINBIT's drbd-reactor 1.2.0 (its
promoter; build-drbd-reactor, cached apart; drbd-reactor.service installed, not enabled) and
Debian's resource-agents (the OCF agents the promoter starts: IPaddr2, portblock, exportfs,
Filesystem, nfsserver).
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
GUEST_DIR = HERE / "guest"

DEFAULT_CACHE = "/var/cache/drbdha-lab"
IMAGE_SIZE = "1500M"
KEEP_BUILDS = 2

# What the VMs need. drbdha's Depends are Debian's (python3-systemd, python3-structlog,
# python3-prometheus-client; pyroute2 0.9 is inside the package), here so that the .deb installs
# offline (the VMs have no network and no apt lists): a Depends the image lacks fails the
# install (dpkg -i). Nothing else is installed beside them (no pip wheels in /usr/local, which
# would come first on sys.path and hide a wrong Depends). man-db: `man drbdha`.
PACKAGES = [
    "linux-image-amd64",
    "initramfs-tools",
    "zstd",
    "systemd-sysv",
    "udev",
    "kmod",
    "drbd-utils",
    "keepalived",  # the classic stack the benchmarks compare drbdha with (bench/classic)
    "nfs-kernel-server",
    "nfs-common",
    "e2fsprogs",
    "xfsprogs",
    "dmsetup",
    "iproute2",
    "iputils-ping",
    "iputils-arping",
    "tcpdump",
    "procps",
    "psmisc",
    "python3",
    "python3-systemd",
    "python3-structlog",
    "python3-prometheus-client",
    "man-db",
    "qemu-guest-agent",
    # hwclock, which the agent's guest-set-time runs (a node resumed from a checkpoint gets
    # the host's time): in util-linux-extra since bookworm, pulled in there by another
    # package, not on trixie.
    "util-linux-extra",
    "openssh-server",
]

# Documentation and translations are of no use in a test VM and cost image size and build time;
# drbdha's own are kept: its tests read its man pages and the README the unit's Documentation=
# names. dpkg applies these in the image too (mmdebstrap writes them to
# /etc/dpkg/dpkg.cfg.d/99mmdebstrap), so they decide what the .deb installs there; the last
# pattern that matches a path wins, so the includes come after the excludes.
DPKG_EXCLUDES = [
    "/usr/share/doc/*",
    "/usr/share/man/*",
    "/usr/share/info/*",
    "/usr/share/locale/*",
    "/usr/share/lintian/*",
]
# The "?" in man? is needed: dpkg keeps an excluded directory only if it starts with an
# include's text before its first wildcard, so "/usr/share/man/man8/drbdha.8.gz" would not
# bring back man8/ and the install would fail ("unable to create ... No such file or
# directory"); "man?" keeps /usr/share/man/man1..9 (empty but for drbdha's pages).
DPKG_INCLUDES = [
    "/usr/share/man/man?/drbdha.8.gz",
    "/usr/share/man/man?/drbdha.toml.5.gz",
    "/usr/share/doc/drbdha/*",
]
SUITES = ("bookworm", "trixie")  # the releases the lab is tried on (any Debian suite may work)
DRBD_VERSIONS = ("8.4", "9")
BUILD_DRBD9 = HERE / "build-drbd9"
BUILD_DRBD_REACTOR = HERE / "build-drbd-reactor"
# What the DRBD 9 image has beyond PACKAGES (less Debian's drbd-utils, see _packages): the OCF
# agents drbd-reactor's promoter runs in LINBIT's HA NFS guide, for the benchmarks, and
# iptables, which their portblock agent drives (resource-agents does not depend on it).
DRBD9_PACKAGES = ["resource-agents", "iptables"]


@dataclasses.dataclass(frozen=True)
class Image:
    """A built image: the raw root file system and the files for direct kernel boot."""

    key: str
    dir: Path
    rootfs: Path
    kernel: Path
    initrd: Path


def host_release() -> str:
    fields = {}
    for line in Path("/etc/os-release").read_text().splitlines():
        if "=" in line:
            k, v = line.rstrip("\n").split("=", 1)
            fields[k] = v.strip('"')
    codename = fields.get("VERSION_CODENAME")
    if not codename:
        raise RuntimeError("cannot tell the host's Debian release from /etc/os-release")
    return codename


def lab_release() -> str:
    """The release the lab's VMs run: DRBDHA_LAB_SUITE, else the host's."""
    return os.environ.get("DRBDHA_LAB_SUITE") or host_release()


def _deb822_stanzas(text: str) -> Iterator[dict[str, str]]:
    stanza: dict[str, str] = {}
    last = None
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if not line.strip():
            if stanza:
                yield stanza
            stanza, last = {}, None
            continue
        if line[0].isspace() and last:
            stanza[last] += " " + line.strip()
            continue
        if ":" in line:
            k, v = line.split(":", 1)
            last = k.strip().lower()
            stanza[last] = v.strip()
    if stanza:
        yield stanza


def host_sources(release: str) -> list[str]:
    """The host's apt sources for `release` (and its -updates/-security), as one-line entries.

    Other repositories the host may have (vendor tools, language runtimes) are left out.
    """
    lines: list[str] = []

    def keep(suite: str) -> bool:
        return suite == release or suite.startswith((release + "-", release + "/"))

    apt = Path("/etc/apt")
    for path in sorted(apt.glob("sources.list.d/*.sources")):
        for st in _deb822_stanzas(path.read_text()):
            if st.get("enabled", "yes").lower() == "no" or "deb" not in st.get("types", "").split():
                continue
            components = st.get("components", "main")
            lines.extend(
                f"deb {uri} {suite} {components}"
                for uri in st.get("uris", "").split()
                for suite in st.get("suites", "").split()
                if keep(suite)
            )
    for path in [apt / "sources.list", *sorted(apt.glob("sources.list.d/*.list"))]:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            # "deb [options] URI SUITE COMPONENTS...  # comment"; options may contain spaces.
            words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb" and keep(words[2]):
                lines.append(" ".join(words))
    if not lines:
        # No usable host source: Debian's default mirror (mmdebstrap adds -updates and -security).
        return []
    return list(dict.fromkeys(lines))


def lab_drbd() -> str:
    """The DRBD the lab's VMs run: DRBDHA_LAB_DRBD ("8.4", the default, or "9")."""
    version = os.environ.get("DRBDHA_LAB_DRBD") or "8.4"
    if version not in DRBD_VERSIONS:
        raise RuntimeError(f"DRBDHA_LAB_DRBD={version!r}: one of {', '.join(DRBD_VERSIONS)}")
    return version


def _build_key(builder: Path, release: str, sources: list[str]) -> str:
    r = subprocess.run(
        [str(builder), "--key", release, *sources], capture_output=True, text=True, check=False
    )
    if r.returncode != 0:
        raise RuntimeError(f"DRBDHA_LAB_DRBD=9: {r.stderr.strip()}")
    return r.stdout.strip()


def _drbd_inputs(drbd: str, release: str, sources: list[str]) -> dict:
    """For DRBD 9: build-drbd9's and build-drbd-reactor's own keys (their release, sources,
    tarballs and script), so the image changes with what goes into the module and into
    drbd-reactor; they say what is missing (exit 3)."""
    if drbd == "8.4":
        return {}
    return {
        "drbd": drbd,
        "drbd9_build": _build_key(BUILD_DRBD9, release, sources),
        "drbd_reactor_build": _build_key(BUILD_DRBD_REACTOR, release, sources),
    }


def _packages(drbd: str) -> list[str]:
    # DRBD 9's drbd-utils are built (build-drbd9); Debian's would own the same paths.
    if drbd == "8.4":
        return PACKAGES
    return [p for p in PACKAGES if p != "drbd-utils"] + DRBD9_PACKAGES


def build_inputs(release: str | None = None) -> dict:
    release = release or lab_release()
    drbd = lab_drbd()
    sources = host_sources(release)
    guest = {}
    for p in sorted(GUEST_DIR.iterdir()):
        if p.is_file():
            guest[p.name] = hashlib.sha256(p.read_bytes()).hexdigest()
    return {
        **_drbd_inputs(drbd, release, sources),
        "release": release,
        "arch": os.uname().machine,
        "sources": sources,
        "packages": _packages(drbd),
        "dpkg_excludes": DPKG_EXCLUDES,
        "dpkg_includes": DPKG_INCLUDES,
        "image_size": IMAGE_SIZE,
        "builder": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
        "guest": guest,
    }


def build_key(inputs: dict) -> str:
    blob = json.dumps(inputs, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def cache_dir() -> Path:
    return Path(os.environ.get("DRBDHA_LAB_CACHE", DEFAULT_CACHE))


def _image_at(key: str, d: Path) -> Image | None:
    manifest = d / "manifest.json"
    if not manifest.exists():
        return None
    return Image(
        key=key, dir=d, rootfs=d / "rootfs.img", kernel=d / "vmlinuz", initrd=d / "initrd.img"
    )


def cached_image(release: str | None = None) -> Image | None:
    inputs = build_inputs(release)
    key = build_key(inputs)
    return _image_at(key, cache_dir() / key)


def _log(msg: str) -> None:
    print(f"lab: {msg}", file=sys.stderr, flush=True)


def _run(cmd: list[str], **kw: Any) -> None:
    subprocess.run(cmd, check=True, **kw)


def ensure_image(
    force: bool = False, log: Callable[[str], None] = _log, release: str | None = None
) -> Image:
    """The cached image for the current inputs (`release`: lab_release()), built first if it
    is missing (or if force)."""
    inputs = build_inputs(release)
    key = build_key(inputs)
    base = cache_dir()
    base.mkdir(parents=True, exist_ok=True)
    final = base / key
    with (base / ".lock").open("w") as lockf:
        fcntl.flock(lockf, fcntl.LOCK_EX)
        img = _image_at(key, final)
        if img and not force:
            return img
        for tool in ("mmdebstrap", "mkfs.ext4"):
            if not shutil.which(tool):
                raise RuntimeError(f"{tool} not found: apt-get install mmdebstrap e2fsprogs")
        drbd9, reactor = _build_drbd9(inputs, log) if inputs.get("drbd") == "9" else ("", "")
        work = base / f"{key}.building"
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)
        work.mkdir()
        t0 = time.monotonic()
        packages = inputs["packages"]
        log(f"building image {key} ({inputs['release']}, {len(packages)} packages) in {work}")
        rootfs_dir = work / "tree"
        hook = f'"{GUEST_DIR}/customize" "$1" "{GUEST_DIR}" "{drbd9}" "{reactor}"'
        cmd = [
            "mmdebstrap",
            "--variant=minbase",
            "--mode=root",
            "--format=directory",
            "--include=" + ",".join(packages),
            '--aptopt=APT::Install-Recommends "false"',
            "--customize-hook=" + hook,
        ]
        cmd += [f"--dpkgopt=path-exclude={p}" for p in DPKG_EXCLUDES]
        cmd += [f"--dpkgopt=path-include={p}" for p in DPKG_INCLUDES]
        cmd += [inputs["release"], str(rootfs_dir)]
        cmd += inputs["sources"]
        with (work / "mmdebstrap.log").open("w") as logf:
            try:
                _run(cmd, stdout=logf, stderr=subprocess.STDOUT)
            except subprocess.CalledProcessError:
                tail = (work / "mmdebstrap.log").read_text().splitlines()[-30:]
                raise RuntimeError("mmdebstrap failed:\n" + "\n".join(tail)) from None
        t_bootstrap = time.monotonic() - t0
        kernels = sorted(rootfs_dir.glob("boot/vmlinuz-*"))
        initrds = sorted(rootfs_dir.glob("boot/initrd.img-*"))
        if not kernels or not initrds:
            raise RuntimeError("no kernel or initrd in the bootstrapped tree")
        shutil.copyfile(kernels[-1], work / "vmlinuz")
        shutil.copyfile(initrds[-1], work / "initrd.img")
        _run(
            [
                "mkfs.ext4",
                "-q",
                "-F",
                "-L",
                "root",
                "-d",
                str(rootfs_dir),
                str(work / "rootfs.img"),
                IMAGE_SIZE,
            ],
            stdout=subprocess.DEVNULL,
        )
        shutil.rmtree(rootfs_dir)
        elapsed = time.monotonic() - t0
        manifest = dict(
            inputs,
            key=key,
            kernel=kernels[-1].name,
            initrd=initrds[-1].name,
            bootstrap_seconds=round(t_bootstrap, 1),
            build_seconds=round(elapsed, 1),
            built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        (work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        work.rename(final)
        log(f"image {key} built in {elapsed:.1f} s (bootstrap {t_bootstrap:.1f} s)")
        _prune(base, keep=final)
        return _image_at(key, final)  # type: ignore[return-value]


def _build_drbd9(inputs: dict, log: Callable[[str], None]) -> tuple[str, str]:
    """The DRBD 9 trees for the image: build-drbd9's tarball and build-drbd-reactor's, each
    built once per input."""
    log("DRBD 9: the module for the image's kernel and drbd-utils (build-drbd9, cached)")
    drbd9 = _run_builder(BUILD_DRBD9, inputs)
    log("DRBD 9: drbd-reactor (build-drbd-reactor, cached)")
    return drbd9, _run_builder(BUILD_DRBD_REACTOR, inputs)


def _run_builder(builder: Path, inputs: dict) -> str:
    """Runs a build-* script for the image's release and sources; its tarball's path."""
    r = subprocess.run(
        [str(builder), inputs["release"], *inputs["sources"]],
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        raise RuntimeError(f"{builder.name} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return r.stdout.strip().splitlines()[-1]


def _kind_of(d: Path) -> tuple[str, str] | None:
    try:
        manifest = json.loads((d / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return manifest.get("release"), manifest.get("drbd", "8.4")


def _prune(base: Path, keep: Path) -> None:
    """Keep the newest KEEP_BUILDS images of `keep`'s release and DRBD, and only finished
    ones; the others stay (a trixie or a DRBD 9 build does not evict the image CI uses)."""
    kind = _kind_of(keep)
    builds = sorted(
        (
            p
            for p in base.iterdir()
            if p.is_dir() and (p / "manifest.json").exists() and _kind_of(p) == kind
        ),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for p in builds[KEEP_BUILDS:]:
        if p != keep:
            shutil.rmtree(p, ignore_errors=True)
