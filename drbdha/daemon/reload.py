"""A reload: the whole new file is validated before any of it applies; a bad file changes
nothing (drbd-reactor keeps the old config the same way)."""

from __future__ import annotations

from drbdha.config import Config, VrrpInstanceConfig, load
from drbdha.daemon.instance import Instance
from drbdha.daemon.serving import ServingRoom
from drbdha.errors import ConfigError
from drbdha.net.vrrp_socket import over_mtu

# Instance settings a reload can change in place; any other change restarts the instance.
RELOADABLE = frozenset(
    {
        "priority",
        "preempt",
        "preempt_delay",
        "advert_interval",
        "checksum_mode",
        "garp_master_repeat",
        "garp_master_delay",
        "garp_master_refresh",
        "auth_hmac",  # keepalived's rotation: add a key, switch active_key, drop the old one
    }
)


class ReloadRoom(ServingRoom):
    def _reload(self, now: float) -> None:
        """Validate the whole new file before applying any of it; a bad file changes
        nothing (drbd-reactor keeps the old config the same way)."""
        self.sd.reloading("reloading configuration")
        source = self.config.source
        try:
            if source is None:
                raise ConfigError([("config", "the daemon was started without a file")])
            new = load(source)
            if problems := over_mtu(new.vrrp_instances):
                raise ConfigError(problems)
        except ConfigError as e:
            self.log.error(
                "config.reload_failed",
                path=str(source),
                problems=[f"{k}: {m}" for k, m in e.problems],
                action="kept the running configuration",
            )
            self.sd.ready(self._status_line())
            return
        self._apply_config(new, now)

    def _apply_config(self, new: Config, now: float) -> None:
        """Instances whose change needs a restart are removed first, their chains released
        while the loop turns on (bounded: a restarted instance must not find its own
        storage half down); then the rest applies (`_reloaded`)."""
        if new.daemon != self.config.daemon or new.peer != self.config.peer:
            self.log.warning(
                "config.daemon_section_changed",
                hint="[daemon] and [peer] settings apply at the next restart",
            )
        old = self.instances
        wanted = {c.name: c for c in new.vrrp_instances}
        restart = [
            n
            for n in old
            if n not in wanted
            or _needs_restart(old[n].cfg, wanted[n])
            or new.storage_of(wanted[n]) != old[n].storage  # a changed chain restarts
        ]
        removed = [old[n] for n in restart]

        def released(unreleased: list[Instance], now: float) -> None:
            for inst in unreleased:
                self.log.error("chain.release_timed_out", instance=inst.name)
            for inst in removed:
                self._forget(inst)
            self._reloaded(new, restart, now)

        if removed:
            for inst in removed:
                self._awaiting.pop(inst.name, None)
            self._release(removed, now, released)
        else:
            self._reloaded(new, [], now)

    def _reloaded(self, new: Config, restarted: list[str], now: float) -> None:
        wanted = {c.name: c for c in new.vrrp_instances}
        changes: dict[str, list[str]] = {"added": [], "removed": [], "updated": [], "restarted": []}
        for name in restarted:
            changes["restarted" if name in wanted else "removed"].append(name)
        self.config = Config(
            daemon=self.config.daemon,
            vrrp_instances=new.vrrp_instances,
            source=new.source,
            storage=new.storage,
            peer=self.config.peer,
        )
        for name, cfg in wanted.items():
            if name in self.instances:
                if self.instances[name].cfg != cfg:
                    self.instances[name].reconfigure(cfg)
                    self.apply(self.instances[name], [], now)
                    changes["updated"].append(name)
                continue
            # Its runner reconciles in its own task; the machine starts on its report
            # (ChainReconciled), so no other instance waits for drbdadm meanwhile.
            inst = self._add_instance(cfg)
            self._read_fencing([inst])
            if name not in changes["restarted"]:
                changes["added"].append(name)
        links = self._links
        if self._loop is not None and links is not None and links.ifnames != set(self._frames):
            self._watch_links(self._loop)
        source = self.config.source
        self.log.info("config.reloaded", path=str(source), **changes)
        self.sd.ready(self._status_line())


def _needs_restart(old: VrrpInstanceConfig, new: VrrpInstanceConfig) -> bool:
    differs = {k for k in old.__dataclass_fields__ if getattr(old, k) != getattr(new, k)}
    return not differs <= RELOADABLE
