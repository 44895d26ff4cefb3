"""Serve an installed tree: the real dnsmasq (DHCP + TFTP) and an aiohttp HTTP server.

:class:`PxeServer` runs both until stopped::

    async with PxeServer("/srv/pxe", interface="br0") as server:   # listens where manager_url says
        await server.wait()                                           # until stop() or dnsmasq exits

HTTP, read-only, on ``listen`` (default: the host and port of the tree's ``manager_url``):

- ``GET|HEAD /PATH``: the file ``ROOT/http/PATH`` (no directory listings; ``..``, backslashes, NULs
  and symlinks leading out of ``http/`` are refused with 404);
- ``GET|POST /cb/HOSTNAME/early|late?token=T``: an installer callback; 200 if it comes from the
  host's address in ``hosts.json`` with the host's unexpired, unspent token of this render (an
  accepted ``late`` spends it: :mod:`pxe.callbacks`), 403 if not (the log line says why), 404 for an
  unknown host or phase.

Every request, parseable or not, is appended to ``ROOT/var/http.jsonl`` as one bounded JSON object:
``ts`` (ISO 8601, UTC), ``client``, ``method``, ``path``, ``status``, ``bytes``; callbacks add
``host``, ``phase``, ``ok`` and, when refused, ``reason``; a request the parser refused (or a
connection closed with half a request, at the latest after ``read_timeout``) has ``method``/``path``
null and a ``bad_request`` reason (:mod:`pxe.access`). Nothing is written to stderr for a bad
request. :mod:`pxe.evidence` reads it back.

dnsmasq runs as ``dnsmasq --keep-in-foreground --conf-file=ROOT/dnsmasq.conf`` and is stopped by
its PID (SIGTERM, then SIGKILL). It needs root (or CAP_NET_ADMIN/NET_BIND_SERVICE/NET_RAW) for DHCP;
it drops to its own user (``user=`` in the tree, or ``dnsmasq_user`` here), which must be able to
read ``ROOT/tftp``. :func:`check_config` runs ``dnsmasq --test`` on a config file.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

from aiohttp import web

from .access import NOTE, AccessLog, HttpServer
from .callbacks import CallbackGate
from .errors import ServeError
from .evidence import DNSMASQ_LOG, HTTP_LOG, HostIndex

__all__ = ["DEFAULT_DNSMASQ", "PxeServer", "check_config", "check_privileges", "dnsmasq_command", "make_server"]

DEFAULT_DNSMASQ = "/usr/sbin/dnsmasq"
log = logging.getLogger(__name__)
_CB_PATH = re.compile(r"^/cb/(?P<host>[a-z0-9.-]{1,253})/(?P<phase>[a-z]{1,16})/?$")
#: How long a connection may take to send a request head (or stay idle between requests), in seconds.
READ_TIMEOUT_S = 10.0


def find_dnsmasq() -> str | None:
    """dnsmasq's path: /usr/sbin/dnsmasq, else on PATH."""
    if os.access(DEFAULT_DNSMASQ, os.X_OK):
        return DEFAULT_DNSMASQ
    return shutil.which("dnsmasq")


def check_config(conf: str | Path, *, dnsmasq: str | None = None) -> str:
    """``dnsmasq --test -C CONF``: returns dnsmasq's message, raises :class:`ServeError` if it refuses."""
    exe = dnsmasq or find_dnsmasq()
    if exe is None:
        raise ServeError("dnsmasq is not installed (apt-get install dnsmasq-base)")
    proc = subprocess.run([exe, "--test", f"--conf-file={conf}"], capture_output=True, text=True, timeout=30)
    message = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        raise ServeError(f"dnsmasq refuses {conf}: {message}")
    return message


def _conf_interfaces(conf: Path) -> list[str]:  # every interface= line (there may be several)
    found = []
    for line in conf.read_text().splitlines():
        key, _, value = line.strip().partition("=")
        if key == "interface":
            found.append(value.strip())
    return found


def _conf_value(conf: Path, key: str) -> str | None:
    for line in conf.read_text().splitlines():
        k, sep, value = line.strip().partition("=")
        if k == key and sep:
            return value.strip()
    return None


