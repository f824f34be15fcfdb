"""drbdha against real keepalived (2.2.7, the Debian package) in both roles.

Matrix: {VRRPv2, v3} x {IPv4 multicast, IPv4 unicast, IPv6 multicast (v3 only)} x {drbdha
higher, lower, equal priority}. Each case waits for exactly one master holding the VIP (and
the client's neighbour cache on its MAC), SIGKILLs the master, and waits for the other to take
over. Equal priority is forced into the tie of RFC 5798 §6.4.3 by starting both sides
partitioned (both become master) and healing: the higher primary address must win, for IPv6
the higher link-local. Which side holds the higher address alternates with the version, so
drbdha both wins and loses a tie.

Then: keepalived's SIGTERM (priority 0) and a link cut, each in both directions; keepalived
with `vrrp_check_unicast_src` (drbdha's adverts must leave from its primary address, not the
VIP); drbdha with checksum_mode = "rfc9568" as keepalived's backup.

v3 runs at 100 ms (keepalived accepts `advert_int 0.1` with version 3), v2 at 1 s.
"""

from __future__ import annotations

import time

import pytest
from netlab import (
    VIP4,
    VIP6,
    DrbdhaNode,
    Inst,
    KeepalivedNode,
    Lab,
    addresses,
    link_down,
    link_up,
    wait_exactly_one_master,
)
from polling import wait_until

from drbdha.vrrp.timers import master_down_interval

pytestmark = pytest.mark.keepalived

SLACK = 0.3


def _inst(version: int, mode: str, priority: int, peer: str | None = None, **kw: object) -> Inst:
    vips = [f"{VIP6}/64"] if mode == "v6" else [f"{VIP4}/24"]
    return Inst(
        priority=priority,
        version=version,
        advert_interval=0.1 if version == 3 else 1,
        vips=vips,
        unicast_peers=[peer] if mode == "uc4" and peer else [],
        **kw,  # type: ignore[arg-type]
    )


def _pair(
    lab: Lab,
    version: int,
    mode: str,
    drbdha_prio: int,
    ka_prio: int,
    *,
    drbdha_higher_address: bool = False,
    ka_global: tuple[str, ...] = (),
    drbdha_kw: dict[str, object] | None = None,
) -> tuple[DrbdhaNode, KeepalivedNode]:
    hd, hk = (
        (lab.host("b"), lab.host("a")) if drbdha_higher_address else (lab.host("a"), lab.host("b"))
    )
    d = DrbdhaNode(lab, hd, [_inst(version, mode, drbdha_prio, str(hk.ip4), **(drbdha_kw or {}))])
    k = KeepalivedNode(
        lab, hk, [_inst(version, mode, ka_prio, str(hd.ip4))], global_extra=ka_global
    )
    return d, k


def _timeout(version: int) -> float:
    return 3.0 if version == 3 else 10.0


CASES = [
    pytest.param(
        version,
        mode,
        prio,
        id=f"v{version}-{mode}-drbdha_{prio}",
        marks=[pytest.mark.slow] if version == 2 else [],
    )
    for version in (3, 2)
    for mode in ("mc4", "uc4", "v6")
    for prio in ("higher", "lower", "equal")
    if not (version == 2 and mode == "v6")
]


@pytest.mark.parametrize(("version", "mode", "prio"), CASES)
def test_interop_matrix(lab: Lab, version: int, mode: str, prio: str) -> None:
    client = lab.host("client")
    vip = VIP6 if mode == "v6" else VIP4
    timeout = _timeout(version)
    drbdha_prio, ka_prio = {"higher": (150, 100), "lower": (100, 150), "equal": (100, 100)}[prio]
    drbdha_wins_tie = version == 3
    d, k = _pair(lab, version, mode, drbdha_prio, ka_prio, drbdha_higher_address=drbdha_wins_tie)
    nodes = [d, k]

    if prio == "equal":
        lab.partition(d.host)
        k.start()
        d.start()
        k.wait_state("master", timeout=timeout)
        d.wait_state("master", timeout=timeout)
        lab.heal(d.host)
        expected = d if drbdha_wins_tie else k
    else:
        k.start()
        d.start()
        expected = d if prio == "higher" else k
    loser = k if expected is d else d
    expected.wait_state("master", timeout=timeout * 2)
    loser.wait_state("backup", timeout=timeout)
    assert (
        wait_exactly_one_master(nodes, vip, client, timeout=timeout, expected=expected) is expected
    )

    expected.kill()
    assert wait_exactly_one_master(nodes, vip, client, timeout=timeout * 2, expected=loser) is loser


