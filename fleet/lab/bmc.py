"""The simulated BMC answering IPMI: :meth:`Bmc.handle` gives a command's completion code and data.

A :class:`Bmc` is a :class:`~fleet.lab.bmcmodel.BmcModel` (power, boot flags, faults, sensors, SEL,
FRU) plus its IPMI commands, looked up in :data:`COMMANDS` by network function and command
(numbers from :mod:`fleet.drivers.ipmi.codes`, the ones the driver asks with). It knows nothing of
sockets or sessions: :mod:`fleet.lab.rmcpsession` does, and answers the session commands itself.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable

from fleet.drivers.ipmi.codes import (
    CC_PARAMETER_NOT_SUPPORTED,
    CHASSIS_CONTROL,
    CLEAR_SEL_GET_STATUS,
    CLEAR_SEL_INITIATE,
    CLEAR_SEL_MAGIC,
    READ_WHOLE_RECORD,
    RECORD_VERSION,
    THRESHOLDS,
    AppCmd,
    BootParam,
    Cc,
    ChassisCmd,
    NetFn,
    Privilege,
    SensorCmd,
    StorageCmd,
)

from .bmcmodel import SEL_CAPACITY, BmcModel
from .bmcspec import DEVICE_SUPPORT, FIRMWARE, MANUFACTURER_ID, PRODUCT_ID, SensorDef

__all__ = ["COMMANDS", "Bmc"]

Handler = Callable[["Bmc", bytes], tuple[int, bytes]]
_CHASSIS_ACTIONS = {v: k for k, v in CHASSIS_CONTROL.items()}


class Bmc(BmcModel):
    """One simulated BMC. :meth:`handle` answers a command; the control interface flips faults."""

    __slots__ = ()

    def handle(self, netfn: int, cmd: int, data: bytes, privilege: int) -> tuple[int, bytes]:
        """Answer one command at the session's ``privilege``: (completion code, response data)."""
        entry = COMMANDS.get((netfn, cmd))
        if entry is None:
            return Cc.INVALID_COMMAND, b""
        needed, handler = entry
        if privilege < needed:
            return Cc.INSUFFICIENT_PRIVILEGE, b""
        try:
            return handler(self, data)
        except (IndexError, struct.error):
            return Cc.DATA_LENGTH_INVALID, b""

    # Application
    def _get_device_id(self, data: bytes) -> tuple[int, bytes]:
        return Cc.OK, bytes([0x01, 0x01, FIRMWARE[0], FIRMWARE[1], 0x02, DEVICE_SUPPORT]) + struct.pack(
            "<I", MANUFACTURER_ID)[:3] + struct.pack("<H", PRODUCT_ID) + bytes(4)

    def _cold_reset(self, data: bytes) -> tuple[int, bytes]:
        return Cc.OK, b""  # the BMC goes dark after the answer is sent (rmcpsession)

    def _self_test(self, data: bytes) -> tuple[int, bytes]:
        return Cc.OK, b"\x55\x00"

    def _guid(self, data: bytes) -> tuple[int, bytes]:
        return Cc.OK, self.spec.guid

    def _channel_access(self, data: bytes) -> tuple[int, bytes]:
        channel = data[0] & 0x0F
        if channel not in (1, 0x0E):
            return Cc.NOT_PRESENT, b""
        return Cc.OK, bytes([0x22, Privilege.ADMINISTRATOR])  # alerting off, always available; limit admin

    def channel_info(self, channel: int, active_sessions: int) -> tuple[int, bytes]:
        """Get Channel Info: channel 0 IPMB, 1 the LAN (0x0E: this one), 0x0F the system interface."""
        iana = b"\xf2\x1b\x00\x00\x00"  # IPMI forum's IANA 7154, no auxiliary info
        if channel in (0x01, 0x0E):  # 802.3 LAN, IPMB-1.0 protocol, multi-session
            return Cc.OK, bytes([0x01, 0x04, 0x01, 0x80 | min(active_sessions, 0x3F)]) + iana
        if channel == 0x00:  # IPMB, session-less
            return Cc.OK, bytes([0x00, 0x01, 0x01, 0x00]) + iana
        if channel == 0x0F:  # system interface (KCS)
            return Cc.OK, bytes([0x0F, 0x0C, 0x05, 0x00]) + iana
        return Cc.NOT_PRESENT, b""

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
        return Cc.OK, bytes([current, 0x00, misc])

    def _chassis_control(self, data: bytes) -> tuple[int, bytes]:
        action = _CHASSIS_ACTIONS.get(data[0] & 0x0F)
        if action is None:
            return Cc.INVALID_DATA_FIELD, b""
        self.power(action)
        return Cc.OK, b""

    def _chassis_identify(self, data: bytes) -> tuple[int, bytes]:
        return Cc.OK, b""

    def _restart_cause(self, data: bytes) -> tuple[int, bytes]:
        return Cc.OK, bytes([self.restart_cause, 0x01])

    def _set_boot_options(self, data: bytes) -> tuple[int, bytes]:
        param = data[0] & 0x7F
        value = data[1:]
        if param == BootParam.SET_IN_PROGRESS:  # accepted, nothing to commit
            return Cc.OK, b""
        if param == BootParam.VALID_BIT_CLEARING:
            self.boot_valid_clearing = value[0] & 0x1F
        elif param == BootParam.INFO_ACKNOWLEDGE:
            mask, ack = value[0], value[1]
            self.boot_info_ack = (self.boot_info_ack & ~mask | ack & mask) & 0xFF
        elif param == BootParam.BOOT_FLAGS:
            if len(value) < 5:
                return Cc.DATA_LENGTH_INVALID, b""
            self.boot_flags = bytes(value[:5])
        else:
            return CC_PARAMETER_NOT_SUPPORTED, b""
        return Cc.OK, b""

    def _get_boot_options(self, data: bytes) -> tuple[int, bytes]:
        param = data[0] & 0x7F
        value = {BootParam.SET_IN_PROGRESS: b"\x00", BootParam.VALID_BIT_CLEARING: bytes([self.boot_valid_clearing]),
                 BootParam.INFO_ACKNOWLEDGE: bytes([0x00, self.boot_info_ack]),
                 BootParam.BOOT_FLAGS: self.boot_flags}.get(param)
        if value is None:
            return CC_PARAMETER_NOT_SUPPORTED, b""
        return Cc.OK, bytes([0x01, param]) + value

    # Sensors
    def _sensor(self, number: int) -> SensorDef | None:
        index = self.sensors.by_number.get(number)
        return None if index is None else self.sensors.sensors[index]

    def _sensor_reading(self, data: bytes) -> tuple[int, bytes]:
        sensor = self._sensor(data[0])
        if sensor is None:
            return Cc.NOT_PRESENT, b""
        now = time.monotonic()
        if sensor.discrete:
            states = 0x02 if self.ecc_count else 0x00  # offset 1: uncorrectable ECC
            return Cc.OK, bytes([0x00, 0xC0, states, 0x00])
        raw = self.sensor_raw(sensor, now)
        if raw is None:
            return Cc.OK, bytes([0x00, 0xE0, 0x00])  # scanning on, reading unavailable
        return Cc.OK, bytes([raw, 0xC0, sensor.status_bits(raw)])

    def _sensor_thresholds(self, data: bytes) -> tuple[int, bytes]:
        sensor = self._sensor(data[0])
        if sensor is None:
            return Cc.NOT_PRESENT, b""
        if sensor.discrete:
            return Cc.INVALID_COMMAND, b""
        mask = sum(1 << i for i, k in enumerate(THRESHOLDS) if k in sensor.thresholds)
        return Cc.OK, bytes([mask, *(sensor.thresholds.get(k, 0) for k in THRESHOLDS)])

    def _sensor_hysteresis(self, data: bytes) -> tuple[int, bytes]:
        if self._sensor(data[0]) is None:
            return Cc.NOT_PRESENT, b""
        return Cc.OK, b"\x00\x00"

    def _sensor_event_enable(self, data: bytes) -> tuple[int, bytes]:
        sensor = self._sensor(data[0])
        if sensor is None:
            return Cc.NOT_PRESENT, b""
        return Cc.OK, b"\xc0\x00\x00\x00\x00"

    # SDR repository
    def _sdr_info(self, data: bytes) -> tuple[int, bytes]:
        count = len(self.sensors.sdr)
        return Cc.OK, struct.pack("<BHHIIB", RECORD_VERSION, count, 0, 0, 0, 0x02)  # reserve supported

    def _reserve_sdr(self, data: bytes) -> tuple[int, bytes]:
        self.sdr_reservation = self.sdr_reservation % 0xFFFF + 1
        return Cc.OK, struct.pack("<H", self.sdr_reservation)

    def _get_sdr(self, data: bytes) -> tuple[int, bytes]:
        reservation, record_id, offset, count = struct.unpack_from("<HHBB", data)
        records = self.sensors.sdr
        if not records:
            return Cc.NOT_PRESENT, b""
        index = 0 if record_id == 0 else (len(records) - 1 if record_id == 0xFFFF else record_id - 1)
        if not 0 <= index < len(records):
            return Cc.NOT_PRESENT, b""
        # The repository never changes while the BMC runs, so any reservation we issued stays valid.
        if offset and (reservation == 0 or reservation > self.sdr_reservation):
            return Cc.RESERVATION_CANCELLED, b""
        record = records[index]
        if offset > len(record):
            return Cc.OUT_OF_RANGE, b""
        chunk = record[offset:] if count == READ_WHOLE_RECORD else record[offset:offset + count]
        next_id = 0xFFFF if index + 1 == len(records) else index + 2
        return Cc.OK, struct.pack("<H", next_id) + chunk

    # SEL
    def _sel_info(self, data: bytes) -> tuple[int, bytes]:
        free = (SEL_CAPACITY - len(self.sel)) * 16
        support = 0x02 | (0x80 if self.sel_overflow else 0)  # reserve supported
        return Cc.OK, struct.pack("<BHHIIB", RECORD_VERSION, len(self.sel), min(free, 0xFFFE), self.sel_updated,
                                  self.sel_erased, support)

    def _reserve_sel(self, data: bytes) -> tuple[int, bytes]:
        self.sel_reservation = (self.sel_reservation + 1) % 0xFFFF + 1
        return Cc.OK, struct.pack("<H", self.sel_reservation)

    def _get_sel_entry(self, data: bytes) -> tuple[int, bytes]:
        reservation, record_id, offset, count = struct.unpack_from("<HHBB", data)
        if not self.sel:
            return Cc.NOT_PRESENT, b""
        if offset and reservation != self.sel_reservation:
            return Cc.RESERVATION_CANCELLED, b""
        if record_id == 0:
            index = 0
        elif record_id == 0xFFFF:
            index = len(self.sel) - 1
        else:
            index = next((i for i, r in enumerate(self.sel) if r[0] | r[1] << 8 == record_id), -1)
            if index < 0:
                return Cc.NOT_PRESENT, b""
        entry = self.sel[index]
        next_id = 0xFFFF if index + 1 == len(self.sel) else self.sel[index + 1][0] | self.sel[index + 1][1] << 8
        chunk = entry[offset:] if count == READ_WHOLE_RECORD else entry[offset:offset + count]
        return Cc.OK, struct.pack("<H", next_id) + chunk

    def _add_sel_entry(self, data: bytes) -> tuple[int, bytes]:
        if len(data) != 16:
            return Cc.DATA_LENGTH_INVALID, b""
        rid = self.add_sel(bytes(data))
        return Cc.OK, struct.pack("<H", rid)

    def _clear_sel(self, data: bytes) -> tuple[int, bytes]:
        reservation = data[0] | data[1] << 8
        if data[2:5] != CLEAR_SEL_MAGIC:
            return Cc.INVALID_DATA_FIELD, b""
        if reservation != self.sel_reservation or reservation == 0:
            return Cc.RESERVATION_CANCELLED, b""
        if data[5] == CLEAR_SEL_INITIATE:
            self.sel.clear()
            self.sel_next_id = 1
            self.sel_overflow = False
            self.sel_erased = self.sel_clock()
        elif data[5] != CLEAR_SEL_GET_STATUS:
            return Cc.INVALID_DATA_FIELD, b""
        return Cc.OK, b"\x01"  # erasure completed

    def _get_sel_time(self, data: bytes) -> tuple[int, bytes]:
        return Cc.OK, struct.pack("<I", self.sel_clock())

    def _set_sel_time(self, data: bytes) -> tuple[int, bytes]:
        (wanted,) = struct.unpack_from("<I", data)
        self.sel_time_offset = wanted - int(time.time())
        return Cc.OK, b""

    # FRU
    def _fru_info(self, data: bytes) -> tuple[int, bytes]:
        if data[0] != 0:
            return Cc.NOT_PRESENT, b""
        return Cc.OK, struct.pack("<HB", len(self.fru_image()), 0x00)  # byte access

    def _read_fru(self, data: bytes) -> tuple[int, bytes]:
        device, offset, count = struct.unpack_from("<BHB", data)
        if device != 0:
            return Cc.NOT_PRESENT, b""
        image = self.fru_image()
        if offset >= len(image):
            return Cc.OUT_OF_RANGE, b""
        chunk = image[offset:offset + count]
        return Cc.OK, bytes([len(chunk)]) + chunk


