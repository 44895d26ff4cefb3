"""The lab's Redfish responder: one asyncio HTTPS server answering for many lab servers at once.

Like the IPMI side (:mod:`fleet.lab.bmcserver`), each lab BMC has its own loopback address: the
responder binds one TCP socket per address (``127.10.x.y:PORT``, 443 as root) and serves there that
server's own Redfish tree, or, with ``shared=HOST``, one socket whose service root lists every system
(``/redfish/v1/Systems/{name}``). One aiohttp application serves all sockets; a request finds its
:class:`~fleet.lab.redfish.service.Service` by the address it arrived on. State is the lab's
:class:`~fleet.lab.bmcmodel.BmcModel`, shared with IPMI when the same process serves both, so the
two protocols see the same power, boot flags, faults and SEL. The lab's faults act here as on IPMI:
``dead`` hangs requests, ``slow`` delays them, ``wrong-password`` refuses logins and ends sessions,
a BMC reset (``Manager.Reset`` or the control interface) drops connections while it lasts.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import errno
import json
import logging
import re
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aiohttp import web

from fleet.errors import NeedsRoot, PortInUse

from ..bmcmodel import BmcModel
from . import resources as res
from .accounts import AccountHandlers
from .service import (
    DEFAULT_PROFILE,
    NOT_FOUND,
    BadRequest,
    RedfishProfile,
    RfSystem,
    Service,
    collection,
    error,
    etag_of,
    json_body,
    reply,
)
from .tls import LabCertificate, server_context

__all__ = ["RedfishResponder"]

log = logging.getLogger("fleet.lab.redfish")
V1 = res.V1
_PUBLIC = {"", "odata", "$metadata"}
_ID = r"(?P<id>[^/]+)"
#: (pattern after /redfish/v1/, methods, handler name)
_ROUTES: list[tuple[re.Pattern[str], frozenset[str], str]] = [
    (re.compile(p), frozenset(m.split()), h) for p, m, h in [
        (r"", "GET", "root"), (r"odata", "GET", "odata"), (r"\$metadata", "GET", "metadata"),
        (r"Systems", "GET", "systems"), (rf"Systems/{_ID}", "GET PATCH", "system"),
        (rf"Systems/{_ID}/Actions/ComputerSystem\.Reset", "POST", "system_reset"),
        (rf"Systems/{_ID}/EthernetInterfaces", "GET", "nics"),
        (rf"Systems/{_ID}/EthernetInterfaces/(?P<nic>[^/]+)", "GET", "nic"),
        (r"Chassis", "GET", "chassis_all"), (rf"Chassis/{_ID}", "GET", "chassis"),
        (rf"Chassis/{_ID}/Thermal", "GET", "thermal"), (rf"Chassis/{_ID}/Power", "GET", "power"),
        (rf"Chassis/{_ID}/Sensors", "GET", "sensors"), (rf"Chassis/{_ID}/Sensors/(?P<sensor>[^/]+)", "GET", "sensor"),
        (r"Managers", "GET", "managers"), (rf"Managers/{_ID}", "GET", "manager"),
        (rf"Managers/{_ID}/Actions/Manager\.Reset", "POST", "manager_reset"),
        (rf"Managers/{_ID}/LogServices", "GET", "log_services"),
        (rf"Managers/{_ID}/LogServices/SEL", "GET", "log_service"),
        (rf"Managers/{_ID}/LogServices/SEL/Entries", "GET", "log_entries"),
        (rf"Managers/{_ID}/LogServices/SEL/Entries/(?P<entry>[^/]+)", "GET", "log_entry"),
        (rf"Managers/{_ID}/LogServices/SEL/Actions/LogService\.ClearLog", "POST", "clear_log"),
        (r"SessionService", "GET", "session_service"), (r"SessionService/Sessions", "GET POST", "sessions"),
        (r"SessionService/Sessions/Members", "POST", "sessions"),
        (r"SessionService/Sessions/(?P<sid>[^/]+)", "GET DELETE", "session"),
        (r"TaskService", "GET", "task_service"), (r"TaskService/Tasks", "GET", "tasks"),
        (r"TaskService/Tasks/(?P<tid>[^/]+)", "GET", "task"),
        (r"TaskService/TaskMonitors/(?P<tid>[^/]+)", "GET", "task_monitor"),
        (r"AccountService", "GET", "account_service"), (r"AccountService/Accounts", "GET", "accounts"),
        (r"AccountService/Accounts/(?P<aid>[^/]+)", "GET", "account"),
        (r"AccountService/Roles", "GET", "roles"), (r"AccountService/Roles/(?P<rid>[^/]+)", "GET", "role"),
    ]
]


class RedfishResponder(AccountHandlers):
    """Serves the Redfish tree of every model given, over HTTPS, from the running event loop.

    ``models``: the lab servers (their BMC models, shared with IPMI when a :class:`LabServer` runs
    them too); ``profiles``: a :class:`RedfishProfile` per server name (else ``profile``); ``port``:
    the TCP port on each server's own address, 0 for any (see :attr:`endpoints`); ``shared``: serve
    them all from this one address instead; ``on_bmc_reset``: called with the model after a
    ``Manager.Reset`` (the IPMI side drops its sessions).
    """

    def __init__(self, models: Iterable[BmcModel], cert: LabCertificate, *, port: int = 443,
                 profile: RedfishProfile = DEFAULT_PROFILE, profiles: Mapping[str, RedfishProfile] | None = None,
                 shared: str | None = None, on_bmc_reset: Callable[[BmcModel], None] | None = None) -> None:
        profiles = profiles or {}
        self.systems = [RfSystem(m, profiles.get(m.spec.name, profile)) for m in models]
        self.cert = cert
        self.port = port
        self.shared = shared
        self.on_bmc_reset = on_bmc_reset
        self.services: dict[tuple[str, int], Service] = {}
        self.requests = 0
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind every address and start serving; raises PortInUse/NeedsRoot/OSError naming the address."""
        self._loop = asyncio.get_running_loop()
        app = web.Application(client_max_size=1 << 20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, keepalive_timeout=75.0,
                                    shutdown_timeout=0.5)
        await self._runner.setup()
        ctx = server_context(self.cert)
        groups: dict[str, list[RfSystem]] = {}
        for system in self.systems:
            groups.setdefault(self.shared or system.model.spec.host, []).append(system)
        try:
            for host, systems in groups.items():
                sock = _listen(host, self.port, systems[0].name)
                port = sock.getsockname()[1]
                self.services[(host, port)] = Service(host, port, systems)
                await web.SockSite(self._runner, sock, ssl_context=ctx).start()
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        for system in self.systems:
            if system.pending is not None:
                system.pending.cancel()
                system.pending = None
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    @property
    def endpoints(self) -> list[dict[str, Any]]:
        """Where each server answers: name, host, port, its System's path, the certificate fingerprint."""
        return [{"name": name, "host": svc.host, "port": svc.port, "system": f"{V1}/Systems/{name}",
                 "tls_fingerprint": self.cert.fingerprint}
                for svc in self.services.values() for name in svc.systems]

    def state(self) -> dict[str, Any]:
        """What the lab writes to its state file: the certificate and every endpoint."""
        return {"tls_fingerprint": self.cert.fingerprint, "ca_file": str(self.cert.cert_file),
                "port": self.port if self.port else None, "shared": self.shared, "endpoints": self.endpoints}

    # -- the request path ------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        transport = request.transport
        sockname = transport.get_extra_info("sockname") if transport is not None else None
        svc = self.services.get(tuple(sockname[:2])) if sockname else None
        if svc is None:
            return error(404, "ResourceNotFound", "no lab service on this address")
        if len(svc.systems) == 1:
            gate = await self._gate(request, svc.first.model)
            if gate is not None:
                return gate
        path = request.path.rstrip("/")
        if path == "/redfish":
            if request.method not in ("GET", "HEAD"):
                return _not_allowed({"GET"})
            return self._get_reply(request, {"v1": f"{V1}/"}, weak=False)
        if path != V1 and not path.startswith(V1 + "/"):
            return error(404, "ResourceNotFound", f"{request.path} is not a Redfish resource")
        rel = path[len(V1) + 1:]
        if request.headers.get("OData-Version", "4.0").strip() != "4.0":
            return error(412, "HeaderInvalid", "this service speaks OData-Version 4.0",
                         args=(f"OData-Version: {request.headers['OData-Version']}",))
        dollar = sorted(k for k in request.query if k.startswith("$"))
        if dollar:
            return error(501, "QueryNotSupported", f"the query parameter {dollar[0]} is not supported",
                         args=(dollar[0],))
        for pattern, methods, name in _ROUTES:
            match = pattern.fullmatch(rel)
            if match is None:
                continue
            method = "GET" if request.method == "HEAD" else request.method
            if method not in methods:
                return _not_allowed(methods)
            if not (rel in _PUBLIC or (name == "sessions" and method == "POST")) and not self._authorized(request, svc):
                return error(401, "NoValidSession", "a valid session (X-Auth-Token) or Basic credentials are needed",
                             headers={"WWW-Authenticate": 'Basic realm="Redfish"'})
            args = match.groupdict()
            system = None
            if "id" in args:
                system = svc.systems.get(args.pop("id"))
                if system is None:
                    return error(404, "ResourceNotFound", f"no resource {request.path}", args=(request.path,))
            try:
                result = await getattr(self, "_" + name)(request, svc, method, system, **args)
            except BadRequest as exc:
                return exc.response
            if result is NOT_FOUND:
                return error(404, "ResourceNotFound", f"no resource {request.path}", args=(request.path,))
            if isinstance(result, web.StreamResponse):
                return result
            return self._get_reply(request, result, weak=system.profile.weak_etags if system else False,
                                   allow=methods)
        return error(404, "ResourceNotFound", f"no resource {request.path}", args=(request.path,))

    async def _gate(self, request: web.Request, model: BmcModel) -> web.StreamResponse | None:
        """The lab's faults on this BMC: dead (or redfish-dead: IPMI still answers) hangs until cleared
        or the client leaves, a reset drops the connection, slow delays the answer."""
        while model.dead or model.redfish_dead:
            transport = request.transport
            if transport is None or transport.is_closing():
                return web.Response(status=503)
            await asyncio.sleep(0.2)
        if model.dark_until > time.monotonic():
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=503)
        if model.slow_ms:
            await asyncio.sleep(model.slow_ms / 1000.0)
        return None

    def _authorized(self, request: web.Request, svc: Service) -> bool:
        now = time.monotonic()
        token = request.headers.get("X-Auth-Token")
        if token and svc.profile.sessions and svc.session(token, now) is not None:
            return True
        auth = request.headers.get("Authorization", "")
        if svc.profile.basic_auth and auth[:6].lower() == "basic ":
            try:
                user, _, password = base64.b64decode(auth[6:].strip(), validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            return svc.basic_ok(user, password)
        return False

    def _get_reply(self, request: web.Request, body: dict[str, Any], *, weak: bool,
                   allow: Iterable[str] = ("GET",)) -> web.StreamResponse:
        data = json.dumps(body, separators=(",", ":")).encode()
        tag = etag_of(data, weak)
        headers = {"ETag": tag, "Link": f'<{V1}/$metadata>; rel=describedby', "Allow": _allow(allow)}
        inm = request.headers.get("If-None-Match")
        if inm and (inm.strip() == "*" or tag.removeprefix("W/") in [t.strip().removeprefix("W/")
                                                                      for t in inm.split(",")]):
            return web.Response(status=304, headers={"ETag": tag, "OData-Version": "4.0"})
        if request.method == "HEAD":
            return reply(None, 200, headers)
        return reply(data, 200, headers)

    # -- service root, OData -----------------------------------------------------------------

    async def _root(self, request: web.Request, svc: Service, method: str, system: None) -> dict[str, Any]:
        root: dict[str, Any] = {
            "@odata.id": f"{V1}/", "@odata.type": "#ServiceRoot.v1_15_0.ServiceRoot", "Id": "RootService",
            "Name": "Rackfleet lab Redfish service", "RedfishVersion": "1.15.0",
            "UUID": res.system(svc.first.model, time.monotonic(), reset_types=(), boot_targets=())["UUID"],
            "Vendor": "Rackfleet", "Product": "Rackfleet lab BMC",
            "ProtocolFeaturesSupported": {"ExpandQuery": {"ExpandAll": False, "Levels": False, "Links": False,
                                                          "NoLinks": False},
                                          "FilterQuery": False, "SelectQuery": False, "OnlyMemberQuery": False,
                                          "ExcerptQuery": False},
            "Systems": {"@odata.id": f"{V1}/Systems"}, "Chassis": {"@odata.id": f"{V1}/Chassis"},
            "Managers": {"@odata.id": f"{V1}/Managers"}, "TaskService": {"@odata.id": f"{V1}/TaskService"},
            "AccountService": {"@odata.id": f"{V1}/AccountService"},
            "Links": {},
        }
        if svc.profile.sessions:
            root["SessionService"] = {"@odata.id": f"{V1}/SessionService"}
            root["Links"]["Sessions"] = {"@odata.id": f"{V1}/SessionService/Sessions"}
        return root

    async def _odata(self, request: web.Request, svc: Service, method: str, system: None) -> dict[str, Any]:
        names = ["Systems", "Chassis", "Managers", "TaskService", "AccountService"]
        names += ["SessionService"] if svc.profile.sessions else []
        return {"@odata.context": f"{V1}/$metadata", "value": [
            {"name": n, "kind": "Singleton", "url": f"{V1}/{n}"} for n in names]}

    async def _metadata(self, request: web.Request, svc: Service, method: str, system: None) -> web.Response:
        from .metadata import METADATA

        return web.Response(body=METADATA.encode(), content_type="application/xml", charset="utf-8",
                            headers={"OData-Version": "4.0"})

    # -- systems -----------------------------------------------------------------------------

    def _system_body(self, system: RfSystem) -> dict[str, Any]:
        p = system.profile
        return res.system(system.model, time.monotonic(), reset_types=p.reset_types, boot_targets=p.boot_targets,
                          http_flags=system.http_flags)

    async def _systems(self, request: web.Request, svc: Service, method: str, system: None) -> dict[str, Any]:
        return collection(f"{V1}/Systems", "ComputerSystemCollection.ComputerSystemCollection",
                           "Computer System Collection", (f"{V1}/Systems/{n}" for n in svc.systems))

    async def _system(self, request: web.Request, svc: Service, method: str, system: RfSystem) -> Any:
        if method == "GET":
            return self._system_body(system)
        body = await json_body(request)
        current = json.dumps(self._system_body(system), separators=(",", ":")).encode()
        tag = etag_of(current, system.profile.weak_etags)
        if_match = request.headers.get("If-Match")
        if if_match is None and system.profile.require_if_match:
            return error(428, "PreconditionRequired", "this service needs If-Match with the resource's ETag")
        if if_match is not None and if_match.strip() != "*" and not any(
                t.strip() == tag and not tag.startswith("W/") for t in if_match.split(",")):
            return error(412, "PreconditionFailed", "If-Match does not match the resource's current ETag")
        unknown = sorted(set(body) - {"Boot", "AssetTag"})
        if unknown:
            return error(400, "PropertyUnknown", f"the property {unknown[0]} is unknown or not writable",
                         args=(unknown[0],))
        boot = body.get("Boot", {})
        if not isinstance(boot, dict):
            return error(400, "PropertyValueTypeError", "Boot must be an object", args=("Boot",))
        state = res.boot_state(system.model, system.http_flags)
        allowed = {"BootSourceOverrideEnabled": ("Disabled", "Once", "Continuous"),
                   "BootSourceOverrideTarget": system.profile.boot_targets,
                   "BootSourceOverrideMode": ("UEFI", "Legacy")}
        for key, value in boot.items():
            if key not in allowed:
                return error(400, "PropertyUnknown", f"the property Boot/{key} is unknown or not writable",
                             args=(f"Boot/{key}",))
            if value not in allowed[key]:
                return error(400, "PropertyValueNotInList", f"{value!r} is not an allowed value of {key}",
                             args=(str(value), key))
        if "BootSourceOverrideTarget" in boot and "BootSourceOverrideEnabled" not in boot and \
                state["BootSourceOverrideEnabled"] == "Disabled":
            state["BootSourceOverrideEnabled"] = "Once"
        state.update(boot)
        model = system.model
        model.boot_flags = res.boot_flags_for(model, state["BootSourceOverrideEnabled"],
                                              state["BootSourceOverrideTarget"], state["BootSourceOverrideMode"])
        system.http_flags = model.boot_flags if state["BootSourceOverrideTarget"] == "UefiHttp" else None
        return self._get_reply(request, self._system_body(system), weak=system.profile.weak_etags,
                               allow=("GET", "PATCH"))

    async def _system_reset(self, request: web.Request, svc: Service, method: str, system: RfSystem) -> Any:
        body = await json_body(request)
        kind = body.get("ResetType")
        if kind is None:
            return error(400, "ActionParameterMissing", "ComputerSystem.Reset needs ResetType",
                         args=("ComputerSystem.Reset", "ResetType"))
        if kind not in system.profile.reset_types:
            return error(400, "ActionParameterValueNotInList", f"{kind!r} is not a ResetType this system offers",
                         args=(str(kind), "ResetType", "ComputerSystem.Reset"))
        if system.pending is not None and system.profile.busy_while_pending:
            return error(409, "ResourceInUse", "a power change is already in progress")
        action = res.RESET_TYPES[kind]
        if action is None:  # Nmi: nothing the simulation models
            return reply(None, 204)
        task = svc.new_task(f"ComputerSystem.Reset {kind}", time.monotonic()) if system.profile.reset_reply == 202 \
            else None
        if system.pending is not None:
            system.pending.cancel()
            if system.pending_task is not None:
                system.pending_task.state = "Cancelled"
        assert self._loop is not None
        system.pending_task = task
        system.pending = self._loop.call_later(system.profile.power_delay, self._apply_reset, system, action, task)
        if task is None:
            return reply(None, 204)
        monitor = f"{V1}/TaskService/TaskMonitors/{task.id}"
        return reply(task.resource(), 202, {"Location": monitor, "Retry-After": "1"})

    def _apply_reset(self, system: RfSystem, action: str, task: Any) -> None:
        system.pending = None
        system.pending_task = None
        model = system.model
        if action == "button":
            action = "soft" if model.powered() else "on"
        try:
            model.power(action)
        except Exception:
            log.exception("%s: reset %s failed", system.name, action)
            if task is not None:
                task.state = "Exception"
            return
        if task is not None:
            task.state = "Completed"

    async def _nics(self, request: web.Request, svc: Service, method: str, system: RfSystem) -> dict[str, Any]:
        path = f"{V1}/Systems/{system.name}/EthernetInterfaces"
        return collection(path, "EthernetInterfaceCollection.EthernetInterfaceCollection",
                           "Ethernet Interface Collection",
                           (n["@odata.id"] for n in res.ethernet_interfaces(system.model)))

    async def _nic(self, request: web.Request, svc: Service, method: str, system: RfSystem, nic: str) -> Any:
        return next((n for n in res.ethernet_interfaces(system.model) if n["Id"] == nic), NOT_FOUND)

    # -- chassis -----------------------------------------------------------------------------

    async def _chassis_all(self, request: web.Request, svc: Service, method: str, system: None) -> dict[str, Any]:
        return collection(f"{V1}/Chassis", "ChassisCollection.ChassisCollection", "Chassis Collection",
                           (f"{V1}/Chassis/{n}" for n in svc.systems))

    async def _chassis(self, request: web.Request, svc: Service, method: str, system: RfSystem) -> dict[str, Any]:
        return res.chassis(system.model, time.monotonic())

    async def _thermal(self, request: web.Request, svc: Service, method: str, system: RfSystem) -> dict[str, Any]:
        return res.thermal(system.model, time.monotonic())

    async def _power(self, request: web.Request, svc: Service, method: str, system: RfSystem) -> dict[str, Any]:
        return res.power(system.model, time.monotonic())

    async def _sensors(self, request: web.Request, svc: Service, method: str, system: RfSystem) -> dict[str, Any]:
        path = f"{V1}/Chassis/{system.name}/Sensors"
        return collection(path, "SensorCollection.SensorCollection", "Sensor Collection",
                           (f"{path}/{res.sensor_id(s)}" for s in res.sensors(system.model)))

    async def _sensor(self, request: web.Request, svc: Service, method: str, system: RfSystem, sensor: str) -> Any:
        found = next((s for s in res.sensors(system.model) if res.sensor_id(s) == sensor), None)
        return NOT_FOUND if found is None else res.sensor(system.model, found, time.monotonic())

    # -- managers and the SEL ------------------------------------------------------------------

    async def _managers(self, request: web.Request, svc: Service, method: str, system: None) -> dict[str, Any]:
        return collection(f"{V1}/Managers", "ManagerCollection.ManagerCollection", "Manager Collection",
                           (f"{V1}/Managers/{n}" for n in svc.systems))

    async def _manager(self, request: web.Request, svc: Service, method: str, system: RfSystem) -> dict[str, Any]:
        return res.manager(system.model, time.monotonic())

    async def _manager_reset(self, request: web.Request, svc: Service, method: str, system: RfSystem) -> Any:
        body = await json_body(request)
        kind = body.get("ResetType", "GracefulRestart")
        if kind not in ("GracefulRestart", "ForceRestart"):
            return error(400, "ActionParameterValueNotInList", f"{kind!r} is not a ResetType this manager offers",
                         args=(str(kind), "ResetType", "Manager.Reset"))
        assert self._loop is not None
        self._loop.call_soon(self._bmc_reset, system)  # after this answer is on its way
        return reply(None, 204)

    def _bmc_reset(self, system: RfSystem) -> None:
        system.model.cold_reset()
        for svc in self.services.values():
            if system.name in svc.systems and len(svc.systems) == 1:
                svc.sessions.clear()
        if self.on_bmc_reset is not None:
            self.on_bmc_reset(system.model)

    async def _log_services(self, request: web.Request, svc: Service, method: str, system: RfSystem) -> Any:
        path = f"{V1}/Managers/{system.name}/LogServices"
        return collection(path, "LogServiceCollection.LogServiceCollection", "Log Service Collection",
                           [f"{path}/{res.SEL_ID}"])

    async def _log_service(self, request: web.Request, svc: Service, method: str, system: RfSystem) -> Any:
        return res.log_service(system.model)

    async def _log_entries(self, request: web.Request, svc: Service, method: str, system: RfSystem) -> Any:
        path = f"{V1}/Managers/{system.name}/LogServices/{res.SEL_ID}/Entries"
        entries = res.log_entries(system.model)
        return {"@odata.id": path, "@odata.type": "#LogEntryCollection.LogEntryCollection",
                "Name": "System Event Log Entries", "Members": entries, "Members@odata.count": len(entries)}

    async def _log_entry(self, request: web.Request, svc: Service, method: str, system: RfSystem, entry: str) -> Any:
        record = next((r for r in system.model.sel if str(int.from_bytes(r[:2], "little")) == entry), None)
        return NOT_FOUND if record is None else res.log_entry(system.model, record)

    async def _clear_log(self, request: web.Request, svc: Service, method: str, system: RfSystem) -> Any:
        await json_body(request, optional=True)
        model = system.model
        model.sel = []
        model.sel_overflow = False
        model.sel_erased = model.sel_clock()
        model.sel_reservation = 0
        return reply(None, 204)


def _allow(methods: Iterable[str]) -> str:
    methods = set(methods)
    return ", ".join(sorted(methods | ({"HEAD"} if "GET" in methods else set())))


def _not_allowed(methods: Iterable[str]) -> web.Response:
    return error(405, "OperationNotAllowed", "the method is not allowed on this resource",
                 headers={"Allow": _allow(methods)})


def _listen(host: str, port: int, name: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(f"{name}: the lab Redfish address {host}:{port} is in use",
                            remedy="stop the other lab or give another port") from exc
        if exc.errno == errno.EACCES and port < 1024:
            raise NeedsRoot(f"{name}: binding {host}:{port} needs root",
                            remedy="run as root or give a port above 1023") from exc
        raise
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock
