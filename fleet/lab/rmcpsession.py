"""The RMCP+ session layer of the lab BMC: from a datagram's bytes to the answer's, for one BMC.

Open Session, RAKP 1-4, the sliding window of session sequence numbers, integrity and
confidentiality (with the codec of :mod:`fleet.lab.rmcp` and :mod:`fleet.lab.rakp`), retransmitted
requests answered from a cache, session limits and timeouts, and the session commands (Get Channel
Authentication Capabilities, Get Channel Cipher Suites, Set Session Privilege Level, Close Session,
Get Channel Info); every other command goes to :meth:`fleet.lab.bmc.Bmc.handle`. No sockets:
:class:`fleet.lab.bmcserver.LabServer` is a :class:`SessionLayer` that reads and sends the datagrams.
"""

from __future__ import annotations

import hmac
import os
import random
import socket
import struct
import time

from fleet.drivers.ipmi.codes import (
    CC_INVALID_SESSION_ID,
    CC_PRIVILEGE_EXCEEDS_LIMIT,
    CC_PRIVILEGE_NOT_AVAILABLE,
    AppCmd,
    Cc,
    NetFn,
    Privilege,
)

from . import rakp, rmcp
from .bmc import Bmc
from .rmcp import PayloadType, RmcppStatus

__all__ = [
    "EVICT_IDLE_SECONDS",
    "MAX_SESSIONS",
    "PENDING_TIMEOUT",
    "Endpoint",
    "Session",
    "SessionLayer",
    "Stats",
]

#: Sessions one BMC holds at once (real BMCs: 4-16); a full table answers "insufficient resources".
MAX_SESSIONS = 16
#: Seconds a half-open session (Open Session .. RAKP 3) may idle before it is dropped.
PENDING_TIMEOUT = 10.0
#: A full session table gives up its least recently used active session once that is idle this long
#: (a console that vanished without Close Session); real BMCs vary between this and refusing.
EVICT_IDLE_SECONDS = 10.0
#: A request repeated (same rqSeq, same bytes) within this many seconds and session sequence numbers
#: is a retransmission: the cached answer is sent again and the command is not run twice.
RETRY_SECONDS = 3.0
RETRY_SEQUENCES = 8

_OPENED, _RAKP2_SENT, _ACTIVE = 1, 2, 3
#: Answered outside a session too: Get Channel Authentication Capabilities, Get Channel Cipher Suites.
_CHANNEL_COMMANDS = (AppCmd.GET_CHANNEL_AUTH_CAPABILITIES, AppCmd.GET_CHANNEL_CIPHER_SUITES)
_CIPHER_RECORDS = b"".join(bytes([0xC0, s.id, s.auth, 0x40 | s.integrity, 0x80 | s.confidentiality])
                           for s in rmcp.CIPHER_SUITES.values())



class Session:
    """One RMCP+ session of one BMC, from Open Session to Close Session or timeout."""

    __slots__ = ("bmc_random", "bmc_sid", "console_sid", "in_seq", "keys", "kuid", "last_req", "last_resp",
                 "last_seen", "last_seq", "max_priv", "out_seq", "priv", "rakp1", "seen", "state", "suite")

    def __init__(self, bmc_sid: int, console_sid: int, suite: rmcp.CipherSuite, max_priv: int, now: float) -> None:
        self.bmc_sid = bmc_sid
        self.console_sid = console_sid
        self.suite = suite
        self.max_priv = max_priv
        self.state = _OPENED
        self.priv = Privilege.USER
        self.rakp1: rakp.Rakp1 | None = None
        self.bmc_random = b""
        self.kuid = b""
        self.keys: rmcp.SessionKeys | None = None
        self.in_seq = 0  # highest session sequence number accepted
        self.seen = 0  # bitmap: bit i = in_seq - i was accepted
        self.out_seq = 0
        self.last_seq = -1
        self.last_req = b""
        self.last_resp = b""
        self.last_seen = now

    def accept_sequence(self, seq: int) -> bool:
        """Sliding-window check of an inbound session sequence number (spec 6.12.13)."""
        if seq == 0:
            return False
        if self.in_seq == 0:  # the first packet of the session sets the window
            self.in_seq, self.seen = seq, 1
            return True
        ahead = (seq - self.in_seq) & 0xFFFFFFFF
        if 0 < ahead <= 64:
            self.seen = ((self.seen << ahead) | 1) & 0xFFFFFFFF
            self.in_seq = seq
            return True
        behind = (self.in_seq - seq) & 0xFFFFFFFF
        if behind < 32 and not self.seen >> behind & 1:
            self.seen |= 1 << behind
            return True
        return False

    def next_out(self) -> int:
        self.out_seq = self.out_seq % 0xFFFFFFFF + 1
        return self.out_seq


