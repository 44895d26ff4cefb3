"""The IPMI execution model, worker side: :class:`Pump`, the one thread of a worker that calls pyghmi.

Started by :class:`~fleet.drivers.ipmi.pool.IpmiPool` as ``python -m fleet.drivers.ipmi.worker``.
One thread reads requests from the socket; one thread, the pump, owns pyghmi: it logs sessions in
asynchronously, drives the operations of :data:`fleet.drivers.ipmi.ops.OPS` (generators of IPMI
requests) with pyghmi callbacks, keeps one persistent session per BMC (closed after
``session_idle_s`` unused), runs one operation at a time per BMC, and fails an operation at its
deadline itself, discarding its session so that pyghmi stops retrying. ``RLIMIT_NOFILE`` is raised
to its hard limit and the number of sessions is capped so pyghmi's sockets stay far below fd 1024
(its IO thread uses ``select()``). Login errors are classified here (with the profile quirks
``ipmi-over-lan-disabled-by-default`` and ``ipmi-over-lan-setting``, see :func:`ipmi_over_lan_hint`).
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import itertools
import json
import logging
import os
import resource
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .codes import AppCmd, NetFn
from .operation import BmcState, OpError, Pause, Response, advance
from .ops import DROPS_SESSION, OPS
from .wire import KEEPALIVE_S, pack_frame, unpack_frames

__all__ = ["Pump", "ipmi_over_lan_hint", "worker_main"]

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Job:
    req_id: int
    op: str
    args: tuple
    options: dict[str, Any]
    deadline: float
    timeout: float
    creds: tuple[bytes, bytes, tuple[int, ...]]
    gen: Any = None
    request: Any = None          # the Request awaiting its answer
    response: Any = None         # the answer to hand to the operation on its next step
    answered: bool = False
    to_send: Any = None          # a Request waiting for the session to be free
    reply_deadline: float | None = None
    done: bool = False


@dataclass(eq=False)
class _Bmc:
    host: str
    port: int
    creds: tuple[bytes, bytes, tuple[int, ...]]
    state: Any
    session: Any = None
    logged_in: bool = False
    queue: deque[_Job] = field(default_factory=deque)
    job: _Job | None = None
    last_used: float = 0.0       # last operation finished (idle sessions are closed after session_idle_s)
    last_io: float = 0.0         # last answer from the BMC (keepalive after KEEPALIVE_S of silence)
    keepalive: bool = False      # a keepalive is in flight


class Pump:
    """The worker's one pyghmi thread: sessions, operations, deadlines."""

    def __init__(self, sock: socket.socket, config: dict[str, Any]) -> None:
        from pyghmi.ipmi.private import session as ps

        from . import _pyghmi_fixes as fixes

        self._ps, self._fixes = ps, fixes
        self._ops: dict[str, Callable[..., Any]] = dict(OPS)
        self._drops_session = DROPS_SESSION
        self._state_cls = BmcState
        self._pause_cls = Pause
        self.sock = sock
        self.idle_s = float(config.get("session_idle_s", 300.0))
        self.keepalive_s = float(config.get("keepalive_s", KEEPALIVE_S))
        self.counts = {"logins": 0, "keepalives": 0, "timeouts": 0}
        self.max_sessions = int(config.get("max_sessions", 8192))
        self.test_ops = bool(config.get("test_ops", False))
        self.inbox: deque[tuple] = deque()
        self.inbox_event = threading.Event()
        self.bmcs: dict[tuple[str, int], _Bmc] = {}
        self.live: set[_Bmc] = set()  # BMCs with a session (logged in or logging in)
        self.ready: deque[_Bmc] = deque()
        #: (when, seq, kind, job, bmc): "deadline" ends the job, "reply" stops waiting for an answer,
        #: "resume" ends a Pause
        self.deadlines: list[tuple[float, int, str, _Job, _Bmc]] = []
        self.deferred: list[_Bmc] = []
        self.outbox: list[tuple] = []
        self.model_sdrs: dict[tuple, Any] = {}
        self.stopping = False
        self._seq = itertools.count()
        self._next_housekeeping = 0.0

    # -- the reader thread ----------------------------------------------------------------------

    def reader(self) -> None:
        buf = bytearray()
        try:
            while True:
                data = self.sock.recv(1 << 20)
                if not data:
                    break
                buf += data
                for frame in unpack_frames(buf):
                    self.inbox.extend(frame)
                self.inbox_event.set()
                self._fixes.wake()
        except OSError:
            pass
        self.inbox.append(("stop",))
        self.inbox_event.set()
        self._fixes.wake()

    # -- the pump loop --------------------------------------------------------------------------

    def run(self) -> None:
        self._fixes.assert_pump_thread()
        while not self.stopping:
            self._intake()
            self._advance()
            self._expire()
            self._housekeeping()
            self._flush()
            if self.stopping:
                break
            self._wait()
        self._close_all()
        self._flush()

    def _wait(self) -> None:
        now = time.monotonic()
        if self.inbox or self.ready:
            timeout = 0.0
        else:
            timeout = min(1.0, self._next_housekeeping - now)
            if self.deadlines:
                timeout = min(timeout, self.deadlines[0][0] - now)
            if self.deferred:
                timeout = min(timeout, 0.005)
            timeout = max(0.0, timeout)
        if self._ps.iothread is None:
            # pyghmi's IO thread starts with the first session; until then wait on our own event.
            self.inbox_event.wait(timeout)
            self.inbox_event.clear()
            return
        self.inbox_event.clear()
        self._ps.Session.wait_for_rsp(timeout=timeout)

    def _intake(self) -> None:
        while self.inbox:
            msg = self.inbox.popleft()
            if msg[0] == "stop":
                self.stopping = True
                return
            _, req_id, op, args, bmc_spec, options, deadline, timeout = msg
            host, port, user, password, suites = bmc_spec
            if op.startswith("_") and self.test_ops:
                self._test_op(req_id, op, args)
                continue
            if op not in self._ops:
                self._fail(req_id, OpError("unsupported", f"unknown IPMI operation {op!r}"))
                continue
            creds = (user, password, tuple(suites))
            bmc = self.bmcs.get((host, port))
            if bmc is None:
                bmc = self.bmcs[(host, port)] = _Bmc(host, port, creds, self._state_cls(model_sdrs=self.model_sdrs))
            job = _Job(req_id, op, tuple(args), dict(options), float(deadline), float(timeout), creds)
            heapq.heappush(self.deadlines, (job.deadline, next(self._seq), "deadline", job, bmc))
            bmc.queue.append(job)
            if bmc.job is None:
                self.ready.append(bmc)

    def _advance(self) -> None:
        now = time.monotonic()
        if self.deferred:
            self.ready.extend(self.deferred)
            self.deferred.clear()
        rounds = len(self.ready)
        for _ in range(rounds):
            bmc = self.ready.popleft()
            self._step(bmc, now)

    def _step(self, bmc: _Bmc, now: float) -> None:
        job = bmc.job
        if job is None:
            if not bmc.queue:
                bmc.last_used = now
                return
            job = bmc.job = bmc.queue.popleft()
            if job.creds != bmc.creds:  # other credentials or cipher suites: a session of their own
                self._drop_session(bmc)
                bmc.creds = job.creds
            bmc.state.options = job.options
            try:
                job.gen = self._ops[job.op](bmc.state, *job.args)
            except Exception as exc:  # a bad argument: nothing was sent
                self._finish(bmc, job, error=OpError("fatal", f"{job.op}: {exc}"))
                return
        if bmc.session is not None and (bmc.session.broken or (not bmc.session.logged and bmc.logged_in)):
            self._drop_session(bmc)
        if bmc.session is None:
            self._login(bmc)
            return
        if not bmc.logged_in:
            return  # the login callback will bring us back
        if job.to_send is not None:
            self._send(bmc, job, job.to_send)
            return
        if job.request is not None and not job.answered:
            return  # waiting for the BMC
        self._resume(bmc, job)

    def _resume(self, bmc: _Bmc, job: _Job) -> None:
        try:
            request = next(job.gen) if job.request is None else advance(job.gen, job.request, job.response)
        except StopIteration as done:
            self._finish(bmc, job, result=done.value)
            return
        except OpError as exc:
            self._finish(bmc, job, error=exc)
            return
        except Exception as exc:
            log.debug("IPMI operation %s failed", job.op, exc_info=True)
            self._finish(bmc, job, error=OpError("fatal", f"{job.op}: unexpected {exc.__class__.__name__}: {exc}"))
            return
        job.request, job.response, job.answered = None, None, False
        if isinstance(request, self._pause_cls):  # nothing to send: come back later
            job.request = request
            heapq.heappush(self.deadlines, (time.monotonic() + request.seconds, next(self._seq), "resume", job, bmc))
            return
        self._send(bmc, job, request)

    def _send(self, bmc: _Bmc, job: _Job, request: Any) -> None:
        session = bmc.session
        if session._isincommand():  # a keepalive is in flight: send when it is answered
            job.to_send = request
            self.deferred.append(bmc)
            return
        job.to_send = None
        job.request = request

        def answered(response: dict[str, Any], bmc: _Bmc = bmc, job: _Job = job, request: Any = request) -> None:
            self._on_response(bmc, job, request, response)

        try:
            session.raw_command(netfn=request.netfn, command=request.command, data=request.data,
                                retry=request.retry, rslun=request.lun, callback=answered)
        except Exception as exc:  # "Session no longer connected": log in again and resend
            log.debug("IPMI send failed on %s:%s: %s", bmc.host, bmc.port, exc)
            job.request, job.to_send = None, request
            self._drop_session(bmc)
            self.ready.append(bmc)
            return
        if request.reply_within is not None:
            job.reply_deadline = time.monotonic() + request.reply_within
            heapq.heappush(self.deadlines, (job.reply_deadline, next(self._seq), "reply", job, bmc))

    def _on_response(self, bmc: _Bmc, job: _Job, request: Any, response: dict[str, Any]) -> None:
        session = bmc.session
        if session is not None:
            session.incommand = False
            while session.evq:
                session.evq.popleft().set()
        if bmc.job is not job or job.request is not request or job.done:
            return
        if "error" in response or response.get("code") == 0xFFFF:
            # pyghmi's retries ran out before our deadline; pyghmi marks the session broken.
            bmc.session, bmc.logged_in = None, False
            self.live.discard(bmc)
            self._finish(bmc, job, error=OpError("timeout", f"no answer from {bmc.host}:{bmc.port} "
                                                            f"after retransmits ({response.get('error')})"))
            return
        job.response = Response(response["code"], bytes(response.get("data", b"")))
        bmc.last_io = time.monotonic()
        job.answered = True
        job.reply_deadline = None
        self.ready.append(bmc)

    # -- sessions -------------------------------------------------------------------------------

    def _login(self, bmc: _Bmc) -> None:
        self._make_room()
        user, password, suites = bmc.creds
        holder: list[Any] = []

        def logged(response: dict[str, Any]) -> None:
            if holder and bmc.session is holder[0]:
                self._on_login(bmc, holder[0], response)

        try:
            with self._fixes.login_policy(suites):
                session = self._ps.Session(bmc=bmc.host, userid=user, password=password, port=bmc.port,
                                           onlogon=logged)
        except Exception as exc:
            job = bmc.job
            if job is not None:
                self._finish(bmc, job, error=OpError("unreachable", f"cannot open an IPMI session to "
                                                                   f"{bmc.host}:{bmc.port}: {exc}"))
            return
        holder.append(session)
        bmc.session, bmc.logged_in = session, False
        self.live.add(bmc)
        self.counts["logins"] += 1
        if session.logged and not session.logging and not session.broken:
            self._logged_in(bmc, session)  # pyghmi handed back a live session with these credentials

    def _logged_in(self, bmc: _Bmc, session: Any) -> None:
        bmc.logged_in = True
        bmc.last_io = time.monotonic()
        self._fixes.detach_keepalive(session)  # we keep it alive: see _housekeeping
        self.ready.append(bmc)

    def _on_login(self, bmc: _Bmc, session: Any, response: dict[str, Any]) -> None:
        if "error" not in response:
            self._logged_in(bmc, session)
            return
        err = str(response["error"])
        bmc.session, bmc.logged_in = None, False  # pyghmi marks the session broken after this callback
        self.live.discard(bmc)
        error = _login_error(err, bmc)
        if bmc.job is not None:
            self._finish(bmc, bmc.job, error=error)
        if error.kind == "auth":  # queued requests with the same credentials: spare the BMC more logins
            for job in [j for j in bmc.queue if j.creds == bmc.creds]:
                bmc.queue.remove(job)
                self._finish(bmc, job, error=error, active=False)

    def _drop_session(self, bmc: _Bmc) -> None:
        session, bmc.session, bmc.logged_in = bmc.session, None, False
        bmc.keepalive = False
        self.live.discard(bmc)
        if session is not None:  # forgotten first: discarding calls our login callback with an error
            self._fixes.discard(session)

    def _make_room(self) -> None:
        if len(self.live) < self.max_sessions:
            return
        idle = sorted((b for b in self.live if b.job is None and not b.queue), key=lambda b: b.last_used)
        for b in idle[: len(self.live) - self.max_sessions + 1]:
            self._drop_session(b)

    def _close_all(self) -> None:
        for bmc in self.bmcs.values():
            for job in ([bmc.job] if bmc.job else []) + list(bmc.queue):
                self._finish(bmc, job, error=OpError("fatal", "the IPMI worker is stopping"), active=False)
            self._drop_session(bmc)

    # -- completion, deadlines, idle sessions -----------------------------------------------------

    def _finish(self, bmc: _Bmc, job: _Job, *, result: Any = None, error: OpError | None = None,
                active: bool = True) -> None:
        if job.done:
            return
        job.done = True
        if job.gen is not None:
            job.gen.close()
        if error is None:
            self.outbox.append(("done", job.req_id, result))
        else:
            self.outbox.append(("fail", job.req_id, error))
        if active and bmc.job is job:
            bmc.job = None
            bmc.last_used = time.monotonic()
            if error is None and job.op in self._drops_session:
                self._drop_session(bmc)
            self.ready.append(bmc)

    def _fail(self, req_id: int, error: OpError) -> None:
        self.outbox.append(("fail", req_id, error))

    def _expire(self) -> None:
        now = time.monotonic()
        while self.deadlines and self.deadlines[0][0] <= now:
            when, _, kind, job, bmc = heapq.heappop(self.deadlines)
            if job.done:
                continue
            if kind == "resume":
                if bmc.job is job and isinstance(job.request, self._pause_cls) and not job.answered:
                    job.answered = True
                    self.ready.append(bmc)
                continue
            if kind == "reply":
                # The request asked for no retry and got no answer in time: hand the op None.
                if bmc.job is job and job.reply_deadline == when and job.request is not None and not job.answered:
                    job.response, job.answered, job.reply_deadline = None, True, None
                    if bmc.session is not None:
                        bmc.session.incommand = False
                        bmc.session.lastpayload = None
                    self.ready.append(bmc)
                continue
            self.counts["timeouts"] += 1
            if bmc.job is job:
                what = "the login" if not bmc.logged_in else f"{job.op.replace('_', ' ')}"
                self._drop_session(bmc)  # stop pyghmi's retransmits; the next request logs in afresh
                self._finish(bmc, job, error=OpError("timeout", f"no answer from {bmc.host}:{bmc.port} to "
                                                                f"{what} within {job.timeout:g} s"))
            else:
                with contextlib.suppress(ValueError):
                    bmc.queue.remove(job)
                self._finish(bmc, job, error=OpError("timeout", f"{job.timeout:g} s passed while waiting behind "
                                                                "other operations on the same BMC"), active=False)

    def _housekeeping(self) -> None:
        """Once a second: close sessions unused for ``session_idle_s``, keep the others alive."""
        now = time.monotonic()
        if now < self._next_housekeeping:
            return
        self._next_housekeeping = now + 1.0
        for bmc in list(self.live):
            if bmc.job is not None or bmc.queue or not bmc.logged_in or bmc.keepalive:
                continue
            if bmc.session.broken or now - bmc.last_used > self.idle_s:
                self._drop_session(bmc)
            elif now - bmc.last_io > self.keepalive_s and not bmc.session._isincommand():
                self._keepalive(bmc)

    def _keepalive(self, bmc: _Bmc) -> None:
        """Get Device ID on an idle session, so that the BMC does not time it out."""
        session = bmc.session

        def answered(response: dict[str, Any]) -> None:
            session.incommand = False
            while session.evq:
                session.evq.popleft().set()
            if bmc.session is not session:
                return
            bmc.keepalive = False
            if "error" in response or response.get("code") == 0xFFFF:
                self._drop_session(bmc)
            else:
                bmc.last_io = time.monotonic()

        bmc.keepalive = True
        self.counts["keepalives"] += 1
        try:
            session.raw_command(netfn=NetFn.APP, command=AppCmd.GET_DEVICE_ID, callback=answered)
        except Exception:
            self._drop_session(bmc)

    def _flush(self) -> None:
        if not self.outbox:
            return
        frame = pack_frame(self.outbox)
        self.outbox = []
        try:
            self.sock.sendall(frame)
        except OSError:
            self.stopping = True

    # -- test hooks (only with test_ops) --------------------------------------------------------------

    def _test_op(self, req_id: int, op: str, args: tuple) -> None:
        if op == "_wedge":  # hold the pump, as a pyghmi deadlock would
            time.sleep(float(args[0]))
            self.outbox.append(("done", req_id, "woke"))
        elif op == "_exit":
            os._exit(int(args[0]))
        elif op == "_stats":
            ps = self._ps
            self.outbox.append(("done", req_id, {
                "pid": os.getpid(),
                "sessions": sum(1 for b in self.bmcs.values() if b.session is not None),
                "max_fd": max((s.fileno() for s in ps.iosockets), default=-1),
                "iosockets": len(ps.iosockets),
                "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
                "sdr_reads": {f"{h}:{p}": b.state.sdr_reads for (h, p), b in self.bmcs.items()},
                **self.counts,
            }))
        else:
            self._fail(req_id, OpError("unsupported", f"unknown test operation {op!r}"))


