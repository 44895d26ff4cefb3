"""The typed profile model: the vocabularies a profile may use and the frozen dataclasses it is read into.

A :class:`Profile` is one hardware model (``hardware-profiles/<folder>/<name>.toml``, read by
:mod:`fleet.profiles.loader`); its parts are the matching rules (:class:`MatchRules`), power figures,
sensors with thresholds, IPMI/SNMP/NUT settings and quirks (:class:`Quirk`, plus the typed records of
:mod:`fleet.profiles.quirks` the code acts on). Nothing here reads a file or touches hardware.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from fleet.drivers.registry import CAPABILITIES
from fleet.errors import ProfileError
from fleet.profiles.quirks import BmcQuirks, BootQuirks, OutletQuirks

__all__ = [
    "ENUM_VOCABULARY",
    "FALLBACK_PROFILES",
    "KINDS",
    "METRICS",
    "NUT_ONLY_METRICS",
    "OUTLET_ACTIONS",
    "OUTLET_STATES",
    "SENSOR_UNITS",
    "UPS_ACTIONS",
    "IpmiSpec",
    "MatchRules",
    "NutSpec",
    "OidSpec",
    "OutletTable",
    "PowerSpec",
    "Profile",
    "Quirk",
    "SensorSpec",
    "SetCommand",
    "SnmpSpec",
]

#: Kinds of device a profile may describe.
KINDS: tuple[str, ...] = ("server", "ups", "pdu")

#: The profile a NetBox device falls back to, per kind, when nothing more specific matches.
FALLBACK_PROFILES: Mapping[str, str] = MappingProxyType(
    {"server": "generic-ipmi", "ups": "generic-ups-mib", "pdu": "generic-pdu"}
)

#: Sensor kinds and the units each may be reported in.
SENSOR_UNITS: Mapping[str, frozenset[str]] = MappingProxyType({
    "temperature": frozenset({"celsius"}),
    "fan": frozenset({"rpm", "percent"}),
    "voltage": frozenset({"volts"}),
    "current": frozenset({"amps"}),
    "power": frozenset({"watts"}),
    "humidity": frozenset({"percent"}),
})

#: Readings a UPS or PDU profile may map (SNMP OIDs or NUT variables), with the raw units allowed.
#: ``enum`` readings carry a value map onto the vocabulary in ``ENUM_VOCABULARY``.
METRICS: Mapping[str, frozenset[str]] = MappingProxyType({
    "battery_charge": frozenset({"percent"}),
    "battery_runtime": frozenset({"seconds", "minutes", "timeticks"}),
    "battery_status": frozenset({"enum"}),
    "battery_replace": frozenset({"enum"}),
    "battery_temperature": frozenset({"celsius"}),
    "seconds_on_battery": frozenset({"seconds"}),
    "output_source": frozenset({"enum"}),
    "output_load": frozenset({"percent"}),
    "output_power": frozenset({"watts"}),
    "output_current": frozenset({"amps"}),
    "input_voltage": frozenset({"volts"}),
    "nominal_power": frozenset({"watts"}),
    "ambient_temperature": frozenset({"celsius"}),
})

#: NUT-only readings (NUT's own composite variables), in addition to ``METRICS``.
NUT_ONLY_METRICS: frozenset[str] = frozenset({"ups_status"})

#: The states an ``enum`` reading may be mapped onto.
ENUM_VOCABULARY: Mapping[str, frozenset[str]] = MappingProxyType({
    "battery_status": frozenset({"unknown", "normal", "low", "depleted"}),
    "battery_replace": frozenset({"ok", "replace"}),
    "output_source": frozenset(
        {"online", "on_battery", "bypass", "boost", "trim", "off", "other", "unknown"}
    ),
})

#: States an outlet state column may be mapped onto.
OUTLET_STATES: frozenset[str] = frozenset({"on", "off", "pending_on", "pending_off", "unknown"})
#: Actions on one outlet.
OUTLET_ACTIONS: frozenset[str] = frozenset({"on", "off", "cycle"})
#: Actions on a UPS output as a whole (SNMP SETs or NUT instant commands).
UPS_ACTIONS: frozenset[str] = frozenset(
    {"load_off", "load_on", "load_cycle", "shutdown_return", "shutdown_stayoff"}
)


# --------------------------------------------------------------------------------------------
# The dataclasses
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MatchRules:
    """How to recognise the model: IPMI Get Device ID, SNMP sysObjectID, NetBox names.

    ``preferred`` breaks ties: when several profiles share an IPMI manufacturer id, a
    sysObjectID prefix or a NetBox manufacturer (within one kind), exactly one of them must be
    preferred, and that one answers when nothing more specific matches.
    """

    ipmi_manufacturer_id: int | None = None
    ipmi_product_ids: tuple[int, ...] = ()
    sys_object_ids: tuple[str, ...] = ()
    netbox_manufacturers: tuple[str, ...] = ()
    netbox_device_types: tuple[str, ...] = ()
    preferred: bool = False


@dataclass(frozen=True)
class PowerSpec:
    """Power figures for budgeting, in watts.

    ``idle_w``/``peak_w`` are what the device itself draws. ``capacity_w``/``capacity_va`` are
    what a UPS or PDU can supply. ``inrush_factor`` multiplies ``peak_w`` for ``inrush_window_s``
    seconds after power-on (staggered power-on keeps the sum under the feed's budget).
    """

    idle_w: float
    peak_w: float
    capacity_w: float | None = None
    capacity_va: float | None = None
    inrush_factor: float | None = None
    inrush_window_s: float | None = None


@dataclass(frozen=True)
class SensorSpec:
    """A sensor as the device reports it, with the thresholds we alert on (any may be absent)."""

    name: str
    kind: str
    unit: str
    critical_low: float | None = None
    warning_low: float | None = None
    warning_high: float | None = None
    critical_high: float | None = None

    def state(self, value: float) -> str:
        """``ok``, ``warning`` or ``critical`` for a reading of this sensor."""
        if (self.critical_low is not None and value <= self.critical_low) or (
            self.critical_high is not None and value >= self.critical_high
        ):
            return "critical"
        if (self.warning_low is not None and value <= self.warning_low) or (
            self.warning_high is not None and value >= self.warning_high
        ):
            return "warning"
        return "ok"


@dataclass(frozen=True)
class Quirk:
    """A known oddity of the model, as data: ``id`` names it, ``value`` parameterises it."""

    id: str
    applies_to: str
    value: Any
    why: str


@dataclass(frozen=True)
class IpmiSpec:
    """IPMI-over-LAN settings: cipher suites in order of preference, privilege, port."""

    cipher_suites: tuple[int, ...] = (17, 3)
    privilege: str = "administrator"
    port: int = 623


@dataclass(frozen=True)
class OidSpec:
    """One SNMP reading: ``value = raw * scale`` in ``unit``; ``unknown`` raw values mean no reading.

    If the agent has no ``oid`` (noSuchObject/noSuchInstance), ``fallback_oid`` is read with
    ``fallback_scale``. For ``enum`` readings ``values`` maps raw integers to a fixed vocabulary.
    """

    oid: str
    unit: str
    scale: float = 1.0
    unknown: tuple[int, ...] = ()
    values: Mapping[int, str] = field(default_factory=lambda: MappingProxyType({}))
    fallback_oid: str | None = None
    fallback_scale: float = 1.0


@dataclass(frozen=True)
class SetCommand:
    """An SNMP SET of INTEGER ``value`` on ``oid`` (for outlet commands the outlet index is appended)."""

    oid: str
    value: int


@dataclass(frozen=True)
class OutletTable:
    """An outlet table: columns are OIDs without the index; the driver appends ``.<outlet>``."""

    state_oid: str
    states: Mapping[int, str]
    commands: Mapping[str, SetCommand]
    name_oid: str | None = None
    count_oid: str | None = None


@dataclass(frozen=True)
class SnmpSpec:
    """SNMP readings, UPS-wide commands and the outlet table, all as numeric OIDs."""

    mib: str
    metrics: Mapping[str, OidSpec]
    commands: Mapping[str, SetCommand]
    outlets: OutletTable | None = None
    model_oid: str | None = None


@dataclass(frozen=True)
class NutSpec:
    """A UPS read through NUT: its NUT driver, the variable for each reading, the instcmd for each action."""

    driver: str
    variables: Mapping[str, str]
    commands: Mapping[str, str]


@dataclass(frozen=True, repr=False)
class Profile:
    """One hardware model. ``path`` is the file it came from (not part of equality)."""

    name: str
    kind: str
    vendor: str
    model: str
    description: str
    sources: tuple[str, ...]
    match: MatchRules
    drivers: Mapping[str, tuple[str, ...]]
    power: PowerSpec
    sensors: tuple[SensorSpec, ...] = ()
    ipmi: IpmiSpec | None = None
    snmp: SnmpSpec | None = None
    nut: NutSpec | None = None
    quirks: tuple[Quirk, ...] = ()
    #: The boot quirks the code acts on, typed (:mod:`fleet.profiles.quirks`): read ``profile.boot.uefi_flag_required``.
    boot: BootQuirks = field(default_factory=BootQuirks)
    #: BMC quirks (``profile.bmc.ipmi_over_lan_remedy``...) and outlet quirks (``profile.outlet.no_control``...).
    bmc: BmcQuirks = field(default_factory=BmcQuirks)
    outlet: OutletQuirks = field(default_factory=OutletQuirks)
    path: Path | None = field(default=None, compare=False, repr=False)

    def __hash__(self) -> int:
        return hash((self.name, self.kind))

    def __repr__(self) -> str:
        return f"<Profile {self.name} ({self.kind}: {self.vendor} {self.model})>"

    def drivers_for(self, capability: str) -> tuple[str, ...]:
        """Driver names serving ``capability``, most preferred first (empty if none)."""
        if capability not in CAPABILITIES:
            raise ProfileError(f"unknown capability {capability!r}; known: {', '.join(sorted(CAPABILITIES))}")
        return self.drivers.get(capability, ())

    def supports(self, capability: str) -> bool:
        return bool(self.drivers_for(capability))

    def quirk(self, quirk_id: str) -> Quirk | None:
        """The quirk named ``quirk_id``, or None."""
        for q in self.quirks:
            if q.id == quirk_id:
                return q
        return None

    def quirks_for(self, capability: str) -> tuple[Quirk, ...]:
        return tuple(q for q in self.quirks if q.applies_to == capability)

    def sensor(self, name: str) -> SensorSpec | None:
        """The sensor reported under ``name`` (exact match, as the device spells it), or None."""
        for s in self.sensors:
            if s.name == name:
                return s
        return None
