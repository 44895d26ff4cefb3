"""The lab's own Redfish responder: HTTPS for many lab servers at once, over the lab's BMC models.

- :mod:`fleet.lab.redfish.tls`: the self-signed certificate the lab makes and its fingerprint;
- :mod:`fleet.lab.redfish.resources`: a lab server's Redfish resources, built from its
  :class:`~fleet.lab.bmcmodel.BmcModel` (so IPMI and Redfish see one state);
- :mod:`fleet.lab.redfish.service`: per-server behaviour (:class:`RedfishProfile`), sessions, tasks,
  Redfish replies and errors;
- :mod:`fleet.lab.redfish.responder`: :class:`RedfishResponder`, the aiohttp server on one socket per
  lab BMC address (or one shared address);
- :mod:`fleet.lab.redfish.metadata`: the service's ``$metadata`` document.

:class:`fleet.lab.bmcserver.LabServer` runs a responder next to its RMCP+ sockets when asked
(``--redfish-port``), and writes what an import needs (addresses, certificate fingerprint) to
``redfish.json`` in its state directory. See ``docs/lab.md``.
"""

from __future__ import annotations

from .responder import RedfishResponder
from .service import DEFAULT_PROFILE, RedfishProfile
from .tls import LabCertificate, make_certificate

__all__ = ["DEFAULT_PROFILE", "LabCertificate", "RedfishProfile", "RedfishResponder",
           "make_certificate"]
