"""The dependency rule of STYLE.md, checked by walking each module's imports with ast.

- drbdha/vrrp/ is pure: the stdlib and drbdha.errors / drbdha.vrrp.* only, and nothing that
  reads the clock, does I/O or logs (habit 3: time is a parameter, never a call).
- drbdha/net/ and drbdha/resources/ never import the state machine.
- drbdha/cli.py imports neither pyroute2 nor drbdha.net (the CLI starts fast, unprivileged).

Every import statement counts, including those inside functions and `if TYPE_CHECKING:`.
Only direct imports are checked, not what the imported modules import in turn.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "drbdha"

# Stdlib modules that would let the pure layer read time, do I/O, log or run concurrently.
FORBIDDEN_IN_VRRP = frozenset(
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
        "structlog",
    }
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Absolute names of every module `source` imports; `from a import b` yields both `a`
    and `a.b` (b may be a submodule). Relative imports are resolved against `module`."""
    names: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names.add(prefix)
            names.update(f"{prefix}.{alias.name}" for alias in node.names)
    return names


def imports(path: Path) -> set[str]:
    return imports_of(
        path.read_text(encoding="utf-8"), module_name(path), is_package=path.name == "__init__.py"
    )


def top(name: str) -> str:
    return name.partition(".")[0]


def modules_under(sub: str) -> list[Path]:
    return sorted((PACKAGE / sub).rglob("*.py")) if (PACKAGE / sub).is_dir() else []


VRRP_MODULES = modules_under("vrrp")


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
    names = {p.name for p in VRRP_MODULES}
    assert {"machine.py", "packet.py", "timers.py", "events.py"} <= names


@pytest.mark.parametrize("path", VRRP_MODULES, ids=lambda p: p.name)
def test_vrrp_imports_only_stdlib_errors_and_itself(path: Path) -> None:
    bad = set()
    for name in imports(path):
        if top(name) == "drbdha":
            allowed = name in {"drbdha", "drbdha.errors", "drbdha.vrrp"} or name.startswith(
                ("drbdha.errors.", "drbdha.vrrp.")
            )
            if not allowed:
                bad.add(name)
        elif top(name) in FORBIDDEN_IN_VRRP or top(name) not in sys.stdlib_module_names:
            bad.add(name)
    assert not bad, f"{path.name} imports {sorted(bad)}"


def _imports_machine(name: str) -> bool:
    return name == "drbdha.vrrp.machine" or name.startswith("drbdha.vrrp.machine.")


@pytest.mark.parametrize(
    "path", modules_under("net") + modules_under("resources"), ids=lambda p: str(p.name)
)
def test_io_layers_never_import_the_state_machine(path: Path) -> None:
    bad = sorted(n for n in imports(path) if _imports_machine(n))
    assert not bad, f"{module_name(path)} imports {bad}"


def test_cli_imports_neither_pyroute2_nor_net() -> None:
    cli = PACKAGE / "cli.py"
    if not cli.exists():
        pytest.skip("drbdha/cli.py not written yet")
    bad = sorted(
        n
        for n in imports(cli)
        if top(n) == "pyroute2" or n == "drbdha.net" or n.startswith("drbdha.net.")
    )
    assert not bad, f"cli.py imports {bad}"
