"""drbdha on one lab host: its config (drbdha_toml), its process, its JSON log, its
metrics."""

from __future__ import annotations

import contextlib
import json
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Self

import drbdha_toml
from netns import inside
from polling import wait_until

from .commands import Process
from .hosts import Host, Lab
from .instances import Inst

REPO = Path(__file__).resolve().parent.parent.parent
VENV_BIN = REPO / ".venv" / "bin"
DRBDHA = str(VENV_BIN / "drbdha") if (VENV_BIN / "drbdha").exists() else "drbdha"
METRICS_PORT = 9942


def node_config(
    instances: Iterable[Inst],
    *,
    ifname: str = "eth0",
    metrics: str = "",
    control_socket: str = "/run/drbdha-test.sock",
    log_level: str = "info",
) -> str:
    """drbdha.toml for a lab host running `instances` on `ifname`."""
    return drbdha_toml.render(
        daemon={
            "control_socket": control_socket,
            "metrics_listen": metrics,
            "log_level": log_level,
        },
        instances=[inst.drbdha_keys(ifname) for inst in instances],
    )


class DrbdhaNode:
    """drbdha on one lab host. State comes from its JSON log (`vrrp.transition` events)."""

    kind = "drbdha"

    def __init__(
        self, lab: Lab, host: str | Host, instances: Sequence[Inst], *, metrics: bool = True
    ) -> None:
        self.lab = lab
        self.host = host if isinstance(host, Host) else lab.host(host)
        self.name = f"drbdha@{self.host.name}"
        self.instances = list(instances)
        self.metrics_listen = f"127.0.0.1:{METRICS_PORT}" if metrics else ""
        self.config_path = lab.tmp / f"{self.host.name}.toml"
        self.config_path.write_text(
            node_config(
                self.instances,
                metrics=self.metrics_listen,
                control_socket=str(lab.tmp / f"{self.host.name}.sock"),
            )
        )
        self.proc: Process | None = None
        self.starts = 0
        self._events: list[dict[str, Any]] = []
        self._offset = 0
        self._partial = b""
        self._log_path: Path | None = None

    # lifecycle
    def start(self) -> Self:
        assert self.proc is None or not self.proc.running, "already running"
        self.starts += 1
        log = f"{self.host.name}-drbdha-{self.starts}.log"
        self._events, self._offset, self._partial = [], 0, b""
        self._log_path = self.lab.tmp / log
        self.proc = self.lab.spawn(
            self.host,
            [DRBDHA, "run", "-c", str(self.config_path)],
            log,
            env={"PYTHONUNBUFFERED": "1"},
        )
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.running

    def kill(self) -> None:
        """Crash: SIGKILL, so no priority-0 advert and the VIP stays on the interface."""
        assert self.proc is not None
        self.proc.kill()

    def terminate(self, wait: float = 5.0) -> int | None:
        assert self.proc is not None
        self.proc.terminate()
        return self.proc.wait(wait) if wait else None

    # log
    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        if self._log_path is not None and self._log_path.exists():
            with self._log_path.open("rb") as f:
                f.seek(self._offset)
                chunk = f.read()
            self._offset += len(chunk)
            data = self._partial + chunk
            lines = data.split(b"\n")
            self._partial = lines.pop()
            for line in lines:
                if line.startswith(b"{"):
                    with contextlib.suppress(ValueError):
                        self._events.append(json.loads(line))
        return [e for e in self._events if name is None or e.get("event") == name]

    def state(self, instance: str = "vi1") -> str | None:
        if not self.running:
            return None
        state = None
        for e in self.events("vrrp.transition"):
            if e.get("instance") == instance:
                state = e["new"]
        return state

    def transitions(self, instance: str = "vi1") -> list[dict[str, Any]]:
        return [e for e in self.events("vrrp.transition") if e.get("instance") == instance]

    def wait_state(self, state: str, instance: str = "vi1", timeout: float = 10.0) -> None:
        def reached() -> bool:
            if self.proc is not None and not self.proc.running:
                raise AssertionError(
                    f"{self.name} exited with {self.proc.popen.returncode} "
                    f"while waiting for {state}; log tail:\n{self.log_tail()}"
                )
            return self.state(instance) == state

        wait_until(
            lambda: (
                f"{self.name} {instance} -> {state} (now "
                f"{self.state(instance)}); log tail:\n{self.log_tail()}"
            ),
            reached,
            timeout,
            every=0.02,
        )

    def log_tail(self, lines: int = 15) -> str:
        if self._log_path is None or not self._log_path.exists():
            return "(no log)"
        return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-lines:])

    # metrics
    def scrape(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """All samples from the daemon's /metrics, fetched from inside its namespace."""
        from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

        with inside(self.host.ns):
            url = f"http://{self.metrics_listen}/metrics"
            with urllib.request.urlopen(url, timeout=2) as resp:
                text = resp.read().decode()
        samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples[(s.name, frozenset(s.labels.items()))] = s.value
        return samples

    def metric(self, name: str, **labels: str) -> float:
        return self.scrape().get((name, frozenset(labels.items())), 0.0)
