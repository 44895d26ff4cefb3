"""A scripted Redfish BMC for the driver's tests: what sushy-tools lacks, and BMCs that misbehave.

:class:`ScriptedBmc` is a small aiohttp.web service on 127.0.0.1 (HTTPS, a certificate from
:func:`tests.redfishpeer.make_cert`) with a SessionService (``X-Auth-Token``; tokens can be expired
to test renewal), a system with an ETag and ``If-Match`` rules, a Reset action described by an
ActionInfo, a 409 right after a power-off, boot PATCHes refused the ways some vendors refuse them
(``wants_all_boot_fields``, ``refuses_continuous``), LogServices with a SEL and a ClearLog action that answers
202 with a task monitor, a chassis with Power and a Sensors collection, and a manager with a
FirmwareInventory. :func:`serve` runs any aiohttp app (the hostile ones of the tests too) on the
running loop and a free port.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

__all__ = ["ScriptedBmc", "serve", "server_context"]

R = "/redfish/v1"


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


@contextlib.asynccontextmanager
async def serve(app: web.Application, cert: Path, key: Path) -> AsyncIterator[int]:
    """Serve ``app`` over HTTPS on 127.0.0.1 and a free port (yielded) until the block ends."""
    runner = web.AppRunner(app, shutdown_timeout=0.5, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context(cert, key))
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield port
    finally:
        await runner.cleanup()


class ScriptedBmc:
    """State and handlers of one scripted BMC. ``log`` lists (method, path, auth kind) of each request."""

    def __init__(self, user: str = "admin", password: str = "pw-123456") -> None:
        self.user, self.password = user, password
        self.tokens: dict[str, str] = {}  # token -> session id
        self.next_session = 1
        self.power = "Off"
        self.conflicts_after_off = 1  # Reset requests answered 409 right after a ForceOff
        self._pending_conflicts = 0
        self.boot = {"BootSourceOverrideEnabled": "Disabled", "BootSourceOverrideTarget": "None",
                     "BootSourceOverrideMode": "UEFI"}
        self.etag = 1
        self.if_match = "required"  # required | strong-only | refuse (412 to any If-Match) | ignore
        self.reset_types = ["On", "ForceOff", "GracefulShutdown", "ForceRestart", "PowerCycle"]
        self.entries: list[dict[str, Any]] = [
            {"@odata.id": f"{R}/Systems/1/LogServices/SEL/Entries/1", "Id": "1",
             "Created": "2026-01-02T03:04:05Z", "Severity": "OK", "Message": "System boot",
             "SensorType": "System Event", "MessageId": "Event.1.0.Boot"},
            {"@odata.id": f"{R}/Systems/1/LogServices/SEL/Entries/2", "Id": "2",
             "Created": "2026-01-02T03:05:00Z", "Severity": "Critical",
             "Message": "Uncorrectable ECC error on DIMM A1", "SensorType": "Memory", "MessageId": "Mem.1.0.ECC"},
        ]
        self.task_polls = 2  # GETs of the task monitor answered 202 before it is done
        self._polls_left = 0
        self.resets: list[tuple[str, int]] = []  # (ResetType, status answered)
        self.patches: list[str | None] = []  # the If-Match of each PATCH
        self.boot_bodies: list[dict[str, Any]] = []  # the Boot object of each PATCH
        self.wants_all_boot_fields = False  # AMI/ASRockRack: 400 to a Boot PATCH without mode, enabled and target
        self.refuses_continuous = False  # 400 to BootSourceOverrideEnabled=Continuous
        self.log: list[tuple[str, str, str]] = []
        self.deleted_sessions: list[str] = []
        self.connections: set[int] = set()  # client ports seen (one per TCP connection)

    # -- app -------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.router.add_route("*", "/{tail:.*}", self._route)
        return app

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        path = request.path.rstrip("/")
        token = request.headers.get("X-Auth-Token")
        kind = "token" if token else ("basic" if request.headers.get("Authorization") else "none")
        self.log.append((request.method, request.path, kind))
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.connections.add(peer[1] if peer else 0)
        public = path in ("", "/redfish", R) or (path == f"{R}/SessionService/Sessions" and request.method == "POST")
        if not public and (token is None or token not in self.tokens):
            return self._error(401, "Base.1.0.NoValidSession", "no valid session")
        return await handler(request)

    @staticmethod
    def _error(status: int, code: str, message: str) -> web.Response:
        return web.json_response({"error": {"code": code, "message": message}}, status=status)

    async def _route(self, request: web.Request) -> web.StreamResponse:
        path, method = request.path.rstrip("/"), request.method
        body = await request.json() if request.can_read_body else None
        docs = self._docs()
        if path == f"{R}/SessionService/Sessions" and method == "POST":
            if body.get("UserName") != self.user or body.get("Password") != self.password:
                return self._error(401, "Base.1.0.InvalidCredentials", f"bad password {body.get('Password')}")
            sid, token = str(self.next_session), f"tok-{self.next_session:04d}-secret"
            self.next_session += 1
            self.tokens[token] = sid
            where = f"{R}/SessionService/Sessions/{sid}"
            return web.json_response({"@odata.id": where, "Id": sid}, status=201,
                                     headers={"X-Auth-Token": token, "Location": where})
        if path.startswith(f"{R}/SessionService/Sessions/") and method == "DELETE":
            sid = path.rsplit("/", 1)[-1]
            self.tokens = {t: s for t, s in self.tokens.items() if s != sid}
            self.deleted_sessions.append(sid)
            return web.Response(status=204)
        if path == f"{R}/Systems/1" and method == "PATCH":
            return self._patch(request, body)
        if path == f"{R}/Systems/1/Actions/ComputerSystem.Reset" and method == "POST":
            return self._reset(body)
        if path == f"{R}/Systems/1/LogServices/SEL/Actions/LogService.ClearLog" and method == "POST":
            self.entries = []
            self._polls_left = self.task_polls
            return web.json_response({"@odata.id": f"{R}/TaskService/Tasks/7"}, status=202,
                                     headers={"Location": f"{R}/TaskService/TaskMonitors/7", "Retry-After": "0"})
        if path == f"{R}/TaskService/TaskMonitors/7":
            if self._polls_left > 0:
                self._polls_left -= 1
                return web.json_response({"TaskState": "Running"}, status=202, headers={"Retry-After": "0.1"})
            return web.Response(status=204)
        if path == f"{R}/Managers/1/Actions/Manager.Reset" and method == "POST":
            return web.Response(status=204)
        if method == "GET" and path in docs:
            doc = docs[path]
            headers = {"ETag": f'W/"{self.etag}"'} if path == f"{R}/Systems/1" else {}
            return web.json_response({"@odata.id": path, **doc}, headers=headers)
        return self._error(404, "Base.1.0.ResourceMissingAtURI", f"no {path}")

    def _patch(self, request: web.Request, body: dict[str, Any]) -> web.Response:
        tag = request.headers.get("If-Match")
        self.patches.append(tag)
        if self.if_match == "refuse" and tag is not None:
            return self._error(412, "Base.1.0.PreconditionFailed", "If-Match not supported")
        current = f'"{self.etag}"'
        if self.if_match == "required" and tag not in (current, f"W/{current}"):
            return self._error(412, "Base.1.0.PreconditionFailed", "ETag does not match")
        if self.if_match == "strong-only" and tag is not None and tag != current:
            return self._error(412, "Base.1.0.PreconditionFailed", "strong ETag required")
        self.boot_bodies.append(dict(body["Boot"]))
        fields = {"BootSourceOverrideMode", "BootSourceOverrideEnabled", "BootSourceOverrideTarget"}
        missing = fields - set(body["Boot"])
        if self.wants_all_boot_fields and missing:
            return self._error(400, "Base.1.0.PropertyMissing", f"missing {', '.join(sorted(missing))}")
        if self.refuses_continuous and body["Boot"].get("BootSourceOverrideEnabled") == "Continuous":
            return self._error(400, "Base.1.0.PropertyValueNotInList", "Continuous is not supported")
        self.boot.update(body["Boot"])
        self.etag += 1
        return web.Response(status=204)

    def _reset(self, body: dict[str, Any]) -> web.Response:
        response = self._do_reset(str(body.get("ResetType")))
        self.resets.append((str(body.get("ResetType")), response.status))
        return response

    def _do_reset(self, reset: str) -> web.Response:
        if reset not in self.reset_types:
            return self._error(400, "Base.1.0.PropertyValueNotInList", f"ResetType {reset}")
        if self._pending_conflicts > 0:
            self._pending_conflicts -= 1
            return self._error(409, "Base.1.0.ResourceInUse", "power transition in progress")
        if reset in ("ForceOff", "GracefulShutdown"):
            self.power = "Off"
            self._pending_conflicts = self.conflicts_after_off
        elif reset in ("On", "ForceOn", "ForceRestart", "PowerCycle"):
            self.power = "On"
        return web.Response(status=204)

    def _docs(self) -> dict[str, dict[str, Any]]:
        system = f"{R}/Systems/1"
        return {
            R: {"Id": "RootService", "Systems": {"@odata.id": f"{R}/Systems"},
                "Chassis": {"@odata.id": f"{R}/Chassis"}, "Managers": {"@odata.id": f"{R}/Managers"},
                "SessionService": {"@odata.id": f"{R}/SessionService"},
                "UpdateService": {"@odata.id": f"{R}/UpdateService"},
                "Links": {"Sessions": {"@odata.id": f"{R}/SessionService/Sessions"}}},
            f"{R}/Systems": {"Members": [{"@odata.id": system}]},
            system: {"Id": "1", "Manufacturer": "Contoso", "Model": "R9000", "SerialNumber": "SN-42",
                     "PartNumber": "PN-7", "PowerState": self.power, "BiosVersion": "2.3.4",
                     "Boot": {**self.boot, "BootSourceOverrideTarget@Redfish.AllowableValues":
                              ["None", "Pxe", "Hdd", "Cd", "BiosSetup", "UefiHttp"]},
                     "LogServices": {"@odata.id": f"{system}/LogServices"},
                     "EthernetInterfaces": {"@odata.id": f"{system}/EthernetInterfaces"},
                     "Links": {"Chassis": [{"@odata.id": f"{R}/Chassis/1"}],
                               "ManagedBy": [{"@odata.id": f"{R}/Managers/1"}]},
                     "Actions": {"#ComputerSystem.Reset": {
                         "target": f"{system}/Actions/ComputerSystem.Reset",
                         "@Redfish.ActionInfo": f"{system}/ResetActionInfo"}}},
            f"{system}/ResetActionInfo": {"Parameters": [{"Name": "ResetType", "AllowableValues": self.reset_types}]},
            f"{system}/EthernetInterfaces": {"Members": [{"@odata.id": f"{system}/EthernetInterfaces/nic1"},
                                                         {"@odata.id": f"{system}/EthernetInterfaces/nic2"}]},
            f"{system}/EthernetInterfaces/nic1": {"Id": "nic1", "Name": "NIC 1", "MACAddress": "AA:BB:CC:00:00:01"},
            f"{system}/EthernetInterfaces/nic2": {"Id": "nic2", "Name": "NIC 2", "PermanentMACAddress":
                                                  "AA:BB:CC:00:00:02", "Status": {"State": "Disabled"}},
            f"{system}/LogServices": {"Members": [{"@odata.id": f"{system}/LogServices/Lifecycle"},
                                                  {"@odata.id": f"{system}/LogServices/SEL"}]},
            f"{system}/LogServices/Lifecycle": {"Id": "Lifecycle", "Name": "Lifecycle Log",
                                                "Entries": {"@odata.id": f"{system}/LogServices/Lifecycle/Entries"}},
            f"{system}/LogServices/SEL": {"Id": "SEL", "Name": "System Event Log",
                                          "Entries": {"@odata.id": f"{system}/LogServices/SEL/Entries"},
                                          "Actions": {"#LogService.ClearLog": {
                                              "target": f"{system}/LogServices/SEL/Actions/LogService.ClearLog"}}},
            # Entries inline, one page of one, the next page by link.
            f"{system}/LogServices/SEL/Entries": {
                "Members": self.entries[:1], "Members@odata.nextLink": f"{system}/LogServices/SEL/Entries2"},
            f"{system}/LogServices/SEL/Entries2": {"Members": self.entries[1:]},
            f"{R}/Chassis": {"Members": [{"@odata.id": f"{R}/Chassis/1"}]},
            f"{R}/Chassis/1": {"Id": "1", "SerialNumber": "CH-9", "Power": {"@odata.id": f"{R}/Chassis/1/Power"},
                               "Sensors": {"@odata.id": f"{R}/Chassis/1/Sensors"}},
            f"{R}/Chassis/1/Power": {
                "PowerControl": [{"Name": "System Power", "PowerConsumedWatts": 312, "Status": {"Health": "OK"}}],
                "Voltages": [{"Name": "P12V", "ReadingVolts": 12.1, "UpperThresholdCritical": 13.2,
                              "Status": {"Health": "OK"}}],
                "PowerSupplies": [{"Name": "PSU1", "LastPowerOutputWatts": 160, "Status": {"Health": "OK"}},
                                  {"Name": "PSU2", "Status": {"State": "Absent"}}]},
            f"{R}/Chassis/1/Sensors": {"Members": [{"@odata.id": f"{R}/Chassis/1/Sensors/inlet"},
                                                   {"@odata.id": f"{R}/Chassis/1/Sensors/psu"}]},
            f"{R}/Chassis/1/Sensors/inlet": {"Name": "Inlet Temp", "ReadingType": "Temperature", "Reading": 44,
                                             "ReadingUnits": "Cel", "Status": {"Health": "Warning"},
                                             "Thresholds": {"UpperCaution": {"Reading": 40},
                                                            "UpperCritical": {"Reading": 50}}},
            f"{R}/Chassis/1/Sensors/psu": {"Name": "System Power", "ReadingType": "Power", "Reading": 310,
                                           "ReadingUnits": "W"},
            f"{R}/Managers": {"Members": [{"@odata.id": f"{R}/Managers/1"}]},
            f"{R}/Managers/1": {"Id": "1", "FirmwareVersion": "7.10", "Actions": {"#Manager.Reset": {
                "target": f"{R}/Managers/1/Actions/Manager.Reset",
                "ResetType@Redfish.AllowableValues": ["ForceRestart", "GracefulRestart"]}}},
            f"{R}/UpdateService": {"FirmwareInventory": {"@odata.id": f"{R}/UpdateService/FirmwareInventory"}},
            f"{R}/UpdateService/FirmwareInventory": {"Members": [
                {"@odata.id": f"{R}/UpdateService/FirmwareInventory/BMC", "Name": "BMC", "Version": "7.10.30"},
                {"@odata.id": f"{R}/UpdateService/FirmwareInventory/BIOS", "Name": "BIOS", "Version": "2.3.4"}]},
        }
