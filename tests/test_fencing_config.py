"""Fencing configuration and its front ends: the [peer] table (config.parse), what
drbd_advice makes of a resource's fencing (fencing_summary for status, findings for
check-config), and `drbdha fence-peer` (cli.main) against a real PeerServer on loopback.

Fakes: the PeerServer runs in a background thread with its own event loop and answers
through FakeDrbdadm (test_fencing_channel: recorded argv, scripted Results); FakeJournal
takes the handler's journal entries in place of systemd.journal. DRBD options are
DrbdOptions built directly (no drbdadm dump).
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv6Address, ip_address
from pathlib import Path
from typing import Any

import pytest
from config_cases import assert_one_problem
from test_check_config import TOML
from test_config_storage import _data as storage_data
from test_drbd_step import res
from test_fencing_channel import DSTATE, OUTDATE, FakeDrbdadm, FakeLog

from drbdha import cli
from drbdha.config import PEER_OPTIONS, PeerConfig, parse
from drbdha.errors import ConfigError
from drbdha.fencing.server import PeerServer
from drbdha.resources.drbd_advice import fencing_summary, findings
from drbdha.resources.drbd_config import DrbdOptions

KEY = b"s" * 44  # test_fencing_channel's server key
DRBDHA = "/usr/bin/drbdha fence-peer"

# ---- [peer] --------------------------------------------------------------------------------


def _data(peer: dict[str, Any] | None) -> dict[str, Any]:
    """test_config_storage's minimal valid config (one instance, [storage.nfs] r0) + [peer]."""
    return storage_data() if peer is None else {**storage_data(), "peer": peer}


BASE = {"address": "192.0.2.2", "secret_file": "/etc/drbdha/fence.key"}


