"""The SNMP session layer: sockets, connections, the one error edge, and GET, SET and walk on pysnmp 7.

:class:`SnmpSession` owns a process's SNMP sockets; :class:`~.driver.SnmpDriver` builds on it.
Execution model (figures in ``docs/snmp.md``):

- **v1/v2c** requests go through one pysnmp ``v1arch`` ``SnmpDispatcher`` (one UDP socket): the
  message is built from the community and the PDU, with no per-target configuration tables. That
  costs ~0.8 ms of CPU per 7-OID poll; pysnmp's ``v3arch`` command generator costs twice that, and
  configuring one v3arch target takes ~3.6 ms (10,000 targets: 36 s), so v2c does not use it.
- **v3** (USM, authPriv) goes through :class:`~.v3.Usm` and its ``SnmpEngine``.
- At most ``max_inflight`` requests are on the wire at once (default 64, at most 128: at 256 the
  default UDP receive buffer overflowed here), for every target together.
- A request is sent, then resent ``retries`` times (default 1), each time waiting
  ``Target.timeout`` seconds: a dead agent costs ``timeout x (retries + 1)``. pysnmp's own defaults
  (1 s x 6 tries) would make it 6 s. ``Target.options["snmp_retries"]`` overrides ``retries``.
- A GET the agent answers tooBig is sent again in halves; one answered noSuchName or genErr for the
  whole PDU (SNMPv1-style) becomes one GET per OID.

Errors are translated at one edge (:meth:`SnmpSession._exchange`): pysnmp's (errorIndication,
errorStatus, errorIndex, varBinds) never leave this package. Timeouts are
:class:`~fleet.errors.DeviceTimeout` (with v2c a wrong community looks exactly the same: agents do
not answer it), v3 authentication and privacy failures :class:`~fleet.errors.AuthFailed`, a SET the
agent answers but does not apply :class:`SetNotApplied` (an ``Unsupported``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any, Self

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
from .conn import (
    _BAD_VALUE,
    _ERROR_STATUS,
    _GEN_ERR,
    _NO_ACCESS,
    _NO_SUCH_NAME,
    _READ_ONLY,
    _TOO_BIG,
    _Conn,
    _PduError,
)
from .v3 import _AUTH_PROTOCOLS, _PRIV_PROTOCOLS, Usm, _v3_secrets
from .values import _Missing, _missing_or, _oid_tuple, _raw_number

DEFAULT_TIMEOUT = 1.0
DEFAULT_RETRIES = 1
DEFAULT_MAX_INFLIGHT = 64
MAX_INFLIGHT_LIMIT = 128
#: Varbinds per GETBULK answer when walking outlet tables.
BULK_REPETITIONS = 24


class SetNotApplied(Unsupported):
    """The agent answered a SET without applying it (an exception value, or a different value, came back)."""


class SnmpSession:
    """SNMP v1/v2c/v3 requests to many agents at once: connections cached per target, bounded in flight.

    Opens nothing until the first request; :meth:`close` (or ``async with``) closes the sockets and
    the v3 engine. ``max_inflight`` requests on the wire at once (default 64, at most 128);
    ``retries`` per request (default 1).
    """

    def __init__(self, *, max_inflight: int = DEFAULT_MAX_INFLIGHT, retries: int = DEFAULT_RETRIES) -> None:
        if not 1 <= max_inflight <= MAX_INFLIGHT_LIMIT:
            raise ValueError(f"max_inflight must be 1..{MAX_INFLIGHT_LIMIT} (got {max_inflight})")
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.max_inflight = max_inflight
        self.retries = retries
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sem: asyncio.Semaphore | None = None
        self._dispatcher: Any = None
        self._usm = Usm()
        self._conns: dict[tuple[Any, ...], _Conn] = {}
        self._stats = {"requests": 0, "timeouts": 0, "inflight": 0, "max_inflight_seen": 0}

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def close(self) -> None:
        """Close the sockets (and the v3 engine). Idempotent; a later call opens them again."""
        dispatcher, usm = self._dispatcher, self._usm
        self._dispatcher = None
        self._usm = Usm()
        self._conns.clear()
        self._sem = None
        self._loop = None
        if dispatcher is not None:
            with contextlib.suppress(Exception):
                dispatcher.close()
        usm.close()

    async def aclose(self) -> None:
        self.close()

    def stats(self) -> dict[str, Any]:
        """Requests sent, timeouts, requests in flight now and the most seen at once."""
        return dict(self._stats, connections=len(self._conns), v3_engine=self._usm.engine is not None)

    def _bind_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._loop is not None:
                self.close()
            self._loop = loop
            self._sem = asyncio.Semaphore(self.max_inflight)

    # -- connections ---------------------------------------------------------------------------

    async def _conn(self, target: Target, operation: str) -> _Conn:
        self._bind_loop()
        version = str(target.options.get("snmp_version", "2c")).lower().lstrip("v")
        if version not in ("1", "2c", "3"):
            raise Unsupported(f"SNMP version {version!r} is not supported (1, 2c, 3)", target=target.name,
                              operation=operation)
        timeout = float(target.timeout)
        if not timeout > 0:
            raise Unsupported(f"timeout must be > 0 (got {target.timeout})", target=target.name, operation=operation)
        retries = int(target.options.get("snmp_retries", self.retries))
        if version == "3":
            auth, priv = _v3_secrets(target)
            auth_proto = str(target.options.get("auth_proto", "SHA")).upper().replace("-", "")
            priv_proto = str(target.options.get("priv_proto", "AES")).upper().replace("-", "")
            if auth_proto not in _AUTH_PROTOCOLS:
                raise Unsupported(f"SNMPv3 auth protocol {auth_proto!r} is not one of {', '.join(_AUTH_PROTOCOLS)}",
                                  target=target.name, operation=operation)
            if priv_proto not in _PRIV_PROTOCOLS:
                raise Unsupported(f"SNMPv3 privacy protocol {priv_proto!r} is not one of {', '.join(_PRIV_PROTOCOLS)}",
                                  target=target.name, operation=operation)
            if not target.username:
                raise AuthFailed("no SNMPv3 user name (Target.username)", target=target.name, operation=operation)
            secret_key: tuple[Any, ...] = (target.username, auth_proto, priv_proto, auth, priv)
        else:
            if target.password is None:
                raise AuthFailed("no SNMP community (the credential's secret)", target=target.name,
                                 operation=operation)
            secret_key = (target.password.reveal(),)
        key = (target.host, target.port, version, timeout, retries, *secret_key)
        conn = self._conns.get(key)
        if conn is not None:
            return conn
        conn = _Conn(key, version, target.host, target.port, timeout, retries)
        if version == "3":
            conn.user, conn.auth_proto, conn.priv_proto, conn.auth_key, conn.priv_key = secret_key
            conn.lock = asyncio.Lock()
        else:
            from pysnmp.hlapi.v1arch.asyncio import CommunityData, UdpTransportTarget

            conn.community = secret_key[0]
            conn.v1_auth = CommunityData(conn.community, mpModel=0 if version == "1" else 1)
            if _is_ipv4(target.host):  # no resolver round trip (a thread each) for 10,000 addresses
                conn.v1_target = UdpTransportTarget.__new__(UdpTransportTarget)
                conn.v1_target.transport_address = (target.host, target.port)
                conn.v1_target.__init__(timeout=timeout, retries=retries)
            else:
                try:
                    conn.v1_target = await UdpTransportTarget.create((target.host, target.port), timeout=timeout,
                                                                     retries=retries)
                except Exception as exc:
                    raise DeviceUnreachable(f"cannot resolve {target.address}: {exc}", target=target.name,
                                            operation=operation) from None
        self._conns[key] = conn
        return conn

    # -- the edge: one request/response exchange -----------------------------------------------

    async def _exchange(self, target: Target, conn: _Conn, operation: str, kind: str,
                        varbinds: Sequence[tuple[Any, Any]], *, max_repetitions: int = 0) -> list[tuple[Any, Any]]:
        """Send one PDU (``get``, ``next``, ``bulk``, ``set``); return the answer's varbinds.

        Raises :class:`_PduError` for a non-zero errorStatus and a DriverError for everything else
        that went wrong (timeouts, v3 security, transport). This is the only place pysnmp's error
        4-tuples are looked at.
        """
        assert self._sem is not None
        if conn.version == "3":
            await self._usm.ready(target, conn, operation, self._sem, self._stats)
        async with self._sem:
            self._stats["requests"] += 1
            self._stats["inflight"] += 1
            self._stats["max_inflight_seen"] = max(self._stats["max_inflight_seen"], self._stats["inflight"])
            try:
                if conn.version == "3":
                    ei, status, index, answer = await self._usm.send(conn, kind, varbinds, max_repetitions)
                else:
                    ei, status, index, answer = await self._send_v1(conn, kind, varbinds, max_repetitions)
            finally:
                self._stats["inflight"] -= 1
        if ei is not None:
            raise self._indication_error(target, conn, operation, ei)
        if status:
            raise _PduError(int(status), int(index))
        return list(answer)

    def _indication_error(self, target: Target, conn: _Conn, operation: str, ei: Any) -> DriverError:
        from pysnmp.proto import errind

        name = target.name
        if isinstance(ei, errind.RequestTimedOut) or ei == "timeout":
            self._stats["timeouts"] += 1
            tries = conn.retries + 1
            if conn.version != "3":
                hint = ("; SNMP v1/v2c agents do not answer a wrong community, so a wrong community looks "
                        "exactly like this")
            else:
                hint = ("; the agent answered engine discovery, and a wrong SNMPv3 privacy key looks exactly "
                        "like this (net-snmp drops what it cannot decrypt, without a report)")
            return DeviceTimeout(f"no answer from {conn.where} in {conn.budget:g} s ({conn.timeout:g} s x "
                                 f"{tries} attempt{'s' if tries > 1 else ''}){hint}", target=name, operation=operation)
        if isinstance(ei, errind.WrongDigest | errind.AuthenticationFailure | errind.AuthenticationError):
            return AuthFailed(f"{conn.where} refused the SNMPv3 authentication key of user {conn.user!r} "
                              f"({conn.auth_proto}): {ei}", target=name, operation=operation)
        if isinstance(ei, errind.DecryptionError):
            return AuthFailed(f"{conn.where} could not decrypt with the SNMPv3 privacy key of user {conn.user!r} "
                              f"({conn.priv_proto}): {ei}", target=name, operation=operation)
        if isinstance(ei, errind.UnknownUserName | errind.UnknownSecurityName):
            return AuthFailed(f"{conn.where} does not know SNMPv3 user {conn.user!r}", target=name,
                              operation=operation)
        if isinstance(ei, errind.UnsupportedSecurityLevel):
            return AuthFailed(f"{conn.where} does not allow authPriv for user {conn.user!r}: {ei}", target=name,
                              operation=operation)
        if isinstance(ei, errind.NotInTimeWindow | errind.UnknownEngineID):
            return RetryableError(f"{conn.where}: SNMPv3 engine discovery did not settle: {ei}", target=name,
                                  operation=operation)
        if isinstance(ei, errind.UnsupportedAuthProtocol | errind.UnsupportedPrivProtocol | errind.NoEncryption):
            return Unsupported(f"this host cannot use {conn.auth_proto}/{conn.priv_proto}: {ei}", target=name,
                               operation=operation)
        if isinstance(ei, BaseException) and not isinstance(ei, errind.ErrorIndication):
            return DeviceUnreachable(f"cannot send to {conn.where}: {ei}", target=name, operation=operation)
        return RetryableError(f"{conn.where}: {ei}", target=name, operation=operation)

    def _pdu(self, module: Any, kind: str, varbinds: Sequence[tuple[Any, Any]], max_repetitions: int) -> Any:
        if kind == "get":
            pdu = module.GetRequestPDU()
        elif kind == "next":
            pdu = module.GetNextRequestPDU()
        elif kind == "set":
            pdu = module.SetRequestPDU()
        elif kind == "bulk":
            pdu = module.GetBulkRequestPDU()
        else:  # pragma: no cover
            raise ValueError(kind)
        if kind == "bulk":
            module.apiBulkPDU.set_defaults(pdu)
            module.apiBulkPDU.set_non_repeaters(pdu, 0)
            module.apiBulkPDU.set_max_repetitions(pdu, max_repetitions)
            module.apiBulkPDU.set_varbinds(pdu, varbinds)
        else:
            module.apiPDU.set_defaults(pdu)
            module.apiPDU.set_varbinds(pdu, varbinds)
        return pdu

    async def _send_v1(self, conn: _Conn, kind: str, varbinds: Sequence[tuple[Any, Any]],
                       max_repetitions: int) -> tuple[Any, int, int, Sequence[tuple[Any, Any]]]:
        from pysnmp.proto import api

        if self._dispatcher is None:
            from pysnmp.hlapi.v1arch.asyncio import SnmpDispatcher

            self._dispatcher = SnmpDispatcher()
        module = api.PROTOCOL_MODULES[conn.v1_auth.mpModel]
        pdu = self._pdu(module, kind, varbinds, max_repetitions)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def done(dispatcher: Any, request_id: Any, error_indication: Any, rsp: Any, fut: asyncio.Future[Any]) -> None:
            if not fut.done():
                fut.set_result((error_indication, rsp))

        try:
            self._dispatcher.send_pdu(conn.v1_auth, conn.v1_target, pdu, cbFun=done, cbCtx=future)
        except Exception as exc:  # socket errors surface here
            return exc, 0, 0, ()
        try:
            ei, rsp = await asyncio.wait_for(future, conn.budget + 1.0)
        except TimeoutError:
            return "timeout", 0, 0, ()
        if ei is not None:
            return ei, 0, 0, ()
        return (None, module.apiPDU.get_error_status(rsp), module.apiPDU.get_error_index(rsp, muteErrors=True),
                module.apiPDU.get_varbinds(rsp))

    # -- GET, SET, walk ------------------------------------------------------------------------

    async def _get(self, target: Target, conn: _Conn, oids: Sequence[str], operation: str) -> dict[str, Any]:
        """GET ``oids`` (one PDU if the agent allows): OID -> value or :class:`_Missing`."""
        from pysnmp.proto import rfc1902
        from pysnmp.proto.api import v2c

        if not oids:
            return {}
        varbinds = [(rfc1902.ObjectName(o), v2c.null) for o in oids]
        try:
            answer = await self._exchange(target, conn, operation, "get", varbinds)
        except _PduError as exc:
            if exc.status == _TOO_BIG and len(oids) > 1:
                half = len(oids) // 2
                first = await self._get(target, conn, oids[:half], operation)
                first.update(await self._get(target, conn, oids[half:], operation))
                return first
            if exc.status in (_NO_SUCH_NAME, _GEN_ERR, _BAD_VALUE) and len(oids) > 1:
                out: dict[str, Any] = {}
                for oid in oids:
                    out.update(await self._get(target, conn, [oid], operation))
                return out
            if exc.status == _NO_SUCH_NAME:
                return {oids[0]: _Missing("noSuchName")}
            raise self._status_error(target, operation, exc, oids) from None
        out = {}
        for oid, (name, value) in zip(oids, answer, strict=False):
            out[oid] = _missing_or(value)
            if str(name) != oid and not isinstance(out[oid], _Missing):
                out[oid] = _Missing(f"the agent answered {name} instead")
        for oid in oids[len(answer):]:
            out[oid] = _Missing("absent from the answer")
        return out

    def _status_error(self, target: Target, operation: str, exc: _PduError, oids: Sequence[str]) -> DriverError:
        oid = oids[exc.index - 1] if 0 < exc.index <= len(oids) else None
        where = f" (at {oid})" if oid else ""
        name = _ERROR_STATUS.get(exc.status, str(exc.status))
        if exc.status in (16, _NO_ACCESS):
            return AuthFailed(f"the agent refused access: {name}{where}; the community or user may be read-only",
                              target=target.name, operation=operation)
        if exc.status in (17, _READ_ONLY, 11, 18):
            return Unsupported(f"the agent will not write this object: {name}{where}", target=target.name,
                               operation=operation)
        if exc.status in (_GEN_ERR, 13, 14, 15):
            return RetryableError(f"the agent failed the request: {name}{where}", target=target.name,
                                  operation=operation)
        return FatalError(f"the agent refused the request: {name}{where}", target=target.name, operation=operation)

    async def _walk(self, target: Target, conn: _Conn, columns: Sequence[str],
                    operation: str) -> dict[str, dict[str, Any]]:
        """Every instance of each column: column -> {index suffix: value}."""
        from pysnmp.proto import rfc1902
        from pysnmp.proto.api import v2c

        out: dict[str, dict[str, Any]] = {c: {} for c in columns}
        cursor = {c: c for c in columns}
        active = list(columns)
        for _ in range(1000):  # a table of 24,000 rows at most
            if not active:
                break
            varbinds = [(rfc1902.ObjectName(cursor[c]), v2c.null) for c in active]
            try:
                if conn.version == "1":
                    answer = await self._exchange(target, conn, operation, "next", varbinds)
                else:
                    answer = await self._exchange(target, conn, operation, "bulk", varbinds,
                                                  max_repetitions=max(1, BULK_REPETITIONS // len(active)))
            except _PduError as exc:
                if exc.status == _NO_SUCH_NAME:  # SNMPv1: end of the MIB
                    break
                raise self._status_error(target, operation, exc, [cursor[c] for c in active]) from None
            finished: set[str] = set()
            width = len(active)
            for i, (name, value) in enumerate(answer):
                col = active[i % width]
                if col in finished:
                    continue
                oid = str(name)
                if isinstance(_missing_or(value), _Missing) or not oid.startswith(col + "."):
                    finished.add(col)
                    continue
                if _oid_tuple(oid) <= _oid_tuple(cursor[col]):
                    finished.add(col)  # not increasing: a broken agent
                    continue
                out[col][oid[len(col) + 1:]] = value
                cursor[col] = oid
            if not answer:
                break
            active = [c for c in active if c not in finished]
        return out

    async def _set(self, target: Target, conn: _Conn, oid: str, value: int, operation: str) -> None:
        """SET INTEGER ``value`` on ``oid``; raise :class:`SetNotApplied` unless the answer echoes it."""
        from pysnmp.proto import rfc1902

        try:
            answer = await self._exchange(target, conn, operation, "set",
                                          [(rfc1902.ObjectName(oid), rfc1902.Integer32(value))])
        except _PduError as exc:
            raise self._status_error(target, operation, exc, [oid]) from None
        if not answer:
            raise SetNotApplied(f"the agent answered the SET of {oid} with no variable", target=target.name,
                                operation=operation)
        name, echoed = answer[0]
        missing = _missing_or(echoed)
        if isinstance(missing, _Missing):
            raise SetNotApplied(f"the agent answered the SET of {oid} = {value} with {missing.reason} and "
                                "errorStatus 0: it did not apply it (a read-only or simulated object)",
                                target=target.name, operation=operation)
        if str(name) != oid or _raw_number(echoed) != value:
            raise SetNotApplied(f"the agent answered the SET of {oid} = {value} with {name} = {echoed!s:.40}: "
                                "not what was written", target=target.name, operation=operation)


def _is_ipv4(host: str) -> bool:
    parts = host.split(".")
    return len(parts) == 4 and all(p.isdigit() and int(p) < 256 for p in parts)
