"""The project's layering, as a table, and the clock rule: checked by walking every module's
imports and calls with ast.

The table (ROOMS, ARROWS and the lists below them) is the rule. A new arrow between rooms is
a deliberate one-line change here, and docs/architecture.md shows the same table: its
picture is generated from it (test_the_architecture_page_draws_this_table says what to
paste when they differ).

- Every module of drbdha/ is in one room: the room whose member is the longest match for its
  name ("drbdha.fencing.handler" before "drbdha.fencing"). A module in no room fails.
- A module imports from its own room and from the rooms ARROWS lists for it. Importing a
  module of a package is not importing the package's room (`from drbdha.fencing import wire`
  is an import of fencing.wire).
- LAZY_ARROWS: an arrow for one function of one module (the CLI's `run` into the daemon).
- PRIVATE: modules only some rooms may import (the state machine); THIRD_PARTY: who may
  import each non-stdlib package; STDLIB_LIMITS: stdlib modules a room must not use.
- LIGHT_COMMANDS: CLI commands run in a fresh interpreter, which must not load HEAVY.
- The clock rule: only drbdha/clock.py reads a clock (time.time/monotonic/perf_counter...,
  loop.time(), datetime.now()...). CLOCK_READERS names the exceptions, each with its reason.

Every import statement counts, including those inside functions and `if TYPE_CHECKING:`.
Only direct imports are checked, not what the imported modules import in turn (the rooms
they are in are checked themselves); LIGHT_COMMANDS checks what is loaded in fact.
"""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "drbdha"
ARCHITECTURE = ROOT / "docs" / "architecture.md"

# ---- The table ---------------------------------------------------------------------------

ROOMS: dict[str, tuple[str, ...]] = {
    # The floor: small modules the edges stand on. The package's own __init__ (only
    # __version__) counts as "errors": importing `drbdha` itself imports nothing; so does
    # `drbdha.defaults` (default paths and latch kinds: the fence-peer handler's light way
    # to the daemon).
    # `drbdha.rootfile` (a root-only key file's bytes) too: the fence-peer handler and the
    # configuration's auth_hmac keys read them alike.
    "errors": ("drbdha", "drbdha.errors", "drbdha.defaults", "drbdha.rootfile"),
    "clock": ("drbdha.clock",),
    "durable": ("drbdha.durable",),
    "config": ("drbdha.config",),  # a module or a package: the same room
    # The edges.
    "core": ("drbdha.vrrp",),
    "chain": ("drbdha.chain",),
    "resources": ("drbdha.resources",),
    "net": ("drbdha.net",),
    # What runs in DRBD's fence-peer helper process (`drbdha fence-peer`): synchronous.
    "fence_handler": (
        "drbdha.fencing.handler",
        "drbdha.fencing.wire",
        "drbdha.fencing.secret",
        "drbdha.fencing.quorum",
    ),
    "fencing": ("drbdha.fencing",),
    # The middle: the wiring.
    "daemon": ("drbdha.daemon",),
    # What an operator or another program uses.
    "top": (
        "drbdha.__main__",
        "drbdha.cli",
        "drbdha.manpages",
        "drbdha.control",
        "drbdha.status",
        "drbdha.metrics",
        "drbdha.logs",
        "drbdha.systemd",
        "drbdha.latches",
        "drbdha.alone",
    ),
}

# Which rooms a room may import, besides itself.
ARROWS: dict[str, frozenset[str]] = {
    "errors": frozenset(),
    "clock": frozenset(),
    "durable": frozenset(),
    "config": frozenset({"errors"}),
    "core": frozenset({"errors"}),  # pure: no clock, no I/O (STDLIB_LIMITS)
    "chain": frozenset({"clock", "errors"}),  # knows no DRBD, mount or address
    "resources": frozenset({"chain", "config", "clock", "durable", "errors"}),
    "net": frozenset({"core", "chain", "config", "clock", "durable", "errors"}),
    "fence_handler": frozenset({"config", "errors"}),
    "fencing": frozenset({"fence_handler", "resources", "config", "clock", "errors"}),
    "daemon": frozenset(ROOMS),  # the wiring imports every room
    "top": frozenset({"core", "config", "clock", "durable", "errors"}),
}

