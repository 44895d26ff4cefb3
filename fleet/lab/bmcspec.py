"""What a simulated BMC is before it runs: its spec, its sensors and their SDR, its FRU image, its identity.

The spec of one BMC (a JSON object, see ``docs/lab.md``) becomes a :class:`BmcSpec` through
:func:`parse_spec`, which refuses unknown keys and non-loopback addresses. A :class:`SensorSet` (the
sensors of a model and its SDR repository) is built once and shared by every BMC that has those
sensors; :func:`build_fru` makes the FRU image. The running BMC is :class:`fleet.lab.bmc.Bmc`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
import struct
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from fleet.drivers.ipmi.codes import (
    DEVICE_SUPPORT_CHASSIS,
    DEVICE_SUPPORT_FRU,
    DEVICE_SUPPORT_SDR_REPOSITORY,
    DEVICE_SUPPORT_SEL,
    DEVICE_SUPPORT_SENSOR,
    EVENT_DEASSERTION,
    EVENT_TYPE_SENSOR_SPECIFIC,
    EVENT_TYPE_THRESHOLD,
    EVM_REV,
    RECORD_VERSION,
    SDR_COMPACT_SENSOR,
    SDR_FULL_SENSOR,
    SDR_MC_DEVICE_LOCATOR,
    THRESHOLDS,
    SensorType,
    SensorUnit,
)
from fleet.errors import ValidationError

__all__ = [
    "DEVICE_SUPPORT",
    "FIRMWARE",
    "FRU_FIELDS",
    "MANUFACTURER_ID",
    "PRODUCT_ID",
    "SENSOR_PROFILES",
    "BmcSpec",
    "SensorDef",
    "SensorSet",
    "build_fru",
    "parse_sensors",
    "parse_spec",
    "sensor_set",
]

#: RFC 5612: the IANA enterprise number reserved for documentation (hardware-profiles/servers/rackfleet-lab.toml).
MANUFACTURER_ID = 32473
PRODUCT_ID = 0x0001
FIRMWARE = (1, 0x00)  # 1.00 (minor in BCD)
#: Get Device ID "additional device support" (and the MC Device Locator's capabilities): chassis,
#: FRU inventory, SEL, SDR repository, sensor device.
DEVICE_SUPPORT = (DEVICE_SUPPORT_CHASSIS | DEVICE_SUPPORT_FRU | DEVICE_SUPPORT_SEL | DEVICE_SUPPORT_SDR_REPOSITORY
                  | DEVICE_SUPPORT_SENSOR)

#: Sensor type and unit code for each kind.
_KINDS: dict[str, tuple[int, int]] = {
    "temperature": (SensorType.TEMPERATURE, SensorUnit.DEGREES_C),
    "voltage": (SensorType.VOLTAGE, SensorUnit.VOLTS),
    "current": (SensorType.CURRENT, SensorUnit.AMPS),
    "fan": (SensorType.FAN, SensorUnit.RPM),
    "power": (SensorType.OTHER_UNITS, SensorUnit.WATTS),
    "memory": (SensorType.MEMORY, SensorUnit.UNSPECIFIED),  # discrete: sensor-specific offsets
}


# ---------------------------------------------------------------------------------------------
# Sensors and the SDR
# ---------------------------------------------------------------------------------------------


def _signed4(value: int) -> int:
    return value & 0x0F


@dataclasses.dataclass(frozen=True, slots=True)
class SensorDef:
    """One sensor as its SDR describes it, plus how its simulated reading moves.

    The reading in units is ``(m * raw + b * 10**b_exp) * 10**r_exp`` (linear). ``nominal`` is the
    typical reading in units, ``jitter`` the amplitude of its slow drift (0 = constant), ``when_off``
    what it reads while the server is off: ``None`` for "reading unavailable", else a value in units.
    Thresholds are raw bytes keyed ``lnc lc lnr unc uc unr``.
    """

    number: int
    name: str
    kind: str
    sensor_type: int
    unit_code: int
    nominal: float
    jitter: float = 0.0
    when_off: float | None = None
    m: int = 1
    b: int = 0
    b_exp: int = 0
    r_exp: int = 0
    entity_id: int = 0x07
    entity_instance: int = 1
    thresholds: Mapping[str, int] = dataclasses.field(default_factory=dict)
    period: float = 90.0

    @property
    def discrete(self) -> bool:
        return self.kind == "memory"

    def to_value(self, raw: int) -> float:
        return (self.m * raw + self.b * 10.0 ** self.b_exp) * 10.0 ** self.r_exp

    def to_raw(self, value: float) -> int:
        raw = round((value / 10.0 ** self.r_exp - self.b * 10.0 ** self.b_exp) / self.m)
        return min(255, max(0, raw))

    def reading(self, now: float, phase: float, powered: bool) -> int | None:
        """The raw reading at ``now`` (monotonic seconds), or None when unavailable."""
        if not powered and self.when_off != self.nominal:
            return None if self.when_off is None else self.to_raw(self.when_off)
        if not self.jitter:
            return self.to_raw(self.nominal)
        wave = math.sin(2 * math.pi * now / self.period + phase) + 0.3 * math.sin(now / 7.3 + 2 * phase)
        return self.to_raw(self.nominal + self.jitter * wave / 1.3)

    def status_bits(self, raw: int) -> int:
        """Threshold comparison status (Get Sensor Reading byte 3) for a raw reading."""
        t = self.thresholds
        bits = 0
        for i, key in enumerate(("lnc", "lc", "lnr")):
            if key in t and raw <= t[key]:
                bits |= 1 << i
        for i, key in enumerate(("unc", "uc", "unr")):
            if key in t and raw >= t[key]:
                bits |= 1 << (i + 3)
        return bits

    def sdr_body(self) -> tuple[int, bytes]:
        """(record type, record body) for this sensor: a Full or a Compact Sensor Record."""
        name = self.name.encode("latin-1")[:16]
        if self.discrete:
            body = bytes([
                0x20, 0x00, self.number, self.entity_id, self.entity_instance,
                0x63, 0x40,                     # init: scanning + events; capabilities: auto re-arm
                self.sensor_type, EVENT_TYPE_SENSOR_SPECIFIC,
                0x3F, 0x00, 0x00, 0x00, 0x3F, 0x00,  # assertion, deassertion, reading masks: offsets 0-5
                0x00, 0x00, 0x00,               # units: none
                0x01, 0x00, 0x00, 0x00,         # record sharing: one sensor; no hysteresis
                0x00, 0x00, 0x00, 0x00,         # reserved, OEM
                0xC0 | len(name),
            ]) + name
            return SDR_COMPACT_SENSOR, body
        mask = 0
        for i, key in enumerate(THRESHOLDS):
            if key in self.thresholds:
                mask |= 1 << i
        # Assertion events: lower thresholds going low, upper ones going high; reading masks say which
        # comparison bits Get Sensor Reading returns.
        assert_events = 0
        for i, key in enumerate(THRESHOLDS):
            if key in self.thresholds:
                assert_events |= 1 << (2 * i + (1 if i >= 3 else 0))
        lower_mask = (mask & 0x07) << 12
        upper_mask = ((mask >> 3) & 0x07) << 12
        th = [self.thresholds.get(k, 0) for k in ("unr", "uc", "unc", "lnr", "lc", "lnc")]
        m, b = self.m & 0x3FF, self.b & 0x3FF
        body = bytes([
            0x20, 0x00, self.number, self.entity_id, self.entity_instance,
            0x7F,                               # init: scanning, events, thresholds, hysteresis, type
            0x44,                               # auto re-arm, thresholds readable, per-threshold events
            self.sensor_type, EVENT_TYPE_THRESHOLD,
            *struct.pack("<HHH", assert_events | lower_mask, upper_mask, mask),  # last: readable, settable=0
            0x00, self.unit_code, 0x00,         # unsigned analog data, base unit, no modifier
            0x00,                               # linear
            m & 0xFF, (m >> 8) << 6,
            b & 0xFF, (b >> 8) << 6,
            0x00,                               # accuracy, direction unspecified
            (_signed4(self.r_exp) << 4) | _signed4(self.b_exp),
            0x01, self.to_raw(self.nominal), 0x00, 0x00,  # nominal reading given; normal max/min not
            0xFF, 0x00,                         # sensor maximum, minimum reading
            *th,
            0x00, 0x00,                         # hysteresis
            0x00, 0x00, 0x00,                   # reserved, OEM
            0xC0 | len(name),
        ]) + name
        return SDR_FULL_SENSOR, body


@dataclasses.dataclass(frozen=True, slots=True)
class SensorSet:
    """The sensors of a model and its SDR repository, shared by every BMC that has them."""

    sensors: tuple[SensorDef, ...]
    sdr: tuple[bytes, ...]  # whole records (header + body), record ids 1..n
    by_number: Mapping[int, int]  # sensor number -> index in sensors
    mc_name: str | None

    def memory_sensor(self) -> SensorDef | None:
        return next((s for s in self.sensors if s.kind == "memory"), None)

    def find(self, name: str) -> SensorDef | None:
        return next((s for s in self.sensors if s.name == name), None)


def sensor_set(sensors: Sequence[SensorDef], *, mc_locator: str | None = None) -> SensorSet:
    """Build the SDR for ``sensors`` (plus an MC Device Locator record named ``mc_locator``)."""
    numbers = [s.number for s in sensors]
    if len(set(numbers)) != len(numbers):
        raise ValueError("sensor numbers must be unique")
    bodies = [s.sdr_body() for s in sensors]
    if mc_locator is not None:
        name = mc_locator.encode("latin-1")[:16]
        bodies.append((SDR_MC_DEVICE_LOCATOR, bytes([
            0x20, 0x00,                         # device slave address, channel 0
            0x00,                               # ACPI/global init: none
            DEVICE_SUPPORT, 0x00, 0x00, 0x00,   # device capabilities, reserved
            0x06, 0x01, 0x00,                   # entity: system management module 1; OEM
            0xC0 | len(name),
        ]) + name))
    records = tuple(struct.pack("<HBBB", i + 1, RECORD_VERSION, rtype, len(body)) + body
                    for i, (rtype, body) in enumerate(bodies))
    return SensorSet(tuple(sensors), records, {s.number: i for i, s in enumerate(sensors)}, mc_locator)


def _lab_sensors() -> SensorSet:
    """The sensors of hardware-profiles/servers/rackfleet-lab.toml (names and thresholds), and more."""
    def temp(number: int, name: str, nominal: float, jitter: float, entity: int, instance: int,
             when_off: float | None, **th: int) -> SensorDef:
        return SensorDef(number, name, "temperature", *_KINDS["temperature"], nominal, jitter, when_off,
                         entity_id=entity, entity_instance=instance, thresholds=th)

    def fan(number: int, name: str, instance: int, nominal: float) -> SensorDef:
        # 60 RPM per count: lc 600 RPM = 10, lnc 900 RPM = 15
        return SensorDef(number, name, "fan", *_KINDS["fan"], nominal, 240.0, None, m=60, entity_id=0x1D,
                         entity_instance=instance, thresholds={"lc": 10, "lnc": 15}, period=47.0)

    return sensor_set((
        temp(1, "CPU1 Temp", 48.0, 4.0, 0x03, 1, None, unc=85, uc=95),
        temp(2, "CPU2 Temp", 46.0, 4.0, 0x03, 2, None, unc=85, uc=95),
        temp(3, "Inlet Temp", 23.0, 1.0, 0x37, 1, 23.0, lc=0, lnc=5, unc=40, uc=45),
        fan(4, "FAN1", 1, 7200.0),
        fan(5, "FAN2", 2, 7080.0),
        # 2 W per count: unc 400 W = 200, uc 450 W = 225
        SensorDef(6, "PSU1 Power", "power", *_KINDS["power"], 180.0, 15.0, 8.0, m=2, entity_id=0x0A,
                  thresholds={"unc": 200, "uc": 225}, period=61.0),
        # 0.06 V per count: 12.00 V = 200; lc 10.8, lnc 11.4, unc 12.6, uc 13.2
        SensorDef(7, "12V", "voltage", *_KINDS["voltage"], 12.06, 0.08, None, m=6, r_exp=-2,
                  thresholds={"lc": 180, "lnc": 190, "unc": 210, "uc": 220}, period=33.0),
        SensorDef(8, "Memory ECC", "memory", *_KINDS["memory"], 0.0, when_off=0.0, entity_id=0x20),
    ), mc_locator="Lab BMC")


#: Built-in sensor sets by name; a spec may also define its own (``sensor_profiles``).
SENSOR_PROFILES: dict[str, SensorSet] = {"rackfleet-lab": _lab_sensors()}


def parse_sensors(items: Sequence[Mapping[str, Any]], where: str) -> SensorSet:
    """A sensor set from spec objects (docs/lab.md: number, name, kind, raw|value, thresholds...)."""
    allowed = {"number", "name", "kind", "sensor_type", "unit_code", "raw", "value", "jitter", "when_off", "m",
               "b", "b_exp", "r_exp", "entity_id", "entity_instance", "thresholds", "period"}
    sensors = []
    for i, item in enumerate(items):
        loc = f"{where}[{i}]"
        _no_unknown(item, allowed, loc)
        kind = item.get("kind")
        if kind not in _KINDS:
            raise ValidationError(f"kind must be one of {', '.join(_KINDS)}", field="kind", value=kind, location=loc)
        stype, unit = _KINDS[kind]
        thresholds = dict(item.get("thresholds", {}))
        for key, raw in thresholds.items():
            if key not in THRESHOLDS or not isinstance(raw, int) or not 0 <= raw <= 255:
                raise ValidationError("thresholds are raw bytes keyed lnc lc lnr unc uc unr", field="thresholds",
                                      value={key: raw}, location=loc)
        base = SensorDef(int(item["number"]), str(item["name"]), kind, int(item.get("sensor_type", stype)),
                         int(item.get("unit_code", unit)), 0.0, m=int(item.get("m", 1)), b=int(item.get("b", 0)),
                         b_exp=int(item.get("b_exp", 0)), r_exp=int(item.get("r_exp", 0)),
                         entity_id=int(item.get("entity_id", 0x07)),
                         entity_instance=int(item.get("entity_instance", 1)), thresholds=thresholds)
        if base.m == 0:
            raise ValidationError("m must not be 0", field="m", location=loc)
        nominal = float(item["value"]) if "value" in item else base.to_value(int(item.get("raw", 0)))
        when_off = item.get("when_off", "same")
        off = nominal if when_off == "same" else (None if when_off == "unavailable" else float(when_off))
        sensors.append(dataclasses.replace(base, nominal=nominal, jitter=float(item.get("jitter", 0.0)),
                                           when_off=off, period=float(item.get("period", 90.0))))
    try:
        return sensor_set(sensors)
    except ValueError as exc:
        raise ValidationError(str(exc), field="sensors", location=where) from None


# ---------------------------------------------------------------------------------------------
# The spec of one BMC
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class BmcSpec:
    """What one simulated BMC is: its address, credentials, identity and behaviour."""

    name: str
    host: str
    port: int = 623
    username: str = "admin"
    password: str = "password"
    serial: str = ""
    sensors: str = "rackfleet-lab"
    power: str = "on"
    power_on_delay: float = 0.0
    cold_reset_seconds: float = 3.0
    session_timeout: float = 60.0
    guid: bytes = b""
    fru: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    sel: tuple[bytes, ...] = ()
    #: A QEMU VM this BMC powers (fleet.lab.qemu.VmSpec as JSON); None: the simulated power model.
    qemu: Mapping[str, Any] | None = None
    #: Its Redfish behaviour (fleet.lab.redfish.RedfishProfile fields; {}: the defaults); None: no Redfish.
    redfish: Mapping[str, Any] | None = None
    #: Whether it answers IPMI over LAN (False: a Redfish-only BMC, as many of a real fleet).
    ipmi: bool = True
    #: The host's NIC MACs, as its BMC reports them (Redfish EthernetInterfaces).
    macs: tuple[str, ...] = ()


_SPEC_KEYS = {f.name for f in dataclasses.fields(BmcSpec)}
FRU_FIELDS = ("chassis_part", "chassis_serial", "board_manufacturer", "board_product", "board_serial",
              "board_part", "manufacturer", "product", "part_number", "version", "serial", "asset_tag")
#: The board's manufacturing date, minutes since 1996-01-01 00:00 UTC (0: unspecified): 2024-07-08 16:00.
FRU_MFG_MINUTES = 15_000_000


def _no_unknown(obj: Mapping[str, Any], allowed: set[str], where: str) -> None:
    if not isinstance(obj, Mapping):
        raise ValidationError("must be a JSON object", location=where)
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise ValidationError(f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}",
                              location=where)


def _sel_record(event: Mapping[str, Any], where: str) -> bytes:
    _no_unknown(event, {"sensor_type", "sensor_number", "event_type", "data", "deassertion"}, where)
    data = list(event.get("data", (0xFF, 0xFF, 0xFF)))
    if len(data) != 3:
        raise ValidationError("data must hold event data 1-3", field="data", location=where)
    direction = int(event.get("event_type", EVENT_TYPE_SENSOR_SPECIFIC))
    if event.get("deassertion"):
        direction |= EVENT_DEASSERTION
    return bytes([0x20, 0x00, EVM_REV, int(event["sensor_type"]), int(event["sensor_number"]), direction, *data])


def parse_spec(doc: Mapping[str, Any], where: str = "spec") -> tuple[list[BmcSpec], dict[str, SensorSet]]:
    """The BMCs of a spec document and the sensor sets they name (built-ins plus the spec's own).

    ``{"defaults": {...}, "sensor_profiles": {NAME: [SENSOR, ...]}, "bmcs": [{"name", "host", ...}]}``;
    every BMC key may also be given in ``defaults``. Hosts must be IPv4 loopback addresses.
    """
    _no_unknown(doc, {"defaults", "sensor_profiles", "bmcs"}, where)
    profiles = dict(SENSOR_PROFILES)
    for name, items in dict(doc.get("sensor_profiles", {})).items():
        profiles[name] = parse_sensors(items, f"{where}.sensor_profiles.{name}")
    defaults = dict(doc.get("defaults", {}))
    _no_unknown(defaults, _SPEC_KEYS - {"name", "host"}, f"{where}.defaults")
    bmcs: list[BmcSpec] = []
    names: set[str] = set()
    addresses: set[tuple[str, int]] = set()
    for i, raw in enumerate(doc.get("bmcs", [])):
        loc = f"{where}.bmcs[{i}]"
        _no_unknown(raw, _SPEC_KEYS, loc)
        item = {**defaults, **raw}
        for key in ("name", "host"):
            if not isinstance(item.get(key), str) or not item[key]:
                raise ValidationError("is required", field=key, location=loc)
        try:
            address = ipaddress.IPv4Address(item["host"])
        except ValueError:
            raise ValidationError("must be an IPv4 address", field="host", value=item["host"], location=loc) from None
        if not address.is_loopback:
            raise ValidationError("the lab binds loopback addresses only (127.0.0.0/8)", field="host",
                                  value=item["host"], location=loc)
        port = int(item.get("port", 623))
        if not 1 <= port <= 65535:
            raise ValidationError("must be 1-65535", field="port", value=port, location=loc)
        if item["name"] in names or (item["host"], port) in addresses:
            raise ValidationError("name and host:port must be unique", field="name", value=item["name"], location=loc)
        names.add(item["name"])
        addresses.add((item["host"], port))
        sensors = item.get("sensors", "rackfleet-lab")
        if sensors not in profiles:
            raise ValidationError(f"unknown sensor profile; known: {', '.join(sorted(profiles))}", field="sensors",
                                  value=sensors, location=loc)
        if item.get("power", "on") not in ("on", "off"):
            raise ValidationError("must be on or off", field="power", value=item.get("power"), location=loc)
        fru = dict(item.get("fru", {}))
        _no_unknown(fru, {*FRU_FIELDS, "mfg_minutes"}, f"{loc}.fru")
        if not all(isinstance(v, str) for k, v in fru.items() if k != "mfg_minutes") or not isinstance(
                fru.get("mfg_minutes", 0), int):
            raise ValidationError("FRU fields are strings, mfg_minutes an integer", field="fru", location=loc)
        guid = bytes.fromhex(item["guid"]) if item.get("guid") else uuid.uuid5(uuid.NAMESPACE_DNS, item["name"]).bytes
        if len(guid) != 16:
            raise ValidationError("must be 32 hex digits", field="guid", location=loc)
        sel = tuple(_sel_record(e, f"{loc}.sel[{j}]") for j, e in enumerate(item.get("sel", ())))
        qemu = item.get("qemu")
        if qemu is not None:
            from .qemu import VmSpec  # only for specs that name a VM

            try:
                VmSpec.from_dict(qemu)
            except (ValueError, TypeError, KeyError) as exc:
                raise ValidationError(f"not a VM spec: {exc}", field="qemu", location=loc) from None
        redfish = item.get("redfish")  # its fields are checked when the responder starts (fleet.lab.redfish)
        if redfish is not None and not isinstance(redfish, Mapping):
            raise ValidationError("must be an object (a Redfish profile)", field="redfish", location=loc)
        if not item.get("ipmi", True) and redfish is None:
            raise ValidationError("a BMC without IPMI needs Redfish", field="ipmi", location=loc)
        macs = item.get("macs", ())
        if not all(isinstance(m, str) and re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", m) for m in macs):
            raise ValidationError("MACs are lowercase aa:bb:cc:dd:ee:ff", field="macs", location=loc)
        bmcs.append(BmcSpec(
            name=item["name"], host=item["host"], port=port, username=str(item.get("username", "admin")),
            password=str(item.get("password", "password")), serial=str(item.get("serial") or f"LAB-{item['name']}"),
            sensors=sensors, power=item.get("power", "on"), power_on_delay=float(item.get("power_on_delay", 0.0)),
            cold_reset_seconds=float(item.get("cold_reset_seconds", 3.0)),
            session_timeout=float(item.get("session_timeout", 60.0)), guid=guid, fru=fru, sel=sel,
            qemu=None if qemu is None else dict(qemu), redfish=None if redfish is None else dict(redfish),
            ipmi=bool(item.get("ipmi", True)), macs=tuple(macs),
        ))
        if len(bmcs[-1].username.encode()) > 16 or len(bmcs[-1].password.encode()) > 20:
            raise ValidationError("user names hold at most 16 bytes, passwords 20", field="password", location=loc)
    return bmcs, profiles


# ---------------------------------------------------------------------------------------------
# FRU (Platform Management FRU Information Storage Definition v1.0)
# ---------------------------------------------------------------------------------------------


def _fru_area(head: bytes, fields: Sequence[str]) -> bytes:
    body = bytearray([0x01, 0x00]) + head
    for text in fields:
        raw = text.encode("latin-1")[:63]
        body += bytes([0xC0 | len(raw)]) + raw
    body.append(0xC1)  # end of fields
    body += bytes(-(len(body) + 1) % 8)
    body[1] = (len(body) + 1) // 8
    body.append(-sum(body) & 0xFF)
    return bytes(body)


def build_fru(fields: Mapping[str, str], mfg_minutes: int) -> bytes:
    """A FRU image with chassis, board and product info areas."""
    chassis = _fru_area(bytes([0x17]), [fields["chassis_part"], fields["chassis_serial"]])  # rack mount chassis
    board = _fru_area(bytes([0x00]) + mfg_minutes.to_bytes(3, "little"),
                      [fields["board_manufacturer"], fields["board_product"], fields["board_serial"],
                       fields["board_part"], ""])
    product = _fru_area(bytes([0x00]), [fields["manufacturer"], fields["product"], fields["part_number"],
                                        fields["version"], fields["serial"], fields["asset_tag"], ""])
    header = bytearray([0x01, 0x00, 1, 1 + len(chassis) // 8, 1 + (len(chassis) + len(board)) // 8, 0x00, 0x00])
    header.append(-sum(header) & 0xFF)
    return bytes(header) + chassis + board + product

