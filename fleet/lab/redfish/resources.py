"""The Redfish resources of one lab server, built from its :class:`~fleet.lab.bmcmodel.BmcModel`.

Pure functions of the model and the clock: nothing here is stored, so what IPMI changes (power,
boot flags, faults, SEL) Redfish shows at the next GET. A lab server's tree uses its name as the
id of its System, Chassis and Manager (``/redfish/v1/Systems/lab1-r01-s01``), so several servers
can share one service root. Boot overrides map onto the IPMI boot flags (parameter 5); SEL records
become ``LogEntry`` resources; SDR sensors become ``Thermal``/``Power`` members and ``Sensor``
resources, with ``Status.Health`` from the sensor's thresholds.
"""

from __future__ import annotations

import datetime
import re
import struct
import uuid
from typing import Any

from fleet.drivers.ipmi.codes import (
    BOOT_DEVICE_SELECTORS,
    BOOT_FLAG_EFI,
    BOOT_FLAG_PERSISTENT,
    BOOT_FLAG_VALID,
    EVENT_DEASSERTION,
    EVENT_TYPE_THRESHOLD,
    MEMORY_UNCORRECTABLE_ECC,
    SEL_OEM_NON_TIMESTAMPED,
    SensorType,
)

from ..bmcmodel import SEL_CAPACITY, BmcModel
from ..bmcspec import SensorDef

__all__ = [
    "BOOT_TARGETS", "RESET_TYPES", "SEL_ID", "boot_flags_for", "boot_state", "chassis", "log_entries",
    "log_entry", "log_service", "manager", "power", "sensor", "sensor_id", "sensors", "system", "thermal",
]

V1 = "/redfish/v1"
SEL_ID = "SEL"
#: Redfish boot targets the lab offers, and the IPMI boot device each sets (UefiHttp: network boot).
BOOT_TARGETS: dict[str, str] = {"None": "none", "Pxe": "pxe", "Hdd": "disk", "Cd": "cdrom", "BiosSetup": "bios",
                                "Diags": "diag", "Floppy": "floppy", "UefiHttp": "pxe"}
_TARGET_OF_DEVICE = {v: k for k, v in reversed(BOOT_TARGETS.items())}  # pxe -> Pxe, not UefiHttp
_DEVICE_NAMES = {v: k for k, v in BOOT_DEVICE_SELECTORS.items()}
#: ComputerSystem.Reset types and the BmcModel power action each is (None: accepted, does nothing).
RESET_TYPES: dict[str, str | None] = {
    "On": "on", "ForceOn": "on", "ForceOff": "off", "GracefulShutdown": "soft", "GracefulRestart": "reset",
    "ForceRestart": "reset", "PowerCycle": "cycle", "PushPowerButton": "button", "Nmi": None,
}
_SENSOR_TYPES = {SensorType.TEMPERATURE: "Temperature", SensorType.VOLTAGE: "Voltage", SensorType.CURRENT: "Current",
                 SensorType.FAN: "Fan", SensorType.MEMORY: "Memory", SensorType.OTHER_UNITS: "Other Units-based Sensor"}
#: Threshold event offsets (IPMI table 42-2), named as Redfish LogEntry EntryCode names them.
_THRESHOLD_CODES = ("Lower Non-critical - going low", "Lower Non-critical - going high",
                    "Lower Critical - going low", "Lower Critical - going high",
                    "Lower Non-recoverable - going low", "Lower Non-recoverable - going high",
                    "Upper Non-critical - going low", "Upper Non-critical - going high",
                    "Upper Critical - going low", "Upper Critical - going high",
                    "Upper Non-recoverable - going low", "Upper Non-recoverable - going high")
_READING_TYPES = {"temperature": ("Temperature", "Cel"), "fan": ("Rotational", "RPM"), "power": ("Power", "W"),
                  "voltage": ("Voltage", "V"), "current": ("Current", "A")}
_THRESHOLD_NAMES = {"lnc": "LowerCaution", "lc": "LowerCritical", "lnr": "LowerFatal",
                    "unc": "UpperCaution", "uc": "UpperCritical", "unr": "UpperFatal"}


