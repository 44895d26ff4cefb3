"""The lab's per-server UPSes: one NUT ``upsd`` serving N ``dummy-ups`` UPSes on loopback, or, where NUT
is not installed, the lab's own stand-in (:mod:`fleet.lab.nutserve`) serving the same files.

Which one runs: ``FLEET_LAB_NUT`` = ``auto`` (default: upsd when both ``upsd`` and ``dummy-ups`` are found
by :func:`fleet.lab.programs.find_program`, in NUT's libexec folders or on PATH; else the stand-in),
``upsd`` (NUT's, or :class:`~fleet.errors.MissingDependency`) or ``builtin``. ``nutlab.json`` records it
(``server``), ``fleet lab status`` shows it, and either is stopped by its PID.

NUT runs one driver process per UPS; here each is ``dummy-ups`` reading its own ``.dev`` file of
``var: value`` lines (``mode = dummy-once``: the file is played once, ``TIMER n`` lines included, and played
again whenever its modification time changes). One ``upsd`` serves them all on
``127.0.0.1:PORT``. Everything lives under ``DIR`` (``conf/``, ``state/``, ``log/``, ``nutlab.json``);
processes run in their own sessions, so they outlive the caller, and are stopped by the PIDs recorded
in ``nutlab.json`` (each checked to still be our process first), never by name.

API (for ``fleet lab start`` and tests)::

    lab = start_nut_lab(DIR, ["web01", "web02"])     # or a count: 3 -> servers srv001...
    lab.host, lab.port                                # where upsd listens (127.0.0.1, a free port)
    lab.ups[0]                                        # NutLabUps(name='ups-web01', nut_name='web01', ...)
    lab.inventory_ups("web01")                        # the server's `ups:` mapping for inventory.yaml
    lab.credentials()                                 # [{'name': 'lab-nut', 'kind': 'nut', ...}] (secrets.yaml)
    nut_fault(DIR, "web01", "on-battery")             # normal | on-battery | low-battery | replace-battery
    nut_memory(DIR)                                   # resident memory of upsd and of each dummy-ups (KiB)
    load_nut_lab(DIR); nut_lab_running(DIR); stop_nut_lab(DIR)

Faults (what ``upsc`` then shows):

- ``normal``: ``OL``, charge 100 %, runtime 1800 s;
- ``on-battery``: ``OB DISCHRG``, charge and runtime falling step by step (a ``TIMER`` sequence, about
  every :data:`STEP_S` seconds) from 95 % / 1,500 s down to 40 % / 600 s, where they stay;
- ``low-battery``: ``OB DISCHRG LB``, 8 %, 90 s;
- ``replace-battery``: ``OL CHRG RB``, 100 %, runtime 300 s (a worn battery).

dummy-ups notices a rewritten file within its poll interval (1 s here). Users in ``upsd.users``: the
lab user (``actions = SET``, ``instcmds = ALL``: the credential in the inventory) and a read-only
``monitor``. The UPSes use the ``nut-dummy`` hardware profile. dummy-ups lists ``load.off`` but does not
implement it (tests change the output with SET VAR ``ups.status``), and serves only the .dev file's variables.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import resource
import secrets as pysecrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fleet.errors import FleetError, InputError, MissingDependency, NotFound, PortInUse
from fleet.lab._proc import environ_has, pid_alive, terminate
from fleet.lab.programs import find_program, nut_dirs

__all__ = [
    "FAULTS",
    "PROFILE",
    "NutLab",
    "NutLabError",
    "NutLabUps",
    "fault_variables",
    "load_nut_lab",
    "nut_fault",
    "nut_lab_running",
    "nut_memory",
    "nut_server_mode",
    "start_nut_lab",
    "stop_nut_lab",
]

#: ``FLEET_LAB_NUT`` values: what serves the lab's per-server UPSes.
MODES = ("auto", "upsd", "builtin")
NUT_REMEDY = "install NUT (Debian: apt install nut-server), or set FLEET_LAB_NUT=builtin"
LAB_FILE = "nutlab.json"
PROFILE = "nut-dummy"
CREDENTIAL = "lab-nut"
LAB_USER = "fleet"
MONITOR_USER = "monitor"
FAULTS = ("normal", "on-battery", "low-battery", "replace-battery")
#: Seconds between the steps of a falling on-battery sequence (dummy-ups rounds TIMERs to its poll loop).
STEP_S = 2
_NAME_RE = re.compile(r"[^A-Za-z0-9_-]+")


class NutLabError(FleetError, RuntimeError):
    """The NUT lab could not start (a process exited, upsd did not serve every UPS in time)."""


@dataclass(frozen=True)
class NutLabUps:
    """One per-server UPS: ``name`` in the inventory, ``nut_name`` on upsd, the server it feeds."""

    name: str
    nut_name: str
    server: str
    host: str
    port: int
    profile: str = PROFILE
    credential: str = CREDENTIAL


@dataclass(frozen=True)
class NutLab:
    """A running NUT lab: where upsd listens, its PIDs, its UPSes and its users."""

    directory: Path
    host: str
    port: int
    upsd_pid: int
    driver_pids: Mapping[str, int]
    ups: tuple[NutLabUps, ...]
    user: str
    password: str
    monitor_password: str
    server: str = "upsd"  # "upsd" (NUT's upsd + dummy-ups) or "builtin" (fleet.lab.nutserve)

    def find(self, ups: str) -> NutLabUps:
        """The UPS called ``ups`` (inventory name, NUT name, or the server it feeds)."""
        for u in self.ups:
            if ups in (u.name, u.nut_name, u.server):
                return u
        raise NotFound(f"the NUT lab in {self.directory} has no UPS {ups!r}")

    def inventory_ups(self, server: str) -> dict[str, Any]:
        """The ``ups:`` mapping of a server in inventory.yaml (a per-server UPS defined in place)."""
        u = self.find(server)
        return {"name": u.name, "profile": u.profile, "protocol": "nut", "host": u.host, "port": u.port,
                "nut_name": u.nut_name, "credential": u.credential, "kind": "server"}

    def credentials(self) -> list[dict[str, str]]:
        """The lab's NUT credential, as secrets.yaml holds credentials."""
        return [{"name": CREDENTIAL, "kind": "nut", "username": self.user, "secret": self.password}]

    def to_json(self) -> dict[str, Any]:
        return {"directory": str(self.directory), "host": self.host, "port": self.port, "upsd_pid": self.upsd_pid,
                "driver_pids": dict(self.driver_pids), "ups": [asdict(u) for u in self.ups], "user": self.user,
                "password": self.password, "monitor_password": self.monitor_password, "server": self.server}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NutLab:
        return cls(Path(data["directory"]), data["host"], int(data["port"]), int(data["upsd_pid"]),
                   {k: int(v) for k, v in data["driver_pids"].items()},
                   tuple(NutLabUps(**u) for u in data["ups"]), data["user"], data["password"],
                   data["monitor_password"], data.get("server", "upsd"))


