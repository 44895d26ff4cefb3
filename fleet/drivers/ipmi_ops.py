"""The IPMI operations, as *generators of IPMI requests*: the language the driver and its workers share.

Each operation of :data:`OPS` yields :class:`Request` (netfn, command, data) and receives
:class:`Response`; it never does I/O itself. The worker's pump (:mod:`fleet.drivers.ipmi_pool`)
drives them over pyghmi sessions; :func:`run_sync` drives one over a plain
``pyghmi.ipmi.command.Command`` (tests). Failures are :class:`OpError` with a kind
(:data:`ERROR_KINDS`) that crosses the process boundary; :class:`fleet.drivers.ipmi.IpmiDriver`
maps it into :mod:`fleet.errors`. Parsing of SDRs, FRU areas and SEL records reuses pyghmi's
decoders.

This module imports neither the driver nor the pool: both import it (no import cycle).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fleet.errors import (
    AuthFailed,
    DeviceTimeout,
    DeviceUnreachable,
    DriverError,
    FatalError,
    RetryableError,
    Unsupported,
)

from .base import (
    BootDevice,
    FruInfo,
    SelEntry,
    SensorReading,
)

__all__ = [
    "DEFAULT_CIPHER_SUITES",
    "DROPS_SESSION",
    "ERROR_KINDS",
    "OPS",
    "BmcState",
    "Op",
    "OpError",
    "Pause",
    "Request",
    "Response",
    "advance",
    "completion_error",
    "run_sync",
]

DEFAULT_CIPHER_SUITES = (17, 3)

# ---------------------------------------------------------------------------------------------
# The language of operations: requests out, responses in, errors by kind
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One IPMI request. ``ok`` lists the completion codes the operation handles itself.

    ``retry=False`` sends once; with ``reply_within`` the operation then receives ``None`` if no
    answer came in that many seconds (BMC cold reset, whose answer may never come).
    """

    netfn: int
    command: int
    data: bytes = b""
    lun: int = 0
    ok: tuple[int, ...] = (0,)
    retry: bool = True
    reply_within: float | None = None


@dataclass(frozen=True)
class Pause:
    """Yielded instead of a request: resume the operation after ``seconds``, sending nothing."""

    seconds: float


@dataclass(frozen=True)
class Response:
    code: int
    data: bytes


class OpError(Exception):
    """An operation failed. ``kind`` says how (see :data:`ERROR_KINDS`); the message is for people."""

    def __init__(self, kind: str, message: str, *, code: int | None = None) -> None:
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown error kind {kind!r}")
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.code = code

    def __reduce__(self) -> Any:
        return (_rebuild_op_error, (self.kind, self.message, self.code))


def _rebuild_op_error(kind: str, message: str, code: int | None) -> OpError:
    return OpError(kind, message, code=code)


#: Error kinds crossing the process boundary, and the fleet error each becomes.
ERROR_KINDS: dict[str, type[DriverError]] = {
    "timeout": DeviceTimeout,
    "unreachable": DeviceUnreachable,
    "auth": AuthFailed,
    "unsupported": Unsupported,
    "retryable": RetryableError,
    "fatal": FatalError,
}

#: Completion codes (IPMI 2.0 table 5-2) worth another try later; the rest are fatal or unsupported.
_RETRYABLE_CODES = {0xC0, 0xC3, 0xC4, 0xCE, 0xCF, 0xD1, 0xD2, 0xD3, 0xFF}
_UNSUPPORTED_CODES = {0xC1, 0xC2, 0xC7, 0xC8, 0xC9, 0xCA, 0xCB, 0xCC, 0xCD, 0xD6}
_CODE_TEXT = {
    0xC0: "node busy", 0xC1: "invalid command", 0xC2: "command invalid for this LUN", 0xC3: "timeout",
    0xC4: "out of space", 0xC5: "reservation cancelled", 0xC6: "request data truncated",
    0xC7: "request data length invalid", 0xC8: "request data field length limit exceeded",
    0xC9: "parameter out of range", 0xCA: "cannot return number of requested data bytes",
    0xCB: "requested sensor, data or record not present", 0xCC: "invalid data field in request",
    0xCD: "command illegal for this sensor or record type", 0xCE: "command response could not be provided",
    0xCF: "duplicated request", 0xD0: "SDR repository in update mode", 0xD1: "firmware in update mode",
    0xD2: "BMC initialisation in progress", 0xD3: "destination unavailable",
    0xD4: "insufficient privilege level", 0xD5: "not supported in present state",
    0xD6: "parameter is illegal because a sub-function is disabled", 0xFF: "unspecified error",
}


