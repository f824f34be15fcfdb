"""auth_hmac (issue 24) from the configuration to the wire: `[vrrp_instance.auth_hmac]` read
and checked (keys inline or in root-only files, read by config.load), and the trailer split
from and appended to real adverts (daemon/advert_auth.py) as keepalived 2.4.3 does: two
adverts it sent in a namespace (captured by tcpdump, src 10.98.0.1, VRID 51, key 1 = the
bytes 0..31) verify here. The codec itself: tests/test_auth_hmac.py."""

from __future__ import annotations

from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest
import structlog
from config_cases import instance, problems

from drbdha.config import load, parse
from drbdha.daemon.advert_auth import AdvertAuth, split
from drbdha.daemon.instance import Instance
from drbdha.errors import ConfigError
from drbdha.metrics import Metrics
from drbdha.net.vrrp_socket import Received
from drbdha.vrrp import auth_hmac as ah
from drbdha.vrrp import packet

KEY = bytes(range(32))
HEX = "hex:" + KEY.hex()
ASCII = "an-ascii-key-of-thirty-two-bytes"
# keepalived 2.4.3, VRRPv3 then VRRPv2, priority 200, VIP 10.98.0.100 (helper capture).
KEEPALIVED_V3 = bytes.fromhex(
    "3133c801006410af0a620064010100006b16533a4f1e0000b51c3dde530124e1b51d24eec8ebf1cd"
)
KEEPALIVED_V2 = bytes.fromhex(
    "2133c80100010c040a6200640000000000000000010100006b16538cccfc0000e13da650e4f979d8aafd5a10cc4bcfc9"
)
KEEPALIVED_SRC = ip_address("10.98.0.1")


def auth(**table: Any) -> dict[str, Any]:
    return {"vrrp_instance": [instance(auth_hmac=table)]}


# ---- the configuration -----------------------------------------------------------------------


def test_a_table_in_keepalived_terms() -> None:
    cfg = parse(auth(keys={"1": HEX, "7": ASCII}, active_key=7, mode="permissive"))
    a = cfg.vrrp_instances[0].auth_hmac
    assert a is not None
    assert a.keys == ((1, KEY), (7, ASCII.encode()))
    assert (a.active_key, a.mode, a.anti_replay, a.time_window) == (7, "permissive", "time", None)
    assert KEY.hex() not in repr(cfg)  # never in a log line


@pytest.mark.parametrize(
    ("table", "path", "words"),
    [
        ({"keys": {"0": HEX}, "active_key": 1}, "keys", "1-255"),
        ({"keys": {"1": "hex:0011"}, "active_key": 1}, "keys", "32-64 bytes"),
        ({"keys": {"1": "hex:zz" * 16}, "active_key": 1}, "keys", "hex digits"),
        ({"keys": {"1": "short"}, "active_key": 1}, "keys", "got 5"),
        ({"keys": {"1": "x" * 65}, "active_key": 1}, "keys", "got 65"),
        ({"keys": {"1": "file:relative/path"}, "active_key": 1}, "keys", "absolute"),
        ({"keys": {}, "active_key": 1}, "keys", "table of id = key"),
        ({"keys": {"1": HEX}}, "active_key", "required in mode 'enforce'"),
        ({"keys": {"1": HEX}, "active_key": 2}, "active_key", "not one of the keys"),
        ({"keys": {"1": HEX}, "active_key": 1, "mode": "on"}, "mode", "enforce"),
        ({"keys": {"1": HEX}, "active_key": 1, "time_window": 301}, "time_window", "1..300"),
        ({"keys": {"1": HEX}, "active_key": 1, "hmac": "sha1"}, "hmac", "unknown key"),
    ],
)
def test_bad_tables_are_named_at_their_key(table: dict[str, Any], path: str, words: str) -> None:
    found = problems(auth(**table))
    assert any(p == f"vrrp_instance[0].auth_hmac.{path}" and words in m for p, m in found), found


def test_receive_only_needs_no_signing_key() -> None:
    a = parse(auth(keys={"1": HEX}, mode="receive-only")).vrrp_instances[0].auth_hmac
    assert a is not None
    assert a.active_key is None


