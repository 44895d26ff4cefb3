"""The Redfish connector: one HTTP exchange with a BMC, its authentication, and its errors.

- :class:`Http`: one aiohttp ``ClientSession`` per event loop, shared by every BMC, its
  ``TCPConnector`` bounding connections in total and per BMC, keep-alive on. aiohttp because it is
  already a dependency, is asyncio-native (thousands of BMCs on one loop, no thread per request) and
  pins a certificate by fingerprint (:class:`aiohttp.Fingerprint`) on every new connection.
- :class:`BmcState`: what is kept per BMC between operations: the service root, the discovered
  resource paths, and the Redfish session (``X-Auth-Token`` and the session's URI, deleted on close),
  or HTTP Basic where the service has no SessionService (sushy-tools).
- :class:`Call`: one operation on one BMC under one deadline. Every request is bounded by the time left
  and by ``Target.timeout``; bodies are read up to :data:`MAX_BODY` bytes; redirects are never followed;
  a 401 on a reused session renews it once; a 503 is retried after its ``Retry-After`` while the
  deadline allows; a 202 with a task monitor is followed (``Retry-After``, 1 s when absent).

Errors are mapped here, at the edge, into :mod:`fleet.errors`: refused or dropped connections are
:class:`~fleet.errors.DeviceUnreachable`, silence :class:`~fleet.errors.DeviceTimeout`, 5xx
:class:`~fleet.errors.RetryableError`, 401/403 :class:`~fleet.errors.AuthFailed`, 405/501
:class:`~fleet.errors.Unsupported`, a changed certificate, a redirect, invalid JSON or an oversized
body a :class:`~fleet.errors.FatalError`. The password and the session token never appear in a log
line or an error's text (:meth:`Call.scrub`).
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from fleet.errors import (
    AuthFailed,
    DeviceTimeout,
    DeviceUnreachable,
    DriverError,
    FatalError,
    RetryableError,
    Unsupported,
)

from ..base import Target
from .tls import mismatch_error, ssl_for

__all__ = ["MAX_BODY", "BmcState", "Call", "Http", "Reply"]

log = logging.getLogger("fleet.drivers.redfish")

#: Response bodies are read up to this many bytes; a longer one is an error (a log page is far smaller).
MAX_BODY = 4 * 1024 * 1024
#: The service root: the one fixed path of the protocol; everything else is found by its links.
SERVICE_ROOT = "/redfish/v1/"
_BASE_HEADERS = {"Accept": "application/json", "Accept-Encoding": "identity", "OData-Version": "4.0"}
_TASK_RUNNING = frozenset({"New", "Starting", "Running", "Pending", "Suspended", "Stopping", "Cancelling", "Service"})
_TASK_FAILED = frozenset({"Exception", "Killed", "Cancelled", "Interrupted"})


class Http:
    """The aiohttp session of the running event loop, shared by all BMCs (created on first use).

    ``limit`` bounds connections in total, ``limit_per_bmc`` per BMC (host and port).
    """

    def __init__(self, *, limit: int = 256, limit_per_bmc: int = 4, keepalive_s: float = 30.0) -> None:
        self.limit, self.limit_per_bmc, self.keepalive_s = limit, limit_per_bmc, keepalive_s
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            # A session of an earlier loop cannot be used (nor properly closed) on this one: let it go.
            connector = aiohttp.TCPConnector(limit=self.limit, limit_per_host=self.limit_per_bmc,
                                             keepalive_timeout=self.keepalive_s)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                                  headers=_BASE_HEADERS, trust_env=False,
                                                  cookie_jar=aiohttp.DummyCookieJar())
            self._loop = loop
        return self._session

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and self._loop is asyncio.get_running_loop():
            await session.close()


@dataclass(eq=False)
class BmcState:
    """One BMC's cached service root, resource paths and session (shared by its operations)."""

    key: tuple[str, int, str]
    root: dict[str, Any] | None = None
    #: URI of the Sessions collection; "" when the service has none (HTTP Basic); None: not looked up yet.
    sessions_uri: str | None = None
    token: str | None = field(default=None, repr=False)
    session_uri: str | None = None
    #: Discovered resource paths and lists (systems, chassis, managers, log services...), by name.
    links: dict[str, Any] = field(default_factory=dict)
    #: What aiohttp's ``ssl=`` gets (a pinned Fingerprint or a CA context) and the trust it was made from.
    ssl: Any = field(default=None, repr=False)
    ssl_trust: tuple[Any, Any] = (None, None)
    _lock: asyncio.Lock | None = field(default=None, repr=False)
    _lock_loop: Any = field(default=None, repr=False)

    def lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock


@dataclass
class Reply:
    status: int
    headers: Mapping[str, str]
    data: Any = None

    @property
    def etag(self) -> str | None:
        tag = self.headers.get("ETag")
        if not tag and isinstance(self.data, dict):
            tag = self.data.get("@odata.etag")
        return tag or None


def retry_after(headers: Mapping[str, str], default: float = 1.0) -> float:
    """Seconds of a ``Retry-After`` header (a number or an HTTP date), ``default`` when absent or bad."""
    value = (headers.get("Retry-After") or "").strip()
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class Call:
    """One operation (``operation``, for errors) on one BMC, until ``deadline`` (``time.monotonic()``)."""

    def __init__(self, http: Http, bmc: BmcState, target: Target, operation: str, deadline: float) -> None:
        self.http, self.bmc, self.target, self.operation, self.deadline = http, bmc, target, operation, deadline
        trust = (target.options.get("tls_fingerprint"), target.options.get("ca_file"))
        if bmc.ssl is None or bmc.ssl_trust != trust:
            # Kept per BMC: aiohttp pools connections by the identity of this object (keep-alive).
            bmc.ssl, bmc.ssl_trust = ssl_for(target, operation), trust
        self._ssl = bmc.ssl
        host = f"[{target.host}]" if ":" in target.host else target.host
        self._origin = f"https://{host}:{target.port}"

    # -- errors --------------------------------------------------------------------------------

    def scrub(self, text: str) -> str:
        """``text`` without the password or the session token in it (a BMC may echo either)."""
        secrets = [self.bmc.token or ""]
        if self.target.password is not None:
            secrets.append(self.target.password.reveal())
        for secret in secrets:
            if len(secret) >= 3:
                text = text.replace(secret, "***")
        return text

    def error(self, cls: type[DriverError], message: str) -> DriverError:
        return cls(self.scrub(message), target=self.target.name, operation=self.operation)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    # -- requests ------------------------------------------------------------------------------

    def path_of(self, link: str) -> str:
        """The path of ``link`` (an ``@odata.id`` or a ``Location``); a link to another host is refused."""
        parts = urlsplit(link)
        other = parts.scheme != "https" or parts.hostname != self.target.host.strip("[]") or (
            (parts.port or 443) != self.target.port)
        if (parts.scheme or parts.netloc) and other:
            raise self.error(FatalError, f"BMC links to another host ({link}); not followed")
        path = parts.path or "/"
        if not path.startswith("/"):
            raise self.error(FatalError, f"BMC gave a relative link {link!r}")
        return path + (f"?{parts.query}" if parts.query else "")

    async def get(self, link: str) -> dict[str, Any]:
        """The JSON object at ``link`` (a 200 with an object, else an error)."""
        reply = await self.send("GET", link)
        if not isinstance(reply.data, dict):
            raise self.error(FatalError, f"GET {self.path_of(link)}: expected a JSON object, got "
                             f"{type(reply.data).__name__}")
        return reply.data

    async def send(self, method: str, link: str, body: Any = None, *, if_match: str | None = None,
                   ok: tuple[int, ...] = (200, 201, 202, 204)) -> Reply:
        """One authenticated request: 401 on a reused session renews it once; 503 waits out Retry-After."""
        path = self.path_of(link)
        renewed = False
        while True:
            headers, token = await self._auth()
            if if_match is not None:
                headers["If-Match"] = if_match
            reply = await self.exchange(method, path, body, headers)
            if reply.status == 401:
                if token is not None and not renewed:
                    await self._forget(token)
                    renewed = True
                    continue
                raise self.error(AuthFailed, f"HTTP 401 from {method} {path}: the BMC refused the credentials of "
                                 f"user {self.target.username!r}")
            if reply.status == 503:
                wait = retry_after(reply.headers)
                if time.monotonic() + wait < self.deadline:
                    await asyncio.sleep(wait)
                    continue
                raise self.error(RetryableError, f"HTTP 503 from {method} {path}: service unavailable "
                                 f"(Retry-After {wait:g}s is past the deadline){self._message(reply)}")
            break
        if reply.status in ok:
            return reply
        raise self.status_error(method, path, reply)

    def status_error(self, method: str, path: str, reply: Reply) -> DriverError:
        """The error for an unwanted HTTP status (its ``http_status`` attribute is the status)."""
        exc = self._status_error(method, path, reply)
        exc.http_status = reply.status  # type: ignore[attr-defined]
        return exc

    def _status_error(self, method: str, path: str, reply: Reply) -> DriverError:
        status = reply.status
        text = f"HTTP {status} from {method} {path}{self._message(reply)}"
        if 300 <= status < 400:
            where = reply.headers.get("Location", "?")
            return self.error(FatalError, f"HTTP {status} from {method} {path}: redirect to {where} not followed")
        if status == 403:
            return self.error(AuthFailed, text + " (user lacks the privilege)")
        if status in (405, 501):
            return self.error(Unsupported, text)
        if status == 409 or status >= 500:
            return self.error(RetryableError, text)
        return self.error(FatalError, text)

    @staticmethod
    def _message(reply: Reply) -> str:
        """The Redfish error's message (``error.message`` and the first ExtendedInfo), for an error text."""
        data = reply.data
        if not isinstance(data, dict) or not isinstance(data.get("error"), dict):
            return ""
        err = data["error"]
        parts = [str(err.get("message") or err.get("code") or "")]
        extended = err.get("@Message.ExtendedInfo")
        if isinstance(extended, list) and extended and isinstance(extended[0], dict):
            parts.append(str(extended[0].get("Message") or extended[0].get("MessageId") or ""))
        text = "; ".join(p for p in parts if p)[:300]
        return f": {text}" if text else ""

    async def exchange(self, method: str, path: str, body: Any, headers: dict[str, str]) -> Reply:
        """One HTTP exchange, bounded in time and size; a 3xx is returned as is (never followed)."""
        left = self.left()
        budget = min(left, float(self.target.timeout))
        if budget <= 0:
            raise self.error(DeviceTimeout, f"deadline passed before {method} {path}")
        url = self._origin + path
        data = None if body is None else json.dumps(body).encode()
        if data is not None:
            headers["Content-Type"] = "application/json"
        try:
            async with asyncio.timeout(budget):
                async with self.http.session().request(
                        method, url, data=data, headers=headers, ssl=self._ssl, allow_redirects=False,
                        timeout=aiohttp.ClientTimeout(total=budget)) as resp:
                    raw = await self._read(resp, method, path)
                    status, reply_headers = resp.status, resp.headers
        except DriverError:
            raise
        except aiohttp.ServerFingerprintMismatch as exc:
            raise mismatch_error(self.target, self.operation, exc.got) from None
        except aiohttp.ClientConnectorCertificateError as exc:
            raise self.error(FatalError, f"TLS certificate not trusted (CA file "
                             f"{self.target.options.get('ca_file')}): {exc.certificate_error}") from None
        except aiohttp.ClientSSLError as exc:
            raise self.error(DeviceUnreachable, f"TLS handshake with {self.target.address} failed: "
                             f"{exc.os_error}") from None
        except aiohttp.ClientConnectorError as exc:
            raise self.error(DeviceUnreachable, f"cannot connect to {self.target.address}: {exc.os_error}") from None
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise self.error(DeviceTimeout, f"no answer to {method} {path} within {budget:.1f}s") from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise self.error(DeviceUnreachable, f"connection lost during {method} {path}: "
                             f"{type(exc).__name__} {exc}") from None
        except aiohttp.ClientError as exc:
            raise self.error(FatalError, f"bad HTTP answer to {method} {path}: {type(exc).__name__} {exc}") from None
        log.debug("%s %s %s -> %s (%d bytes)", self.target.name, method, path, status, len(raw))
        return Reply(status, reply_headers, self._parse(raw, method, path, status))

    async def _read(self, resp: aiohttp.ClientResponse, method: str, path: str) -> bytes:
        if resp.content_length is not None and resp.content_length > MAX_BODY:
            resp.close()
            raise self.error(FatalError, f"answer to {method} {path} is {resp.content_length} bytes, over the "
                             f"{MAX_BODY} byte limit")
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(65536):
            size += len(chunk)
            if size > MAX_BODY:
                resp.close()
                raise self.error(FatalError, f"answer to {method} {path} exceeds {MAX_BODY} bytes; not read further")
            chunks.append(chunk)
        return b"".join(chunks)

    def _parse(self, raw: bytes, method: str, path: str, status: int) -> Any:
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            if status >= 400 or 300 <= status < 400:
                return None  # an error page in HTML: the status says enough
            raise self.error(FatalError, f"invalid JSON in the answer to {method} {path} (HTTP {status}): "
                             f"{exc}") from None

    # -- authentication ------------------------------------------------------------------------

    async def root(self) -> dict[str, Any]:
        """The service root (cached per BMC); read without credentials, as the standard allows."""
        if self.bmc.root is None:
            reply = await self.exchange("GET", SERVICE_ROOT, None, {})
            if reply.status == 401:
                reply = await self.exchange("GET", SERVICE_ROOT, None, self._basic())
            if reply.status != 200:
                raise self.status_error("GET", SERVICE_ROOT, reply)
            if not isinstance(reply.data, dict):
                raise self.error(FatalError, f"GET {SERVICE_ROOT}: the service root is not a JSON object")
            self.bmc.root = reply.data
        return self.bmc.root

    def _basic(self) -> dict[str, str]:
        password = self.target.password.reveal() if self.target.password is not None else ""
        pair = f"{self.target.username}:{password}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}

    async def _auth(self) -> tuple[dict[str, str], str | None]:
        """Headers that authenticate a request, and the session token they carry (None: Basic)."""
        bmc = self.bmc
        if bmc.sessions_uri is None or (bmc.sessions_uri and bmc.token is None):
            async with bmc.lock():
                if bmc.sessions_uri is None or (bmc.sessions_uri and bmc.token is None):
                    await self._login()
        if bmc.token is not None:
            return {"X-Auth-Token": bmc.token}, bmc.token
        return self._basic(), None

    async def _forget(self, token: str) -> None:
        """Drop a session the BMC no longer accepts (once: concurrent callers see the renewed one)."""
        async with self.bmc.lock():
            if self.bmc.token == token:
                self.bmc.token, self.bmc.session_uri = None, None

    async def _login(self) -> None:
        root = await self.root()
        uri = ((root.get("Links") or {}).get("Sessions") or {}).get("@odata.id") or ""
        if not uri:
            self.bmc.sessions_uri = ""  # no SessionService: HTTP Basic on every request
            return
        path = self.path_of(uri)
        password = self.target.password.reveal() if self.target.password is not None else ""
        reply = await self.exchange("POST", path, {"UserName": self.target.username, "Password": password}, {})
        if reply.status in (401, 403):
            raise self.error(AuthFailed, f"HTTP {reply.status} from POST {path}: the BMC refused a session for "
                             f"user {self.target.username!r}")
        if reply.status in (404, 405, 501):
            log.debug("%s: no sessions at %s (HTTP %s); using HTTP Basic", self.target.name, path, reply.status)
            self.bmc.sessions_uri = ""
            return
        if reply.status == 503:
            raise self.error(RetryableError, f"HTTP 503 from POST {path}: session service unavailable")
        if reply.status not in (200, 201, 204):
            raise self.status_error("POST", path, reply)
        token = reply.headers.get("X-Auth-Token")
        if not token:
            raise self.error(FatalError, f"POST {path} created a session but gave no X-Auth-Token")
        where = reply.headers.get("Location")
        if not where and isinstance(reply.data, dict):
            where = reply.data.get("@odata.id")
        self.bmc.sessions_uri, self.bmc.token = path, token
        self.bmc.session_uri = self.path_of(where) if where else None
        log.debug("%s: session created", self.target.name)

    async def logout(self) -> None:
        """Delete this BMC's session (best effort: a BMC that is gone forgets it by itself)."""
        bmc = self.bmc
        token, where = bmc.token, bmc.session_uri
        bmc.token, bmc.session_uri = None, None
        if token is None or where is None:
            return
        try:
            await self.exchange("DELETE", where, None, {"X-Auth-Token": token})
        except DriverError as exc:
            log.debug("%s: session not deleted: %s", self.target.name, exc)

    # -- long actions --------------------------------------------------------------------------

    async def action(self, link: str, body: dict[str, Any], *, ok: tuple[int, ...] = (200, 201, 202, 204)) -> Reply:
        """POST an action; a 202 with a task monitor is followed until the task ends or the deadline."""
        reply = await self.send("POST", link, body, ok=ok)
        if reply.status != 202:
            return reply
        monitor = reply.headers.get("Location") or (
            reply.data.get("@odata.id") if isinstance(reply.data, dict) else None)
        if not monitor:
            return reply  # accepted, nothing to follow
        return await self.follow_task(monitor, reply)

    async def follow_task(self, monitor: str, reply: Reply) -> Reply:
        path = self.path_of(monitor)
        while True:
            wait = retry_after(reply.headers)
            if time.monotonic() + wait >= self.deadline:
                raise self.error(DeviceTimeout, f"task {path} still running at the deadline")
            await asyncio.sleep(wait)
            reply = await self.send("GET", path)
            state = reply.data.get("TaskState") if isinstance(reply.data, dict) else None
            if reply.status == 202 or state in _TASK_RUNNING:
                continue
            if state in _TASK_FAILED:
                messages = [m.get("Message", "") for m in reply.data.get("Messages") or [] if isinstance(m, dict)]
                raise self.error(FatalError, f"task {path} ended {state}: {'; '.join(messages) or 'no message'}")
            return reply