def _link(path: str) -> dict[str, str]:
    return {"@odata.id": path}


def _uuid(model: BmcModel) -> str:
    return str(uuid.UUID(bytes=model.spec.guid)) if len(model.spec.guid) == 16 else str(
        uuid.uuid5(uuid.NAMESPACE_DNS, model.spec.name))


def _mac(model: BmcModel, index: int) -> str:
    macs = getattr(model.spec, "macs", ())
    if index < len(macs):
        return macs[index]
    seed = uuid.uuid5(uuid.NAMESPACE_DNS, f"{model.spec.name}/{index}").bytes
    return "02:" + ":".join(f"{b:02x}" for b in seed[:5])


# -- boot --------------------------------------------------------------------------------------

def boot_state(model: BmcModel, http_flags: bytes | None = None) -> dict[str, str]:
    """The three override properties the IPMI boot flags give (``http_flags``: the flags a UefiHttp
    request wrote; while they stand, the network boot shows as UefiHttp)."""
    flags = model.boot_flags
    valid = bool(flags[0] & BOOT_FLAG_VALID)
    device = _DEVICE_NAMES.get((flags[1] >> 2) & 0x0F, "none")
    target = "UefiHttp" if http_flags is not None and flags == http_flags else _TARGET_OF_DEVICE.get(device, "None")
    return {"BootSourceOverrideEnabled": "Disabled" if not valid else
            "Continuous" if flags[0] & BOOT_FLAG_PERSISTENT else "Once",
            "BootSourceOverrideTarget": target if valid else "None",
            "BootSourceOverrideMode": "UEFI" if flags[0] & BOOT_FLAG_EFI else "Legacy"}


def boot_flags_for(model: BmcModel, enabled: str, target: str, mode: str) -> bytes:
    """Boot flags (parameter 5) for an override; the bytes after data 2 are kept."""
    d1 = (BOOT_FLAG_EFI if mode == "UEFI" else 0)
    if enabled != "Disabled" and target != "None":
        d1 |= BOOT_FLAG_VALID | (BOOT_FLAG_PERSISTENT if enabled == "Continuous" else 0)
    device = BOOT_DEVICE_SELECTORS[BOOT_TARGETS[target]] if d1 & BOOT_FLAG_VALID else 0
    return bytes([d1, device << 2]) + model.boot_flags[2:]


# -- systems -----------------------------------------------------------------------------------

def system(model: BmcModel, now: float, *, reset_types: tuple[str, ...], boot_targets: tuple[str, ...],
           http_flags: bytes | None = None) -> dict[str, Any]:
    name = model.spec.name
    path = f"{V1}/Systems/{name}"
    on = model.powered(now)
    fru = model.spec.fru
    return {
        "@odata.id": path, "@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem", "Id": name, "Name": name,
        "SystemType": "Physical", "Manufacturer": fru.get("manufacturer", "Rackfleet"),
        "Model": fru.get("product", "Lab Server"), "SerialNumber": model.spec.serial,
        "PartNumber": fru.get("part_number", "rackfleet-lab"), "AssetTag": fru.get("asset_tag", name),
        "UUID": _uuid(model), "HostName": name, "PowerState": "On" if on else "Off",
        "BiosVersion": "LAB-1.0",
        "Status": {"State": "Enabled" if on else "StandbyOffline", "Health": _worst(model, now)},
        "Boot": {**boot_state(model, http_flags),
                 "BootSourceOverrideEnabled@Redfish.AllowableValues": ["Disabled", "Once", "Continuous"],
                 "BootSourceOverrideTarget@Redfish.AllowableValues": list(boot_targets),
                 "BootSourceOverrideMode@Redfish.AllowableValues": ["UEFI", "Legacy"]},
        "ProcessorSummary": {"Count": 2, "Model": "Lab CPU", "Status": {"State": "Enabled", "Health": "OK"}},
        "MemorySummary": {"TotalSystemMemoryGiB": 256, "Status": {"State": "Enabled", "Health": "OK"}},
        "EthernetInterfaces": _link(f"{path}/EthernetInterfaces"),
        "Links": {"Chassis": [_link(f"{V1}/Chassis/{name}")], "ManagedBy": [_link(f"{V1}/Managers/{name}")]},
        "Actions": {"#ComputerSystem.Reset": {"target": f"{path}/Actions/ComputerSystem.Reset",
                                              "ResetType@Redfish.AllowableValues": list(reset_types)}},
    }