def write(path: Path, text: str, mode: int) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def config_file(tmp_path: Path, key: Path) -> Path:
    return write(
        tmp_path / "drbdha.toml",
        "[[vrrp_instance]]\nname = 'vi'\ninterface = 'eth0'\nvrid = 51\n"
        "virtual_ipaddress = ['192.0.2.100/24']\n"
        f"[vrrp_instance.auth_hmac]\nkeys = {{ 1 = 'file:{key}' }}\nactive_key = 1\n",
        0o600,
    )


@pytest.mark.parametrize("text", [HEX + "\n", ASCII + "\n"])
def test_load_reads_a_root_only_key_file(tmp_path: Path, text: str) -> None:
    key = write(tmp_path / "vrrp.key", text, 0o600)
    a = load(config_file(tmp_path, key)).vrrp_instances[0].auth_hmac
    assert a is not None
    assert a.keys[0][1] == (KEY if text.startswith("hex:") else ASCII.encode())


@pytest.mark.parametrize(
    ("text", "mode", "words"),
    [
        (HEX, 0o644, "chmod 600"),
        ("too short", 0o600, "32-64 bytes"),
        ("\xe9" * 40, 0o600, "not ASCII"),
    ],
)
def test_a_key_file_is_refused_with_its_reason(
    tmp_path: Path, text: str, mode: int, words: str
) -> None:
    key = write(tmp_path / "vrrp.key", text, mode)
    with pytest.raises(ConfigError) as e:
        load(config_file(tmp_path, key))
    ((path, message),) = e.value.problems
    assert path == "vrrp_instance[0].auth_hmac.keys.1"
    assert words in message


def test_a_missing_key_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load(config_file(tmp_path, tmp_path / "absent.key"))


# ---- on the wire -----------------------------------------------------------------------------


@pytest.mark.parametrize(("payload", "version"), [(KEEPALIVED_V3, 3), (KEEPALIVED_V2, 2)])
def test_keepalived_243_adverts_verify(payload: bytes, version: int) -> None:
    message, trailer = split(payload, version, 4)
    assert (len(message), len(trailer or b"")) == (len(payload) - 28, 28)
    decoded = packet.decode(
        message, version=version, src=KEEPALIVED_SRC, dst=ip_address("224.0.0.18"), hop_limit=255
    )
    assert decoded.advert.priority == 200
    assert trailer is not None
    at = (ah.Trailer.parse(trailer).seq >> 32) * 10**9
    origin = ah.Origin(KEEPALIVED_SRC, version, 51)
    assert ah.Verifier({1: KEY}).check(message, trailer, origin, at).outcome == ah.OK
    assert ah.Verifier({1: ASCII.encode()}).check(message, trailer, origin, at).outcome == (
        ah.BAD_HMAC
    )


def test_no_trailer_unless_the_length_says_exactly_one() -> None:
    message = KEEPALIVED_V3[:-28]
    assert split(message, 3, 4) == (message, None)
    assert split(KEEPALIVED_V3 + b"\0", 3, 4) == (KEEPALIVED_V3 + b"\0", None)


def build(mode: str = "enforce") -> AdvertAuth:
    cfg = parse(auth(keys={"1": HEX}, active_key=1, mode=mode)).vrrp_instances[0]
    return AdvertAuth.build(cfg, {1: KEY})


def test_ipv6_signed_advert_round_trip_with_the_kernels_checksum() -> None:
    src, dst = ip_address("fe80::1"), ip_address("ff02::12")
    advert = packet.Advertisement(3, 51, 150, 100, (ip_address("fd00::100"),))
    now = 1_800_000_000 * 10**9
    signed = build().sign(packet.encode(advert, src, dst), src, now)
    # The kernel (IPV6_CHECKSUM) checksums the whole payload, trailer included.
    zeroed = signed[:6] + b"\0\0" + signed[8:]
    csum = packet.internet_checksum(packet._pseudo_header(src, dst, len(zeroed)) + zeroed)
    wire = zeroed[:6] + csum.to_bytes(2, "big") + zeroed[8:]
    message, trailer = split(wire, 3, 6)
    assert build().check(message, trailer, src, now).outcome == ah.OK
    got = packet.decode(message, version=3, src=src, dst=dst, hop_limit=255, checksummed=wire)
    assert got.advert == advert
    with pytest.raises(Exception, match="checksum"):
        packet.decode(message, version=3, src=src, dst=dst, hop_limit=255)


