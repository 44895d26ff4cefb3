"""Network UPS Tools: an asyncio client of upsd's network protocol (TCP 3493, RFC 9271), for per-server UPSes.

A small USB UPS feeds one server; NUT's driver (``usbhid-ups``...) reads it and ``upsd`` serves it on the
network under a name (``nut_name``). :class:`NutDriver` speaks upsd's line protocol itself (no ``upsc``
processes): ``LIST UPS``, ``LIST VAR``, ``GET VAR``, ``LIST CMD``, and, logged in with
``USERNAME``/``PASSWORD``, ``INSTCMD`` and ``SET VAR`` with command tracking (``SET TRACKING ON``,
``GET TRACKING``), then ``LOGOUT``. See ``docs/nut.md``.

Connections: one pool per upsd server, shared by every UPS on it. Reads need no login and go over
anonymous connections; commands go over connections logged in as the target's user (a NUT
connection cannot change user). A connection carries many requests at once: upsd answers them in
order, so each request's answer is matched by position (pipelining). A server gets a new connection
when every open one has ``pipeline`` requests waiting, up to ``connections`` per server and user.

Deadlines: every call (connect, login, requests, read-back) finishes within ``Target.timeout``
seconds or raises :class:`~fleet.errors.DeviceTimeout`. A connection whose request ran out of time is
closed (the server is not answering; later answers would be out of step).

Errors, mapped here and nowhere else:

- ``ERR ACCESS-DENIED`` / ``PASSWORD-REQUIRED`` / ``INVALID-PASSWORD`` / ``USERNAME-REQUIRED`` ->
  :class:`~fleet.errors.AuthFailed` (upsd accepts any ``PASSWORD`` and refuses only the command, so a
  wrong password shows as ``ACCESS-DENIED`` on ``INSTCMD``/``SET VAR``);
- ``ERR UNKNOWN-UPS`` -> :class:`UnknownUps` (a ``FatalError`` and a ``LookupError``) naming the UPS and
  the names the server does serve;
- ``ERR DATA-STALE`` / ``DRIVER-NOT-CONNECTED`` -> :class:`~fleet.errors.RetryableError` (the NUT
  driver lost its UPS: the state is *unknown*, never "on battery");
- ``ERR CMD-NOT-SUPPORTED`` / ``VAR-NOT-SUPPORTED`` / ``READONLY``..., a command the UPS does not list,
  and a command the NUT driver answers "unknown" through tracking -> :class:`~fleet.errors.Unsupported`;
- connection refused -> :class:`~fleet.errors.DeviceUnreachable`; no answer in time ->
  :class:`~fleet.errors.DeviceTimeout`; an action accepted but not seen when read back ->
  :class:`NotConfirmed`.

``Target.options``: ``nut_name`` (the UPS's name on upsd; default ``Target.name``) and ``profile``
(a profile name or :class:`~fleet.profiles.Profile`): its ``[nut]`` table says which variable holds
each reading and which instant command does each action. With a profile, only the actions it maps
are done; without one, NUT's standard names are used.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from fleet.errors import (
    AuthFailed,
    DeviceTimeout,
    DeviceUnreachable,
    DriverError,
    FatalError,
    RetryableError,
    Unsupported,
)

from .base import (
    BatteryMonitor,
    BatteryStatus,
    OutletControl,
    OutletStatus,
    PowerControl,
    PowerState,
    Setting,
    Target,
)

__all__ = [
    "DEFAULT_COMMANDS",
    "DEFAULT_PORT",
    "DEFAULT_VARIABLES",
    "NotConfirmed",
    "NutDriver",
    "UnknownUps",
    "parse_line",
    "parse_status",
    "quote",
]

DEFAULT_PORT = 3493

#: Readings and the NUT variable holding each when the target has no profile (NUT's docs/nut-names.txt).
DEFAULT_VARIABLES: Mapping[str, str] = {
    "ups_status": "ups.status",
    "battery_charge": "battery.charge",
    "battery_runtime": "battery.runtime",
    "output_load": "ups.load",
    "input_voltage": "input.voltage",
    "battery_temperature": "battery.temperature",
    "nominal_power": "ups.realpower.nominal",
}

#: UPS-wide actions and their instant commands when the target has no profile.
DEFAULT_COMMANDS: Mapping[str, str] = {
    "load_off": "load.off",
    "load_on": "load.on",
    "load_cycle": "shutdown.reboot",
    "shutdown_return": "shutdown.return",
    "shutdown_stayoff": "shutdown.stayoff",
}

#: Variables copied into ``BatteryStatus.extra`` when the UPS has them (numbers where they parse).
EXTRA_VARIABLES = (
    "battery.date", "battery.mfr.date", "battery.type", "battery.charge.low", "battery.runtime.low",
    "battery.voltage", "battery.voltage.nominal", "ups.realpower.nominal", "ups.power.nominal",
    "ups.realpower", "ups.power", "ups.temperature", "input.frequency", "output.voltage",
    "ups.mfr", "ups.model", "ups.serial", "ups.firmware", "device.mfr", "device.model", "device.serial",
    "ups.beeper.status", "ups.test.result", "ups.timer.shutdown", "ups.timer.start", "driver.name",
)

#: ``ups.status`` flags (NUT docs/new-drivers.txt) and what they mean, for ``extra["conditions"]``.
STATUS_FLAGS: Mapping[str, str] = {
    "OL": "online", "OB": "on-battery", "LB": "low-battery", "HB": "high-battery",
    "RB": "replace-battery", "CHRG": "charging", "DISCHRG": "discharging", "BYPASS": "bypass",
    "CAL": "calibrating", "OFF": "output-off", "OVER": "overload", "TRIM": "trim", "BOOST": "boost",
    "FSD": "forced-shutdown", "ALARM": "alarm", "TEST": "testing", "OVERHEAT": "overheat", "COMMBAD": "comm-lost",
    "NOCOMM": "comm-lost", "WAIT": "waiting",
}

_AUTH_ERRORS = frozenset({"ACCESS-DENIED", "PASSWORD-REQUIRED", "INVALID-PASSWORD", "USERNAME-REQUIRED",
                          "INVALID-USERNAME"})
_RETRYABLE_ERRORS = frozenset({"DATA-STALE", "DRIVER-NOT-CONNECTED"})
_UNSUPPORTED_ERRORS = frozenset({"CMD-NOT-SUPPORTED", "INSTCMD-NOT-SUPPORTED", "VAR-NOT-SUPPORTED", "READONLY",
                                 "FEATURE-NOT-SUPPORTED", "FEATURE-NOT-CONFIGURED", "UNKNOWN-COMMAND",
                                 "UNKNOWN-TYPE"})
_ERROR_TEXT = {
    "ACCESS-DENIED": "access denied: wrong user or password, or the user may not do this (upsd.users)",
    "PASSWORD-REQUIRED": "a password is required",
    "USERNAME-REQUIRED": "a user name is required (no credential for this UPS)",
    "INVALID-PASSWORD": "the password was refused",
    "INVALID-USERNAME": "the user name was refused",
    "DATA-STALE": "upsd has no fresh data from its NUT driver (UPS state unknown)",
    "DRIVER-NOT-CONNECTED": "upsd is not connected to the UPS's NUT driver (UPS state unknown)",
    "CMD-NOT-SUPPORTED": "the UPS does not support this instant command",
    "VAR-NOT-SUPPORTED": "the UPS has no such variable",
    "READONLY": "the variable is read-only",
    "INVALID-VALUE": "the value was refused",
    "TOO-LONG": "the value is too long",
    "SET-FAILED": "the NUT driver failed to set the variable",
    "INSTCMD-FAILED": "the NUT driver failed to run the command",
    "UNKNOWN-COMMAND": "upsd does not know this protocol command",
}

_OUTLET_RE = re.compile(r"^outlet\.(\d+)\.(status|desc|name)$")
_TRACKING_POLL_S = 0.05
_READBACK_POLL_S = 0.2
_REPORT_MARGIN_S = 0.05
#: The loop time at which the current call's deadline falls (set by ``NutDriver._run``).
_DEADLINE: contextvars.ContextVar[float] = contextvars.ContextVar("nut_deadline", default=float("inf"))

T = TypeVar("T")


class UnknownUps(FatalError, LookupError):
    """upsd serves no UPS of that name (``ERR UNKNOWN-UPS``). ``ups``: the name asked for; ``known``: the
    names the server does serve (empty if they could not be listed)."""

    def __init__(self, message: str, *, ups: str, known: tuple[str, ...] = (), target: str | None = None,
                 operation: str | None = None) -> None:
        self.ups = ups
        self.known = known
        super().__init__(message, target=target, operation=operation)


class NotConfirmed(FatalError):
    """upsd accepted an action, but reading the UPS back within the deadline does not show its effect."""


# ---------------------------------------------------------------------------------------------
# The line format
# ---------------------------------------------------------------------------------------------


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


def parse_status(ups_status: str | None) -> tuple[str, tuple[str, ...]]:
    """Our status words for an ``ups.status`` value, and its flags.

    ``OL`` -> online, ``OB`` -> on-battery, ``LB`` -> low-battery, ``RB`` -> replace-battery, combined
    with spaces in that order (``"OB DISCHRG LB"`` -> ``"on-battery low-battery"``); none of them ->
    ``unknown`` (e.g. ``OFF``, ``WAIT``, an empty value). Other flags (CHRG, BYPASS, OVER, FSD...) are
    in the second item, as upsd spelled them.
    """
    flags = tuple((ups_status or "").split())
    words = [name for flag, name in (("OL", "online"), ("OB", "on-battery"), ("LB", "low-battery"),
                                     ("RB", "replace-battery")) if flag in flags]
    if "online" in words and "on-battery" in words:  # both at once: a driver in transition; trust neither
        words = [w for w in words if w not in ("online", "on-battery")]
    return (" ".join(words) or "unknown"), flags


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if number == number and abs(number) != float("inf") else None


# ---------------------------------------------------------------------------------------------
# Connections and the pool
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Ups:
    """What one call needs to know about its target."""

    target: Target
    name: str
    variables: Mapping[str, str]
    commands: Mapping[str, str]
    profile: str | None

    @property
    def login(self) -> tuple[str, str] | None:
        if not self.target.username:
            return None
        password = self.target.password.reveal() if self.target.password is not None else ""
        return self.target.username, password

    def var(self, metric: str) -> str | None:
        return self.variables.get(metric, DEFAULT_VARIABLES.get(metric))


class NutDriver(BatteryMonitor, OutletControl, PowerControl):
    """UPSes behind NUT's upsd: battery state, the UPS output ("outlet 0") and switchable outlets.

    ``NutDriver()`` connects to nothing; connections open on first use and are kept (one pool per
    event loop). Close with ``await driver.aclose()`` (``driver.close()`` from synchronous code, or
    ``async with NutDriver() as driver``). ``connections``: most connections per upsd server and user
    (default 2); ``pipeline``: requests waiting on one connection before another is opened (default 32).
    """

    name = "nut"
    settings = (
        Setting("nut_name", str, "", help="the UPS's name on upsd (default: the target's name)"),
        Setting("port", int, DEFAULT_PORT, help="upsd's TCP port"),
        Setting("username", str, "", help="upsd.users user (needed only for instant commands and SET VAR)"),
        Setting("password", str, None, secret=True, help="upsd.users password"),
        Setting("timeout", float, 5.0, help="deadline of one operation, seconds"),
    )

    def __init__(self, *, connections: int = 2, pipeline: int = 32) -> None:
        if connections < 1 or pipeline < 1:
            raise ValueError("connections and pipeline must be at least 1")
        self.connections = connections
        self.pipeline = pipeline
        self._pool: _Pool | None = None

    # -- plumbing ------------------------------------------------------------------------------

    @property
    def connections_opened(self) -> int:
        """How many TCP connections this driver has opened on the current pool (for tests and benches)."""
        return self._pool.opened if self._pool is not None else 0

    def _get_pool(self) -> _Pool:
        loop = asyncio.get_running_loop()
        if self._pool is None or self._pool.loop is not loop:
            if self._pool is not None:  # a previous event loop's connections: unusable here
                for conn in self._pool.all():
                    conn.closed = True
                    with contextlib.suppress(Exception):
                        conn.writer.transport.abort()
            self._pool = _Pool(self.connections, self.pipeline)
        return self._pool

    def _ups(self, target: Target) -> _Ups:
        name = str(target.options.get("nut_name") or target.name)
        profile = target.options.get("profile")
        nut = None
        profile_name = None
        if profile is not None:
            from fleet.profiles import Profile, load_profiles

            if not isinstance(profile, Profile):
                profile = load_profiles().get(str(profile))
            profile_name = profile.name
            nut = profile.nut
        if nut is None:
            return _Ups(target, name, DEFAULT_VARIABLES, DEFAULT_COMMANDS, profile_name)
        return _Ups(target, name, {**DEFAULT_VARIABLES, **nut.variables}, dict(nut.commands), profile_name)

    async def _run(self, target: Target, operation: str, body: Callable[[], Awaitable[T]]) -> T:
        """Run ``body`` within the target's deadline, mapping every failure into fleet errors."""
        where = f"upsd at {target.address}"
        try:
            async with asyncio.timeout(target.timeout) as scope:
                _DEADLINE.set(scope.when() or float("inf"))
                return await body()
        except DriverError as exc:
            if exc.target is None:
                exc.target, exc.operation = target.name, operation
                exc.args = (f"{target.name} {operation}: {exc.args[0]}",)
            raise
        except TimeoutError:
            raise DeviceTimeout(f"no answer from {where} within {target.timeout:g} s",
                                target=target.name, operation=operation) from None
        except ConnectionRefusedError:
            raise DeviceUnreachable(f"{where} refused the connection (upsd not running?)",
                                    target=target.name, operation=operation) from None
        except _Lost as exc:
            raise DeviceUnreachable(f"{where}: {exc}", target=target.name, operation=operation) from None
        except OSError as exc:
            raise DeviceUnreachable(f"{where}: {exc.strerror or exc}", target=target.name,
                                    operation=operation) from None

    async def _ask(self, ups: _Ups, line: str) -> list[str]:
        """One read request for ``ups`` on a pooled anonymous connection (reads need no login). Retried once on a
        fresh connection when a reused one turns out to be closed (upsd restarted since)."""
        pool = self._get_pool()
        for attempt in (1, 2):
            conn = await pool.get(ups.target.host, ups.target.port, None)
            reused = conn.reused
            try:
                return await conn.ask(line)
            except _Lost:
                if not reused or attempt == 2:
                    raise
            except _Err as err:
                await self._raise(ups, err, conn)
        raise AssertionError("unreachable")

    async def _raise(self, ups: _Ups, err: _Err, conn: _Conn) -> None:
        verb = " ".join(err.request.split()[:2]) if err.request.startswith(("LIST", "GET", "SET")) \
            else err.request.split()[0]
        text = _ERROR_TEXT.get(err.code, "")
        detail = f"upsd answered ERR {err.code} to {verb}" + (f": {text}" if text else "")
        if err.code == "UNKNOWN-UPS":
            known: tuple[str, ...] = ()
            with contextlib.suppress(Exception):
                known = tuple(sorted(_parse_ups_list(await conn.ask("LIST UPS"))))
            served = f"; it serves: {', '.join(known)}" if known else ""
            raise UnknownUps(f"upsd at {ups.target.address} has no UPS named {ups.name!r}{served}",
                             ups=ups.name, known=known)
        if err.code in _AUTH_ERRORS:
            raise AuthFailed(f"{detail} (user {ups.target.username!r})")
        if err.code in _RETRYABLE_ERRORS:
            raise RetryableError(detail)
        if err.code in _UNSUPPORTED_ERRORS:
            raise Unsupported(detail)
        raise FatalError(detail)

    async def _variables(self, ups: _Ups) -> dict[str, str]:
        lines = await self._ask(ups, f"LIST VAR {quote(ups.name)}")
        out: dict[str, str] = {}
        for line in lines[1:-1]:
            words = parse_line(line)
            if len(words) >= 4 and words[0] == "VAR":
                out[words[2]] = words[3]
        return out

    async def _commands(self, ups: _Ups) -> list[str]:
        lines = await self._ask(ups, f"LIST CMD {quote(ups.name)}")
        return [w[2] for w in map(parse_line, lines[1:-1]) if len(w) >= 3 and w[0] == "CMD"]

    async def _get(self, ups: _Ups, var: str) -> str | None:
        try:
            lines = await self._ask(ups, f"GET VAR {quote(ups.name)} {quote(var)}")
        except Unsupported:
            return None
        words = parse_line(lines[0])
        return words[3] if len(words) >= 4 and words[0] == "VAR" else None

    async def _tracked(self, ups: _Ups, line: str, what: str) -> None:
        """Send an INSTCMD or SET VAR as the target's user and wait for the NUT driver's verdict (tracking)."""
        pool = self._get_pool()
        login = ups.login
        if login is None:
            raise AuthFailed(f"{what} needs a upsd user with instcmds/actions rights; the target has no credential")
        conn = await pool.get(ups.target.host, ups.target.port, login)
        try:
            answer = (await conn.ask(line))[0]
        except _Err as err:
            if err.code in _AUTH_ERRORS:
                pool.discard(conn)
            await self._raise(ups, err, conn)
        words = answer.split()
        if len(words) < 3 or words[:2] != ["OK", "TRACKING"]:
            return  # no tracking (older upsd): the read-back is the only confirmation
        ident = words[2]
        while True:
            verdict = (await conn.request(f"GET TRACKING {ident}"))[0]
            if verdict == "SUCCESS":
                return
            if verdict != "PENDING":
                break
            await asyncio.sleep(_TRACKING_POLL_S)
        if verdict == "ERR UNKNOWN":
            raise Unsupported(f"upsd accepted {what}, but the UPS's NUT driver does not implement it "
                              f"(tracking: {verdict})")
        raise FatalError(f"the UPS's NUT driver failed {what} (tracking: {verdict})")

    # -- reading -------------------------------------------------------------------------------

    async def list_ups(self, host: str, port: int = DEFAULT_PORT, *, timeout: float = 5.0) -> dict[str, str]:
        """The UPSes upsd at ``host:port`` serves: name -> description (``LIST UPS``)."""
        target = Target(name=f"upsd {host}:{port}", host=host, port=port, timeout=timeout)
        ups = _Ups(target, "", DEFAULT_VARIABLES, DEFAULT_COMMANDS, None)

        async def body() -> dict[str, str]:
            return _parse_ups_list(await self._ask(ups, "LIST UPS"))

        return await self._run(target, "list ups", body)

    async def variables(self, target: Target) -> dict[str, str]:
        """Every variable of the UPS as upsd reports it (``LIST VAR``), values as strings."""
        ups = self._ups(target)
        return await self._run(target, "list variables", lambda: self._variables(ups))

    async def get_var(self, target: Target, var: str) -> str | None:
        """One variable (``GET VAR``); None when the UPS does not have it."""
        ups = self._ups(target)
        return await self._run(target, f"get {var}", lambda: self._get(ups, var))

    async def commands(self, target: Target) -> list[str]:
        """The instant commands the UPS lists (``LIST CMD``)."""
        ups = self._ups(target)
        return await self._run(target, "list commands", lambda: self._commands(ups))

    async def battery(self, target: Target) -> BatteryStatus:
        """Status, charge, runtime (s), load, input voltage and battery temperature; missing readings are None."""
        ups = self._ups(target)
        values = await self._run(target, "battery", lambda: self._variables(ups))
        return battery_status(values, ups.variables)

    # -- acting --------------------------------------------------------------------------------

    async def instcmd(self, target: Target, command: str, value: str | None = None) -> None:
        """Run an instant command as the target's user; returns when the NUT driver reports it done.

        :class:`~fleet.errors.Unsupported` when the UPS does not list the command or its NUT driver
        answers that it does not know it. Nothing is read back: the caller knows what to expect.
        """
        ups = self._ups(target)
        line = f"INSTCMD {quote(ups.name)} {quote(command)}" + (f" {quote(value)}" if value is not None else "")
        await self._run(target, f"instcmd {command}", lambda: self._tracked(ups, line, f"INSTCMD {command}"))

    async def set_var(self, target: Target, var: str, value: str) -> None:
        """``SET VAR`` as the target's user (``actions = SET``), confirmed by reading the variable back."""
        ups = self._ups(target)

        async def body() -> None:
            await self._tracked(ups, f"SET VAR {quote(ups.name)} {quote(var)} {quote(value)}", f"SET VAR {var}")
            await self._confirm(ups, f"{var} = {value!r}", lambda vs: vs.get(var) == value,
                                lambda vs: f"{var} reads {vs.get(var)!r}")

        await self._run(target, f"set {var}", body)

    async def shutdown(self, target: Target, *, stay_off: bool = False) -> None:
        """``shutdown.return`` (output off after the UPS's delay, back on when mains returns) or
        ``shutdown.stayoff``; confirmed when ``ups.status`` shows FSD or OFF, or the shutdown timer runs."""
        ups = self._ups(target)
        action = "shutdown_stayoff" if stay_off else "shutdown_return"

        def started(vs: dict[str, str]) -> bool:
            flags = vs.get("ups.status", "").split()
            timer = _number(vs.get("ups.timer.shutdown"))
            return "FSD" in flags or "OFF" in flags or (timer is not None and timer >= 0)

        async def body() -> None:
            command = await self._command_for(ups, action)
            await self._tracked(ups, f"INSTCMD {quote(ups.name)} {quote(command)}", f"INSTCMD {command}")
            await self._confirm(ups, "a shutdown in progress", started,
                                lambda vs: f"ups.status reads {vs.get('ups.status')!r}, "
                                           f"ups.timer.shutdown {vs.get('ups.timer.shutdown')!r}")

        await self._run(target, action.replace("_", " "), body)

    async def _command_for(self, ups: _Ups, action: str) -> str:
        """The instant command for a UPS-wide action, refused if the profile maps none or the UPS lists none."""
        command = ups.commands.get(action)
        if command is None:
            raise Unsupported(f"profile {ups.profile!r} maps no NUT command for {action} (see its quirks)")
        offered = await self._commands(ups)
        if command not in offered:
            raise Unsupported(f"UPS {ups.name!r} lists no instant command {command} "
                              f"(it lists: {', '.join(offered) or 'none'})")
        return command

    async def _confirm(self, ups: _Ups, expected: str, ok: Callable[[dict[str, str]], bool],
                       seen: Callable[[dict[str, str]], str]) -> None:
        """Read the UPS back until ``ok`` holds; :class:`NotConfirmed` if the deadline comes first."""
        loop = asyncio.get_running_loop()
        deadline = _DEADLINE.get() - _REPORT_MARGIN_S  # keep a moment to say what was seen
        started = time.monotonic()
        values: dict[str, str] | None = None
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    values = await self._variables(ups)
            except TimeoutError:
                if values is None:
                    raise  # never read back at all: a timeout, not a refusal
                break
            if ok(values):
                return
            if loop.time() + _READBACK_POLL_S >= deadline:
                break
            await asyncio.sleep(_READBACK_POLL_S)
        raise NotConfirmed(f"upsd accepted the command, but after {time.monotonic() - started:.1f} s "
                           f"the UPS does not show {expected}: {seen(values)}")

    # -- OutletControl -------------------------------------------------------------------------

    async def outlets(self, target: Target) -> list[OutletStatus]:
        """Outlet 0, the UPS output as a whole (from ``ups.status``), then each ``outlet.N`` the UPS reports."""
        ups = self._ups(target)
        values = await self._run(target, "outlets", lambda: self._variables(ups))
        return outlet_list(values, ups.var("ups_status") or "ups.status")

    async def set_outlet(self, target: Target, number: int, action: Literal["on", "off", "cycle"]) -> None:
        """Switch outlet ``number`` (0 = the whole output: ``load.off``/``load.on``, ``shutdown.reboot`` to
        cycle; N = ``outlet.N.load.off|on|cycle``), then confirm by reading the state back.

        A cycle is confirmed by the NUT driver's tracking answer only (the output comes back after the
        UPS's own delays). A cycle of an outlet whose state is unknown is refused.
        """
        if action not in ("on", "off", "cycle"):
            raise ValueError(f"unknown outlet action {action!r}")
        ups = self._ups(target)
        status_var = ups.var("ups_status") or "ups.status"

        async def body() -> None:
            before = {o.number: o for o in outlet_list(await self._variables(ups), status_var)}
            if number not in before:
                raise Unsupported(f"UPS {ups.name!r} has no outlet {number} "
                                  f"(outlets: {', '.join(map(str, sorted(before)))})")
            if number == 0:
                command = await self._command_for(ups, {"on": "load_on", "off": "load_off",
                                                        "cycle": "load_cycle"}[action])
            else:
                command = f"outlet.{number}.load.{action}"
                offered = await self._commands(ups)
                if command not in offered:
                    raise Unsupported(f"UPS {ups.name!r} lists no instant command {command}: outlet {number} "
                                      "is not switchable through NUT")
            if action == "cycle" and before[number].state == "unknown":
                raise FatalError(f"outlet {number} is in an unknown state; refusing to cycle it")
            await self._tracked(ups, f"INSTCMD {quote(ups.name)} {quote(command)}", f"INSTCMD {command}")
            if action == "cycle":
                return
            await self._confirm(
                ups, f"outlet {number} {action}",
                lambda vs: _outlet_state(vs, number, status_var) == action,
                lambda vs: f"outlet {number} reads {_outlet_state(vs, number, status_var)}")

        await self._run(target, f"outlet {number} {action}", body)

    # -- PowerControl: the UPS output as a whole -----------------------------------------------

    async def power_status(self, target: Target) -> PowerState:
        ups = self._ups(target)
        values = await self._run(target, "power status", lambda: self._variables(ups))
        return _outlet_state(values, 0, ups.var("ups_status") or "ups.status")

    async def power_on(self, target: Target) -> None:
        await self.set_outlet(target, 0, "on")

    async def power_off(self, target: Target) -> None:
        await self.set_outlet(target, 0, "off")

    async def power_cycle(self, target: Target) -> None:
        await self.set_outlet(target, 0, "cycle")

    async def power_reset(self, target: Target) -> None:
        await self.set_outlet(target, 0, "cycle")

    async def power_soft(self, target: Target) -> None:
        raise Unsupported("a UPS cannot ask its server to shut down; use a shutdown on the server itself",
                          target=target.name, operation="power soft")

    # -- life cycle ----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Log out of and close every connection of this event loop's pool."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if pool.loop is asyncio.get_running_loop():
            await asyncio.gather(*(c.aclose() for c in pool.all()), return_exceptions=True)
        else:
            for conn in pool.all():
                with contextlib.suppress(Exception):
                    conn.writer.transport.abort()

    def close(self) -> None:
        """Close every connection without waiting (from synchronous code, or after the loop has ended)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        for conn in pool.all():
            conn.closed = True
            with contextlib.suppress(Exception):
                if conn.task is not None and not conn.task.done():
                    conn.task.cancel()
                conn.writer.transport.abort()

    async def __aenter__(self) -> NutDriver:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


# ---------------------------------------------------------------------------------------------
# From variables to results (pure)
# ---------------------------------------------------------------------------------------------


def _parse_ups_list(lines: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in lines[1:-1]:
        words = parse_line(line)
        if len(words) >= 2 and words[0] == "UPS":
            out[words[1]] = words[2] if len(words) >= 3 else ""
    return out


def battery_status(values: Mapping[str, str], variables: Mapping[str, str] = DEFAULT_VARIABLES) -> BatteryStatus:
    """A :class:`BatteryStatus` from a UPS's variables (``variables`` maps our metrics to NUT names)."""

    def var(metric: str) -> str | None:
        name = variables.get(metric, DEFAULT_VARIABLES.get(metric))
        return values.get(name) if name else None

    raw_status = var("ups_status")
    status, flags = parse_status(raw_status)
    extra: dict[str, Any] = {}
    if raw_status is not None:
        extra["ups.status"] = raw_status
        extra["conditions"] = [STATUS_FLAGS.get(f, f.lower()) for f in flags]
    for name in EXTRA_VARIABLES:
        if name in values:
            number = _number(values[name])
            extra[name] = number if number is not None and name not in _TEXT_EXTRAS else values[name]
    nominal = variables.get("nominal_power")
    if nominal and nominal in values and nominal not in extra:
        extra[nominal] = _number(values[nominal])
    return BatteryStatus(
        status=status,
        charge_pct=_number(var("battery_charge")),
        runtime_s=_number(var("battery_runtime")),
        load_pct=_number(var("output_load")),
        input_v=_number(var("input_voltage")),
        battery_temp_c=_number(var("battery_temperature")),
        extra=extra,
    )


