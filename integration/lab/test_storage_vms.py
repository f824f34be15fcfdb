"""The DRBD chain on the real two-node cluster, drbdha under systemd on both nodes.

Each test writes /etc/drbdha/drbdha.toml on both nodes (instance "lab" on eth0, vrid 62,
VRRPv3 at 100 ms, VIP 10.77.1.100/24, [storage.data] on DRBD r0; priority 150 on node1 and 100
on node2), starts drbdha with systemctl, and at the end stops it on both nodes, checks that
the VIP is gone and that both are Secondary, and puts DRBD back to Connected UpToDate (the
lab's `up`). DRBD runs with the peer-loss timers the README recommends (ping-int 1,
ping-timeout 5) so that DRBD notices a dead peer about as fast as VRRP does.

A Sampler thread asks both nodes for their DRBD role about twice a second for the whole test:
at no sample may both be Primary.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from chainlab import TUNED, Storage, fresh_cluster
from cluster import RESOURCE, Lab
from polling import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tuned(lab: Lab) -> Iterator[Lab]:
    lab.drbd_up(net=TUNED)
    yield lab
    lab.drbd_up()  # back to DRBD's defaults for the other tests


@pytest.fixture
def storage(tuned: Lab) -> Iterator[Storage]:
    with fresh_cluster(tuned, net=TUNED) as s:
        yield s


def test_link_cut_then_kill_9_then_a_demote_held_open(storage: Storage, lab: Lab) -> None:
    """Three cases on one running cluster (CI time: each start of the daemons costs seconds
    under emulation), each ending with node1 or node2 serving as the next one needs."""
    storage.configure(demote_timeout=4.0)
    storage.start("node1", "node2")
    storage.wait_serving("node1")
    service_link_cut_the_drbd_link_says_the_master_lives(storage, lab)
    kill_9_on_the_primary_reconciles_without_a_second_promote(storage, lab)
    demote_held_open_escalates_to_fault(storage, lab)


def service_link_cut_the_drbd_link_says_the_master_lives(storage: Storage, lab: Lab) -> None:
    lab.cut("node1", "service")

    # node2 hears no adverts, but DRBD still sees a connected Primary: it must not take over.
    def inhibited() -> dict[str, Any] | None:
        doc = storage.doc("node2")
        return doc if doc and "peer_primary" in doc["inhibitions"] else None

    doc = wait_until("node2 to say why it does not take over", inhibited, 30)
    time.sleep(3)  # thirty advert intervals
    assert storage.state("node2") == "backup"
    assert storage.role("node2") == "Secondary"
    assert not storage.holds_vip("node2")
    assert doc["storage"]["drbd"]["peer_role"] == "Primary"
    r = lab.exec("node2", "drbdha status", check=False)
    assert r.returncode == 0, r.stdout  # an inhibited healthy backup is not degraded
    assert "peer_primary" in r.stdout
    lab.heal()
    storage.wait_serving("node1", timeout=30)


def test_disk_failure_hands_over_and_latches(storage: Storage, lab: Lab) -> None:
    storage.configure(preempt=True)  # node1 150 + preempt: the latch alone keeps it out
    storage.start("node1", "node2")
    storage.wait_serving("node1")
    writer = lab.exec(
        "node1",
        "nohup sh -c 'while :; do dd if=/dev/urandom of=/dev/drbd0 bs=4k count=4 "
        "oflag=direct conv=notrunc status=none || exit; sleep 0.1; done' >/dev/null 2>&1 & echo $!",
    ).stdout.strip()
    lab.fail_disk("node1")
    storage.wait_serving("node2", timeout=60)
    lab.exec("node1", f"kill {writer} 2>/dev/null; true", check=False)
    doc = storage.doc("node1")
    assert doc is not None
    assert [latch["kind"] for latch in doc["latches"]] == ["disk"], doc
    assert "disk_latched" in doc["inhibitions"]
    assert doc["state"] == "backup"
    metrics = lab.exec(
        "node1",
        'python3 -c "import urllib.request;print(urllib.request'
        ".urlopen('http://127.0.0.1:9943/metrics').read().decode())\"",
    ).stdout
    assert 'drbdha_latch{kind="disk",vrrp_instance="lab"} 1.0' in metrics
    assert (
        'drbd_device_state{drbd_device_state="Diskless",minor="0",name="r0",volume="0"} 1.0'
        in metrics
    )
    promtool = shutil.which("promtool")
    if promtool:  # setup-host installs it (the prometheus package)
        r = subprocess.run(
            [promtool, "check", "metrics"],
            input=metrics,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert r.returncode == 0, r.stdout + r.stderr
    r = lab.exec("node1", "drbdha status", check=False)
    assert r.returncode == 1, r.stdout  # degraded: latched
    # Higher priority and preempt, yet it stays out.
    time.sleep(3)
    assert storage.state("node1") == "backup"
    assert storage.serving("node2")
    # Clearing is refused until the disk is back and in sync.
    r = lab.exec("node1", "drbdha clear-latch", check=False)
    assert r.returncode == 1
    assert "not UpToDate" in r.stderr
    lab.restore_disk("node1")
    lab.exec("node1", f"drbdadm attach {RESOURCE}")
    wait_until(
        "node1 UpToDate again",
        lambda: (
            "UpToDate/UpToDate"
            in lab.exec("node1", f"drbdadm dstate {RESOURCE}", check=False).stdout
        ),
        180,
        every=1,
    )
    r = lab.exec("node1", "drbdha clear-latch --kind disk", check=False)
    assert r.returncode == 0, (r.stdout, r.stderr)
    # Cleared: preempt and priority 150 bring the role back to node1.
    storage.wait_serving("node1", timeout=60)


def test_disk_failure_with_no_uptodate_peer_does_not_hand_over(storage: Storage, lab: Lab) -> None:
    storage.configure()
    storage.start("node1", "node2")
    storage.wait_serving("node1")
    # node2 becomes a resync target and stays Inconsistent (the resync paused).
    lab.exec("node2", f"drbdadm invalidate {RESOURCE}")
    lab.exec("node1", f"drbdadm pause-sync {RESOURCE}", check=False)
    wait_until(
        "node2 Inconsistent",
        lambda: lab.exec("node2", f"drbdadm dstate {RESOURCE}", check=False).stdout.startswith(
            "Inconsistent"
        ),
        60,
    )
    lab.fail_disk("node1")
    lab.exec(
        "node1",
        "dd if=/dev/urandom of=/dev/drbd0 bs=4k count=4 oflag=direct conv=notrunc status=none",
        check=False,
    )

    def alerted() -> dict[str, Any] | None:
        doc = storage.doc("node1")
        kinds = [a["kind"] for a in (doc or {}).get("alerts", [])]
        return doc if "no_uptodate_copy" in kinds else None

    doc = wait_until("node1 to alert: no good copy left", alerted, 60)
    assert [latch["kind"] for latch in doc["latches"]] == ["disk"]
    time.sleep(5)
    # The peer never took over: its copy is stale.
    assert storage.role("node2") == "Secondary"
    assert storage.state("node2") == "backup"
    doc2 = storage.doc("node2")
    assert doc2 is not None
    assert "no_uptodate_disk" in doc2["inhibitions"], doc2
    assert not storage.holds_vip("node2")
    # Clean up: DRBD from scratch (both copies are of no use to the next test).
    storage.stop()
    lab.restore_disk("node1")
    lab.drbd_reset()


def kill_9_on_the_primary_reconciles_without_a_second_promote(storage: Storage, lab: Lab) -> None:
    promotes = lab.exec(
        "node1", "dmesg | grep -c 'role( Secondary -> Primary )'", check=False
    ).stdout.strip()
    pid = lab.exec("node1", "systemctl show -p MainPID --value drbdha").stdout.strip()
    lab.exec("node1", "systemctl kill -s KILL drbdha")

    def restarted() -> bool:
        now = lab.exec("node1", "systemctl show -p MainPID --value drbdha").stdout.strip()
        return now not in ("0", pid) and storage.state("node1") == "master"

    wait_until("drbdha restarted on node1 and master again", restarted, 60)
    storage.wait_serving("node1")
    after = lab.exec(
        "node1", "dmesg | grep -c 'role( Secondary -> Primary )'", check=False
    ).stdout.strip()
    assert after == promotes, "a second promote after the restart"
    reasons = [e.get("REASON") for e in storage.events("node1", "vrrp.transition")]
    assert "reconciled" in reasons, reasons
    assert storage.state("node2") == "backup"


def demote_held_open_escalates_to_fault(storage: Storage, lab: Lab) -> None:
    holder = lab.exec(
        "node1", "nohup sleep 600 < /dev/drbd0 >/dev/null 2>&1 & echo $!"
    ).stdout.strip()
    r = lab.exec("node1", "drbdha force-failover --wait 15", check=False, timeout=60)
    print(r.stdout, r.stderr)

    def faulted() -> dict[str, Any] | None:
        doc = storage.doc("node1")
        return doc if doc and doc["state"] == "fault" else None

    doc = wait_until("node1 in FAULT after the failed demote", faulted, 60)
    assert "stop_failed" in doc["faults"]
    assert [s["state"] for s in doc["storage"]["chain"]] == ["failed", "down"]
    assert storage.role("node1") == "Primary"  # still held: the peer must not promote
    time.sleep(2)
    assert storage.role("node2") == "Secondary"
    assert not storage.holds_vip("node1")
    # FAULT never advertises: node2 stays backup only because DRBD says node1 is Primary.
    doc2 = storage.doc("node2")
    assert doc2 is not None
    assert "peer_primary" in doc2["inhibitions"]
    lab.exec("node1", f"kill {holder}; sleep 0.5; drbdadm secondary {RESOURCE}", check=False)
    storage.wait_serving("node2", timeout=60)
