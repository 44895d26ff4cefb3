"""The virtual datacenter behind ``fleet lab``: simulated servers whose BMCs speak real IPMI 2.0.

- :mod:`fleet.lab.rmcp` and :mod:`fleet.lab.rakp`: the IPMI-over-LAN wire codec (RMCP, RMCP+
  session packets and keys; Open Session and RAKP 1-4);
- :mod:`fleet.lab.bmcspec`: what a simulated BMC is (its spec, sensors and SDR, FRU image, identity);
- :mod:`fleet.lab.bmcmodel` and :mod:`fleet.lab.bmc`: one simulated BMC (power, boot flags, SEL,
  faults) and its IPMI commands, with the protocol numbers of :mod:`fleet.drivers.ipmi.codes`;
- :mod:`fleet.lab.rmcpsession`: the RMCP+ session layer;
- :mod:`fleet.lab.bmcserver`: the asyncio server answering for thousands of them, its control socket,
  and :func:`start`/:func:`stop`/:func:`lab_control` to drive it from another process.

See ``docs/lab.md``.
"""

from __future__ import annotations

from typing import Any

from .bmc import Bmc
from .bmcmodel import FAULT_KINDS
from .bmcspec import MANUFACTURER_ID, PRODUCT_ID, BmcSpec, parse_spec

# The server's names are imported on first use, so that ``python -m fleet.lab.bmcserver`` runs the
# module once, as __main__, rather than after a package import already loaded it.
_SERVER_NAMES = ("LabServer", "LabStartError", "lab_control", "load_spec", "loopback_hosts", "start", "stop")


def __getattr__(name: str) -> Any:
    if name in _SERVER_NAMES:
        from . import bmcserver

        return getattr(bmcserver, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
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