def completion_error(code: int, what: str, hint: str = "") -> OpError:
    """The :class:`OpError` for a non-zero completion code of ``what``."""
    text = _CODE_TEXT.get(code, "unknown completion code")
    message = f"{what} failed with completion code 0x{code:02X} ({text})" + (f"; {hint}" if hint else "")
    if code == 0xD4:
        kind = "auth"
    elif code in _RETRYABLE_CODES:
        kind = "retryable"
    elif code in _UNSUPPORTED_CODES:
        kind = "unsupported"
    else:
        kind = "fatal"
    return OpError(kind, message, code=code)


@dataclass
class BmcState:
    """What a worker remembers about one BMC between operations (caches), plus the target's options.

    ``model_sdrs`` is shared by every BMC of the worker: the per-model SDR cache.
    """

    options: dict[str, Any] = field(default_factory=dict)
    model_sdrs: dict[tuple, Any] = field(default_factory=dict)
    device: dict[str, Any] | None = None
    sdr: Any = None
    sdr_stamp: tuple | None = None
    thresholds: dict[str, dict[str, float]] = field(default_factory=dict)
    fru_chunk: int | None = None
    sdr_reads: int = 0  # how many times this BMC's SDR repository was read (tests, stats)

    def quirk(self, quirk_id: str) -> Any:
        return (self.options.get("quirks") or {}).get(quirk_id)

    def forget_session_facts(self) -> None:
        """After a BMC reset: the device and its SDRs may have changed."""
        self.device = None
        self.sdr = None
        self.sdr_stamp = None
        self.thresholds.clear()


Op = Generator[Request | Pause, Response | None, Any]

# ---------------------------------------------------------------------------------------------
# Power
# ---------------------------------------------------------------------------------------------

_CHASSIS_CONTROL = {"off": 0, "on": 1, "cycle": 2, "reset": 3, "soft": 5}


def _chassis_hint(state: BmcState, code: int) -> str:
    why = state.quirk("power-needs-chassis-control-script")
    if why and code == 0xCC:
        return "profile quirk power-needs-chassis-control-script: a lab set-up fault, not a server fault"
    return ""


def op_power_status(state: BmcState) -> Op:
    """Get Chassis Status: power is on or off; anything else is an error, never "unknown"."""
    rsp = yield Request(0x00, 0x01, ok=tuple(range(256)))
    assert rsp is not None
    if rsp.code:
        raise completion_error(rsp.code, "Get Chassis Status", _chassis_hint(state, rsp.code))
    if not rsp.data:
        raise OpError("fatal", "Get Chassis Status answered without data")
    return "on" if rsp.data[0] & 0x01 else "off"


def op_power_control(state: BmcState, action: str) -> Op:
    """Chassis Control: on, off (hard), cycle, reset (hard), soft (ACPI shutdown request)."""
    rsp = yield Request(0x00, 0x02, bytes([_CHASSIS_CONTROL[action]]), ok=tuple(range(256)))
    assert rsp is not None
    if rsp.code:
        raise completion_error(rsp.code, f"Chassis Control ({action})", _chassis_hint(state, rsp.code))
    return None


# ---------------------------------------------------------------------------------------------
# Boot device (Get/Set System Boot Options, parameter 5: boot flags)
# ---------------------------------------------------------------------------------------------

_BOOT_SELECTOR = {"none": 0x0, "pxe": 0x1, "disk": 0x2, "cdrom": 0x5, "bios": 0x6}
_SELECTOR_BOOT = {0x0: "none", 0x1: "pxe", 0x2: "disk", 0x3: "disk", 0x5: "cdrom", 0x6: "bios"}


