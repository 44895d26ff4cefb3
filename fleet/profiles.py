"""Hardware profiles: what Rackfleet knows about one model of server, UPS or PDU.

Each model is one TOML file under ``hardware-profiles/`` (``servers/``, ``ups/``, ``pdu/``);
the format is described in ``docs/profiles.md``. This module reads them into frozen
dataclasses and answers the questions the rest of the fleet asks of them:

- which profile is this BMC / SNMP agent / NetBox device type? (:class:`ProfileSet`)
- which driver serves a capability, in order of preference? (:meth:`Profile.drivers_for`)
- which OIDs, NUT variables, sensor thresholds, power figures and quirks apply?

Validation is strict and never touches hardware: unknown keys, wrong types, unregistered
drivers, drivers that do not implement the capability they are listed for, quirks without a
``why``, unordered thresholds and malformed OIDs are refused with a :class:`~fleet.errors.ProfileError`
that names the file and the key path, e.g.
``hardware-profiles/servers/dell-r640.toml: sensors[2].critical_high: must be a number``.
"""

from __future__ import annotations

import difflib
import functools
import itertools
import os
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn

from fleet.drivers.registry import CAPABILITIES, DriverRegistry
from fleet.drivers.registry import registry as default_registry
from fleet.errors import ProfileError
from fleet.quirks import (
    KNOWN_QUIRKS,
    BmcQuirks,
    BootQuirks,
    OutletQuirks,
    bmc_quirks,
    boot_quirks,
    check_quirk,
    outlet_quirks,
)

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
    "ProfileSet",
    "Quirk",
    "SensorSpec",
    "SetCommand",
    "SnmpSpec",
    "clear_cache",
    "default_profiles_dir",
    "load_profile",
    "load_profiles",
]

#: Kinds of device a profile may describe, and the folder each lives in.
KINDS: tuple[str, ...] = ("server", "ups", "pdu")
_FOLDER_KIND = {"servers": "server", "ups": "ups", "pdu": "pdu"}

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

_NAME_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*\Z")
_OID_RE = re.compile(r"^[0-9]+(?:\.[0-9]+)+\Z")
_NUT_VAR_RE = re.compile(r"^[a-z0-9]+(?:\.[a-z0-9_]+)+\Z")
_TOML_POS_RE = re.compile(r"at line (\d+), column (\d+)")

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
    #: The boot quirks the code acts on, typed (``fleet.quirks``): read ``profile.boot.uefi_flag_required``.
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


# --------------------------------------------------------------------------------------------
# Reading one file
# --------------------------------------------------------------------------------------------


def _fail(file: str, key: str | None, message: str) -> NoReturn:
    err = ProfileError(f"{file}: {key}: {message}" if key else f"{file}: {message}")
    err.file = file  # type: ignore[attr-defined]
    err.key = key  # type: ignore[attr-defined]
    raise err


def _type_name(value: object) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
            dict: "a table"}.get(type(value), type(value).__name__)


