"""upsd's network protocol (TCP 3493, RFC 9271) on asyncio: the line format, pipelined connections, the pool.

A connection carries many requests at once: upsd answers them in order, so each request's answer is
matched by position (pipelining); a ``BEGIN LIST`` ... ``END LIST`` block is one answer. The pool
keeps connections per (host, port, user, password digest), one pool per event loop: reads go over
anonymous connections, commands over connections logged in as the target's user (a NUT connection
cannot change user). A server gets a new connection when every open one has ``pipeline`` requests
waiting, up to ``connections`` per server and user.

Failures stay in this module's terms (:class:`_Lost`: the connection ended; :class:`_Err`: upsd
answered ``ERR CODE``); :class:`~.driver.NutDriver` maps them to fleet errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any

DEFAULT_PORT = 3493


def parse_line(line: str) -> list[str]:
    """The words of one protocol line: spaces separate, ``"..."`` quotes, ``\\`` escapes the next character.

    >>> parse_line('UPS ups2 "UPS two, \\\\"quoted\\\\""')
    ['UPS', 'ups2', 'UPS two, "quoted"']
    """
    words: list[str] = []
    word: list[str] = []
    in_word = quoted = escaped = False
    for ch in line:
        if escaped:
            word.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = in_word = True
        elif ch == '"':
            if quoted:
                quoted = False
            else:
                quoted = in_word = True
        elif ch in " \t" and not quoted:
            if in_word:
                words.append("".join(word))
                word, in_word = [], False
        else:
            word.append(ch)
            in_word = True
    if quoted:
        raise ValueError(f"unterminated quote in upsd line {line!r}")
    if in_word:
        words.append("".join(word))
    return words


def quote(value: str) -> str:
    """``value`` as one protocol word: quoted, with ``\\`` and ``"`` escaped, when it needs to be."""
    if value and not re.search(r'[\s"\\]', value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _parse_ups_list(lines: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in lines[1:-1]:
        words = parse_line(line)
        if len(words) >= 2 and words[0] == "UPS":
            out[words[1]] = words[2] if len(words) >= 3 else ""
    return out


class _Lost(Exception):
    """The connection ended (closed by upsd, reset, or closed by us after a request ran out of time)."""


class _Err(Exception):
    """upsd answered ``ERR CODE``."""

    def __init__(self, code: str, request: str) -> None:
        super().__init__(f"ERR {code}")
        self.code = code
        self.request = request


@dataclass(eq=False)
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    key: tuple[Any, ...]
    pending: deque[asyncio.Future[list[str]]] = field(default_factory=deque)
    closed: bool = False
    tracking: bool = False
    reused: bool = False
    task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._read_loop())

    async def _read_loop(self) -> None:
        try:
            while True:
                lines = [await self._line()]
                if lines[0].startswith("BEGIN LIST "):
                    while not lines[-1].startswith("END LIST "):
                        lines.append(await self._line())
                if not self.pending:
                    raise _Lost(f"upsd sent an answer nobody asked for: {lines[0]!r}")
                fut = self.pending.popleft()
                if not fut.done():
                    fut.set_result(lines)
        except asyncio.CancelledError:
            self._fail(_Lost("connection closed"))
            raise
        except (OSError, ValueError, asyncio.IncompleteReadError, _Lost) as exc:
            self._fail(exc if isinstance(exc, _Lost) else _Lost(f"connection to upsd lost: {exc}"))

    async def _line(self) -> str:
        raw = await self.reader.readline()
        if not raw.endswith(b"\n"):
            raise _Lost("upsd closed the connection")
        return raw.decode("utf-8", "replace").rstrip("\r\n")

    def _fail(self, exc: Exception) -> None:
        self.closed = True
        while self.pending:
            fut = self.pending.popleft()
            if not fut.done():
                fut.set_exception(exc)
        self.writer.close()

    async def request(self, line: str) -> list[str]:
        """Send one request and wait for its answer (one line, or a whole ``BEGIN LIST`` block)."""
        if self.closed:
            raise _Lost("connection closed")
        fut: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self.pending.append(fut)
        self.writer.write(line.encode("utf-8") + b"\n")
        try:
            await self.writer.drain()
            return await fut
        except asyncio.CancelledError:
            # Out of time: upsd is not answering, and a late answer would be out of step. Drop the connection.
            self.abort(_Lost("closed after a request ran out of time"))
            raise
        finally:
            if not fut.done():
                fut.cancel()  # nobody waits for it any more; the reader skips it, keeping answers in order

    async def ask(self, line: str) -> list[str]:
        """:meth:`request`, raising :class:`_Err` for an ``ERR`` answer."""
        lines = await self.request(line)
        if lines[0].startswith("ERR "):
            raise _Err(lines[0][4:].split()[0] if lines[0][4:].split() else "UNKNOWN", line)
        return lines

    def abort(self, exc: Exception) -> None:
        if not self.closed:
            self._fail(exc)
            if self.task is not None:
                self.task.cancel()

    async def aclose(self) -> None:
        if not self.closed:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    self.writer.write(b"LOGOUT\n")
                    await self.writer.drain()
            self.abort(_Lost("connection closed"))
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()
        if self.task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task


class _Pool:
    """Open connections per (host, port, user, password digest), all on one event loop."""

    def __init__(self, connections: int, pipeline: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.connections = connections
        self.pipeline = pipeline
        self.conns: dict[tuple[Any, ...], list[_Conn]] = {}
        self.locks: dict[tuple[Any, ...], asyncio.Lock] = {}
        self.opened = 0

    def _pick(self, key: tuple[Any, ...]) -> tuple[_Conn | None, int]:
        live = [c for c in self.conns.get(key, ()) if not c.closed]
        self.conns[key] = live
        if not live:
            return None, 0
        best = min(live, key=lambda c: len(c.pending))
        if len(best.pending) < self.pipeline or len(live) >= self.connections:
            return best, len(live)
        return None, len(live)

    async def get(self, host: str, port: int, login: tuple[str, str] | None) -> _Conn:
        digest = hashlib.sha256(login[1].encode()).hexdigest() if login else None
        key = (host, port, login[0] if login else None, digest)
        conn, _ = self._pick(key)
        if conn is not None:
            conn.reused = True
            return conn
        lock = self.locks.setdefault(key, asyncio.Lock())
        async with lock:
            conn, _ = self._pick(key)
            if conn is not None:
                conn.reused = True
                return conn
            conn = await self._open(host, port, key, login)
            self.conns.setdefault(key, []).append(conn)
            return conn

    async def _open(self, host: str, port: int, key: tuple[Any, ...], login: tuple[str, str] | None) -> _Conn:
        reader, writer = await asyncio.open_connection(host, port)
        self.opened += 1
        conn = _Conn(reader, writer, key)
        conn.start()
        try:
            if login is not None:
                await conn.ask(f"USERNAME {quote(login[0])}")
                await conn.ask(f"PASSWORD {quote(login[1])}")
                try:
                    await conn.ask("SET TRACKING ON")
                    conn.tracking = True
                except _Err:
                    conn.tracking = False  # upsd before 2.8.0: no command tracking
        except BaseException:
            conn.abort(_Lost("login failed"))
            raise
        return conn

    def discard(self, conn: _Conn) -> None:
        conn.abort(_Lost("connection discarded"))

    def all(self) -> list[_Conn]:
        return [c for conns in self.conns.values() for c in conns]