def op_get_boot(state: BmcState) -> Op:
    rsp = yield Request(0x00, 0x09, bytes([5, 0, 0]))
    assert rsp is not None
    data = rsp.data
    if len(data) < 4 or data[1] & 0x7F != 5:
        raise OpError("fatal", f"Get System Boot Options returned a malformed boot-flags parameter ({data.hex()})")
    flags, device = data[2], (data[3] >> 2) & 0x0F
    valid = bool(flags & 0x80)
    if not valid and not state.quirk("boot-flags-not-persistent"):
        return BootDevice("none")
    # With the quirk the BMC does not keep the flags byte (valid, persistent, UEFI), only the
    # device selector: report the selector and leave the flags False.
    name = _SELECTOR_BOOT.get(device)
    if name is None:
        raise OpError("unsupported", f"boot device selector 0x{device:X} has no Rackfleet name")
    return BootDevice(name, persistent=valid and bool(flags & 0x40), uefi=valid and bool(flags & 0x20))  # type: ignore[arg-type]


def op_set_boot(state: BmcState, device: str, persistent: bool, uefi: bool) -> Op:
    if device not in _BOOT_SELECTOR:
        raise OpError("unsupported", f"unknown boot device {device!r} (one of {', '.join(_BOOT_SELECTOR)})")
    # Parameter 3 (boot flag valid bit clearing): as pyghmi and ipmitool do, keep the valid bit
    # from being cleared by a PEF reset before our flags are read. Refusals here do not matter.
    yield Request(0x00, 0x08, bytes([3, 0x08]), ok=tuple(range(256)))
    flags = 0 if device == "none" else 0x80 | (0x40 if persistent else 0) | (0x20 if uefi else 0)
    rsp = yield Request(0x00, 0x08, bytes([5, flags, _BOOT_SELECTOR[device] << 2, 0, 0, 0]), ok=tuple(range(256)))
    assert rsp is not None
    if rsp.code:
        raise completion_error(rsp.code, "Set System Boot Options (boot flags)")
    return None


# ---------------------------------------------------------------------------------------------
# Device ID and the SDR repository (with the per-model cache)
# ---------------------------------------------------------------------------------------------


def _device_id(state: BmcState) -> Generator[Request, Response | None, dict[str, Any]]:
    if state.device is None:
        rsp = yield Request(0x06, 0x01)
        assert rsp is not None
        d = rsp.data
        if len(d) < 11:
            raise OpError("fatal", f"Get Device ID answered {len(d)} bytes, expected 11 or more")
        state.device = {
            "device_id": d[0], "device_revision": d[1] & 0x0F, "fw_major": d[2] & 0x7F, "fw_minor": d[3],
            "ipmi_version": d[4], "support": d[5],
            "manufacturer_id": d[6] | d[7] << 8 | d[8] << 16, "product_id": d[9] | d[10] << 8,
            "aux": bytes(d[11:15]),
        }
    return state.device


class _Sdrs:
    """The decoded SDRs of one BMC model: sensors keyed like pyghmi's ``SDR.sensors``."""

    def __init__(self, sensors: dict[str, Any]) -> None:
        self.sensors = sensors
        self.fru: dict[int, Any] = {}


def _event_consts() -> Any:
    import pyghmi.ipmi.private.constants as consts

    return consts