def ethernet_interfaces(model: BmcModel) -> list[dict[str, Any]]:
    path = f"{V1}/Systems/{model.spec.name}/EthernetInterfaces"
    count = max(1, len(getattr(model.spec, "macs", ())))
    return [{"@odata.id": f"{path}/eth{i}", "@odata.type": "#EthernetInterface.v1_12_0.EthernetInterface",
             "Id": f"eth{i}", "Name": f"eth{i}", "MACAddress": _mac(model, i), "PermanentMACAddress": _mac(model, i),
             "InterfaceEnabled": True, "LinkStatus": "LinkUp", "SpeedMbps": 25000,
             "Status": {"State": "Enabled", "Health": "OK"}} for i in range(count)]


# -- sensors -----------------------------------------------------------------------------------

def sensor_id(sensor: SensorDef) -> str:
    """A Redfish id for a sensor: its name without what an id may not hold (``CPU1 Temp`` -> ``CPU1Temp``)."""
    return re.sub(r"[^A-Za-z0-9_]", "", sensor.name) or f"Sensor{sensor.number}"


def _health(sensor: SensorDef, raw: int | None) -> str:
    if raw is None:
        return "OK"
    bits = sensor.status_bits(raw)
    if bits & 0b110110:  # lc, lnr, uc, unr
        return "Critical"
    return "Warning" if bits & 0b001001 else "OK"


def _worst(model: BmcModel, now: float) -> str:
    order = {"OK": 0, "Warning": 1, "Critical": 2}
    worst = "Critical" if model.ecc_count else "OK"
    for s in model.sensors.sensors:
        if not s.discrete:
            h = _health(s, model.sensor_raw(s, now))
            worst = h if order[h] > order[worst] else worst
    return worst


def _value(sensor: SensorDef, raw: int | None) -> float | None:
    return None if raw is None else round(sensor.to_value(raw), 3)


def _status(sensor: SensorDef, raw: int | None) -> dict[str, str]:
    return {"State": "Enabled" if raw is not None else "UnavailableOffline", "Health": _health(sensor, raw)}


def _thresholds(sensor: SensorDef, prefix: str, suffix: str = "") -> dict[str, float]:
    names = {"lnc": "LowerThresholdNonCritical", "lc": "LowerThresholdCritical", "lnr": "LowerThresholdFatal",
             "unc": "UpperThresholdNonCritical", "uc": "UpperThresholdCritical", "unr": "UpperThresholdFatal"}
    return {prefix + names[k] + suffix: round(sensor.to_value(v), 3) for k, v in sensor.thresholds.items()}


def thermal(model: BmcModel, now: float) -> dict[str, Any]:
    path = f"{V1}/Chassis/{model.spec.name}/Thermal"
    temps, fans = [], []
    for s in model.sensors.sensors:
        raw = model.sensor_raw(s, now)
        common = {"Name": s.name, "SensorNumber": s.number, "Status": _status(s, raw), **_thresholds(s, "")}
        if s.kind == "temperature":
            i = len(temps)
            temps.append({"@odata.id": f"{path}#/Temperatures/{i}", "MemberId": str(i), **common,
                          "ReadingCelsius": _value(s, raw), "PhysicalContext": "CPU" if "CPU" in s.name else "Intake"})
        elif s.kind == "fan":
            i = len(fans)
            fans.append({"@odata.id": f"{path}#/Fans/{i}", "MemberId": str(i), **common, "Reading": _value(s, raw),
                         "ReadingUnits": "RPM", "PhysicalContext": "SystemBoard"})
    return {"@odata.id": path, "@odata.type": "#Thermal.v1_7_0.Thermal", "Id": "Thermal", "Name": "Thermal",
            "Temperatures": temps, "Fans": fans}


