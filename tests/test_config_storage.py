"""[storage.NAME] sections and the instances that name them: every problem with its key path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from config_cases import assert_one_problem, instance
from hypothesis import given
from hypothesis import strategies as st

from drbdha.config import (
    CHECK_OPTIONS,
    EXPORT_OPTIONS,
    STORAGE_OPTIONS,
    StorageConfig,
    parse,
)
from drbdha.errors import ConfigError
from drbdha.resources.nfs import dropins, exports_file, exports_text


def _data(storage: dict[str, Any] | None = None, **inst: Any) -> dict[str, Any]:
    """One instance "nfs" (config_cases.instance) on [storage.nfs], r0 unless `storage`."""
    return {
        "vrrp_instance": [instance(**{"name": "nfs", "storage": "nfs", **inst})],
        "storage": {"nfs": {"drbd_resource": "r0"}} if storage is None else storage,
    }


def _problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as exc:
        parse(data)
    return exc.value.problems


def test_minimal_chain_has_documented_defaults() -> None:
    cfg = parse(_data())
    inst = cfg.vrrp_instances[0]
    assert inst.storage == "nfs"
    assert cfg.storage_of(inst) == StorageConfig(name="nfs", drbd_resource="r0")
    s = cfg.storage["nfs"]
    assert (s.on_disk_loss, s.on_demote_failure, s.promote_backoff) == ("failover", "fault", 15.0)


def test_instance_without_storage_is_vrrp_only() -> None:
    data = _data(storage={})
    del data["vrrp_instance"][0]["storage"]
    cfg = parse(data)
    assert cfg.storage_of(cfg.vrrp_instances[0]) is None


BAD = [
    ("drbd_resource", "", "non-empty"),
    ("drbd_resource", "r0 r1", "DRBD resource name"),
    ("drbd_resource", "--force", "DRBD resource name"),
    ("drbd_resource", "../r0", "DRBD resource name"),
    # Issue 19: drbdadm reads these as other resources than the chain's.
    ("drbd_resource", "all", "means other resources to drbdadm"),
    ("drbd_resource", "minor-0", "means other resources to drbdadm"),
    ("drbd_resource", "r0\r", "DRBD resource name"),
    ("drbd_resource", "r\x000", "DRBD resource name"),
    ("drbd_resource", "r0\x7f", "DRBD resource name"),
    ("drbd_resource", "r\u00a00", "DRBD resource name"),  # no-break space
    ("drbd_resource", 'r0"', "DRBD resource name"),
    ("drbd_resource", "r0;", "DRBD resource name"),
    ("drbd_resource", "r{0}", "DRBD resource name"),
    ("drbd_resource", "r#0", "DRBD resource name"),
    ("on_disk_loss", "detach", "'failover', 'ignore'"),
    ("on_demote_failure", "panic", "'fault', 'reboot', 'poweroff'"),
    ("promote_timeout", 0, "1..3600"),
    ("demote_timeout", "30", "number"),
    ("promote_backoff", 0.5, "1..3600"),
    ("vip_timeout", 601, "1..600"),
    ("device", "drbd0", "absolute path"),
    # Issue 19: paths and options reach command lines and generated files unchecked.
    ("device", '/dev/drbd0"', "quotes or control characters"),
    ("device", "/dev/drbd\x000", "quotes or control characters"),  # no argv carries NUL
    ("mountpoint", "/", "below /"),
    ("mountpoint", "/srv/../etc", "without '..'"),
    ("mountpoint", "srv", "absolute path"),
    ("mountpoint", "/srv/nfs\n/etc", "quotes or control characters"),
    ("mountpoint", "/srv/nfs\x7f", "quotes or control characters"),  # DEL
    ("mountpoint", "/srv/nfs\u2028x", "quotes or control characters"),  # a line separator
    ("fstype", "ext4,nodev", "not a filesystem type"),
    ("fstype", "", "non-empty"),
    ("mount_options", "-o remount", "mount(8) options"),
    ("mount_options", "noatime, ro", "mount(8) options"),
    ("mount_options", ["noatime"], "non-empty string"),
    ("mount_options", "noatime\x00", "mount(8) options"),
    ("mount_options", "noatime\x1b", "mount(8) options"),
    ("mount_options", 'context="system_u:object_r:nfs_t:s0', "mount(8) options"),  # unpaired
    ("fsck", "force", "'auto', 'always', 'never'"),
    ("mount_timeout", 0, "1..3600"),
    ("unmount_timeout", 601, "1..600"),
    ("services", ["nginx"], "systemd unit name"),
    ("services", ["--now.service"], "systemd unit name"),
    ("services", ["nginx\n.service"], "systemd unit name"),
    ("services", ['ng"inx.service'], "systemd unit name"),
    ("services", ["my app.service"], "systemd unit name"),
    ("services", ["a@b@c.service"], "systemd unit name"),
    ("services", ["x" * 248 + ".service"], "systemd unit name"),  # 256 > 255
    ("services_timeout", 0, "1..3600"),
    ("nfs_state_dir", "state", "absolute path"),
    ("nfs_state_dir", "/srv/nfs/state\r", "quotes or control characters"),
    ("nfsd_threads", 0, "1..1024"),
    ("nfsv4_lease_time", 5, "10..3600"),
    ("nfsv4_grace_time", 1.5, "integer"),
    ("nfs_server_scope", "my scope", "host name"),
    ("nfs_server_scope", "x" * 65, "64 at most"),
    # hostname(1) in the drop-in refuses these, and nfsd would not start at takeover.
    ("nfs_server_scope", "drbdha_nfs", "host name"),
    ("nfs_server_scope", "-nfs", "host name"),
    ("nfs_server_scope", "nfs-", "host name"),
    ("nfs_server_scope", "nfs.", "host name"),
    ("nfs_server_scope", "a..b", "host name"),
    ("nfs_server_scope", "x" * 64, "host name"),  # a label has 63 at most
    ("nfs_start_timeout", 0, "1..3600"),
    ("nfs_stop_timeout", "1", "number"),
    ("builtin_checks", "yes", "true or false"),
    ("takeover_damping", -1, "0..3600"),
    ("replication_heartbeat", 11, "0..10"),
    ("replication_heartbeat_port", 0, "1..65535"),
]

EXPORT = {"path": "/srv/nfs/data", "clients": ["192.0.2.0/24"], "fsid": 1}
NFS = {
    "drbd_resource": "r0",
    "mountpoint": "/srv/nfs",
    "nfs_state_dir": "/srv/nfs/state",
    "exports": [EXPORT],
}


@pytest.mark.parametrize(("key", "value", "fragment"), BAD)
def test_bad_storage_value(key: str, value: Any, fragment: str) -> None:
    table = {**NFS, key: value}
    problems = _problems(_data(storage={"nfs": table}))
    assert_one_problem(problems, f"storage.nfs.{key}", fragment)


def test_every_storage_option_has_a_bad_value_case() -> None:
    assert {key for key, _, _ in BAD} == set(STORAGE_OPTIONS)


def test_filesystem_keys_need_a_mountpoint() -> None:
    table = {"drbd_resource": "r0", "fstype": "ext4", "fsck": "never"}
    assert _problems(_data(storage={"nfs": table})) == [
        ("storage.nfs.fsck", "needs mountpoint (without it the chain mounts nothing)"),
        ("storage.nfs.fstype", "needs mountpoint (without it the chain mounts nothing)"),
    ]


def test_a_filesystem_chain_with_defaults() -> None:
    cfg = parse(_data(storage={"nfs": {"drbd_resource": "r0", "mountpoint": "/srv/nfs"}}))
    s = cfg.storage["nfs"]
    assert (str(s.mountpoint), s.device, s.fstype, s.mount_options, s.fsck) == (
        "/srv/nfs",
        None,
        "auto",
        "",
        "auto",
    )
    assert (s.mount_timeout, s.unmount_timeout) == (60.0, 30.0)


def test_an_nfs_chain_with_defaults() -> None:
    s = parse(_data(storage={"nfs": NFS})).storage["nfs"]
    assert (s.nfsd_threads, s.nfsv4_lease_time, s.nfsv4_grace_time) == (8, 90, 90)
    assert s.nfs_server_scope is None
    (e,) = s.exports
    assert (str(e.path), e.clients, e.fsid, e.options) == (
        "/srv/nfs/data",
        ("192.0.2.0/24",),
        1,
        "rw,sync,no_subtree_check",
    )
    assert e.line() == '"/srv/nfs/data" 192.0.2.0/24(rw,sync,no_subtree_check,fsid=1)'


BAD_EXPORT = [
    ("path", "data", "absolute path"),
    # Issue 19: this path wrote a second line into /etc/exports.d, exporting /srv/nfs to all.
    ("path", '/srv/nfs/data"\n"/srv/nfs" *(rw,no_root_squash,insecure)', "quotes or control"),
    ("path", "/srv/nfs/data\x00", "quotes or control characters"),
    ("path", "/srv/nfs/my data", "whitespace"),
    ("path", "/srv/nfs/my\tdata", "quotes or control characters"),
    ("path", "/srv/nfs/a\u00a0b", "whitespace"),  # str.split() in the etab check splits here
    ("path", "/srv/nfs/a\\040b", "'\\'"),  # exportfs decodes \040 to a space
    ("path", "/srv/nfs/#data", "'#'"),
    ("clients", [], "at least 1"),
    ("clients", ["a b"], "exports(5) client"),
    ("clients", ["host(rw)"], "exports(5) client"),
    ("clients", ["192.0.2.0/24\r"], "exports(5) client"),
    ("clients", ["*\x7f"], "exports(5) client"),
    ("clients", ["a\u2028b"], "exports(5) client"),
    ("clients", ["host\x01"], "exports(5) client"),
    ("fsid", 0, "1..4294967295"),
    ("fsid", "root", "UUID"),
    ("fsid", True, "UUID"),
    ("options", "rw,fsid=3", "must not set fsid"),
    ("options", "rw sync", "exports(5) options"),
    ("options", "rw,\x00", "exports(5) options"),
    ("options", "rw\x1b[2J", "exports(5) options"),
    ("options", "rw\x85", "exports(5) options"),  # NEL: a line break to str.splitlines()
]


@pytest.mark.parametrize(("key", "value", "fragment"), BAD_EXPORT)
def test_bad_export_value(key: str, value: Any, fragment: str) -> None:
    problems = _problems(_data(storage={"nfs": {**NFS, "exports": [{**EXPORT, key: value}]}}))
    assert_one_problem(problems, f"storage.nfs.exports[0].{key}", fragment)


def test_every_export_option_has_a_bad_value_case() -> None:
    assert {key for key, _, _ in BAD_EXPORT} == set(EXPORT_OPTIONS)


@given(
    path=st.text(min_size=1, max_size=12),
    client=st.text(min_size=1, max_size=8),
    options=st.text(max_size=8),
)
def test_an_accepted_export_is_one_line_of_exports_d(path: str, client: str, options: str) -> None:
    """Whatever parse() accepts, the exports file has the comment and one line per export,
    and that line is the quoted path and the client with its options, nothing more."""
    export = {"path": "/srv/nfs/" + path, "clients": [client], "fsid": 1, "options": options}
    try:
        s = parse(_data(storage={"nfs": {**NFS, "exports": [export]}})).storage["nfs"]
    except ConfigError:
        return
    text = exports_text("nfs", s.exports)
    assert len(text.splitlines()) == 2
    line = s.exports[0].line()
    quoted, rest = line[1:].split('"', 1)
    assert (line[0], quoted) == ('"', str(s.exports[0].path))
    assert rest == f" {client}({options + ',' if options else ''}fsid=1)"
    assert not any(c.isspace() or c in "\\#" for c in quoted)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        # libmount's quoting of a value with commas, from mount(8)'s SELinux example
        ("mount_options", 'context="system_u:object_r:nfs_t:s0:c0,c1",noatime'),
        ("services", ["getty@tty1.service", "foo\\x2dbar.service", "a:b.target"]),
        ("nfs_server_scope", "nfs-a.example.org"),
        ("device", "/dev/disk/by-id/dm-name-vg0-nfs"),
        ("drbd_resource", "nfs-data_1.a"),
        ("drbd_resource", "minor-a"),
        ("drbd_resource", "allnfs"),
    ],
)
def test_what_the_tools_take_is_accepted(key: str, value: Any) -> None:
    s = parse(_data(storage={"nfs": {**NFS, key: value}})).storage["nfs"]
    got = getattr(s, key)
    assert (list(got) if isinstance(got, tuple) else str(got)) == value


def test_a_check_command_is_an_argv_and_may_hold_any_text_but_nul() -> None:
    check = {**CHECK, "command": ["/bin/sh", "-c", 'printf "%s\\n" ok\ntest -w /srv']}
    (c,) = parse(_data(storage={"nfs": {**NFS, "checks": [check]}})).storage["nfs"].checks
    assert c.command == tuple(check["command"])


CHECK = {"name": "web", "command": ["/usr/bin/curl", "-fs", "http://127.0.0.1/"]}
BAD_CHECK = [
    ("name", "my check", "letters, digits"),
    ("command", "/usr/bin/true", "list of strings"),
    ("command", [], "list of strings"),
    ("command", ["curl", "-fs"], "absolute path"),
    ("command", ["/usr/bin/curl", "-fs\x00"], "NUL"),
    ("interval", 0, "0.1..3600"),
    ("timeout", "5", "number"),
    ("rise", 0, "1..100"),
    ("fall", 101, "1..100"),
    ("weight", 254, "0..253"),
]


@pytest.mark.parametrize(("key", "value", "fragment"), BAD_CHECK)
def test_bad_check_value(key: str, value: Any, fragment: str) -> None:
    problems = _problems(_data(storage={"nfs": {**NFS, "checks": [{**CHECK, key: value}]}}))
    assert_one_problem(problems, f"storage.nfs.checks[0].{key}", fragment)


def test_every_check_option_has_a_bad_value_case() -> None:
    assert {key for key, _, _ in BAD_CHECK} == set(CHECK_OPTIONS)


def test_checks_have_keepalived_defaults_and_unique_names_not_builtin() -> None:
    (c,) = parse(_data(storage={"nfs": {**NFS, "checks": [CHECK]}})).storage["nfs"].checks
    assert (c.interval, c.timeout, c.rise, c.fall, c.weight) == (2.0, 5.0, 2, 2, 0)
    assert c.command == ("/usr/bin/curl", "-fs", "http://127.0.0.1/")
    twice = _problems(_data(storage={"nfs": {**NFS, "checks": [CHECK, CHECK]}}))
    assert twice == [("storage.nfs.checks[1].name", "already used by another check")]
    builtin = _problems(_data(storage={"nfs": {**NFS, "checks": [{**CHECK, "name": "nfsd"}]}}))
    assert builtin == [("storage.nfs.checks[0].name", "is a built-in check's name")]


def test_a_uuid_fsid_is_kept_in_its_canonical_form() -> None:
    export = {**EXPORT, "fsid": "3F2504E0-4F89-11D3-9A0C-0305E82C3301"}
    s = parse(_data(storage={"nfs": {**NFS, "exports": [export]}})).storage["nfs"]
    assert s.exports[0].fsid == "3f2504e0-4f89-11d3-9a0c-0305e82c3301"


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"nfs_state_dir": "/var/lib/nfs"}, ("nfs_state_dir", "below mountpoint /srv/nfs")),
        ({"nfs_state_dir": "/srv/nfs"}, ("nfs_state_dir", "below mountpoint /srv/nfs")),
        ({"exports": []}, ("exports", "at least one export")),
        (
            {"exports": [{**EXPORT, "path": "/srv/other"}]},
            ("exports[0].path", "mountpoint /srv/nfs or below"),
        ),
        (
            {"exports": [EXPORT, {**EXPORT, "path": "/srv/nfs/b"}]},
            ("exports[1].fsid", "already used by exports[0]"),
        ),
        (
            {"exports": [EXPORT, {**EXPORT, "fsid": 2}]},
            ("exports[1].path", "exported twice"),
        ),
        ({"exports": {"path": "/srv/nfs"}}, ("exports", "list of")),
    ],
)
def test_nfs_chain_consistency(change: dict[str, Any], problem: tuple[str, str]) -> None:
    problems = _problems(_data(storage={"nfs": {**NFS, **change}}))
    assert len(problems) == 1, problems
    (key, message) = problems[0]
    assert (key, problem[1] in message) == (f"storage.nfs.{problem[0]}", True), problems


def test_nfs_keys_need_nfs_state_dir() -> None:
    table = {"drbd_resource": "r0", "mountpoint": "/srv/nfs", "nfsd_threads": 16}
    table["exports"] = [EXPORT]
    assert [p for p, _ in _problems(_data(storage={"nfs": table}))] == [
        "storage.nfs.exports",
        "storage.nfs.nfsd_threads",
    ]


def test_nfs_state_dir_needs_mountpoint() -> None:
    table = {"drbd_resource": "r0", "nfs_state_dir": "/srv/nfs/state", "exports": [EXPORT]}
    problems = _problems(_data(storage={"nfs": table}))
    assert ("storage.nfs.nfs_state_dir", "needs mountpoint (it is on the DRBD filesystem)") in (
        problems
    )


def test_drbd_resource_is_required() -> None:
    assert _problems(_data(storage={"nfs": {}})) == [("storage.nfs.drbd_resource", "is required")]


def test_unknown_storage_key() -> None:
    problems = _problems(_data(storage={"nfs": {"drbd_resource": "r0", "mount": "/srv"}}))
    assert problems == [("storage.nfs.mount", "unknown key")]


def test_instance_names_a_missing_chain() -> None:
    problems = _problems(_data(storage={}))
    assert problems == [("vrrp_instance[0].storage", "no [storage.nfs] section")]


def test_unused_chain_is_an_error() -> None:
    storage = {"nfs": {"drbd_resource": "r0"}, "spare": {"drbd_resource": "r1"}}
    assert _problems(_data(storage=storage)) == [
        ("storage.spare", "not used by any [[vrrp_instance]]")
    ]


def test_two_instances_cannot_share_a_chain() -> None:
    data = _data()
    data["vrrp_instance"].append({**data["vrrp_instance"][0], "name": "b", "vrid": 52})
    problems = _problems(data)
    assert [p for p, _ in problems] == ["vrrp_instance[1].storage"]


def test_two_chains_cannot_share_a_resource() -> None:
    data = _data(storage={"a": {"drbd_resource": "r0"}, "b": {"drbd_resource": "r0"}}, storage_="")
    data["vrrp_instance"][0]["storage"] = "a"
    del data["vrrp_instance"][0]["storage_"]
    data["vrrp_instance"].append(
        {**data["vrrp_instance"][0], "name": "b", "vrid": 52, "storage": "b"}
    )
    problems = _problems(data)
    assert problems == [("storage.b.drbd_resource", "already used by storage.a")]


def test_address_owner_cannot_have_storage() -> None:
    problems = _problems(_data(priority=255))
    assert problems == [("vrrp_instance[0].priority", "255 (address owner) cannot have storage")]


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("a\nb", '"a\\nb"'),  # /etc/exports.d/drbdha-NAME.exports and its comment line
        ("../../etc/x", '"../../etc/x"'),
        (".nfs", '".nfs"'),  # a hidden file, which exportfs skips
        ("-nfs", "-nfs"),
        ("my nfs", '"my nfs"'),
        ("x" * 58, "x" * 58),
    ],
)
def test_storage_names_are_plain_words(name: str, key: str) -> None:
    problems = _problems(_named(name, {"drbd_resource": "r0"}))
    assert [p for p, _ in problems] == [f"storage.{key}"]
    assert problems[0][1].startswith("name must be letters, digits, '_', '-', '.'")


def _named(name: str, table: dict[str, Any]) -> dict[str, Any]:
    """_data() with the chain called `name`."""
    data = _data(storage={name: table})
    data["vrrp_instance"][0]["storage"] = name
    return data


def test_a_dotted_storage_name_is_quoted_in_key_paths() -> None:
    assert parse(_named("nfs.a", NFS)).storage["nfs.a"].name == "nfs.a"
    problems = _problems(_named("nfs.a", {**NFS, "nfsd_threads": 0}))
    assert [p for p, _ in problems] == ['storage."nfs.a".nfsd_threads']


@given(st.text(min_size=1, max_size=60))
def test_an_accepted_name_stays_one_file_name_and_one_word(name: str) -> None:
    """Whatever parse() accepts as an instance's and its chain's name stays in
    /etc/exports.d, keeps the exports file's comment on one line, and is one word of the
    nfsd drop-in's ExecStart= (the default scope "drbdha-NAME")."""
    data = _named(name, NFS)
    data["vrrp_instance"][0]["name"] = name
    try:
        s = parse(data).storage[name]
    except ConfigError:
        return
    exports_d = Path("/etc/exports.d")
    assert exports_file(name, exports_d).parent == exports_d
    assert len(exports_text(name, s.exports).splitlines()) == 1 + len(s.exports)
    scope = f"drbdha-{name}"
    (nfsd, _) = dropins(scope, 8, 90, 90, "192.0.2.100").values()
    assert nfsd.splitlines()[-1].split()[-1] == scope
    assert not any(c in scope for c in "%$\\\"'")  # systemd specifiers, variables, quoting


