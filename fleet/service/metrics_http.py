"""The ``/metrics`` HTTP listener, bounded: one event loop, a small render pool, deadlines and caps.

``prometheus_client``'s own server starts a thread per connection and waits for a request without a
deadline: 3,000 idle sockets held 3,002 threads and 168 MB. This listener holds every connection on
one asyncio loop (in the calling thread) and renders scrapes in a pool of :attr:`Limits.render_workers`
threads, so its thread count does not follow its connections. Per connection:

- the request head must arrive within :attr:`Limits.read_timeout_s` (else the connection is closed)
  and fit in :attr:`Limits.max_request_bytes` (else 431); only ``GET``/``HEAD`` (else 405) of
  ``/metrics`` or ``/`` (else 404); the answer is written within the same deadline; ``Connection:
  close`` after each answer;
- at most :attr:`Limits.max_connections` are open at once. A new connection over the cap closes the
  oldest one that has not sent a complete request yet (an idle or slow client loses its slot to a
  newcomer, so idle sockets cannot lock a scraper out); if every slot is busy rendering, the newcomer
  gets 503 and is closed.

**Authentication** (issue 16 adds bearer tokens / mTLS) has one place: the ``authorize`` callable
gets the parsed :class:`ScrapeRequest` (peer, method, path, lower-cased headers) and answers True or
False (401); ``ssl`` is an :class:`ssl.SSLContext` handed to the listening socket (client
certificates then show in :attr:`ScrapeRequest.peer_cert`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import ssl as ssl_module
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["Limits", "MetricsListener", "ScrapeRequest"]

log = logging.getLogger(__name__)
_PATHS = ("/metrics", "/")
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
            431: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}


@dataclass(frozen=True)
class Limits:
    """What one listener may hold (see the module docstring)."""

    max_connections: int = 64
    read_timeout_s: float = 5.0
    max_request_bytes: int = 8192
    render_workers: int = 2


@dataclass(frozen=True)
class ScrapeRequest:
    """A parsed request head, as ``authorize`` sees it."""

    peer: str
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    peer_cert: dict[str, Any] | None = None


@dataclass(eq=False)
class _Conn:
    task: asyncio.Task[None]
    writer: asyncio.StreamWriter
    busy: bool = False  # a complete request head arrived: it is being answered


class MetricsListener:
    """Serve ``render()`` (Prometheus text) on ``host:port``. ``port`` 0 picks one (:attr:`port` says which)."""

    def __init__(self, render: Callable[[], bytes], host: str, port: int, *, limits: Limits = Limits(),
                 authorize: Callable[[ScrapeRequest], bool] | None = None,
                 ssl: ssl_module.SSLContext | None = None) -> None:
        self.render = render
        self.host = host
        self.port = port
        self.limits = limits
        self.authorize = authorize
        self.ssl = ssl
        self._server: asyncio.Server | None = None
        self._conns: dict[_Conn, None] = {}  # insertion order: oldest first
        self._pool = ThreadPoolExecutor(max_workers=max(1, limits.render_workers), thread_name_prefix="metrics")
        #: Connections closed to make room, refused with 503, timed out: figures for tests and logs.
        self.evicted = self.refused = self.timed_out = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, self.host, self.port, ssl=self.ssl,
                                                  limit=self.limits.max_request_bytes, reuse_address=True,
                                                  backlog=min(1024, self.limits.max_connections * 4))
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for conn in list(self._conns):
                conn.task.cancel()
            await self._server.wait_closed()
            self._server = None
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def serve_until(self, stop: threading.Event, poll_s: float = 0.1) -> None:
        """Run until ``stop`` is set (checked every ``poll_s``: a signal handler may set it)."""
        while not stop.is_set():
            await asyncio.sleep(poll_s)

    @property
    def connections(self) -> int:
        return len(self._conns)

    # -- one connection ------------------------------------------------------------------------------

    def _admit(self, conn: _Conn) -> bool:
        if len(self._conns) >= self.limits.max_connections:
            idle = next((c for c in self._conns if not c.busy), None)
            if idle is None:
                return False
            self._conns.pop(idle, None)
            idle.task.cancel()
            self.evicted += 1
        self._conns[conn] = None
        return True

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        conn = _Conn(task, writer)
        try:
            if not self._admit(conn):
                self.refused += 1
                await self._answer(writer, 503, b"too many connections\n")
                return
            await self._serve_one(conn, reader, writer)
        except asyncio.CancelledError:
            pass  # evicted or stopping
        except (ConnectionError, OSError):
            pass
        finally:
            self._conns.pop(conn, None)
            if writer.transport.get_write_buffer_size():
                writer.transport.abort()  # a client that does not read gets no more of our memory
            else:
                writer.close()

    async def _serve_one(self, conn: _Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        deadline = asyncio.get_running_loop().time() + self.limits.read_timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                head = await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            self.timed_out += 1
            return
        except asyncio.LimitOverrunError:
            await self._answer(writer, 431, b"request head too large\n", deadline)
            return
        except asyncio.IncompleteReadError:
            return  # the client went away
        conn.busy = True
        request = self._parse(head, writer)
        if request is None:
            await self._answer(writer, 400, b"bad request\n", deadline)
            return
        if self.authorize is not None and not self.authorize(request):
            await self._answer(writer, 401, b"unauthorized\n", deadline)
            return
        if request.method not in ("GET", "HEAD"):
            await self._answer(writer, 405, b"GET or HEAD only\n", deadline, extra={"Allow": "GET, HEAD"})
            return
        if request.path.split("?", 1)[0] not in _PATHS:
            await self._answer(writer, 404, b"see /metrics\n", deadline)
            return
        try:
            body = await asyncio.get_running_loop().run_in_executor(self._pool, self.render)
        except Exception as exc:  # the database went away: say so to the scraper, keep serving
            log.error("rendering metrics failed: %s", exc)
            await self._answer(writer, 500, f"rendering metrics failed: {type(exc).__name__}\n".encode(), None)
            return
        headers = {"Content-Type": CONTENT_TYPE_LATEST}
        if "gzip" in request.headers.get("accept-encoding", ""):
            body = gzip.compress(body, compresslevel=6)
            headers["Content-Encoding"] = "gzip"
        await self._answer(writer, 200, body, None, extra=headers, head_only=request.method == "HEAD")

    @staticmethod
    def _parse(head: bytes, writer: asyncio.StreamWriter) -> ScrapeRequest | None:
        try:
            lines = head.decode("latin-1").split("\r\n")
            method, path, version = lines[0].split(" ")
        except ValueError:
            return None
        if not version.startswith("HTTP/1.") or not path.startswith("/") or not method.isalpha():
            return None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                return None
            headers[name.lower()] = value.strip()
        peer = writer.get_extra_info("peername")
        cert = writer.get_extra_info("peercert")
        return ScrapeRequest(peer=str(peer[0]) if peer else "", method=method, path=path, headers=headers,
                             peer_cert=cert)

    async def _answer(self, writer: asyncio.StreamWriter, status: int, body: bytes, deadline: float | None = None,
                      *, extra: dict[str, str] | None = None, head_only: bool = False) -> None:
        headers = {"Content-Type": "text/plain; charset=utf-8", **(extra or {}), "Content-Length": str(len(body)),
                   "Connection": "close"}
        text = f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in
                                                                             headers.items()) + "\r\n"
        writer.write(text.encode("latin-1") + (b"" if head_only else body))
        loop = asyncio.get_running_loop()
        if deadline is None:
            deadline = loop.time() + self.limits.read_timeout_s
        with contextlib.suppress(TimeoutError):  # a client that does not read loses its answer
            async with asyncio.timeout_at(max(deadline, loop.time() + 1.0)):
                await writer.drain()


def serve_blocking(render: Callable[[], bytes], host: str, port: int, *, limits: Limits = Limits(),
                   stop: threading.Event | None = None, ready: Callable[[str, int], None] | None = None,
                   authorize: Callable[[ScrapeRequest], bool] | None = None,
                   ssl: ssl_module.SSLContext | None = None) -> None:
    """Run a :class:`MetricsListener` in this thread until ``stop`` is set. Raises OSError if it cannot listen."""
    stop = stop or threading.Event()

    async def run() -> None:
        listener = MetricsListener(render, host, port, limits=limits, authorize=authorize, ssl=ssl)
        await listener.start()
        try:
            if ready is not None:
                ready(host, listener.port)
            await listener.serve_until(stop)
        finally:
            await listener.stop()

    started = time.monotonic()
    asyncio.run(run())
    log.debug("metrics listener ran %.0f s", time.monotonic() - started)
