"""The inventory's tables (SQLModel).

Site → Pod (room or container) → Rack (units, power feeds) → Server (NICs, disks, BMC endpoints). UPS units
and PDUs with their outlets describe the power topology: feed → UPS/PDU → outlet → server PSU.
Readings are append-only; ``server_state`` and ``ups_state`` hold the latest of each. Events,
jobs, audit entries and lifecycle history complete the record.

Times are timezone-aware UTC (``utcnow()``); SQLModel's ``UTCDateTime`` stores them as UTC on
SQLite and PostgreSQL alike. Plain foreign keys and
explicit queries are used instead of ORM relationships: every query the product runs is visible
where it runs, and bulk paths use SQLAlchemy Core.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlmodel import Field, SQLModel

__all__ = [
    "STATES",
    "Audit",
    "BmcEndpoint",
    "Credential",
    "Disk",
    "Event",
    "IpPool",
    "Job",
    "JobStep",
    "Meta",
    "Nic",
    "Outlet",
    "Pdu",
    "Pod",
    "PowerFeed",
    "Rack",
    "Reading",
    "Server",
    "ServerState",
    "ServerTag",
    "Site",
    "StateChange",
    "Ups",
    "UpsState",
    "WorkOrder",
    "utcnow",
]

# Constraint names are the same on every engine, so migrations can drop and alter them by name.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Lifecycle states (see inventory.lifecycle for the moves between them).
STATES: tuple[str, ...] = (
    "new", "commissioning", "ready", "deploying", "deployed", "maintenance",
    "failed", "quarantined", "decommissioning", "retired", "rma",
)

_Hostname = String(253).with_variant(String(253, collation="C"), "postgresql")
# A 64-bit key that is still SQLite's rowid (autoincrement) there.
_BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    """Now, in UTC: the one clock every table uses."""
    return datetime.now(UTC)


def _json_column(nullable: bool = False) -> Any:
    return Field(default_factory=dict, sa_column=Column(JSON, nullable=nullable))


class Meta(SQLModel, table=True):
    """Small key/value facts about this inventory (e.g. the check value of the secret key)."""

    __tablename__ = "meta"
    key: str = Field(primary_key=True, max_length=64)
    value: str = Field(default="")


class Site(SQLModel, table=True):
    __tablename__ = "sites"
    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=64, unique=True)
    name: str = Field(default="", max_length=128)
    description: str = Field(default="", max_length=256)


class Pod(SQLModel, table=True):
    """A room, hall or pre-assembled container within a site."""

    __tablename__ = "pods"
    __table_args__ = (UniqueConstraint("site_id", "code"),
                      CheckConstraint("kind IN ('room', 'container')", name="kind"))
    id: int | None = Field(default=None, primary_key=True)
    site_id: int = Field(foreign_key="sites.id", index=True)
    code: str = Field(max_length=64, index=True)
    name: str = Field(default="", max_length=128)
    kind: str = Field(default="room", max_length=16)


class Rack(SQLModel, table=True):
    __tablename__ = "racks"
    __table_args__ = (UniqueConstraint("site_id", "name"),)
    id: int | None = Field(default=None, primary_key=True)
    site_id: int = Field(foreign_key="sites.id", index=True)
    pod_id: int | None = Field(default=None, foreign_key="pods.id", index=True)
    name: str = Field(max_length=64, index=True)
    units: int = Field(default=42)
    description: str = Field(default="", max_length=256)


class PowerFeed(SQLModel, table=True):
    """A power feed (circuit) with its capacity; a rack's feeds or a room's."""

    __tablename__ = "power_feeds"
    __table_args__ = (UniqueConstraint("site_id", "name"),)
    id: int | None = Field(default=None, primary_key=True)
    site_id: int = Field(foreign_key="sites.id", index=True)
    rack_id: int | None = Field(default=None, foreign_key="racks.id", index=True)
    name: str = Field(max_length=64)
    capacity_w: int = Field(default=0)
    voltage: int | None = Field(default=None)
    phases: int = Field(default=1)


class Credential(SQLModel, table=True):
    """A named credential. ``secret`` is Fernet ciphertext; the plain secret is never stored."""

    __tablename__ = "credentials"
    __table_args__ = (
        CheckConstraint("kind IN ('ipmi', 'snmp-v2c', 'snmp-v3', 'ssh', 'nut', 'redfish')", name="kind"),
    )
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64, unique=True)
    kind: str = Field(max_length=16)
    username: str = Field(default="", max_length=64)
    secret: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    options: dict = _json_column()
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    def __repr__(self) -> str:  # never show the ciphertext either
        return f"Credential(name={self.name!r}, kind={self.kind!r}, username={self.username!r})"

    __str__ = __repr__


class Server(SQLModel, table=True):
    __tablename__ = "servers"
    __table_args__ = (
        CheckConstraint(
            "state IN ('new', 'commissioning', 'ready', 'deploying', 'deployed', 'maintenance', "
            "'failed', 'quarantined', 'decommissioning', 'retired', 'rma')", name="state"),
        CheckConstraint("height >= 1", name="height"),
        Index("ix_servers_rack_position", "rack_id", "position"),
    )
    id: int | None = Field(default=None, primary_key=True)
    # Byte-wise collation on PostgreSQL, so 'web-*' is an index range there as on SQLite.
    hostname: str = Field(sa_type=_Hostname, unique=True)
    rack_id: int | None = Field(default=None, foreign_key="racks.id")
    position: int | None = Field(default=None)
    height: int = Field(default=1)
    profile: str = Field(default="generic-ipmi", max_length=64, index=True)
    serial: str = Field(default="", max_length=64, index=True)
    asset_tag: str = Field(default="", max_length=64)
    state: str = Field(default="new", max_length=16, index=True)
    state_reason: str = Field(default="", max_length=256)
    state_changed_at: datetime = Field(default_factory=utcnow)
    bmc_host: str | None = Field(default=None, max_length=253)
    bmc_port: int = Field(default=623)
    # Not indexed: no selector uses them, and every index costs the 100k-server import time.
    bmc_credential_id: int | None = Field(default=None, foreign_key="credentials.id")
    ssh_credential_id: int | None = Field(default=None, foreign_key="credentials.id")
    primary_ip: str | None = Field(default=None, max_length=45, unique=True)
    # The SSH host key pinned on first contact during commissioning ("ssh-ed25519 AAAA..."); enforced after.
    ssh_host_key: str | None = Field(default=None, max_length=1024)
    priority: int = Field(default=100)
    description: str = Field(default="", max_length=256)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


#: Protocols a :class:`BmcEndpoint` row may speak (IPMI's endpoint is the server's own ``bmc_*`` columns).
BMC_ENDPOINT_PROTOCOLS: tuple[str, ...] = ("redfish",)


class BmcEndpoint(SQLModel, table=True):
    """One more way into a server's BMC, one row per protocol: today Redfish (HTTPS, 443 by default).

    A BMC often speaks IPMI and Redfish at once, on different ports and with different accounts. The
    IPMI endpoint stays the server's ``bmc_host``/``bmc_port``/``bmc_credential_id`` (every IPMI path and
    the 100,000-server import read those); each further protocol is a row here, so a fleet without
    Redfish pays nothing for it. TLS trust is per endpoint: the SHA-256 fingerprint of the certificate
    recorded by ``fleet bmc trust`` ("sha256:" + 64 lowercase hex of the DER), or a CA bundle file;
    at most one of the two.
    """

    __tablename__ = "bmc_endpoints"
    __table_args__ = (
        UniqueConstraint("server_id", "protocol"),
        CheckConstraint("protocol IN ('redfish')", name="protocol"),
        CheckConstraint("tls_fingerprint IS NULL OR ca_file IS NULL", name="one_trust"),
    )
    id: int | None = Field(default=None, primary_key=True)
    server_id: int = Field(foreign_key="servers.id", ondelete="CASCADE")  # indexed by (server_id, protocol)
    protocol: str = Field(default="redfish", max_length=16)
    host: str = Field(max_length=253)
    port: int = Field(default=443)
    credential_id: int | None = Field(default=None, foreign_key="credentials.id", index=True)
    tls_fingerprint: str | None = Field(default=None, max_length=71)
    ca_file: str | None = Field(default=None, max_length=1024)
    updated_at: datetime = Field(default_factory=utcnow)


class ServerTag(SQLModel, table=True):
    __tablename__ = "server_tags"
    __table_args__ = (Index("ix_server_tags_tag", "tag", "server_id"),)
    server_id: int = Field(foreign_key="servers.id", primary_key=True, ondelete="CASCADE")
    tag: str = Field(max_length=64, primary_key=True)


class Nic(SQLModel, table=True):
    __tablename__ = "nics"
    __table_args__ = (UniqueConstraint("server_id", "name"),)
    id: int | None = Field(default=None, primary_key=True)
    server_id: int = Field(foreign_key="servers.id", ondelete="CASCADE")  # indexed by (server_id, name)
    name: str = Field(default="eth0", max_length=32)
    mac: str = Field(max_length=17, unique=True)
    ip: str | None = Field(default=None, max_length=45, unique=True)
    switch: str = Field(default="", max_length=64)
    switch_port: str = Field(default="", max_length=64)
    pxe: bool = Field(default=False)


class Disk(SQLModel, table=True):
    __tablename__ = "disks"
    __table_args__ = (UniqueConstraint("server_id", "slot"),)
    id: int | None = Field(default=None, primary_key=True)
    server_id: int = Field(foreign_key="servers.id", ondelete="CASCADE")  # indexed by (server_id, slot)
    slot: str = Field(max_length=32)
    kind: str = Field(default="ssd", max_length=8)
    model: str = Field(default="", max_length=64)
    serial: str = Field(default="", max_length=64, index=True)
    size_gb: int = Field(default=0)


class Ups(SQLModel, table=True):
    """A UPS: per-server (often USB, read through NUT), per-rack or per-room (SNMP)."""

    __tablename__ = "ups"
    __table_args__ = (
        CheckConstraint("kind IN ('server', 'rack', 'room')", name="kind"),
        CheckConstraint("protocol IN ('snmp', 'nut')", name="protocol"),
    )
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64, unique=True)
    site_id: int = Field(foreign_key="sites.id", index=True)
    rack_id: int | None = Field(default=None, foreign_key="racks.id", index=True)
    kind: str = Field(default="rack", max_length=8)
    profile: str = Field(default="generic-ups-mib", max_length=64)
    protocol: str = Field(default="snmp", max_length=8)
    host: str = Field(max_length=253)
    port: int = Field(default=161)
    nut_name: str = Field(default="", max_length=64)
    credential_id: int | None = Field(default=None, foreign_key="credentials.id", index=True)
    feed_id: int | None = Field(default=None, foreign_key="power_feeds.id", index=True)
    capacity_w: int | None = Field(default=None)
    battery_installed: date | None = Field(default=None)
    description: str = Field(default="", max_length=256)


class Pdu(SQLModel, table=True):
    __tablename__ = "pdus"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64, unique=True)
    site_id: int = Field(foreign_key="sites.id", index=True)
    rack_id: int | None = Field(default=None, foreign_key="racks.id", index=True)
    profile: str = Field(default="generic-pdu", max_length=64)
    host: str = Field(max_length=253)
    port: int = Field(default=161)
    credential_id: int | None = Field(default=None, foreign_key="credentials.id", index=True)
    feed_id: int | None = Field(default=None, foreign_key="power_feeds.id", index=True)
    ups_id: int | None = Field(default=None, foreign_key="ups.id", index=True)
    capacity_w: int | None = Field(default=None)
    description: str = Field(default="", max_length=256)


class Outlet(SQLModel, table=True):
    """One outlet of a PDU or UPS and the server PSU it feeds. Outlet 0 of a UPS is its whole output."""

    __tablename__ = "outlets"
    __table_args__ = (
        UniqueConstraint("pdu_id", "number"),
        UniqueConstraint("ups_id", "number"),
        CheckConstraint("(pdu_id IS NULL) <> (ups_id IS NULL)", name="one_parent"),
    )
    id: int | None = Field(default=None, primary_key=True)
    pdu_id: int | None = Field(default=None, foreign_key="pdus.id", index=True, ondelete="CASCADE")
    ups_id: int | None = Field(default=None, foreign_key="ups.id", index=True, ondelete="CASCADE")
    number: int = Field(default=0)
    name: str = Field(default="", max_length=64)
    server_id: int | None = Field(default=None, foreign_key="servers.id", index=True, ondelete="SET NULL")
    psu: int = Field(default=1)


class IpPool(SQLModel, table=True):
    __tablename__ = "ip_pools"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64, unique=True)
    site_id: int | None = Field(default=None, foreign_key="sites.id", index=True)
    rack_id: int | None = Field(default=None, foreign_key="racks.id", index=True)
    purpose: str = Field(default="provisioning", max_length=16)
    cidr: str = Field(max_length=49)
    gateway: str | None = Field(default=None, max_length=45)
    first: str | None = Field(default=None, max_length=45)
    last: str | None = Field(default=None, max_length=45)
    dns: str = Field(default="", max_length=256)
    vlan: int | None = Field(default=None)


class Reading(SQLModel, table=True):
    """One measured value. Append-only; old rows are downsampled or dropped by retention."""

    __tablename__ = "readings"
    __table_args__ = (Index("ix_readings_target_metric_ts", "target_kind", "target_id", "metric", "ts"),
                      Index("ix_readings_ts", "ts"))
    id: int | None = Field(default=None, sa_column=Column(_BigId, primary_key=True, autoincrement=True))
    ts: datetime = Field(default_factory=utcnow)
    target_kind: str = Field(max_length=8)
    target_id: int
    metric: str = Field(max_length=64)
    value: float
    unit: str = Field(default="", max_length=16)


class ServerState(SQLModel, table=True):
    """The latest known state of one server, rewritten by each sweep."""

    __tablename__ = "server_state"
    server_id: int = Field(foreign_key="servers.id", primary_key=True, ondelete="CASCADE")
    updated_at: datetime = Field(default_factory=utcnow)
    power: str = Field(default="unknown", max_length=8)
    #: When ``power`` was last read, and by what ("sweep", or the power job that confirmed it).
    power_at: datetime | None = Field(default=None)
    power_source: str = Field(default="", max_length=64)
    health: str = Field(default="unknown", max_length=8, index=True)
    bmc_reachable: bool | None = Field(default=None)
    last_seen: datetime | None = Field(default=None)
    last_error: str = Field(default="", max_length=256)
    summary: dict = _json_column()


class UpsState(SQLModel, table=True):
    """The latest known state of one UPS."""

    __tablename__ = "ups_state"
    ups_id: int = Field(foreign_key="ups.id", primary_key=True, ondelete="CASCADE")
    updated_at: datetime = Field(default_factory=utcnow)
    status: str = Field(default="unknown", max_length=64, index=True)  # e.g. "on-battery low-battery"
    charge_pct: float | None = Field(default=None)
    runtime_s: float | None = Field(default=None)
    load_pct: float | None = Field(default=None)
    input_v: float | None = Field(default=None)
    battery_temp_c: float | None = Field(default=None)
    reachable: bool | None = Field(default=None)
    last_error: str = Field(default="", max_length=256)


class Event(SQLModel, table=True):
    """Something noticed. One open event per target and kind: ``dedup_key`` is set while open."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_status_severity", "status", "severity"),
                      Index("ix_events_target", "target_kind", "target_id"))
    id: int | None = Field(default=None, primary_key=True)
    opened_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    resolved_at: datetime | None = Field(default=None)
    target_kind: str = Field(max_length=8)
    target_id: int
    target_name: str = Field(default="", max_length=253)
    kind: str = Field(max_length=64)
    severity: str = Field(default="warning", max_length=8)
    status: str = Field(default="open", max_length=8)
    message: str = Field(default="", max_length=512)
    count: int = Field(default=1)
    acked_by: str = Field(default="", max_length=64)
    dedup_key: str | None = Field(default=None, max_length=128, unique=True)


