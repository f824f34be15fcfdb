"""Every parser of outside input raises only its documented error, whatever it is fed (issue 19
§3), as test_packet.py checks for the VRRP decoder. Each section names the parser's contract.

Each @example is a finding of the first fuzz run: a 5,000-digit number (int()'s limit), JSON
nested past the recursion limit, bytes that are not UTF-8, an etab line starting with a tab,
`on {` with no host, and lone surrogates (a `\\ud800` escape in JSON: a str no UTF-8 encoder
takes, so a log line or a reply written from it would raise later).
"""

from __future__ import annotations

import json
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from drbdha import control
from drbdha.fencing import wire
from drbdha.net.tickle import Connection
from drbdha.resources import drbd_events, nfs, nfs_clients
from drbdha.resources.drbd import kmod_version
from drbdha.resources.drbd_config import DrbdConfigError, DrbdOptions, parse_dump
from drbdha.resources.drbd_events import (
    ACTIONS,
    OBJECTS,
    Resource,
    Tracker,
    parse_events2_line,
    parse_status_json,
)

FUZZ = settings(max_examples=250, deadline=None)

# ---- strategies ---------------------------------------------------------------------------

# Lone surrogates come from st.characters(codec=None) only rarely: add them on purpose.
SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
CHARS = st.one_of(st.characters(codec=None), SURROGATES)
TEXT = st.text(CHARS, max_size=30)
WORD = st.text(st.characters(codec=None, exclude_categories=["Zs", "Cc"]), min_size=1)
# Past int()'s 4,300-digit limit (sys.set_int_max_str_digits), and a little below it.
HUGE_DIGITS = st.integers(4_000, 6_000).map(lambda n: "9" * n)
NUMBERS = st.one_of(st.from_regex(r"-?[0-9]{1,25}", fullmatch=True), HUGE_DIGITS)
JSON_LEAVES = st.none() | st.booleans() | st.integers() | st.floats() | TEXT
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(TEXT, kids, max_size=4),
    max_leaves=10,
)


@st.composite
def deep_json(draw: st.DrawFn, max_depth: int = 3_000) -> str:
    """Nested past json's recursion limit (about 1,000 in CPython 3.11), or not quite."""
    depth = draw(st.integers(1, max_depth))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}"), ("[{}, ", "]")]))
    inner = draw(st.sampled_from(["0", '"x"', "[]", "{}"]))
    return opener * depth + inner + closer * depth


def json_texts(max_depth: int = 3_000) -> st.SearchStrategy[str]:
    """JSON documents (some with lone surrogates, escaped or raw), deep ones, huge numbers,
    and text that is not JSON at all."""
    return st.one_of(
        JSON_VALUES.map(json.dumps),
        JSON_VALUES.map(lambda v: json.dumps(v, ensure_ascii=False)),
        deep_json(max_depth),
        HUGE_DIGITS,
        HUGE_DIGITS.map(lambda n: f'{{"n": {n}}}'),
        TEXT,
    )


def json_bytes(max_depth: int = 3_000) -> st.SearchStrategy[bytes]:
    # surrogatepass: a raw lone surrogate becomes the (invalid) UTF-8 bytes ED A0 80.
    return st.one_of(
        json_texts(max_depth).map(lambda s: s.encode("utf-8", "surrogatepass")), st.binary()
    )


# ---- drbdsetup events2 ---------------------------------------------------------------------
# parse_events2_line: ValueError(reason). A line it accepts feeds a Tracker without raising:
# the events2 watcher catches ValueError from the parser only (DrbdStep._line).

EVENT_KEYS = (
    "name",
    "volume",
    "minor",
    "peer-node-id",
    "conn-name",
    "helper",
    "new_name",
    "role",
    "disk",
    "peer-disk",
    "connection",
    "replication",
    "promotion_score",
    "out-of-sync",
    "suspended",
    "client",
    "quorum",
)


@st.composite
def events2_lines(draw: st.DrawFn) -> str:
    """Lines shaped like events2's: action, object, key:value tokens; any part may be wrong."""
    words = []
    if draw(st.booleans()):
        words.append("2024-01-02T03:04:05.123456+01:00")
    words.append(draw(st.sampled_from(sorted(ACTIONS)) | st.just("-") | WORD))
    words.append(draw(st.sampled_from(sorted(OBJECTS)) | st.just("skipped") | st.just("-")))
    value = st.one_of(
        NUMBERS, WORD, st.sampled_from(["r0", "yes", "no", "user,fencing", "UpToDate"])
    )
    keys = draw(st.lists(st.sampled_from(EVENT_KEYS) | WORD, max_size=8))
    words.extend(f"{key}:{draw(value)}" for key in keys)
    return draw(st.sampled_from([" ", "\t", "  "])).join(words)


