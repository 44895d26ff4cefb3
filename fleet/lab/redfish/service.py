"""What a lab Redfish service holds besides the BMC models: its behaviour, sessions, tasks, replies.

:class:`RedfishProfile` is how one lab server's Redfish behaves (reset types offered, boot targets,
sessions or Basic only, ETag strictness, 204 or 202 with a task, how long power takes);
:class:`RfSystem` is one server seen by Redfish (its :class:`~fleet.lab.bmcmodel.BmcModel` plus the
few things IPMI has no place for); :class:`Service` is what one listening address serves: its
systems, its sessions and its tasks. The reply helpers build Redfish error bodies (Base registry).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import secrets
import time
from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web

from ..bmcmodel import BmcModel
from .resources import BOOT_TARGETS, RESET_TYPES

__all__ = ["DEFAULT_PROFILE", "NOT_FOUND", "BadRequest", "RedfishProfile", "RfSystem", "Service", "Session", "Task",
           "collection", "error", "etag_of", "json_body", "reply"]

BASE = "Base.1.15.0"


@dataclasses.dataclass(frozen=True)
class RedfishProfile:
    """How one lab server's Redfish service behaves (spec key ``redfish``: an object of these fields).

    - ``reset_types``: the ResetType values ComputerSystem.Reset lists and accepts;
    - ``boot_targets``: BootSourceOverrideTarget's allowable values;
    - ``sessions``: a SessionService with sessions (False: Basic only, as sushy-tools);
    - ``basic_auth``: HTTP Basic accepted on every request;
    - ``require_if_match``: a PATCH without If-Match is refused (428);
    - ``weak_etags``: ETags are served weak (``W/"..."``); If-Match compares strongly, so sending one
      back gives 412 (the case sushy's retry ladder handles);
    - ``reset_reply``: 204 (accepted, done later) or 202 (with a task monitor);
    - ``power_delay``: seconds between an accepted reset and the power change;
    - ``busy_while_pending``: another reset while one is pending gets 409 (iDRAC);
    - ``session_timeout``: seconds a session lives unused.
    """

    reset_types: tuple[str, ...] = ("On", "ForceOff", "GracefulShutdown", "GracefulRestart", "ForceRestart",
                                    "PowerCycle", "PushPowerButton", "Nmi")
    boot_targets: tuple[str, ...] = ("None", "Pxe", "Hdd", "Cd", "BiosSetup", "UefiHttp")
    sessions: bool = True
    basic_auth: bool = True
    require_if_match: bool = False
    weak_etags: bool = False
    reset_reply: int = 204
    power_delay: float = 1.0
    busy_while_pending: bool = False
    session_timeout: float = 1800.0

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any] | None, base: RedfishProfile | None = None) -> RedfishProfile:
        """A profile from a spec's ``redfish`` object (unknown keys and bad values raise ValueError)."""
        base = base or DEFAULT_PROFILE
        if not doc:
            return base
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(doc) - fields)
        if unknown:
            raise ValueError(f"unknown Redfish profile key(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}")
        values = dict(doc)
        for key in ("reset_types", "boot_targets"):
            if key in values:
                values[key] = tuple(values[key])
        profile = dataclasses.replace(base, **values)
        bad = [t for t in profile.reset_types if t not in RESET_TYPES]
        bad += [t for t in profile.boot_targets if t not in BOOT_TARGETS]
        if bad:
            raise ValueError(f"unknown reset type or boot target(s): {', '.join(bad)}")
        if profile.reset_reply not in (202, 204):
            raise ValueError("reset_reply must be 202 or 204")
        if profile.power_delay < 0 or profile.session_timeout <= 0:
            raise ValueError("power_delay must be >= 0 and session_timeout > 0")
        if "None" not in profile.boot_targets:
            profile = dataclasses.replace(profile, boot_targets=("None", *profile.boot_targets))
        return profile


DEFAULT_PROFILE = RedfishProfile()


class RfSystem:
    """One lab server as Redfish sees it: the shared model, its profile, and Redfish-only state."""

    __slots__ = ("http_flags", "model", "pending", "pending_task", "profile")

    def __init__(self, model: BmcModel, profile: RedfishProfile) -> None:
        self.model = model
        self.profile = profile
        self.http_flags: bytes | None = None  # the boot flags a UefiHttp override wrote
        self.pending: asyncio.TimerHandle | None = None  # an accepted reset not yet applied
        self.pending_task: Task | None = None

    @property
    def name(self) -> str:
        return self.model.spec.name


@dataclasses.dataclass
class Session:
    id: str
    token: str
    username: str
    password: str  # the password it was made with: a changed password (fault) ends it
    epoch: float  # the model's dark_until when made: a BMC reset ends it
    used: float


