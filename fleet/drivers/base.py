"""Driver protocols: one small async interface per capability.

A driver object serves many devices (an IPMI driver owns the worker pool for thousands of BMCs), so
every call names its :class:`Target`. A driver implements only the protocols its protocol can do,
declares its settings (secret ones marked) and maps every lower-library error into
:mod:`fleet.errors` at its edge: callers see ``DeviceTimeout``, ``AuthFailed``, ``Unsupported``...,
never a pyghmi dict or a pysnmp error tuple.

Validation never touches hardware: building a Target checks values only; a device is contacted
only by an operation, and every operation has a deadline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

from inventory.secrets import Secret

__all__ = [
    "BatteryMonitor",
    "BatteryStatus",
    "BmcControl",
    "BootControl",
    "BootDevice",
    "CommandResult",
    "EventLog",
    "FruInfo",
    "HardwareInventory",
    "OutletControl",
    "OutletStatus",
    "PowerControl",
    "PowerState",
    "RemoteShell",
    "SelEntry",
    "SensorReader",
    "SensorReading",
    "Setting",
    "Target",
]

PowerState = Literal["on", "off", "unknown"]
BootTarget = Literal["pxe", "disk", "bios", "cdrom", "none"]


@dataclass(frozen=True)
class Setting:
    """A driver setting. ``secret`` ones live in credentials, never in ordinary settings or logs."""

    name: str
    type: type
    default: Any = None
    secret: bool = False
    help: str = ""


@dataclass(frozen=True)
class Target:
    """One device as a driver needs it: where, who, and how long to wait.

    ``name`` is what errors and audit entries call it (a host name or UPS name); ``options`` holds
    profile-derived settings (cipher suites, quirks) as plain values.
    """

    name: str
    host: str
    port: int
    username: str = ""
    password: Secret | None = field(default=None, repr=False)
    timeout: float = 5.0
    options: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class BootDevice:
    device: BootTarget
    persistent: bool = False
    uefi: bool = False


@dataclass(frozen=True)
class SensorReading:
    name: str
    kind: str  # temperature | fan | voltage | current | power | other
    value: float | None
    unit: str
    state: str  # ok | warning | critical | unknown | absent
    thresholds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SelEntry:
    record_id: int
    ts: datetime | None
    sensor: str
    event: str
    severity: str  # info | warning | critical
    raw: str = ""


@dataclass(frozen=True)
class FruInfo:
    manufacturer: str = ""
    product: str = ""
    serial: str = ""
    part_number: str = ""
    asset_tag: str = ""
    board_serial: str = ""
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class OutletStatus:
    number: int
    name: str
    state: PowerState


@dataclass(frozen=True)
class BatteryStatus:
    status: str  # online | on-battery | low-battery | replace-battery | unknown (may combine: "on-battery low-battery")
    charge_pct: float | None = None
    runtime_s: float | None = None
    load_pct: float | None = None
    input_v: float | None = None
    battery_temp_c: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CommandResult:
    exit_status: int
    stdout: str
    stderr: str


@runtime_checkable
class PowerControl(Protocol):
    async def power_status(self, target: Target) -> PowerState: ...
    async def power_on(self, target: Target) -> None: ...
    async def power_off(self, target: Target) -> None: ...
    async def power_cycle(self, target: Target) -> None: ...
    async def power_reset(self, target: Target) -> None: ...
    async def power_soft(self, target: Target) -> None: ...


@runtime_checkable
class BootControl(Protocol):
    async def get_boot(self, target: Target) -> BootDevice: ...
    async def set_boot(self, target: Target, device: BootTarget, *, persistent: bool = False,
                       uefi: bool = False) -> None: ...


@runtime_checkable
class SensorReader(Protocol):
    async def sensors(self, target: Target) -> list[SensorReading]: ...


@runtime_checkable
class EventLog(Protocol):
    async def sel(self, target: Target) -> list[SelEntry]: ...
    async def clear_sel(self, target: Target) -> None: ...


@runtime_checkable
class HardwareInventory(Protocol):
    async def fru(self, target: Target) -> FruInfo: ...


@runtime_checkable
class BmcControl(Protocol):
    async def bmc_reset(self, target: Target) -> None: ...


@runtime_checkable
class OutletControl(Protocol):
    async def outlets(self, target: Target) -> list[OutletStatus]: ...
    async def set_outlet(self, target: Target, number: int, action: Literal["on", "off", "cycle"]) -> None: ...


@runtime_checkable
class BatteryMonitor(Protocol):
    async def battery(self, target: Target) -> BatteryStatus: ...


@runtime_checkable
class RemoteShell(Protocol):
    async def run(self, target: Target, command: str, *, timeout: float | None = None) -> CommandResult: ...