def _read_sdrs(state: BmcState, device: dict[str, Any]) -> Generator[Request, Response | None, _Sdrs]:
    from pyghmi.ipmi import sdr as pysdr

    consts = _event_consts()
    sensors: dict[str, Any] = {}
    rsv = 0
    recid = 0
    whole = True  # first try the whole record in one read (0xFF); fall back to chunks on 0xCA
    chunk = 32
    while recid != 0xFFFF:
        record = bytearray()
        offset = 0
        length = None
        nextid = None
        while length is None or offset < length:
            if whole and offset == 0:
                count = 0xFF
            elif length is None:
                count = 5
            else:
                count = min(chunk, length - offset)
            if not whole and rsv == 0:
                r = yield Request(0x0A, 0x22)
                assert r is not None
                rsv = r.data[0] | r.data[1] << 8
            rsp = yield Request(0x0A, 0x23, struct.pack("<HHBB", rsv, recid, offset, count),
                                ok=(0, 0xCA, 0xC5, 0xC7, 0xC8, 0xFF))
            assert rsp is not None
            if rsp.code == 0xC5:  # reservation lost: reserve again and restart this record
                rsv, record, offset, length = 0, bytearray(), 0, None
                continue
            if rsp.code in (0xCA, 0xC7, 0xC8, 0xFF) and (whole or chunk > 8):
                if whole:
                    whole = False
                else:
                    chunk //= 2
                record, offset, length = bytearray(), 0, None
                continue
            if rsp.code:
                raise completion_error(rsp.code, f"Get SDR record {recid}")
            nextid = rsp.data[0] | rsp.data[1] << 8
            part = rsp.data[2:]
            if not part:
                raise OpError("fatal", f"Get SDR record {recid} returned no data")
            record += part
            offset += len(part)
            if length is None and len(record) >= 5:
                length = record[4] + 5
        state.sdr_reads += 1
        entry = pysdr.SDREntry(bytes(record[:length]), consts, False, device["manufacturer_id"],
                               device["product_id"])
        if entry.sdrtype == pysdr.TYPE_SENSOR:
            key = f"{entry.sensor_owner}.{entry.sensor_number}.{entry.sensor_lun}"
            sensors.setdefault(key, entry)
        if nextid == recid:
            raise OpError("fatal", f"the BMC's SDR record {recid} points to itself")
        assert nextid is not None
        recid = nextid
    return _Sdrs(sensors)


_READING = object()  # in BmcState.model_sdrs: one BMC of the model is reading the SDRs now


def _sdrs(state: BmcState) -> Generator[Request, Response | None, _Sdrs]:
    """The BMC's SDRs, from the per-BMC cache, the per-model cache, or the BMC itself.

    The repository info (record count, last addition) is asked every time (one request): a BMC
    whose SDRs changed is read again. BMCs of the same model (manufacturer, product, device id,
    firmware, record count) share one decoded copy, so a sweep reads each model's SDRs once.
    """
    device = yield from _device_id(state)
    rsp = yield Request(0x0A, 0x20)
    assert rsp is not None
    if not rsp.data or rsp.data[0] != 0x51:
        raise OpError("unsupported", f"SDR repository version {rsp.data[:1].hex() or 'none'} is not 0x51")
    count = rsp.data[1] | rsp.data[2] << 8
    added = rsp.data[5:9]
    stamp = (count, bytes(added))
    if state.sdr is not None and state.sdr_stamp == stamp:
        return state.sdr
    model = (device["manufacturer_id"], device["product_id"], device["device_id"], device["fw_major"],
             device["fw_minor"], device["aux"], count)
    if state.options.get("sdr_cache", "model") != "model":
        shared = yield from _read_sdrs(state, device)
    else:
        while state.model_sdrs.get(model) is _READING:  # another BMC of this model is reading: wait for it
            yield Pause(0.01)
        shared = state.model_sdrs.get(model)
        if shared is None:
            state.model_sdrs[model] = _READING
            try:
                shared = yield from _read_sdrs(state, device)
            finally:
                if state.model_sdrs.get(model) is _READING:
                    del state.model_sdrs[model]
            state.model_sdrs[model] = shared
    state.sdr, state.sdr_stamp = shared, stamp
    state.thresholds.clear()
    return shared


# ---------------------------------------------------------------------------------------------
# Sensors
# ---------------------------------------------------------------------------------------------

_UNITS = {"°C": "celsius", "°F": "fahrenheit", "V": "volts", "A": "amps", "W": "watts", "RPM": "rpm"}
_KIND_BY_UNIT = {"celsius": "temperature", "fahrenheit": "temperature", "volts": "voltage", "amps": "current",
                 "watts": "power", "rpm": "fan"}
_KIND_BY_TYPE = {0x01: "temperature", 0x02: "voltage", 0x03: "current", 0x04: "fan"}
#: Get Sensor Thresholds byte order (after the mask) and the names Rackfleet gives them.
_THRESHOLD_NAMES = ("warning_low", "critical_low", "non_recoverable_low",
                    "warning_high", "critical_high", "non_recoverable_high")


