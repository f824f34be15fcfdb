"""structlog set-up, in one place.

Events are named `area.what` (vrrp.transition, vip.added, daemon.stopping) with key=value
fields. On a terminal the output is readable; otherwise one JSON object per line. Under
systemd with stdout connected to the journal (JOURNAL_STREAM names our stdout), events go to
journald natively instead, every key as a journal field (VRRP_INSTANCE=, REASON=, ...), so
`journalctl -u drbdha REASON=master_down` works.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys
from typing import Any

import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
# syslog priorities for journald's PRIORITY field
_PRIORITY = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2, "exception": 3}
_FIELD = re.compile(r"[^A-Z0-9_]")


def configure(level: str = "info", *, json: bool | None = None, stream: Any = None) -> None:
    stream = stream or sys.stdout
    journal = _journal_sender(stream) if json is None else None
    if json is None:
        json = not stream.isatty()
    renderer: Any
    if journal is not None:
        renderer = _JournalRenderer(journal)
    elif json:
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )


def get(**bound: Any) -> Any:
    return structlog.get_logger().bind(**bound)


def _journal_sender(stream: Any) -> Any:
    """systemd.journal.send when our stdout is the journal stream (sd_journal_stream_fd),
    else None."""
    want = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return None
    if want != f"{st.st_dev}:{st.st_ino}":
        return None  # not the journal: systemd.journal (0.8 MB) stays unloaded
    try:
        # Optional dependency, by name: the repository's systemd/ directory (the unit file)
        # would shadow the package for static analysis.
        journal = importlib.import_module("systemd.journal")
    except ImportError:
        return None
    return journal.send


class _JournalRenderer:
    def __init__(self, send: Any) -> None:
        self._send = send

    def __call__(self, _logger: Any, _name: str, event: dict[str, Any]) -> str:
        fields = {_field(k): str(v) for k, v in event.items() if k not in ("event", "level")}
        text = " ".join(
            f"{k}={v}" for k, v in event.items() if k not in ("event", "level", "timestamp")
        )
        self._send(
            f"{event.get('event')} {text}".strip(),
            PRIORITY=str(_PRIORITY.get(event.get("level", "info"), 6)),
            EVENT=str(event.get("event")),
            SYSLOG_IDENTIFIER="drbdha",
            **fields,
        )
        raise structlog.DropEvent


def _field(key: str) -> str:
    name = _FIELD.sub("_", key.upper()).lstrip("_")
    return name if name not in ("MESSAGE", "PRIORITY", "EVENT") else f"DRBDHA_{name}"
