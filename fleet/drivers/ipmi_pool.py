"""The IPMI execution model: worker processes owning shards of BMCs, one pyghmi pump thread each.

Why (measured on pyghmi 1.6.19, see ``docs/ipmi.md``): pyghmi's calls are synchronous and share one
IO thread per process; with many threads they stall, hand logins between threads and can deadlock;
a dead BMC holds a synchronous caller for 5.5 s at login and ~29 s mid-session. So:

- **Parent (asyncio side)** — :class:`IpmiPool`. Each BMC (``host:port``) belongs to one worker,
  chosen by rendezvous hashing (stable when the worker count changes). A call becomes a future and a
  message; messages to a worker are batched into one frame per event-loop turn and written to a
  non-blocking socket, answers are read by ``loop.add_reader``: no thread per request. At most
  ``max_inflight`` requests per worker are outstanding; the rest wait in the parent, so a request's
  deadline (``timeout`` seconds) starts when it is handed to its worker. A worker that has not
  answered ``watchdog_margin_s`` after a deadline is wedged: it is killed by PID and replaced, and
  its outstanding requests fail with a timeout. A worker that exits is replaced the same way.
- **Worker** — :class:`Pump`, started as ``python -m fleet.drivers.ipmi_pool`` (a fresh
  interpreter, like multiprocessing's *spawn*, without re-importing the caller's ``__main__``).
  One thread reads requests from the socket; one thread, the pump, owns pyghmi: it logs sessions in
  asynchronously, drives the operations of :data:`fleet.drivers.ipmi_ops.OPS` (generators of IPMI
  requests) with pyghmi callbacks, keeps one persistent session per BMC (closed after
  ``session_idle_s`` unused), runs one operation at a time per BMC, and fails an operation at its
  deadline itself, discarding its session so that pyghmi stops retrying. ``RLIMIT_NOFILE`` is raised
  to its hard limit and the number of sessions is capped so pyghmi's sockets stay far below fd 1024
  (its IO thread uses ``select()``).

The wire between them: frames of ``4-byte big-endian length + pickle(list of messages)`` over a
Unix socket pair. A request carries the BMC password as bytes (a :class:`~inventory.secrets.Secret`
refuses pickling); requests are never logged.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import heapq
import itertools
import json
import logging
import os
import pickle
import resource
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .ipmi_ops import OpError

__all__ = ["IpmiPool", "Pump", "default_workers"]

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">I")
#: Seconds of silence after which the pump sends a keepalive on an idle session (BMCs commonly end
#: sessions after 60 s; pyghmi uses 24-29 s).
KEEPALIVE_S = 20.0
_MAX_FRAME = 256 * 1024 * 1024


def default_workers() -> int:
    """Two workers per CPU, between 2 and 8 (4 processes on 2 cores measured best, see docs/ipmi.md)."""
    return max(2, min(8, 2 * (os.cpu_count() or 1)))


def _frame(messages: list[Any]) -> bytes:
    body = pickle.dumps(messages, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(body)) + body


def _unframe(buf: bytearray) -> list[list[Any]]:
    """Whole frames at the start of ``buf`` (removed from it)."""
    out = []
    while len(buf) >= _HEADER.size:
        (size,) = _HEADER.unpack_from(buf)
        if size > _MAX_FRAME:
            raise ValueError(f"frame of {size} bytes is too large")
        if len(buf) < _HEADER.size + size:
            break
        out.append(pickle.loads(bytes(buf[_HEADER.size:_HEADER.size + size])))
        del buf[:_HEADER.size + size]
    return out


# =============================================================================================
# Parent side
# =============================================================================================


@dataclass(eq=False)
class _Pending:
    req_id: int
    future: asyncio.Future[Any]
    message: tuple
    timeout: float
    deadline: float = 0.0
    timer: asyncio.TimerHandle | None = None


@dataclass(eq=False)
class _Worker:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    sock: socket.socket | None = None
    rbuf: bytearray = field(default_factory=bytearray)
    wbuf: bytearray = field(default_factory=bytearray)
    out: list[tuple] = field(default_factory=list)
    inflight: dict[int, _Pending] = field(default_factory=dict)
    queue: deque[_Pending] = field(default_factory=deque)
    flush_scheduled: bool = False
    writing: bool = False
    started: bool = False        # said hello: requests are handed over only then
    start_timer: asyncio.TimerHandle | None = None
    restarts: int = 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


def _kill(proc: subprocess.Popen[bytes] | None, *, grace: float = 0.0) -> None:
    """Stop one worker by its PID: SIGTERM (if ``grace``), then SIGKILL; always reaped."""
    if proc is None or proc.poll() is not None:
        return
    if grace > 0:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def _kill_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        _kill(proc)


class IpmiPool:
    """Worker processes for IPMI, each owning a shard of the BMCs. See the module docstring."""

    def __init__(self, *, workers: int | None = None, max_inflight: int = 128, session_idle_s: float = 300.0,
                 keepalive_s: float = KEEPALIVE_S, watchdog_margin_s: float = 2.0, max_sessions: int = 8192,
                 test_ops: bool = False) -> None:
        self.size = workers or default_workers()
        if self.size < 1 or max_inflight < 1:
            raise ValueError("workers and max_inflight must be at least 1")
        self.max_inflight = max_inflight
        self.watchdog_margin_s = watchdog_margin_s
        self.start_timeout_s = 30.0
        self._config = {"session_idle_s": session_idle_s, "keepalive_s": keepalive_s, "max_sessions": max_sessions,
                        "test_ops": test_ops}
        self._workers = [_Worker(i) for i in range(self.size)]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ids = itertools.count(1)
        self._shards: dict[tuple[str, int], int] = {}
        self._closed = False
        self.restarts = 0
        self.wedged = 0
        # If nobody closes the pool, still stop its workers at interpreter exit (by PID).
        self._procs: list[subprocess.Popen[bytes]] = []
        self._finalizer = weakref.finalize(self, _kill_all, self._procs)  # also runs at interpreter exit

    # -- sharding ---------------------------------------------------------------------------------

    def shard_of(self, host: str, port: int) -> int:
        """The worker owning ``host:port``: rendezvous (highest-random-weight) hashing."""
        key = (host, port)
        shard = self._shards.get(key)
        if shard is None:
            name = f"{host}:{port}".encode()
            shard = max(range(self.size),
                        key=lambda i: hashlib.blake2b(name, digest_size=8, salt=str(i).encode()).digest())
            if len(self._shards) > 200_000:
                self._shards.clear()
            self._shards[key] = shard
        return shard

    # -- calls ------------------------------------------------------------------------------------

    async def call(self, op: str, args: tuple, *, host: str, port: int, username: bytes, password: bytes,
                   cipher_suites: tuple[int, ...], timeout: float, options: dict[str, Any]) -> Any:
        """Run ``op`` on the BMC at ``host:port``; its result, or :class:`OpError`."""
        if self._closed:
            raise OpError("fatal", "the IPMI driver is closed")
        loop = asyncio.get_running_loop()
        self._bind(loop)
        worker = self._workers[self.shard_of(host, port)]
        req_id = next(self._ids)
        message = ("run", req_id, op, args, (host, port, username, password, cipher_suites), options)
        pending = _Pending(req_id, loop.create_future(), message, float(timeout))
        worker.queue.append(pending)
        self._send_more(worker)
        return await pending.future

    async def start(self) -> None:
        """Start every worker now and wait until each has said hello (else they start on first use)."""
        if self._closed:
            raise OpError("fatal", "the IPMI driver is closed")
        self._bind(asyncio.get_running_loop())
        for w in self._workers:
            if w.sock is None:
                self._start(w)
        deadline = time.monotonic() + self.start_timeout_s
        while not all(w.started for w in self._workers):
            if time.monotonic() > deadline:
                raise OpError("fatal", f"IPMI workers did not start within {self.start_timeout_s:g} s")
            await asyncio.sleep(0.01)

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is loop:
            return
        if self._loop is not None:
            # A new event loop (e.g. a second asyncio.run): the old loop's futures are gone.
            for w in self._workers:
                if w.sock is not None and not self._loop.is_closed():
                    with contextlib.suppress(Exception):
                        self._loop.remove_reader(w.sock.fileno())
                        self._loop.remove_writer(w.sock.fileno())
                w.inflight.clear()
                w.queue.clear()
                w.out.clear()
                w.flush_scheduled = w.writing = False
        self._loop = loop
        for w in self._workers:
            if w.sock is not None:
                loop.add_reader(w.sock.fileno(), self._on_readable, w)
                if w.wbuf:
                    self._write(w)

    def _start(self, w: _Worker) -> None:
        assert self._loop is not None
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        config = dict(self._config, index=w.index)
        try:
            w.proc = subprocess.Popen(
                [sys.executable, "-m", "fleet.drivers.ipmi_pool", "--fd", str(child.fileno()),
                 "--config", json.dumps(config)],
                pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL, env=env, close_fds=True,
            )
        finally:
            child.close()
        self._procs.append(w.proc)
        parent.setblocking(False)
        w.sock = parent
        w.started = False
        w.rbuf.clear()
        w.wbuf.clear()
        self._loop.add_reader(parent.fileno(), self._on_readable, w)
        w.start_timer = self._loop.call_later(self.start_timeout_s, self._start_overdue, w, w.proc)

    def _start_overdue(self, w: _Worker, proc: subprocess.Popen[bytes] | None) -> None:
        if w.proc is proc and not w.started:
            self._lost(w, f"did not start within {self.start_timeout_s:g} s", fail_queued=True)

    def _send_more(self, w: _Worker) -> None:
        """Hand queued requests to the worker, up to ``max_inflight``; their deadlines start now."""
        if not w.queue or len(w.inflight) >= self.max_inflight:
            return
        loop = self._loop
        assert loop is not None
        if w.sock is None:
            self._start(w)
        if not w.started:
            return  # sent when the worker says hello, so that start-up does not eat deadlines
        now = loop.time()  # time.monotonic(), the clock the worker uses too
        while w.queue and len(w.inflight) < self.max_inflight:
            p = w.queue.popleft()
            if p.future.done():
                continue
            p.deadline = now + p.timeout
            w.out.append((*p.message, p.deadline, p.timeout))
            w.inflight[p.req_id] = p
            p.timer = loop.call_at(p.deadline + self.watchdog_margin_s, self._overdue, w, p.req_id)
        if w.out and not w.flush_scheduled:
            w.flush_scheduled = True
            loop.call_soon(self._flush, w)

    def _flush(self, w: _Worker) -> None:
        w.flush_scheduled = False
        if not w.out or w.sock is None:
            return
        w.wbuf += _frame(w.out)
        w.out = []
        self._write(w)

    def _write(self, w: _Worker) -> None:
        assert w.sock is not None and self._loop is not None
        try:
            sent = w.sock.send(w.wbuf)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._lost(w, f"its socket failed ({exc.__class__.__name__})")
            return
        del w.wbuf[:sent]
        if w.wbuf and not w.writing:
            w.writing = True
            self._loop.add_writer(w.sock.fileno(), self._on_writable, w)
        elif not w.wbuf and w.writing:
            w.writing = False
            self._loop.remove_writer(w.sock.fileno())

    def _on_writable(self, w: _Worker) -> None:
        if w.sock is not None:
            self._write(w)

    def _on_readable(self, w: _Worker) -> None:
        if w.sock is None:
            return
        try:
            data = w.sock.recv(1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            code = None
            if w.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    code = w.proc.wait(timeout=0.2)  # the socket closes a moment before the exit is seen
            self._lost(w, f"exited (code {code})" if code is not None else "closed its socket")
            return
        w.rbuf += data
        try:
            frames = _unframe(w.rbuf)
        except Exception as exc:
            self._lost(w, f"sent a malformed frame ({exc.__class__.__name__})")
            return
        for frame in frames:
            for msg in frame:
                self._answer(w, msg)
        self._send_more(w)

    def _answer(self, w: _Worker, msg: tuple) -> None:
        kind, req_id, payload = msg
        if kind == "hello":
            w.started = True
            if w.start_timer is not None:
                w.start_timer.cancel()
            return
        p = w.inflight.pop(req_id, None)
        if p is None:
            return
        if p.timer is not None:
            p.timer.cancel()
        if p.future.done():
            return
        if kind == "done":
            p.future.set_result(payload)
        else:
            p.future.set_exception(payload if isinstance(payload, OpError)
                                   else OpError("fatal", f"worker error: {payload}"))

    def _overdue(self, w: _Worker, req_id: int) -> None:
        """A request is past its deadline plus the margin: the worker did not keep time, so it is wedged."""
        if req_id not in w.inflight:
            return
        self.wedged += 1
        self._lost(w, "did not answer within the deadline and was killed")

    def _lost(self, w: _Worker, why: str, *, fail_queued: bool = False) -> None:
        """Kill (by PID) and forget a worker; fail what it held; start a new one for what is queued."""
        pid = w.pid
        w.started = False
        if w.start_timer is not None:
            w.start_timer.cancel()
        if w.sock is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(w.sock.fileno())
                if w.writing:
                    self._loop.remove_writer(w.sock.fileno())
            w.sock.close()
        _kill(w.proc)
        if w.proc in self._procs:
            self._procs.remove(w.proc)
        w.proc, w.sock = None, None
        w.writing = w.flush_scheduled = False
        w.wbuf.clear()
        w.out.clear()
        failed, w.inflight = w.inflight, {}
        if fail_queued:
            failed.update((p.req_id, p) for p in w.queue)
            w.queue.clear()
        for p in failed.values():
            if p.timer is not None:
                p.timer.cancel()
            if not p.future.done():
                p.future.set_exception(OpError("timeout", f"no answer within {p.timeout:g} s: IPMI worker "
                                                          f"{w.index} (pid {pid}) {why}"))
        if self._closed:
            return
        w.restarts += 1
        self.restarts += 1
        log.warning("IPMI worker %d (pid %s) %s; %d request(s) failed, starting a new one",
                    w.index, pid, why, len(failed))
        if w.queue:
            self._send_more(w)

    # -- state and shutdown -------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return {
            "workers": [{"index": w.index, "pid": w.pid, "inflight": len(w.inflight), "queued": len(w.queue),
                         "restarts": w.restarts} for w in self._workers],
            "restarts": self.restarts,
            "wedged": self.wedged,
        }

    def pids(self) -> list[int]:
        return [w.pid for w in self._workers if w.pid is not None]

    def _shutdown_begin(self) -> list[_Worker]:
        self._closed = True
        live = []
        for w in self._workers:
            for p in list(w.inflight.values()) + list(w.queue):
                if p.timer is not None:
                    p.timer.cancel()
                if not p.future.done() and not p.future.get_loop().is_closed():
                    p.future.set_exception(OpError("fatal", "the IPMI driver was closed"))
            w.inflight.clear()
            w.queue.clear()
            if w.sock is None:
                continue
            if self._loop is not None and not self._loop.is_closed():
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(w.sock.fileno())
                    if w.writing:
                        self._loop.remove_writer(w.sock.fileno())
            with contextlib.suppress(OSError):
                w.sock.setblocking(True)
                w.sock.settimeout(0.5)
                w.sock.sendall(_frame([("stop",)]))
            live.append(w)
        return live

    def _shutdown_end(self, live: list[_Worker]) -> None:
        for w in live:
            _kill(w.proc)
            if w.sock is not None:
                w.sock.close()
            w.proc, w.sock = None, None
        self._procs.clear()

    def close(self) -> None:
        """Stop every worker: ask it to log out, give it a second, then SIGKILL by PID."""
        if self._closed and not self._procs:
            return
        live = self._shutdown_begin()
        deadline = time.monotonic() + 1.0
        for w in live:
            if w.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    w.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        self._shutdown_end(live)

    async def aclose(self) -> None:
        if self._closed and not self._procs:
            return
        live = self._shutdown_begin()
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and any(w.proc is not None and w.proc.poll() is None for w in live):
            await asyncio.sleep(0.02)
        self._shutdown_end(live)


# =============================================================================================
# Worker side
# =============================================================================================


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
        from .ipmi_ops import DROPS_SESSION, OPS, BmcState, Pause

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
                for frame in _unframe(buf):
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
        from .ipmi_ops import advance

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
        from .ipmi_ops import Response

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
            session.raw_command(netfn=6, command=1, callback=answered)
        except Exception:
            self._drop_session(bmc)

    def _flush(self) -> None:
        if not self.outbox:
            return
        frame = _frame(self.outbox)
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
    parser = argparse.ArgumentParser(prog="python -m fleet.drivers.ipmi_pool",
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
    sock.sendall(_frame([("hello", 0, os.getpid())]))
    threading.Thread(target=pump.reader, name="ipmi-reader", daemon=True).start()
    pump.run()
    return 0


if __name__ == "__main__":
    sys.exit(worker_main())
