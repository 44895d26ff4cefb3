"""The NUT driver: UPSes behind upsd, for battery state, the UPS output and its switchable outlets.

:class:`NutDriver` speaks upsd's protocol itself (:mod:`.protocol`; no ``upsc`` processes):
``LIST UPS``, ``LIST VAR``, ``GET VAR``, ``LIST CMD``, and, logged in with ``USERNAME``/``PASSWORD``,
``INSTCMD`` and ``SET VAR`` with command tracking (``SET TRACKING ON``, ``GET TRACKING``), then
``LOGOUT``. See ``docs/nut.md``.

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
(a :class:`~fleet.profiles.Profile`, or its name when the driver was given ``profiles``; the caller
loads it, the driver imports no profile module): its ``[nut]`` table says which variable holds
each reading and which instant command does each action. With a profile, only the actions it maps
are done; without one, NUT's standard names are used.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
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

from ..base import (
    BatteryMonitor,
    BatteryStatus,
    OutletControl,
    OutletStatus,
    PowerControl,
    PowerState,
    Setting,
    Target,
)
from .protocol import DEFAULT_PORT, _Conn, _Err, _Lost, _parse_ups_list, _Pool, parse_line, quote
from .readings import DEFAULT_COMMANDS, DEFAULT_VARIABLES, _number, _outlet_state, battery_status, outlet_list

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
    (default 2); ``pipeline``: requests waiting on one connection before another is opened (default 32);
    ``profiles``: a ProfileSet to look profile names up in (without one, ``Target.options["profile"]``
    must be the Profile itself).
    """

    name = "nut"
    settings = (
        Setting("nut_name", str, "", help="the UPS's name on upsd (default: the target's name)"),
        Setting("port", int, DEFAULT_PORT, help="upsd's TCP port"),
        Setting("username", str, "", help="upsd.users user (needed only for instant commands and SET VAR)"),
        Setting("password", str, None, secret=True, help="upsd.users password"),
        Setting("timeout", float, 5.0, help="deadline of one operation, seconds"),
    )

    def __init__(self, *, connections: int = 2, pipeline: int = 32, profiles: Any = None) -> None:
        if connections < 1 or pipeline < 1:
            raise ValueError("connections and pipeline must be at least 1")
        self.connections = connections
        self.pipeline = pipeline
        self._profiles = profiles
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
        if isinstance(profile, str):
            if self._profiles is None:
                raise Unsupported(f"profile {profile!r} given by name, and this driver has no profile set to look "
                                  "it up in (give Target.options['profile'] the Profile, or NutDriver(profiles=...))",
                                  target=target.name, operation="read the profile")
            profile = self._profiles.get(profile)
        if profile is not None:
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
