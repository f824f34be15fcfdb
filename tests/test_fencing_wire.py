"""The peer channel's messages (fencing/wire.py: signing, verifying, decoding, DRBD's exit
codes) and the shared secret file (fencing/secret.py). Pure code and real files under
tmp_path; no fakes."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from drbdha.fencing import wire
from drbdha.fencing.handler import Answer
from drbdha.fencing.secret import MIN_LENGTH, SecretError, read_secret

KEY = b"k" * 44
OTHER_KEY = b"o" * 44


def request(key: bytes = KEY, server_nonce: str = "s1", client_nonce: str = "c1") -> dict[str, Any]:
    return wire.decode(wire.outdate_request(key, "r0", server_nonce, client_nonce))


def result(key: bytes = KEY, **over: Any) -> dict[str, Any]:
    body = {
        "type": "result",
        "resource": "r0",
        "nonce": "s1",
        "client_nonce": "c1",
        "outcome": wire.OUTDATED,
        "disk": "Outdated",
        "detail": "outdated",
    }
    return wire.sign(key, {**body, **over})


def refusal(fn: Any, *args: Any, **kw: Any) -> str:
    with pytest.raises(wire.Refused) as e:
        fn(*args, **kw)
    return e.value.reason


# ---- sign / verify -------------------------------------------------------------------------


def test_signed_request_round_trips_through_the_wire() -> None:
    line = wire.outdate_request(KEY, "r0", "s1", "c1")
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    msg = wire.verify(KEY, wire.decode(line), "outdate", nonce="s1", client_nonce="c1")
    assert (msg["type"], msg["resource"], msg["v"]) == ("outdate", "r0", wire.VERSION)


def test_signed_result_round_trips() -> None:
    msg = wire.decode(wire.encode(result()))
    got = wire.verify(KEY, msg, "result", nonce="s1", client_nonce="c1", resource="r0")
    assert got["outcome"] == wire.OUTDATED


@pytest.mark.parametrize("index", [0, 31, 63])
def test_a_flipped_mac_character_is_bad_mac(index: int) -> None:
    msg = request()
    mac = msg["mac"]
    flipped = "0" if mac[index] != "0" else "1"
    msg["mac"] = mac[:index] + flipped + mac[index + 1 :]
    assert refusal(wire.verify, KEY, msg, "outdate", nonce="s1") == "bad_mac"


@pytest.mark.parametrize(
    ("field", "value"),
    [("resource", "r1"), ("nonce", "s2"), ("client_nonce", "c2"), ("type", "result"), ("v", 2)],
)
def test_a_changed_field_is_bad_mac(field: str, value: Any) -> None:
    msg = {**request(), field: value}
    assert refusal(wire.verify, KEY, msg, "outdate") == "bad_mac"


def test_an_added_field_is_bad_mac() -> None:
    msg = {**result(), "outcome_override": "outdated"}
    assert refusal(wire.verify, KEY, msg, "result") == "bad_mac"


def test_the_wrong_key_is_bad_mac() -> None:
    assert refusal(wire.verify, OTHER_KEY, request(), "outdate", nonce="s1") == "bad_mac"


@pytest.mark.parametrize("mac", [None, 5, "", "00" * 32])
def test_a_missing_or_malformed_mac_is_bad_mac(mac: Any) -> None:
    msg = request()
    if mac is None:
        del msg["mac"]
    else:
        msg["mac"] = mac
    assert refusal(wire.verify, KEY, msg, "outdate") == "bad_mac"


def test_a_non_ascii_mac_is_bad_mac_not_a_crash() -> None:
    msg = {**request(), "mac": "\u00e9" * 64}
    assert refusal(wire.verify, KEY, msg, "outdate") == "bad_mac"


def test_an_old_server_nonce_with_a_valid_mac_is_replayed() -> None:
    old = request(server_nonce="from-an-earlier-connection")
    assert refusal(wire.verify, KEY, old, "outdate", nonce="s-now") == "replayed"


def test_a_result_for_another_request_is_wrong_client_nonce() -> None:
    msg = result(client_nonce="c-old")
    reason = refusal(wire.verify, KEY, msg, "result", nonce="s1", client_nonce="c1")
    assert reason == "wrong_client_nonce"


def test_a_result_for_another_resource_is_wrong_resource() -> None:
    msg = result(resource="r1")
    reason = refusal(wire.verify, KEY, msg, "result", nonce="s1", client_nonce="c1", resource="r0")
    assert reason == "wrong_resource"


def test_our_own_request_reflected_back_is_not_a_result() -> None:
    # Validly signed under the shared key, but a request, not an answer.
    assert refusal(wire.verify, KEY, request(), "result", nonce="s1") == "unexpected_message"


def test_nonces_are_fresh() -> None:
    nonces = {wire.nonce() for _ in range(100)}
    assert len(nonces) == 100
    assert all(len(n) == 32 for n in nonces)


# ---- decode --------------------------------------------------------------------------------


def test_decode_refuses_a_line_over_max_line() -> None:
    line = wire.encode({"type": "challenge", "v": 1, "nonce": "x" * wire.MAX_LINE})
    assert len(line) > wire.MAX_LINE
    assert refusal(wire.decode, line) == "too_long_or_truncated"


def test_decode_takes_a_line_of_exactly_max_line() -> None:
    pad = wire.MAX_LINE - len(wire.encode({"type": "challenge", "v": 1, "nonce": ""}))
    line = wire.encode({"type": "challenge", "v": 1, "nonce": "x" * pad})
    assert len(line) == wire.MAX_LINE
    assert wire.decode(line)["nonce"] == "x" * pad


def test_decode_refuses_a_line_without_its_newline() -> None:
    line = wire.encode(wire.challenge("s1"))
    assert refusal(wire.decode, line[:-1]) == "too_long_or_truncated"
    assert refusal(wire.decode, b"") == "too_long_or_truncated"


@pytest.mark.parametrize("line", [b"not json\n", b'{"type": \n', b"\xff\xfe\n"])
def test_decode_refuses_what_is_not_json(line: bytes) -> None:
    assert refusal(wire.decode, line) == "not_json"


@pytest.mark.parametrize(
    "line",
    [
        b'{"type":"challenge","v":2,"nonce":"s"}\n',
        b'{"type":"challenge","nonce":"s"}\n',
        b'{"type":"challenge","v":"1","nonce":"s"}\n',
        b'{"v":1,"nonce":"s"}\n',
        b'{"type":5,"v":1}\n',
        b"[1]\n",
        b'"challenge"\n',
    ],
)
def test_decode_refuses_a_wrong_version_or_shape(line: bytes) -> None:
    assert refusal(wire.decode, line) == "bad_message"


def test_challenge_and_refused_are_plain_messages() -> None:
    assert wire.decode(wire.encode(wire.challenge("s1"))) == {
        "type": "challenge",
        "v": 1,
        "nonce": "s1",
    }
    assert wire.decode(wire.refused("bad_mac")) == {"type": "refused", "v": 1, "reason": "bad_mac"}


# ---- exit codes ----------------------------------------------------------------------------


def test_exit_codes_are_drbds() -> None:
    assert wire.EXIT_CODES == {
        "inconsistent": 3,
        "outdated": 4,
        "unreachable": 5,
        "primary": 6,
        "newer": 6,
    }
    assert wire.EXIT_FAILED == 1
    assert set(wire.OUTCOMES) == {"outdated", "inconsistent", "primary", "newer", "failed"}


@pytest.mark.parametrize(
    ("outcome", "code"),
    [("outdated", 4), ("inconsistent", 3), ("unreachable", 5), ("primary", 6), ("failed", 1)],
)
def test_answer_exit_code(outcome: str, code: int) -> None:
    assert Answer(outcome, "").exit_code == code


def test_an_unknown_outcome_exits_failed() -> None:
    assert Answer("dead", "").exit_code == 1


# ---- the secret file -----------------------------------------------------------------------


def secret_file(tmp_path: Path, content: bytes = b"A" * 43 + b"=\n", mode: int = 0o600) -> Path:
    p = tmp_path / "fence.key"
    p.write_bytes(content)
    p.chmod(mode)
    return p


def test_a_root_only_secret_is_read_without_its_newline(tmp_path: Path) -> None:
    key = read_secret(secret_file(tmp_path))
    assert key == b"A" * 43 + b"="
    assert len(key) == 44


def test_a_secret_readable_by_others_is_refused_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(SecretError) as e:
        read_secret(secret_file(tmp_path, mode=0o644))
    assert "0644" in str(e.value)
    assert "chmod 600" in str(e.value)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_any_group_or_other_bit_is_refused(tmp_path: Path, mode: int) -> None:
    with pytest.raises(SecretError, match="chmod 600"):
        read_secret(secret_file(tmp_path, mode=mode))


def test_a_short_secret_is_refused(tmp_path: Path) -> None:
    short = b"x" * (MIN_LENGTH - 1) + b"\n"
    with pytest.raises(SecretError) as e:
        read_secret(secret_file(tmp_path, short))
    assert f"{MIN_LENGTH - 1} bytes, at least {MIN_LENGTH}" in str(e.value)


def test_whitespace_does_not_count_towards_the_length(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="at least"):
        read_secret(secret_file(tmp_path, b"  " + b"x" * 20 + b" " * 20 + b"\n"))


def test_exactly_min_length_is_enough(tmp_path: Path) -> None:
    assert read_secret(secret_file(tmp_path, b"x" * MIN_LENGTH)) == b"x" * MIN_LENGTH


def test_a_missing_secret_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="not found"):
        read_secret(tmp_path / "absent.key")


def test_a_symlink_is_refused_even_to_a_good_file(tmp_path: Path) -> None:
    target = secret_file(tmp_path)
    link = tmp_path / "link.key"
    link.symlink_to(target)
    assert read_secret(target)  # the target itself is fine
    with pytest.raises(SecretError) as e:
        read_secret(link)
    assert str(link) in str(e.value)


def test_a_directory_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "keydir"
    d.mkdir(mode=0o700)
    with pytest.raises(SecretError, match="not a regular file"):
        read_secret(d)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_a_secret_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    p = secret_file(tmp_path)
    os.chown(p, 12345, -1)
    with pytest.raises(SecretError, match="owned by uid 12345"):
        read_secret(p)


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "fence.key"
    os.mkfifo(fifo, 0o600)
    got: list[object] = []

    def read() -> None:
        try:
            got.append(read_secret(fifo))
        except SecretError as e:
            got.append(e)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(0.5)  # a refusal needs no I/O at all; blocked is blocked for good
    blocked = reader.is_alive()
    if blocked:  # release the reader: a writer end lets its open() return
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(5)
    assert not blocked
    assert isinstance(got[0], SecretError)
