"""The lab BMC server: one asyncio process answering IPMI 2.0 (RMCP+) for thousands of simulated BMCs.

Each BMC has its own UDP socket on a loopback address (``127.x.y.z:623`` as root, or any port the spec
gives), registered with the event loop's epoll selector through ``loop.add_reader``: no transport
objects, no per-BMC tasks or timers, so a BMC costs a few kilobytes. :class:`LabServer` owns the
sockets, the control socket and the lifecycle; it is a :class:`~fleet.lab.rmcpsession.SessionLayer`,
the RMCP+ session layer that turns each datagram into its answer; the BMC model and its commands are
:class:`fleet.lab.bmc.Bmc`.

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
import ipaddress
import json
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from fleet.errors import DeviceTimeout, DeviceUnreachable, FleetError, NeedsRoot, PortInUse, Unavailable
from fleet.lab._proc import cmdline_has, pid_alive, read_start_error, terminate, write_start_error

from .bmc import Bmc
from .bmcmodel import FAULT_KINDS, BootRequest
from .bmcspec import BmcSpec, SensorSet, parse_spec
from .rmcp import ProtocolError
from .rmcpsession import MAX_SESSIONS, Endpoint, SessionLayer

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

#: How often expired sessions are swept.
SWEEP_SECONDS = 2.0


class LabStartError(FleetError, RuntimeError):
    """The server cannot start: too few file descriptors, an address in use, a bad spec."""


class LabServer(SessionLayer):
    """Serves every BMC of a spec from one event loop; :meth:`run` until :meth:`request_stop`."""

    def __init__(self, specs: Sequence[BmcSpec], sensor_sets: Mapping[str, SensorSet],
                 state_dir: Path | None = None, *, max_sessions: int = MAX_SESSIONS,
                 redfish_port: int | None = None) -> None:
        self.specs = list(specs)
        self.redfish_port = redfish_port  # serve Redfish too (fleet.lab.redfish), for specs with a profile
        self.redfish: Any = None
        self.sensor_sets = sensor_sets
        self.state_dir = Path(state_dir) if state_dir is not None else None
        super().__init__(max_sessions=max_sessions)
        self.endpoints: list[Endpoint] = []
        self.by_key: dict[str, Endpoint] = {}
        self.started_at = 0.0
        self.startup_seconds = 0.0
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
        # One UDP socket per IPMI BMC, a listening socket per Redfish BMC, and (wanted, not needed) room
        # for a client's kept connection to each Redfish BMC.
        redfish = sum(1 for s in self.specs if s.redfish is not None) if self.redfish_port is not None else 0
        needed = sum(1 for s in self.specs if s.ipmi) + redfish + 64
        try:
            ensure_fd_limit(needed + redfish)
        except LabStartError:
            limit = ensure_fd_limit(needed)
            log.warning("RLIMIT_NOFILE is %d: fewer than one kept connection per Redfish BMC fits", limit)
        try:
            for spec in self.specs:
                self._bind(spec)
            if self.redfish_port is not None and self.state_dir is not None:
                from .redfish.lab import start_responder

                try:
                    self.redfish = await start_responder([ep.bmc for ep in self.endpoints], self.state_dir,
                                                         port=self.redfish_port, on_bmc_reset=self._bmc_reset)
                except (ValueError, TypeError) as exc:
                    raise LabStartError(f"Redfish: {exc}") from exc
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

    def _bmc_reset(self, bmc: Bmc) -> None:
        """A BMC was reset over Redfish: its IPMI sessions end too."""
        ep = self.find(bmc.spec.name)
        if ep is not None:
            ep.sessions = None
            self._live.discard(ep)

    def _bind(self, spec: BmcSpec) -> None:
        assert self._loop is not None
        if not spec.ipmi:  # a Redfish-only BMC: the model, no RMCP+ socket
            ep = Endpoint(Bmc(spec, self.sensor_sets[spec.sensors]), None)
            self.endpoints.append(ep)
            self.by_key[spec.name] = ep
            self.by_key.setdefault(spec.host, ep)
            return
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
        if self.redfish is not None:
            from .redfish.lab import stop_responder

            await stop_responder(self.redfish, self.state_dir)
            self.redfish = None
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
            if ep.sock is not None and ep.sock.fileno() >= 0:
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
        assert sock is not None  # only BMCs that speak IPMI have a reader
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
            except ProtocolError as exc:
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

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            self.sweep()

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
                    "uptime_seconds": round(time.time() - self.started_at, 1), **self.stats.as_dict(),
                    **({"redfish_requests": self.redfish.requests} if self.redfish is not None else {})}
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
    for name in (PID_FILE, READY_FILE, CONTROL_SOCKET, "redfish.json"):  # fleet.lab.redfish.lab.REDFISH_STATE
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


async def _serve(specs: list[BmcSpec], sets: dict[str, SensorSet], state_dir: Path, max_sessions: int,
                 redfish_port: int | None = None) -> None:
    server = LabServer(specs, sets, state_dir, max_sessions=max_sessions, redfish_port=redfish_port)
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
    parser.add_argument("--redfish-port", type=int, help="also serve Redfish (HTTPS) on this TCP port, for the BMCs "
                        "whose spec has a redfish profile (0: any free port; see redfish.json in the state dir)")
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
            asyncio.run(_serve(specs, sets, args.state_dir, args.max_sessions, args.redfish_port))
        except (LabStartError, Unavailable) as exc:
            write_start_error(args.state_dir / START_ERROR_FILE, exc)
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