def _feed_checked(tracker: Tracker, line: str) -> None:
    """parse_events2_line, then what the events2 watcher does with an accepted line."""
    try:
        event = parse_events2_line(line)
    except ValueError:
        return
    if event is None:
        return
    # "numeric keys are numbers" (the module's rules): int() takes them.
    for key in (*drbd_events._INT_KEYS, "count"):
        if key in event.fields:
            int(event.fields[key])
    for old, new in tracker.feed(event):
        assert old is None or isinstance(old, Resource)
        assert new is None or isinstance(new, Resource)


@FUZZ
@given(st.one_of(events2_lines(), TEXT))
@example("exists device name:r0 volume:" + "9" * 5_000 + " minor:0 disk:UpToDate")
@example("change device name:r0 volume:0 minor:" + "9" * 5_000)
@example("exists resource name:r0 role:Secondary promotion_score:" + "9" * 5_000)
@example("change peer-device name:r0 peer-node-id:1 volume:0 out-of-sync:" + "9" * 5_000)
@example("exists connection name:r0 peer-node-id:" + "9" * 5_000 + " connection:Connected")
@example("- skipped \u00b2")  # str.isdigit() says yes, int() says no
@example("- skipped " + "9" * 5_000)
def test_events2_line_raises_only_value_error_and_feeds_the_tracker(line: str) -> None:
    _feed_checked(Tracker(), line)


@FUZZ
@given(st.lists(events2_lines(), max_size=8))
def test_events2_streams_fold_into_the_tracker_without_raising(lines: list[str]) -> None:
    tracker = Tracker()
    for line in [*lines, "exists -"]:
        _feed_checked(tracker, line)


# ---- drbdsetup status --json ---------------------------------------------------------------
# parse_status_json: ValueError.


def _sometimes(draw: st.DrawFn, good: st.SearchStrategy[Any]) -> Any:
    return draw(st.one_of(good, good, good, JSON_LEAVES, st.lists(JSON_LEAVES, max_size=2)))


@st.composite
def status_documents(draw: st.DrawFn) -> Any:
    """DRBD 9's status --json shape, each value now and then of the wrong kind."""

    def peer_device() -> dict[str, Any]:
        return {
            "volume": _sometimes(draw, st.integers()),
            "replication-state": _sometimes(draw, st.just("Established")),
            "peer-disk-state": _sometimes(draw, st.just("UpToDate")),
            "peer-client": _sometimes(draw, st.booleans()),
            "out-of-sync": _sometimes(draw, st.integers()),
        }

    def connection() -> dict[str, Any]:
        return {
            "peer-node-id": _sometimes(draw, st.integers()),
            "name": _sometimes(draw, TEXT),
            "connection-state": _sometimes(draw, st.just("Connected")),
            "peer-role": _sometimes(draw, st.just("Primary")),
            "peer_devices": [peer_device() for _ in range(draw(st.integers(0, 2)))],
        }

    def device() -> dict[str, Any]:
        return {
            "volume": _sometimes(draw, st.integers()),
            "minor": _sometimes(draw, st.integers()),
            "disk-state": _sometimes(draw, st.just("UpToDate")),
            "client": _sometimes(draw, st.booleans()),
            "quorum": _sometimes(draw, st.booleans()),
            "open": _sometimes(draw, st.booleans()),
        }

    def resource() -> dict[str, Any]:
        doc = {
            "name": _sometimes(draw, TEXT),
            "role": _sometimes(draw, st.just("Secondary")),
            "suspended": _sometimes(draw, st.booleans()),
            "force-io-failures": _sometimes(draw, st.booleans()),
            "suspended-fencing": _sometimes(draw, st.booleans()),
            "devices": [device() for _ in range(draw(st.integers(0, 2)))],
            "connections": [connection() for _ in range(draw(st.integers(0, 2)))],
        }
        for key in draw(st.lists(st.sampled_from(sorted(doc)), max_size=2)):
            doc.pop(key, None)
        return doc

    return [resource() for _ in range(draw(st.integers(0, 3)))]


