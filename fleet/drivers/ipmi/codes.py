"""IPMI 2.0 protocol numbers, in one place for the driver and for the lab BMC that answers it.

Network functions and commands, completion codes, privilege levels, chassis control and boot
options, sensor types and units, SDR and SEL record types. The IPMI driver
(:mod:`fleet.drivers.ipmi`) asks with them and the lab BMC (:mod:`fleet.lab.bmc`,
:mod:`fleet.lab.rmcpsession`) answers with them, so that the two cannot drift apart. References are
to the IPMI v2.0 specification, rev. 1.1.

This module imports nothing: the lab's BMC server imports it without the driver or pyghmi.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "BOOT_DEVICE_SELECTORS",
    "BOOT_FLAG_EFI",
    "BOOT_FLAG_PERSISTENT",
    "BOOT_FLAG_VALID",
    "BOOT_VALID_BIT_KEEP_ON_TIMEOUT",
    "CC_INVALID_SESSION_ID",
    "CC_PARAMETER_NOT_SUPPORTED",
    "CC_PRIVILEGE_EXCEEDS_LIMIT",
    "CC_PRIVILEGE_NOT_AVAILABLE",
    "CHASSIS_CONTROL",
    "CLEAR_SEL_GET_STATUS",
    "CLEAR_SEL_INITIATE",
    "CLEAR_SEL_MAGIC",
    "COMPLETION_TEXT",
    "DEVICE_SUPPORT_CHASSIS",
    "DEVICE_SUPPORT_FRU",
    "DEVICE_SUPPORT_SDR_REPOSITORY",
    "DEVICE_SUPPORT_SEL",
    "DEVICE_SUPPORT_SENSOR",
    "EVENT_DEASSERTION",
    "EVENT_TYPE_SENSOR_SPECIFIC",
    "EVENT_TYPE_THRESHOLD",
    "EVM_REV",
    "MEMORY_UNCORRECTABLE_ECC",
    "READ_WHOLE_RECORD",
    "RECORD_VERSION",
    "SDR_COMPACT_SENSOR",
    "SDR_FULL_SENSOR",
    "SDR_MC_DEVICE_LOCATOR",
    "SEL_OEM_NON_TIMESTAMPED",
    "SEL_SYSTEM_EVENT",
    "THRESHOLDS",
    "AppCmd",
    "BootParam",
    "Cc",
    "ChassisCmd",
    "NetFn",
    "Privilege",
    "SensorCmd",
    "SensorType",
    "SensorUnit",
    "StorageCmd",
]

# ---------------------------------------------------------------------------------------------
# Network functions and commands (appendix G)
# ---------------------------------------------------------------------------------------------


class NetFn(IntEnum):
    """Network functions of requests (the response's is one more)."""

    CHASSIS = 0x00
    SENSOR = 0x04  # Sensor/Event
    APP = 0x06
    STORAGE = 0x0A


class AppCmd(IntEnum):
    """Application commands (NetFn.APP), including the session commands."""

    GET_DEVICE_ID = 0x01
    COLD_RESET = 0x02
    WARM_RESET = 0x03
    GET_SELF_TEST_RESULTS = 0x04
    GET_DEVICE_GUID = 0x08
    GET_SYSTEM_GUID = 0x37
    GET_CHANNEL_AUTH_CAPABILITIES = 0x38
    SET_SESSION_PRIVILEGE_LEVEL = 0x3B
    CLOSE_SESSION = 0x3C
    GET_CHANNEL_ACCESS = 0x41
    GET_CHANNEL_INFO = 0x42
    GET_CHANNEL_CIPHER_SUITES = 0x54


class ChassisCmd(IntEnum):
    """Chassis commands (NetFn.CHASSIS)."""

    GET_STATUS = 0x01
    CONTROL = 0x02
    IDENTIFY = 0x04
    GET_RESTART_CAUSE = 0x07
    SET_BOOT_OPTIONS = 0x08
    GET_BOOT_OPTIONS = 0x09


class SensorCmd(IntEnum):
    """Sensor/Event commands (NetFn.SENSOR)."""

    GET_HYSTERESIS = 0x25
    GET_THRESHOLDS = 0x27
    GET_EVENT_ENABLE = 0x29
    GET_READING = 0x2D


class StorageCmd(IntEnum):
    """Storage commands (NetFn.STORAGE): FRU, SDR repository, SEL."""

    GET_FRU_INFO = 0x10
    READ_FRU = 0x11
    GET_SDR_INFO = 0x20
    RESERVE_SDR = 0x22
    GET_SDR = 0x23
    GET_SEL_INFO = 0x40
    RESERVE_SEL = 0x42
    GET_SEL_ENTRY = 0x43
    ADD_SEL_ENTRY = 0x44
    CLEAR_SEL = 0x47
    GET_SEL_TIME = 0x48
    SET_SEL_TIME = 0x49


# ---------------------------------------------------------------------------------------------
# Completion codes (table 5-2) and privilege levels
# ---------------------------------------------------------------------------------------------


class Cc(IntEnum):
    """Generic completion codes (table 5-2)."""

    OK = 0x00
    NODE_BUSY = 0xC0
    INVALID_COMMAND = 0xC1
    INVALID_FOR_LUN = 0xC2
    TIMEOUT = 0xC3
    OUT_OF_SPACE = 0xC4
    RESERVATION_CANCELLED = 0xC5
    DATA_TRUNCATED = 0xC6
    DATA_LENGTH_INVALID = 0xC7
    DATA_LENGTH_LIMIT_EXCEEDED = 0xC8
    OUT_OF_RANGE = 0xC9
    CANNOT_RETURN_BYTES = 0xCA
    NOT_PRESENT = 0xCB
    INVALID_DATA_FIELD = 0xCC
    ILLEGAL_FOR_SENSOR = 0xCD
    RESPONSE_UNAVAILABLE = 0xCE
    DUPLICATED_REQUEST = 0xCF
    SDR_IN_UPDATE = 0xD0
    FIRMWARE_IN_UPDATE = 0xD1
    BMC_INITIALISING = 0xD2
    DESTINATION_UNAVAILABLE = 0xD3
    INSUFFICIENT_PRIVILEGE = 0xD4
    NOT_IN_PRESENT_STATE = 0xD5
    SUBFUNCTION_DISABLED = 0xD6
    UNSPECIFIED = 0xFF


#: What each generic completion code means, for error messages.
COMPLETION_TEXT: dict[int, str] = {
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

# Command-specific completion codes (0x80-0xBE mean something else for each command).
#: Get/Set System Boot Options: parameter not supported.
CC_PARAMETER_NOT_SUPPORTED = 0x80
#: Set Session Privilege Level: the requested level is not available for this user.
CC_PRIVILEGE_NOT_AVAILABLE = 0x80
#: Set Session Privilege Level: the requested level exceeds the channel or user privilege limit.
CC_PRIVILEGE_EXCEEDS_LIMIT = 0x81
#: Close Session: invalid session id in the request.
CC_INVALID_SESSION_ID = 0x87


class Privilege(IntEnum):
    """Privilege levels (table 22-11 and the RAKP role field)."""

    HIGHEST = 0x00  # "highest level matching the proposed algorithms" (Open Session request only)
    CALLBACK = 0x01
    USER = 0x02
    OPERATOR = 0x03
    ADMINISTRATOR = 0x04
    OEM = 0x05


#: Get Device ID "additional device support" bits (table 20-2); an MC Device Locator record repeats them.
DEVICE_SUPPORT_SENSOR = 0x01
DEVICE_SUPPORT_SDR_REPOSITORY = 0x02
DEVICE_SUPPORT_SEL = 0x04
DEVICE_SUPPORT_FRU = 0x08
DEVICE_SUPPORT_CHASSIS = 0x80

# ---------------------------------------------------------------------------------------------
# Chassis control and the boot options (tables 28-4, 28-14)
# ---------------------------------------------------------------------------------------------

#: Chassis Control data 1, by the name Rackfleet gives the action.
CHASSIS_CONTROL: dict[str, int] = {"off": 0x0, "on": 0x1, "cycle": 0x2, "reset": 0x3, "soft": 0x5}


class BootParam(IntEnum):
    """Get/Set System Boot Options parameters Rackfleet uses."""

    SET_IN_PROGRESS = 0
    VALID_BIT_CLEARING = 3
    INFO_ACKNOWLEDGE = 4
    BOOT_FLAGS = 5


#: Boot flags data 1: the flags are valid (an override is set), persistent, EFI boot.
BOOT_FLAG_VALID = 0x80
BOOT_FLAG_PERSISTENT = 0x40
BOOT_FLAG_EFI = 0x20
#: Boot flag valid bit clearing (parameter 3) bit 3: do not clear the valid bit when no Chassis
#: Control command follows within 60 seconds.
BOOT_VALID_BIT_KEEP_ON_TIMEOUT = 0x08
#: Boot device selector (boot flags data 2, bits 5:2) by name.
BOOT_DEVICE_SELECTORS: dict[str, int] = {"none": 0x0, "pxe": 0x1, "disk": 0x2, "safe": 0x3, "diag": 0x4,
                                         "cdrom": 0x5, "bios": 0x6, "floppy": 0xF}

# ---------------------------------------------------------------------------------------------
# Sensors, the SDR repository and the SEL (sections 31-43)
# ---------------------------------------------------------------------------------------------


class SensorType(IntEnum):
    """Sensor type codes (table 42-3) Rackfleet knows."""

    TEMPERATURE = 0x01
    VOLTAGE = 0x02
    CURRENT = 0x03
    FAN = 0x04
    OTHER_UNITS = 0x0B  # other units-based sensor (e.g. watts)
    MEMORY = 0x0C


class SensorUnit(IntEnum):
    """Sensor unit type codes (table 43-15) Rackfleet knows."""

    UNSPECIFIED = 0
    DEGREES_C = 1
    VOLTS = 4
    AMPS = 5
    WATTS = 6
    RPM = 18


#: Event/reading type codes (table 42-1): threshold based, sensor-specific discrete.
EVENT_TYPE_THRESHOLD = 0x01
EVENT_TYPE_SENSOR_SPECIFIC = 0x6F
#: The event direction bit of an event record's event/reading type byte: a deassertion.
EVENT_DEASSERTION = 0x80
#: Event message format revision of IPMI 1.5 and 2.0 (EvMRev in a system event record).
EVM_REV = 0x04
#: Sensor type MEMORY, sensor-specific offset 1: uncorrectable ECC.
MEMORY_UNCORRECTABLE_ECC = 0x01
#: The thresholds in the bit order of the threshold masks and of Get Sensor Thresholds' data
#: (lower non-critical, critical, non-recoverable; upper ones likewise).
THRESHOLDS = ("lnc", "lc", "lnr", "unc", "uc", "unr")

#: SDR and SEL version in Get SDR Repository Info, Get SEL Info and every SDR header (IPMI 2.0).
RECORD_VERSION = 0x51
#: SDR record types (table 43-1).
SDR_FULL_SENSOR = 0x01
SDR_COMPACT_SENSOR = 0x02
SDR_MC_DEVICE_LOCATOR = 0x12
#: "Bytes to read" of Get SDR / Get SEL Entry asking for the whole record.
READ_WHOLE_RECORD = 0xFF
#: SEL record types (table 32-1): system event; from 0xE0 OEM records carry no timestamp.
SEL_SYSTEM_EVENT = 0x02
SEL_OEM_NON_TIMESTAMPED = 0xE0
#: Clear SEL: the "CLR" confirmation, then initiate erase or get erasure status.
CLEAR_SEL_MAGIC = b"CLR"
CLEAR_SEL_INITIATE = 0xAA
CLEAR_SEL_GET_STATUS = 0x00
