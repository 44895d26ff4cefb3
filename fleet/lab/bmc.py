"""The simulated BMC: one server's power, boot flags, sensors, SDR, SEL, FRU and fault switches.

A :class:`Bmc` answers IPMI commands (:meth:`Bmc.handle`) with a completion code and response data;
it knows nothing of sockets or sessions (``fleet.lab.bmcserver`` does). Everything per BMC is kept
small, because one process serves thousands: sensor readings are computed from the clock when asked
(no timers), power transitions are applied lazily when the state is next looked at, the SDR is shared
by every BMC with the same sensor set, and the FRU image is built on demand.

The spec of one BMC (a JSON object, see ``docs/lab.md``) becomes a :class:`BmcSpec` through
:func:`parse_spec`, which refuses unknown keys and non-loopback addresses.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import struct
import time
import uuid
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from fleet.errors import ValidationError

__all__ = [
    "BOOT_DEVICES",
    "FAULT_KINDS",
    "MANUFACTURER_ID",
    "PRODUCT_ID",
    "SENSOR_PROFILES",
    "Bmc",
    "BmcSpec",
    "BootRequest",
    "PowerBackend",
    "SensorDef",
    "SensorSet",
    "parse_spec",
    "sensor_set",
]

#: RFC 5612: the IANA enterprise number reserved for documentation (hardware-profiles/servers/rackfleet-lab.toml).
MANUFACTURER_ID = 32473
PRODUCT_ID = 0x0001
FIRMWARE = (1, 0x00)  # 1.00 (minor in BCD)
#: Get Device ID "additional device support": chassis, FRU inventory, SEL, SDR repository, sensor device.
DEVICE_SUPPORT = 0x8F

# Network functions (requests).
NETFN_CHASSIS = 0x00
NETFN_SENSOR = 0x04
NETFN_APP = 0x06
NETFN_STORAGE = 0x0A

# Completion codes (table 5-2).
CC_OK = 0x00
CC_INVALID_COMMAND = 0xC1
CC_TIMEOUT = 0xC3
CC_RESERVATION = 0xC5
CC_LENGTH = 0xC7
CC_OUT_OF_RANGE = 0xC9
CC_NOT_PRESENT = 0xCB
CC_INVALID_FIELD = 0xCC
CC_PRIVILEGE = 0xD4
CC_PARAM_NOT_SUPPORTED = 0x80  # Get/Set System Boot Options: parameter not supported

PRIV_USER = 2
PRIV_OPERATOR = 3
PRIV_ADMIN = 4

#: Fault switches a control request may flip (docs/lab.md).
FAULT_KINDS = ("dead", "slow", "wrong-password", "stuck-power", "sensor-critical", "ecc")

#: Boot device selector (parameter 5, data 2 bits 5:2) by name.
BOOT_DEVICES = {"none": 0x0, "pxe": 0x1, "disk": 0x2, "safe": 0x3, "diag": 0x4, "cdrom": 0x5, "bios": 0x6,
                "floppy": 0xF}
_BOOT_NAMES = {v: k for k, v in BOOT_DEVICES.items()}

_THRESHOLDS = ("lnc", "lc", "lnr", "unc", "uc", "unr")  # bit 0..5 of the threshold masks
#: Sensor type and unit code for each kind (tables 42-3 and 43-15).
_KINDS: dict[str, tuple[int, int]] = {
    "temperature": (0x01, 1),   # degrees C
    "voltage": (0x02, 4),       # volts
    "current": (0x03, 5),       # amps
    "fan": (0x04, 18),          # RPM
    "power": (0x0B, 6),         # other units-based sensor, watts
    "memory": (0x0C, 0),        # discrete: sensor-specific offsets (0x01 = uncorrectable ECC)
}
#: Seconds the system stays off during a power cycle (ipmi_sim: about 1 s).
CYCLE_OFF_SECONDS = 1.0
SEL_CAPACITY = 512


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
        """(record type, record body) for this sensor: a Full (0x01) or Compact (0x02) Sensor Record."""
        name = self.name.encode("latin-1")[:16]
        if self.discrete:
            body = bytes([
                0x20, 0x00, self.number, self.entity_id, self.entity_instance,
                0x63, 0x40,                     # init: scanning + events; capabilities: auto re-arm
                self.sensor_type, 0x6F,         # sensor-specific discrete
                0x3F, 0x00, 0x00, 0x00, 0x3F, 0x00,  # assertion, deassertion, reading masks: offsets 0-5
                0x00, 0x00, 0x00,               # units: none
                0x01, 0x00, 0x00, 0x00,         # record sharing: one sensor; no hysteresis
                0x00, 0x00, 0x00, 0x00,         # reserved, OEM
                0xC0 | len(name),
            ]) + name
            return 0x02, body
        mask = 0
        for i, key in enumerate(_THRESHOLDS):
            if key in self.thresholds:
                mask |= 1 << i
        # Assertion events: lower thresholds going low, upper ones going high; reading masks say which
        # comparison bits Get Sensor Reading returns.
        assert_events = 0
        for i, key in enumerate(_THRESHOLDS):
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
            self.sensor_type, 0x01,             # threshold based
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
        return 0x01, body


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
        bodies.append((0x12, bytes([
            0x20, 0x00,                         # device slave address, channel 0
            0x00,                               # ACPI/global init: none
            DEVICE_SUPPORT, 0x00, 0x00, 0x00,   # device capabilities, reserved
            0x06, 0x01, 0x00,                   # entity: system management module 1; OEM
            0xC0 | len(name),
        ]) + name))
    records = tuple(struct.pack("<HBBB", i + 1, 0x51, rtype, len(body)) + body
                    for i, (rtype, body) in enumerate(bodies))
    return SensorSet(tuple(sensors), records, {s.number: i for i, s in enumerate(sensors)}, mc_locator)


def _lab_sensors() -> SensorSet:
    """The sensors of hardware-profiles/servers/rackfleet-lab.toml (names and thresholds), and more."""
    def temp(number: int, name: str, nominal: float, jitter: float, entity: int, instance: int,
             when_off: float | None, **th: int) -> SensorDef:
        return SensorDef(number, name, "temperature", 0x01, 1, nominal, jitter, when_off,
                         entity_id=entity, entity_instance=instance, thresholds=th)

    def fan(number: int, name: str, instance: int, nominal: float) -> SensorDef:
        # 60 RPM per count: lc 600 RPM = 10, lnc 900 RPM = 15
        return SensorDef(number, name, "fan", 0x04, 18, nominal, 240.0, None, m=60, entity_id=0x1D,
                         entity_instance=instance, thresholds={"lc": 10, "lnc": 15}, period=47.0)

    return sensor_set((
        temp(1, "CPU1 Temp", 48.0, 4.0, 0x03, 1, None, unc=85, uc=95),
        temp(2, "CPU2 Temp", 46.0, 4.0, 0x03, 2, None, unc=85, uc=95),
        temp(3, "Inlet Temp", 23.0, 1.0, 0x37, 1, 23.0, lc=0, lnc=5, unc=40, uc=45),
        fan(4, "FAN1", 1, 7200.0),
        fan(5, "FAN2", 2, 7080.0),
        # 2 W per count: unc 400 W = 200, uc 450 W = 225
        SensorDef(6, "PSU1 Power", "power", 0x0B, 6, 180.0, 15.0, 8.0, m=2, entity_id=0x0A,
                  thresholds={"unc": 200, "uc": 225}, period=61.0),
        # 0.06 V per count: 12.00 V = 200; lc 10.8, lnc 11.4, unc 12.6, uc 13.2
        SensorDef(7, "12V", "voltage", 0x02, 4, 12.06, 0.08, None, m=6, r_exp=-2,
                  thresholds={"lc": 180, "lnc": 190, "unc": 210, "uc": 220}, period=33.0),
        SensorDef(8, "Memory ECC", "memory", 0x0C, 0, 0.0, when_off=0.0, entity_id=0x20),
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
            if key not in _THRESHOLDS or not isinstance(raw, int) or not 0 <= raw <= 255:
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


@dataclasses.dataclass(frozen=True)
class BootRequest:
    """What the boot flags ask of one start of the host: ``device`` (``pxe``, ``disk``...; None: no
    override, the firmware boots its own order) and ``uefi``, the BIOS boot type bit (data 1 bit 5:
    1 = EFI, 0 = PC compatible). Whether the firmware honours it is the host's business (a UEFI-only
    firmware ignores a legacy request: :meth:`fleet.lab.qemu.QemuVm.firmware_boot`)."""

    device: str | None
    uefi: bool = False


class PowerBackend(Protocol):
    """What really holds a BMC's host power when it is not simulated (e.g. :class:`fleet.lab.qemu.QemuBackend`).

    ``set_power`` gets ``on``, ``off``, ``soft``, ``cycle`` or ``reset`` and, when the action starts the
    host, the :class:`BootRequest` the BMC's flags make for that start (None when it starts nothing).
    It must not block: the BMC answers at once and the backend acts in the background.
    """

    def power_state(self) -> bool: ...

    def set_power(self, action: str, boot: BootRequest | None) -> None: ...

    def state(self) -> dict[str, Any]: ...


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
    direction = int(event.get("event_type", 0x6F)) | (0x80 if event.get("deassertion") else 0)
    return bytes([0x20, 0x00, 0x04, int(event["sensor_type"]), int(event["sensor_number"]), direction, *data])


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
        bmcs.append(BmcSpec(
            name=item["name"], host=item["host"], port=port, username=str(item.get("username", "admin")),
            password=str(item.get("password", "password")), serial=str(item.get("serial") or f"LAB-{item['name']}"),
            sensors=sensors, power=item.get("power", "on"), power_on_delay=float(item.get("power_on_delay", 0.0)),
            cold_reset_seconds=float(item.get("cold_reset_seconds", 3.0)),
            session_timeout=float(item.get("session_timeout", 60.0)), guid=guid, fru=fru, sel=sel,
            qemu=None if qemu is None else dict(qemu),
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


# ---------------------------------------------------------------------------------------------
# The BMC
# ---------------------------------------------------------------------------------------------

Handler = Callable[["Bmc", bytes], tuple[int, bytes]]


class Bmc:
    """One simulated BMC. :meth:`handle` answers a command; the control interface flips faults.

    Times are ``time.monotonic()`` seconds; SEL timestamps are wall-clock seconds since 1970.
    """

    __slots__ = (
        "_pending", "backend", "boot_count", "boot_flags", "boot_info_ack", "boot_valid_clearing", "dark_until", "dead",
        "ecc_count", "last_boot", "overrides", "phase", "power_on", "reset_count", "restart_cause",
        "sdr_reservation", "sel", "sel_erased", "sel_next_id", "sel_overflow", "sel_reservation",
        "sel_time_offset", "sel_updated", "sensors", "slow_ms", "spec", "stuck_power", "wrong_password",
    )

    def __init__(self, spec: BmcSpec, sensors: SensorSet) -> None:
        self.spec = spec
        self.sensors = sensors
        self.power_on = spec.power == "on"
        self._pending: tuple[float, bool] | None = None  # (when, power state to take then)
        self.backend: PowerBackend | None = None  # set by the server for a BMC that drives a VM
        self.boot_flags = bytes(5)  # parameter 5: no override
        self.boot_info_ack = 0x00
        self.boot_valid_clearing = 0x00
        self.last_boot: str | None = None
        self.boot_count = 0
        self.reset_count = 0
        self.restart_cause = 0x00
        self.sel: list[bytes] = []  # 16-byte records
        self.sel_next_id = 1
        self.sel_updated = 0
        self.sel_erased = 0
        self.sel_overflow = False
        self.sel_reservation = 0
        self.sdr_reservation = 0
        self.sel_time_offset = 0
        self.dead = False
        self.slow_ms = 0
        self.wrong_password: str | None = None
        self.stuck_power = False
        self.overrides: dict[int, int] | None = None  # sensor number -> forced raw reading
        self.ecc_count = 0
        self.dark_until = 0.0
        self.phase = (zlib.crc32(spec.name.encode()) % 6283) / 1000.0
        for record in spec.sel:
            self.add_sel(record)

    # -- state the server and the control interface look at -----------------------------------

    @property
    def password(self) -> str:
        """The password the BMC accepts now (a wrong-password fault changes it)."""
        return self.wrong_password if self.wrong_password is not None else self.spec.password

    def powered(self, now: float | None = None) -> bool:
        """The power state, after any transition that is due by ``now``."""
        if self.backend is not None:
            return self.backend.power_state()
        if self._pending is not None:
            when, state = self._pending
            if (time.monotonic() if now is None else now) >= when:
                self._pending = None
                self._set_power(state)
        return self.power_on

    def _set_power(self, on: bool) -> None:
        if on and not self.power_on:
            self._booted()
        self.power_on = on

    def _booted(self) -> BootRequest:
        """The host starts: it uses the boot flags; a one-time override is then cleared (the valid bit;
        the rest of the flags, persistent and EFI bits included, stay readable as real BMCs keep them).

        Returns what the flags ask of this start: the device (None when they do not override) and the
        BIOS boot type (EFI or legacy).
        """
        self.boot_count += 1
        flags = self.boot_flags
        valid = bool(flags[0] & 0x80)
        device = _BOOT_NAMES.get((flags[1] >> 2) & 0x0F, "none") if valid else "none"
        self.last_boot = "disk" if device == "none" else device
        if valid and not flags[0] & 0x40:
            self.boot_flags = bytes([flags[0] & 0x7F]) + flags[1:]
        return BootRequest(None if device == "none" else device, uefi=valid and bool(flags[0] & 0x20))

    def power(self, action: str, now: float | None = None) -> None:
        """``on``, ``off``, ``cycle``, ``reset`` or ``soft`` (ACPI shutdown), as Chassis Control does it."""
        now = time.monotonic() if now is None else now
        if self.stuck_power:
            return
        if self.backend is not None:
            self._backend_power(action)
            return
        on = self.powered(now)
        delay = self.spec.power_on_delay
        if action == "on":
            if not on:
                self._schedule(now + delay, True, now)
        elif action in ("off", "soft"):
            self._pending = None
            self._set_power(False)
        elif action == "cycle":
            if on:  # ipmi_sim and most BMCs: a cycle of a server that is off leaves it off
                self._set_power(False)
                self._schedule(now + CYCLE_OFF_SECONDS + delay, True, now)
        elif action == "reset":
            if on:
                self.reset_count += 1
                self._booted()
        else:
            raise ValueError(f"unknown power action {action!r}")
        self.restart_cause = 0x01  # chassis control command

    def _backend_power(self, action: str) -> None:
        """Chassis Control on a backend: the boot flags are consumed here, the backend acts."""
        if action not in ("on", "off", "soft", "cycle", "reset"):
            raise ValueError(f"unknown power action {action!r}")
        on = self.backend.power_state() if self.backend is not None else False
        boot: BootRequest | None = None
        if (action == "on" and not on) or (action in ("cycle", "reset") and on):
            boot = self._booted()
            self.reset_count += action == "reset"
        if action in ("cycle", "reset") and not on:
            return  # as the simulation: cycling or resetting a host that is off leaves it off
        assert self.backend is not None
        self.backend.set_power(action, boot)
        self.restart_cause = 0x01

    def _schedule(self, when: float, state: bool, now: float) -> None:
        if when <= now:
            self._pending = None
            self._set_power(state)
        else:
            self._pending = (when, state)

    def set_fault(self, kind: str, on: bool = True, value: Any = None) -> None:
        """Flip a fault switch (:data:`FAULT_KINDS`); ``value`` is the delay (ms) or the sensor name."""
        if kind == "dead":
            self.dead = on
        elif kind == "slow":
            self.slow_ms = int(value if value is not None else 1500) if on else 0
            if self.slow_ms < 0:
                raise ValueError("slow needs a delay in milliseconds >= 0")
        elif kind == "wrong-password":
            self.wrong_password = (str(value) if value else self.spec.password + "-changed") if on else None
        elif kind == "stuck-power":
            self.stuck_power = on
        elif kind == "sensor-critical":
            self._sensor_critical(value, on)
        elif kind == "ecc":
            if on:
                self.ecc_count += 1
                mem = self.sensors.memory_sensor()
                # Uncorrectable ECC (sensor type 0x0C offset 0x01); event data 3 (a sensor-specific
                # extension, data 1 bits 5:4 = 11b) names the memory module, here DIMM 0.
                self.add_sel(bytes([0x20, 0x00, 0x04, 0x0C, mem.number if mem else 0xFF, 0x6F, 0x31, 0xFF, 0x00]))
            else:
                self.ecc_count = 0
        else:
            raise ValueError(f"unknown fault {kind!r}; known: {', '.join(FAULT_KINDS)}")

    def _sensor_critical(self, name: str | None, on: bool) -> None:
        sensor = self.sensors.find(name) if name else next(
            (s for s in self.sensors.sensors if "uc" in s.thresholds), None)
        if sensor is None or "uc" not in sensor.thresholds:
            raise ValueError(f"no sensor with an upper critical threshold named {name!r}")
        threshold = sensor.thresholds["uc"]
        if on:
            raw = min(255, threshold + 2)
            self.overrides = {**(self.overrides or {}), sensor.number: raw}
            # Upper critical going high: trigger reading in data 2, threshold in data 3.
            self.add_sel(bytes([0x20, 0x00, 0x04, sensor.sensor_type, sensor.number, 0x01, 0x59, raw, threshold]))
        elif self.overrides and sensor.number in self.overrides:
            raw = self.overrides.pop(sensor.number)
            self.overrides = self.overrides or None
            self.add_sel(bytes([0x20, 0x00, 0x04, sensor.sensor_type, sensor.number, 0x81, 0x59, raw, threshold]))

    def faults(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.dead:
            out["dead"] = True
        if self.slow_ms:
            out["slow"] = self.slow_ms
        if self.wrong_password is not None:
            out["wrong-password"] = True
        if self.stuck_power:
            out["stuck-power"] = True
        if self.overrides:
            out["sensor-critical"] = sorted(self.sensors.sensors[self.sensors.by_number[n]].name
                                            for n in self.overrides)
        if self.ecc_count:
            out["ecc"] = self.ecc_count
        return out

    def state(self, now: float | None = None) -> dict[str, Any]:
        """A JSON-able snapshot for the control interface."""
        now = time.monotonic() if now is None else now
        flags = self.boot_flags
        return {
            "name": self.spec.name, "host": self.spec.host, "port": self.spec.port,
            "power": "on" if self.powered(now) else "off",
            "pending_power": None if self._pending is None else ("on" if self._pending[1] else "off"),
            "boot": {
                "device": _BOOT_NAMES.get((flags[1] >> 2) & 0x0F, "unknown"), "valid": bool(flags[0] & 0x80),
                "persistent": bool(flags[0] & 0x40), "uefi": bool(flags[0] & 0x20),
            },
            "last_boot": self.last_boot, "boot_count": self.boot_count, "reset_count": self.reset_count,
            "resetting": self.dark_until > now, "sel_entries": len(self.sel), "serial": self.spec.serial,
            "faults": self.faults(),
            "sensors": {s.name: self.sensor_value(s, now) for s in self.sensors.sensors if not s.discrete},
            **({"vm": self.backend.state()} if self.backend is not None else {}),
        }

    def sensor_raw(self, sensor: SensorDef, now: float) -> int | None:
        if self.overrides and sensor.number in self.overrides:
            return self.overrides[sensor.number]
        return sensor.reading(now, self.phase + sensor.number, self.powered(now))

    def sensor_value(self, sensor: SensorDef, now: float) -> float | None:
        raw = self.sensor_raw(sensor, now)
        return None if raw is None else round(sensor.to_value(raw), 3)

    def add_sel(self, record: bytes) -> int:
        """Append an event (record bytes 7-16 of a system event record, or all 16); return its id."""
        if len(self.sel) >= SEL_CAPACITY:
            self.sel_overflow = True
            return 0xFFFF
        rid = self.sel_next_id
        self.sel_next_id = rid % 0xFFFE + 1
        stamp = self.sel_clock()
        if len(record) == 16:  # a whole record from Add SEL Entry: our id; system events get our time
            rtype = record[2]
            tail = record[7:] if rtype < 0xE0 else record[3:]
            head = struct.pack("<HB", rid, rtype) + (struct.pack("<I", stamp) if rtype < 0xE0 else b"")
            entry = head + tail
        else:
            entry = struct.pack("<HBI", rid, 0x02, stamp) + record
        self.sel.append(entry)
        self.sel_updated = stamp
        self.sel_reservation = 0  # any change cancels the reservation
        return rid

    def sel_clock(self) -> int:
        return int(time.time()) + self.sel_time_offset

    def fru_image(self) -> bytes:
        n = self.spec.serial
        fru = dict(self.spec.fru)
        minutes = fru.pop("mfg_minutes", FRU_MFG_MINUTES)
        fields = {
            "chassis_part": "RF-LAB-1U", "chassis_serial": n,
            "board_manufacturer": "Rackfleet", "board_product": "Lab Board", "board_serial": n,
            "board_part": "RF-LAB-MB", "manufacturer": "Rackfleet", "product": "Lab BMC",
            "part_number": "rackfleet-lab", "version": "1.0", "serial": n, "asset_tag": self.spec.name,
            **fru,
        }
        return build_fru(fields, mfg_minutes=minutes)

    def cold_reset(self, now: float | None = None) -> None:
        """The BMC restarts: silent for ``cold_reset_seconds``; the host's power is untouched."""
        now = time.monotonic() if now is None else now
        self.powered(now)
        self.dark_until = now + self.spec.cold_reset_seconds
        self.sel_reservation = 0
        self.sdr_reservation = 0

    # -- commands --------------------------------------------------------------------------

    def handle(self, netfn: int, cmd: int, data: bytes, privilege: int) -> tuple[int, bytes]:
        """Answer one command at the session's ``privilege``: (completion code, response data)."""
        entry = COMMANDS.get((netfn, cmd))
        if entry is None:
            return CC_INVALID_COMMAND, b""
        needed, handler = entry
        if privilege < needed:
            return CC_PRIVILEGE, b""
        try:
            return handler(self, data)
        except (IndexError, struct.error):
            return CC_LENGTH, b""

    # Application
    def _get_device_id(self, data: bytes) -> tuple[int, bytes]:
        return CC_OK, bytes([0x01, 0x01, FIRMWARE[0], FIRMWARE[1], 0x02, DEVICE_SUPPORT]) + struct.pack(
            "<I", MANUFACTURER_ID)[:3] + struct.pack("<H", PRODUCT_ID) + bytes(4)

    def _cold_reset(self, data: bytes) -> tuple[int, bytes]:
        return CC_OK, b""  # the server goes dark after the answer is sent (bmcserver)

    def _self_test(self, data: bytes) -> tuple[int, bytes]:
        return CC_OK, b"\x55\x00"

    def _guid(self, data: bytes) -> tuple[int, bytes]:
        return CC_OK, self.spec.guid

    def _channel_access(self, data: bytes) -> tuple[int, bytes]:
        channel = data[0] & 0x0F
        if channel not in (1, 0x0E):
            return CC_NOT_PRESENT, b""
        return CC_OK, bytes([0x22, PRIV_ADMIN])  # alerting off, always available; limit admin

    def channel_info(self, channel: int, active_sessions: int) -> tuple[int, bytes]:
        """Get Channel Info: channel 0 IPMB, 1 the LAN (0x0E: this one), 0x0F the system interface."""
        iana = b"\xf2\x1b\x00\x00\x00"  # IPMI forum's IANA 7154, no auxiliary info
        if channel in (0x01, 0x0E):  # 802.3 LAN, IPMB-1.0 protocol, multi-session
            return CC_OK, bytes([0x01, 0x04, 0x01, 0x80 | min(active_sessions, 0x3F)]) + iana
        if channel == 0x00:  # IPMB, session-less
            return CC_OK, bytes([0x00, 0x01, 0x01, 0x00]) + iana
        if channel == 0x0F:  # system interface (KCS)
            return CC_OK, bytes([0x0F, 0x0C, 0x05, 0x00]) + iana
        return CC_NOT_PRESENT, b""

    # Chassis
    def _chassis_status(self, data: bytes) -> tuple[int, bytes]:
        now = time.monotonic()
        current = 0x01 if self.powered(now) else 0x00  # restore policy: always off (as ipmi_sim)
        misc = 0x00
        for sensor in self.sensors.sensors:
            if sensor.kind == "fan":
                raw = self.sensor_raw(sensor, now)
                if raw is not None and sensor.status_bits(raw) & 0x02:
                    misc |= 0x08  # cooling/fan fault
        return CC_OK, bytes([current, 0x00, misc])

    def _chassis_control(self, data: bytes) -> tuple[int, bytes]:
        action = {0: "off", 1: "on", 2: "cycle", 3: "reset", 5: "soft"}.get(data[0] & 0x0F)
        if action is None:
            return CC_INVALID_FIELD, b""
        self.power(action)
        return CC_OK, b""

    def _chassis_identify(self, data: bytes) -> tuple[int, bytes]:
        return CC_OK, b""

    def _restart_cause(self, data: bytes) -> tuple[int, bytes]:
        return CC_OK, bytes([self.restart_cause, 0x01])

    def _set_boot_options(self, data: bytes) -> tuple[int, bytes]:
        param = data[0] & 0x7F
        value = data[1:]
        if param == 0:  # set in progress: accepted, nothing to commit
            return CC_OK, b""
        if param == 3:
            self.boot_valid_clearing = value[0] & 0x1F
        elif param == 4:
            mask, ack = value[0], value[1]
            self.boot_info_ack = (self.boot_info_ack & ~mask | ack & mask) & 0xFF
        elif param == 5:
            if len(value) < 5:
                return CC_LENGTH, b""
            self.boot_flags = bytes(value[:5])
        else:
            return CC_PARAM_NOT_SUPPORTED, b""
        return CC_OK, b""

    def _get_boot_options(self, data: bytes) -> tuple[int, bytes]:
        param = data[0] & 0x7F
        value = {0: b"\x00", 3: bytes([self.boot_valid_clearing]), 4: bytes([0x00, self.boot_info_ack]),
                 5: self.boot_flags}.get(param)
        if value is None:
            return CC_PARAM_NOT_SUPPORTED, b""
        return CC_OK, bytes([0x01, param]) + value

    # Sensors
    def _sensor(self, number: int) -> SensorDef | None:
        index = self.sensors.by_number.get(number)
        return None if index is None else self.sensors.sensors[index]

    def _sensor_reading(self, data: bytes) -> tuple[int, bytes]:
        sensor = self._sensor(data[0])
        if sensor is None:
            return CC_NOT_PRESENT, b""
        now = time.monotonic()
        if sensor.discrete:
            states = 0x02 if self.ecc_count else 0x00  # offset 1: uncorrectable ECC
            return CC_OK, bytes([0x00, 0xC0, states, 0x00])
        raw = self.sensor_raw(sensor, now)
        if raw is None:
            return CC_OK, bytes([0x00, 0xE0, 0x00])  # scanning on, reading unavailable
        return CC_OK, bytes([raw, 0xC0, sensor.status_bits(raw)])

    def _sensor_thresholds(self, data: bytes) -> tuple[int, bytes]:
        sensor = self._sensor(data[0])
        if sensor is None:
            return CC_NOT_PRESENT, b""
        if sensor.discrete:
            return CC_INVALID_COMMAND, b""
        mask = sum(1 << i for i, k in enumerate(_THRESHOLDS) if k in sensor.thresholds)
        return CC_OK, bytes([mask, *(sensor.thresholds.get(k, 0) for k in _THRESHOLDS)])

    def _sensor_hysteresis(self, data: bytes) -> tuple[int, bytes]:
        if self._sensor(data[0]) is None:
            return CC_NOT_PRESENT, b""
        return CC_OK, b"\x00\x00"

    def _sensor_event_enable(self, data: bytes) -> tuple[int, bytes]:
        sensor = self._sensor(data[0])
        if sensor is None:
            return CC_NOT_PRESENT, b""
        return CC_OK, b"\xc0\x00\x00\x00\x00"

    # SDR repository
    def _sdr_info(self, data: bytes) -> tuple[int, bytes]:
        count = len(self.sensors.sdr)
        return CC_OK, struct.pack("<BHHIIB", 0x51, count, 0, 0, 0, 0x02)  # reserve supported

    def _reserve_sdr(self, data: bytes) -> tuple[int, bytes]:
        self.sdr_reservation = self.sdr_reservation % 0xFFFF + 1
        return CC_OK, struct.pack("<H", self.sdr_reservation)

    def _get_sdr(self, data: bytes) -> tuple[int, bytes]:
        reservation, record_id, offset, count = struct.unpack_from("<HHBB", data)
        records = self.sensors.sdr
        if not records:
            return CC_NOT_PRESENT, b""
        index = 0 if record_id == 0 else (len(records) - 1 if record_id == 0xFFFF else record_id - 1)
        if not 0 <= index < len(records):
            return CC_NOT_PRESENT, b""
        # The repository never changes while the BMC runs, so any reservation we issued stays valid.
        if offset and (reservation == 0 or reservation > self.sdr_reservation):
            return CC_RESERVATION, b""
        record = records[index]
        if offset > len(record):
            return CC_OUT_OF_RANGE, b""
        chunk = record[offset:] if count == 0xFF else record[offset:offset + count]
        next_id = 0xFFFF if index + 1 == len(records) else index + 2
        return CC_OK, struct.pack("<H", next_id) + chunk

    # SEL
    def _sel_info(self, data: bytes) -> tuple[int, bytes]:
        free = (SEL_CAPACITY - len(self.sel)) * 16
        support = 0x02 | (0x80 if self.sel_overflow else 0)  # reserve supported
        return CC_OK, struct.pack("<BHHIIB", 0x51, len(self.sel), min(free, 0xFFFE), self.sel_updated,
                                  self.sel_erased, support)

    def _reserve_sel(self, data: bytes) -> tuple[int, bytes]:
        self.sel_reservation = (self.sel_reservation + 1) % 0xFFFF + 1
        return CC_OK, struct.pack("<H", self.sel_reservation)

    def _get_sel_entry(self, data: bytes) -> tuple[int, bytes]:
        reservation, record_id, offset, count = struct.unpack_from("<HHBB", data)
        if not self.sel:
            return CC_NOT_PRESENT, b""
        if offset and reservation != self.sel_reservation:
            return CC_RESERVATION, b""
        if record_id == 0:
            index = 0
        elif record_id == 0xFFFF:
            index = len(self.sel) - 1
        else:
            index = next((i for i, r in enumerate(self.sel) if r[0] | r[1] << 8 == record_id), -1)
            if index < 0:
                return CC_NOT_PRESENT, b""
        entry = self.sel[index]
        next_id = 0xFFFF if index + 1 == len(self.sel) else self.sel[index + 1][0] | self.sel[index + 1][1] << 8
        chunk = entry[offset:] if count == 0xFF else entry[offset:offset + count]
        return CC_OK, struct.pack("<H", next_id) + chunk

    def _add_sel_entry(self, data: bytes) -> tuple[int, bytes]:
        if len(data) != 16:
            return CC_LENGTH, b""
        rid = self.add_sel(bytes(data))
        return CC_OK, struct.pack("<H", rid)

    def _clear_sel(self, data: bytes) -> tuple[int, bytes]:
        reservation = data[0] | data[1] << 8
        if data[2:5] != b"CLR":
            return CC_INVALID_FIELD, b""
        if reservation != self.sel_reservation or reservation == 0:
            return CC_RESERVATION, b""
        if data[5] == 0xAA:
            self.sel.clear()
            self.sel_next_id = 1
            self.sel_overflow = False
            self.sel_erased = self.sel_clock()
        elif data[5] != 0x00:
            return CC_INVALID_FIELD, b""
        return CC_OK, b"\x01"  # erasure completed

    def _get_sel_time(self, data: bytes) -> tuple[int, bytes]:
        return CC_OK, struct.pack("<I", self.sel_clock())

    def _set_sel_time(self, data: bytes) -> tuple[int, bytes]:
        (wanted,) = struct.unpack_from("<I", data)
        self.sel_time_offset = wanted - int(time.time())
        return CC_OK, b""

    # FRU
    def _fru_info(self, data: bytes) -> tuple[int, bytes]:
        if data[0] != 0:
            return CC_NOT_PRESENT, b""
        return CC_OK, struct.pack("<HB", len(self.fru_image()), 0x00)  # byte access

    def _read_fru(self, data: bytes) -> tuple[int, bytes]:
        device, offset, count = struct.unpack_from("<BHB", data)
        if device != 0:
            return CC_NOT_PRESENT, b""
        image = self.fru_image()
        if offset >= len(image):
            return CC_OUT_OF_RANGE, b""
        chunk = image[offset:offset + count]
        return CC_OK, bytes([len(chunk)]) + chunk