def test_one_sequence_per_advert_and_a_replay_is_refused() -> None:
    src = ip_address("192.0.2.1")
    message = packet.encode(
        packet.Advertisement(3, 51, 150, 100, (ip_address("192.0.2.100"),)),
        src,
        ip_address("224.0.0.18"),
    )
    sender, receiver = build(), build()
    now = 1_800_000_000 * 10**9
    first = sender.sign(message, src, now)
    second = sender.sign(message, src, now)  # the same instant: the counter breaks the tie
    assert first != second
    for wire, outcome in ((first, ah.OK), (second, ah.OK), (first, ah.REPLAY)):
        m, t = split(wire, 3, 4)
        assert receiver.check(m, t, src, now).outcome == outcome


def test_receive_only_signs_nothing_and_a_reload_keeps_the_marks() -> None:
    src = ip_address("192.0.2.1")
    message = KEEPALIVED_V3[:-28]
    assert build("receive-only").sign(message, src, 10**18) == message
    before = build()
    before.verifier.marks[src] = 42
    before.sequence.last = 99
    cfg = parse(auth(keys={"1": HEX, "2": ASCII}, active_key=2)).vrrp_instances[0]
    after = AdvertAuth.build(cfg, {1: KEY, 2: ASCII.encode()}, before)
    assert (after.verifier.marks[src], after.sequence.last, after.key_id) == (42, 99, 2)


@pytest.mark.parametrize(("version", "family"), [(3, 4), (2, 4), (3, 6)])
@pytest.mark.parametrize("count", [1, 76, 255])
def test_the_mtu_budget_is_the_size_of_a_signed_advert(
    version: int, family: int, count: int
) -> None:
    """advert_size (what over_mtu holds against the MTU) is what goes on the wire: the IP
    header, the encoded message and the trailer sign() returns."""
    base = 0x0A000000 if family == 4 else 0xFD000000 << 96
    addresses = tuple(ip_address(base + i) for i in range(count))
    src, dst = ip_address(base + 1000), ip_address(base + 1001)
    message = packet.encode(packet.Advertisement(version, 51, 100, 1, addresses), src, dst)
    trailer = ah.sign(message, 1, KEY, 7, ah.Origin(src, version, 51))
    ip_header = 20 if family == 4 else 40
    assert packet.advert_size(version, family, count) == ip_header + len(message)
    assert packet.advert_size(version, family, count, ah.TRAILER_LEN) == (
        ip_header + len(message) + len(trailer)
    )


def receiving(mode: str) -> Instance:
    """A backup for keepalived's captured group (vrid 51, 10.98.0.100) whose wall clock is
    the capture's, so the captured trailer is inside the window."""
    table = instance(
        virtual_ipaddress=["10.98.0.100/24"],
        advert_interval=1,
        auth_hmac={"keys": {"1": HEX}, "active_key": 1, "mode": mode},
    )
    cfg = parse({"vrrp_instance": [table]}).vrrp_instances[0]
    at = ah.Trailer.parse(KEEPALIVED_V3[-28:]).seq >> 32
    log = structlog.get_logger()
    inst = Instance(cfg, None, None, Metrics(), log, wall=lambda: float(at))  # type: ignore[arg-type]
    inst.machine.start(0.0)
    return inst


@pytest.mark.parametrize(("mode", "unsigned_counts"), [("enforce", False), ("permissive", True)])
def test_only_a_verified_advert_is_the_observation_rules_proof(
    mode: str, unsigned_counts: bool
) -> None:
    """The observation rule (daemon/storage.py `heard`) takes the master as alive only from
    machine.last_peer stamped at this instant: a refused advert must never reach it."""
    dst = ip_address("224.0.0.18")
    inst = receiving(mode)
    unsigned = Received(KEEPALIVED_V3[:-28], KEEPALIVED_SRC, dst, 255)
    inst.receive(unsigned, 1.0)
    peer = inst.machine.last_peer
    assert (peer is not None and peer.seen_at == 1.0) is unsigned_counts
    inst.receive(Received(KEEPALIVED_V3, KEEPALIVED_SRC, dst, 255), 2.0)
    peer = inst.machine.last_peer
    assert peer is not None
    assert (peer.seen_at, peer.address, peer.priority) == (2.0, KEEPALIVED_SRC, 200)