@FUZZ
@given(st.one_of(status_documents().map(json.dumps), json_texts()))
@example("[" * 5_000 + "]" * 5_000)
@example('[{"name": ' * 3_000 + "0" + "}]" * 3_000)
@example('[{"name": "r0", "devices": [' + "[" * 2_000 + "]" * 2_000 + "]}]")
@example("[" + "9" * 5_000 + "]")
def test_status_json_raises_only_value_error(text: str) -> None:
    try:
        resources = parse_status_json(text)
    except ValueError:
        return
    assert all(isinstance(r, Resource) and r.name == name for name, r in resources.items())


# ---- drbdadm dump --------------------------------------------------------------------------
# parse_dump: DrbdConfigError.

DUMP_WORDS = (
    "resource",
    "r0",
    "common",
    "on",
    "floating",
    "volume",
    "0",
    "connection",
    "connection-mesh",
    "host",
    "alpha",
    "net",
    "disk",
    "options",
    "handlers",
    "address",
    "ipv4",
    "10.0.0.1:7789",
    "[fe80::1]:7789",
    "fencing",
    "resource-and-stonith",
    "ping-int",
    '"a b"',
    '"unterminated',
    "# a comment\n",
    "{",
    "}",
    ";",
)


@st.composite
def dump_texts(draw: st.DrawFn) -> str:
    body = " ".join(draw(st.lists(st.sampled_from(DUMP_WORDS) | WORD, max_size=40)))
    if draw(st.booleans()):
        body = f"resource r0 {{ {body} }}"
    return body


@FUZZ
@given(st.one_of(dump_texts(), TEXT, deep_json().map(lambda s: s.replace('"a":', "net"))))
@example("resource r0 { on { address 10.0.0.1:7789; } }")
@example("resource r0 { on { disk { on-io-error detach; } } }")
@example("resource r0 { volume { disk { on-io-error pass_on; } } }")
@example("resource r0 { on alpha { volume { disk { on-io-error pass_on; } } } }")
@example("resource r0 { " + "net { " * 3_000 + "}" * 3_000 + " }")
@example("resource r0 { floating { address 10.0.0.1:7789; } }")
def test_drbdadm_dump_raises_only_drbd_config_error(text: str) -> None:
    try:
        options = parse_dump(text, "r0")
    except DrbdConfigError:
        return
    assert isinstance(options, DrbdOptions)
    for _, _, variant in options.variants:
        assert variant.resource == "r0"


# ---- files: /proc/drbd, etab, nfsd's threads, the drop-ins, the client records -------------
# kmod_version: None when no version can be read, never an exception. nfs.unexported: OSError
# (etab unreadable). nfs.nfsd_threads: 0 when unreadable. nfs.write_if_changed: replaces
# whatever it finds. nfs_clients.read_records: [] or the good rows, never an exception.


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    """One directory for all examples (tmp_path is per test, and hypothesis reuses it)."""
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


def _versions() -> st.SearchStrategy[bytes]:
    number = st.one_of(st.from_regex(r"[0-9]{1,6}", fullmatch=True), HUGE_DIGITS)
    return st.tuples(number, number, number).map(
        lambda v: f"version: {'.'.join(v)} (api:2/proto:86-122)\n".encode()
    )


@FUZZ
@given(st.one_of(st.binary(), _versions()))
@example(b"version: 9.2.4 (api:2/proto:86-122)\n\xff\xfe")
@example(b"\xffversion: 9.2.4\n")
@example(b"version: " + b"9" * 5_000 + b".2.4\n")
def test_kmod_version_is_a_version_or_none(scratch: Path, data: bytes) -> None:
    path = scratch / "drbd"
    path.write_bytes(data)
    version = kmod_version(path)
    assert version is None or (len(version) == 3 and all(isinstance(n, int) for n in version))


def _etab_lines() -> st.SearchStrategy[bytes]:
    line = st.tuples(
        st.sampled_from(["/srv/a", "/srv/b", "", " "]) | WORD,
        st.sampled_from(["\t", " ", ""]),
        st.sampled_from(["*(rw,sync)", "192.0.2.0/24(ro)", ""]),
    ).map(lambda t: "".join(t).encode("utf-8", "surrogatepass"))
    return st.lists(line | st.binary(max_size=20), max_size=6).map(b"\n".join)