def _ready(lab: Lab, d: DrbdhaNode, k: KeepalivedNode, master: DrbdhaNode | KeepalivedNode) -> None:
    # The intended master starts first, so the other never has to be preempted.
    first, second = (d, k) if master is d else (k, d)
    first.start()
    first.wait_state("master", timeout=5)
    second.start()
    second.wait_state("backup", timeout=5)
    assert (
        wait_exactly_one_master([d, k], VIP4, lab.host("client"), timeout=5, expected=master)
        is master
    )


def test_keepalived_sigterm_priority_zero(lab: Lab) -> None:
    d, k = _pair(lab, 3, "mc4", 100, 150)
    _ready(lab, d, k, k)
    stopped = time.monotonic()
    k.terminate()
    d.wait_state("master", timeout=2)
    t = d.transitions()[-1]
    assert t["reason"] == "master_resigned"
    assert t["monotonic"] - stopped < master_down_interval(3, 100, 0.1), t
    assert VIP4 not in addresses(k.host.ns)
    assert wait_exactly_one_master([d, k], VIP4, lab.host("client"), expected=d) is d


def test_drbdha_sigterm_priority_zero(lab: Lab) -> None:
    d, k = _pair(lab, 3, "mc4", 150, 100)
    _ready(lab, d, k, d)
    k.history.clear()
    stopped = time.monotonic()
    assert d.terminate() == 0
    k.wait_state("master", timeout=2)
    took_over = next(t for t, _, s in k.history if s == "master")
    # keepalived's FIFO line is read by our thread, so this includes a little delivery time.
    assert took_over - stopped < master_down_interval(3, 100, 0.1), took_over - stopped
    assert wait_exactly_one_master([d, k], VIP4, lab.host("client"), expected=k) is k


@pytest.mark.parametrize("victim", ["drbdha", "keepalived"])
def test_link_cut(lab: Lab, victim: str) -> None:
    higher = (150, 100) if victim == "drbdha" else (100, 150)
    d, k = _pair(lab, 3, "mc4", *higher)
    master, other = (d, k) if victim == "drbdha" else (k, d)
    _ready(lab, d, k, master)
    link_down(master.host.ns)
    master.wait_state("fault", timeout=3)
    assert (
        wait_exactly_one_master([d, k], VIP4, lab.host("client"), timeout=3, expected=other)
        is other
    )
    link_up(master.host.ns)
    master.wait_state("master", timeout=5)  # preempts again
    assert (
        wait_exactly_one_master([d, k], VIP4, lab.host("client"), timeout=3, expected=master)
        is master
    )


@pytest.mark.parametrize("drbdha_master", [True, False], ids=["drbdha_master", "ka_master"])
def test_keepalived_check_unicast_src(lab: Lab, drbdha_master: bool) -> None:
    """keepalived drops unicast adverts whose source is not a configured peer; drbdha's must
    come from its primary address even while it holds the VIP in the same subnet."""
    prios = (150, 100) if drbdha_master else (100, 150)
    d, k = _pair(lab, 3, "uc4", *prios, ka_global=("vrrp_version 3", "vrrp_check_unicast_src"))
    master, other = (d, k) if drbdha_master else (k, d)
    _ready(lab, d, k, master)
    time.sleep(0.5)  # several adverts: keepalived must not have preempted or flapped
    assert wait_exactly_one_master([d, k], VIP4, lab.host("client"), expected=master) is master
    assert [s for _, _, s in k.history] == (["backup"] if drbdha_master else ["backup", "master"])
    master.kill()
    assert (
        wait_exactly_one_master([d, k], VIP4, lab.host("client"), timeout=3, expected=other)
        is other
    )