# ---------------------------------------------------------------------------------------------
# Faults as .dev files
# ---------------------------------------------------------------------------------------------

_IDENTITY = {"ups.mfr": "Rackfleet Lab", "ups.model": "Dummy UPS 1500", "ups.realpower.nominal": "900",
             "battery.date": "2024/01/15", "battery.mfr.date": "2023/11/02", "battery.type": "PbAc"}


def fault_variables(fault: str, index: int = 0) -> list[dict[str, str]]:
    """The steps of a fault: each a set of variables; dummy-ups waits :data:`STEP_S` seconds between steps.

    ``index`` varies the load a little between UPSes, so that readings can be told apart.
    """
    if fault not in FAULTS:
        raise InputError(f"unknown UPS fault {fault!r}; faults are: {', '.join(FAULTS)}")
    load = str(20 + index % 30)
    base = {**_IDENTITY, "ups.load": load, "input.voltage": "230.1", "battery.temperature": "25.5",
            "battery.charge.low": "10", "battery.runtime.low": "120"}
    if fault == "normal":
        return [{**base, "ups.status": "OL", "battery.charge": "100", "battery.runtime": "1800"}]
    if fault == "low-battery":
        return [{**base, "ups.status": "OB DISCHRG LB", "battery.charge": "8", "battery.runtime": "90",
                 "input.voltage": "0.0"}]
    if fault == "replace-battery":
        return [{**base, "ups.status": "OL CHRG RB", "battery.charge": "100", "battery.runtime": "300",
                 "battery.temperature": "38.0"}]
    steps = [{**base, "ups.status": "OB DISCHRG", "input.voltage": "0.0", "battery.charge": "95",
              "battery.runtime": "1500"}]
    for charge, runtime in ((85, 1320), (75, 1140), (65, 960), (55, 840), (48, 720), (40, 600)):
        steps.append({"battery.charge": str(charge), "battery.runtime": str(runtime)})
    return steps