@FUZZ
@given(st.one_of(_etab_lines(), st.binary()))
@example(b"\t*(rw)\n")
@example(b"/srv/a\t*(rw)\n\t*(rw)\n")
@example(b"/srv/\xff\t*(rw)\n")
def test_etab_gives_unexported_paths_or_os_error(scratch: Path, data: bytes) -> None:
    path = scratch / "etab"
    path.write_bytes(data)
    paths = ["/srv/a", "/srv/b"]
    missing = nfs.unexported(paths, path)
    assert set(missing) <= set(paths)
    if data.startswith(b"/srv/a\t"):
        assert "/srv/a" not in missing


def test_etab_is_read_as_paths_are_named() -> None:
    # A path that is not UTF-8 is str(Path) with surrogate escapes (os.fsdecode); etab's
    # bytes are read the same way, so such an export is found.
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "etab"
        path.write_bytes(b"/srv/\xff\t*(rw)\n")
        assert nfs.unexported(["/srv/\udcff", "/srv/b"], path) == ["/srv/b"]


@FUZZ
@given(st.binary(max_size=40) | NUMBERS.map(str.encode))
@example(b"\xff\n")
@example(b"9" * 5_000 + b"\n")
def test_nfsd_threads_is_a_number(scratch: Path, data: bytes) -> None:
    (scratch / "threads").write_bytes(data)
    with mock.patch.object(nfs, "NFSD_FS", scratch):
        assert isinstance(nfs.nfsd_threads(), int)


@FUZZ
@given(st.binary(max_size=60), st.text(max_size=60))
@example(b"\xff", "[Service]\n")
def test_write_if_changed_replaces_whatever_it_finds(scratch: Path, old: bytes, new: str) -> None:
    path = scratch / "units" / "50-drbdha.conf"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(old)
    changed = nfs.write_if_changed(path, new)
    assert path.read_bytes() == new.encode()
    assert changed == (old != new.encode())


@st.composite
def client_records(draw: st.DrawFn) -> bytes:
    good = ["192.0.2.100", 2049, "192.0.2.7", 901]
    rows = draw(st.lists(st.just(good) | JSON_VALUES, max_size=4))
    doc = draw(st.sampled_from([{"connections": rows}, rows, {"connections": {"a": rows}}]))
    return json.dumps(doc).encode()


@FUZZ
@given(st.one_of(client_records(), json_bytes()))
@example(b'{"connections": ' + b"[" * 5_000 + b"]" * 5_000 + b"}")
@example(b"[" * 5_000 + b"]" * 5_000)
@example(b'{"connections": [["192.0.2.100", 2049, "192.0.2.7", ' + b"9" * 5_000 + b"]]}")
@example(b'{"connections": [["\\ud800", 2049, "192.0.2.7", 901]]}')
def test_client_records_never_raise(scratch: Path, data: bytes) -> None:
    path = scratch / "drbdha-clients.json"
    path.write_bytes(data)
    records = nfs_clients.read_records(path, Connection.from_json)
    assert all(isinstance(c, Connection) for c in records)


# ---- the peer channel (fencing/wire.py) ---------------------------------------------------
# decode and verify: wire.Refused(reason).

KEY = b"k" * 44