def _raw_to_value(entry: Any, raw: int) -> float | None:
    from pyghmi.ipmi import sdr as pysdr

    if entry.linearization is None or entry.linearization > 11:
        return None  # non-linear sensors need Get Sensor Reading Factors per value: not supported
    if entry.numeric_format == 2:
        raw = pysdr.twos_complement(raw, 8)
    elif entry.numeric_format == 1:
        raw = pysdr.ones_complement(raw, 8)
    elif entry.numeric_format == 3:
        return None
    return round(entry.decode_value(None, raw), 6)


def _health_state(health: int) -> str:
    if health & 0b110:  # Critical or Failed
        return "critical"
    if health & 0b1:
        return "warning"
    return "ok"


def op_sensors(state: BmcState) -> Op:
    sdrs = yield from _sdrs(state)
    readings: list[SensorReading] = []
    for key in sorted(sdrs.sensors, key=lambda k: sdrs.sensors[k].sensor_number):
        entry = sdrs.sensors[key]
        if not entry.readable:
            continue
        unit = _UNITS.get(entry.baseunit, entry.baseunit)
        if entry.percent:
            unit = "percent"
        kind = _KIND_BY_UNIT.get(unit) or _KIND_BY_TYPE.get(entry.sensor_type_number, "other")
        rsp = yield Request(0x04, 0x2D, bytes([entry.sensor_number]), lun=entry.sensor_lun,
                            ok=tuple(range(256)))
        assert rsp is not None
        if rsp.code or len(rsp.data) < 2:
            state_name = "absent" if rsp.code == 0xCB else "unknown"
            readings.append(SensorReading(entry.sensor_name, kind, None, unit, state_name))
            continue
        decoded = entry.decode_sensor_reading(None, bytearray(rsp.data))
        if decoded.unavailable:
            readings.append(SensorReading(entry.sensor_name, kind, None, unit, "unknown"))
            continue
        thresholds: dict[str, float] = {}
        if entry.has_thresholds:
            if key not in state.thresholds:
                t = yield Request(0x04, 0x27, bytes([entry.sensor_number]), lun=entry.sensor_lun,
                                  ok=tuple(range(256)))
                assert t is not None
                found: dict[str, float] = {}
                if t.code == 0 and len(t.data) >= 7:
                    for bit, name in enumerate(_THRESHOLD_NAMES):
                        if t.data[0] & (1 << bit):
                            value = _raw_to_value(entry, t.data[1 + bit])
                            if value is not None:
                                found[name] = value
                state.thresholds[key] = found
            thresholds = dict(state.thresholds[key])
        value = round(decoded.value, 6) if decoded.value is not None else None
        readings.append(SensorReading(entry.sensor_name, kind, value, unit, _health_state(decoded.health),
                                      thresholds))
    return readings


# ---------------------------------------------------------------------------------------------
# SEL
# ---------------------------------------------------------------------------------------------


class _DecodeOnly:
    """Stands in for a pyghmi ``Command`` so pyghmi's SEL decoders run without I/O."""

    def __init__(self, sel_time: bytes) -> None:
        import pyghmi.ipmi.oem.generic as generic

        self._oem = generic.OEMHandler(None, None)
        self._sel_time = sel_time

    def get_event_constants(self) -> Any:
        return self._oem.get_oem_event_const()

    def xraw_command(self, netfn: int, command: int, **_: Any) -> dict[str, Any]:
        if (netfn, command) != (0x0A, 0x48):
            raise RuntimeError("only Get SEL Time is answered from memory")
        return {"data": memoryview(self._sel_time)}


def _severity(health: int) -> str:
    if health & 0b110:
        return "critical"
    if health & 0b1:
        return "warning"
    return "info"


def _read_sel(start: int, rsv: int) -> Generator[Request, Response | None, list[tuple[int, bytes]]]:
    records: list[tuple[int, bytes]] = []
    current = start
    while current != 0xFFFF:
        rsp = yield Request(0x0A, 0x43, struct.pack("<HHBB", rsv, current, 0, 0xFF), ok=(0, 0xCB))
        assert rsp is not None
        if rsp.code == 0xCB:  # empty, or the record vanished
            break
        nxt = rsp.data[0] | rsp.data[1] << 8
        records.append((current, bytes(rsp.data[2:18])))
        if nxt == current:
            break
        current = nxt
    return records