class Endpoint:
    """A BMC on the network: its socket (None: it does not speak IPMI) and its sessions (None while it has none)."""

    __slots__ = ("bmc", "sessions", "sock")

    def __init__(self, bmc: Bmc, sock: socket.socket | None) -> None:
        self.bmc = bmc
        self.sock = sock
        self.sessions: dict[int, Session] | None = None

    def integrity_len(self, sid: int) -> int:
        session = self.sessions.get(sid) if self.sessions else None
        return session.suite.integrity_len if session is not None else 0


class Stats:
    __slots__ = ("bad", "commands", "datagrams", "dropped", "login_failures", "replies", "sessions_closed",
                 "sessions_expired", "sessions_opened")

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}

class SessionLayer:
    """The RMCP+ responder of many BMCs (:class:`Endpoint`): :meth:`_respond` answers one datagram.

    ``stats`` counts what happened; ``_live`` holds the endpoints that have sessions, so that
    :meth:`sweep` looks at those only.
    """

    def __init__(self, *, max_sessions: int = MAX_SESSIONS) -> None:
        self.max_sessions = max_sessions
        self.stats = Stats()
        self._live: set[Endpoint] = set()  # endpoints that hold sessions

    # -- the datagram --------------------------------------------------------------------------

    def _respond(self, ep: Endpoint, data: bytes, now: float) -> bytes | None:
        rclass, body = rmcp.parse_datagram(data)
        if rclass == rmcp.CLASS_ASF:
            mtype, tag = rmcp.parse_asf(body)
            return rmcp.build_asf_pong(tag) if mtype == rmcp.ASF_PING else None
        if rclass != rmcp.CLASS_IPMI:
            return None
        packet = rmcp.parse_session(body, ep.integrity_len)
        if not packet.v2:
            if packet.auth_type != rmcp.AUTHTYPE_NONE or packet.session_id:
                return None  # IPMI 1.5 sessions are not offered
            reply = self._sessionless(ep, packet.payload)
            return None if reply is None else rmcp.build_v15(reply)
        ptype = packet.payload_type
        if ptype == PayloadType.IPMI:
            if packet.session_id == 0:
                if packet.authenticated or packet.encrypted:
                    return None
                reply = self._sessionless(ep, packet.payload)
                return None if reply is None else rmcp.build_v20(PayloadType.IPMI, reply)
            return self._in_session(ep, packet, now)
        if ptype == PayloadType.OPEN_SESSION_REQUEST:
            return self._open_session(ep, rakp.OpenSessionRequest.parse(packet.payload), now)
        if ptype == PayloadType.RAKP1:
            return self._rakp1(ep, rakp.Rakp1.parse(packet.payload), now)
        if ptype == PayloadType.RAKP3:
            return self._rakp3(ep, rakp.Rakp3.parse(packet.payload), now)
        return None

    # -- before a session ------------------------------------------------------------------

    def _sessionless(self, ep: Endpoint, payload: bytes) -> bytes | None:
        """Get Channel Authentication Capabilities and Get Channel Cipher Suites, outside a session."""
        req = rmcp.parse_ipmi_request(payload)
        if req.netfn != NetFn.APP or req.cmd not in _CHANNEL_COMMANDS:
            return None  # real BMCs ignore other commands outside a session
        cc, data = self._channel_command(req)
        return rmcp.build_ipmi_response(req, cc, data)

    @staticmethod
    def _channel_command(req: rmcp.IpmiRequest) -> tuple[int, bytes]:
        data = req.data
        if len(data) < 2:
            return Cc.DATA_LENGTH_INVALID, b""
        channel = data[0] & 0x0F
        if channel not in (0x01, 0x0E):
            return Cc.INVALID_DATA_FIELD, b""
        if req.cmd == AppCmd.GET_CHANNEL_AUTH_CAPABILITIES:
            # IPMI 2.0 extended data; no 1.5 auth types; non-null user names only; 2.0 connections only.
            return Cc.OK, bytes([0x01, 0x80, 0x04, 0x02, 0x00, 0x00, 0x00, 0x00])
        # Get Channel Cipher Suites: 16 bytes of the records per list index.
        if len(data) < 3 or data[1] & 0x3F != 0:
            return Cc.INVALID_DATA_FIELD, b""
        index = data[2] & 0x3F
        return Cc.OK, bytes([0x01]) + _CIPHER_RECORDS[index * 16:index * 16 + 16]

    def _open_session(self, ep: Endpoint, req: rakp.OpenSessionRequest, now: float) -> bytes:
        def answer(status: int, session: Session | None = None) -> bytes:
            msg = rakp.OpenSessionResponse(req.tag, status, req.console_sid,
                                           session.max_priv if session else 0, session.bmc_sid if session else 0,
                                           session.suite if session else None)
            return rmcp.build_v20(PayloadType.OPEN_SESSION_RESPONSE, msg.build())

        if req.console_sid == 0:
            return answer(RmcppStatus.INVALID_SESSION_ID)
        suite, status = _choose_suite(req)
        if suite is None:
            self.stats.login_failures += 1
            return answer(status)
        if req.max_privilege > Privilege.ADMINISTRATOR:
            self.stats.login_failures += 1
            return answer(RmcppStatus.INVALID_ROLE)
        sessions = ep.sessions
        if sessions is None:
            sessions = ep.sessions = {}
            self._live.add(ep)
        if len(sessions) >= self.max_sessions and not self._make_room(ep, now):
            self.stats.login_failures += 1
            return answer(RmcppStatus.INSUFFICIENT_RESOURCES)
        sid = random.getrandbits(32)
        while sid == 0 or sid in sessions:
            sid = random.getrandbits(32)
        session = Session(sid, req.console_sid, suite, req.max_privilege or Privilege.ADMINISTRATOR, now)
        sessions[sid] = session
        self.stats.sessions_opened += 1
        return answer(RmcppStatus.OK, session)

    def _make_room(self, ep: Endpoint, now: float) -> bool:
        """Free a slot in a full session table: expired sessions first, then the least recently used
        half-open one idle for a second, then an active one idle for :data:`EVICT_IDLE_SECONDS`."""
        self._expire(ep, now)
        sessions = ep.sessions or {}
        if len(sessions) < self.max_sessions:
            return True
        oldest = min(sessions.values(), key=lambda s: (s.state == _ACTIVE, s.last_seen))
        idle = now - oldest.last_seen
        if idle > (EVICT_IDLE_SECONDS if oldest.state == _ACTIVE else 1.0):
            del sessions[oldest.bmc_sid]
            self.stats.sessions_expired += 1
            return True
        return False

    def _rakp1(self, ep: Endpoint, msg: rakp.Rakp1, now: float) -> bytes:
        bmc = ep.bmc
        session = ep.sessions.get(msg.bmc_sid) if ep.sessions else None

        def fail(status: int, console_sid: int) -> bytes:
            self.stats.login_failures += 1
            if session is not None and ep.sessions is not None:
                ep.sessions.pop(session.bmc_sid, None)
            return rmcp.build_v20(PayloadType.RAKP2, rakp.Rakp2(msg.tag, status, console_sid).build())

        if session is None or session.state == _ACTIVE:
            return fail(RmcppStatus.INVALID_SESSION_ID, 0)
        if session.state == _RAKP2_SENT and session.rakp1 is not None and session.rakp1 == msg:
            pass  # a retransmitted RAKP 1: answer with the same random number again
        else:
            privilege = msg.privilege
            if privilege == 0 or privilege > Privilege.OEM:
                return fail(RmcppStatus.INVALID_ROLE, session.console_sid)
            if msg.username != bmc.spec.username.encode():
                return fail(RmcppStatus.UNAUTHORIZED_NAME, session.console_sid)
            if privilege > Privilege.ADMINISTRATOR or privilege > session.max_priv:
                return fail(RmcppStatus.UNAUTHORIZED_ROLE, session.console_sid)
            session.rakp1 = msg
            session.bmc_random = os.urandom(16)
            session.kuid = bmc.password.encode()
            session.max_priv = privilege
            session.state = _RAKP2_SENT
        session.last_seen = now
        code = rakp.rakp2_auth_code(session.suite, session.kuid, session.console_sid, session.bmc_sid,
                                    msg.console_random, session.bmc_random, bmc.spec.guid, msg.role, msg.username)
        reply = rakp.Rakp2(msg.tag, RmcppStatus.OK, session.console_sid, session.bmc_random, bmc.spec.guid, code)
        return rmcp.build_v20(PayloadType.RAKP2, reply.build())

    def _rakp3(self, ep: Endpoint, msg: rakp.Rakp3, now: float) -> bytes | None:
        bmc = ep.bmc
        session = ep.sessions.get(msg.bmc_sid) if ep.sessions else None
        if session is None or session.state == _OPENED or session.rakp1 is None:
            self.stats.login_failures += 1
            return rmcp.build_v20(PayloadType.RAKP4, rakp.Rakp4(msg.tag, RmcppStatus.INVALID_SESSION_ID, 0).build())
        assert ep.sessions is not None
        if msg.status != RmcppStatus.OK:  # the console refused our RAKP 2 (e.g. a wrong password)
            ep.sessions.pop(session.bmc_sid, None)
            self.stats.login_failures += 1
            return None
        r1, suite = session.rakp1, session.suite
        expected = rakp.rakp3_auth_code(suite, session.kuid, session.bmc_random, session.console_sid, r1.role,
                                        r1.username)
        if not hmac.compare_digest(expected, msg.auth_code):
            ep.sessions.pop(session.bmc_sid, None)
            self.stats.login_failures += 1
            return rmcp.build_v20(PayloadType.RAKP4, rakp.Rakp4(
                msg.tag, RmcppStatus.INVALID_INTEGRITY_CHECK_VALUE, session.console_sid).build())
        sik = rakp.session_integrity_key(suite, session.kuid, r1.console_random, session.bmc_random, r1.role,
                                         r1.username)
        if session.state != _ACTIVE:
            session.keys = rmcp.SessionKeys(suite, sik)
            session.state = _ACTIVE
            session.priv = min(Privilege.USER, session.max_priv)
        session.last_seen = now
        icv = rakp.rakp4_icv(suite, sik, r1.console_random, session.bmc_sid, bmc.spec.guid)
        return rmcp.build_v20(PayloadType.RAKP4, rakp.Rakp4(msg.tag, RmcppStatus.OK, session.console_sid, icv).build())

    # -- in a session ----------------------------------------------------------------------

    def _in_session(self, ep: Endpoint, packet: rmcp.Packet, now: float) -> bytes | None:
        session = ep.sessions.get(packet.session_id) if ep.sessions else None
        if session is None or session.state != _ACTIVE or session.keys is None or not packet.authenticated:
            return None
        keys = session.keys
        if not hmac.compare_digest(keys.auth_code(packet.signed), packet.auth_code):
            return None  # the spec's answer to a bad AuthCode: silence
        seq = packet.sequence
        if seq == session.last_seq and session.last_resp:
            return self._wrap(session, session.last_resp, packet.encrypted)  # a retransmitted packet
        if not session.accept_sequence(seq):
            return None
        payload = keys.decrypt(packet.payload) if packet.encrypted else packet.payload
        idle, session.last_seen = now - session.last_seen, now
        if (payload == session.last_req and session.last_resp and 0 < seq - session.last_seq <= RETRY_SEQUENCES
                and idle < RETRY_SECONDS):
            session.last_seq = seq
            return self._wrap(session, session.last_resp, packet.encrypted)  # a retried request
        req = rmcp.parse_ipmi_request(payload)
        self.stats.commands += 1
        cc, data, after = self._command(ep, session, req, now)
        resp = rmcp.build_ipmi_response(req, cc, data)
        session.last_seq, session.last_req, session.last_resp = seq, payload, resp
        reply = self._wrap(session, resp, packet.encrypted)
        if after == "close":
            self._drop_session(ep, session.bmc_sid)
            self.stats.sessions_closed += 1
        elif after == "reset":
            ep.bmc.cold_reset(now)
            if ep.sessions:
                self.stats.sessions_closed += len(ep.sessions)
            ep.sessions = None
            self._live.discard(ep)
        return reply

    def _wrap(self, session: Session, resp: bytes, encrypt: bool) -> bytes:
        return rmcp.build_v20(PayloadType.IPMI, resp, session.console_sid, session.next_out(), session.keys,
                              encrypt=encrypt)

    def _command(self, ep: Endpoint, session: Session, req: rmcp.IpmiRequest,
                 now: float) -> tuple[int, bytes, str | None]:
        netfn, cmd, data = req.netfn, req.cmd, req.data
        if netfn == NetFn.APP:
            if cmd == AppCmd.SET_SESSION_PRIVILEGE_LEVEL:
                if not data:
                    return Cc.DATA_LENGTH_INVALID, b"", None
                wanted = data[0] & 0x0F
                if wanted:
                    if wanted > session.max_priv or wanted > Privilege.ADMINISTRATOR:
                        return CC_PRIVILEGE_EXCEEDS_LIMIT, b"", None
                    if wanted < Privilege.USER:
                        return CC_PRIVILEGE_NOT_AVAILABLE, b"", None
                    session.priv = Privilege(wanted)
                return Cc.OK, bytes([session.priv]), None
            if cmd == AppCmd.CLOSE_SESSION:
                if len(data) < 4:
                    return Cc.DATA_LENGTH_INVALID, b"", None
                (sid,) = struct.unpack_from("<I", data)
                if sid == session.bmc_sid:
                    return Cc.OK, b"", "close"
                if sid and ep.sessions and sid in ep.sessions and session.priv >= Privilege.ADMINISTRATOR:
                    self._drop_session(ep, sid)
                    self.stats.sessions_closed += 1
                    return Cc.OK, b"", None
                return CC_INVALID_SESSION_ID, b"", None
            if cmd in _CHANNEL_COMMANDS:
                cc, out = self._channel_command(req)
                return cc, out, None
            if cmd == AppCmd.GET_CHANNEL_INFO and data:
                cc, out = ep.bmc.channel_info(data[0] & 0x0F, len(ep.sessions or ()))
                return cc, out, None
        cc, out = ep.bmc.handle(netfn, cmd, data, session.priv)
        after = "reset" if netfn == NetFn.APP and cmd in (AppCmd.COLD_RESET, AppCmd.WARM_RESET) and cc == 0 else None
        return cc, out, after

    def _drop_session(self, ep: Endpoint, sid: int) -> None:
        if ep.sessions is not None:
            ep.sessions.pop(sid, None)
            if not ep.sessions:
                ep.sessions = None
                self._live.discard(ep)

    # -- session timeouts ------------------------------------------------------------------

    def _expire(self, ep: Endpoint, now: float) -> None:
        sessions = ep.sessions
        if not sessions:
            return
        timeout = ep.bmc.spec.session_timeout
        for sid in [sid for sid, s in sessions.items()
                    if now - s.last_seen > (timeout if s.state == _ACTIVE else PENDING_TIMEOUT)]:
            del sessions[sid]
            self.stats.sessions_expired += 1

    def sweep(self, now: float | None = None) -> None:
        """Drop idle sessions everywhere (the server does it every few seconds)."""
        now = time.monotonic() if now is None else now
        for ep in list(self._live):
            self._expire(ep, now)
            if not ep.sessions:
                ep.sessions = None
                self._live.discard(ep)

    def session_count(self) -> int:
        return sum(len(ep.sessions or ()) for ep in self._live)


def _choose_suite(req: rakp.OpenSessionRequest) -> tuple[rmcp.CipherSuite | None, int]:
    """The cipher suite an Open Session Request proposes, or (None, the status that refuses it)."""
    suites = list(rmcp.CIPHER_SUITES.values())
    if req.auth is not None:
        suites = [s for s in suites if s.auth == req.auth]
        if not suites:
            return None, RmcppStatus.INVALID_AUTH_ALGORITHM
    if req.integrity is not None:
        suites = [s for s in suites if s.integrity == req.integrity]
        if not suites:
            known = any(s.integrity == req.integrity for s in rmcp.CIPHER_SUITES.values())
            return None, RmcppStatus.NO_CIPHER_SUITE_MATCH if known else RmcppStatus.INVALID_INTEGRITY_ALGORITHM
    if req.confidentiality is not None:
        suites = [s for s in suites if s.confidentiality == req.confidentiality]
        if not suites:
            return None, RmcppStatus.INVALID_CONFIDENTIALITY_ALGORITHM
    # "Any" picks the strongest: suite 17 before 3.
    return max(suites, key=lambda s: s.id), RmcppStatus.OK
