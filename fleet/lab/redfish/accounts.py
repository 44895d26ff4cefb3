"""The lab Redfish service's SessionService, AccountService and TaskService.

:class:`AccountHandlers` holds their request handlers; :class:`~fleet.lab.redfish.responder.RedfishResponder`
inherits them and routes to them. A lab BMC has one account (the spec's user, Administrator); its
roles are the three standard ones, read-only. Sessions live in the
:class:`~fleet.lab.redfish.service.Service` of the address; tasks come from a 202 reset.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from .service import NOT_FOUND, Service, collection, error, json_body, reply

__all__ = ["ROLES", "AccountHandlers"]

V1 = "/redfish/v1"
#: The standard roles and their privileges (Redfish Specification, "Roles").
ROLES: dict[str, list[str]] = {
    "Administrator": ["Login", "ConfigureManager", "ConfigureUsers", "ConfigureSelf", "ConfigureComponents"],
    "Operator": ["Login", "ConfigureSelf", "ConfigureComponents"],
    "ReadOnly": ["Login", "ConfigureSelf"],
}


class AccountHandlers:
    """Request handlers: ``(request, service, method, system, **ids)`` -> a body, a reply or NOT_FOUND."""

    async def _session_service(self, request: web.Request, svc: Service, method: str, system: None) -> Any:
        if not svc.profile.sessions:
            return NOT_FOUND
        return {"@odata.id": f"{V1}/SessionService", "@odata.type": "#SessionService.v1_1_9.SessionService",
                "Id": "SessionService", "Name": "Session Service", "ServiceEnabled": True,
                "SessionTimeout": int(svc.profile.session_timeout), "Status": {"State": "Enabled", "Health": "OK"},
                "Sessions": {"@odata.id": f"{V1}/SessionService/Sessions"}}

    async def _sessions(self, request: web.Request, svc: Service, method: str, system: None) -> Any:
        if not svc.profile.sessions:
            return NOT_FOUND
        now = time.monotonic()
        if method == "GET":
            svc.expire(now)
            return collection(f"{V1}/SessionService/Sessions", "SessionCollection.SessionCollection",
                               "Session Collection", (f"{V1}/SessionService/Sessions/{s.id}"
                                                      for s in svc.sessions.values()))
        body = await json_body(request)
        user, password = body.get("UserName"), body.get("Password")
        if not isinstance(user, str) or not isinstance(password, str):
            return error(400, "PropertyMissing", "a login needs UserName and Password", args=("UserName",))
        session = svc.login(user, password, now)
        if session is None:
            return error(401, "NoValidSession", "the user name or password is wrong")
        location = f"{V1}/SessionService/Sessions/{session.id}"
        return reply(self._session_body(session), 201, {"X-Auth-Token": session.token, "Location": location})

    @staticmethod
    def _session_body(session: Any) -> dict[str, Any]:
        return {"@odata.id": f"{V1}/SessionService/Sessions/{session.id}", "@odata.type": "#Session.v1_7_0.Session",
                "Id": session.id, "Name": f"Session {session.id}", "UserName": session.username}

    async def _session(self, request: web.Request, svc: Service, method: str, system: None, sid: str) -> Any:
        session = svc.by_id(sid) if svc.profile.sessions else None
        if session is None:
            return NOT_FOUND
        if method == "DELETE":
            del svc.sessions[session.token]
            return reply(None, 204)
        return self._session_body(session)

    async def _task_service(self, request: web.Request, svc: Service, method: str, system: None) -> Any:
        return {"@odata.id": f"{V1}/TaskService", "@odata.type": "#TaskService.v1_2_0.TaskService",
                "Id": "TaskService", "Name": "Task Service", "ServiceEnabled": True,
                "CompletedTaskOverWritePolicy": "Oldest", "Status": {"State": "Enabled", "Health": "OK"},
                "Tasks": {"@odata.id": f"{V1}/TaskService/Tasks"}}

    async def _tasks(self, request: web.Request, svc: Service, method: str, system: None) -> Any:
        return collection(f"{V1}/TaskService/Tasks", "TaskCollection.TaskCollection", "Task Collection",
                           (f"{V1}/TaskService/Tasks/{t}" for t in svc.tasks))

    async def _task(self, request: web.Request, svc: Service, method: str, system: None, tid: str) -> Any:
        task = svc.tasks.get(tid)
        return NOT_FOUND if task is None else task.resource()

    async def _task_monitor(self, request: web.Request, svc: Service, method: str, system: None, tid: str) -> Any:
        task = svc.tasks.get(tid)
        if task is None:
            return NOT_FOUND
        if task.state == "Running":
            return reply(task.resource(), 202, {"Location": f"{V1}/TaskService/TaskMonitors/{tid}",
                                                "Retry-After": "1"})
        return reply(None, 204)

    async def _account_service(self, request: web.Request, svc: Service, method: str, system: None) -> Any:
        return {"@odata.id": f"{V1}/AccountService", "@odata.type": "#AccountService.v1_15_0.AccountService",
                "Id": "AccountService", "Name": "Account Service", "ServiceEnabled": True,
                "Status": {"State": "Enabled", "Health": "OK"}, "LocalAccountAuth": "Enabled",
                "Accounts": {"@odata.id": f"{V1}/AccountService/Accounts"},
                "Roles": {"@odata.id": f"{V1}/AccountService/Roles"}}

    async def _accounts(self, request: web.Request, svc: Service, method: str, system: None) -> Any:
        return collection(f"{V1}/AccountService/Accounts", "ManagerAccountCollection.ManagerAccountCollection",
                          "Accounts Collection", [f"{V1}/AccountService/Accounts/1"])

    async def _account(self, request: web.Request, svc: Service, method: str, system: None, aid: str) -> Any:
        if aid != "1":
            return NOT_FOUND
        return {"@odata.id": f"{V1}/AccountService/Accounts/1", "@odata.type": "#ManagerAccount.v1_12_0.ManagerAccount",
                "Id": "1", "Name": "User Account", "UserName": svc.first.model.spec.username, "Enabled": True,
                "Locked": False, "RoleId": "Administrator", "Password": None,
                "Links": {"Role": {"@odata.id": f"{V1}/AccountService/Roles/Administrator"}}}

    async def _roles(self, request: web.Request, svc: Service, method: str, system: None) -> Any:
        return collection(f"{V1}/AccountService/Roles", "RoleCollection.RoleCollection", "Roles Collection",
                          (f"{V1}/AccountService/Roles/{r}" for r in ROLES))

    async def _role(self, request: web.Request, svc: Service, method: str, system: None, rid: str) -> Any:
        if rid not in ROLES:
            return NOT_FOUND
        return {"@odata.id": f"{V1}/AccountService/Roles/{rid}", "@odata.type": "#Role.v1_3_1.Role", "Id": rid,
                "Name": f"{rid} Role", "RoleId": rid, "IsPredefined": True, "AssignedPrivileges": ROLES[rid]}