def power(model: BmcModel, now: float) -> dict[str, Any]:
    path = f"{V1}/Chassis/{model.spec.name}/Power"
    controls, supplies, volts = [], [], []
    for s in model.sensors.sensors:
        raw = model.sensor_raw(s, now)
        if s.kind == "power":
            i = len(supplies)
            watts = _value(s, raw)
            controls.append({"@odata.id": f"{path}#/PowerControl/{i}", "MemberId": str(i), "Name": s.name,
                             "PowerConsumedWatts": watts, "PowerCapacityWatts": 800,
                             "Status": _status(s, raw)})
            supplies.append({"@odata.id": f"{path}#/PowerSupplies/{i}", "MemberId": str(i),
                             "Name": s.name.replace(" Power", ""), "PowerInputWatts": watts,
                             "PowerCapacityWatts": 800, "LineInputVoltage": 230,
                             "Status": {"State": "Enabled", "Health": _health(s, raw)}})
        elif s.kind == "voltage":
            i = len(volts)
            volts.append({"@odata.id": f"{path}#/Voltages/{i}", "MemberId": str(i), "Name": s.name,
                          "SensorNumber": s.number, "ReadingVolts": _value(s, raw), "Status": _status(s, raw),
                          **_thresholds(s, "")})
    return {"@odata.id": path, "@odata.type": "#Power.v1_7_1.Power", "Id": "Power", "Name": "Power",
            "PowerControl": controls, "PowerSupplies": supplies, "Voltages": volts}


def sensors(model: BmcModel) -> list[SensorDef]:
    """The sensors that are ``Sensor`` resources (the analog ones)."""
    return [s for s in model.sensors.sensors if s.kind in _READING_TYPES]


def sensor(model: BmcModel, s: SensorDef, now: float) -> dict[str, Any]:
    raw = model.sensor_raw(s, now)
    sid = sensor_id(s)
    reading_type, units = _READING_TYPES[s.kind]
    return {"@odata.id": f"{V1}/Chassis/{model.spec.name}/Sensors/{sid}", "@odata.type": "#Sensor.v1_7_0.Sensor",
            "Id": sid, "Name": s.name, "ReadingType": reading_type, "ReadingUnits": units,
            "Reading": _value(s, raw), "Status": _status(s, raw),
            "Thresholds": {_THRESHOLD_NAMES[k]: {"Reading": round(s.to_value(v), 3)} for k, v in s.thresholds.items()}}


# -- chassis and managers ----------------------------------------------------------------------

def chassis(model: BmcModel, now: float) -> dict[str, Any]:
    name = model.spec.name
    path = f"{V1}/Chassis/{name}"
    fru = model.spec.fru
    return {
        "@odata.id": path, "@odata.type": "#Chassis.v1_23_0.Chassis", "Id": name, "Name": name,
        "ChassisType": "RackMount", "Manufacturer": fru.get("manufacturer", "Rackfleet"),
        "Model": fru.get("chassis_part", "RF-LAB-1U"), "SerialNumber": fru.get("chassis_serial", model.spec.serial),
        "PartNumber": fru.get("chassis_part", "RF-LAB-1U"), "PowerState": "On" if model.powered(now) else "Off",
        "Status": {"State": "Enabled", "Health": _worst(model, now)},
        "Thermal": _link(f"{path}/Thermal"), "Power": _link(f"{path}/Power"), "Sensors": _link(f"{path}/Sensors"),
        "Links": {"ComputerSystems": [_link(f"{V1}/Systems/{name}")], "ManagedBy": [_link(f"{V1}/Managers/{name}")]},
    }


def manager(model: BmcModel, now: float) -> dict[str, Any]:
    name = model.spec.name
    path = f"{V1}/Managers/{name}"
    return {
        "@odata.id": path, "@odata.type": "#Manager.v1_19_0.Manager", "Id": name, "Name": f"{name} BMC",
        "ManagerType": "BMC", "Manufacturer": "Rackfleet", "Model": "Lab BMC", "FirmwareVersion": "lab-1.0",
        "UUID": _uuid(model), "PowerState": "On", "DateTime": _iso(model.sel_clock()),
        "Status": {"State": "Enabled", "Health": "OK"}, "LogServices": _link(f"{path}/LogServices"),
        "Links": {"ManagerForServers": [_link(f"{V1}/Systems/{name}")],
                  "ManagerForChassis": [_link(f"{V1}/Chassis/{name}")]},
        "Actions": {"#Manager.Reset": {"target": f"{path}/Actions/Manager.Reset",
                                       "ResetType@Redfish.AllowableValues": ["GracefulRestart", "ForceRestart"]}},
    }