def unreadable_for_others(path: Path) -> Path | None:
    """The first directory from ``/`` down to ``path`` that other users cannot enter (no o+x), or None."""
    current = Path("/")
    for part in path.resolve().parts[1:]:
        current = current / part
        try:
            mode = current.stat().st_mode
        except OSError:
            return current
        if current.is_dir() and not mode & 0o001:
            return current
    return None


def check_privileges(root: str | Path, user: str | None = None) -> None:
    """Refuse to start a dnsmasq that will drop privileges and then fail to read its TFTP root.

    Run as root, dnsmasq switches to ``user=`` (the tree's, else ``user``, else its default, nobody):
    every directory down to ``ROOT/tftp`` must then let others in (pytest's and mktemp's 0700
    directories do not)."""
    if os.geteuid() != 0:
        return
    conf = Path(root) / "dnsmasq.conf"
    effective = user or _conf_value(conf, "user")
    if effective == "root":
        return
    blocked = unreadable_for_others(Path(root) / "tftp")
    if blocked is not None:
        raise ServeError(f"dnsmasq drops to user {effective or 'nobody'}, which cannot enter {blocked} (no o+x), so "
                         "TFTP would fail: move the tree, chmod o+x that directory, or run dnsmasq as root "
                         "(--dnsmasq-user root)")


def dnsmasq_command(root: str | Path, *, interface: str | None = None, dnsmasq: str | None = None,
                    user: str | None = None, extra: Sequence[str] = ()) -> list[str]:
    """The dnsmasq command line for a tree. ``interface`` is required unless dnsmasq.conf names one
    (and must agree with it): dnsmasq never answers DHCP on every interface of the manager."""
    conf = Path(root) / "dnsmasq.conf"
    if not conf.is_file():
        raise ServeError(f"{conf} does not exist: render the tree first (fleet pxe render)")
    exe = dnsmasq or find_dnsmasq()
    if exe is None:
        raise ServeError("dnsmasq is not installed (apt-get install dnsmasq-base)")
    named = _conf_interfaces(conf)
    cmd = [exe, "--keep-in-foreground", f"--conf-file={conf}"]
    if interface:
        if named and interface not in named:
            raise ServeError(f"{conf} serves interface {', '.join(named)}, not {interface}: re-render with "
                             f"--interface {interface}, or leave --interface out")
        if not named:
            cmd.append(f"--interface={interface}")
    elif not named:
        raise ServeError(f"{conf} names no interface: give one (--interface IF), so that dnsmasq does not "
                         "answer DHCP on every interface")
    if user:
        cmd.append(f"--user={user}")
    cmd.extend(extra)
    return cmd


class _AppState:
    def __init__(self, root: Path, log: IO[str] | None) -> None:
        self.root = root
        self.log = log
        self.gate = CallbackGate(root)
        self._index: HostIndex | None = None
        self._index_key: tuple[int, int] | None = None

    @property
    def index(self) -> HostIndex:
        """hosts.json, reloaded when a new tree is installed."""
        path = self.root / "hosts.json"
        try:
            st = path.stat()
            key = (st.st_ino, st.st_mtime_ns)
        except FileNotFoundError:
            key = (0, 0)
        if self._index is None or key != self._index_key:
            self._index = HostIndex.load(self.root)
            self._index_key = key
        return self._index


async def _callback(state: _AppState, request: web.BaseRequest, host: str, phase: str) -> web.Response:
    verdict = state.gate.check(state.index, host, phase, request.query.get("token", ""), request.remote)
    request[NOTE] = {"host": host, "phase": phase, "ok": verdict.ok}
    if verdict.reason:
        request[NOTE]["reason"] = verdict.reason
    if verdict.status == 404:
        return web.Response(status=404, text="unknown host or phase\n")
    if not verdict.ok:
        return web.Response(status=403, text="refused\n")
    return web.Response(text="ok\n")