def op_sel(state: BmcState, clear: bool = False) -> Op:
    """Read the SEL (and clear it atomically when asked: what was read is what is cleared)."""
    from pyghmi.ipmi import events

    info = yield Request(0x0A, 0x40)
    assert info is not None
    count = info.data[1] | info.data[2] << 8 if len(info.data) >= 3 else 0
    raw = (yield from _read_sel(0, 0)) if count else []
    if clear:
        for _attempt in range(3):
            r = yield Request(0x0A, 0x42)
            assert r is not None
            rsv = r.data[0] | r.data[1] << 8
            if raw:  # entries added since the read: fetch them under the reservation
                tail = yield from _read_sel(raw[-1][0], rsv)
                raw = raw[:-1] + tail
            rsp = yield Request(0x0A, 0x47, struct.pack("<H", rsv) + b"CLR\xaa", ok=(0, 0xC5))
            assert rsp is not None
            if rsp.code == 0:
                break
        else:
            raise OpError("retryable", "Clear SEL: the reservation was cancelled three times (busy SEL)")
    sdrs: Any = None
    try:
        sdrs = yield from _sdrs(state)
    except OpError:
        sdrs = _Sdrs({})  # names then read "Sensor N"
    t = yield Request(0x0A, 0x48)
    assert t is not None
    decoder = _DecodeOnly(bytes(t.data[:4]))
    handler = events.EventHandler(sdrs, decoder)
    decoded = [handler._sel_decode(bytearray(record)) for _, record in raw]
    events._fix_sel_time(decoded, decoder)
    entries = []
    for (_, record), ev in zip(raw, decoded, strict=True):
        ts = None
        if ev.get("timestamp"):
            ts = datetime.fromisoformat(ev["timestamp"]).astimezone().astimezone(UTC)
        text = ev.get("event") or ev.get("oemdata", "")
        if isinstance(text, bytes | bytearray | memoryview):
            text = "OEM record " + bytes(text).hex()
        if ev.get("deassertion"):
            text = f"{text} (deasserted)"
        extra = ev.get("event_data")
        if extra:
            text = f"{text}: {extra}"
        sensor = ev.get("component") or ""
        entries.append(SelEntry(ev["record_id"], ts, str(sensor), str(text),
                                _severity(ev.get("severity", 0) or 0), record.hex()))
    return entries


def op_clear_sel(state: BmcState) -> Op:
    r = yield Request(0x0A, 0x42)
    assert r is not None
    rsv = r.data[0] | r.data[1] << 8
    rsp = yield Request(0x0A, 0x47, struct.pack("<H", rsv) + b"CLR\xaa", ok=tuple(range(256)))
    assert rsp is not None
    if rsp.code:
        raise completion_error(rsp.code, "Clear SEL")
    return None


# ---------------------------------------------------------------------------------------------
# FRU
# ---------------------------------------------------------------------------------------------

FRU_CHUNK = 224  # what pyghmi asks for; many BMCs refuse more
_FRU_TOO_BIG = (0xC7, 0xC8, 0xC9, 0xCA)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    return str(value).strip()