@dataclasses.dataclass
class Task:
    id: str
    name: str
    started: float
    state: str = "Running"  # Running, Completed, Exception

    def resource(self) -> dict[str, Any]:
        done = self.state != "Running"
        return {"@odata.id": f"/redfish/v1/TaskService/Tasks/{self.id}", "@odata.type": "#Task.v1_7_0.Task",
                "Id": self.id, "Name": self.name, "TaskState": self.state,
                "TaskStatus": "OK" if self.state != "Exception" else "Critical",
                "PercentComplete": 100 if done else 0,
                "StartTime": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(self.started)),
                "TaskMonitor": f"/redfish/v1/TaskService/TaskMonitors/{self.id}", "Messages": []}


class Service:
    """What one listening address serves: one system (a BMC of its own) or several (one shared root)."""

    __slots__ = ("host", "next_id", "port", "sessions", "systems", "tasks")

    def __init__(self, host: str, port: int, systems: list[RfSystem]) -> None:
        self.host = host
        self.port = port
        self.systems = {s.name: s for s in systems}
        self.sessions: dict[str, Session] = {}  # by token
        self.tasks: dict[str, Task] = {}
        self.next_id = 1

    @property
    def first(self) -> RfSystem:
        return next(iter(self.systems.values()))

    @property
    def profile(self) -> RedfishProfile:
        """The service-wide behaviour (sessions, auth) is the first system's."""
        return self.first.profile

    def login(self, username: str, password: str, now: float) -> Session | None:
        spec, model = self.first.model.spec, self.first.model
        if not (secrets.compare_digest(username, spec.username) and secrets.compare_digest(password, model.password)):
            return None
        self.expire(now)
        sid, self.next_id = str(self.next_id), self.next_id + 1
        session = Session(sid, secrets.token_hex(16), username, password, model.dark_until, now)
        self.sessions[session.token] = session
        return session

    def session(self, token: str, now: float) -> Session | None:
        session = self.sessions.get(token)
        model = self.first.model
        if session is None:
            return None
        if (now - session.used > self.profile.session_timeout or session.password != model.password
                or session.epoch != model.dark_until):
            del self.sessions[token]
            return None
        session.used = now
        return session

    def by_id(self, sid: str) -> Session | None:
        return next((s for s in self.sessions.values() if s.id == sid), None)

    def expire(self, now: float) -> None:
        timeout = self.profile.session_timeout
        for token in [t for t, s in self.sessions.items() if now - s.used > timeout]:
            del self.sessions[token]

    def basic_ok(self, username: str, password: str) -> bool:
        spec, model = self.first.model.spec, self.first.model
        return secrets.compare_digest(username, spec.username) and secrets.compare_digest(password, model.password)

    def new_task(self, name: str, now: float) -> Task:
        tid = str(self.next_id)
        self.next_id += 1
        task = Task(tid, name, time.time())
        self.tasks[tid] = task
        if len(self.tasks) > 64:  # keep the newest
            for old in list(self.tasks)[:-64]:
                del self.tasks[old]
        return task


# -- replies -----------------------------------------------------------------------------------

_HEADERS = {"OData-Version": "4.0", "Cache-Control": "no-cache"}


def etag_of(body: bytes, weak: bool = False) -> str:
    tag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
    return "W/" + tag if weak else tag


def reply(body: Any = None, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """A Redfish JSON reply (no body for 204)."""
    hdrs = {**_HEADERS, **(headers or {})}
    if body is None or status == 204:
        return web.Response(status=status, headers=hdrs)
    data = body if isinstance(body, bytes) else json.dumps(body, separators=(",", ":")).encode()
    return web.Response(status=status, body=data, headers=hdrs, content_type="application/json", charset="utf-8")


def error(status: int, message_id: str, message: str, *, headers: Mapping[str, str] | None = None,
          args: tuple[str, ...] = ()) -> web.Response:
    """A Redfish error reply: ``{"error": {...}}`` with one Base registry message."""
    info = {"@odata.type": "#Message.v1_1_1.Message", "MessageId": f"{BASE}.{message_id}", "Message": message,
            "MessageArgs": list(args), "MessageSeverity": "Critical" if status >= 500 else "Warning",
            "Resolution": "See the message."}
    body = {"error": {"code": f"{BASE}.{message_id if status < 500 else 'GeneralError'}", "message": message,
                      "@Message.ExtendedInfo": [info]}}
    return reply(body, status, headers)


#: A handler's answer for "no such resource" (the responder replies 404).
NOT_FOUND = object()


def collection(path: str, odata_type: str, name: str, members: Iterable[str]) -> dict[str, Any]:
    """A resource collection of links."""
    links = [{"@odata.id": m} for m in members]
    return {"@odata.id": path, "@odata.type": f"#{odata_type}", "Name": name, "Members": links,
            "Members@odata.count": len(links)}


class BadRequest(Exception):
    """Raised by a handler: answer with this error reply."""

    def __init__(self, response: web.Response) -> None:
        self.response = response


async def json_body(request: web.Request, *, optional: bool = False) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip() and optional:
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise BadRequest(error(400, "MalformedJSON", "the request body is not valid JSON")) from None
    if not isinstance(body, dict):
        raise BadRequest(error(400, "MalformedJSON", "the request body must be a JSON object"))
    return body