def _problems(peer: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as e:
        parse(_data(peer))
    return e.value.problems


def test_no_peer_table_is_none() -> None:
    assert parse(_data(None)).peer is None


def test_peer_defaults() -> None:
    assert parse(_data(BASE)).peer == PeerConfig(
        address=ip_address("192.0.2.2"),
        secret_file=Path("/etc/drbdha/fence.key"),
        port=9944,
        fence_timeout=0.5,
    )


@pytest.mark.parametrize(
    ("key", "value", "want"),
    [
        ("port", 10000, 10000),
        ("fence_timeout", 2, 2.0),
        ("fence_timeout", 0.1, 0.1),
        ("fence_timeout", 60, 60.0),
        ("address", "2001:db8::2", IPv6Address("2001:db8::2")),
    ],
)
def test_good_peer_value(key: str, value: Any, want: Any) -> None:
    peer = parse(_data({**BASE, key: value})).peer
    assert peer is not None
    assert getattr(peer, key) == want
    assert type(getattr(peer, key)) is type(want)


@pytest.mark.parametrize("key", ["address", "secret_file"])
def test_required_keys(key: str) -> None:
    peer = {k: v for k, v in BASE.items() if k != key}
    assert _problems(peer) == [(f"peer.{key}", "is required")]


BAD = [
    ("address", "peer.example", "does not appear to be an IPv4 or IPv6 address"),
    ("address", 5, "IP address string"),
    ("secret_file", "fence.key", "absolute path"),
    ("secret_file", "", "non-empty"),
    ("port", 0, "1..65535"),
    ("port", 65536, "1..65535"),
    ("port", "9944", "integer"),
    ("port", True, "integer"),
    ("fence_timeout", 0.05, "0.1..60"),
    ("fence_timeout", 61, "0.1..60"),
    ("fence_timeout", "1", "number"),
]


@pytest.mark.parametrize(("key", "value", "fragment"), BAD)
def test_bad_peer_value(key: str, value: Any, fragment: str) -> None:
    problems = _problems({**BASE, key: value})
    assert_one_problem(problems, f"peer.{key}", fragment)


def test_every_peer_option_has_a_bad_value_case() -> None:
    assert {key for key, _, _ in BAD} == set(PEER_OPTIONS)


def test_an_unknown_peer_key_is_refused() -> None:
    assert _problems({**BASE, "secret": "hunter2"}) == [("peer.secret", "unknown key")]


def test_peer_must_be_a_table() -> None:
    assert ("peer", "must be a table") in _problems("192.0.2.2")  # type: ignore[arg-type]


# ---- drbd_advice ---------------------------------------------------------------------------


def opts(**kw: Any) -> DrbdOptions:
    return DrbdOptions(resource="r0", **kw)


CRM = "/usr/lib/drbd/crm-fence-peer.9.sh"


RS = "resource-and-stonith"
SUMMARIES = {
    "handler": (opts(fencing=RS, fence_peer_handler=DRBDHA), 1.0, "handler", "I/O is held at"),
    "resource-only": (
        opts(fencing="resource-only", fence_peer_handler=DRBDHA),
        1.0,
        "handler",
        "resource-only: I/O goes on while the handler runs",
    ),
    "other": (opts(fencing=RS, fence_peer_handler=CRM), None, "other_handler", f"fenced by {CRM}"),
    "quorum": (opts(quorum="majority"), None, "quorum", "DRBD quorum keeps a minority"),
    "both": (
        opts(quorum="majority", fencing=RS, fence_peer_handler=DRBDHA),
        1.0,
        "quorum_and_handler",
        "the handler outdates the peer",
    ),
    "default": (opts(), 1.0, "unfenced", "within 11 s"),  # ping-int 10 + 0.5 + an advert
    "dont-care": (opts(fencing="dont-care", fence_peer_handler=DRBDHA), 1.0, "unfenced", "11 s"),
    "no-handler": (opts(fencing="resource-only"), 1.0, "unfenced", "within 11 s"),
}


@pytest.mark.parametrize(("o", "fence_timeout", "mode", "note"), SUMMARIES.values(), ids=SUMMARIES)
def test_fencing_summary(o: DrbdOptions, fence_timeout: float | None, mode: str, note: str) -> None:
    s = fencing_summary(o, 0.5, fence_timeout)
    assert (s["mode"], s["policy"], s["handler"]) == (mode, o.get("fencing"), o.fence_peer_handler)
    assert note in (s["note"] or "")


@pytest.mark.parametrize(
    ("timers", "heartbeat", "level", "says"),
    [
        # DRBD's defaults: the Primary writes alone after timeout 6 s; the heartbeat (0.1 s)
        # outdates the Secondary within 0.7 s: nothing at risk.
        ({}, 0.1, "info", "no acknowledged write is at risk"),
        # Without the heartbeat, the Secondary is outdated at its DRBD's ping-int +
        # ping-timeout (1.5 s) plus an advert; the README's timeout 0.9 s: 0.7 s at risk.
        ({"ping_int": "1", "ping_timeout": "5", "timeout": "9"}, 0.0, "warning", "0.7 s between"),
    ],
)
def test_quorum_alone_names_the_replication_cut_window(
    timers: dict[str, str], heartbeat: float, level: str, says: str
) -> None:
    # Seen in the DRBD 9 lab: the Primary powered off 1 s after its replication link was cut,
    # the tiebreaker up, drbdha's heartbeat rule not applied with quorum: node2 was promoted
    # without the Primary's last acknowledged write.
    o = opts(quorum="majority", fencing="dont-care", **timers)
    note = fencing_summary(o, 0.1, None, heartbeat)["note"] or ""
    assert note.startswith("DRBD quorum keeps a minority partition from writing; without a")
    assert says in note
    (finding,) = [
        f
        for f in findings(o, master_down_interval=0.4, advert_interval=0.1, heartbeat=heartbeat)
        if f.key == "fencing"
    ]
    assert (finding.level, says in finding.message) == (level, True)


def test_summary_drbdhas_handler_without_peer_is_not_handler_mode() -> None:
    s = fencing_summary(opts(fencing="resource-and-stonith", fence_peer_handler=DRBDHA), 1.0, None)
    assert s["mode"] != "handler"


def _fence_findings(o: DrbdOptions, fence_timeout: float | None) -> list[tuple[str, str, str]]:
    found = findings(o, master_down_interval=3.6, advert_interval=1.0, fence_timeout=fence_timeout)
    return [(f.level, f.key, f.message) for f in found if f.key in ("fence-peer", "fencing")]


@pytest.mark.parametrize(
    ("policy", "level"), [("resource-and-stonith", "error"), ("resource-only", "warning")]
)
def test_drbdhas_handler_without_peer_section_is_found(policy: str, level: str) -> None:
    found = _fence_findings(opts(fencing=policy, fence_peer_handler=DRBDHA), None)
    peer = [f for f in found if f[1] == "fence-peer"]
    assert len(peer) == 1
    assert peer[0][0] == level
    assert "[peer]" in peer[0][2]


def test_drbdhas_handler_with_peer_section_is_only_information() -> None:
    o = opts(fencing="resource-and-stonith", fence_peer_handler=DRBDHA)
    found = _fence_findings(o, 1.0)
    assert [(lvl, k) for lvl, k, _ in found] == [("info", "fencing")]
    assert "fence_timeout (1 s)" in found[0][2]


def test_unfenced_finding_names_the_advert_interval() -> None:
    found = _fence_findings(opts(), None)
    assert [(lvl, k) for lvl, k, _ in found] == [("warning", "fencing")]
    assert "within 12 s" in found[0][2]  # no heartbeat: ping-int 10 + 0.5 + the 1 s advert


UNFENCED_WINDOWS = {  # DRBD's net options, heartbeat, advert -> what the window says
    # DRBD's defaults: the Primary writes alone after timeout 6 s; the heartbeat's 0.6 s
    # and a 1 s advert come first.
    "defaults-heartbeat": ({}, 0.1, 1.0, "within 1.6 s", "no acknowledged write is at risk"),
    # Without the heartbeat: DRBD's own 10.5 s on the Secondary against the Primary's 6 s.
    "defaults-no-heartbeat": ({}, 0.0, 1.0, "within 12 s", "in the 5.5 s between"),
    # The README's tuned timers: timeout 0.9 s; 0.6 + 0.1 s advert still come first.
    "tuned-heartbeat": (
        {"ping_int": "1", "ping_timeout": "5", "timeout": "9"},
        0.1,
        0.1,
        "within 0.7 s",
        "no acknowledged write is at risk",
    ),
    # Tuned DRBD with 1 s adverts: the advert that proves the Primary alive comes too late.
    "tuned-slow-adverts": (
        {"ping_int": "1", "ping_timeout": "5", "timeout": "9"},
        0.1,
        1.0,
        "within 1.6 s",
        "in the 0.7 s between",
    ),
}


@pytest.mark.parametrize(
    ("net", "heartbeat", "advert", "how", "risk"), UNFENCED_WINDOWS.values(), ids=UNFENCED_WINDOWS
)
def test_unfenced_window_compares_drbdha_with_the_primarys_drbd(
    net: dict[str, str], heartbeat: float, advert: float, how: str, risk: str
) -> None:
    note = fencing_summary(opts(**net), advert, None, heartbeat)["note"] or ""
    assert how in note
    assert risk in note


# ---- drbdha fence-peer ---------------------------------------------------------------------


class FakeJournal:
    """Stands in for systemd.journal: keeps what handler.log sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, str]]] = []

    def send(self, message: str, **fields: str) -> None:
        self.sent.append((message, fields))


class BackgroundServer:
    """A PeerServer on 127.0.0.1 in a thread with its own event loop (cli.main blocks)."""

    def __init__(self, cmds: FakeDrbdadm) -> None:
        self.cmds = cmds
        self.log = FakeLog()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        cfg = PeerConfig(ip_address("127.0.0.1"), Path("/unused"), port=0, fence_timeout=0.5)
        facts = res(connection="Connecting", peer_role="Unknown", peer_disk="DUnknown")
        self.server = PeerServer(
            cfg, KEY, lambda: frozenset({"r0"}), lambda _: facts, self.log, run=cmds
        )

    def __enter__(self) -> int:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(host="127.0.0.1"), self.loop).result(5)
        assert self.server._server is not None
        port: int = self.server._server.sockets[0].getsockname()[1]
        return port

    def __exit__(self, *_exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@dataclass
class Lab:
    """This node's drbdha.toml under tmp_path and the peer's server (BackgroundServer)."""

    tmp_path: Path
    port: int
    peer: BackgroundServer
    journal: FakeJournal

    def fence(self, *args: str, mode: int = 0o600, peer: bool = True) -> int:
        key = self.tmp_path / "fence.key"
        if not key.exists():  # a test may have put something else there
            key.write_bytes(KEY + b"\n")
            key.chmod(mode)
        text = CONFIG
        if peer:
            text += f'[peer]\naddress = "127.0.0.1"\nsecret_file = "{key}"\nport = {self.port}\n'
            text += "fence_timeout = 0.5\n"
        cfg = self.tmp_path / "drbdha.toml"
        cfg.write_text(text)
        return cli.main(["-c", str(cfg), "fence-peer", *args])

    def entry(self) -> dict[str, str]:
        """The one journal entry the handler wrote."""
        assert len(self.journal.sent) == 1, self.journal.sent
        return self.journal.sent[0][1]


CONFIG = "\n" + TOML.format(resource="r0")  # check-config's file, for DRBD resource r0


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    journal = FakeJournal()
    monkeypatch.setitem(sys.modules, "systemd.journal", journal)
    monkeypatch.delenv("DRBD_RESOURCE", raising=False)
    bg = BackgroundServer(FakeDrbdadm({DSTATE: [(0, "Outdated/DUnknown\n")]}))
    with bg as port:
        yield Lab(tmp_path, port, bg, journal)


def test_fence_peer_outdates_the_secondary_and_exits_4(
    lab: Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    assert lab.fence("--resource", "r0") == 4
    assert lab.peer.cmds.calls == [OUTDATE, DSTATE]
    assert "r0: outdated" in capsys.readouterr().out
    fields = lab.entry()
    want = {"EVENT": "fence.peer", "OUTCOME": "outdated", "EXIT_CODE": "4", "PEER_DISK": "Outdated"}
    assert {k: fields.get(k) for k in want} == want


def test_fence_peer_takes_drbds_resource(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRBD_RESOURCE", "r0")
    assert lab.fence() == 4
    assert lab.peer.cmds.calls == [OUTDATE, DSTATE]
    assert lab.entry()["OUTCOME"] == "outdated"


def test_fence_peer_without_a_resource_fails(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    assert lab.fence() == 1
    assert "no resource" in capsys.readouterr().err
    assert lab.peer.cmds.calls == []


def test_fence_peer_refuses_a_secret_others_can_read(lab: Lab) -> None:
    assert lab.fence("--resource", "r0", mode=0o644) == 1
    assert lab.peer.cmds.calls == []
    assert lab.peer.log.requests == []  # the peer was not even asked
    fields = lab.entry()
    assert fields["OUTCOME"] == "failed"
    assert "chmod 600" in fields["DETAIL"]


@pytest.mark.parametrize(
    ("resource", "peer", "fragment"),
    [("r9", True, "no [storage] section"), ("r0", False, "no [peer] section")],
)
def test_fence_peer_without_what_it_needs_fails(
    lab: Lab, resource: str, peer: bool, fragment: str
) -> None:
    assert lab.fence("--resource", resource, peer=peer) == 1
    assert lab.peer.cmds.calls == []
    assert fragment in lab.entry()["DETAIL"]


def test_fence_peer_with_an_invalid_config_fails(lab: Lab) -> None:
    cfg = lab.tmp_path / "bad.toml"
    cfg.write_text("[peer]\naddress = 5\n")
    assert cli.main(["-c", str(cfg), "fence-peer", "--resource", "r0"]) == 1
    assert lab.entry()["OUTCOME"] == "failed"


def test_fence_peer_with_a_directory_as_secret_fails_cleanly(lab: Lab) -> None:
    (lab.tmp_path / "fence.key").mkdir(mode=0o700)
    assert lab.fence("--resource", "r0") == 1
    assert lab.peer.cmds.calls == []
    assert lab.entry()["OUTCOME"] == "failed"


def test_cli_exit_unreachable_is_status_s() -> None:
    # cli defines it without importing status (fence-peer's start-up time): they must agree.
    from drbdha import status  # noqa: PLC0415

    assert cli.EXIT_UNREACHABLE == status.EXIT_UNREACHABLE


@pytest.mark.parametrize(
    ("on_no_quorum", "warned"), [("suspend-io", True), ("io-error", False), (None, True)]
)
def test_quorum_with_held_io_is_warned(on_no_quorum: str | None, warned: bool) -> None:
    """suspend-io is DRBD's default: a Primary without quorum holds its I/O, which drbdha's
    release cannot get past."""
    more = {} if on_no_quorum is None else {"on_no_quorum": on_no_quorum}
    o = opts(quorum="majority", on_no_data_accessible=on_no_quorum or "suspend-io", **more)
    found = findings(o, master_down_interval=3.6, advert_interval=1.0, fence_timeout=None)
    keys = [f.key for f in found]
    assert ("on-no-quorum" in keys) is warned, keys
    assert "on-no-data-accessible" not in keys  # the two match in each case