@st.composite
def peer_messages(draw: st.DrawFn) -> bytes:
    """Messages of the channel's own kinds, signed or not, with any values."""
    msg: dict[str, Any] = {
        "type": draw(st.sampled_from(["challenge", "outdate", "result", "refused"]) | TEXT),
        "nonce": draw(st.just("s1") | TEXT),
        "client_nonce": draw(st.just("c1") | TEXT),
        "resource": draw(st.just("r0") | TEXT),
        "outcome": draw(st.sampled_from(wire.OUTCOMES) | JSON_VALUES),
    }
    msg.update(draw(st.dictionaries(TEXT, JSON_VALUES, max_size=3)))
    if draw(st.booleans()):
        msg = wire.sign(draw(st.sampled_from([KEY, b"other"])), msg)
    if draw(st.booleans()):
        msg["mac"] = draw(JSON_VALUES)
    return json.dumps(msg, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")


def _check_message(msg: dict[str, Any]) -> None:
    # What a decoded message's reader may do with it: write it, log it as UTF-8.
    json.dumps(msg, ensure_ascii=False).encode()


@FUZZ
@given(st.one_of(peer_messages(), json_bytes(max_depth=2_000)).map(lambda b: b + b"\n"))
@example(b"[" * 2_000 + b"]" * 2_000 + b"\n")
@example(b'{"v": 1, "type": "challenge", "x": ' + b"[" * 1_500 + b"]" * 1_500 + b"}\n")
@example(b'{"v": 1, "type": "challenge", "nonce": "\\ud800"}\n')
@example(b'{"v": 1, "type": "result", "mac": "\\ud800"}\n')
@example(b'{"v": 1, "type": "\\udfff"}\n')
def test_peer_messages_raise_only_refused(line: bytes) -> None:
    try:
        msg = wire.decode(line)
    except wire.Refused as e:
        assert e.reason
        return
    assert isinstance(msg, dict)
    _check_message(msg)
    try:
        msg = wire.verify(KEY, msg, "result", nonce="s1", client_nonce="c1", resource="r0")
    except wire.Refused as e:
        assert e.reason
    else:
        _check_message(msg)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'{"v": 1, "type": "challenge", "nonce": ["s1"]}\n', "bad_message"),
        (b'{"v": 1, "type": "challenge", "nonce": {"a": 1}}\n', "bad_message"),
        (b'{"v": 1, "type": "challenge", "nonce": "\\ud800"}\n', "not_json"),
        (b'{"v": 1, "type": "challenge", "\\udc80": "s1"}\n', "not_json"),
        (b"[" * 2_000 + b"]" * 2_000 + b"\n", "not_json"),
    ],
)
def test_peer_messages_are_flat_objects_of_unicode_text(line: bytes, reason: str) -> None:
    with pytest.raises(wire.Refused) as e:
        wire.decode(line)
    assert e.value.reason == reason


@FUZZ
@given(st.dictionaries(TEXT, JSON_VALUES, max_size=6), st.sampled_from([None, KEY, b"x"]))
@example({"v": 1, "type": "result", "mac": "\ud800"}, None)
@example({"v": 1, "type": "result", "mac": "\u00e9" * 64}, None)
def test_verify_raises_only_refused_on_any_decoded_dict(
    msg: dict[str, Any], signer: bytes | None
) -> None:
    if signer is not None:
        msg = wire.sign(signer, msg)
    try:
        wire.verify(KEY, msg, "result", nonce="s1")
    except wire.Refused as e:
        assert e.reason


# ---- the control socket --------------------------------------------------------------------
# The server's _parse: a request, or an error reply with code "malformed" (never raises). The
# client's request(): ControlError (ControlUnavailable when the daemon cannot be reached).


@FUZZ
@given(st.one_of(json_bytes(), st.just(b'{"command": "status"}')).map(lambda b: b + b"\n"))
@example(b"[" * 60_000 + b"\n")
@example(b'{"command": "status", "x": ' + b"[" * 5_000 + b"]" * 5_000 + b"}\n")
@example(b'{"command": "\\ud800"}\n')
@example(b'{"command": "clear-latch", "instance": "\\udc80"}\n')
@example(b'{"command": "status"}')
def test_control_requests_parse_or_answer_malformed(line: bytes) -> None:
    req = control._parse(line)
    assert isinstance(req, dict)
    if "error" in req:
        assert req["code"] == "malformed"
    else:
        assert isinstance(req["command"], str)
    json.dumps(req, ensure_ascii=False).encode()  # the server may log or echo any of it


class _Replier:
    """A Unix socket server that answers each connection with `self.reply` (the daemon's
    side, played back), for the client's parsing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.reply = b""
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(self.reply)

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(5)


@pytest.fixture(scope="module")
def replier(scratch: Path) -> Iterator[_Replier]:
    r = _Replier(scratch / "control.sock")
    yield r
    r.close()


@FUZZ
@given(st.one_of(json_bytes(), st.just(b'{"ok": true}')))
@example(b"[" * 60_000)
@example(b'{"ok": true, "instances": ' + b"[" * 5_000 + b"]" * 5_000 + b"}")
@example(b'{"ok": false, "error": "\\ud800", "code": "refused"}')
@example(b'{"ok": true, "state": "\\udcff"}')
@example(b"")
def test_control_replies_parse_or_raise_control_error(replier: _Replier, raw: bytes) -> None:
    replier.reply = raw + b"\n" if raw else raw
    try:
        reply = control.request(replier.path, {"command": "status"}, timeout=5.0)
    except control.ControlError:
        return
    assert isinstance(reply, dict)
    json.dumps(reply, ensure_ascii=False).encode()  # the CLI prints it