# Arrows for one function ("module:function", nested functions included): imports made
# only on that path, lazily, so the rest of the module stays light.
LAZY_ARROWS: dict[str, frozenset[str]] = {
    "drbdha.cli:_run": frozenset({"daemon"}),  # `drbdha run`: the one way into the daemon
    "drbdha.cli:_over_mtu": frozenset({"net"}),  # a start's and check-config's MTU budget
    "drbdha.cli:_check_storage": frozenset({"resources"}),  # check-config's DRBD/NFS advice
    "drbdha.cli:_check_peer": frozenset({"resources", "fence_handler"}),  # and the secret
    "drbdha.cli:_fence_peer": frozenset({"fence_handler"}),  # `drbdha fence-peer`
    "drbdha.cli:_distrust_after_crash": frozenset({"fence_handler"}),  # and its fallback
    "drbdha.cli:_against_quorum": frozenset({"fence_handler"}),  # and DRBD 9's quorum
}

# Modules only these rooms may import (besides the module's own room).
PRIVATE: dict[str, frozenset[str]] = {
    # The state machine: driven by the daemon; status reads its Snapshot. net/ and
    # resources/ never see it (they may use vrrp.packet and vrrp.constants).
    "drbdha.vrrp.machine": frozenset({"daemon", "top"}),
}

# Who may import each package that is not in the standard library ("module" prefixes).
THIRD_PARTY: dict[str, tuple[str, ...]] = {
    "pyroute2": ("drbdha.net._pyroute2",),  # one door: it picks the vendored copy
    "prometheus_client": ("drbdha.metrics", "drbdha.daemon"),
    "structlog": ("drbdha.logs",),
    "argparse_manpage": ("drbdha.manpages",),  # build time only
    "build_manpages": ("drbdha.manpages",),
}

# Standard-library modules a room must not import.
STDLIB_LIMITS: dict[str, frozenset[str]] = {
    # Habit 3: nothing under vrrp/ reads time, does I/O, logs or runs concurrently.
    "core": frozenset(
        {
            "time",
            "datetime",
            "asyncio",
            "socket",
            "select",
            "selectors",
            "subprocess",
            "threading",
            "logging",
        }
    ),
    # The runner orders steps and reports; the steps do the I/O, the clock is injected.
    "chain": frozenset(
        {"time", "datetime", "socket", "select", "selectors", "subprocess", "threading"}
    ),
    # Synchronous: DRBD waits for the handler, which starts no event loop.
    "fence_handler": frozenset({"asyncio"}),
}

# CLI commands that start fast and run unprivileged: argv after `drbdha` (a control socket
# that does not exist is added: each ends "unreachable", after loading all it needs).
LIGHT_COMMANDS: dict[str, tuple[str, ...]] = {
    "status": ("status",),
    "status --json": ("status", "--json"),
    "force-failover": ("force-failover", "--wait", "0.1"),
}
# What a light command must not load (module names and their submodules).
HEAVY = ("asyncio", "pyroute2", "prometheus_client", "structlog", "drbdha.net", "drbdha.daemon")

# The clock rule: who may read a clock ("module" or "module:function"), and why.
CLOCK_READERS: dict[str, str] = {
    "drbdha.clock": "the clock: every other module is handed a Clock or `now`",
    "drbdha.daemon.inbox": (
        "the inbox's timerfd is armed on CLOCK_MONOTONIC at an absolute deadline; whether "
        "that deadline has passed is asked of the clock the kernel fires on"
    ),
    "drbdha.fencing.handler": (
        "DRBD's fence-peer handler, its own short-lived synchronous process: its deadlines "
        "are real seconds against a real peer, and it stays stdlib + config only"
    ),
    "drbdha.cli:_fence_peer": "times the same handler process for its log line",
}