#: (netfn, cmd) -> (privilege needed, handler). Session commands (Get Channel Auth Capabilities,
#: Set Session Privilege Level, Close Session, Get Channel Cipher Suites, Get Channel Info: it
#: counts sessions) live in bmcserver.
COMMANDS: dict[tuple[int, int], tuple[int, Handler]] = {
    (NETFN_APP, 0x01): (PRIV_USER, Bmc._get_device_id),
    (NETFN_APP, 0x02): (PRIV_ADMIN, Bmc._cold_reset),
    (NETFN_APP, 0x03): (PRIV_ADMIN, Bmc._cold_reset),  # warm reset: the same silence
    (NETFN_APP, 0x04): (PRIV_USER, Bmc._self_test),
    (NETFN_APP, 0x08): (PRIV_USER, Bmc._guid),
    (NETFN_APP, 0x37): (PRIV_USER, Bmc._guid),
    (NETFN_APP, 0x41): (PRIV_USER, Bmc._channel_access),
    (NETFN_CHASSIS, 0x01): (PRIV_USER, Bmc._chassis_status),
    (NETFN_CHASSIS, 0x02): (PRIV_OPERATOR, Bmc._chassis_control),
    (NETFN_CHASSIS, 0x04): (PRIV_OPERATOR, Bmc._chassis_identify),
    (NETFN_CHASSIS, 0x07): (PRIV_USER, Bmc._restart_cause),
    (NETFN_CHASSIS, 0x08): (PRIV_OPERATOR, Bmc._set_boot_options),
    (NETFN_CHASSIS, 0x09): (PRIV_OPERATOR, Bmc._get_boot_options),
    (NETFN_SENSOR, 0x25): (PRIV_USER, Bmc._sensor_hysteresis),
    (NETFN_SENSOR, 0x27): (PRIV_USER, Bmc._sensor_thresholds),
    (NETFN_SENSOR, 0x29): (PRIV_USER, Bmc._sensor_event_enable),
    (NETFN_SENSOR, 0x2D): (PRIV_USER, Bmc._sensor_reading),
    (NETFN_STORAGE, 0x10): (PRIV_USER, Bmc._fru_info),
    (NETFN_STORAGE, 0x11): (PRIV_USER, Bmc._read_fru),
    (NETFN_STORAGE, 0x20): (PRIV_USER, Bmc._sdr_info),
    (NETFN_STORAGE, 0x22): (PRIV_USER, Bmc._reserve_sdr),
    (NETFN_STORAGE, 0x23): (PRIV_USER, Bmc._get_sdr),
    (NETFN_STORAGE, 0x40): (PRIV_USER, Bmc._sel_info),
    (NETFN_STORAGE, 0x42): (PRIV_USER, Bmc._reserve_sel),
    (NETFN_STORAGE, 0x43): (PRIV_USER, Bmc._get_sel_entry),
    (NETFN_STORAGE, 0x44): (PRIV_OPERATOR, Bmc._add_sel_entry),
    (NETFN_STORAGE, 0x47): (PRIV_OPERATOR, Bmc._clear_sel),
    (NETFN_STORAGE, 0x48): (PRIV_USER, Bmc._get_sel_time),
    (NETFN_STORAGE, 0x49): (PRIV_OPERATOR, Bmc._set_sel_time),
}
