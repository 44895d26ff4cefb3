"""What a Redfish BMC reports: sensors, its event log, and the system's identity, NICs and firmware.

**Sensors**, as the IPMI driver gives them (units ``celsius``, ``rpm``, ``percent``, ``volts``,
``amps``, ``watts``; thresholds ``warning_high``, ``critical_high``, ``non_recoverable_high`` and
``_low``; state from ``Status``: ok, warning, critical, absent, unknown): the chassis' ``Thermal``
(temperatures, fans) and ``Power`` (power draw, voltages, power supplies) and, where present, the
newer ``Sensors`` collection (readings whose names the older resources did not give).

**Event log**: the system's ``LogServices`` (the one named SEL, else the first), else the manager's;
``Target.options["sel_log"]`` names one by ``Id``. Entries become :class:`SelEntry`: numeric entry
``Id``\\ s are the record ids (so a sweep reads incrementally past its ``sel_last``); a log with
other ids is numbered in the order of ``Created``. Cleared with the service's ``ClearLog`` action.

**Inventory**: the system's manufacturer, model and serial (:class:`FruInfo`), its NICs' MACs
(``EthernetInterfaces``) and the firmware versions (``UpdateService/FirmwareInventory``, else the
system's ``BiosVersion`` and the manager's ``FirmwareVersion``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fleet.errors import DriverError, FatalError, Unsupported

from ..base import FruInfo, SelEntry, SensorReading
from .client import Call
from .resources import all_chassis, chassis_path, link, manager_path, members

__all__ = ["NicInfo", "clear_log", "firmware", "fru", "nics", "read_log", "sensors"]

_HEALTH = {"OK": "ok", "Warning": "warning", "Critical": "critical"}
_SEVERITY = {"OK": "info", "Warning": "warning", "Critical": "critical"}
#: Redfish threshold property suffixes (Thermal/Power) -> Rackfleet threshold names.
_LEGACY_THRESHOLDS = {
    "UpperThresholdNonCritical": "warning_high", "UpperThresholdCritical": "critical_high",
    "UpperThresholdFatal": "non_recoverable_high", "LowerThresholdNonCritical": "warning_low",
    "LowerThresholdCritical": "critical_low", "LowerThresholdFatal": "non_recoverable_low",
}
_SENSOR_THRESHOLDS = {
    "UpperCaution": "warning_high", "UpperCritical": "critical_high", "UpperFatal": "non_recoverable_high",
    "LowerCaution": "warning_low", "LowerCritical": "critical_low", "LowerFatal": "non_recoverable_low",
}
_UNITS = {"Cel": "celsius", "RPM": "rpm", "%": "percent", "Percent": "percent", "V": "volts", "A": "amps",
          "W": "watts"}
_KINDS = {"Temperature": "temperature", "Rotational": "fan", "Voltage": "voltage", "Current": "current",
          "Power": "power"}
_KIND_BY_UNIT = {"celsius": "temperature", "rpm": "fan", "volts": "voltage", "amps": "current", "watts": "power"}


@dataclass(frozen=True)
class NicInfo:
    """One of the system's network interfaces as the BMC reports it (MACs lowercase)."""

    id: str
    name: str
    mac: str
    permanent_mac: str = ""
    state: str = ""


# -- sensors -------------------------------------------------------------------------------------

def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _state(item: dict[str, Any], value: float | None) -> str:
    status = item.get("Status") if isinstance(item.get("Status"), dict) else {}
    if status.get("State") == "Absent":
        return "absent"
    health = _HEALTH.get(str(status.get("Health")))
    if health is not None:
        return health
    return "unknown" if value is None else "ok"


