"""Result types of :class:`fleet.Fleet`: frozen, plain, and serialisable with stable keys.

``to_json()`` gives exactly the keys documented in README.md (the ``--json`` contract); adding a
key is allowed, renaming or removing one is a breaking change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# The output rule for stored text (escape controls and bidi characters), for the CLI and the TUI:
# they import the facade, not the inventory. A pure function (stdlib only): no database is loaded.
from inventory.validate import visible

__all__ = [
    "AuditRow",
    "CredentialRow",
    "ImportResult",
    "JobRow",
    "NicRow",
    "RackRow",
    "ServerDetail",
    "ServerRow",
    "SiteRow",
    "StateChangeRow",
    "StateRow",
    "visible",
]


def _ts(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


@dataclass(frozen=True)
class ServerRow:
    hostname: str
    site: str | None
    pod: str | None
    rack: str | None
    position: int | None
    height: int
    state: str
    profile: str
    serial: str
    asset_tag: str
    bmc: str | None
    macs: tuple[str, ...]
    primary_ip: str | None
    tags: tuple[str, ...]
    priority: int
    power: str
    health: str

    def to_json(self) -> dict[str, Any]:
        return {
            "hostname": self.hostname, "site": self.site, "pod": self.pod, "rack": self.rack,
            "position": self.position, "height": self.height, "state": self.state, "profile": self.profile,
            "serial": self.serial, "asset_tag": self.asset_tag, "bmc": self.bmc, "macs": list(self.macs),
            "primary_ip": self.primary_ip, "tags": list(self.tags), "priority": self.priority,
            "power": self.power, "health": self.health,
        }


@dataclass(frozen=True, slots=True)
class StateRow:
    """The latest known state of one server, as the last sweep left it."""

    hostname: str
    state: str
    power: str
    health: str
    bmc_reachable: bool | None
    last_seen: datetime | None
    updated_at: datetime | None
    last_error: str

    def to_json(self) -> dict[str, Any]:
        return {"hostname": self.hostname, "state": self.state, "power": self.power, "health": self.health,
                "bmc_reachable": self.bmc_reachable, "last_seen": _ts(self.last_seen),
                "updated_at": _ts(self.updated_at), "last_error": self.last_error}


@dataclass(frozen=True)
class NicRow:
    name: str
    mac: str
    ip: str | None
    switch: str
    switch_port: str
    pxe: bool

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "mac": self.mac, "ip": self.ip, "switch": self.switch,
                "switch_port": self.switch_port, "pxe": self.pxe}


@dataclass(frozen=True)
class StateChangeRow:
    ts: datetime
    from_state: str
    to_state: str
    actor: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"ts": _ts(self.ts), "from": self.from_state, "to": self.to_state, "actor": self.actor,
                "reason": self.reason}


@dataclass(frozen=True)
class ServerDetail:
    """One server with everything the inventory knows of it (secrets excepted)."""

    row: ServerRow
    state_reason: str
    state_changed_at: datetime
    description: str
    bmc_credential: str | None
    ssh_credential: str | None
    nics: tuple[NicRow, ...]
    disks: tuple[dict[str, Any], ...]
    power_feeds: tuple[dict[str, Any], ...]
    history: tuple[StateChangeRow, ...]
    #: One per protocol: ``{"protocol", "endpoint", "credential"}`` and, for Redfish, ``tls_fingerprint`` or
    #: ``ca_file`` when its certificate is trusted (the credential by name only, never its secret).
    bmc_endpoints: tuple[dict[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        data = self.row.to_json()
        data.update({
            "state_reason": self.state_reason,
            "state_changed_at": _ts(self.state_changed_at),
            "description": self.description,
            "bmc_credential": self.bmc_credential,
            "ssh_credential": self.ssh_credential,
            "nics": [n.to_json() for n in self.nics],
            "disks": list(self.disks),
            "power_feeds": list(self.power_feeds),
            "history": [h.to_json() for h in self.history],
            "bmc_endpoints": [dict(e) for e in self.bmc_endpoints],
        })
        return data


@dataclass(frozen=True)
class SiteRow:
    code: str
    name: str
    pods: int
    racks: int
    servers: int

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "name": self.name, "pods": self.pods, "racks": self.racks,
                "servers": self.servers}


@dataclass(frozen=True)
class RackRow:
    site: str
    pod: str | None
    name: str
    units: int
    servers: int
    used_units: int
    feeds: tuple[dict[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"site": self.site, "pod": self.pod, "name": self.name, "units": self.units,
                "servers": self.servers, "used_units": self.used_units, "feeds": list(self.feeds)}


@dataclass(frozen=True)
class CredentialRow:
    """A credential as anyone may see it: never the secret."""

    name: str
    kind: str
    username: str
    used_by: int
    updated_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "username": self.username, "used_by": self.used_by,
                "updated_at": _ts(self.updated_at)}


@dataclass(frozen=True)
class AuditRow:
    id: int
    ts: datetime
    actor: str
    action: str
    targets: tuple[str, ...]
    target_count: int
    result: str
    detail: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "ts": _ts(self.ts), "actor": self.actor, "action": self.action,
                "targets": list(self.targets), "target_count": self.target_count, "result": self.result,
                "detail": self.detail}


@dataclass(frozen=True)
class JobRow:
    """A long operation (sweep, remediation, power wave, imaging) and how far it got."""

    id: int
    kind: str
    selector: str
    status: str
    total: int
    done: int
    failed: int
    actor: str
    owner: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    params: dict[str, Any]
    result: dict[str, Any]
    #: Per-target steps (:class:`fleet.core.jobsteps.StepRow`), loaded for one job (``fleet jobs ID``), else None.
    steps: tuple[Any, ...] | None = None

    @property
    def fraction(self) -> float | None:
        """Share done (0..1), or ``None`` while the total is unknown."""
        return min(1.0, (self.done + self.failed) / self.total) if self.total else None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "selector": self.selector, "status": self.status,
                "total": self.total, "done": self.done, "failed": self.failed, "actor": self.actor,
                "owner": self.owner, "created_at": _ts(self.created_at), "started_at": _ts(self.started_at),
                "finished_at": _ts(self.finished_at), "heartbeat_at": _ts(self.heartbeat_at),
                "params": self.params, "result": self.result,
                **({"steps": [st.to_json() for st in self.steps]} if self.steps is not None else {})}


@dataclass(frozen=True)
class ImportResult:
    created: dict[str, int] = field(default_factory=dict)
    updated: dict[str, int] = field(default_factory=dict)
    unchanged: dict[str, int] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    dry_run: bool = False
    #: Devices imported without the credential they named (``without_credentials=True``): Unresolved items.
    without_credentials: tuple[Any, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"created": self.created, "updated": self.updated, "unchanged": self.unchanged,
                "warnings": list(self.warnings), "dry_run": self.dry_run,
                "without_credentials": [u.to_json() for u in self.without_credentials]}