@pytest.mark.parametrize("name", ["my_nfs", "nfs.", "a..b", "a.-b"])
def test_the_default_nfs_scope_must_be_a_host_name(name: str) -> None:
    problems = _problems(_data(storage={"nfs": NFS}, name=name))
    assert_one_problem(problems, "vrrp_instance[0].name", f"'drbdha-{name}', which is no host name")
    assert "storage.nfs.nfs_server_scope" in problems[0][1]
    # With a scope of its own, or without an NFS server, the name is fine.
    parse(_data(storage={"nfs": {**NFS, "nfs_server_scope": "nfs-a"}}, name=name))
    parse(_data(storage={"nfs": {"drbd_resource": "r0", "mountpoint": "/srv/nfs"}}, name=name))


def test_storage_must_be_tables() -> None:
    problems = _problems(_data(storage={"nfs": "r0"}))
    assert ("storage.nfs", "must be a table") in problems


# ---- [peer] address (its other keys: test_fencing_config.py) -------------------------------


@pytest.mark.parametrize(
    ("address", "fragment"),
    [
        ("0.0.0.0", "unspecified address"),  # noqa: S104 (a value, not a bind)
        ("::", "unspecified address"),
        ("224.0.0.18", "multicast address"),
        ("ff02::1", "multicast address"),
        ("::ffff:0.0.0.0", "unspecified address"),
        # Unscoped, connect() fails; scoped, the server's source check never matches it.
        ("fe80::2", "link-local"),
        ("fe80::2%eth0", "without a %zone"),
    ],
)
def test_peer_address_must_be_another_host(address: str, fragment: str) -> None:
    data = {**_data(), "peer": {"address": address, "secret_file": "/etc/drbdha/peer.key"}}
    problems = _problems(data)
    assert_one_problem(problems, "peer.address", fragment)


@pytest.mark.parametrize("address", ["192.0.2.12", "169.254.1.2", "2001:db8::12", "fd00::12"])
def test_peer_address_of_another_host_is_accepted(address: str) -> None:
    data = {**_data(), "peer": {"address": address, "secret_file": "/etc/drbdha/peer.key"}}
    peer = parse(data).peer
    assert peer is not None
    assert str(peer.address) == address
