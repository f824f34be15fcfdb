"""No import circle in drbdha: the modules, each pointing at what it imports at module level
(`if TYPE_CHECKING:` blocks included, function-level imports not: those run later), form no
cycle. A circle is what made the daemon's middle hard to read (issue 20); the rooms of
test_layering.py keep the rooms apart, this keeps the modules inside a room in order."""

from __future__ import annotations

import graphlib

from test_layering import MODULES, _sites, resolve


def module_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module in MODULES:
        targets = {resolve(s) for s in _sites(module) if s.scope == ""}
        graph[module] = {t for t in targets if t is not None and t != module}
    return graph


def test_no_module_imports_itself_round_a_circle() -> None:
    try:
        order = list(graphlib.TopologicalSorter(module_graph()).static_order())
    except graphlib.CycleError as e:
        raise AssertionError(f"import circle: {' -> '.join(e.args[1])}") from None
    assert set(order) == set(MODULES)


def test_the_check_sees_a_circle() -> None:
    graph = module_graph()
    graph["drbdha.vrrp.events"].add("drbdha.daemon.loop")  # loop reaches events
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError:
        return
    raise AssertionError("a circle through daemon.loop and vrrp.events went unnoticed")
