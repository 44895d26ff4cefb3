"""The PXE HTTP server's access log: one bounded JSON line per request, parseable or not.

aiohttp builds a request object for what it could not parse (a 64 KiB URL, a header with a NUL, a
line of garbage) that has no application; an access logger that asks it for one raises, and every
such request became a traceback on stderr and nothing in the log. Here the log does not go through
the application at all: :class:`HttpServer` (an :class:`aiohttp.web.Server`) makes connections of
:class:`_Connection`, which writes the access log itself, holding the log directly:

- a request that was handled: ``ts``, ``client``, ``method``, ``path`` (percent-encoded, without
  the query, cut at :data:`MAX_PATH` characters with ``"truncated": true``), ``status``, ``bytes``,
  plus what the handler noted (callbacks: ``host``, ``phase``, ``ok``, ``reason``);
- a request aiohttp refused to parse (400): the same keys, ``method`` and ``path`` null, and
  ``bad_request``: the parser's reason, cut at :data:`MAX_REASON` characters;
- a connection that closed (by the client, or by the server at the read deadline: aiohttp's
  keep-alive timer also bounds the wait for a request head) with part of a request unread: one line
  with ``status`` null and ``bad_request`` ``"incomplete request (N bytes) ..."``.

Nothing goes to stderr for any of these; a real bug in a handler (a 500) is logged once on this
module's logger.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import IO, Any
from urllib.parse import quote

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

__all__ = ["MAX_PATH", "MAX_REASON", "NOTE", "AccessLog", "HttpServer"]

MAX_PATH = 256
MAX_REASON = 200
_MAX_METHOD = 16
#: What a handler adds to its request's log line (``request[NOTE] = {...}``).
NOTE = web.RequestKey("rackfleet_note", dict)
log = logging.getLogger(__name__)
_quiet = logging.getLogger(__name__ + ".aiohttp")  # aiohttp's own messages about bad requests (debug only)


def _printable(text: str, limit: int) -> tuple[str, bool]:
    """``text`` percent-encoded where it is not printable ASCII (so a log line holds no control or bidi
    characters), cut at ``limit`` characters; and whether it was cut."""
    safe = quote(text[:limit * 3], safe="/:@!$&'()*+,;=-._~ \"<>[]{}|^`#?")
    return safe[:limit], len(safe) > limit or len(text) > limit * 3


class AccessLog:
    """Where the lines go: an open text file (flushed per line), or nowhere."""

    def __init__(self, out: IO[str] | None) -> None:
        self.out = out

    def write(self, rec: dict[str, Any]) -> None:
        if self.out is None:
            return
        rec["ts"] = datetime.now(UTC).isoformat(timespec="milliseconds")
        try:
            self.out.write(json.dumps(rec, sort_keys=True) + "\n")
            self.out.flush()
        except (OSError, ValueError) as exc:  # a full disk or a closed file must not kill the server
            log.error("cannot write the HTTP access log: %s", exc)

    def request(self, request: web.BaseRequest, response: web.StreamResponse) -> None:
        note: dict[str, Any] = {}
        try:
            note = dict(request.get(NOTE) or {})
        except Exception:
            note = {}
        rec: dict[str, Any] = {"client": _client(request), "status": response.status,
                               "bytes": response.content_length if response.content_length is not None
                               else response.body_length}
        if "bad_request" in note:
            rec["method"] = rec["path"] = None
        else:
            method, _ = _printable(request.method, _MAX_METHOD)
            path, cut = _printable(request.path, MAX_PATH)
            rec.update(method=method, path=path)
            if cut:
                rec["truncated"] = True
        rec.update(note)
        self.write(rec)


def _client(request: web.BaseRequest) -> str | None:
    try:
        return request.remote
    except Exception:
        return None


class _Connection(RequestHandler):
    """aiohttp's connection handler, logging every request (and every unfinished one) to an AccessLog."""

    def __init__(self, manager: HttpServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._rf_log = manager.access
        self._rf_peer: str | None = None
        self._rf_unparsed = 0  # bytes received since the last complete request head

    def connection_made(self, transport: Any) -> None:
        peer = transport.get_extra_info("peername")
        self._rf_peer = peer[0] if isinstance(peer, tuple | list) and peer else None
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        # aiohttp counts every parsed request head (or parse error) in _request_count; bytes that come
        # while a request is being handled are its body, not a new request.
        before = self._request_count
        if not self._request_in_progress:
            self._rf_unparsed += len(data)
        super().data_received(data)
        if self._request_count != before:
            self._rf_unparsed = 0

    def connection_lost(self, exc: BaseException | None) -> None:
        pending, self._rf_unparsed = self._rf_unparsed, 0
        super().connection_lost(exc)
        if pending and not self._request_in_progress:
            self._rf_log.write({"client": self._rf_peer, "method": None, "path": None, "status": None, "bytes": 0,
                                "bad_request": f"incomplete request ({pending} bytes) when the connection closed"})

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if isinstance(exc, HttpProcessingError) or status == 400:
            reason, _ = _printable(" ".join(str(message or exc or "bad request").split()), MAX_REASON)
            request[NOTE] = {"bad_request": reason}
        elif status >= 500:
            request[NOTE] = {"error": type(exc).__name__ if exc is not None else f"status {status}"}
        return super().handle_error(request, status, exc, message)

    def log_exception(self, *args: Any, **kw: Any) -> None:
        exc = kw.get("exc_info")
        if isinstance(exc, HttpProcessingError):
            return  # a bad request: its log line says why
        log.error(*args, **kw)  # a bug in a handler: say so once, with the traceback

    def log_access(self, request: web.BaseRequest, response: web.StreamResponse, time: float | None) -> None:
        self._rf_log.request(request, response)


class HttpServer(web.Server):
    """A low-level aiohttp server whose connections write ``access`` (see the module docstring).

    ``read_timeout`` bounds how long a connection may take to send a request head (and stay idle
    between requests): aiohttp's keep-alive timer, armed when the connection opens."""

    def __init__(self, handler: Any, access: AccessLog, *, read_timeout: float = 10.0, **kwargs: Any) -> None:
        super().__init__(handler, keepalive_timeout=read_timeout, access_log=None, logger=_quiet, **kwargs)
        self.access = access

    def __call__(self) -> RequestHandler:
        return _Connection(self, loop=self._loop, **self._kwargs)
