"""NUT's own ``upsd`` serving ``dummy-ups`` UPSes, for real-peer tests, and NUT's own clients to check them.

One :class:`NutPeer` is one ``upsd`` (``/lib/nut/upsd -F -u root``) listening on 127.0.0.1 on a free
port, in front of K ``dummy-ups`` driver processes (one per UPS, as NUT works), each serving a UPS from
its own ``.dev`` file of ``var: value`` lines. Configuration, state sockets and logs live in a temporary
directory (``NUT_CONFPATH``/``NUT_STATEPATH`` point there), removed on exit. Every process is started
by us and stopped by its PID, never by name.

What each UPS holds (:meth:`NutPeer.initial`): ``ups.status: OL``, ``battery.charge`` 100, runtime
1800 + 10 x index seconds (so a test can tell which UPS answered), ``ups.load`` 23, ``input.voltage``
230.1, ``battery.temperature`` 25.5, ``ups.mfr``/``ups.model``, ``battery.date``,
``ups.realpower.nominal``.

Users (``upsd.users``): ``monitor``/``monpass`` (read only: ``upsmon secondary``) and
``admin``/``adminpass`` (``actions = SET``, ``instcmds = ALL``).

With ``clone=True`` one more UPS, ``clone0``, is NUT's ``clone`` driver on top of the first
dummy-ups: unlike dummy-ups (which lists ``load.off`` but answers "unknown command"), it implements
``shutdown.return``/``shutdown.stayoff`` (``ups.status`` gains ``FSD``): the peer for an instant
command that works.

Changing a UPS: :meth:`NutPeer.set_vars` rewrites its ``.dev`` file (dummy-ups re-reads a changed
file on its next poll, every second here) and waits until ``upsc`` shows the change; :meth:`upsrw`
sets a variable through upsd (``SET VAR``) as the admin.

Use::

    with nut_peer(count=3) as peer:          # skips (fails under FLEET_REQUIRE_PEERS=1) without NUT
        peer.upsc("ups0")["battery.charge"]  # '100'
        peer.set_vars("ups1", {"ups.status": "OB DISCHRG", "battery.charge": "80"})

    peer = nut_peer_fixture(count=5, scope="module")   # in a test module: a fixture named ``peer``
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .peers import missing_peer

__all__ = ["ADMIN", "MONITOR", "NutPeer", "free_port", "nut_available", "nut_peer", "nut_peer_fixture"]

UPSD = "/lib/nut/upsd"
DUMMY_UPS = "/lib/nut/dummy-ups"
CLONE = "/lib/nut/clone"
#: (user, password) pairs in upsd.users.
MONITOR = ("monitor", "monpass")
ADMIN = ("admin", "adminpass")
#: Seconds an external client command may take before the harness gives up on it.
CLIENT_TIMEOUT = 20.0


def nut_available() -> bool:
    return all(os.access(p, os.X_OK) for p in (UPSD, DUMMY_UPS)) and shutil.which("upsc") is not None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class NutPeer:
    """One upsd and its dummy-ups drivers: where it listens, the UPS names, and NUT's own clients."""

    workdir: Path
    names: list[str]
    host: str = "127.0.0.1"
    port: int = 0
    clone: bool = False
    upsd: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    drivers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)

    @property
    def conf(self) -> Path:
        return self.workdir / "conf"

    @property
    def state(self) -> Path:
        return self.workdir / "state"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "NUT_CONFPATH": str(self.conf), "NUT_STATEPATH": str(self.state)}

    @property
    def all_names(self) -> list[str]:
        return [*self.names, "clone0"] if self.clone else list(self.names)

    def at(self, name: str) -> str:
        """``NAME@127.0.0.1:PORT``, as NUT's clients spell a UPS."""
        return f"{name}@{self.host}:{self.port}"

    def dev_file(self, name: str) -> Path:
        return self.conf / f"{name}.dev"

    # -- the simulated UPSes -----------------------------------------------------------------

    def initial(self, name: str) -> dict[str, str]:
        """The variables UPS ``name`` starts with."""
        index = self.names.index(name)
        return {
            "ups.status": "OL",
            "battery.charge": "100",
            "battery.runtime": str(1800 + 10 * index),
            "ups.load": "23",
            "input.voltage": "230.1",
            "battery.temperature": "25.5",
            "ups.mfr": "Rackfleet Lab",
            "ups.model": "Dummy UPS 1500",
            "battery.date": "2023/05/01",
            "ups.realpower.nominal": "900",
        }

    def description(self, name: str) -> str:
        """UPS ``name``'s description in ups.conf (quotes and a backslash in it, to test escaping)."""
        return f'Lab UPS "{name}" \\ rack A'

    def write_dev(self, name: str, variables: Mapping[str, str]) -> None:
        """Replace UPS ``name``'s .dev file (atomically; dummy-ups notices the new modification time)."""
        path = self.dev_file(name)
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(f"{k}: {v}\n" for k, v in variables.items()))
        tmp.chmod(0o644)
        tmp.replace(path)

    def set_vars(self, name: str, changes: Mapping[str, str], *, timeout: float = 10.0) -> dict[str, str]:
        """Change some of UPS ``name``'s variables in its .dev file; return when ``upsc`` shows them all.

        dummy-ups only adds or changes variables from the file: one removed from the file keeps its value.
        """
        current = {**self.initial(name), **self._dev_values(name)}
        current.update(changes)
        # dummy-ups compares modification times in whole seconds: make sure this write looks newer.
        mtime = self.dev_file(name).stat().st_mtime
        self.write_dev(name, current)
        new = self.dev_file(name)
        if int(new.stat().st_mtime) <= int(mtime):
            os.utime(new, (mtime + 1, mtime + 1))
        deadline = time.monotonic() + timeout
        while True:
            seen = self.upsc(name, check=False)
            if all(seen.get(k) == v for k, v in changes.items()):
                return seen
            if time.monotonic() > deadline:
                raise AssertionError(f"{name}: upsc still shows {seen} after {timeout} s, wanted {dict(changes)}")
            time.sleep(0.1)

    def _dev_values(self, name: str) -> dict[str, str]:
        out = {}
        for line in self.dev_file(name).read_text().splitlines():
            if ":" in line and not line.startswith(("#", "TIMER")):
                k, _, v = line.partition(":")
                out[k.strip()] = v.strip()
        return out

    # -- NUT's own clients -------------------------------------------------------------------

    def upsc(self, name: str, var: str | None = None, *, check: bool = True) -> dict[str, str]:
        """``upsc NAME@HOST:PORT [VAR]`` parsed into {variable: value} (one item when ``var`` is given)."""
        res = _run(["upsc", self.at(name), *([var] if var else [])], env=self.env, check=check)
        if var:
            return {var: res.stdout.strip()} if res.returncode == 0 else {}
        out = {}
        for line in res.stdout.splitlines():
            k, sep, v = line.partition(": ")
            if sep:
                out[k] = v
        return out

    def upsc_list(self) -> dict[str, str]:
        """``upsc -L HOST:PORT``: name -> description."""
        res = _run(["upsc", "-L", f"{self.host}:{self.port}"], env=self.env, check=True)
        return dict(line.split(": ", 1) for line in res.stdout.splitlines() if ": " in line)

    def upscmd(self, name: str, command: str, *, user: tuple[str, str] = ADMIN,
               check: bool = False) -> subprocess.CompletedProcess[str]:
        """``upscmd -u USER -p PASSWORD -w NAME@HOST:PORT COMMAND`` (``-w``: wait for the driver's verdict)."""
        return _run(["upscmd", "-u", user[0], "-p", user[1], "-w", "-t", "5", self.at(name), command],
                    env=self.env, check=check)

    def upscmd_list(self, name: str) -> list[str]:
        res = _run(["upscmd", "-l", self.at(name)], env=self.env, check=True)
        return [line.split(" - ")[0].strip() for line in res.stdout.splitlines()[2:] if line.strip()]

    def upsrw(self, name: str, var: str, value: str, *, user: tuple[str, str] = ADMIN) -> None:
        """``upsrw -s VAR=VALUE -u USER -p PASSWORD -w NAME@HOST:PORT``, then wait until upsc shows it."""
        _run(["upsrw", "-s", f"{var}={value}", "-u", user[0], "-p", user[1], "-w", "-t", "5", self.at(name)],
             env=self.env, check=True)
        deadline = time.monotonic() + 10
        while self.upsc(name, var, check=False).get(var) != value:
            if time.monotonic() > deadline:
                raise AssertionError(f"{name}: {var} did not become {value!r}")
            time.sleep(0.05)

    # -- processes ---------------------------------------------------------------------------

    def pids(self) -> dict[str, int]:
        out = {f"driver:{n}": p.pid for n, p in self.drivers.items()}
        if self.upsd is not None:
            out["upsd"] = self.upsd.pid
        return out

    def rss_kib(self) -> dict[str, int]:
        """Resident memory of each process, KiB (``VmRSS``)."""
        out = {}
        for label, pid in self.pids().items():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        out[label] = int(line.split()[1])
        return out

    def stop_upsd(self) -> None:
        _stop(self.upsd)

    def stop(self) -> None:
        _stop(self.upsd)
        for proc in self.drivers.values():
            _stop(proc)


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    """Stop one process by its PID: SIGTERM, then SIGKILL after 3 s."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def _run(cmd: list[str], *, env: dict[str, str], check: bool) -> subprocess.CompletedProcess[str]:
    try:
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=CLIENT_TIMEOUT, check=False)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{cmd[0]} did not finish within {CLIENT_TIMEOUT} s") from exc
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stdout}{res.stderr}")
    return res


def _write_config(peer: NutPeer) -> None:
    peer.conf.mkdir(parents=True)
    peer.state.mkdir(mode=0o770)
    (peer.workdir / "log").mkdir()
    sections = []
    for name in peer.names:
        peer.write_dev(name, peer.initial(name))
        sections.append(f'[{name}]\n  driver = dummy-ups\n  port = {peer.dev_file(name)}\n'
                        f'  desc = "{_conf_escape(peer.description(name))}"\n')
    if peer.clone:
        sections.append(f'[clone0]\n  driver = clone\n  port = dummy-ups-{peer.names[0]}\n'
                        # load.status: without it NUT 2.8.0's clone crashes (SIGSEGV) on its first INSTCMD
                        '  offdelay = 120\n  ondelay = 30\n  load.status = ups.status\n'
                        '  desc = "Clone of the first UPS"\n')
    files = {
        "nut.conf": "MODE=standalone\n",
        "ups.conf": "pollinterval = 1\n\n" + "\n".join(sections),
        "upsd.conf": f"LISTEN {peer.host} {peer.port}\nMAXAGE 15\n",
        "upsd.users": (f"[{MONITOR[0]}]\n  password = {MONITOR[1]}\n  upsmon secondary\n\n"
                       f"[{ADMIN[0]}]\n  password = {ADMIN[1]}\n  actions = SET\n  instcmds = ALL\n"),
    }
    for fname, text in files.items():
        path = peer.conf / fname
        path.write_text(text)
        path.chmod(0o600)


def _conf_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _spawn(peer: NutPeer, argv: list[str], log: str) -> subprocess.Popen[bytes]:
    with open(peer.workdir / "log" / log, "wb") as out:
        return subprocess.Popen(argv, env=peer.env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, cwd=peer.workdir)


def _ask(host: str, port: int, line: str) -> str:
    with socket.create_connection((host, port), timeout=1) as s:
        s.sendall(line.encode() + b"\n")
        return s.makefile().readline().strip()


def _ready(peer: NutPeer, name: str) -> bool:
    answer = _ask(peer.host, peer.port, f"GET VAR {name} ups.status")
    return answer.startswith(f"VAR {name} ") and "WAIT" not in answer


def _wait_ready(peer: NutPeer, deadline: float) -> None:
    """Until upsd answers for every UPS with fresh data (not DRIVER-NOT-CONNECTED / DATA-STALE / WAIT)."""
    pending = list(peer.all_names)
    while pending:
        for proc in [peer.upsd, *peer.drivers.values()]:
            if proc is not None and proc.poll() is not None:
                logs = "".join(p.read_text() for p in (peer.workdir / "log").iterdir())
                raise RuntimeError(f"a NUT process exited ({proc.args[0]}, code {proc.returncode}):\n{logs}")
        with contextlib.suppress(OSError):
            pending = [n for n in pending if not _ready(peer, n)]
        if pending:
            if time.monotonic() > deadline:
                raise RuntimeError(f"upsd did not serve {', '.join(pending)} within the start-up deadline")
            time.sleep(0.1)


@contextlib.contextmanager
def nut_peer(count: int = 1, *, clone: bool = False, startup_timeout: float = 30.0) -> Iterator[NutPeer]:
    """A running upsd with ``count`` dummy-ups UPSes named ``ups0``...; skips without NUT."""
    if not nut_available():
        missing_peer(f"NUT upsd/dummy-ups/upsc not installed ({UPSD}, {DUMMY_UPS}; Debian nut-server nut-client)")
    if clone and not os.access(CLONE, os.X_OK):
        missing_peer(f"NUT's clone driver not installed ({CLONE})")
    workdir = Path(tempfile.mkdtemp(prefix="rackfleet-nut-"))
    peer = NutPeer(workdir=workdir, names=[f"ups{i}" for i in range(count)], port=free_port(), clone=clone)
    try:
        _write_config(peer)
        for name in peer.names:
            peer.drivers[name] = _spawn(peer, [DUMMY_UPS, "-a", name, "-u", "root", "-F"], f"{name}.log")
        if clone:
            # clone connects to dummy-ups's socket: start it once that socket exists.
            sock = peer.state / f"dummy-ups-{peer.names[0]}"
            until = time.monotonic() + 10
            while not sock.exists() and time.monotonic() < until:
                time.sleep(0.05)
            peer.drivers["clone0"] = _spawn(peer, [CLONE, "-a", "clone0", "-u", "root", "-F"], "clone0.log")
        peer.upsd = _spawn(peer, [UPSD, "-F", "-u", "root"], "upsd.log")
        _wait_ready(peer, time.monotonic() + startup_timeout)
        yield peer
    finally:
        peer.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def nut_peer_fixture(count: int = 1, *, clone: bool = False, scope: str = "module") -> Any:
    """A pytest fixture named as the caller assigns it, yielding a :class:`NutPeer`."""

    @pytest.fixture(scope=scope)  # type: ignore[call-overload]
    def _fixture() -> Iterator[NutPeer]:
        with nut_peer(count, clone=clone) as peer:
            yield peer

    return _fixture