def _dev_text(steps: Sequence[Mapping[str, str]]) -> str:
    lines = ["# written by fleet.lab.nutlab"]
    for i, step in enumerate(steps):
        if i:
            lines.append(f"TIMER {STEP_S}")
        lines += [f"{k}: {v}" for k, v in step.items()]
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, mode)
    old = path.stat().st_mtime if path.exists() else None
    tmp.replace(path)
    if old is not None and int(path.stat().st_mtime) <= int(old):
        os.utime(path, (old + 1, old + 1))  # dummy-ups compares whole seconds: make the change visible


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------


def nut_server_mode(mode: str | None = None) -> tuple[str, dict[str, str]]:
    """What serves the UPSes, ``"upsd"`` or ``"builtin"``, and NUT's programs (name -> path) for upsd.

    ``mode``: ``auto``, ``upsd`` or ``builtin`` (default ``$FLEET_LAB_NUT``, else ``auto``). ``upsd``
    without NUT's ``upsd`` and ``dummy-ups`` is :class:`~fleet.errors.MissingDependency`.
    """
    mode = (mode or os.environ.get("FLEET_LAB_NUT") or "auto").strip().lower()
    if mode not in MODES:
        raise InputError(f"FLEET_LAB_NUT must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "builtin":
        return "builtin", {}
    programs = {name: find_program(name, extra_dirs=nut_dirs()) for name in ("upsd", "dummy-ups")}
    missing = [name for name, path in programs.items() if path is None]
    if not missing:
        return "upsd", {k: v for k, v in programs.items() if v}
    if mode == "upsd":
        where = " or ".join(["PATH", *nut_dirs()])
        raise MissingDependency(f"NUT's {' and '.join(missing)} not found (looked in {where})", remedy=NUT_REMEDY)
    return "builtin", {}


def _check_port(host: str, port: int) -> None:
    """:class:`~fleet.errors.PortInUse` if ``host:port`` cannot be listened on."""
    import errno

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(f"the lab's NUT port {host}:{port} is in use",
                                remedy="stop what listens there or choose another port") from None
            raise


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _state_path(root: Path) -> Path:
    """Where the drivers' sockets go. A socket path (``STATEPATH/dummy-ups-NAME``) must fit in
    sockaddr_un (108 bytes), so a deep lab directory keeps its state in a short directory under the
    system's temp dir instead (named after the lab directory; ``DIR/state`` links to it)."""
    state = root / "state"
    if len(str(state)) <= 64:
        return state
    digest = hashlib.sha1(str(root).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"rackfleet-nut-{digest}"


def _env(root: Path) -> dict[str, str]:
    return {**os.environ, "NUT_CONFPATH": str(root / "conf"), "NUT_STATEPATH": str(_state_path(root))}


def _spawn(root: Path, argv: list[str], log: str) -> subprocess.Popen[bytes]:
    with open(root / "log" / log, "ab") as out:
        return subprocess.Popen(argv, env=_env(root), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                cwd=root, start_new_session=True)


def _ours(pid: int, root: Path) -> bool:
    """Whether ``pid`` is a NUT process of this lab (its environment names our conf folder)."""
    return environ_has(pid, f"NUT_CONFPATH={root / 'conf'}".encode())


def _stop_pid(pid: int, root: Path, timeout: float = 5.0) -> bool:
    return terminate(pid, lambda p: _ours(p, root), timeout=timeout, poll=0.02)


def _ask(host: str, port: int, line: str) -> str:
    with socket.create_connection((host, port), timeout=2) as s:
        s.sendall(line.encode() + b"\n")
        return s.makefile().readline().strip()


def _nut_names(servers: Sequence[str]) -> list[str]:
    names = []
    for server in servers:
        name = _NAME_RE.sub("-", server.split(".")[0]).strip("-") or "ups"
        if name in names:
            name = _NAME_RE.sub("-", server).strip("-")
        if name in names:
            raise InputError(f"two servers give the UPS name {name!r}")
        names.append(name)
    return names


def start_nut_lab(directory: str | os.PathLike[str], servers: Sequence[str] | int, *, host: str = "127.0.0.1",
                  port: int | None = None, password: str | None = None, timeout: float = 120.0,
                  mode: str | None = None) -> NutLab:
    """Start upsd and one dummy-ups per server (state ``normal``), or the lab's stand-in serving the same
    files (``mode``, see :func:`nut_server_mode`); write ``DIR/nutlab.json``.

    ``servers``: the hostnames the UPSes feed, or a count (servers ``srv001``...). Raises
    :class:`~fleet.errors.MissingDependency` if ``mode`` is ``upsd`` and NUT is missing,
    :class:`~fleet.errors.PortInUse` if ``port`` is taken, :class:`NutLabError` (after stopping what it
    started) if a process exits or the UPSes are not all served within ``timeout`` seconds.
    """
    if not host.startswith("127."):
        raise InputError(f"the NUT lab listens on loopback only, not {host}")
    if isinstance(servers, int):
        servers = [f"srv{i + 1:03d}" for i in range(servers)]
    if not servers:
        raise InputError("a NUT lab needs at least one UPS")
    server, programs = nut_server_mode(mode)
    root = Path(directory).resolve()
    if nut_lab_running(root):
        raise NutLabError(f"a NUT lab already runs in {root}: stop it first")
    for sub in ("conf", "log"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    state = _state_path(root)
    state.mkdir(parents=True, exist_ok=True)
    os.chmod(state, 0o770)
    if state != root / "state" and not (root / "state").exists():
        (root / "state").symlink_to(state)
    if port:
        _check_port(host, port)
    port = port or _free_port(host)
    password = password or pysecrets.token_urlsafe(12)
    monitor_password = pysecrets.token_urlsafe(12)
    names = _nut_names(servers)
    ups = tuple(NutLabUps(f"ups-{n}", n, s, host, port) for n, s in zip(names, servers, strict=True))

    conf = root / "conf"
    sections = []
    for i, u in enumerate(ups):
        _write(conf / f"{u.nut_name}.dev", _dev_text(fault_variables("normal", i)))
        sections.append(f'[{u.nut_name}]\n  driver = dummy-ups\n  port = {conf / u.nut_name}.dev\n'
                        f'  mode = dummy-once\n  desc = "UPS of {u.server}"\n')
    _write(conf / "nut.conf", "MODE=standalone\n", 0o600)
    _write(conf / "ups.conf", "pollinterval = 1\n\n" + "\n".join(sections), 0o600)
    _write(conf / "upsd.conf", f"LISTEN {host} {port}\nMAXAGE 15\nMAXCONN {max(1024, 4 * len(ups))}\n", 0o600)
    _write(conf / "upsd.users", f"[{LAB_USER}]\n  password = {password}\n  actions = SET\n  instcmds = ALL\n\n"
           f"[{MONITOR_USER}]\n  password = {monitor_password}\n  upsmon secondary\n", 0o600)

    _raise_fd_limit(len(ups) + 64)  # upsd holds one socket per driver
    drivers: dict[str, subprocess.Popen[bytes]] = {}
    upsd: subprocess.Popen[bytes] | None = None
    try:
        if server == "upsd":
            for u in ups:
                drivers[u.nut_name] = _spawn(root, [programs["dummy-ups"], "-a", u.nut_name, "-u", "root", "-F"],
                                             f"{u.nut_name}.log")
            upsd = _spawn(root, [programs["upsd"], "-F", "-u", "root"], "upsd.log")
        else:  # one Python process reading the same conf/ folder: no driver processes
            upsd = _spawn(root, [sys.executable, "-m", "fleet.lab.nutserve", str(conf)], "upsd.log")
        lab = NutLab(root, host, port, upsd.pid, {n: p.pid for n, p in drivers.items()}, ups, LAB_USER, password,
                     monitor_password, server)
        _write(root / LAB_FILE, json.dumps(lab.to_json(), indent=2), 0o600)  # holds the password
        _wait_ready(lab, upsd, drivers, time.monotonic() + timeout)
    except BaseException:
        for proc in [upsd, *drivers.values()]:
            if proc is not None:
                _stop_pid(proc.pid, root)
        (root / LAB_FILE).unlink(missing_ok=True)
        raise
    return lab


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard) if hard > 0 else needed, hard))


