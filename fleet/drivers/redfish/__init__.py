"""Redfish over HTTPS: power, next boot device, sensors, event log, FRU, NICs, firmware and BMC reset.

- :mod:`~fleet.drivers.redfish.driver`: :class:`RedfishDriver`, the asyncio API;
- :mod:`~fleet.drivers.redfish.client`: the connector (shared aiohttp session, per-BMC sessions or
  HTTP Basic, deadlines, bounded reads, task monitors) and the mapping of failures into
  :mod:`fleet.errors`;
- :mod:`~fleet.drivers.redfish.tls`: certificate pinning by fingerprint or CA file, and
  :func:`fetch_fingerprint` for ``fleet bmc trust``;
- :mod:`~fleet.drivers.redfish.resources`: resources found by their ``@odata.id`` links;
- :mod:`~fleet.drivers.redfish.control` (power, boot) and :mod:`~fleet.drivers.redfish.readings`
  (sensors, event log, inventory): the operations.
"""

from __future__ import annotations

from .driver import RedfishDriver
from .readings import NicInfo
from .tls import fetch_fingerprint, fingerprint_of, normalize_fingerprint

__all__ = ["NicInfo", "RedfishDriver", "fetch_fingerprint", "fingerprint_of", "normalize_fingerprint"]
