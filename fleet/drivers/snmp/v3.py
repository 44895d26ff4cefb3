"""SNMPv3 (USM, authPriv): the keys from a credential, engine discovery, users per engine ID, v3 sends.

v3 needs pysnmp's ``SnmpEngine``: :class:`Usm` holds one per session, created on the first v3
request. Each agent's engine ID is discovered once (a plain discovery Report, RFC 3414 4), and the
user is added *for that engine ID*, so agents may share a user name with different keys. Errors the
engine reports come back as pysnmp's error indications; :class:`~.session.SnmpSession` translates
them (its ``_exchange`` is the one edge).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Sequence
from typing import Any

from fleet.errors import AuthFailed, DeviceTimeout, DeviceUnreachable

from ..base import Target
from .conn import _Conn

_AUTH_PROTOCOLS = ("MD5", "SHA", "SHA224", "SHA256", "SHA384", "SHA512")
#: AES192/AES256 use the Blumenthal key extension, as net-snmp's AES-192/AES-256 do; the "C"
#: variants use Reeder's (Cisco-style, net-snmp's AES-256-C).
_PRIV_PROTOCOLS = ("DES", "3DES", "AES", "AES128", "AES192", "AES256", "AES192C", "AES256C")


def _v3_secrets(target: Target) -> tuple[str, str]:
    if target.password is None:
        raise AuthFailed("no SNMPv3 keys: the credential must be a JSON object {\"auth\": ..., \"priv\": ...}",
                         target=target.name, operation="configure SNMPv3")
    try:
        doc = json.loads(target.password.reveal())
        auth, priv = doc["auth"], doc["priv"]
    except (ValueError, TypeError, KeyError):
        raise AuthFailed("the SNMPv3 credential must be a JSON object {\"auth\": ..., \"priv\": ...}",
                         target=target.name, operation="configure SNMPv3") from None
    if not isinstance(auth, str) or not isinstance(priv, str) or len(auth) < 8 or len(priv) < 8:
        raise AuthFailed("SNMPv3 auth and priv passphrases must be strings of at least 8 characters",
                         target=target.name, operation="configure SNMPv3")
    return auth, priv


class Usm:
    """One session's SNMPv3 state: the ``SnmpEngine``, the users localized per agent engine ID, the
    target parameters and addresses configured in it. ``sem`` and ``stats`` passed to :meth:`ready` are
    the session's: an engine discovery is a request like any other."""

    def __init__(self) -> None:
        self.engine: Any = None
        self.users: dict[tuple[bytes, str], tuple[str, ...]] = {}
        self.params: set[str] = set()
        self.names = 0

    def close(self) -> None:
        """Close the engine's sockets (idempotent); the session starts a new :class:`Usm` after this."""
        engine, self.engine = self.engine, None
        self.users.clear()
        self.params.clear()
        if engine is not None:
            with contextlib.suppress(Exception):
                engine.close_dispatcher()

    async def ready(self, target: Target, conn: _Conn, operation: str, sem: asyncio.Semaphore,
                    stats: dict[str, int]) -> None:
        """Discover the agent's engine ID and configure ``conn``'s user and target address, once per connection."""
        secrets = (conn.auth_proto, conn.priv_proto, conn.auth_key, conn.priv_key)
        if conn.addr_name is not None:
            assert conn.engine_id is not None
            if self.users.get((conn.engine_id, conn.user)) != secrets:
                # another Target gave this agent's user other keys since: only one set can be right
                self._add_user(conn, conn.engine_id, secrets)
            return
        assert conn.lock is not None
        async with conn.lock:
            if conn.addr_name is not None:
                return
            from pysnmp.carrier.asyncio.dgram import udp
            from pysnmp.entity import config

            if self.engine is None:
                from pysnmp.entity.engine import SnmpEngine

                self.engine = SnmpEngine()
                config.add_transport(self.engine, udp.DOMAIN_NAME, udp.UdpAsyncioTransport().open_client_mode())
            loop = asyncio.get_running_loop()
            try:
                infos = await loop.getaddrinfo(conn.host, conn.port, family=0, type=2)  # SOCK_DGRAM
                address = infos[0][4][:2]
            except OSError as exc:
                raise DeviceUnreachable(f"cannot resolve {target.address}: {exc}", target=target.name,
                                        operation=operation) from None
            engine_id = await self._discover(target, conn, address, operation, sem, stats)
            if self.users.get((engine_id, conn.user)) != secrets:
                self._add_user(conn, engine_id, secrets)
            params = f"p-{conn.user}"
            if params not in self.params:
                config.add_target_parameters(self.engine, params, conn.user, "authPriv", 3)
                self.params.add(params)
            self.names += 1
            addr_name = f"a{self.names}"
            config.add_target_address(self.engine, addr_name, udp.DOMAIN_NAME, address, params,
                                      timeout=round(conn.timeout * 100), retryCount=conn.retries)
            conn.engine_id = engine_id
            conn.addr_name = addr_name

    def _add_user(self, conn: _Conn, engine_id: bytes, secrets: tuple[str, ...]) -> None:
        """The user's keys, localized for this agent's engine ID (pysnmp keeps one row per engine and user)."""
        from pysnmp.entity import config
        from pysnmp.proto import rfc1902

        config.add_v3_user(self.engine, conn.user, _auth_protocol(conn.auth_proto), conn.auth_key,
                           _priv_protocol(conn.priv_proto), conn.priv_key,
                           securityEngineId=rfc1902.OctetString(engine_id))
        self.users[(engine_id, conn.user)] = secrets

    async def _discover(self, target: Target, conn: _Conn, address: tuple[str, int], operation: str,
                        sem: asyncio.Semaphore, stats: dict[str, int]) -> bytes:
        """The agent's snmpEngineID, from the Report a request without one provokes (RFC 3414 4)."""
        from pyasn1.codec.ber import decoder, encoder
        from pysnmp.proto.api import v2c
        from pysnmp.proto.mpmod.rfc3412 import ScopedPDU, SNMPv3Message
        from pysnmp.proto.secmod.rfc3414.service import UsmSecurityParameters

        msg_id = random.randrange(1, 2**31 - 1)
        pdu = v2c.GetRequestPDU()
        v2c.apiPDU.set_defaults(pdu)
        v2c.apiPDU.set_varbinds(pdu, [])
        scoped = ScopedPDU()
        scoped["contextEngineId"] = b""
        scoped["contextName"] = b""
        scoped["data"].setComponentByType(pdu.tagSet, pdu)
        usm = UsmSecurityParameters()
        for name, value in (("msgAuthoritativeEngineId", b""), ("msgAuthoritativeEngineBoots", 0),
                            ("msgAuthoritativeEngineTime", 0), ("msgUserName", b""),
                            ("msgAuthenticationParameters", b""), ("msgPrivacyParameters", b"")):
            usm[name] = value
        msg = SNMPv3Message()
        msg["msgVersion"] = 3
        header = msg["msgGlobalData"]
        header["msgID"] = msg_id
        header["msgMaxSize"] = 65507
        header["msgFlags"] = b"\x04"  # reportable, noAuthNoPriv
        header["msgSecurityModel"] = 3
        msg["msgSecurityParameters"] = encoder.encode(usm)
        msg["msgData"]["plaintext"] = scoped
        wire = encoder.encode(msg)

        loop = asyncio.get_running_loop()
        answer: asyncio.Queue[bytes] = asyncio.Queue()

        class _Proto(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                answer.put_nowait(data)

        async with sem:
            try:
                transport, _ = await loop.create_datagram_endpoint(_Proto, remote_addr=address)
            except OSError as exc:
                raise DeviceUnreachable(f"cannot reach {conn.where}: {exc}", target=target.name,
                                        operation=operation) from None
            try:
                for _ in range(conn.retries + 1):
                    stats["requests"] += 1
                    transport.sendto(wire)
                    deadline = loop.time() + conn.timeout
                    while (left := deadline - loop.time()) > 0:
                        try:
                            data = await asyncio.wait_for(answer.get(), left)
                        except TimeoutError:
                            break
                        try:
                            rsp, _ = decoder.decode(data, asn1Spec=SNMPv3Message())
                            if int(rsp["msgGlobalData"]["msgID"]) != msg_id:
                                continue
                            params, _ = decoder.decode(bytes(rsp["msgSecurityParameters"]),
                                                       asn1Spec=UsmSecurityParameters())
                        except Exception:
                            continue
                        engine_id = bytes(params["msgAuthoritativeEngineId"])
                        if engine_id:
                            return engine_id
            finally:
                transport.close()
        stats["timeouts"] += 1
        raise DeviceTimeout(f"no SNMPv3 engine discovery answer from {conn.where} in {conn.budget:g} s "
                            f"({conn.timeout:g} s x {conn.retries + 1}); the agent may not speak SNMPv3",
                            target=target.name, operation=operation)

    async def send(self, conn: _Conn, kind: str, varbinds: Sequence[tuple[Any, Any]],
                   max_repetitions: int) -> tuple[Any, int, int, Sequence[tuple[Any, Any]]]:
        from pysnmp.entity.rfc3413 import cmdgen

        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def done(engine: Any, handle: Any, ei: Any, status: Any, index: Any, answer: Any, fut: Any) -> None:
            if not fut.done():
                fut.set_result((ei, status, index, answer))

        try:
            if kind == "get":
                cmdgen.GetCommandGenerator().send_varbinds(self.engine, conn.addr_name, None, "", list(varbinds),
                                                           done, future)
            elif kind == "next":
                cmdgen.NextCommandGeneratorSingleRun().send_varbinds(self.engine, conn.addr_name, None, "",
                                                                     list(varbinds), done, future)
            elif kind == "set":
                cmdgen.SetCommandGenerator().send_varbinds(self.engine, conn.addr_name, None, "", list(varbinds),
                                                           done, future)
            else:
                cmdgen.BulkCommandGeneratorSingleRun().send_varbinds(self.engine, conn.addr_name, None, "", 0,
                                                                     max_repetitions, list(varbinds), done, future)
        except Exception as exc:  # pysnmp raises StatusInformation for local failures
            indication = getattr(exc, "get", lambda *_: None)("errorIndication") if hasattr(exc, "get") else None
            return indication or exc, 0, 0, ()
        try:
            ei, status, index, answer = await asyncio.wait_for(future, conn.budget + 1.0)
        except TimeoutError:
            return "timeout", 0, 0, ()
        return ei, status or 0, index or 0, answer or ()


def _auth_protocol(name: str) -> Any:
    from pysnmp.entity import config

    return {
        "MD5": config.USM_AUTH_HMAC96_MD5, "SHA": config.USM_AUTH_HMAC96_SHA,
        "SHA224": config.USM_AUTH_HMAC128_SHA224, "SHA256": config.USM_AUTH_HMAC192_SHA256,
        "SHA384": config.USM_AUTH_HMAC256_SHA384, "SHA512": config.USM_AUTH_HMAC384_SHA512,
    }[name]


def _priv_protocol(name: str) -> Any:
    from pysnmp.entity import config

    return {
        "DES": config.USM_PRIV_CBC56_DES, "3DES": config.USM_PRIV_CBC168_3DES,
        "AES": config.USM_PRIV_CFB128_AES, "AES128": config.USM_PRIV_CFB128_AES,
        "AES192": config.USM_PRIV_CFB192_AES_BLUMENTHAL, "AES256": config.USM_PRIV_CFB256_AES_BLUMENTHAL,
        "AES192C": config.USM_PRIV_CFB192_AES, "AES256C": config.USM_PRIV_CFB256_AES,
    }[name]