_TEXT_EXTRAS = frozenset({"battery.date", "battery.mfr.date", "battery.type", "ups.mfr", "ups.model", "ups.serial",
                          "ups.firmware", "device.mfr", "device.model", "device.serial", "ups.beeper.status",
                          "ups.test.result", "driver.name"})


def _outlet_state(values: Mapping[str, str], number: int, status_var: str = "ups.status") -> PowerState:
    if number == 0:
        flags = values.get(status_var, "").split()
        if "OFF" in flags:
            return "off"
        return "on" if ("OL" in flags or "OB" in flags) else "unknown"
    state = values.get(f"outlet.{number}.status", "").strip().lower()
    return "on" if state == "on" else "off" if state == "off" else "unknown"


def outlet_list(values: Mapping[str, str], status_var: str = "ups.status") -> list[OutletStatus]:
    """Outlet 0 (the whole output) and every ``outlet.N`` with a status, from a UPS's variables."""
    numbers = sorted({int(m.group(1)) for v in values if (m := _OUTLET_RE.match(v)) and m.group(2) == "status"} - {0})
    out = [OutletStatus(0, values.get("outlet.0.desc") or "output", _outlet_state(values, 0, status_var))]
    for n in numbers:
        name = values.get(f"outlet.{n}.desc") or values.get(f"outlet.{n}.name") or f"outlet {n}"
        out.append(OutletStatus(n, name, _outlet_state(values, n, status_var)))
    return out