async def _handle(state: _AppState, request: web.BaseRequest) -> web.StreamResponse:
    path = request.path
    if (m := _CB_PATH.match(path)) is not None:
        if request.method not in ("GET", "POST"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "POST"])
        return await _callback(state, request, m.group("host"), m.group("phase"))
    if request.method not in ("GET", "HEAD"):
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
    parts = path.split("/")[1:]
    if not parts or any(p in ("", ".", "..") or "\\" in p or "\x00" in p for p in parts):
        raise web.HTTPNotFound()
    base = os.path.realpath(state.root / "http")
    target = os.path.realpath(os.path.join(base, *parts))
    if not target.startswith(base + os.sep) or not os.path.isfile(target):
        raise web.HTTPNotFound()
    return web.FileResponse(target, headers={"Cache-Control": "no-store"})


def make_server(root: str | Path, *, access_log: IO[str] | None = None, read_timeout: float = READ_TIMEOUT_S
                ) -> HttpServer:
    """The HTTP server for a tree (files under ``http/`` and callbacks); ``access_log`` gets one JSON line
    per request (:mod:`pxe.access`). Call it with a running event loop."""
    state = _AppState(Path(root), access_log)
    return HttpServer(functools.partial(_handle, state), AccessLog(access_log), read_timeout=read_timeout)