# Calls that read a clock. `time.<fn>()` on the time module; `<anything>.time()` with no
# arguments (an event loop's clock); `<anything>.now()/.utcnow()/.today()` (datetime).
TIME_MODULE_READS = frozenset(
    {
        "time",
        "time_ns",
        "monotonic",
        "monotonic_ns",
        "perf_counter",
        "perf_counter_ns",
        "process_time",
        "process_time_ns",
        "thread_time",
        "thread_time_ns",
        "clock_gettime",
        "clock_gettime_ns",
    }
)
# These read the clock only when not given a time: name -> arguments when given one.
TIME_MODULE_NOW_BY_DEFAULT = {"localtime": 1, "gmtime": 1, "ctime": 1, "asctime": 1, "strftime": 2}
DATETIME_READS = frozenset({"now", "utcnow", "today"})


# ---- Walking the code --------------------------------------------------------------------


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULE_PATHS = sorted(PACKAGE.rglob("*.py"))
MODULES = {module_name(p): p for p in MODULE_PATHS}


@dataclass(frozen=True)
class Site:
    """One imported name: `import a.b` gives ("a.b", None); `from a import b` gives
    ("a", "b"), b being a submodule or a name in a."""

    base: str
    name: str | None
    scope: str  # "" at module level, else the enclosing function ("Class.method")
    line: int

    @property
    def dotted(self) -> str:
        return f"{self.base}.{self.name}" if self.name else self.base


def _scopes(tree: ast.AST) -> Iterator[tuple[ast.AST, str]]:
    """Every node with the function it is in ("" at module level), in no set order."""
    todo: list[tuple[ast.AST, str]] = [(tree, "")]
    while todo:
        node, scope = todo.pop()
        yield node, scope
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            scope = f"{scope}.{node.name}" if scope else node.name
        todo += [(child, scope) for child in ast.iter_child_nodes(node)]


