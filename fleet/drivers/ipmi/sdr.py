"""The SDR repository of a BMC (with the per-model cache) and the sensor readings it describes.

:func:`device_id` (Get Device ID, asked once per session) and :func:`sdrs` (the decoded SDRs, from
the per-BMC cache, the per-model cache or the BMC) serve the operations of :mod:`fleet.drivers.ipmi.ops`
too: the SEL names its sensors from the SDRs, the FRU reports the device's ids. :func:`op_sensors` is
the ``sensors`` operation. SDR records are decoded by pyghmi's ``SDREntry``.
"""

from __future__ import annotations

import struct
from collections.abc import Generator
from typing import Any

from ..base import SensorReading
from .codes import READ_WHOLE_RECORD, RECORD_VERSION, THRESHOLDS, AppCmd, Cc, NetFn, SensorCmd, SensorType, StorageCmd
from .operation import BmcState, Op, OpError, Pause, Request, Response, completion_error

__all__ = ["Sdrs", "device_id", "op_sensors", "sdrs"]

# ---------------------------------------------------------------------------------------------
# Device ID and the SDR repository (with the per-model cache)
# ---------------------------------------------------------------------------------------------


def device_id(state: BmcState) -> Generator[Request, Response | None, dict[str, Any]]:
    """Get Device ID, once per session: ids, firmware, IPMI version (the SDR cache is keyed by them)."""
    if state.device is None:
        rsp = yield Request(NetFn.APP, AppCmd.GET_DEVICE_ID)
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


class Sdrs:
    """The decoded SDRs of one BMC model: sensors keyed like pyghmi's ``SDR.sensors``."""

    def __init__(self, sensors: dict[str, Any]) -> None:
        self.sensors = sensors
        self.fru: dict[int, Any] = {}


#: Completion codes of Get SDR that mean "ask for fewer bytes".
_TOO_MUCH = (Cc.CANNOT_RETURN_BYTES, Cc.DATA_LENGTH_INVALID, Cc.DATA_LENGTH_LIMIT_EXCEEDED, Cc.UNSPECIFIED)


def _event_consts() -> Any:
    import pyghmi.ipmi.private.constants as consts

    return consts


def _read_sdrs(state: BmcState, device: dict[str, Any]) -> Generator[Request, Response | None, Sdrs]:
    from pyghmi.ipmi import sdr as pysdr

    consts = _event_consts()
    sensors: dict[str, Any] = {}
    rsv = 0
    recid = 0
    whole = True  # first try the whole record in one read (0xFF); fall back to chunks on 0xCA
    chunk = 32
    while recid != 0xFFFF:  # 0xFFFF: the next id of the last record
        record = bytearray()
        offset = 0
        length = None
        nextid = None
        while length is None or offset < length:
            if whole and offset == 0:
                count = READ_WHOLE_RECORD
            elif length is None:
                count = 5
            else:
                count = min(chunk, length - offset)
            if not whole and rsv == 0:
                r = yield Request(NetFn.STORAGE, StorageCmd.RESERVE_SDR)
                assert r is not None
                rsv = r.data[0] | r.data[1] << 8
            rsp = yield Request(NetFn.STORAGE, StorageCmd.GET_SDR, struct.pack("<HHBB", rsv, recid, offset, count),
                                ok=(Cc.OK, Cc.RESERVATION_CANCELLED, *_TOO_MUCH))
            assert rsp is not None
            if rsp.code == Cc.RESERVATION_CANCELLED:  # reservation lost: reserve again and restart this record
                rsv, record, offset, length = 0, bytearray(), 0, None
                continue
            if rsp.code in _TOO_MUCH and (whole or chunk > 8):
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
    return Sdrs(sensors)


_READING = object()  # in BmcState.model_sdrs: one BMC of the model is reading the SDRs now


def sdrs(state: BmcState) -> Generator[Request, Response | None, Sdrs]:
    """The BMC's SDRs, from the per-BMC cache, the per-model cache, or the BMC itself.

    The repository info (record count, last addition) is asked every time (one request): a BMC
    whose SDRs changed is read again. BMCs of the same model (manufacturer, product, device id,
    firmware, record count) share one decoded copy, so a sweep reads each model's SDRs once.
    """
    device = yield from device_id(state)
    rsp = yield Request(NetFn.STORAGE, StorageCmd.GET_SDR_INFO)
    assert rsp is not None
    if not rsp.data or rsp.data[0] != RECORD_VERSION:
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
_KIND_BY_TYPE = {SensorType.TEMPERATURE: "temperature", SensorType.VOLTAGE: "voltage",
                 SensorType.CURRENT: "current", SensorType.FAN: "fan"}
#: The names Rackfleet gives the thresholds, in the order of Get Sensor Thresholds (codes.THRESHOLDS).
_THRESHOLD_NAMES = dict(zip(THRESHOLDS, ("warning_low", "critical_low", "non_recoverable_low",
                                         "warning_high", "critical_high", "non_recoverable_high"), strict=True))


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
    repo = yield from sdrs(state)
    readings: list[SensorReading] = []
    for key in sorted(repo.sensors, key=lambda k: repo.sensors[k].sensor_number):
        entry = repo.sensors[key]
        if not entry.readable:
            continue
        unit = _UNITS.get(entry.baseunit, entry.baseunit)
        if entry.percent:
            unit = "percent"
        kind = _KIND_BY_UNIT.get(unit) or _KIND_BY_TYPE.get(entry.sensor_type_number, "other")
        rsp = yield Request(NetFn.SENSOR, SensorCmd.GET_READING, bytes([entry.sensor_number]), lun=entry.sensor_lun,
                            ok=tuple(range(256)))
        assert rsp is not None
        if rsp.code or len(rsp.data) < 2:
            state_name = "absent" if rsp.code == Cc.NOT_PRESENT else "unknown"
            readings.append(SensorReading(entry.sensor_name, kind, None, unit, state_name))
            continue
        decoded = entry.decode_sensor_reading(None, bytearray(rsp.data))
        if decoded.unavailable:
            readings.append(SensorReading(entry.sensor_name, kind, None, unit, "unknown"))
            continue
        thresholds: dict[str, float] = {}
        if entry.has_thresholds:
            if key not in state.thresholds:
                t = yield Request(NetFn.SENSOR, SensorCmd.GET_THRESHOLDS, bytes([entry.sensor_number]),
                                  lun=entry.sensor_lun, ok=tuple(range(256)))
                assert t is not None
                found: dict[str, float] = {}
                if t.code == 0 and len(t.data) >= 7:
                    for bit, name in enumerate(_THRESHOLD_NAMES.values()):
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