def _legacy_thresholds(item: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, name in _LEGACY_THRESHOLDS.items():
        value = _number(item.get(key))
        if value is not None:
            out[name] = value
    return out


def _name(item: dict[str, Any], fallback: str) -> str:
    return str(item.get("Name") or item.get("FanName") or item.get("MemberId") or fallback)


def _thermal(doc: dict[str, Any]) -> list[SensorReading]:
    out = []
    for t in doc.get("Temperatures") or []:
        if isinstance(t, dict):
            value = _number(t.get("ReadingCelsius"))
            out.append(SensorReading(_name(t, "Temperature"), "temperature", value, "celsius", _state(t, value),
                                     _legacy_thresholds(t)))
    for f in doc.get("Fans") or []:
        if isinstance(f, dict):
            value = _number(f.get("Reading", f.get("ReadingRPM")))
            unit = _UNITS.get(str(f.get("ReadingUnits") or "RPM"), "rpm")
            out.append(SensorReading(_name(f, "Fan"), "fan", value, unit, _state(f, value), _legacy_thresholds(f)))
    return out


def _power(doc: dict[str, Any]) -> list[SensorReading]:
    out = []
    for p in doc.get("PowerControl") or []:
        if isinstance(p, dict):
            value = _number(p.get("PowerConsumedWatts"))
            out.append(SensorReading(_name(p, "Power Consumption"), "power", value, "watts", _state(p, value)))
    for v in doc.get("Voltages") or []:
        if isinstance(v, dict):
            value = _number(v.get("ReadingVolts"))
            out.append(SensorReading(_name(v, "Voltage"), "voltage", value, "volts", _state(v, value),
                                     _legacy_thresholds(v)))
    for s in doc.get("PowerSupplies") or []:
        if isinstance(s, dict):
            value = _number(s.get("LastPowerOutputWatts", s.get("PowerOutputWatts")))
            out.append(SensorReading(_name(s, "Power Supply"), "power", value, "watts", _state(s, value)))
    return out


def _sensor(doc: dict[str, Any]) -> SensorReading:
    value = _number(doc.get("Reading"))
    unit = _UNITS.get(str(doc.get("ReadingUnits") or ""), str(doc.get("ReadingUnits") or ""))
    kind = _KINDS.get(str(doc.get("ReadingType") or "")) or _KIND_BY_UNIT.get(unit, "other")
    thresholds = {}
    for key, name in _SENSOR_THRESHOLDS.items():
        t = (doc.get("Thresholds") or {}).get(key)
        if isinstance(t, dict) and _number(t.get("Reading")) is not None:
            thresholds[name] = float(t["Reading"])
    return SensorReading(_name(doc, "Sensor"), kind, value, unit, _state(doc, value), thresholds)


async def sensors(call: Call, system: str) -> list[SensorReading]:
    """The readings of every chassis the system is in."""
    out: list[SensorReading] = []
    for chassis in await all_chassis(call, system):
        doc = await call.get(chassis)
        for name, mapper in (("Thermal", _thermal), ("Power", _power)):
            where = link(doc, name)
            if where is not None:
                out.extend(mapper(await call.get(where)))
        where = link(doc, "Sensors")
        if where is not None:
            seen = {r.name for r in out}
            out.extend(r for r in map(_sensor, await members(call, where)) if r.name not in seen)
    return out


# -- event log -----------------------------------------------------------------------------------

async def _services(call: Call, owner: str) -> list[dict[str, Any]]:
    doc = await call.get(owner)
    where = link(doc, "LogServices")
    return await members(call, where) if where else []


def _pick(services: list[dict[str, Any]], wanted: str | None) -> dict[str, Any] | None:
    if wanted:
        return next((s for s in services if s.get("Id") == wanted), None)
    for s in services:
        text = f"{s.get('Id', '')} {s.get('Name', '')}".upper()
        if "SEL" in text.split() or str(s.get("Id", "")).upper() == "SEL" or s.get("LogEntryType") == "SEL":
            return s
    return services[0] if services else None


async def log_service(call: Call, system: str) -> dict[str, Any]:
    """The LogService that is this system's SEL (its path cached per BMC)."""
    wanted = call.target.options.get("sel_log")
    key = f"sel:{system}:{wanted or ''}"
    cached = call.bmc.links.get(key)
    if cached:
        return await call.get(cached)
    chosen = _pick(await _services(call, system), wanted)
    if chosen is None:
        try:
            manager = await manager_path(call, system)
        except Unsupported:
            manager = None
        chosen = _pick(await _services(call, manager), wanted) if manager else None
    if chosen is None or not isinstance(chosen.get("@odata.id"), str):
        raise call.error(Unsupported, "the BMC has no LogServices for this system" +
                         (f" named {wanted!r}" if wanted else ""))
    call.bmc.links[key] = chosen["@odata.id"]
    return chosen


def _created(entry: dict[str, Any]) -> datetime | None:
    text = entry.get("Created")
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def entries_to_sel(entries: list[dict[str, Any]]) -> list[SelEntry]:
    """LogEntry objects as SelEntries, in record-id order."""
    numeric = all(str(e.get("Id", "")).isdigit() for e in entries)
    if not numeric:
        entries = sorted(entries, key=lambda e: (_created(e) is None, _created(e) or datetime.min))
    out = []
    for n, e in enumerate(entries, start=1):
        record_id = int(e["Id"]) if numeric else n
        sensor = e.get("SensorType") or e.get("EntryCode") or ""
        out.append(SelEntry(record_id, _created(e), str(sensor), str(e.get("Message") or ""),
                            _SEVERITY.get(str(e.get("Severity")), "info"), str(e.get("MessageId") or "")))
    return sorted(out, key=lambda s: s.record_id)


async def read_log(call: Call, system: str) -> list[SelEntry]:
    service = await log_service(call, system)
    where = link(service, "Entries")
    if where is None:
        raise call.error(FatalError, f"LogService {service.get('@odata.id')} has no Entries")
    return entries_to_sel(await members(call, where))


async def clear_log(call: Call, system: str) -> None:
    service = await log_service(call, system)
    action = (service.get("Actions") or {}).get("#LogService.ClearLog")
    if not isinstance(action, dict) or not isinstance(action.get("target"), str):
        raise call.error(Unsupported, f"LogService {service.get('@odata.id')} has no ClearLog action")
    await call.action(action["target"], {})


# -- inventory -----------------------------------------------------------------------------------

async def fru(call: Call, system: str) -> FruInfo:
    doc = await call.get(system)
    board = ""
    with contextlib.suppress(Unsupported, FatalError):
        board = str((await call.get(await chassis_path(call, system))).get("SerialNumber") or "")
    extra = {k: str(doc[k]) for k in ("SKU", "UUID", "BiosVersion", "Name") if doc.get(k)}
    return FruInfo(manufacturer=str(doc.get("Manufacturer") or ""), product=str(doc.get("Model") or ""),
                   serial=str(doc.get("SerialNumber") or ""), part_number=str(doc.get("PartNumber") or ""),
                   asset_tag=str(doc.get("AssetTag") or ""), board_serial=board, extra=extra)


async def nics(call: Call, system: str) -> list[NicInfo]:
    where = link(await call.get(system), "EthernetInterfaces")
    if where is None:
        return []
    out = []
    for nic in await members(call, where):
        mac = str(nic.get("MACAddress") or nic.get("PermanentMACAddress") or "").lower()
        status = nic.get("Status") if isinstance(nic.get("Status"), dict) else {}
        out.append(NicInfo(str(nic.get("Id") or ""), str(nic.get("Name") or ""), mac,
                           str(nic.get("PermanentMACAddress") or "").lower(), str(status.get("State") or "")))
    return out


async def firmware(call: Call, system: str) -> dict[str, str]:
    """Component name -> firmware version."""
    out: dict[str, str] = {}
    update = link(await call.root(), "UpdateService")
    if update is not None:
        try:
            where = link(await call.get(update), "FirmwareInventory")
            for item in await members(call, where) if where else []:
                if item.get("Version"):
                    out[str(item.get("Name") or item.get("Id"))] = str(item["Version"])
        except DriverError as exc:  # sushy-tools links an inventory it does not serve
            if getattr(exc, "http_status", None) != 404:
                raise
    doc = await call.get(system)
    if doc.get("BiosVersion") and "BIOS" not in out:
        out["BIOS"] = str(doc["BiosVersion"])
    try:
        manager = await call.get(await manager_path(call, system))
    except Unsupported:
        manager = {}
    if manager.get("FirmwareVersion") and "BMC" not in out:
        out["BMC"] = str(manager["FirmwareVersion"])
    return out
