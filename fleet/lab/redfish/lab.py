"""Running the Redfish responder inside the lab BMC server, and what it tells the rest of the lab.

:func:`start_responder` makes (or reuses) the lab's certificate in the server's state directory,
starts a :class:`~fleet.lab.redfish.responder.RedfishResponder` over the BMC models of every spec
that has a ``redfish`` profile, and writes ``redfish.json`` there: the certificate's fingerprint
and file, and each server's endpoint. :func:`read_state` reads it back (``fleet lab start`` puts it
in ``lab.json``); :func:`inventory_endpoints` is what an import needs per server.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..bmcmodel import BmcModel
from .responder import RedfishResponder
from .service import RedfishProfile
from .tls import make_certificate

__all__ = ["REDFISH_STATE", "inventory_endpoints", "read_state", "redfish_port_for", "start_responder",
           "stop_responder"]

REDFISH_STATE = "redfish.json"


def redfish_port_for(ipmi_port: int) -> int:
    """The lab's Redfish port: 443 beside IPMI's 623 (root); else the IPMI port number, over TCP (UDP
    and TCP ports do not meet, so two labs on different ports never share one)."""
    return 443 if ipmi_port == 623 else ipmi_port


async def start_responder(models: Iterable[BmcModel], state_dir: str | os.PathLike[str], *, port: int,
                          shared: str | None = None,
                          on_bmc_reset: Callable[[BmcModel], None] | None = None) -> RedfishResponder | None:
    """Serve Redfish for the models whose spec has a ``redfish`` profile; None when none has."""
    chosen = [m for m in models if m.spec.redfish is not None]
    if not chosen:
        return None
    profiles = {}
    for m in chosen:
        try:
            profiles[m.spec.name] = RedfishProfile.from_dict(m.spec.redfish)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{m.spec.name}: not a Redfish profile: {exc}") from exc
    state = Path(state_dir)
    cert = make_certificate(state, [m.spec.host for m in chosen] + ([shared] if shared else []))
    responder = RedfishResponder(chosen, cert, port=port, profiles=profiles, shared=shared,
                                 on_bmc_reset=on_bmc_reset)
    await responder.start()
    tmp = state / f".{REDFISH_STATE}.tmp"
    tmp.write_text(json.dumps(responder.state(), indent=1) + "\n")
    tmp.replace(state / REDFISH_STATE)
    return responder


async def stop_responder(responder: RedfishResponder, state_dir: str | os.PathLike[str] | None) -> None:
    """Close the responder and remove its ``redfish.json`` (a stopped lab names no endpoints)."""
    await responder.aclose()
    if state_dir is not None:
        (Path(state_dir) / REDFISH_STATE).unlink(missing_ok=True)


def read_state(state_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``redfish.json`` a running responder wrote, or None when this lab serves no Redfish."""
    try:
        return json.loads((Path(state_dir) / REDFISH_STATE).read_text())
    except FileNotFoundError:
        return None


def inventory_endpoints(state: dict[str, Any], credential: str) -> dict[str, dict[str, Any]]:
    """Per server name: the Redfish endpoint an import would record (``host``, ``port``,
    ``credential`` and ``credential_kind``, ``tls_fingerprint``, the System's path)."""
    return {ep["name"]: {"host": ep["host"], "port": ep["port"], "credential": credential,
                         "credential_kind": "redfish", "tls_fingerprint": ep["tls_fingerprint"],
                         "system": ep["system"]} for ep in state.get("endpoints", [])}
