"""Rules across keys: what no single reader can see, each a problem with its key path.

The readers (validators.py) have already checked each value; a rule here looks only at keys
that read (a missing one is a problem already, and a rule about it would only echo it) and
appends (key path, message) to `problems`, never raises. parse() sorts them all at the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from drbdha.config.model import ExportConfig
from drbdha.config.schema import FILESYSTEM_KEYS, NFS_KEYS, _key
from drbdha.config.validators import _host_name


def _check_instance(inst: dict[str, Any], path: str, problems: list[tuple[str, str]]) -> None:
    """Rules that involve more than one key of an instance."""
    version = inst.get("version")
    _check_interval(version, inst.get("advert_interval"), path, problems)
    vips = inst.get("virtual_ipaddress") or ()
    families = {v.version for v in vips}
    if len(families) > 1:
        problems.append(
            (f"{path}.virtual_ipaddress", "mixes IPv4 and IPv6; use one instance per family")
        )
    if version == 2 and 6 in families:
        problems.append((f"{path}.version", "VRRPv2 is IPv4 only (RFC 3768); use version = 3"))
    peers = inst.get("unicast_peers") or ()
    if families and any(p.version not in families for p in peers):
        problems.append(
            (f"{path}.unicast_peers", "must be of the same family as the virtual addresses")
        )
    if inst.get("checksum_mode") == "rfc9568" and (version == 2 or 6 in families):
        problems.append((f"{path}.checksum_mode", '"rfc9568" applies to VRRPv3 over IPv4 only'))


def _check_auth_hmac(auth: dict[str, Any], path: str, problems: list[tuple[str, str]]) -> None:
    """The signing key must be one of the keys (keepalived's rollout: only "receive-only"
    signs nothing and needs none)."""
    active, ids = auth.get("active_key"), {k for k, _ in auth.get("keys", ())}
    if active is None and auth.get("mode") != "receive-only":
        problems.append((f"{path}.active_key", f"is required in mode {auth.get('mode')!r}"))
    elif active is not None and ids and active not in ids:
        problems.append((f"{path}.active_key", f"{active} is not one of the keys {sorted(ids)}"))


def _check_interval(
    version: int | None, interval: float | None, path: str, problems: list[tuple[str, str]]
) -> None:
    """advert_interval against the VRRP version's field."""
    if version == 2 and interval is not None and interval != int(interval):
        # RFC 3768 §5.3.7: the v2 field is whole seconds. keepalived rounds with a warning;
        # we refuse, so what runs is what was written.
        problems.append((f"{path}.advert_interval", f"VRRPv2 needs whole seconds, got {interval}"))
    if version == 3 and interval is not None:
        if interval > 40.95:
            problems.append(
                (f"{path}.advert_interval", f"VRRPv3 allows at most 40.95, got {interval}")
            )
        elif abs(interval * 100 - round(interval * 100)) > 1e-6:
            problems.append(
                (f"{path}.advert_interval", f"VRRPv3 has centisecond steps, got {interval}")
            )


def _check_unique(instances: list[dict[str, Any]], problems: list[tuple[str, str]]) -> None:
    names: dict[str, int] = {}
    ids: dict[tuple[str, int, int], int] = {}
    for i, inst in enumerate(instances):
        if "name" in inst:
            if inst["name"] in names:
                problems.append(
                    (f"vrrp_instance[{i}].name", f"duplicates vrrp_instance[{names[inst['name']]}]")
                )
            names.setdefault(inst["name"], i)
        if {"interface", "vrid", "virtual_ipaddress"} <= inst.keys() and inst["virtual_ipaddress"]:
            # RFC 5798 §5.2.3: a VRID identifies one virtual router per interface and family.
            key = (inst["interface"], inst["vrid"], inst["virtual_ipaddress"][0].version)
            if key in ids:
                problems.append(
                    (
                        f"vrrp_instance[{i}].vrid",
                        f"duplicates vrrp_instance[{ids[key]}] on {key[0]}",
                    )
                )
            ids.setdefault(key, i)


def _check_resources_unique(
    storage: dict[str, dict[str, Any]], problems: list[tuple[str, str]]
) -> None:
    resources: dict[str, str] = {}
    for name, s in storage.items():
        res = s.get("drbd_resource")
        if res is None:
            continue
        if res in resources:
            # Two chains promoting one resource would fight over it.
            problems.append(
                (
                    f"storage.{_key(name)}.drbd_resource",
                    f"already used by storage.{_key(resources[res])}",
                )
            )
        resources.setdefault(res, name)


