"""Log output: JSON lines off a terminal, journald fields under systemd."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
import structlog

from drbdha import logs


def test_json_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    logs.configure("info", stream=out)
    logs.get(vrrp_instance="nfs").info(
        "vrrp.transition", old="backup", new="master", reason="master_down"
    )
    logs.get().debug("not.shown")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["event"] == "vrrp.transition"
    assert event["reason"] == "master_down"
    assert event["vrrp_instance"] == "nfs"
    assert event["level"] == "info"


def test_journal_renderer_sends_every_key_as_a_field() -> None:
    sent: list[tuple[str, dict[str, Any]]] = []
    renderer = logs._JournalRenderer(lambda msg, **kw: sent.append((msg, kw)))
    with pytest.raises(structlog.DropEvent):
        renderer(
            None,
            "warning",
            {
                "event": "vrrp.invalid_advert",
                "level": "warning",
                "reason": "ttl",
                "vrid": 51,
                "message": "x",
            },
        )
    ((msg, fields),) = sent
    assert msg.startswith("vrrp.invalid_advert ")
    assert "reason=ttl" in msg
    assert fields["PRIORITY"] == "4"
    assert fields["EVENT"] == "vrrp.invalid_advert"
    assert fields["REASON"] == "ttl"
    assert fields["VRID"] == "51"
    assert fields["DRBDHA_MESSAGE"] == "x"  # never clobbers journald's own MESSAGE


def test_journal_chosen_only_when_stdout_is_the_journal_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("systemd.journal")
    with (tmp_path / "out").open("w") as f:
        st = os.fstat(f.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert logs._journal_sender(f) is not None
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")
        assert logs._journal_sender(f) is None
