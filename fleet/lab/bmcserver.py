"""The lab BMC server: one asyncio process answering IPMI 2.0 (RMCP+) for thousands of simulated BMCs.

Each BMC has its own UDP socket on a loopback address (``127.x.y.z:623`` as root, or any port the spec
gives), registered with the event loop's epoll selector through ``loop.add_reader``: no transport
objects, no per-BMC tasks or timers, so a BMC costs a few kilobytes. This module holds the RMCP+
session layer (Open Session, RAKP 1-4, sequence numbers, integrity, encryption, timeouts) over the
codec in :mod:`fleet.lab.rmcp`; the BMC model and its commands are :class:`fleet.lab.bmc.Bmc`.

Run it as a process::

    python -m fleet.lab.bmcserver --spec SPEC.json --state-dir DIR

It writes ``DIR/bmcserver.pid``, binds every socket, opens the control socket ``DIR/control.sock``,
then writes ``DIR/ready`` and prints ``READY``; SIGTERM (or the ``stop`` control request) closes
everything and removes those files. :func:`start` and :func:`stop` do this from Python;
:func:`lab_control` sends one control request (JSON lines, see ``docs/lab.md``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import errno
import hmac
import ipaddress
import json
import logging
import os
import random
import resource
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from fleet.errors import DeviceTimeout, DeviceUnreachable, FleetError, NeedsRoot, PortInUse, Unavailable
from fleet.lab._proc import cmdline_has, pid_alive, read_start_error, terminate, write_start_error

from . import rmcp
from .bmc import FAULT_KINDS, Bmc, BmcSpec, BootRequest, SensorSet, parse_spec
from .rmcp import PayloadType, Privilege, RmcppStatus

__all__ = [
    "CONTROL_SOCKET",
    "PID_FILE",
    "READY_FILE",
    "LabServer",
    "LabStartError",
    "lab_control",
    "load_spec",
    "loopback_hosts",
    "main",
    "start",
    "stop",
]

log = logging.getLogger("fleet.lab.bmcserver")

CONTROL_SOCKET = "control.sock"
PID_FILE = "bmcserver.pid"
READY_FILE = "ready"
LOG_FILE = "bmcserver.log"
START_ERROR_FILE = "start-error.json"  # why it could not start, when that is an expected condition

#: Sessions one BMC holds at once (real BMCs: 4-16); a full table answers "insufficient resources".
MAX_SESSIONS = 16
#: Seconds a half-open session (Open Session .. RAKP 3) may idle before it is dropped.
PENDING_TIMEOUT = 10.0
#: A full session table gives up its least recently used active session once that is idle this long
#: (a console that vanished without Close Session); real BMCs vary between this and refusing.
EVICT_IDLE_SECONDS = 10.0
#: How often expired sessions are swept.
SWEEP_SECONDS = 2.0
#: A request repeated (same rqSeq, same bytes) within this many seconds and session sequence numbers
#: is a retransmission: the cached answer is sent again and the command is not run twice.
RETRY_SECONDS = 3.0
RETRY_SEQUENCES = 8

_OPENED, _RAKP2_SENT, _ACTIVE = 1, 2, 3
_CIPHER_RECORDS = b"".join(bytes([0xC0, s.id, s.auth, 0x40 | s.integrity, 0x80 | s.confidentiality])
                           for s in rmcp.CIPHER_SUITES.values())


class LabStartError(FleetError, RuntimeError):
    """The server cannot start: too few file descriptors, an address in use, a bad spec."""


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
        self.rakp1: rmcp.Rakp1 | None = None
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
    """A BMC on the network: its socket and its sessions (None while it has none)."""

    __slots__ = ("bmc", "sessions", "sock")

    def __init__(self, bmc: Bmc, sock: socket.socket) -> None:
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


class LabServer:
    """Serves every BMC of a spec from one event loop; :meth:`run` until :meth:`request_stop`."""

    def __init__(self, specs: Sequence[BmcSpec], sensor_sets: Mapping[str, SensorSet],
                 state_dir: Path | None = None, *, max_sessions: int = MAX_SESSIONS) -> None:
        self.specs = list(specs)
        self.sensor_sets = sensor_sets
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.max_sessions = max_sessions
        self.endpoints: list[Endpoint] = []
        self.by_key: dict[str, Endpoint] = {}
        self.stats = Stats()
        self.started_at = 0.0
        self.startup_seconds = 0.0
        self._live: set[Endpoint] = set()  # endpoints that hold sessions
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._stop_requested = False
        self._control: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind every BMC's socket and the control socket; raise :class:`LabStartError` if one fails."""
        t0 = time.monotonic()
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        if self._stop_requested:
            self._stopping.set()
        ensure_fd_limit(len(self.specs) + 64)
        try:
            for spec in self.specs:
                self._bind(spec)
        except BaseException:
            self.close()
            raise
        if self.state_dir is not None:
            path = self.state_dir / CONTROL_SOCKET
            if len(os.fsencode(path)) > 107:
                self.close()
                raise LabStartError(f"the control socket path {path} is too long for a Unix socket: "
                                    "use a shorter state directory")
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            self._control = await asyncio.start_unix_server(self._control_client, path=str(path))
            path.chmod(0o600)
        self._sweeper = asyncio.create_task(self._sweep_forever())
        self.started_at = time.time()
        self.startup_seconds = time.monotonic() - t0

    def _bind(self, spec: BmcSpec) -> None:
        assert self._loop is not None
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind((spec.host, spec.port))
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(f"{spec.name}: the lab BMC address {spec.host}:{spec.port} is in use",
                                remedy="stop the other lab ('fleet lab stop --dir DIR') or give --port") from exc
            if exc.errno == errno.EACCES and spec.port < 1024:
                raise NeedsRoot(f"{spec.name}: binding {spec.host}:{spec.port} needs root",
                                remedy="run as root or give a port above 1023 (--port 6623)") from exc
            hint = " (ports below 1024 need root: give high ports in the spec)" if spec.port < 1024 else ""
            raise LabStartError(f"{spec.name}: cannot bind {spec.host}:{spec.port}: {exc.strerror}{hint}") from exc
        if spec.port == 0:
            spec = _replace_port(spec, sock.getsockname()[1])
        ep = Endpoint(Bmc(spec, self.sensor_sets[spec.sensors]), sock)
        if spec.qemu is not None:  # this BMC powers a QEMU VM over QMP (docs/vmrack.md)
            from .qemu import QemuBackend, QemuVm, VmSpec

            ep.bmc.backend = QemuBackend(QemuVm(VmSpec.from_dict(spec.qemu)))
            if spec.power == "on":
                ep.bmc.backend.set_power("on", BootRequest(None))
        self.endpoints.append(ep)
        self.by_key[spec.name] = ep
        self.by_key[f"{spec.host}:{spec.port}"] = ep
        self.by_key.setdefault(spec.host, ep)
        self._loop.add_reader(sock.fileno(), self._readable, ep)

    async def run(self) -> None:
        """Serve until :meth:`request_stop`, then close."""
        assert self._stopping is not None
        try:
            await self._stopping.wait()
        finally:
            await self.aclose()

    def request_stop(self) -> None:
        """Make :meth:`run` return (also when asked before :meth:`start` finished)."""
        self._stop_requested = True
        if self._stopping is not None:
            self._stopping.set()

    async def aclose(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self._control is not None:
            self._control.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._control.wait_closed(), 2)
            self._control = None
            if self.state_dir is not None:
                with contextlib.suppress(FileNotFoundError):
                    (self.state_dir / CONTROL_SOCKET).unlink()
        for ep in self.endpoints:  # VMs behind BMCs are powered off (QMP quit, then by PID)
            backend = ep.bmc.backend
            if backend is not None and hasattr(backend, "aclose"):
                with contextlib.suppress(Exception):
                    await backend.aclose()
        self.close()

    def close(self) -> None:
        """Unregister and close every BMC socket (and stop by PID any VM a BMC still runs)."""
        for ep in self.endpoints:
            if ep.bmc.backend is not None and hasattr(ep.bmc.backend, "kill"):
                ep.bmc.backend.kill()
            if ep.sock.fileno() >= 0:
                if self._loop is not None:
                    self._loop.remove_reader(ep.sock.fileno())
                ep.sock.close()
        self._live.clear()

    def find(self, key: str) -> Endpoint | None:
        """A BMC by name, ``host:port`` or host."""
        return self.by_key.get(key)

    # -- the datagram path -----------------------------------------------------------------

    def _readable(self, ep: Endpoint) -> None:
        sock = ep.sock
        for _ in range(32):  # then let other sockets have their turn
            try:
                data, addr = sock.recvfrom(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            self.stats.datagrams += 1
            bmc = ep.bmc
            now = time.monotonic()
            if bmc.dead or bmc.dark_until > now:
                self.stats.dropped += 1
                continue
            try:
                reply = self._respond(ep, data, now)
            except rmcp.ProtocolError as exc:
                self.stats.bad += 1
                log.debug("%s: dropped a datagram from %s: %s", bmc.spec.name, addr, exc)
                continue
            except Exception:
                self.stats.bad += 1
                log.exception("%s: error answering a datagram from %s", bmc.spec.name, addr)
                continue
            if reply is None:
                continue
            if bmc.slow_ms:
                assert self._loop is not None
                self._loop.call_later(bmc.slow_ms / 1000.0, self._send, sock, reply, addr)
            else:
                self._send(sock, reply, addr)

    def _send(self, sock: socket.socket, reply: bytes, addr: Any) -> None:
        try:
            sock.sendto(reply, addr)
            self.stats.replies += 1
        except OSError:
            self.stats.dropped += 1

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
            return self._open_session(ep, rmcp.OpenSessionRequest.parse(packet.payload), now)
        if ptype == PayloadType.RAKP1:
            return self._rakp1(ep, rmcp.Rakp1.parse(packet.payload), now)
        if ptype == PayloadType.RAKP3:
            return self._rakp3(ep, rmcp.Rakp3.parse(packet.payload), now)
        return None

    # -- before a session ------------------------------------------------------------------

    def _sessionless(self, ep: Endpoint, payload: bytes) -> bytes | None:
        """Get Channel Authentication Capabilities and Get Channel Cipher Suites, outside a session."""
        req = rmcp.parse_ipmi_request(payload)
        if req.netfn != 0x06 or req.cmd not in (0x38, 0x54):
            return None  # real BMCs ignore other commands outside a session
        cc, data = self._channel_command(req)
        return rmcp.build_ipmi_response(req, cc, data)

    @staticmethod
    def _channel_command(req: rmcp.IpmiRequest) -> tuple[int, bytes]:
        data = req.data
        if len(data) < 2:
            return 0xC7, b""
        channel = data[0] & 0x0F
        if channel not in (0x01, 0x0E):
            return 0xCC, b""
        if req.cmd == 0x38:
            # IPMI 2.0 extended data; no 1.5 auth types; non-null user names only; 2.0 connections only.
            return 0x00, bytes([0x01, 0x80, 0x04, 0x02, 0x00, 0x00, 0x00, 0x00])
        # Get Channel Cipher Suites: 16 bytes of the records per list index.
        if len(data) < 3 or data[1] & 0x3F != 0:
            return 0xCC, b""
        index = data[2] & 0x3F
        return 0x00, bytes([0x01]) + _CIPHER_RECORDS[index * 16:index * 16 + 16]

    def _open_session(self, ep: Endpoint, req: rmcp.OpenSessionRequest, now: float) -> bytes:
        def answer(status: int, session: Session | None = None) -> bytes:
            msg = rmcp.OpenSessionResponse(req.tag, status, req.console_sid,
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

    def _rakp1(self, ep: Endpoint, msg: rmcp.Rakp1, now: float) -> bytes:
        bmc = ep.bmc
        session = ep.sessions.get(msg.bmc_sid) if ep.sessions else None

        def fail(status: int, console_sid: int) -> bytes:
            self.stats.login_failures += 1
            if session is not None and ep.sessions is not None:
                ep.sessions.pop(session.bmc_sid, None)
            return rmcp.build_v20(PayloadType.RAKP2, rmcp.Rakp2(msg.tag, status, console_sid).build())

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
        code = rmcp.rakp2_auth_code(session.suite, session.kuid, session.console_sid, session.bmc_sid,
                                    msg.console_random, session.bmc_random, bmc.spec.guid, msg.role, msg.username)
        reply = rmcp.Rakp2(msg.tag, RmcppStatus.OK, session.console_sid, session.bmc_random, bmc.spec.guid, code)
        return rmcp.build_v20(PayloadType.RAKP2, reply.build())

    def _rakp3(self, ep: Endpoint, msg: rmcp.Rakp3, now: float) -> bytes | None:
        bmc = ep.bmc
        session = ep.sessions.get(msg.bmc_sid) if ep.sessions else None
        if session is None or session.state == _OPENED or session.rakp1 is None:
            self.stats.login_failures += 1
            return rmcp.build_v20(PayloadType.RAKP4, rmcp.Rakp4(msg.tag, RmcppStatus.INVALID_SESSION_ID, 0).build())
        assert ep.sessions is not None
        if msg.status != RmcppStatus.OK:  # the console refused our RAKP 2 (e.g. a wrong password)
            ep.sessions.pop(session.bmc_sid, None)
            self.stats.login_failures += 1
            return None
        r1, suite = session.rakp1, session.suite
        expected = rmcp.rakp3_auth_code(suite, session.kuid, session.bmc_random, session.console_sid, r1.role,
                                        r1.username)
        if not hmac.compare_digest(expected, msg.auth_code):
            ep.sessions.pop(session.bmc_sid, None)
            self.stats.login_failures += 1
            return rmcp.build_v20(PayloadType.RAKP4, rmcp.Rakp4(
                msg.tag, RmcppStatus.INVALID_INTEGRITY_CHECK_VALUE, session.console_sid).build())
        sik = rmcp.session_integrity_key(suite, session.kuid, r1.console_random, session.bmc_random, r1.role,
                                         r1.username)
        if session.state != _ACTIVE:
            session.keys = rmcp.SessionKeys(suite, sik)
            session.state = _ACTIVE
            session.priv = min(Privilege.USER, session.max_priv)
        session.last_seen = now
        icv = rmcp.rakp4_icv(suite, sik, r1.console_random, session.bmc_sid, bmc.spec.guid)
        return rmcp.build_v20(PayloadType.RAKP4, rmcp.Rakp4(msg.tag, RmcppStatus.OK, session.console_sid, icv).build())

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
        if netfn == 0x06:
            if cmd == 0x3B:  # Set Session Privilege Level
                if not data:
                    return 0xC7, b"", None
                wanted = data[0] & 0x0F
                if wanted:
                    if wanted > session.max_priv or wanted > Privilege.ADMINISTRATOR:
                        return 0x81, b"", None  # exceeds the channel or user privilege limit
                    if wanted < Privilege.USER:
                        return 0x80, b"", None
                    session.priv = Privilege(wanted)
                return 0x00, bytes([session.priv]), None
            if cmd == 0x3C:  # Close Session
                if len(data) < 4:
                    return 0xC7, b"", None
                (sid,) = struct.unpack_from("<I", data)
                if sid == session.bmc_sid:
                    return 0x00, b"", "close"
                if sid and ep.sessions and sid in ep.sessions and session.priv >= Privilege.ADMINISTRATOR:
                    self._drop_session(ep, sid)
                    self.stats.sessions_closed += 1
                    return 0x00, b"", None
                return 0x87, b"", None  # invalid session id in request
            if cmd in (0x38, 0x54):
                cc, out = self._channel_command(req)
                return cc, out, None
            if cmd == 0x42 and data:  # Get Channel Info
                cc, out = ep.bmc.channel_info(data[0] & 0x0F, len(ep.sessions or ()))
                return cc, out, None
        cc, out = ep.bmc.handle(netfn, cmd, data, session.priv)
        after = "reset" if netfn == 0x06 and cmd in (0x02, 0x03) and cc == 0 else None
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

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            self.sweep()

    def session_count(self) -> int:
        return sum(len(ep.sessions or ()) for ep in self._live)

    # -- the control interface -------------------------------------------------------------

    async def _control_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                try:
                    request = json.loads(line)
                    response = self.control(request)
                except (ValueError, KeyError, TypeError) as exc:
                    response = {"ok": False, "error": f"{exc.__class__.__name__}: {exc}"}
                writer.write(json.dumps(response).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def control(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Answer one control request (docs/lab.md): ping, list, get, fault, power, reset, stats, stop."""
        if not isinstance(request, Mapping):
            raise TypeError("a control request is a JSON object")
        op = request.get("op")
        if op == "ping":
            return {"ok": True, "pid": os.getpid(), "bmcs": len(self.endpoints)}
        if op == "list":
            now = time.monotonic()
            return {"ok": True, "bmcs": [
                {"name": ep.bmc.spec.name, "host": ep.bmc.spec.host, "port": ep.bmc.spec.port,
                 "power": "on" if ep.bmc.powered(now) else "off", "faults": ep.bmc.faults()}
                for ep in self.endpoints]}
        if op == "stats":
            return {"ok": True, "pid": os.getpid(), "bmcs": len(self.endpoints), "sessions": self.session_count(),
                    "rss_bytes": rss_bytes(), "startup_seconds": round(self.startup_seconds, 3),
                    "uptime_seconds": round(time.time() - self.started_at, 1), **self.stats.as_dict()}
        if op == "stop":
            assert self._loop is not None
            self._loop.call_soon(self.request_stop)
            return {"ok": True}
        if op not in ("get", "fault", "power", "reset"):
            return {"ok": False, "error": f"unknown op {op!r}: ping, list, get, fault, power, reset, stats, stop"}
        key = str(request.get("bmc", ""))
        ep = self.find(key)
        if ep is None:
            return {"ok": False, "error": f"no BMC named {key!r} (give a name, host or host:port)"}
        bmc = ep.bmc
        if op == "fault":
            kind = request.get("kind")
            if kind not in FAULT_KINDS:
                return {"ok": False, "error": f"unknown fault {kind!r}; known: {', '.join(FAULT_KINDS)}"}
            try:
                bmc.set_fault(kind, not request.get("clear", False), request.get("value"))
            except ValueError as exc:
                return {"ok": False, "error": str(exc)}
            if kind == "wrong-password" and ep.sessions:  # sessions made with the old password end
                self.stats.sessions_closed += len(ep.sessions)
                ep.sessions = None
                self._live.discard(ep)
        elif op == "power":
            action = request.get("action")
            if action not in ("on", "off", "cycle", "reset", "soft"):
                return {"ok": False, "error": "action must be on, off, cycle, reset or soft"}
            bmc.power(action)
        elif op == "reset":
            bmc.cold_reset()
            ep.sessions = None
            self._live.discard(ep)
        return {"ok": True, "bmc": bmc.state()}


def _choose_suite(req: rmcp.OpenSessionRequest) -> tuple[rmcp.CipherSuite | None, int]:
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


def _replace_port(spec: BmcSpec, port: int) -> BmcSpec:
    return dataclasses.replace(spec, port=port)


# ---------------------------------------------------------------------------------------------
# Process-level helpers
# ---------------------------------------------------------------------------------------------


def ensure_fd_limit(needed: int) -> int:
    """Raise RLIMIT_NOFILE's soft limit (and, as root, the hard one) to ``needed``; return the limit.

    Raises :class:`LabStartError` naming the numbers when the limit cannot reach ``needed``.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return soft
    if hard != resource.RLIM_INFINITY and hard < needed:
        try:  # only root may raise the hard limit
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
            return needed
        except (ValueError, OSError):
            raise LabStartError(
                f"{needed} file descriptors needed (one per BMC), but RLIMIT_NOFILE's hard limit is {hard}: "
                f"raise it (ulimit -Hn {needed}, LimitNOFILE= in a unit, or run as root) or serve fewer BMCs"
            ) from None
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard if hard != resource.RLIM_INFINITY else needed


def rss_bytes() -> int:
    """This process's resident set size."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def loopback_hosts(count: int, first: str = "127.10.0.1") -> list[str]:
    """``count`` consecutive loopback addresses from ``first``, skipping those ending in .0 and .255."""
    addr = int(ipaddress.IPv4Address(first))
    out = []
    while len(out) < count:
        ip = ipaddress.IPv4Address(addr)
        if not ip.is_loopback:
            raise ValueError(f"{count} addresses from {first} leave 127.0.0.0/8")
        if addr & 0xFF not in (0, 255):
            out.append(str(ip))
        addr += 1
    return out


def load_spec(path: Path) -> tuple[list[BmcSpec], dict[str, SensorSet]]:
    """Read and check a spec file (JSON)."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise LabStartError(f"cannot read the lab spec {path}: {exc}") from exc
    return parse_spec(doc, where=str(path))


def lab_control(state_dir: str | os.PathLike[str], request: Mapping[str, Any], *,
                timeout: float = 10.0) -> dict[str, Any]:
    """Send one control request to the server running in ``state_dir``; return its JSON answer.

    The answer has ``"ok": true`` and the op's fields, or ``"ok": false`` and ``"error"``. Raises
    :class:`~fleet.errors.DeviceUnreachable` when no server listens there and
    :class:`~fleet.errors.DeviceTimeout` when it does not answer within ``timeout``.
    """
    path = Path(state_dir) / CONTROL_SOCKET
    target = f"lab server in {state_dir}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
            sock.sendall(json.dumps(dict(request)).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = sock.recv(1 << 20)
                if not chunk:
                    break
                buf += chunk
        except TimeoutError:
            raise DeviceTimeout(f"no answer within {timeout} s", target=target, operation="control") from None
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise DeviceUnreachable(f"not running ({exc.strerror})", target=target, operation="control") from None
    if not buf:
        raise DeviceUnreachable("closed the connection without an answer", target=target, operation="control")
    return json.loads(buf)


def _ours(pid: int) -> bool:
    """Whether ``pid`` is a lab BMC server (so a stale pid file never makes us kill a stranger)."""
    return cmdline_has(pid, b"fleet.lab.bmcserver")


def _running_pid(state_dir: Path) -> int | None:
    """The PID of a lab server that runs in ``state_dir``, if one does."""
    try:
        pid = int((state_dir / PID_FILE).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if pid != os.getpid() and pid_alive(pid) and _ours(pid) else None


def start(spec_path: str | os.PathLike[str], state_dir: str | os.PathLike[str], *, timeout: float = 120.0,
          python: str | None = None, extra_args: Sequence[str] = ()) -> int:
    """Start the server in the background (its own session, output in ``DIR/bmcserver.log``).

    Returns its PID once ``DIR/ready`` exists; raises :class:`LabStartError` with the log's tail if it
    exits first or is not ready within ``timeout`` seconds (it is then stopped).
    """
    state = Path(state_dir)
    state.mkdir(parents=True, exist_ok=True)
    running = _running_pid(state)
    if running is not None:
        raise LabStartError(f"a lab BMC server (pid {running}) already runs in {state}")
    (state / READY_FILE).unlink(missing_ok=True)
    (state / START_ERROR_FILE).unlink(missing_ok=True)
    logfile = state / LOG_FILE
    with open(logfile, "ab") as out:
        proc = subprocess.Popen(
            [python or sys.executable, "-m", "fleet.lab.bmcserver", "--spec", str(spec_path), "--state-dir",
             str(state), *extra_args],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (state / READY_FILE).exists():
            return proc.pid
        if proc.poll() is not None:
            expected = read_start_error(state / START_ERROR_FILE)
            if expected is not None:
                raise expected
            tail = logfile.read_text(errors="replace")[-2000:]
            raise LabStartError(f"the lab BMC server exited with status {proc.returncode}:\n{tail}")
        time.sleep(0.05)
    stop(state, pid=proc.pid)
    raise LabStartError(f"the lab BMC server was not ready within {timeout} s (see {logfile})")


def stop(state_dir: str | os.PathLike[str], *, timeout: float = 10.0, pid: int | None = None) -> bool:
    """Stop the server of ``state_dir`` by its PID (SIGTERM, then SIGKILL); False if none was running."""
    state = Path(state_dir)
    if pid is None:
        pid = _running_pid(state)
        if pid is None:
            (state / PID_FILE).unlink(missing_ok=True)
            return False
    if not terminate(pid, _ours, timeout=timeout):
        (state / PID_FILE).unlink(missing_ok=True)
        return False
    for name in (PID_FILE, READY_FILE, CONTROL_SOCKET):
        (state / name).unlink(missing_ok=True)
    return True


@contextlib.contextmanager
def _pid_file(state_dir: Path) -> Iterator[None]:
    path = state_dir / PID_FILE
    path.write_text(f"{os.getpid()}\n")
    try:
        yield
    finally:
        for name in (READY_FILE, PID_FILE):
            (state_dir / name).unlink(missing_ok=True)


async def _serve(specs: list[BmcSpec], sets: dict[str, SensorSet], state_dir: Path, max_sessions: int) -> None:
    server = LabServer(specs, sets, state_dir, max_sessions=max_sessions)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.request_stop)
    await server.start()
    if server._stop_requested:
        await server.aclose()
        return
    ready = {"pid": os.getpid(), "bmcs": len(specs), "startup_seconds": round(server.startup_seconds, 3),
             "rss_bytes": rss_bytes()}
    tmp = state_dir / (READY_FILE + ".tmp")
    tmp.write_text(json.dumps(ready) + "\n")
    tmp.replace(state_dir / READY_FILE)
    print(f"READY {len(specs)} BMCs in {server.startup_seconds:.2f} s, pid {os.getpid()}", flush=True)
    await server.run()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleet.lab.bmcserver",
                                     description="Serve the simulated BMCs of a lab spec over IPMI 2.0 (RMCP+).")
    parser.add_argument("--spec", required=True, type=Path, help="the lab spec (JSON, see docs/lab.md)")
    parser.add_argument("--state-dir", required=True, type=Path, help="pid file, ready marker, control socket")
    parser.add_argument("--max-sessions", type=int, default=MAX_SESSIONS, help="sessions per BMC at once")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        specs, sets = load_spec(args.spec)
    except (LabStartError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.state_dir.mkdir(parents=True, exist_ok=True)
    running = _running_pid(args.state_dir)
    if running is not None:
        print(f"error: a lab BMC server (pid {running}) already runs in {args.state_dir}", file=sys.stderr)
        return 1
    with _pid_file(args.state_dir):
        try:
            asyncio.run(_serve(specs, sets, args.state_dir, args.max_sessions))
        except (LabStartError, Unavailable) as exc:
            write_start_error(args.state_dir / START_ERROR_FILE, exc)
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
