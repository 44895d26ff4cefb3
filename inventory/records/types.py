"""The record types: one frozen dataclass per kind of inventory object, and the nested ones.

A record is what :func:`inventory.records.build` makes of one input mapping, validated and
normalised; :func:`inventory.records.apply` writes a batch of them. Optional fields are ``None``
unless the input gave them ("leave it as stored"); a given list (NICs, disks, tags, outlets)
replaces the stored one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import ClassVar

from .source import SourceMap

__all__ = [
    "KINDS",
    "CredentialRecord",
    "DiskRecord",
    "FeedRecord",
    "NicRecord",
    "OutletRecord",
    "PduRecord",
    "PodRecord",
    "PoolRecord",
    "RackRecord",
    "Record",
    "ServerRecord",
    "SiteRecord",
    "UpsRecord",
]


#: Record kinds, in the order :func:`apply` writes them (each refers only to earlier ones,
#: except servers' ``ups`` references, which are resolved when the UPS units are written).
KINDS: tuple[str, ...] = ("site", "pod", "rack", "feed", "credential", "server", "ups", "pdu", "pool")


# Every record has ``loc`` ("file:line" of the record) and, when it was read from YAML, ``src``: the
# mapping it came from, so that apply() can name the line of the very key it refuses (a reference
# to an object the reader made anyway, so it costs nothing). Neither takes part in equality.


@dataclass(frozen=True, slots=True)
class NicRecord:
    name: str
    mac: str
    ip: str | None = None
    switch: str = ""
    switch_port: str = ""
    pxe: bool = False
    loc: str | None = field(default=None, compare=False, repr=False)

    def key(self) -> tuple:
        return (self.name, self.mac, self.ip, self.switch, self.switch_port, self.pxe)


@dataclass(frozen=True, slots=True)
class DiskRecord:
    slot: str
    disk_kind: str = "ssd"
    model: str = ""
    serial: str = ""
    size_gb: int = 0
    loc: str | None = field(default=None, compare=False, repr=False)

    def key(self) -> tuple:
        return (self.slot, self.disk_kind, self.model, self.serial, self.size_gb)


@dataclass(frozen=True, slots=True)
class OutletRecord:
    """One outlet of a UPS or PDU; ``server`` is the host name it feeds (PSU ``psu``), if any."""

    number: int
    server: str | None = None
    psu: int = 1
    name: str = ""
    loc: str | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class SiteRecord:
    kind: ClassVar[str] = "site"
    code: str
    name: str | None = None
    description: str | None = None
    loc: str | None = field(default=None, compare=False, repr=False)
    src: SourceMap | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class PodRecord:
    kind: ClassVar[str] = "pod"
    site: str
    code: str
    name: str | None = None
    pod_kind: str | None = None
    loc: str | None = field(default=None, compare=False, repr=False)
    src: SourceMap | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class RackRecord:
    kind: ClassVar[str] = "rack"
    site: str
    name: str
    pod: str | None = None
    units: int | None = None
    description: str | None = None
    loc: str | None = field(default=None, compare=False, repr=False)
    src: SourceMap | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class FeedRecord:
    kind: ClassVar[str] = "feed"
    site: str
    name: str
    rack: str | None = None
    capacity_w: int | None = None
    voltage: int | None = None
    phases: int | None = None
    loc: str | None = field(default=None, compare=False, repr=False)
    src: SourceMap | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class CredentialRecord:
    """A credential from a secrets file. ``secret`` is the plain secret: never shown, never exported."""

    kind: ClassVar[str] = "credential"
    name: str
    cred_kind: str
    username: str | None = None
    secret: str | None = field(default=None, repr=False)
    options: tuple[tuple[str, str], ...] | None = None
    loc: str | None = field(default=None, compare=False, repr=False)
    src: SourceMap | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class ServerRecord:
    kind: ClassVar[str] = "server"
    hostname: str
    site: str | None = None
    pod: str | None = None
    rack: str | None = None
    position: int | None = None
    height: int | None = None
    profile: str | None = None
    serial: str | None = None
    asset_tag: str | None = None
    state: str | None = None
    bmc_host: str | None = None
    bmc_port: int | None = None
    bmc_credential: str | None = None
    #: The Redfish endpoint (a ``bmc_endpoints`` row): address, credential, and how its TLS is trusted.
    redfish_host: str | None = None
    redfish_port: int | None = None
    redfish_credential: str | None = None
    redfish_tls_fingerprint: str | None = None
    redfish_ca_file: str | None = None
    ssh_credential: str | None = None
    primary_ip: str | None = None
    ssh_host_key: str | None = None
    priority: int | None = None
    description: str | None = None
    nics: tuple[NicRecord, ...] | None = None
    disks: tuple[DiskRecord, ...] | None = None
    tags: tuple[str, ...] | None = None
    #: The name of a per-server UPS whose whole output (outlet 0) feeds this server's PSU 1.
    ups: str | None = None
    loc: str | None = field(default=None, compare=False, repr=False)
    src: SourceMap | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class UpsRecord:
    kind: ClassVar[str] = "ups"
    name: str
    site: str
    host: str
    rack: str | None = None
    ups_kind: str | None = None
    profile: str | None = None
    protocol: str | None = None
    port: int | None = None
    nut_name: str | None = None
    credential: str | None = None
    feed: str | None = None
    capacity_w: int | None = None
    battery_installed: date | None = None
    description: str | None = None
    outlets: tuple[OutletRecord, ...] | None = None
    loc: str | None = field(default=None, compare=False, repr=False)
    src: SourceMap | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class PduRecord:
    kind: ClassVar[str] = "pdu"
    name: str
    site: str
    host: str
    rack: str | None = None
    profile: str | None = None
    port: int | None = None
    credential: str | None = None
    feed: str | None = None
    ups: str | None = None
    capacity_w: int | None = None
    description: str | None = None
    outlets: tuple[OutletRecord, ...] | None = None
    loc: str | None = field(default=None, compare=False, repr=False)
    src: SourceMap | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class PoolRecord:
    kind: ClassVar[str] = "pool"
    name: str
    cidr: str
    site: str | None = None
    rack: str | None = None
    purpose: str | None = None
    gateway: str | None = None
    first: str | None = None
    last: str | None = None
    dns: str | None = None
    vlan: int | None = None
    loc: str | None = field(default=None, compare=False, repr=False)
    src: SourceMap | None = field(default=None, compare=False, repr=False)


Record = (SiteRecord | PodRecord | RackRecord | FeedRecord | CredentialRecord | ServerRecord | UpsRecord
          | PduRecord | PoolRecord)
