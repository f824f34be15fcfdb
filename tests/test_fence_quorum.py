"""fencing/quorum.py: a silent peer on a DRBD 9 resource with quorum is not reported dead
while this node lacks quorum. DRBD's outputs are fakes (FakeDrbd) shaped like the real
`drbdsetup show --show-defaults` and `status --json` of the DRBD 9 lab."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from drbdha.fencing import quorum

SHOW = """resource "r0" {
    options {
        quorum          \tmajority;
        on-no-quorum    \tio-error;
        quorum-minimum-redundancy\toff; # default
    }
    connection {
        net {
            timeout         \t9; # 1/10 seconds
            ping-int        \t1; # seconds
            ping-timeout    \t5; # 1/10 seconds, default
        }
    }
    connection {
        net {
            ping-int        \t2; # seconds
            ping-timeout    \t5; # 1/10 seconds, default
        }
    }
}
"""


def status(role: str, *quorate: bool) -> str:
    devices = [{"volume": v, "quorum": q} for v, q in enumerate(quorate)]
    return json.dumps([{"name": "r0", "role": role, "devices": devices}])


class FakeDrbd:
    """drbdsetup's answers in turn: `show` once, then one `status` per look; a clock that
    moves by the sleeps."""

    def __init__(self, show: str, *statuses: str) -> None:
        self.show, self.statuses, self.t, self.looks = show, list(statuses), 0.0, 0

    def run(self, cmd: Sequence[str]) -> str:
        if cmd[1] == "show":
            return self.show
        self.looks += 1
        return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]

    def settle(self, dead: bool = True) -> str | None:
        return quorum.settle(dead, "r0", 0.0, run=self.run, now=lambda: self.t, sleep=self.advance)

    def advance(self, s: float) -> None:
        self.t += s


def test_the_slowest_connection_sets_the_detection_time() -> None:
    assert quorum.quorum_options(SHOW) == ("majority", 2.5)
    assert quorum.quorum_options(SHOW.replace("majority", "off")) is None
    assert quorum.quorum_options("resource r0 {\n}\n") is None  # DRBD 8.4: no quorum


def test_an_isolated_primary_never_answers_dead() -> None:
    drbd = FakeDrbd(SHOW, status("Primary", True), status("Primary", True, False))
    why = drbd.settle()
    assert why is not None
    assert "no quorum" in why
    assert drbd.looks == 2  # the tiebreaker's loss came a look later


def test_a_primary_with_quorum_answers_dead_after_drbd_could_notice() -> None:
    drbd = FakeDrbd(SHOW, status("Primary", True))
    assert drbd.settle() is None
    assert drbd.t == pytest.approx(2.5 + quorum.MARGIN)


def test_a_promoting_secondary_with_quorum_answers_at_once() -> None:
    drbd = FakeDrbd(SHOW, status("Secondary", True))
    assert drbd.settle() is None
    assert drbd.looks == 1
    assert drbd.t == 0.0


def test_other_answers_and_quorum_off_are_left_alone() -> None:
    assert FakeDrbd(SHOW, status("Primary", False)).settle(dead=False) is None
    drbd = FakeDrbd(SHOW.replace("majority", "off"), status("Primary", False))
    assert drbd.settle() is None
    assert drbd.looks == 0


def test_an_unreadable_status_is_not_dead() -> None:
    assert FakeDrbd(SHOW, "not json").settle() == (
        "the peer is silent and this node's quorum cannot be read"
    )
