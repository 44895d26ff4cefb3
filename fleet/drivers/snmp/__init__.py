"""SNMP v2c and v3 (authPriv) for UPSes and PDUs: battery readings, outlet switching, identification.

:class:`SnmpDriver` implements :class:`~fleet.drivers.base.BatteryMonitor`,
:class:`~fleet.drivers.base.OutletControl` and :class:`~fleet.drivers.base.SensorReader` for many
devices at once, on pysnmp 7's asyncio API; every OID and conversion comes from the device's
hardware profile. See ``docs/snmp.md``. The modules, bottom up:

- :mod:`.values`: the profile's conversion rules (pure): :func:`convert_metric`, the status words;
- :mod:`.mibs`: the MIB families (UPS-MIB, PowerNet, XUPS, CPS) and :func:`choose_profile`;
- :mod:`.conn`: one agent's connection settings and a PDU's errorStatus;
- :mod:`.v3`: SNMPv3's USM (keys, engine discovery, users per engine ID);
- :mod:`.session`: sockets, connections, the one error edge, GET, SET and walk;
- :mod:`.driver`: :class:`SnmpDriver`, battery and sensors, outlets and identification by profile.
"""

from .driver import BATTERY_METRICS, SnmpDriver
from .mibs import MIB_FAMILIES, choose_profile, profile_families
from .session import SetNotApplied
from .values import battery_status_word, convert_metric

__all__ = [
    "BATTERY_METRICS",
    "MIB_FAMILIES",
    "SetNotApplied",
    "SnmpDriver",
    "battery_status_word",
    "choose_profile",
    "convert_metric",
    "profile_families",
]
