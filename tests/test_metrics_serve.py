"""Daemon._serve_metrics with both prometheus-client APIs: start_http_server() returns
(server, thread) since 0.17 and None before (Debian bookworm's python3-prometheus-client
0.16, which the package depends on). start_http_server is faked: only its return differs."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from drbdha.daemon import loop as daemon
from drbdha.metrics import Metrics


def fake_self() -> Any:
    logged: list[str] = []
    return SimpleNamespace(
        config=SimpleNamespace(daemon=SimpleNamespace(metrics_listen="127.0.0.1:9943")),
        metrics=Metrics(),
        log=SimpleNamespace(info=lambda event, **_: logged.append(event)),
        logged=logged,
        _metrics_server=None,
    )


@pytest.mark.parametrize("returned", [None, ("server", "thread")], ids=["0.16", "0.17+"])
def test_metrics_start_with_either_prometheus_client(
    monkeypatch: pytest.MonkeyPatch, returned: Any
) -> None:
    calls: list[tuple[int, str, Any]] = []

    def start_http_server(port: int, addr: str, registry: Any) -> Any:
        calls.append((port, addr, registry))
        return returned

    monkeypatch.setattr(daemon, "start_http_server", start_http_server)
    me = fake_self()
    daemon.Daemon._serve_metrics(me)
    assert calls == [(9943, "127.0.0.1", me.metrics.registry)]
    assert me._metrics_server == (returned[0] if returned else None)
    assert me.logged == ["metrics.listening"]
