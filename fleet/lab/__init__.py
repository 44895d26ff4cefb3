"""The virtual datacenter behind ``fleet lab``: simulated servers whose BMCs speak real IPMI 2.0.

- :mod:`fleet.lab.rmcp`: the IPMI-over-LAN wire codec (RMCP, RMCP+ sessions, RAKP, keys);
- :mod:`fleet.lab.bmc`: one simulated BMC (power, boot flags, sensors and SDR, SEL, FRU, faults);
- :mod:`fleet.lab.bmcserver`: the asyncio server answering for thousands of them, its control socket,
  and :func:`start`/:func:`stop`/:func:`lab_control` to drive it from another process.

See ``docs/lab.md``.
"""

from __future__ import annotations

from typing import Any

from .bmc import BOOT_DEVICES, FAULT_KINDS, MANUFACTURER_ID, PRODUCT_ID, Bmc, BmcSpec, parse_spec

# The server's names are imported on first use, so that ``python -m fleet.lab.bmcserver`` runs the
# module once, as __main__, rather than after a package import already loaded it.
_SERVER_NAMES = ("LabServer", "LabStartError", "lab_control", "load_spec", "loopback_hosts", "start", "stop")


def __getattr__(name: str) -> Any:
    if name in _SERVER_NAMES:
        from . import bmcserver

        return getattr(bmcserver, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BOOT_DEVICES",
    "FAULT_KINDS",
    "MANUFACTURER_ID",
    "PRODUCT_ID",
    "Bmc",
    "BmcSpec",
    "LabServer",
    "LabStartError",
    "lab_control",
    "load_spec",
    "loopback_hosts",
    "parse_spec",
    "start",
    "stop",
]