def op_fru(state: BmcState) -> Op:
    """FRU device 0: read in chunks; on 0xC8 (and 0xC9/0xCA) retry with smaller chunks.

    The chunk that worked is remembered for the BMC. A profile quirk ``fru-read-max-bytes``
    sets the first chunk size.
    """
    from pyghmi.ipmi import fru as pyfru

    info = yield Request(0x0A, 0x10, bytes([0]))
    assert info is not None
    size = info.data[0] | info.data[1] << 8
    words = bool(info.data[2] & 1) if len(info.data) > 2 else False
    chunk = state.fru_chunk or int(state.quirk("fru-read-max-bytes") or FRU_CHUNK)
    data = bytearray()
    while len(data) < size:
        want = min(chunk, size - len(data))
        offset = len(data) // 2 if words else len(data)
        count = (want + 1) // 2 if words else want
        rsp = yield Request(0x0A, 0x11, bytes([0, offset & 0xFF, offset >> 8, count]),
                            ok=(0, *_FRU_TOO_BIG))
        assert rsp is not None
        if rsp.code in _FRU_TOO_BIG:
            if chunk <= 8:
                raise completion_error(rsp.code, f"Read FRU Data (even {chunk}-byte chunks)")
            chunk = max(8, chunk // 2)
            continue
        got = rsp.data[0] * (2 if words else 1)
        if got == 0:
            break
        data += rsp.data[1:1 + got]
        state.fru_chunk = chunk
    parsed = pyfru.FRU(rawdata=bytes(data)).info or {}
    device = state.device or {}
    extra = {
        "chassis_part_number": _text(parsed.get("Chassis part number")),
        "chassis_serial": _text(parsed.get("Chassis serial number")),
        "chassis_type": _text(parsed.get("Chassis type")),
        "board_manufacturer": _text(parsed.get("Board manufacturer")),
        "board_product": _text(parsed.get("Board product name")),
        "board_part_number": _text(parsed.get("Board model")),
        "product_version": _text(parsed.get("Hardware Version")),
    }
    if device:
        extra["ipmi_manufacturer_id"] = str(device["manufacturer_id"])
        extra["ipmi_product_id"] = str(device["product_id"])
    return FruInfo(
        manufacturer=_text(parsed.get("Manufacturer")) or extra["board_manufacturer"],
        product=_text(parsed.get("Product name")) or extra["board_product"],
        serial=_text(parsed.get("Serial Number")) or extra["chassis_serial"],
        part_number=_text(parsed.get("Model")) or extra["board_part_number"],
        asset_tag=_text(parsed.get("Asset Number")),
        board_serial=_text(parsed.get("Board serial number")),
        extra={k: v for k, v in extra.items() if v},
    )


def op_fru_with_device(state: BmcState) -> Op:
    yield from _device_id(state)
    return (yield from op_fru(state))


# ---------------------------------------------------------------------------------------------
# BMC
# ---------------------------------------------------------------------------------------------


def op_bmc_reset(state: BmcState) -> Op:
    """Cold Reset. Sent once: the BMC may reset before it answers; silence for 2 s counts as done."""
    rsp = yield Request(0x06, 0x02, retry=False, reply_within=2.0, ok=tuple(range(256)))
    state.forget_session_facts()
    if rsp is not None and rsp.code:
        raise completion_error(rsp.code, "Cold Reset")
    return None


#: Operation name -> generator function ``f(state, *args)``. The worker runs them by name.
OPS: dict[str, Callable[..., Op]] = {
    "power_status": op_power_status,
    "power_control": op_power_control,
    "get_boot": op_get_boot,
    "set_boot": op_set_boot,
    "sensors": op_sensors,
    "sel": op_sel,
    "clear_sel": op_clear_sel,
    "fru": op_fru_with_device,
    "bmc_reset": op_bmc_reset,
}
#: Operations after which the worker drops the session (the BMC is resetting).
DROPS_SESSION = frozenset({"bmc_reset"})


def run_sync(op: Op, command: Any) -> Any:
    """Drive an operation over a synchronous ``pyghmi.ipmi.command.Command`` (tests, one-off use)."""
    try:
        request = next(op)
        while True:
            if isinstance(request, Pause):
                time.sleep(request.seconds)
                request = op.send(None)
                continue
            rsp = command.raw_command(netfn=request.netfn, command=request.command, data=request.data,
                                      retry=request.retry, rslun=request.lun)
            if not rsp:
                response = None
            elif "code" not in rsp or rsp.get("code") == 0xFFFF:
                raise OpError("timeout", f"no answer to netfn 0x{request.netfn:02X} cmd 0x{request.command:02X}")
            else:
                response = Response(rsp["code"], bytes(rsp.get("data", b"")))
            request = advance(op, request, response)
    except StopIteration as done:
        return done.value


def advance(op: Op, request: Request, response: Response | None) -> Request:
    """Feed ``response`` to ``op``; a completion code ``request`` does not accept is thrown into it."""
    if response is not None and response.code not in request.ok:
        return op.throw(completion_error(response.code, f"netfn 0x{request.netfn:02X} command "
                                                        f"0x{request.command:02X}"))
    return op.send(response)