@pytest.mark.parametrize("mode", ["mc4", "uc4"])
def test_drbdha_rfc9568_checksum_accepts_keepalived(lab: Lab, mode: str) -> None:
    """drbdha sending message-only checksums (RFC 9568) still accepts keepalived's
    pseudo-header ones. (keepalived 2.2.7 has no `v3_checksum_as_v2`, so the other direction
    cannot be configured with this version.)"""
    d, k = _pair(lab, 3, mode, 100, 150, drbdha_kw={"checksum_mode": "rfc9568"})
    _ready(lab, d, k, k)
    time.sleep(0.5)
    assert [t["new"] for t in d.transitions()] == ["backup"]
    bad = sum(
        v
        for (name, labels), v in d.scrape().items()
        if name == "drbdha_vrrp_invalid_adverts_total" and ("reason", "checksum") in labels
    )
    assert bad == 0
    k.kill()
    assert wait_exactly_one_master([d, k], VIP4, lab.host("client"), timeout=3, expected=d) is d


def test_keepalived_old_unicast_checksum(lab: Lab) -> None:
    """keepalived before 1.3.6 (and later with `old_unicast_checksum`) puts 224.0.0.18 in
    the pseudo-header of unicast v3 adverts; drbdha accepts that form as keepalived does."""
    ha, hb = lab.host("a"), lab.host("b")
    d = DrbdhaNode(lab, ha, [Inst(priority=100, unicast_peers=[str(hb.ip4)])])
    k = KeepalivedNode(
        lab,
        hb,
        [
            Inst(
                priority=150,
                unicast_peers=[str(ha.ip4)],
                extra={"keepalived": ["old_unicast_checksum"]},
            )
        ],
    )
    k.start()
    k.wait_state("master", timeout=3)
    d.start()
    d.wait_state("backup", timeout=3)
    time.sleep(1.0)
    assert [t["new"] for t in d.transitions()] == ["backup"]
    refused = d.metric("drbdha_vrrp_invalid_adverts_total", vrrp_instance="vi1", reason="checksum")
    assert refused == 0
    k.kill()
    d.wait_state("master", timeout=3)


def test_v3_backup_learns_the_masters_interval(lab: Lab) -> None:
    """RFC 5798 §6.4.2: a v3 backup times the master by the master's advertised interval.
    keepalived advertises every 0.5 s; drbdha is configured for 0.1 s, so without learning
    it would declare the master dead after ~0.36 s and flap."""
    ha, hb = lab.host("a"), lab.host("b")
    d = DrbdhaNode(lab, ha, [Inst(priority=100, advert_interval=0.1)])
    k = KeepalivedNode(lab, hb, [Inst(priority=150, advert_interval=0.5)])
    k.start()
    k.wait_state("master", timeout=5)
    d.start()
    d.wait_state("backup", timeout=3)
    # Until the first advert drbdha times the master by its own 0.1 s, so it may take over
    # once at start-up (RFC behaviour); from the first advert on it must not flap.
    wait_until(
        "adverts from keepalived",
        lambda: d.metric("drbdha_vrrp_adverts_received_total", vrrp_instance="vi1") >= 2,
        3,
        every=0.02,
    )
    d.wait_state("backup", timeout=2)
    settled = len(d.transitions())
    time.sleep(1.5)
    assert len(d.transitions()) == settled, f"flapped: {d.transitions()[settled:]}"
    # The client learns the master's MAC now; after the kill the new master's GARP must
    # move it (the SIGKILLed side keeps the VIP and would answer a fresh ARP request too).
    assert wait_exactly_one_master([d, k], VIP4, lab.host("client"), expected=k) is k
    killed = time.monotonic()
    k.kill()
    d.wait_state("master", timeout=5)
    elapsed = d.transitions()[-1]["monotonic"] - killed
    mdi = master_down_interval(3, 100, 0.5)  # 1.5 + 0.3 s
    assert mdi - 0.5 - 0.02 <= elapsed <= mdi + SLACK, elapsed
    assert wait_exactly_one_master([d, k], VIP4, lab.host("client"), expected=d) is d
