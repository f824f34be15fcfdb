"""Promotion gates: may this node run `drbdadm primary` now? (semantics.md B7, B8)

Rules:
- Pure functions of an immutable Resource snapshot. The caller asks again on a fresh
  snapshot right before `drbdadm primary`: the state moves while a chain runs.
- A refusal is one reason, the first in REASONS order, so it is stable enough to be a log
  field and a metric label.
- Never proposes --force (B7.6): a refusal means "do not promote", never "promote harder".
- Not decided here, because they need configuration or a clock: B7.5 (a DUnknown peer
  without quorum is safe only with fencing, after fencing-promote-delay) and B7.7 (back off
  after exit codes 17 and 5). The caller adds those.
"""

from __future__ import annotations

from typing import Final

from drbdha.resources.drbd_events import Resource

REASONS: Final = (
    "not_configured",  # no such resource in the kernel (not up, or a wrong name)
    "peer_primary",  # a connected peer is Primary (B7.1)
    "no_uptodate_disk",  # a local disk is not UpToDate, or there is no device (B7.2)
    "diskless_client",  # an intentionally diskless device: no local copy to serve (B7.2)
    "no_quorum",  # a device has lost quorum (B7.3)
    "may_promote_no",  # DRBD itself says no: may_promote:no or promotion_score 0 (B7.3)
    "suspended",  # I/O is suspended, or force-io-failures is set (B7.3)
    "split_brain",  # a split brain was seen and not cleared by an operator (B7.4)
)

# The on-io-error=detach path: UpToDate -> Failed -> Diskless, Detaching on a manual detach.
_LOST_DISK: Final = frozenset({"Failed", "Diskless", "Detaching"})


def promotion_refusal(
    res: Resource | None, *, split_brain_latched: bool, allow_multiple_primaries: bool = False
) -> str | None:
    """The first reason in REASONS not to promote, or None when promotion may go ahead.

    Being Primary locally already is no reason (a second start is idempotent); everything
    else still applies to it.
    """
    if res is None:
        return "not_configured"
    peer_primary = res.peer_primary
    if peer_primary and not allow_multiple_primaries:
        return "peer_primary"
    # Only UpToDate: Consistent is fine only after a cluster-wide crash with fencing or
    # quorum, which this snapshot cannot tell; Attaching/Negotiating are transitional and
    # Outdated/Inconsistent/DUnknown/Failed/Detaching/Diskless are not good data (B7.2).
    if not res.devices or any(d.disk != "UpToDate" and not d.client for d in res.devices):
        return "no_uptodate_disk"
    if any(d.client for d in res.devices):
        return "diskless_client"
    if res.lost_quorum:
        return "no_quorum"
    # drbdsetup computes may_promote as "no Primary anywhere and ..." (DU
    # user/v9/drbdsetup_events2.c compute_promotion_info, have_primary), so it reads "no" on
    # a Primary and on a dual-primary peer: the other gates cover those cases. None (8.4,
    # status --json) never refuses.
    if not (res.role == "Primary" or peer_primary) and (
        res.may_promote is False or (res.promotion_score is not None and res.promotion_score <= 0)
    ):
        return "may_promote_no"
    if res.suspended or res.force_io_failures:
        return "suspended"
    if res.split_brain or split_brain_latched:
        return "split_brain"
    return None


def disk_lost(old: Resource | None, new: Resource) -> bool:
    """True on the edge where a Primary's disk leaves good data (semantics B8): some non-client
    device is now Failed/Diskless/Detaching and was not one of those in `old` (or was absent).

    Failed -> Diskless is the same loss, not a second edge.
    """
    if new.role != "Primary":
        return False
    before = {} if old is None else {d.volume: d.disk for d in old.devices}
    return any(
        d.disk in _LOST_DISK and not d.client and before.get(d.volume) not in _LOST_DISK
        for d in new.devices
    )


def good_copy_elsewhere(res: Resource) -> bool:
    """A Connected peer has every volume UpToDate and not client: handing over is safe."""
    return res.connected_uptodate_peer
