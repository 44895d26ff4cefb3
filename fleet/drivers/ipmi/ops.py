"""The IPMI operations, as *generators of IPMI requests* (see :mod:`fleet.drivers.ipmi.operation`).

:data:`OPS` names them for the worker, which runs them by name: power status and chassis control,
the next boot device, sensors (in :mod:`fleet.drivers.ipmi.sdr`, with the SDR repository), the SEL,
the FRU, BMC cold reset. Parsing of FRU areas and SEL records reuses pyghmi's decoders. Profile
quirks acted on here: ``boot-flags-not-persistent``, ``power-needs-chassis-control-script``,
``fru-read-max-bytes``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Generator
from datetime import UTC, datetime
from typing import Any

from ..base import BootDevice, FruInfo, SelEntry
from .codes import (
    BOOT_DEVICE_SELECTORS,
    BOOT_FLAG_EFI,
    BOOT_FLAG_PERSISTENT,
    BOOT_FLAG_VALID,
    BOOT_VALID_BIT_KEEP_ON_TIMEOUT,
    CHASSIS_CONTROL,
    CLEAR_SEL_INITIATE,
    CLEAR_SEL_MAGIC,
    READ_WHOLE_RECORD,
    AppCmd,
    BootParam,
    Cc,
    ChassisCmd,
    NetFn,
    StorageCmd,
)
from .operation import BmcState, Op, OpError, Request, Response, completion_error
from .sdr import Sdrs, device_id, op_sensors, sdrs

__all__ = ["DROPS_SESSION", "OPS"]

# ---------------------------------------------------------------------------------------------
# Power
# ---------------------------------------------------------------------------------------------

def _chassis_hint(state: BmcState, code: int) -> str:
    why = state.quirk("power-needs-chassis-control-script")
    if why and code == Cc.INVALID_DATA_FIELD:
        return "profile quirk power-needs-chassis-control-script: a lab set-up fault, not a server fault"
    return ""


def op_power_status(state: BmcState) -> Op:
    """Get Chassis Status: power is on or off; anything else is an error, never "unknown"."""
    rsp = yield Request(NetFn.CHASSIS, ChassisCmd.GET_STATUS, ok=tuple(range(256)))
    assert rsp is not None
    if rsp.code:
        raise completion_error(rsp.code, "Get Chassis Status", _chassis_hint(state, rsp.code))
    if not rsp.data:
        raise OpError("fatal", "Get Chassis Status answered without data")
    return "on" if rsp.data[0] & 0x01 else "off"


def op_power_control(state: BmcState, action: str) -> Op:
    """Chassis Control: on, off (hard), cycle, reset (hard), soft (ACPI shutdown request)."""
    rsp = yield Request(NetFn.CHASSIS, ChassisCmd.CONTROL, bytes([CHASSIS_CONTROL[action]]), ok=tuple(range(256)))
    assert rsp is not None
    if rsp.code:
        raise completion_error(rsp.code, f"Chassis Control ({action})", _chassis_hint(state, rsp.code))
    return None


# ---------------------------------------------------------------------------------------------
# Boot device (Get/Set System Boot Options, parameter 5: boot flags)
# ---------------------------------------------------------------------------------------------

#: The boot devices Rackfleet names (BootTarget), and the name of each selector read back ("safe": disk).
_BOOT_SELECTOR = {name: BOOT_DEVICE_SELECTORS[name] for name in ("none", "pxe", "disk", "cdrom", "bios")}
_SELECTOR_BOOT = {**{v: k for k, v in _BOOT_SELECTOR.items()}, BOOT_DEVICE_SELECTORS["safe"]: "disk"}


def op_get_boot(state: BmcState) -> Op:
    rsp = yield Request(NetFn.CHASSIS, ChassisCmd.GET_BOOT_OPTIONS, bytes([BootParam.BOOT_FLAGS, 0, 0]))
    assert rsp is not None
    data = rsp.data
    if len(data) < 4 or data[1] & 0x7F != BootParam.BOOT_FLAGS:
        raise OpError("fatal", f"Get System Boot Options returned a malformed boot-flags parameter ({data.hex()})")
    flags, device = data[2], (data[3] >> 2) & 0x0F
    valid = bool(flags & BOOT_FLAG_VALID)
    if not valid and not state.quirk("boot-flags-not-persistent"):
        return BootDevice("none")
    # With the quirk the BMC does not keep the flags byte (valid, persistent, UEFI), only the
    # device selector: report the selector and leave the flags False.
    name = _SELECTOR_BOOT.get(device)
    if name is None:
        raise OpError("unsupported", f"boot device selector 0x{device:X} has no Rackfleet name")
    return BootDevice(name, persistent=valid and bool(flags & BOOT_FLAG_PERSISTENT),  # type: ignore[arg-type]
                      uefi=valid and bool(flags & BOOT_FLAG_EFI))


def op_set_boot(state: BmcState, device: str, persistent: bool, uefi: bool) -> Op:
    if device not in _BOOT_SELECTOR:
        raise OpError("unsupported", f"unknown boot device {device!r} (one of {', '.join(_BOOT_SELECTOR)})")
    # Parameter 3 (boot flag valid bit clearing): as pyghmi and ipmitool do, keep the valid bit
    # from being cleared by a PEF reset before our flags are read. Refusals here do not matter.
    yield Request(NetFn.CHASSIS, ChassisCmd.SET_BOOT_OPTIONS,
                  bytes([BootParam.VALID_BIT_CLEARING, BOOT_VALID_BIT_KEEP_ON_TIMEOUT]), ok=tuple(range(256)))
    flags = 0 if device == "none" else (BOOT_FLAG_VALID | (BOOT_FLAG_PERSISTENT if persistent else 0)
                                        | (BOOT_FLAG_EFI if uefi else 0))
    rsp = yield Request(NetFn.CHASSIS, ChassisCmd.SET_BOOT_OPTIONS,
                        bytes([BootParam.BOOT_FLAGS, flags, _BOOT_SELECTOR[device] << 2, 0, 0, 0]),
                        ok=tuple(range(256)))
    assert rsp is not None
    if rsp.code:
        raise completion_error(rsp.code, "Set System Boot Options (boot flags)")
    return None


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
        if (netfn, command) != (NetFn.STORAGE, StorageCmd.GET_SEL_TIME):
            raise RuntimeError("only Get SEL Time is answered from memory")
        return {"data": memoryview(self._sel_time)}


def _severity(health: int) -> str:
    if health & 0b110:
        return "critical"
    if health & 0b1:
        return "warning"
    return "info"


def _clear_sel_data(reservation: int) -> bytes:
    """Clear SEL's request data: the reservation, "CLR", initiate erase."""
    return struct.pack("<H", reservation) + CLEAR_SEL_MAGIC + bytes([CLEAR_SEL_INITIATE])