def _wait_ready(lab: NutLab, upsd: subprocess.Popen[bytes], drivers: Mapping[str, subprocess.Popen[bytes]],
                deadline: float) -> None:
    pending = [u.nut_name for u in lab.ups]
    while pending:
        for proc in [upsd, *drivers.values()]:
            if proc.poll() is not None:
                log = lab.directory / "log" / ("upsd.log" if proc is upsd else f"{proc.args[2]}.log")
                tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
                what = "the lab's NUT stand-in" if lab.server == "builtin" else proc.args[0]
                raise NutLabError(f"{what} exited with status {proc.returncode}: {tail.strip()[-600:]}")
        still = []
        for name in pending:
            try:
                answer = _ask(lab.host, lab.port, f"GET VAR {name} ups.status")
            except OSError:
                still = pending
                break
            if not answer.startswith(f"VAR {name} ") or "WAIT" in answer:  # WAIT: the driver's first poll
                still.append(name)
        pending = still
        if pending:
            if time.monotonic() > deadline:
                raise NutLabError(f"upsd did not serve {len(pending)} UPSes in time (first: {pending[0]})")
            time.sleep(0.1)


def load_nut_lab(directory: str | os.PathLike[str]) -> NutLab:
    """The lab recorded in ``DIR/nutlab.json``."""
    path = Path(directory).resolve() / LAB_FILE
    try:
        return NutLab.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        raise NotFound(f"no NUT lab in {path.parent} ({LAB_FILE} missing)") from None