# -- the SEL as a LogService -------------------------------------------------------------------

def _iso(stamp: int) -> str:
    return datetime.datetime.fromtimestamp(stamp, datetime.UTC).isoformat(timespec="seconds")


def log_service(model: BmcModel) -> dict[str, Any]:
    path = f"{V1}/Managers/{model.spec.name}/LogServices/{SEL_ID}"
    return {"@odata.id": path, "@odata.type": "#LogService.v1_5_0.LogService", "Id": SEL_ID,
            "Name": "System Event Log", "LogEntryType": "SEL", "MaxNumberOfRecords": SEL_CAPACITY,
            "OverWritePolicy": "NeverOverWrites", "ServiceEnabled": True, "DateTime": _iso(model.sel_clock()),
            "Status": {"State": "Enabled", "Health": "Warning" if model.sel_overflow else "OK"},
            "Entries": _link(f"{path}/Entries"),
            "Actions": {"#LogService.ClearLog": {"target": f"{path}/Actions/LogService.ClearLog"}}}


def log_entries(model: BmcModel) -> list[dict[str, Any]]:
    return [log_entry(model, record) for record in model.sel]


def log_entry(model: BmcModel, record: bytes) -> dict[str, Any]:
    """One SEL record (16 bytes, as the model stores it) as a ``LogEntry``."""
    rid, rtype = struct.unpack_from("<HB", record)
    path = f"{V1}/Managers/{model.spec.name}/LogServices/{SEL_ID}/Entries/{rid}"
    entry: dict[str, Any] = {"@odata.id": path, "@odata.type": "#LogEntry.v1_15_0.LogEntry", "Id": str(rid),
                             "Name": f"SEL entry {rid}", "EntryType": "SEL"}
    if rtype >= SEL_OEM_NON_TIMESTAMPED:
        return {**entry, "Severity": "OK", "Message": f"OEM record type 0x{rtype:02x}: {record[3:].hex()}"}
    (stamp,) = struct.unpack_from("<I", record, 3)
    generator, sensor_type, number, direction, d1, d2, d3 = struct.unpack_from("<HxBBBBBB", record, 7)
    sensor = next((s for s in model.sensors.sensors if s.number == number), None)
    deassert = bool(direction & EVENT_DEASSERTION)
    offset = d1 & 0x0F
    if (direction & 0x7F) == EVENT_TYPE_THRESHOLD and offset < len(_THRESHOLD_CODES):
        code = _THRESHOLD_CODES[offset]
        severity = "OK" if deassert else "Critical" if offset >= 2 and offset not in (6, 7) else "Warning"
        what = code
        if sensor is not None and d1 & 0x50 == 0x50:  # trigger reading and threshold in data 2 and 3
            what += f": reading {sensor.to_value(d2):g}, threshold {sensor.to_value(d3):g}"
    elif sensor_type == SensorType.MEMORY and offset == MEMORY_UNCORRECTABLE_ECC:
        code, severity = ("Deassert", "OK") if deassert else ("Assert", "Critical")
        what = "Uncorrectable ECC" + (f" on DIMM {d3}" if d1 & 0x30 == 0x30 else "")
    else:
        code, severity = ("Deassert" if deassert else "Assert"), "OK"
        what = f"event offset {offset}"
    name = sensor.name if sensor is not None else f"sensor 0x{number:02x}"
    return {**entry, "Created": _iso(stamp), "Severity": severity, "EntryCode": code,
            "SensorType": _SENSOR_TYPES.get(sensor_type, "Other Units-based Sensor"), "SensorNumber": number,
            "GeneratorId": f"0x{generator:04X}",
            "Message": f"{name}: {what}{' (deasserted)' if deassert else ''}"}
