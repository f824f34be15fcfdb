"""force-failover in a two-node lab in network namespaces: done both ways, refused with the
peer down, refused on a backup with no master (and done with --force).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable

import pytest
from netlab import VIP4, DrbdhaNode, Inst, Lab, addresses, assert_stays, wait_exactly_one_master
from ops_common import INTERVAL, cli, start_pair, status_doc, vi1

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
]

PROBE = 2 * INTERVAL + 0.05  # handover.py: how long a resigned master waits for a peer
SLACK = 0.15  # scheduling slack on top of protocol times (seconds)


# ---- force-failover ----------------------------------------------------------------------


def _last_line(out: subprocess.CompletedProcess[str]) -> str:
    return out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""


def test_force_failover_moves_mastership_and_refuses_without_peer(lab: Lab) -> None:
    client = lab.host("client")
    a, b = start_pair(lab)

    # On the master: it resigns, b takes over, a holds off preemption.
    out = cli(a, "force-failover", "--wait", "5", "--hold-off", "60")
    assert out.returncode == 0, out.stdout + out.stderr
    assert _last_line(out) == "done", out.stdout
    assert re.search(rf"vi1: now backup, peer {b.host.ip4} \(priority 100\)", out.stdout), (
        out.stdout
    )
    assert wait_exactly_one_master([a, b], VIP4, client) is b
    assert a.transitions()[-1]["reason"] == "resign"
    assert b.transitions()[-1]["reason"] == "master_resigned"
    ia = vi1(status_doc(a))
    assert ia["state"] == "backup"
    assert 50 < ia["preempt_hold_off_remaining_s"] <= 60
    # a has the higher priority and preempt on, but it is held off: b stays master.
    assert_stays([a, b], {a.name: "backup", b.name: "master"}, 5 * INTERVAL)

    # On the (new) backup: a takes it back at priority 254.
    out = cli(a, "force-failover", "--wait", "5", "--hold-off", "60")
    assert out.returncode == 0, out.stdout + out.stderr
    assert _last_line(out) == "done", out.stdout
    assert re.search(r"vi1: now master", out.stdout), out.stdout
    assert wait_exactly_one_master([a, b], VIP4, client) is a
    b.wait_state("backup")
    assert a.transitions()[-1]["reason"] == "force_failover"
    assert b.transitions()[-1]["reason"] == "higher_priority"
    ia = vi1(status_doc(a))
    assert (ia["priority"], ia["effective_priority"]) == (150, 254)
    assert vi1(status_doc(b))["peer"]["priority"] == 254

    # The peer's daemon dies (it was backup, so it holds no VIP): the resignation is not
    # answered and a takes the role straight back, within ~2 intervals.
    assert b.proc is not None
    b.kill()
    assert VIP4 not in addresses(b.host.ns)
    out = cli(a, "force-failover", "--wait", "5")
    assert out.returncode == 1, out.stdout + out.stderr
    m = re.search(
        r"^refused: vi1: no peer took over within (\d+) ms of resigning; "
        r"mastership taken back$",
        out.stdout,
        re.MULTILINE,
    )
    assert m, out.stdout
    # The probe window is 2 intervals + 50 ms; SLACK covers a late loop turn or CLI start.
    assert int(m[1]) <= (PROBE + SLACK) * 1000, out.stdout
    assert wait_exactly_one_master([a, b], VIP4, client) is a
    resign, back = a.transitions()[-2:]
    assert (resign["new"], resign["reason"]) == ("backup", "resign")
    # handover_failed when the probe window ends first; master_down if the loop turned late
    # enough for Master_Down_Interval (3.4 intervals) to end first.
    assert back["new"] == "master"
    assert back["reason"] in ("handover_failed", "master_down")
    assert back["monotonic"] - resign["monotonic"] <= PROBE + SLACK
    assert a.events("handover.refused")[-1]["reason"] == "no peer took over"
    ia = vi1(status_doc(a))
    assert ia["state"] == "master"
    assert ia["preempt_hold_off_remaining_s"] == 0


def test_force_failover_on_backup_without_master_is_refused(
    make_lab: Callable[..., Lab],
) -> None:
    lab = make_lab("a", "client")
    # A 1 s interval leaves ~3.6 s of BACKUP after start-up with nobody advertising: plenty
    # of time for the CLI.
    lone = DrbdhaNode(lab, "a", [Inst(priority=100, advert_interval=1.0)]).start()
    lone.wait_state("backup", timeout=2)
    out = cli(lone, "force-failover", "--wait", "2")
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stderr.strip() == (
        "refused: vi1: no master is advertising; nothing to take "
        "over from (use --force to override)"
    ), out.stderr
    assert lone.state() == "backup"
    assert VIP4 not in addresses(lone.host.ns)
    assert lone.events("handover.refused")
    # --force skips the check: it takes over at once.
    out = cli(lone, "force-failover", "--wait", "3", "--force")
    assert out.returncode == 0, out.stdout + out.stderr
    assert _last_line(out) == "done", out.stdout
    assert lone.transitions()[-1]["reason"] == "force_failover"
    assert wait_exactly_one_master([lone], VIP4, lab.host("client")) is lone