def _read_sel(start: int, rsv: int) -> Generator[Request, Response | None, list[tuple[int, bytes]]]:
    records: list[tuple[int, bytes]] = []
    current = start
    while current != 0xFFFF:
        rsp = yield Request(NetFn.STORAGE, StorageCmd.GET_SEL_ENTRY,
                            struct.pack("<HHBB", rsv, current, 0, READ_WHOLE_RECORD), ok=(Cc.OK, Cc.NOT_PRESENT))
        assert rsp is not None
        if rsp.code == Cc.NOT_PRESENT:  # empty, or the record vanished
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

    info = yield Request(NetFn.STORAGE, StorageCmd.GET_SEL_INFO)
    assert info is not None
    count = info.data[1] | info.data[2] << 8 if len(info.data) >= 3 else 0
    raw = (yield from _read_sel(0, 0)) if count else []
    if clear:
        for _attempt in range(3):
            r = yield Request(NetFn.STORAGE, StorageCmd.RESERVE_SEL)
            assert r is not None
            rsv = r.data[0] | r.data[1] << 8
            if raw:  # entries added since the read: fetch them under the reservation
                tail = yield from _read_sel(raw[-1][0], rsv)
                raw = raw[:-1] + tail
            rsp = yield Request(NetFn.STORAGE, StorageCmd.CLEAR_SEL, _clear_sel_data(rsv),
                                ok=(Cc.OK, Cc.RESERVATION_CANCELLED))
            assert rsp is not None
            if rsp.code == 0:
                break
        else:
            raise OpError("retryable", "Clear SEL: the reservation was cancelled three times (busy SEL)")
    repo: Any = None
    try:
        repo = yield from sdrs(state)
    except OpError:
        repo = Sdrs({})  # names then read "Sensor N"
    t = yield Request(NetFn.STORAGE, StorageCmd.GET_SEL_TIME)
    assert t is not None
    decoder = _DecodeOnly(bytes(t.data[:4]))
    handler = events.EventHandler(repo, decoder)
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
    r = yield Request(NetFn.STORAGE, StorageCmd.RESERVE_SEL)
    assert r is not None
    rsv = r.data[0] | r.data[1] << 8
    rsp = yield Request(NetFn.STORAGE, StorageCmd.CLEAR_SEL, _clear_sel_data(rsv), ok=tuple(range(256)))
    assert rsp is not None
    if rsp.code:
        raise completion_error(rsp.code, "Clear SEL")
    return None


# ---------------------------------------------------------------------------------------------
# FRU
# ---------------------------------------------------------------------------------------------

FRU_CHUNK = 224  # what pyghmi asks for; many BMCs refuse more
_FRU_TOO_BIG = (Cc.DATA_LENGTH_INVALID, Cc.DATA_LENGTH_LIMIT_EXCEEDED, Cc.OUT_OF_RANGE, Cc.CANNOT_RETURN_BYTES)


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

    info = yield Request(NetFn.STORAGE, StorageCmd.GET_FRU_INFO, bytes([0]))
    assert info is not None
    size = info.data[0] | info.data[1] << 8
    words = bool(info.data[2] & 1) if len(info.data) > 2 else False
    chunk = state.fru_chunk or int(state.quirk("fru-read-max-bytes") or FRU_CHUNK)
    data = bytearray()
    while len(data) < size:
        want = min(chunk, size - len(data))
        offset = len(data) // 2 if words else len(data)
        count = (want + 1) // 2 if words else want
        rsp = yield Request(NetFn.STORAGE, StorageCmd.READ_FRU, bytes([0, offset & 0xFF, offset >> 8, count]),
                            ok=(Cc.OK, *_FRU_TOO_BIG))
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
    yield from device_id(state)
    return (yield from op_fru(state))


# ---------------------------------------------------------------------------------------------
# BMC
# ---------------------------------------------------------------------------------------------


def op_bmc_reset(state: BmcState) -> Op:
    """Cold Reset. Sent once: the BMC may reset before it answers; silence for 2 s counts as done."""
    rsp = yield Request(NetFn.APP, AppCmd.COLD_RESET, retry=False, reply_within=2.0, ok=tuple(range(256)))
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