#: (netfn, cmd) -> (privilege needed, handler). Session commands (Get Channel Auth Capabilities,
#: Set Session Privilege Level, Close Session, Get Channel Cipher Suites, Get Channel Info: it
#: counts sessions) live in fleet.lab.rmcpsession.
COMMANDS: dict[tuple[int, int], tuple[int, Handler]] = {
    (NetFn.APP, AppCmd.GET_DEVICE_ID): (Privilege.USER, Bmc._get_device_id),
    (NetFn.APP, AppCmd.COLD_RESET): (Privilege.ADMINISTRATOR, Bmc._cold_reset),
    (NetFn.APP, AppCmd.WARM_RESET): (Privilege.ADMINISTRATOR, Bmc._cold_reset),  # the same silence
    (NetFn.APP, AppCmd.GET_SELF_TEST_RESULTS): (Privilege.USER, Bmc._self_test),
    (NetFn.APP, AppCmd.GET_DEVICE_GUID): (Privilege.USER, Bmc._guid),
    (NetFn.APP, AppCmd.GET_SYSTEM_GUID): (Privilege.USER, Bmc._guid),
    (NetFn.APP, AppCmd.GET_CHANNEL_ACCESS): (Privilege.USER, Bmc._channel_access),
    (NetFn.CHASSIS, ChassisCmd.GET_STATUS): (Privilege.USER, Bmc._chassis_status),
    (NetFn.CHASSIS, ChassisCmd.CONTROL): (Privilege.OPERATOR, Bmc._chassis_control),
    (NetFn.CHASSIS, ChassisCmd.IDENTIFY): (Privilege.OPERATOR, Bmc._chassis_identify),
    (NetFn.CHASSIS, ChassisCmd.GET_RESTART_CAUSE): (Privilege.USER, Bmc._restart_cause),
    (NetFn.CHASSIS, ChassisCmd.SET_BOOT_OPTIONS): (Privilege.OPERATOR, Bmc._set_boot_options),
    (NetFn.CHASSIS, ChassisCmd.GET_BOOT_OPTIONS): (Privilege.OPERATOR, Bmc._get_boot_options),
    (NetFn.SENSOR, SensorCmd.GET_HYSTERESIS): (Privilege.USER, Bmc._sensor_hysteresis),
    (NetFn.SENSOR, SensorCmd.GET_THRESHOLDS): (Privilege.USER, Bmc._sensor_thresholds),
    (NetFn.SENSOR, SensorCmd.GET_EVENT_ENABLE): (Privilege.USER, Bmc._sensor_event_enable),
    (NetFn.SENSOR, SensorCmd.GET_READING): (Privilege.USER, Bmc._sensor_reading),
    (NetFn.STORAGE, StorageCmd.GET_FRU_INFO): (Privilege.USER, Bmc._fru_info),
    (NetFn.STORAGE, StorageCmd.READ_FRU): (Privilege.USER, Bmc._read_fru),
    (NetFn.STORAGE, StorageCmd.GET_SDR_INFO): (Privilege.USER, Bmc._sdr_info),
    (NetFn.STORAGE, StorageCmd.RESERVE_SDR): (Privilege.USER, Bmc._reserve_sdr),
    (NetFn.STORAGE, StorageCmd.GET_SDR): (Privilege.USER, Bmc._get_sdr),
    (NetFn.STORAGE, StorageCmd.GET_SEL_INFO): (Privilege.USER, Bmc._sel_info),
    (NetFn.STORAGE, StorageCmd.RESERVE_SEL): (Privilege.USER, Bmc._reserve_sel),
    (NetFn.STORAGE, StorageCmd.GET_SEL_ENTRY): (Privilege.USER, Bmc._get_sel_entry),
    (NetFn.STORAGE, StorageCmd.ADD_SEL_ENTRY): (Privilege.OPERATOR, Bmc._add_sel_entry),
    (NetFn.STORAGE, StorageCmd.CLEAR_SEL): (Privilege.OPERATOR, Bmc._clear_sel),
    (NetFn.STORAGE, StorageCmd.GET_SEL_TIME): (Privilege.USER, Bmc._get_sel_time),
    (NetFn.STORAGE, StorageCmd.SET_SEL_TIME): (Privilege.OPERATOR, Bmc._set_sel_time),
}
