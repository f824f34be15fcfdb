"""The storage chain's steps for one instance, in order: the one place that knows it.

    drbd -> filesystem -> services -> nfs_state -> nfsd -> exports -> vip -> nfs_clients

Started in this order, stopped in reverse (chain/plan.py). Why this order:
- the filesystem only on a Primary; the admin's services only with the filesystem;
- /var/lib/nfs bound before nfsd or any helper starts (they would open the local one);
- the VIP only once nfsd listens and exports exist, so no client meets a refusal: until the
  VIP moves, a client's packets go unanswered and it retransmits, where a refused connect
  would send it into back-off or an error;
- the tickles and sm-notify only from a VIP this node holds.
On release the VIP goes first, so nothing nfsd sends while stopping reaches a client.

No two steps run at once. Each step after drbd needs the one before it: only the
filesystem needs no more than a Primary, and every later step needs the filesystem (the
state directory, the exported paths), so an overlap would only start a step on a missing
mount. What needs none of that is done before any takeover instead (Runner.prepare, at the
daemon's start): nfsd's drop-ins with their daemon-reload, and nfsd's control filesystem
mounted, which loads the module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drbdha.chain.step import Step
from drbdha.config import StorageConfig
from drbdha.daemon.instance import Instance
from drbdha.net import tickle
from drbdha.net.addresses import Addresses
from drbdha.net.vip import VipStep
from drbdha.resources.drbd import DrbdStep, DrbdWatcher, PeerWatch
from drbdha.resources.filesystem import FilesystemConfig, FilesystemStep, drbd_device
from drbdha.resources.nfs import ExportsStep, NfsdStep, NfsStateStep
from drbdha.resources.nfs_clients import NfsClientsStep, Tickler
from drbdha.resources.services import ServicesStep


def build(
    inst: Instance,
    addresses: Addresses,
    watcher: DrbdWatcher | None,
    log: Any,
    *,
    split_brain: Callable[[], bool],
    peer_watch: PeerWatch | None = None,
) -> list[Step]:
    """`split_brain`: whether the storage room holds a split-brain latch (DRBD's step then
    refuses to promote); `peer_watch`: with a [peer] section, asks the peer's fence channel
    while DRBD's step runs (fencing/watch.py)."""
    storage = inst.storage
    steps: list[Step] = []
    vips = [str(v.ip) for v in inst.cfg.virtual_ipaddress]
    if storage is not None and watcher is not None:
        steps.append(DrbdStep(storage, watcher.facts, split_brain, peer_watch=peer_watch))
        bound = log.bind(instance=inst.name)
        steps.extend(storage_steps(inst.name, storage, watcher, bound, vips[0]))
    vip_timeout = storage.vip_timeout if storage else 10.0
    steps.append(VipStep(inst.cfg, addresses, inst.send_garp, inst.log, vip_timeout))
    if storage is not None and storage.nfs_state_dir is not None:
        tickler = Tickler(tickle.established, tickle.send, tickle.Connection.from_json)
        bound = log.bind(instance=inst.name)
        steps.append(NfsClientsStep(vips, storage.nfs_state_dir, tickler, bound))
    return steps


def storage_steps(
    instance: str, storage: StorageConfig, watcher: DrbdWatcher, log: Any, vip: str
) -> list[Step]:
    """What sits between DRBD and the VIP (`vip`: the first, which sm-notify sends from)."""
    fs = FilesystemConfig.of(storage)
    if fs is None:
        return []
    device = _device(storage, watcher)
    steps: list[Step] = [FilesystemStep(fs, device, log=log)]
    if storage.services:
        steps.append(ServicesStep(storage.services, storage.services_timeout))
    if storage.nfs_state_dir is None:
        return steps
    timeouts = (storage.nfs_start_timeout, storage.nfs_stop_timeout)
    steps += [
        NfsStateStep(storage.nfs_state_dir, device, storage.nfs_stop_timeout, log=log),
        NfsdStep(
            scope=storage.nfs_server_scope or f"drbdha-{instance}",
            threads=storage.nfsd_threads,
            lease=storage.nfsv4_lease_time,
            grace=storage.nfsv4_grace_time,
            vip=vip,
            timeouts=timeouts,
            listening=tickle.listening,
        ),
        ExportsStep(storage.name, storage.exports, storage.nfs_start_timeout),
    ]
    return steps


def _device(storage: StorageConfig, watcher: DrbdWatcher) -> Callable[[], str]:
    configured = str(storage.device) if storage.device else None
    res = storage.drbd_resource

    def device() -> str:
        return configured or drbd_device(watcher.facts(), res)

    return device