class _Table:
    """A TOML table being read: typed getters that remember which keys were read, so that
    :meth:`done` can refuse the others."""

    def __init__(self, file: str, data: object, path: str) -> None:
        self.file = file
        self.path = path
        if not isinstance(data, dict):
            _fail(file, path or None, f"must be a table, not {_type_name(data)}")
        self.data: dict[str, Any] = data
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, name: str, message: str) -> NoReturn:
        _fail(self.file, self.key(name), message)

    def has(self, name: str) -> bool:
        return name in self.data

    def _get(self, name: str, required: bool) -> Any:
        self.used.add(name)
        if name not in self.data:
            if required:
                self.fail(name, "is required")
            return None
        return self.data[name]

    def get_any(self, name: str) -> Any:
        """A required value of any TOML type."""
        return self._get(name, True)

    def get_str(self, name: str, *, required: bool = True, nonempty: bool = True) -> str | None:
        value = self._get(name, required)
        if value is None:
            return None
        if not isinstance(value, str):
            self.fail(name, f"must be a string, not {_type_name(value)}")
        if nonempty and not value.strip():
            self.fail(name, "must not be empty")
        return value

    def get_int(self, name: str, *, required: bool = True,
                lo: int | None = None, hi: int | None = None) -> int | None:
        value = self._get(name, required)
        if value is None:
            return None
        return _check_int(self.file, self.key(name), value, lo, hi)

    def get_num(self, name: str, *, required: bool = True, positive: bool = False) -> float | None:
        value = self._get(name, required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(name, f"must be a number, not {_type_name(value)}")
        if positive and value <= 0:
            self.fail(name, f"must be greater than 0 (got {value})")
        return float(value)

    def get_bool(self, name: str, default: bool = False) -> bool:
        value = self._get(name, False)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(name, f"must be true or false, not {_type_name(value)}")
        return value

    def get_list(self, name: str, *, required: bool = False, nonempty: bool = False) -> list[Any]:
        value = self._get(name, required)
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(name, f"must be an array, not {_type_name(value)}")
        if nonempty and not value:
            self.fail(name, "must not be empty")
        return value

    def get_str_list(self, name: str, *, required: bool = False, nonempty: bool = False) -> tuple[str, ...]:
        items = self.get_list(name, required=required, nonempty=nonempty)
        for i, item in enumerate(items):
            if not isinstance(item, str) or not item.strip():
                _fail(self.file, f"{self.key(name)}[{i}]", f"must be a non-empty string, not {item!r}")
        if len(set(items)) != len(items):
            self.fail(name, "has duplicate entries")
        return tuple(items)

    def get_int_list(self, name: str, *, lo: int | None = None, hi: int | None = None) -> tuple[int, ...]:
        items = self.get_list(name)
        out = tuple(_check_int(self.file, f"{self.key(name)}[{i}]", v, lo, hi) for i, v in enumerate(items))
        if len(set(out)) != len(out):
            self.fail(name, "has duplicate entries")
        return out

    def get_oid(self, name: str, *, required: bool = True) -> str | None:
        value = self.get_str(name, required=required)
        if value is None:
            return None
        return _check_oid(self.file, self.key(name), value)

    def get_table(self, name: str, *, required: bool = False) -> _Table | None:
        value = self._get(name, required)
        if value is None:
            return None
        return _Table(self.file, value, self.key(name))

    def get_tables(self, name: str) -> list[_Table]:
        """An array of tables (``[[name]]``)."""
        items = self.get_list(name)
        return [_Table(self.file, item, f"{self.key(name)}[{i}]") for i, item in enumerate(items)]

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            name = unknown[0]
            self.fail(name, "unknown key" + _hint(name, self.used, "known keys"))


def _hint(name: str, choices: Iterable[str], label: str) -> str:
    """`` (did you mean 'x'?)`` when a choice is close, else ``; <label>: a, b, c``."""
    close = difflib.get_close_matches(name, sorted(choices), n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f"; {label}: {', '.join(sorted(choices))}"


def _check_int(file: str, key: str, value: object, lo: int | None, hi: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(file, key, f"must be an integer, not {_type_name(value)}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        _fail(file, key, f"must be between {lo} and {hi} (got {value})")
    return value


def _check_oid(file: str, key: str, value: str) -> str:
    if not _OID_RE.match(value):
        hint = " without a leading dot" if value.startswith(".") else ""
        _fail(file, key, f"must be a numeric dotted OID{hint}, like 1.3.6.1.2.1.33 (got {value!r})")
    return value


def _read_match(t: _Table | None) -> MatchRules:
    if t is None:
        return MatchRules()
    ipmi = t.get_table("ipmi")
    snmp = t.get_table("snmp")
    netbox = t.get_table("netbox")
    preferred = t.get_bool("preferred")
    t.done()
    mfr = None
    products: tuple[int, ...] = ()
    if ipmi is not None:
        mfr = ipmi.get_int("manufacturer_id", lo=0, hi=0xFFFFF)  # IANA enterprise numbers are 20 bits in IPMI
        products = ipmi.get_int_list("product_ids", lo=0, hi=0xFFFF)
        ipmi.done()
    oids: tuple[str, ...] = ()
    if snmp is not None:
        oids = snmp.get_str_list("sys_object_ids", required=True, nonempty=True)
        for i, oid in enumerate(oids):
            _check_oid(snmp.file, f"{snmp.key('sys_object_ids')}[{i}]", oid)
        snmp.done()
    manufacturers: tuple[str, ...] = ()
    device_types: tuple[str, ...] = ()
    if netbox is not None:
        manufacturers = netbox.get_str_list("manufacturers", required=True, nonempty=True)
        device_types = netbox.get_str_list("device_types")
        netbox.done()
    return MatchRules(mfr, products, oids, manufacturers, device_types, preferred)


def _read_drivers(t: _Table | None, registry: DriverRegistry) -> Mapping[str, tuple[str, ...]]:
    if t is None:
        return MappingProxyType({})
    known = set(registry.names())
    out: dict[str, tuple[str, ...]] = {}
    for capability in sorted(t.data):
        if capability not in CAPABILITIES:
            t.fail(capability, "unknown capability" + _hint(capability, CAPABILITIES, "capabilities"))
        names = t.get_str_list(capability, required=True, nonempty=True)
        for i, driver in enumerate(names):
            key = f"{t.key(capability)}[{i}]"
            if driver not in known:
                _fail(t.file, key, f"unknown driver {driver!r}" + _hint(driver, known, "registered drivers"))
            if capability not in registry.capabilities(driver):
                _fail(t.file, key, f"driver {driver!r} does not implement {capability!r} "
                      f"(it implements: {', '.join(sorted(registry.capabilities(driver)))})")
        out[capability] = names
    t.done()
    return MappingProxyType(out)


def _read_power(t: _Table, kind: str) -> PowerSpec:
    idle = t.get_num("idle_w", positive=True)
    peak = t.get_num("peak_w", positive=True)
    assert idle is not None and peak is not None
    if idle > peak:
        t.fail("idle_w", f"must not exceed peak_w ({idle:g} > {peak:g})")
    capacity_w = t.get_num("capacity_w", required=False, positive=True)
    capacity_va = t.get_num("capacity_va", required=False, positive=True)
    if kind == "server" and (capacity_w is not None or capacity_va is not None):
        t.fail("capacity_w" if capacity_w is not None else "capacity_va",
               "applies only to UPS and PDU profiles")
    if capacity_w is not None and capacity_va is not None and capacity_w > capacity_va:
        t.fail("capacity_w", f"must not exceed capacity_va ({capacity_w:g} > {capacity_va:g})")
    inrush = t.get_num("inrush_factor", required=False)
    if inrush is not None and inrush < 1:
        t.fail("inrush_factor", f"must be at least 1 (a multiple of peak_w), got {inrush:g}")
    window = t.get_num("inrush_window_s", required=False, positive=True)
    if (inrush is None) != (window is None):
        t.fail("inrush_factor" if inrush is None else "inrush_window_s",
               "inrush_factor and inrush_window_s go together")
    t.done()
    return PowerSpec(idle, peak, capacity_w, capacity_va, inrush, window)


def _read_sensor(t: _Table) -> SensorSpec:
    name = t.get_str("name")
    kind = t.get_str("kind")
    assert name is not None and kind is not None
    if kind not in SENSOR_UNITS:
        t.fail("kind", f"must be one of {', '.join(sorted(SENSOR_UNITS))} (got {kind!r})")
    unit = t.get_str("unit")
    assert unit is not None
    if unit not in SENSOR_UNITS[kind]:
        units = " or ".join(sorted(SENSOR_UNITS[kind]))
        t.fail("unit", f"a {kind} sensor is reported in {units}, not {unit!r}")
    order = ("critical_low", "warning_low", "warning_high", "critical_high")
    values = {k: t.get_num(k, required=False) for k in order}
    t.done()
    present = [(k, v) for k, v in values.items() if v is not None]
    if not present:
        t.fail("critical_high", "a sensor needs at least one threshold")
    for (k1, v1), (k2, v2) in itertools.pairwise(present):
        crossing = k1.endswith("_low") and k2.endswith("_high")
        if (v1 >= v2) if crossing else (v1 > v2):
            t.fail(k1, f"must be {'below' if crossing else 'at most'} {k2} ({v1:g} vs {v2:g}); "
                   "thresholds go critical_low <= warning_low < warning_high <= critical_high")
    return SensorSpec(name, kind, unit, **values)


def _read_quirk(t: _Table, ids: set[str]) -> Quirk:
    qid = t.get_str("id")
    assert qid is not None
    if not _NAME_RE.match(qid):
        t.fail("id", f"must be lowercase words joined by '-' (got {qid!r})")
    if qid in ids:
        t.fail("id", f"duplicate quirk id {qid!r}")
    ids.add(qid)
    applies_to = t.get_str("applies_to")
    if applies_to not in CAPABILITIES:
        t.fail("applies_to", f"must be a capability: {', '.join(sorted(CAPABILITIES))} (got {applies_to!r})")
    value = t.get_any("value")
    if isinstance(value, dict):
        t.fail("value", "must be a boolean, number, string or array, not a table")
    if isinstance(value, list):
        value = tuple(value)
    why = t.get_str("why", required=False, nonempty=False)
    if why is None or not why.strip():
        t.fail("why", "every quirk needs a non-empty 'why' line saying what goes wrong without it")
    assert applies_to is not None
    misfit = check_quirk(qid, applies_to, value)  # a quirk the code acts on: its capability and value type
    if misfit is not None:
        t.fail(*misfit)
    t.done()
    return Quirk(qid, applies_to, value, why.strip())


def _read_ipmi(t: _Table) -> IpmiSpec:
    suites = t.get_int_list("cipher_suites", lo=0, hi=19)
    if not suites:
        t.fail("cipher_suites", "must list at least one cipher suite")
    privilege = t.get_str("privilege", required=False) or "administrator"
    if privilege not in ("user", "operator", "administrator"):
        t.fail("privilege", f"must be user, operator or administrator (got {privilege!r})")
    port = t.get_int("port", required=False, lo=1, hi=65535) or 623
    t.done()
    return IpmiSpec(suites, privilege, port)


def _read_value_map(t: _Table, vocabulary: frozenset[str]) -> Mapping[int, str]:
    out: dict[int, str] = {}
    for raw in t.data:
        t.used.add(raw)
        if not re.fullmatch(r"-?[0-9]+", raw):
            t.fail(raw, "keys of a value map are the raw integers, quoted (e.g. \"1\" = \"on\")")
        state = t.data[raw]
        if state not in vocabulary:
            t.fail(raw, f"must be one of {', '.join(sorted(vocabulary))} (got {state!r})")
        out[int(raw)] = state
    if not out:
        _fail(t.file, t.path, "must map at least one raw value")
    return MappingProxyType(out)


def _read_oid_spec(t: _Table, metric: str) -> OidSpec:
    oid = t.get_oid("oid")
    unit = t.get_str("unit")
    assert oid is not None and unit is not None
    if unit not in METRICS[metric]:
        t.fail("unit", f"{metric} is read in {', '.join(sorted(METRICS[metric]))} (got {unit!r})")
    scale = t.get_num("scale", required=False, positive=True)
    unknown = t.get_int_list("unknown")
    values_t = t.get_table("values")
    values: Mapping[int, str] = MappingProxyType({})
    if unit == "enum":
        if values_t is None:
            t.fail("values", "an enum reading needs a value map")
        values = _read_value_map(values_t, ENUM_VOCABULARY[metric])
    elif values_t is not None:
        t.fail("values", "only enum readings have a value map")
    fallback = t.get_oid("fallback_oid", required=False)
    fallback_scale = t.get_num("fallback_scale", required=False, positive=True)
    if fallback_scale is not None and fallback is None:
        t.fail("fallback_scale", "needs fallback_oid")
    t.done()
    return OidSpec(oid, unit, scale or 1.0, unknown, values, fallback, fallback_scale or 1.0)


def _read_commands(t: _Table | None, actions: frozenset[str]) -> Mapping[str, SetCommand]:
    if t is None:
        return MappingProxyType({})
    out: dict[str, SetCommand] = {}
    for action in sorted(t.data):
        if action not in actions:
            t.fail(action, f"unknown action; actions are: {', '.join(sorted(actions))}")
        c = t.get_table(action, required=True)
        assert c is not None
        oid = c.get_oid("oid")
        value = c.get_int("value")
        c.done()
        assert oid is not None and value is not None
        out[action] = SetCommand(oid, value)
    t.done()
    return MappingProxyType(out)


def _read_snmp(t: _Table) -> SnmpSpec:
    mib = t.get_str("mib")
    model_oid = t.get_oid("model_oid", required=False)
    metrics_t = t.get_table("metrics", required=True)
    assert metrics_t is not None and mib is not None
    metrics: dict[str, OidSpec] = {}
    for metric in sorted(metrics_t.data):
        if metric not in METRICS:
            metrics_t.fail(metric, "unknown metric" + _hint(metric, METRICS, "metrics"))
        m = metrics_t.get_table(metric, required=True)
        assert m is not None
        metrics[metric] = _read_oid_spec(m, metric)
    metrics_t.done()
    commands = _read_commands(t.get_table("commands"), UPS_ACTIONS)
    outlets_t = t.get_table("outlets")
    outlets = None
    if outlets_t is not None:
        state_oid = outlets_t.get_oid("state_oid")
        states_t = outlets_t.get_table("states", required=True)
        assert states_t is not None and state_oid is not None
        states = _read_value_map(states_t, OUTLET_STATES)
        outlet_commands = _read_commands(outlets_t.get_table("commands"), OUTLET_ACTIONS)
        name_oid = outlets_t.get_oid("name_oid", required=False)
        count_oid = outlets_t.get_oid("count_oid", required=False)
        outlets_t.done()
        outlets = OutletTable(state_oid, states, outlet_commands, name_oid, count_oid)
    t.done()
    return SnmpSpec(mib, MappingProxyType(metrics), commands, outlets, model_oid)


def _read_nut(t: _Table) -> NutSpec:
    driver = t.get_str("driver")
    variables_t = t.get_table("variables", required=True)
    assert variables_t is not None and driver is not None
    allowed = set(METRICS) | NUT_ONLY_METRICS
    variables: dict[str, str] = {}
    for metric in sorted(variables_t.data):
        if metric not in allowed:
            variables_t.fail(metric, "unknown metric" + _hint(metric, allowed, "metrics"))
        var = variables_t.get_str(metric)
        assert var is not None
        if not _NUT_VAR_RE.match(var):
            variables_t.fail(metric, f"must be a NUT variable name like battery.charge (got {var!r})")
        variables[metric] = var
    variables_t.done()
    commands_t = t.get_table("commands")
    commands: dict[str, str] = {}
    if commands_t is not None:
        for action in sorted(commands_t.data):
            if action not in UPS_ACTIONS:
                commands_t.fail(action, f"unknown action; actions are: {', '.join(sorted(UPS_ACTIONS))}")
            cmd = commands_t.get_str(action)
            assert cmd is not None
            if not _NUT_VAR_RE.match(cmd):
                commands_t.fail(action, f"must be a NUT instant command like load.off (got {cmd!r})")
            commands[action] = cmd
        commands_t.done()
    t.done()
    return NutSpec(driver, MappingProxyType(variables), MappingProxyType(commands))


def _display(path: Path, base: Path | None) -> str:
    for root in (base, Path.cwd()):
        if root is None:
            continue
        try:
            return path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            continue
    return str(path)


def load_profile(path: str | os.PathLike[str], *, base: str | os.PathLike[str] | None = None,
                 registry: DriverRegistry | None = None) -> Profile:
    """Read and validate one profile file.

    ``base`` is the directory that error messages show paths relative to (the current
    directory when omitted). ``registry`` defaults to the fleet's driver registry.
    """
    p = Path(path)
    file = _display(p, Path(base) if base is not None else None)
    reg = registry or default_registry
    try:
        raw = p.read_bytes()
    except OSError as exc:
        _fail(file, None, f"cannot read: {exc.strerror or exc}")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        _fail(file, None, f"not UTF-8 text: {exc}")
    except tomllib.TOMLDecodeError as exc:
        pos = _TOML_POS_RE.search(str(exc))
        where = f"{file}:{pos.group(1)}:{pos.group(2)}" if pos else file
        err = ProfileError(f"{where}: invalid TOML: {exc}")
        err.file = file  # type: ignore[attr-defined]
        err.key = None  # type: ignore[attr-defined]
        err.line = int(pos.group(1)) if pos else None  # type: ignore[attr-defined]
        raise err from None

    t = _Table(file, data, "")
    name = t.get_str("name")
    assert name is not None
    if not _NAME_RE.match(name):
        t.fail("name", f"must be lowercase letters, digits and '-' (got {name!r})")
    if name != p.stem:
        t.fail("name", f"must equal the file name without .toml ({p.stem!r}), got {name!r}")
    kind = t.get_str("kind")
    if kind not in KINDS:
        t.fail("kind", f"must be one of {', '.join(KINDS)} (got {kind!r})")
    assert kind is not None
    folder_kind = _FOLDER_KIND.get(p.parent.name)
    if folder_kind is not None and folder_kind != kind:
        t.fail("kind", f"is {kind!r} but the file is in {p.parent.name}/, which holds {folder_kind} profiles")
    vendor = t.get_str("vendor")
    model = t.get_str("model")
    description = t.get_str("description")
    sources = t.get_str_list("sources", required=True, nonempty=True)
    match = _read_match(t.get_table("match"))
    # An empty [drivers] table is allowed: a passive device (an unmanaged PDU) that Rackfleet
    # tracks for topology and power budgets only.
    drivers = _read_drivers(t.get_table("drivers", required=True), reg)
    power_t = t.get_table("power", required=True)
    assert power_t is not None
    power = _read_power(power_t, kind)
    sensors = tuple(_read_sensor(s) for s in t.get_tables("sensors"))
    seen: set[str] = set()
    for i, s in enumerate(sensors):
        if s.name in seen:
            _fail(file, f"sensors[{i}].name", f"duplicate sensor name {s.name!r}")
        seen.add(s.name)
    ipmi_t = t.get_table("ipmi")
    ipmi = _read_ipmi(ipmi_t) if ipmi_t is not None else None
    snmp_t = t.get_table("snmp")
    snmp = _read_snmp(snmp_t) if snmp_t is not None else None
    nut_t = t.get_table("nut")
    nut = _read_nut(nut_t) if nut_t is not None else None
    ids: set[str] = set()
    quirks = tuple(_read_quirk(q, ids) for q in t.get_tables("quirks"))
    t.done()

    # Cross-checks: a driver named for a capability needs its settings section.
    used = {d for names in drivers.values() for d in names}
    for driver, section, present in (("ipmi", "ipmi", ipmi), ("snmp", "snmp", snmp), ("nut", "nut", nut)):
        if driver in used and present is None:
            _fail(file, section, f"is required: driver {driver!r} is listed in [drivers]")
    snmp_outlets = "snmp" in drivers.get("outlets", ())
    if snmp is not None and snmp_outlets and snmp.outlets is None and not snmp.commands:
        _fail(file, "snmp.outlets", "is required: [drivers] lists snmp for outlets")
    if match.ipmi_product_ids and match.ipmi_manufacturer_id is None:
        _fail(file, "match.ipmi.product_ids", "needs match.ipmi.manufacturer_id")

    profile = Profile(
        name=name, kind=kind, vendor=vendor or "", model=model or "", description=description or "",
        sources=sources, match=match, drivers=drivers, power=power, sensors=sensors, ipmi=ipmi,
        snmp=snmp, nut=nut, quirks=quirks, boot=boot_quirks(quirks), bmc=bmc_quirks(quirks),
        outlet=outlet_quirks(quirks), path=p,
    )
    # A quirk other fields honour (a unit, an OID map, a missing command) must agree with them.
    for i, q in enumerate(quirks):
        check = KNOWN_QUIRKS[q.id].check
        misfit = check(profile, q.value) if check is not None else None
        if misfit is not None:
            key, message = misfit
            _fail(file, key, f"{message} (quirks[{i}] {q.id})")
    return profile


# --------------------------------------------------------------------------------------------
# The set of profiles
# --------------------------------------------------------------------------------------------


def _key(text: str) -> str:
    """The comparison form of a NetBox name or slug: ``Dell Inc.`` → ``dell-inc``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _oid_key(oid: str) -> str:
    return oid.strip().lstrip(".")


class ProfileSet:
    """All loaded profiles, by name, with the matching rules that pick one for a device."""

    def __init__(self, profiles: Iterable[Profile]) -> None:
        self._by_name: dict[str, Profile] = {}
        for p in profiles:
            other = self._by_name.get(p.name)
            if other is not None:
                raise ProfileError(f"{_where(p)}: name: duplicate profile name {p.name!r} "
                                   f"(also defined in {_where(other)})")
            self._by_name[p.name] = p
        self._check_groups()

    # -- collection protocol
    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[Profile]:
        return iter(self._by_name[n] for n in sorted(self._by_name))

    def __len__(self) -> int:
        return len(self._by_name)

    def __repr__(self) -> str:
        return f"ProfileSet({len(self)} profiles)"

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def of_kind(self, kind: str) -> list[Profile]:
        if kind not in KINDS:
            raise ProfileError(f"unknown kind {kind!r}; kinds are: {', '.join(KINDS)}")
        return [p for p in self if p.kind == kind]

    def get(self, name: str) -> Profile:
        """The profile called ``name``; a ProfileError naming close matches if there is none."""
        try:
            return self._by_name[name]
        except KeyError:
            close = difflib.get_close_matches(name, self.names(), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ProfileError(f"no hardware profile named {name!r}{hint}") from None

    # -- matching
    def match_ipmi(self, manufacturer_id: int, product_id: int | None = None) -> Profile | None:
        """The profile for a BMC's Get Device ID answer.

        A profile listing the product id wins; otherwise the manufacturer's only profile, or
        its preferred one; None when the manufacturer is unknown.
        """
        family = [p for p in self if p.match.ipmi_manufacturer_id == manufacturer_id]
        if product_id is not None:
            for p in family:
                if product_id in p.match.ipmi_product_ids:
                    return p
        return _pick(family)

    def match_sys_object_id(self, oid: str) -> Profile | None:
        """The profile whose sysObjectID prefix is the longest match for ``oid`` (leading dot allowed)."""
        target = _oid_key(oid)
        best: list[Profile] = []
        best_len = -1
        for p in self:
            for prefix in p.match.sys_object_ids:
                if target == prefix or target.startswith(prefix + "."):
                    n = prefix.count(".")
                    if n > best_len:
                        best, best_len = [p], n
                    elif n == best_len and p not in best:
                        best.append(p)
        return _pick(best)

    def for_netbox(self, manufacturer: str | None, device_type: str | None, *,
                   kind: str | None = None) -> tuple[Profile, str | None]:
        """The profile for a NetBox device type, and a warning when it had to fall back.

        Names and slugs compare alike (``PowerEdge R640`` = ``poweredge-r640``). Order: the
        profile listing the device type (and, if given, the manufacturer); else the
        manufacturer's preferred profile; else the generic profile for ``kind``
        (``generic-ipmi`` when ``kind`` is None).
        """
        if kind is not None and kind not in KINDS:
            raise ProfileError(f"unknown kind {kind!r}; kinds are: {', '.join(KINDS)}")
        pool = [p for p in self if kind is None or p.kind == kind]
        mkey = _key(manufacturer) if manufacturer else ""
        dkey = _key(device_type) if device_type else ""

        def made_by(p: Profile) -> bool:
            return mkey in {_key(m) for m in p.match.netbox_manufacturers}

        if dkey:
            hits = [p for p in pool if dkey in {_key(d) for d in p.match.netbox_device_types}
                    and (not mkey or made_by(p))]
            if len(hits) == 1:
                return hits[0], None
        label = f"{manufacturer or '?'} / {device_type or '?'}"
        if mkey:
            chosen = _pick([p for p in pool if made_by(p)])
            if chosen is not None:
                return chosen, (f"no hardware profile for NetBox device type {label}; "
                                f"using {chosen.name!r}, the profile preferred for that manufacturer")
        fallback = FALLBACK_PROFILES[kind or "server"]
        if fallback not in self:
            raise ProfileError(f"no hardware profile for NetBox device type {label}, "
                               f"and the fallback profile {fallback!r} is not loaded")
        return self._by_name[fallback], (f"no hardware profile for NetBox device type {label}; "
                                         f"using the generic profile {fallback!r}")

    # -- set-level validation
    def _check_groups(self) -> None:
        groups: dict[tuple[str, str], list[Profile]] = {}
        pairs: dict[tuple[int, int], Profile] = {}
        device_types: dict[tuple[str, str, str], Profile] = {}
        for p in self:
            m = p.match
            if m.ipmi_manufacturer_id is not None:
                groups.setdefault(("IPMI manufacturer id", str(m.ipmi_manufacturer_id)), []).append(p)
                for prod in m.ipmi_product_ids:
                    other = pairs.setdefault((m.ipmi_manufacturer_id, prod), p)
                    if other is not p:
                        raise ProfileError(
                            f"{_where(p)}: match.ipmi.product_ids: manufacturer {m.ipmi_manufacturer_id} "
                            f"product {prod:#x} is also claimed by {other.name!r} ({_where(other)})")
            for oid in m.sys_object_ids:
                groups.setdefault(("sysObjectID prefix", oid), []).append(p)
            for mfr in {_key(x) for x in m.netbox_manufacturers}:
                groups.setdefault((f"NetBox manufacturer ({p.kind})", mfr), []).append(p)
                for dt in {_key(x) for x in m.netbox_device_types}:
                    other = device_types.setdefault((p.kind, mfr, dt), p)
                    if other is not p:
                        raise ProfileError(
                            f"{_where(p)}: match.netbox.device_types: {dt!r} of {mfr!r} is also claimed "
                            f"by {other.name!r} ({_where(other)})")
        for (what, value), members in groups.items():
            if len(members) < 2:
                continue
            preferred = [p for p in members if p.match.preferred]
            names = ", ".join(p.name for p in members)
            if len(preferred) != 1:
                culprit = preferred[1] if len(preferred) > 1 else members[-1]
                raise ProfileError(
                    f"{_where(culprit)}: match.preferred: {what} {value} is shared by {names}; "
                    f"exactly one of them must set match.preferred = true "
                    f"({len(preferred)} do)")


def _where(p: Profile) -> str:
    return _display(p.path, None) if p.path is not None else p.name


def _pick(candidates: list[Profile]) -> Profile | None:
    if len(candidates) == 1:
        return candidates[0]
    preferred = [p for p in candidates if p.match.preferred]
    return preferred[0] if len(preferred) == 1 else None


# --------------------------------------------------------------------------------------------
# Loading a directory
# --------------------------------------------------------------------------------------------


def default_profiles_dir() -> Path:
    """Where the fleet's profiles live: ``$FLEET_PROFILES``, else the repository's
    ``hardware-profiles/`` (editable installs), else the installed ``<data>/share/rackfleet/hardware-profiles``
    (:mod:`fleet.datafiles`)."""
    env = os.environ.get("FLEET_PROFILES")
    if env:
        return Path(env)
    from fleet.datafiles import data_candidates

    candidates = data_candidates("hardware-profiles")
    for c in candidates:
        if c.is_dir():
            return c
    raise ProfileError("no hardware-profiles directory found; looked in "
                       + ", ".join(str(c) for c in candidates) + " (set FLEET_PROFILES to choose one)")


def _load_dir(directory: Path, registry: DriverRegistry) -> ProfileSet:
    if not directory.is_dir():
        raise ProfileError(f"{directory}: not a directory of hardware profiles")
    files = sorted(f for f in directory.rglob("*.toml") if not any(part.startswith(".") for part in f.parts))
    if not files:
        raise ProfileError(f"{directory}: no hardware profiles (*.toml) found")
    base = directory.resolve().parent
    return ProfileSet(load_profile(f, base=base, registry=registry) for f in files)


@functools.lru_cache(maxsize=8)
def _load_cached(directory: Path) -> ProfileSet:
    return _load_dir(directory, default_registry)


def load_profiles(directory: str | os.PathLike[str] | None = None, *,
                  registry: DriverRegistry | None = None) -> ProfileSet:
    """Load every ``*.toml`` under ``directory`` (default: :func:`default_profiles_dir`).

    Loads of the default registry are cached per directory; :func:`clear_cache` forgets them.
    """
    path = Path(directory) if directory is not None else default_profiles_dir()
    if registry is not None and registry is not default_registry:
        return _load_dir(path, registry)
    return _load_cached(path.resolve())


def clear_cache() -> None:
    """Forget cached loads (after editing profile files in a long-running process)."""
    _load_cached.cache_clear()