class Job(SQLModel, table=True):
    """A long operation (sweep, power wave, imaging). Its state lives here so it can resume."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status", "status", "kind"),)
    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=32)
    selector: str = Field(default="", max_length=512)
    params: dict = _json_column()
    status: str = Field(default="pending", max_length=16)
    total: int = Field(default=0)
    done: int = Field(default=0)
    failed: int = Field(default=0)
    result: dict = _json_column()
    actor: str = Field(default="", max_length=64)
    owner: str = Field(default="", max_length=128)
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = Field(default=None)
    finished_at: datetime | None = Field(default=None)
    heartbeat_at: datetime | None = Field(default=None)


class JobStep(SQLModel, table=True):
    """One target of a job and how far its action got: ``pending -> sent -> confirmed | failed | expired``.

    "sent" is committed before the command goes out, so a job cut short (kill -9, a lost worker) says
    which targets were acted on, and a resume confirms those by reading their state instead of acting
    again (at most once per target per job). See :mod:`fleet.core.jobsteps`.
    """

    __tablename__ = "job_steps"
    __table_args__ = (UniqueConstraint("job_id", "target"), Index("ix_job_steps_job_state", "job_id", "state"))
    id: int | None = Field(default=None, sa_column=Column(_BigId, primary_key=True, autoincrement=True))
    job_id: int = Field(foreign_key="jobs.id", ondelete="CASCADE")
    target: str = Field(max_length=253)
    state: str = Field(default="pending", max_length=16)
    sent_at: datetime | None = Field(default=None)
    updated_at: datetime = Field(default_factory=utcnow)
    detail: dict = _json_column()


class Audit(SQLModel, table=True):
    """Who did what to which targets, and how it ended. Written for every change and every power action."""

    __tablename__ = "audit"
    id: int | None = Field(default=None, primary_key=True)
    ts: datetime = Field(default_factory=utcnow, index=True)
    actor: str = Field(max_length=64)
    action: str = Field(max_length=64, index=True)
    targets: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    target_count: int = Field(default=0)
    result: str = Field(default="ok", max_length=16)
    detail: dict = _json_column()


class ThresholdOverride(SQLModel, table=True):
    """A sensor threshold set for one rack or one server, over its hardware profile's.

    A server's own override beats its rack's, which beats the profile. A threshold left empty here
    keeps the next one down.
    """

    __tablename__ = "threshold_overrides"
    __table_args__ = (UniqueConstraint("rack_id", "server_id", "sensor"),
                      CheckConstraint("(rack_id IS NULL) <> (server_id IS NULL)", name="one_scope"))
    id: int | None = Field(default=None, primary_key=True)
    rack_id: int | None = Field(default=None, foreign_key="racks.id", index=True, ondelete="CASCADE")
    server_id: int | None = Field(default=None, foreign_key="servers.id", index=True, ondelete="CASCADE")
    sensor: str = Field(max_length=64)
    critical_low: float | None = Field(default=None)
    warning_low: float | None = Field(default=None)
    warning_high: float | None = Field(default=None)
    critical_high: float | None = Field(default=None)


class WorkOrder(SQLModel, table=True):
    """Work for people: an RMA, a battery replacement. Exportable for a ticketing system."""

    __tablename__ = "work_orders"
    __table_args__ = (Index("ix_work_orders_status", "status", "kind"),
                      CheckConstraint("kind IN ('rma', 'battery-replacement')", name="kind"))
    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=32)
    target_kind: str = Field(max_length=8)
    target_name: str = Field(max_length=253)
    status: str = Field(default="open", max_length=16)
    reason: str = Field(default="", max_length=512)
    event_id: int | None = Field(default=None, foreign_key="events.id")
    external_ref: str = Field(default="", max_length=128)
    actor: str = Field(default="", max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    closed_at: datetime | None = Field(default=None)


class WipeCertificate(SQLModel, table=True):
    """How one disk was wiped at decommissioning: the record an auditor asks for.

    Kept when the server row goes (the names are copied in); ``digest`` is a SHA-256 over the fields
    that matter, so an edited row no longer matches it.
    """

    __tablename__ = "wipe_certificates"
    id: int | None = Field(default=None, primary_key=True)
    server_id: int | None = Field(default=None, foreign_key="servers.id", index=True, ondelete="SET NULL")
    hostname: str = Field(max_length=253, index=True)
    server_serial: str = Field(default="", max_length=64)
    disk_slot: str = Field(default="", max_length=32)
    disk_serial: str = Field(default="", max_length=64, index=True)
    disk_model: str = Field(default="", max_length=64)
    device: str = Field(default="", max_length=64)
    size_bytes: int | None = Field(default=None, sa_type=BigInteger)
    method: str = Field(max_length=32)
    result: str = Field(max_length=16)
    verified: bool = Field(default=False)
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = Field(default=None)
    actor: str = Field(default="", max_length=64)
    job_id: int | None = Field(default=None)
    detail: dict = _json_column()
    digest: str = Field(default="", max_length=64)


class StateChange(SQLModel, table=True):
    """One lifecycle move of one server: from, to, who, why, when."""

    __tablename__ = "state_changes"
    id: int | None = Field(default=None, primary_key=True)
    server_id: int = Field(foreign_key="servers.id", index=True, ondelete="CASCADE")
    ts: datetime = Field(default_factory=utcnow)
    from_state: str = Field(max_length=16)
    to_state: str = Field(max_length=16)
    actor: str = Field(max_length=64)
    reason: str = Field(default="", max_length=256)
