"""Readers: one raw TOML value -> a typed value, or `_Invalid(message)`.

Each reader checks one value alone (rules.py checks keys against each other), and its
message is what `check-config` prints after the key path, so it says what was expected and
what was given. A reader never substitutes a default and raises nothing but `_Invalid`.
The names keep their underscore: they are the config package's own, not drbdha.config's.
"""

from __future__ import annotations

import ipaddress
import math
import unicodedata
from collections.abc import Callable
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any, Final

from drbdha.config.model import IPAddress, IPInterface


class _Invalid(ValueError):
    """A value failed its check; the message is shown after the key path."""


def _int(lo: int, hi: int) -> Callable[[Any], int]:
    def read(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise _Invalid(f"must be an integer, got {v!r}")
        if not lo <= v <= hi:
            raise _Invalid(f"must be in {lo}..{hi}, got {v}")
        return v

    return read


def _seconds(lo: float, hi: float) -> Callable[[Any], float]:
    def read(v: Any) -> float:
        # tomllib integers are unbounded and math.isfinite(10**400) raises OverflowError, so
        # only floats go through isfinite; the range check compares ints exactly.
        if (
            isinstance(v, bool)
            or not isinstance(v, int | float)
            or (isinstance(v, float) and not math.isfinite(v))
        ):
            raise _Invalid(f"must be a number of seconds, got {v!r}")
        if not lo <= v <= hi:
            raise _Invalid(f"must be in {lo}..{hi} seconds, got {v}")
        return float(v)

    return read


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise _Invalid(f"must be true or false, got {v!r}")
    return v


def _not_example(v: Any) -> bool:
    # The packaged /etc/drbdha/drbdha.toml is the example with `example = true`: its eth0,
    # vrid 51 and r0 could well exist on the machine, and an instance started from them would
    # advertise on a real LAN. Refused, so nothing runs until the admin has edited the file.
    if _bool(v):
        raise _Invalid(
            "this is the example file: set interface, vrid, virtual_ipaddress, the storage "
            "chain and [peer] for this node, then delete this line"
        )
    return False


def _str(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise _Invalid(f"must be a non-empty string, got {v!r}")
    return v


def _breaks_lines(c: str) -> bool:
    """A control character (C0, DEL, C1) or a Unicode line or paragraph separator: what ends
    or garbles a line of a file drbdha writes (str.splitlines() breaks on all of them)."""
    return unicodedata.category(c) in ("Cc", "Zl", "Zp")


def _plain(v: Any) -> str:
    """A string that goes into a generated file or a command line: no double quote (it would
    end the quoted word it is written into) and no control character (a newline starts a
    line of drbdha's choosing; NUL cannot be passed to a program at all)."""
    s = _str(v)
    if any(c == '"' or _breaks_lines(c) for c in s):
        raise _Invalid(f"must not contain quotes or control characters, got {v!r}")
    return s


def _choice(*choices: str) -> Callable[[Any], str]:
    def read(v: Any) -> str:
        if v not in choices:
            raise _Invalid(f"must be one of {', '.join(map(repr, choices))}, got {v!r}")
        return str(v)

    return read


def _interface_name(v: Any) -> str:
    name = _str(v)
    # The kernel's dev_valid_name(): IFNAMSIZ - 1, not "." or "..", no '/', ':' or
    # whitespace (it becomes a /proc/sys/net path); and no control characters.
    if (
        len(name) > 15
        or name in (".", "..")
        or any(c in "/:" or c.isspace() or _breaks_lines(c) for c in name)
    ):
        raise _Invalid(f"is not a valid interface name: {v!r}")
    return name


def _listen(v: Any) -> str:
    if v == "":
        return ""
    if not isinstance(v, str):
        raise _Invalid(f'must be "host:port" or "" to disable, got {v!r}')
    host, sep, port = v.rpartition(":")
    # isascii(): str.isdigit() is true for "²" and "٣", which int() rejects or misreads.
    if not sep or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise _Invalid(f'must be "host:port" or "" to disable, got {v!r}')
    bracketed = host.startswith("[") and host.endswith("]")
    if bracketed:
        host = host[1:-1]
    if host or bracketed:
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            raise _Invalid(f"host must be an IP address, got {host!r}") from None
        # "::1:9942" is ambiguous (port 9942 of ::1, or port 9942 of ::1:0?); RFC 3986 brackets.
        if addr.version != (6 if bracketed else 4):
            raise _Invalid(f'IPv6 hosts are written "[addr]:port", got {v!r}')
    return v


def _path(v: Any) -> Path:
    p = Path(_plain(v))
    if not p.is_absolute():
        raise _Invalid(f"must be an absolute path, got {v!r}")
    return p


def _list_of(
    item: Callable[[Any], Any], *, min_len: int = 0, max_len: int | None = None
) -> Callable[[Any], tuple[Any, ...]]:
    def read(v: Any) -> tuple[Any, ...]:
        if not isinstance(v, list):
            raise _Invalid(f"must be a list, got {v!r}")
        if len(v) < min_len:
            raise _Invalid(f"needs at least {min_len} entries")
        if max_len is not None and len(v) > max_len:
            raise _Invalid(f"allows at most {max_len} entries, got {len(v)}")
        out = []
        for i, x in enumerate(v):
            try:
                out.append(item(x))
            except _Invalid as e:
                raise _Invalid(f"[{i}] {e}") from None
        if len(set(out)) != len(out):
            raise _Invalid("has duplicate entries")
        return tuple(out)

    return read


def _vip(v: Any) -> IPInterface:
    if not isinstance(v, str) or "/" not in v:
        raise _Invalid(f'must be "address/prefix", got {v!r}')
    try:
        iface = ipaddress.ip_interface(v)
    except ValueError as e:
        raise _Invalid(str(e)) from None
    if iface.ip.is_multicast or iface.ip.is_unspecified or iface.ip.is_loopback:
        raise _Invalid(f"{v!r} cannot be a virtual address")
    return iface


def _drbd_name(v: Any) -> str:
    name = _str(v)
    # drbdadm reads "all" as every resource and "minor-N" as a device number: a promote or
    # a --force demote would reach resources that are not this chain's.
    if name == "all" or (name.startswith("minor-") and name[6:].isdecimal()):
        raise _Invalid(f"{v!r} means other resources to drbdadm: name the DRBD resource itself")
    # DRBD refuses '/', whitespace and control characters in a name; drbdadm takes it as an
    # argument (no option look-alikes), and drbdha reads it back from `drbdadm dump`, where
    # quotes, braces, ';', '#' and '\' are syntax.
    if (
        name.startswith("-")
        or len(name) > 128
        or any(c in '/"{};#\\' or c.isspace() or _breaks_lines(c) for c in name)
    ):
        raise _Invalid(
            f"is not a DRBD resource name (no whitespace, control characters or any of "
            f"/\"{{}};#\\, not '-' first, 128 at most): {v!r}"
        )
    return name


def _ip(v: Any) -> IPAddress:
    if not isinstance(v, str):  # ip_address(5) would be 0.0.0.5, ip_address(True) 0.0.0.1
        raise _Invalid(f"must be an IP address string, got {v!r}")
    try:
        addr = ipaddress.ip_address(v)
    except ValueError as e:
        raise _Invalid(str(e)) from None
    # A zone ("fe80::2%eth0") would make the address unequal to the zone-less sources the
    # sockets report: every advert, every fence request from the peer would be dropped.
    if "%" in v:
        raise _Invalid(f"must be written without a %zone, got {v!r}")
    return addr


def _not_a_host(addr: IPAddress) -> str | None:
    """What makes `addr` no other host's address, or None."""
    if isinstance(addr, IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped  # ::ffff:127.0.0.1 is loopback too
    if addr.is_unspecified:
        return "unspecified"
    if addr.is_loopback:
        return "loopback"
    if addr.is_multicast:
        return "multicast"
    return None


def _unicast_peer(v: Any) -> IPAddress:
    addr = _ip(v)
    kind = _not_a_host(addr)
    if kind is not None:
        raise _Invalid(f"{v!r} is a {kind} address, not a peer's")
    return addr


def _peer_address(v: Any) -> IPAddress:
    addr = _ip(v)
    kind = _not_a_host(addr)
    # Loopback is one of this node's own addresses, which belong to check-config (it can
    # look at the interfaces); tests/test_fencing_config.py's fence-peer runs use 127.0.0.1.
    if kind is not None and kind != "loopback":
        raise _Invalid(f"{v!r} is a {kind} address, not the peer's")
    if isinstance(addr, IPv6Address) and addr.is_link_local:
        # Without a zone connect() fails (EINVAL); with one, the peer's requests would not
        # match it (see _ip).
        raise _Invalid(f"{v!r} is link-local: use the peer's global or unique-local address")
    return addr


def _mountpoint(v: Any) -> Path:
    p = _path(v)
    if p == Path("/") or ".." in p.parts:
        raise _Invalid(f"must be a directory below /, without '..', got {v!r}")
    return p


def _made_of(name: str, extra: str) -> bool:
    """Only ASCII letters, digits and the characters of `extra`."""
    return all(c.isascii() and (c.isalnum() or c in extra) for c in name)


def _fstype(v: Any) -> str:
    name = _str(v)
    # mount -t NAME: a kernel filesystem name, never an option or a list ("nofoo,bar").
    if not _made_of(name, "._"):
        raise _Invalid(f"is not a filesystem type: {v!r}")
    return name


def _mount_options(v: Any) -> str:
    if v == "":
        return ""
    opts = _str(v)
    # Double quotes are libmount's own quoting of a value with commas (SELinux's
    # context="...,..."), passed on as one argument: only an unpaired one is refused.
    if (
        opts.startswith("-")
        or any(c.isspace() or _breaks_lines(c) for c in opts)
        or ",," in opts
        or opts.count('"') % 2
    ):
        raise _Invalid(f'must be mount(8) options such as "noatime,errors=remount-ro", got {v!r}')
    return opts


def _unit(v: Any) -> str:
    name = _str(v)
    kinds = (".service", ".socket", ".target", ".mount", ".timer", ".path")
    # systemd's own rule (unit_name_is_valid): these characters, one "@" before an instance,
    # 255 at most; "-" first would be read as an option by systemctl.
    if (
        name.startswith("-")
        or len(name) > 255
        or not _made_of(name, ":-_.\\@")
        or name.count("@") > 1
        or not name.endswith(kinds)
    ):
        raise _Invalid(f'must be a systemd unit name such as "nginx.service", got {v!r}')
    return name


def _host_name(name: str) -> bool:
    """RFC 1123 labels joined by single dots, as hostname(1) takes them (Debian's refuses an
    underscore, a leading or trailing '-' or '.', and ".." in a name); 64 at most."""
    labels = name.split(".")
    return len(name) <= 64 and all(
        0 < len(label) <= 63 and _made_of(label, "-") and label[0] != "-" and label[-1] != "-"
        for label in labels
    )


def _scope(v: Any) -> str:
    name = _str(v)
    # It becomes nfsd's hostname (HOST_NAME_MAX 64), as the nfsserver agent sets it: the
    # drop-in's `hostname "$0"` must take it, and it stands unquoted in an ExecStart= line.
    if not _host_name(name):
        raise _Invalid(
            f"must be a host name (letters, digits, '-' inside dot-separated labels; "
            f"64 at most), got {v!r}"
        )
    return name


_EXPORT_FORBIDDEN = frozenset("\"'()#\\")


def _export_unsafe(c: str) -> bool:
    """A character that would split or end an exports(5) line, or that exportfs reads as
    syntax: whitespace, control characters, quotes, parentheses, '#' and '\\'."""
    return c in _EXPORT_FORBIDDEN or c.isspace() or _breaks_lines(c)


def _export_path(v: Any) -> Path:
    p = _path(v)
    # Quoted in the exports line, whitespace would pass exportfs; but exportfs decodes a
    # backslash and three octal digits there, and etab lists such paths escaped ("\040"), so
    # drbdha's check that each path is exported (etab, and nfsd's unlock_filesystem by path)
    # would not find it. Refused rather than half-supported.
    if any(c in "#\\" or c.isspace() for c in str(p)):
        raise _Invalid(f"must not contain whitespace, '#' or '\\' (exports(5)), got {v!r}")
    return p


def _client(v: Any) -> str:
    spec = _str(v)
    if spec.startswith("-") or any(_export_unsafe(c) for c in spec):
        raise _Invalid(f'must be an exports(5) client such as "192.0.2.0/24", got {v!r}')
    return spec


def _export_options(v: Any) -> str:
    if v == "":
        return ""
    opts = _str(v)
    if any(_export_unsafe(c) for c in opts) or ",," in opts:
        raise _Invalid(f'must be exports(5) options such as "rw,sync", got {v!r}')
    if any(o.split("=")[0] == "fsid" for o in opts.split(",")):
        raise _Invalid("must not set fsid (the export's own `fsid` key sets it)")
    return opts


NAME_MAX: Final = 57
"""An instance's or a storage chain's name: at most 64 - len("drbdha-"), so the default NFS
server scope "drbdha-NAME" is still a host name's length."""


def _name(v: Any) -> str:
    name = _str(v)
    # It goes into file names (/etc/exports.d/drbdha-NAME.exports), drop-ins (the default
    # nfsd scope "drbdha-NAME"), comments, metric labels and key paths: a plain word only.
    if len(name) > NAME_MAX or not _made_of(name, "_-.") or name[0] in ".-":
        raise _Invalid(
            f"must be letters, digits, '_', '-', '.' (not '.' or '-' first; "
            f"{NAME_MAX} at most), got {v!r}"
        )
    return name


def _check_name(v: Any) -> str:
    name = _str(v)
    # A metrics label and a fault's name: "check:NAME".
    if len(name) > 64 or not _made_of(name, "-_."):
        raise _Invalid(f"must be letters, digits, '-', '_', '.' (64 at most), got {v!r}")
    return name


def _command(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not v or not all(isinstance(a, str) for a in v):
        raise _Invalid(f"must be a list of strings (the argv, no shell), got {v!r}")
    if not v[0].startswith("/"):
        raise _Invalid(f"must start with an absolute path to the program, got {v[0]!r}")
    # Run without a shell, so anything goes but NUL, which no argv can carry (subprocess
    # would raise ValueError at the first run).
    if any("\0" in a for a in v):
        raise _Invalid(f"must not contain a NUL character, got {v!r}")
    return tuple(v)


def _fsid(v: Any) -> int | str:
    if isinstance(v, int) and not isinstance(v, bool):
        if not 1 <= v <= 0xFFFFFFFF:  # 0 is the NFSv4 root, a different thing
            raise _Invalid(f"must be in 1..4294967295 or a UUID, got {v}")
        return v
    if isinstance(v, str):
        import uuid  # noqa: PLC0415 (the only user)

        try:
            return str(uuid.UUID(v))
        except ValueError:
            pass
    raise _Invalid(f"must be an integer in 1..4294967295 or a UUID, got {v!r}")


KEY_MIN, KEY_MAX = 32, 64  # bytes of an auth_hmac key (keepalived's bounds)


def key_bytes(text: str) -> bytes:
    """An auth_hmac key written as keepalived takes it: "hex:" and its digits, else ASCII."""
    if text.startswith("hex:"):
        try:
            key = bytes.fromhex(text[4:])
        except ValueError:
            raise _Invalid('"hex:" must be followed by hex digits') from None
    elif text.isascii() and text.isprintable():
        key = text.encode()
    else:
        raise _Invalid('must be printable ASCII, or "hex:..." for other bytes')
    if not KEY_MIN <= len(key) <= KEY_MAX:
        raise _Invalid(f"must be {KEY_MIN}-{KEY_MAX} bytes, got {len(key)}")
    return key


def _key_spec(v: Any) -> bytes | Path:
    text = _str(v)
    if text.startswith("file:"):
        return _path(text[5:])
    return key_bytes(text)


def _auth_keys(v: Any) -> tuple[tuple[int, bytes | Path], ...]:
    if not isinstance(v, dict) or not v:
        raise _Invalid('must be a table of id = key, e.g. { 1 = "file:/etc/drbdha/vrrp.key" }')
    out = []
    for name, spec in v.items():
        if not (name.isdigit() and 1 <= int(name) <= 255):
            raise _Invalid(f"key ids are 1-255, got {name!r}")
        try:
            out.append((int(name), _key_spec(spec)))
        except _Invalid as e:
            raise _Invalid(f"key {name}: {e}") from None
    return tuple(sorted(out, key=lambda kv: kv[0]))