class PxeServer:
    """dnsmasq and the HTTP server for one installed tree. ``dnsmasq=False`` runs HTTP only (tests).

    ``listen`` is ``(host, port)``; by default the tree's manager URL's. Port 0 picks a free port
    (:attr:`port` tells which).

    A tree installed again while serving is picked up: the HTTP side reads files and ``hosts.json`` by
    path at each request, and dnsmasq, which reads its config only at start, is restarted (stopped by
    PID, started again) when ``dnsmasq.conf`` changed — checked every ``watch_interval`` seconds and by
    :meth:`reload`. An install that changed nothing keeps the same file, so nothing restarts.
    """

    def __init__(self, root: str | Path, *, interface: str | None = None, listen: tuple[str, int] | None = None,
                 dnsmasq: bool | str = True, dnsmasq_user: str | None = None,
                 dnsmasq_args: Sequence[str] = (), start_timeout: float = 10.0, watch_interval: float = 1.0,
                 read_timeout: float = READ_TIMEOUT_S) -> None:
        self.root = Path(root)
        self.interface = interface
        self.listen = listen or self._default_listen()
        self._dnsmasq = dnsmasq
        self._dnsmasq_user = dnsmasq_user
        self._dnsmasq_args = tuple(dnsmasq_args)
        self.start_timeout = start_timeout
        self.watch_interval = watch_interval
        self.read_timeout = read_timeout
        self.proc: asyncio.subprocess.Process | None = None
        #: How many times dnsmasq was restarted for a new dnsmasq.conf.
        self.restarts = 0
        self._runner: web.ServerRunner | None = None
        self._site: web.TCPSite | None = None
        self._log: IO[str] | None = None
        self._stderr: asyncio.Task[bytes] | None = None
        self._monitor: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._exited = asyncio.Event()
        self._exit_code: int | None = None
        self._conf_id: tuple[int, int] | None = None
        self.error: BaseException | None = None
        self.port: int | None = None

    def _default_listen(self) -> tuple[str, int]:
        try:
            doc = json.loads((self.root / "hosts.json").read_text())
            parts = urlsplit(doc["manager_url"])
            return parts.hostname or "0.0.0.0", parts.port or 80
        except (OSError, ValueError, KeyError) as exc:
            raise ServeError(f"{self.root}: not an installed tree ({exc}); render it first") from None

    @property
    def url(self) -> str:
        host = self.listen[0]
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def _conf_stamp(self) -> tuple[int, int] | None:
        try:
            st = (self.root / "dnsmasq.conf").stat()
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns

    async def start(self) -> None:
        """Start HTTP, then dnsmasq; returns once both are up (dnsmasq logged 'started')."""
        if not (self.root / "dnsmasq.conf").is_file():
            raise ServeError(f"{self.root} is not an installed tree (no dnsmasq.conf): render it first")
        (self.root / "var").mkdir(exist_ok=True)
        self._log = open(self.root / HTTP_LOG, "a", encoding="utf-8")  # noqa: SIM115 - closed in stop()
        try:
            await self._start_http()
            if self._dnsmasq:
                await self._start_dnsmasq()
                if self.watch_interval > 0:
                    self._watcher = asyncio.ensure_future(self._watch())
        except BaseException:
            await self.stop()
            raise

    async def _start_http(self) -> None:
        self._runner = web.ServerRunner(make_server(self.root, access_log=self._log, read_timeout=self.read_timeout),
                                        handle_signals=False)
        await self._runner.setup()
        host, port = self.listen
        self._site = web.TCPSite(self._runner, host, port, reuse_address=True)
        try:
            await self._site.start()
        except OSError as exc:
            raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        sockets = self._runner.addresses
        self.port = sockets[0][1] if sockets else port

    async def _start_dnsmasq(self) -> None:
        exe = self._dnsmasq if isinstance(self._dnsmasq, str) else None
        cmd = dnsmasq_command(self.root, interface=self.interface, dnsmasq=exe, user=self._dnsmasq_user,
                              extra=self._dnsmasq_args)
        check_privileges(self.root, self._dnsmasq_user)
        stamp = self._conf_stamp()
        log = self.root / DNSMASQ_LOG
        offset = log.stat().st_size if log.exists() else 0
        proc = await asyncio.create_subprocess_exec(*cmd, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.PIPE)
        self.proc = proc
        assert proc.stderr is not None
        self._stderr = asyncio.ensure_future(proc.stderr.read())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout
        while loop.time() < deadline:
            # dnsmasq may close its stderr once it logs to its file: only its exit is a failure.
            if proc.returncode is not None:
                code = await proc.wait()
                err = (await self._stderr).decode(errors="replace").strip()
                self.proc = None
                raise ServeError(f"dnsmasq exited at start (exit code {code}): {err or 'no message'}")
            if log.exists():
                with open(log, "rb") as fh:
                    fh.seek(offset)
                    if b"started, version" in fh.read():
                        self._conf_id = stamp
                        self._monitor = asyncio.ensure_future(self._watch_exit(proc))
                        return
            await asyncio.sleep(0.05)
        raise ServeError(f"dnsmasq did not report 'started' within {self.start_timeout:.0f} s (log: {log})")

    async def _watch_exit(self, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        if proc is self.proc:  # not stopped by us: dnsmasq died
            self.proc = None
            self._exit_code = code
            self._exited.set()

    async def _stop_dnsmasq(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                await proc.wait()
        for task in (self._stderr, self._monitor):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        self._stderr = self._monitor = None

    async def reload(self) -> bool:
        """Restart dnsmasq if ``dnsmasq.conf`` changed since it started; True if it was restarted."""
        if not self._dnsmasq or self.proc is None:
            return False
        stamp = self._conf_stamp()
        if stamp is None or stamp == self._conf_id:
            return False
        log.info("%s/dnsmasq.conf changed: restarting dnsmasq (PID %s)", self.root, self.pid)
        await self._stop_dnsmasq()
        await self._start_dnsmasq()
        self.restarts += 1
        return True

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.watch_interval)
            try:
                await self.reload()
            except (ServeError, OSError) as exc:
                log.error("restarting dnsmasq failed: %s", exc)
                self.error = exc
                self._exit_code = -1
                self._exited.set()
                return

    async def wait(self) -> int | None:
        """Wait until dnsmasq dies (or forever with HTTP only; cancel to stop). Returns its exit code
        (-1 when a restart for a new config failed: :attr:`error` says why)."""
        if not self._dnsmasq:
            await asyncio.Event().wait()
            return None
        await self._exited.wait()
        return self._exit_code

    async def stop(self) -> None:
        """Stop dnsmasq (by its PID: SIGTERM, SIGKILL after 5 s) and the HTTP server. Safe to call twice."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(BaseException):
                await self._watcher
            self._watcher = None
        await self._stop_dnsmasq()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._log is not None:
            self._log.close()
            self._log = None

    async def __aenter__(self) -> PxeServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
