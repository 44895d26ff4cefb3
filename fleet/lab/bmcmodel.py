"""One simulated BMC's state: host power and boot flags, fault switches, sensor readings, SEL, resets.

Everything per BMC is kept small, because one process serves thousands: sensor readings are
computed from the clock when asked (no timers), power transitions are applied lazily when the state
is next looked at, the SDR is shared by every BMC with the same sensor set
(:class:`fleet.lab.bmcspec.SensorSet`), and the FRU image is built on demand. A BMC whose host is a
real VM hands power to a :class:`PowerBackend` (:class:`fleet.lab.qemu.QemuBackend`).
:class:`BmcModel` is what the server's control interface looks at and flips;
:class:`fleet.lab.bmc.Bmc` adds the IPMI commands that read and change it.
"""

from __future__ import annotations

import dataclasses
import struct
import time
import zlib
from typing import Any, Protocol

from fleet.drivers.ipmi.codes import (
    BOOT_DEVICE_SELECTORS,
    BOOT_FLAG_EFI,
    BOOT_FLAG_PERSISTENT,
    BOOT_FLAG_VALID,
    EVENT_DEASSERTION,
    EVENT_TYPE_SENSOR_SPECIFIC,
    EVENT_TYPE_THRESHOLD,
    EVM_REV,
    MEMORY_UNCORRECTABLE_ECC,
    SEL_OEM_NON_TIMESTAMPED,
    SEL_SYSTEM_EVENT,
    SensorType,
)

from .bmcspec import FRU_MFG_MINUTES, BmcSpec, SensorDef, SensorSet, build_fru

__all__ = ["CYCLE_OFF_SECONDS", "FAULT_KINDS", "SEL_CAPACITY", "BmcModel", "BootRequest", "PowerBackend"]

#: Fault switches a control request may flip (docs/lab.md).
FAULT_KINDS = ("dead", "slow", "wrong-password", "stuck-power", "sensor-critical", "ecc", "redfish-dead")
#: Seconds the system stays off during a power cycle (ipmi_sim: about 1 s).
CYCLE_OFF_SECONDS = 1.0
SEL_CAPACITY = 512
#: Get System Restart Cause: a Chassis Control command.
RESTART_CAUSE_CHASSIS_CONTROL = 0x01
_BOOT_NAMES = {v: k for k, v in BOOT_DEVICE_SELECTORS.items()}



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


class BmcModel:
    """One simulated BMC's state; the control interface flips its faults (:class:`fleet.lab.bmc.Bmc` answers IPMI).

    Times are ``time.monotonic()`` seconds; SEL timestamps are wall-clock seconds since 1970.
    """

    __slots__ = (
        "_pending", "backend", "boot_count", "boot_flags", "boot_info_ack", "boot_valid_clearing", "dark_until", "dead",
        "ecc_count", "last_boot", "overrides", "phase", "power_on", "redfish_dead", "reset_count", "restart_cause",
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
        self.redfish_dead = False  # only its Redfish side hangs (IPMI answers): the fallback case
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
        valid = bool(flags[0] & BOOT_FLAG_VALID)
        device = _BOOT_NAMES.get((flags[1] >> 2) & 0x0F, "none") if valid else "none"
        self.last_boot = "disk" if device == "none" else device
        if valid and not flags[0] & BOOT_FLAG_PERSISTENT:
            self.boot_flags = bytes([flags[0] & ~BOOT_FLAG_VALID & 0xFF]) + flags[1:]
        return BootRequest(None if device == "none" else device, uefi=valid and bool(flags[0] & BOOT_FLAG_EFI))

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
        self.restart_cause = RESTART_CAUSE_CHASSIS_CONTROL

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
        self.restart_cause = RESTART_CAUSE_CHASSIS_CONTROL

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
        elif kind == "redfish-dead":
            self.redfish_dead = on
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
                # Uncorrectable ECC (sensor type memory, offset 1); event data 3 (a sensor-specific
                # extension, data 1 bits 5:4 = 11b) names the memory module, here DIMM 0.
                self.add_sel(bytes([0x20, 0x00, EVM_REV, SensorType.MEMORY, mem.number if mem else 0xFF,
                                    EVENT_TYPE_SENSOR_SPECIFIC, 0x30 | MEMORY_UNCORRECTABLE_ECC, 0xFF, 0x00]))
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
            self.add_sel(bytes([0x20, 0x00, EVM_REV, sensor.sensor_type, sensor.number, EVENT_TYPE_THRESHOLD, 0x59, raw,
                                threshold]))
        elif self.overrides and sensor.number in self.overrides:
            raw = self.overrides.pop(sensor.number)
            self.overrides = self.overrides or None
            self.add_sel(bytes([0x20, 0x00, EVM_REV, sensor.sensor_type, sensor.number,
                                EVENT_DEASSERTION | EVENT_TYPE_THRESHOLD, 0x59, raw, threshold]))

    def faults(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.dead:
            out["dead"] = True
        if self.redfish_dead:
            out["redfish-dead"] = True
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
                "device": _BOOT_NAMES.get((flags[1] >> 2) & 0x0F, "unknown"), "valid": bool(flags[0] & BOOT_FLAG_VALID),
                "persistent": bool(flags[0] & BOOT_FLAG_PERSISTENT), "uefi": bool(flags[0] & BOOT_FLAG_EFI),
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
            timestamped = rtype < SEL_OEM_NON_TIMESTAMPED
            tail = record[7:] if timestamped else record[3:]
            head = struct.pack("<HB", rid, rtype) + (struct.pack("<I", stamp) if timestamped else b"")
            entry = head + tail
        else:
            entry = struct.pack("<HBI", rid, SEL_SYSTEM_EVENT, stamp) + record
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