def import_sites(source: str, module: str, *, is_package: bool = False) -> list[Site]:
    """Relative imports are resolved against `module`."""
    sites: list[Site] = []
    package = module if is_package else module.rpartition(".")[0]
    for node, scope in _scopes(ast.parse(source)):
        if isinstance(node, ast.Import):
            sites += [Site(a.name, None, scope, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            sites += [Site(prefix, a.name, scope, node.lineno) for a in node.names]
    return sorted(sites, key=lambda s: s.line)


def imports_of(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Absolute names of every module `source` imports; `from a import b` yields both `a`
    and `a.b` (b may be a submodule)."""
    names: set[str] = set()
    for site in import_sites(source, module, is_package=is_package):
        names.add(site.base)
        names.add(site.dotted)
    return names


def top(name: str) -> str:
    return name.partition(".")[0]


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def resolve(site: Site) -> str | None:
    """The drbdha module a site imports (the longest module name that prefixes it), or None
    for the package itself and for names outside drbdha."""
    if top(site.base) != "drbdha":
        return None
    name = site.dotted if site.dotted in MODULES else site.base
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return None if name in {"", "drbdha"} else name


def room_of(module: str) -> str | None:
    best: tuple[int, str] | None = None
    for room, members in ROOMS.items():
        for m in members:
            exact_only = m == "drbdha"  # the package's __init__, not everything under it
            if (module == m if exact_only else _within(module, m)) and (
                best is None or len(m) > best[0]
            ):
                best = (len(m), room)
    return best[1] if best else None


def _in_scope(key: str, module: str, scope: str) -> bool:
    """`key` is "module" (anywhere in it, or in a module under it) or "module:function" (in
    that function or nested in it)."""
    mod, _, func = key.partition(":")
    if func:
        return mod == module and (scope == func or scope.startswith(func + "."))
    return _within(module, mod)


def import_breaks(module: str, source: str, *, is_package: bool = False) -> list[str]:
    """What `module` imports against the table, one message per import ([] when none)."""
    room = room_of(module)
    if room is None:
        return [f"{module} is in no room: add it to ROOMS"]
    out: list[str] = []
    for site in import_sites(source, module, is_package=is_package):
        where = f"{module} (room {room}), line {site.line}"
        if site.scope:
            where += f", in {site.scope}"
        if top(site.base) == "drbdha":
            out += _drbdha_import_break(module, room, site, where)
        elif top(site.base) not in sys.stdlib_module_names:
            allowed = THIRD_PARTY.get(top(site.base), ())
            if not any(_within(module, m) for m in allowed):
                out.append(
                    f"{where}: imports {site.dotted}: {top(site.base)} is not in the standard "
                    f"library and THIRD_PARTY allows it only in {list(allowed) or 'no module'}"
                )
        elif top(site.base) in STDLIB_LIMITS.get(room, frozenset()):
            out.append(
                f"{where}: imports {site.dotted}: STDLIB_LIMITS keeps {top(site.base)} out "
                f"of room {room}"
            )
    return out


def _drbdha_import_break(module: str, room: str, site: Site, where: str) -> list[str]:
    target = resolve(site)
    if target is None:
        return []
    target_room = room_of(target)
    if target_room is None:
        return [f"{where}: imports {target}, which is in no room: add it to ROOMS"]
    out = []
    private = next((rooms for m, rooms in PRIVATE.items() if _within(target, m)), None)
    if private is not None and target_room != room and room not in private:
        out.append(
            f"{where}: imports {target}: PRIVATE lets only {sorted(private)} import it "
            f"(and its own room)"
        )
    lazy = set().union(
        *(rooms for key, rooms in LAZY_ARROWS.items() if _in_scope(key, module, site.scope))
    )
    if target_room != room and target_room not in ARROWS[room] | lazy:
        out.append(
            f"{where}: imports {target} (room {target_room}): room {room} may import only "
            f"{sorted(ARROWS[room])}; a new arrow is one line in ARROWS (tests/test_layering.py)"
        )
    return out


@dataclass(frozen=True)
class Read:
    call: str
    scope: str
    line: int
    column: int = 0


def clock_reads(source: str) -> list[Read]:
    nodes = list(_scopes(ast.parse(source)))
    time_names = {"time"}  # names bound to the time module (`import time as t`)
    for node, _ in nodes:
        if isinstance(node, ast.Import):
            time_names |= {a.asname for a in node.names if a.name == "time" and a.asname}
    reads = []
    for node, scope in nodes:
        if isinstance(node, ast.ImportFrom) and node.module == "time" and not node.level:
            reads += [
                Read(f"from time import {a.name}", scope, node.lineno)
                for a in node.names
                if a.name in TIME_MODULE_READS or a.name in TIME_MODULE_NOW_BY_DEFAULT
            ]
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        attr, owner = node.func.attr, node.func.value
        on_time = isinstance(owner, ast.Name) and owner.id in time_names
        args = len(node.args) + len(node.keywords)
        read = (
            (on_time and attr in TIME_MODULE_READS)
            or (on_time and args < TIME_MODULE_NOW_BY_DEFAULT.get(attr, 0))
            or (not on_time and attr == "time" and args == 0)
            or attr in DATETIME_READS
        )
        if read:
            reads.append(Read(f"{ast.unparse(node.func)}()", scope, node.lineno, node.col_offset))
    return sorted(reads, key=lambda r: (r.line, r.column))


def clock_breaks(module: str, source: str) -> list[str]:
    return [
        f"{module}, line {r.line}{f', in {r.scope}' if r.scope else ''}: {r.call} reads the "
        "clock; only drbdha/clock.py may (take a Clock or `now` from the caller), or name it "
        "in CLOCK_READERS with the reason"
        for r in clock_reads(source)
        if not any(_in_scope(key, module, r.scope) for key in CLOCK_READERS)
    ]


@functools.cache
def _source(module: str) -> str:
    return MODULES[module].read_text(encoding="utf-8")


def _is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


@functools.cache
def _sites(module: str) -> list[Site]:
    return import_sites(_source(module), module, is_package=_is_package(module))


@functools.cache
def _reads(module: str) -> list[Read]:
    return clock_reads(_source(module))


# ---- The rules ---------------------------------------------------------------------------


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_imports_follow_the_table(module: str) -> None:
    breaks = import_breaks(module, _source(module), is_package=_is_package(module))
    assert not breaks, "\n".join(breaks)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_reads_no_clock(module: str) -> None:
    breaks = clock_breaks(module, _source(module))
    assert not breaks, "\n".join(breaks)


def test_every_exception_still_matches_something() -> None:
    """An exception whose import or clock read is gone is a line to delete."""
    stale: list[str] = []
    for key, rooms in LAZY_ARROWS.items():
        module = key.partition(":")[0]
        used = {
            room_of(resolve(s) or "") for s in _sites(module) if _in_scope(key, module, s.scope)
        }
        stale += [f"LAZY_ARROWS[{key!r}]: {r}" for r in sorted(rooms - used)]
    # A read counts for the narrowest entry that covers it: the inbox's own entry keeps
    # only itself alive, not the daemon room's.
    used = {
        max((k for k in CLOCK_READERS if _in_scope(k, module, r.scope)), key=len, default="")
        for module in MODULES
        for r in _reads(module)
    }
    stale += [f"CLOCK_READERS[{key!r}]" for key in CLOCK_READERS if key not in used]
    assert not stale, "no longer needed, delete: " + ", ".join(stale)


def test_the_table_is_consistent() -> None:
    assert set(ARROWS) == set(ROOMS)
    named = set(ROOMS)
    assert all(rooms <= named for rooms in ARROWS.values())
    assert all(rooms <= named for rooms in LAZY_ARROWS.values())
    assert all(rooms <= named for rooms in PRIVATE.values())
    assert set(STDLIB_LIMITS) <= named
    members = [m for ms in ROOMS.values() for m in ms]
    assert len(members) == len(set(members)), "a member listed in two rooms"
    for key in LAZY_ARROWS:
        assert key.partition(":")[0] in MODULES, key


def test_light_commands_load_nothing_heavy(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import contextlib, io, sys
        from drbdha import cli
        heavy = {HEAVY!r}
        for argv in {list(LIGHT_COMMANDS.values())!r}:
            sock = ["--socket", {str(tmp_path / "missing.sock")!r}]
            with contextlib.redirect_stderr(io.StringIO()):
                code = cli.main(["-c", {str(tmp_path / "none.toml")!r}, *argv, *sock])
            loaded = sorted(m for m in sys.modules if any(
                m == h or m.startswith(h + ".") for h in heavy))
            print(" ".join(argv), code, loaded)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.splitlines()
    assert len(out) == len(LIGHT_COMMANDS), out
    for line in out:
        assert line.endswith(" 3 []"), f"drbdha {line} (exit code, heavy modules loaded)"


# ---- The walkers, and the table drawn in docs/architecture.md ----------------------------


def test_the_walker_sees_every_kind_of_import() -> None:
    source = (
        "import os, time as t\n"
        "from . import packet\n"
        "from .. import errors\n"
        "from ..net.frames import build\n"
        "def f():\n"
        "    import asyncio\n"
        "if True:\n"
        "    from drbdha.vrrp import machine\n"
    )
    assert imports_of(source, "drbdha.vrrp.timers") == {
        "os",
        "time",
        "drbdha.vrrp",
        "drbdha.vrrp.packet",
        "drbdha",
        "drbdha.errors",
        "drbdha.net.frames",
        "drbdha.net.frames.build",
        "asyncio",
        "drbdha.vrrp.machine",
    }
    assert "drbdha.vrrp.packet" in imports_of(
        "from . import packet", "drbdha.vrrp", is_package=True
    )


def test_vrrp_package_is_found() -> None:
    names = {MODULES[m].name for m in MODULES if _within(m, "drbdha.vrrp")}
    assert {"machine.py", "packet.py", "timers.py", "events.py"} <= names


def test_a_forbidden_import_is_named_with_its_rule() -> None:
    source = (
        "import structlog\n"
        "from drbdha.fencing import wire\n"  # the module's room (fence_handler), not fencing's
        "from drbdha.vrrp import machine\n"
        "def f():\n"
        "    from drbdha.daemon import loop\n"
    )
    where = "drbdha.resources.proc (room resources), line"
    rule = (
        "room resources may import only ['chain', 'clock', 'config', 'durable', 'errors']; "
        "a new arrow is one line in ARROWS (tests/test_layering.py)"
    )
    third_party = (
        "structlog is not in the standard library and THIRD_PARTY allows it only in ['drbdha.logs']"
    )
    private = "PRIVATE lets only ['daemon', 'top'] import it (and its own room)"
    assert import_breaks("drbdha.resources.proc", source) == [
        f"{where} 1: imports structlog: {third_party}",
        f"{where} 2: imports drbdha.fencing.wire (room fence_handler): {rule}",
        f"{where} 3: imports drbdha.vrrp.machine: {private}",
        f"{where} 3: imports drbdha.vrrp.machine (room core): {rule}",
        f"{where} 5, in f: imports drbdha.daemon.loop (room daemon): {rule}",
    ]
    assert import_breaks("drbdha.cli", "def _run():\n    from drbdha import daemon\n") == []
    assert import_breaks("drbdha.cli", "from drbdha import daemon\n") != []


def test_the_clock_walker_sees_every_kind_of_read() -> None:
    source = (
        "import time as t, asyncio, datetime\n"
        "from time import monotonic\n"
        "class C:\n"
        "    def f(self, loop):\n"
        "        a = t.time() + t.perf_counter_ns()\n"
        "        b = loop.time() + asyncio.get_running_loop().time()\n"
        "        c = datetime.datetime.now(tz=None)\n"
        "        t.sleep(1); t.strftime('%F', t.localtime(a)); t.strftime('%F')\n"
        "        self.clock.monotonic(); self.clock.wall(); datetime.time(1)\n"
    )
    assert [(r.call, r.scope, r.line) for r in clock_reads(source)] == [
        ("from time import monotonic", "", 2),
        ("t.time()", "C.f", 5),
        ("t.perf_counter_ns()", "C.f", 5),
        ("loop.time()", "C.f", 6),
        ("asyncio.get_running_loop().time()", "C.f", 6),
        ("datetime.datetime.now()", "C.f", 7),
        ("t.strftime()", "C.f", 8),
    ]


def mermaid() -> str:
    """The arrows between rooms, the floor left out (the table below the picture has it)."""
    floor = {"errors", "clock", "durable", "config"}
    lines = ["```mermaid", "flowchart TD"]
    for room in ROOMS:
        lines += [f"  {room} --> {to}" for to in sorted(ARROWS[room] - floor - {room})]
    lazy: dict[tuple[str, str], list[str]] = {}
    for key, rooms in LAZY_ARROWS.items():
        for to in sorted(rooms):
            lazy.setdefault((str(room_of(key.partition(":")[0])), to), []).append(key)
    for (room, to), keys in lazy.items():
        label = ", ".join(k.removeprefix("drbdha.").replace(":", ".") for k in keys)
        lines.append(f'  {room} -.->|"{label}"| {to}')
    lines += ["```", "", "| room | modules | may import |", "|---|---|---|"]
    for room, members in ROOMS.items():
        names = ", ".join(f"`{m}`" for m in members)
        arrows = ", ".join(sorted(ARROWS[room])) if room != "daemon" else "every room"
        lines.append(f"| {room} | {names} | {arrows or '(nothing of drbdha)'} |")
    return "\n".join(lines)


def test_the_architecture_page_draws_this_table() -> None:
    begin, end = "<!-- layering table: begin -->", "<!-- layering table: end -->"
    page = ARCHITECTURE.read_text(encoding="utf-8")
    assert begin in page, f"{ARCHITECTURE}: no {begin!r}"
    drawn = page.split(begin, 1)[1].split(end, 1)[0].strip()
    assert drawn == mermaid(), (
        f"{ARCHITECTURE} draws another table; between the markers, paste:\n{mermaid()}"
    )