def nut_lab_running(directory: str | os.PathLike[str]) -> bool:
    """Whether the lab's upsd still runs."""
    try:
        lab = load_nut_lab(directory)
    except NotFound:
        return False
    return pid_alive(lab.upsd_pid) and _ours(lab.upsd_pid, lab.directory)


def stop_nut_lab(directory: str | os.PathLike[str], *, timeout: float = 5.0) -> bool:
    """Stop upsd and every dummy-ups by their recorded PIDs (SIGTERM to all, then SIGKILL to the slow);
    False if nothing was running."""
    try:
        lab = load_nut_lab(directory)
    except NotFound:
        return False
    pids = [pid for pid in (lab.upsd_pid, *lab.driver_pids.values()) if pid_alive(pid) and _ours(pid, lab.directory)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    left = pids
    while left and time.monotonic() < deadline:
        for pid in left:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        left = [pid for pid in left if pid_alive(pid)]
        if left:
            time.sleep(0.02)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    for pid in pids:  # reap our own children that exited (a zombie is not alive, but it holds its PID)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    state = _state_path(lab.directory)
    if state != lab.directory / "state":  # the short directory outside the lab's
        shutil.rmtree(state, ignore_errors=True)
    (lab.directory / LAB_FILE).unlink(missing_ok=True)
    return bool(pids)


def nut_fault(directory: str | os.PathLike[str], ups: str, fault: str) -> list[dict[str, str]]:
    """Put UPS ``ups`` (inventory name, NUT name or server) into ``fault``; returns the steps written.

    The change shows in upsd within about a second (dummy-ups's poll interval).
    """
    lab = load_nut_lab(directory)
    u = lab.find(ups)
    index = [x.nut_name for x in lab.ups].index(u.nut_name)
    steps = fault_variables(fault, index)
    _write(lab.directory / "conf" / f"{u.nut_name}.dev", _dev_text(steps))
    return steps


def nut_memory(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Memory of the lab's processes, KiB: resident (``VmRSS``), proportional (``Pss``: shared pages split
    among the processes sharing them) and private (``uss``: pages no other process shares).

    ``{"upsd": {"rss": .., "pss": .., "uss": ..}, "drivers": N, "driver_rss_avg": .., "driver_pss_avg": ..,
    "driver_uss_avg": .., "total_rss": .., "total_pss": ..}``. A fleet of M per-server UPSes served this
    way needs about ``M x driver_pss_avg`` plus upsd.
    """
    lab = load_nut_lab(directory)
    upsd = _memory(lab.upsd_pid)
    drivers = [m for m in (_memory(pid) for pid in lab.driver_pids.values()) if m]
    n = len(drivers)
    return {
        "upsd": upsd,
        "drivers": n,
        "driver_rss_avg": round(sum(m["rss"] for m in drivers) / n, 1) if n else None,
        "driver_pss_avg": round(sum(m["pss"] for m in drivers) / n, 1) if n else None,
        "driver_uss_avg": round(sum(m["uss"] for m in drivers) / n, 1) if n else None,
        "total_rss": sum(m["rss"] for m in drivers) + upsd.get("rss", 0),
        "total_pss": sum(m["pss"] for m in drivers) + upsd.get("pss", 0),
    }


def _memory(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out["rss"] = int(line.split()[1])
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                out["pss"] = int(line.split()[1])
            elif line.startswith(("Private_Clean:", "Private_Dirty:")):
                out["uss"] = out.get("uss", 0) + int(line.split()[1])
    return out