def _login_error(err: str, bmc: _Bmc) -> OpError:
    """Classify pyghmi's login error strings; say when the model may have IPMI over LAN off."""
    error = _classify_login(err, bmc)
    hint = ipmi_over_lan_hint(bmc.state.options.get("quirks") or {}) if error.kind in ("auth", "timeout") else ""
    return OpError(error.kind, f"{error} ({hint})", code=error.code) if hint else error


def ipmi_over_lan_hint(quirks: dict[str, Any]) -> str:
    """What a failed login may mean on a model whose IPMI over LAN can be off (profile quirks
    ``ipmi-over-lan-disabled-by-default`` / ``ipmi-over-lan-setting``, whose value is the remedy), else ""."""
    remedy = quirks.get("ipmi-over-lan-disabled-by-default")
    if remedy:
        return (f"this model ships with IPMI over LAN off, and then every login fails like a wrong password "
                f"(profile quirk ipmi-over-lan-disabled-by-default): check that it is on; {remedy}")
    remedy = quirks.get("ipmi-over-lan-setting")
    if remedy:
        return (f"IPMI over LAN can be turned off on this BMC, and then logins fail before authentication "
                f"(profile quirk ipmi-over-lan-setting): check that it is on; {remedy}")
    return ""


def _classify_login(err: str, bmc: _Bmc) -> OpError:
    where = f"{bmc.host}:{bmc.port}"
    low = err.lower()
    if "timeout" in low or "failed to initialize" in low or "no longer connected" in low:
        return OpError("timeout", f"no answer to login from {where}")
    if "cipher suite 17 refused" in low or "invalid authentication algorithm" in low \
            or "no cipher suite match" in low or "invalid integrity algorithm" in low \
            or "invalid confidentiality algorithm" in low:
        return OpError("unsupported", f"{where} refused the cipher suites {list(bmc.creds[2])}: {err}")
    if "password" in low or "unauthorized name" in low or "rakp" in low or "privilege" in low \
            or "invalid role" in low or "kg" in low:
        return OpError("auth", f"{where} refused the credentials: {err}")
    if "insufficient resources" in low:
        return OpError("retryable", f"{where} has no free session slot: {err}")
    return OpError("fatal", f"login to {where} failed: {err}")


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def worker_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleet.drivers.ipmi.worker",
                                     description="Rackfleet IPMI worker (started by IpmiPool)")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--config", default="{}")
    ns = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    logging.basicConfig(level=logging.WARNING, format="ipmi-worker[%(process)d] %(levelname)s %(message)s")
    _raise_nofile()
    from . import _pyghmi_fixes

    _pyghmi_fixes.apply()
    sock = socket.socket(fileno=ns.fd)
    sock.setblocking(True)
    pump = Pump(sock, json.loads(ns.config))
    sock.sendall(pack_frame([("hello", 0, os.getpid())]))
    threading.Thread(target=pump.reader, name="ipmi-reader", daemon=True).start()
    pump.run()
    return 0


if __name__ == "__main__":
    sys.exit(worker_main())