def _check_filesystem(raw: dict[str, Any], path: str, problems: list[tuple[str, str]]) -> None:
    # A filesystem key without a mountpoint was written for a step that would not run.
    if "mountpoint" not in raw:
        problems.extend(
            (f"{path}.{key}", "needs mountpoint (without it the chain mounts nothing)")
            for key in FILESYSTEM_KEYS
            if key in raw
        )


def _check_nfs(
    raw: dict[str, Any], s: dict[str, Any], path: str, problems: list[tuple[str, str]]
) -> None:
    if "nfs_state_dir" not in s:
        return  # given but invalid: already a problem, checks against it would only echo it
    state, mp, exports = s["nfs_state_dir"], s.get("mountpoint"), s["exports"]
    mp_invalid = "mountpoint" in raw and "mountpoint" not in s
    if state is None:
        problems.extend(
            (f"{path}.{key}", "needs nfs_state_dir (without it the chain runs no NFS server)")
            for key in (*NFS_KEYS, "exports")
            if key in raw
        )
        return
    if mp_invalid:
        mp = None
    elif mp is None:
        problems.append(
            (f"{path}.nfs_state_dir", "needs mountpoint (it is on the DRBD filesystem)")
        )
    elif not _below(state, mp):
        problems.append((f"{path}.nfs_state_dir", f"must be a directory below mountpoint {mp}"))
    if not raw.get("exports"):
        problems.append((f"{path}.exports", "an NFS server needs at least one export"))
    _check_exports(exports, mp, path, problems)


def _check_exports(
    exports: tuple[ExportConfig, ...],
    mp: Path | None,
    path: str,
    problems: list[tuple[str, str]],
) -> None:
    fsids: dict[int | str, int] = {}
    for i, e in enumerate(exports):
        key = f"{path}.exports[{i}]"
        if mp is not None and not (e.path == mp or _below(e.path, mp)):
            problems.append((f"{key}.path", f"must be mountpoint {mp} or below it"))
        if e.fsid in fsids:
            problems.append((f"{key}.fsid", f"already used by exports[{fsids[e.fsid]}]"))
        fsids.setdefault(e.fsid, i)
    paths = [e.path for e in exports]
    problems.extend(
        (f"{path}.exports[{i}].path", "exported twice (one entry lists all its clients)")
        for i, p in enumerate(paths)
        if p in paths[:i]
    )


def _below(p: Path, top: Path) -> bool:
    return p != top and p.is_relative_to(top) and ".." not in p.parts


def _check_storage_refs(
    instances: list[dict[str, Any]],
    storage: dict[str, dict[str, Any]],
    problems: list[tuple[str, str]],
) -> None:
    users = _storage_users(instances, storage, problems)
    problems.extend(
        (f"storage.{_key(name)}", "not used by any [[vrrp_instance]]")
        for name in storage.keys() - users.keys()
    )
    for name, i in users.items():
        if name in storage:
            _check_default_scope(instances[i], i, name, storage[name], problems)


def _storage_users(
    instances: list[dict[str, Any]],
    storage: dict[str, dict[str, Any]],
    problems: list[tuple[str, str]],
) -> dict[str, int]:
    """The instance that names each chain (the first, when two do); a bad reference is a
    problem."""
    users: dict[str, int] = {}
    for i, inst in enumerate(instances):
        name = inst.get("storage")
        if name is None:
            continue
        if name not in storage:
            problems.append((f"vrrp_instance[{i}].storage", f"no [storage.{_key(name)}] section"))
        elif inst.get("priority") == 255:
            # The address owner becomes master at once, before any promotion gate.
            problems.append(
                (f"vrrp_instance[{i}].priority", "255 (address owner) cannot have storage")
            )
        elif name in users:
            # One chain, one master: two instances could make two nodes bring it up.
            problems.append(
                (f"vrrp_instance[{i}].storage", f"already used by vrrp_instance[{users[name]}]")
            )
        users.setdefault(name, i)
    return users


def _check_default_scope(
    inst: dict[str, Any], i: int, chain: str, s: dict[str, Any], problems: list[tuple[str, str]]
) -> None:
    """Without nfs_server_scope, the NFS server scope is "drbdha-" and the instance's name,
    nfsd's hostname in its drop-in: it must be one (no '_', no ".." or "-." in it)."""
    if "name" not in inst or s.get("nfs_state_dir") is None or "nfs_server_scope" not in s:
        return  # no NFS server, or already a problem
    scope = f"drbdha-{inst['name']}"
    if s["nfs_server_scope"] is None and not _host_name(scope):
        why = (
            f"makes the NFS server scope {scope!r}, which is no host name (letters, digits, "
            f"'-' inside dot-separated labels): rename the instance or set "
            f"storage.{_key(chain)}.nfs_server_scope"
        )
        problems.append((f"vrrp_instance[{i}].name", why))
