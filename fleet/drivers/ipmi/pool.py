"""The IPMI execution model, parent side: :class:`IpmiPool`, worker processes owning shards of BMCs.

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
- **Worker** — :class:`~fleet.drivers.ipmi.worker.Pump`, started as ``python -m
  fleet.drivers.ipmi.worker`` (a fresh interpreter, like multiprocessing's *spawn*, without
  re-importing the caller's ``__main__``): one pyghmi pump thread, see :mod:`fleet.drivers.ipmi.worker`.

The wire between them is :mod:`fleet.drivers.ipmi.wire`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .operation import OpError
from .wire import KEEPALIVE_S, pack_frame, unpack_frames

__all__ = ["IpmiPool", "default_workers"]

log = logging.getLogger(__name__)


def default_workers() -> int:
    """Two workers per CPU, between 2 and 8 (4 processes on 2 cores measured best, see docs/ipmi.md)."""
    return max(2, min(8, 2 * (os.cpu_count() or 1)))



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
        package_root = str(Path(__file__).resolve().parents[3])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        config = dict(self._config, index=w.index)
        try:
            w.proc = subprocess.Popen(
                [sys.executable, "-m", "fleet.drivers.ipmi.worker", "--fd", str(child.fileno()),
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
        w.wbuf += pack_frame(w.out)
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
            frames = unpack_frames(w.rbuf)
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
                w.sock.sendall(pack_frame([("stop",)]))
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

