"""Real SNMP peers for the tests: snmpsim (recordings + our variation module), net-snmp snmpd, NUT.

Every process is started in the background, stopped by its PID (never by name) and its temporary
directory removed; everything listens on 127.0.0.0/8. A missing program skips the test (or fails it
under ``FLEET_REQUIRE_PEERS=1``), through :func:`tests.peers.missing_peer`.

- :func:`snmpsim_lab`: :func:`fleet.lab.snmplab.start_snmpsim` in a temporary directory: UPSes and
  PDUs built from real recordings, writable outlets and battery faults per device.
- :func:`snmpsim_plain`: snmpsim serving recordings exactly as they are, without our variation
  module (a SET there answers noSuchInstance with errorStatus 0: the "SET ignored" peer).
- :func:`snmpd_agent`: one net-snmp ``snmpd`` with ``override`` lines (static values), optional
  ``pass_persist`` scripts (live values from a JSON file), a v2c community and/or v3 authPriv users,
  on one or many loopback addresses.
- :func:`nut_snmp_ups`: NUT's own ``snmp-ups`` drivers reading simulated UPSes, behind ``upsd``;
  :meth:`NutServer.upsc` returns what ``upsc`` prints.
- :func:`dead_agent`: a bound UDP socket that never answers.

Use::

    with snmpsim_lab(ups=2, pdu=1) as lab:          # fleet.lab.snmplab.SnmpsimLab
        lab.devices[0].community
    with snmpd_agent(community="public", users=[V3User("fleet", "SHA", "authpass1", "AES", "privpass1")]) as agent:
        agent.host, agent.port
    with nut_snmp_ups([NutUps("apc", host, port, "lab-ups-001", "apcc")]) as nut:
        nut.upsc("apc")["battery.charge"]
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from fleet.lab import snmplab
from fleet.lab.snmplab.agent import free_udp_port
from fleet.lab.snmplab.simlab import SNMPSIM_MAIN

from .peers import missing_peer

__all__ = [
    "NUT_DRIVER",
    "NUT_UPSD",
    "NutServer",
    "NutUps",
    "SnmpdAgent",
    "V3User",
    "dead_agent",
    "nut_snmp_ups",
    "require_snmpsim",
    "snmpd_agent",
    "snmpsim_lab",
    "snmpsim_plain",
]

NUT_DRIVER = "/lib/nut/snmp-ups"
NUT_UPSD = "/lib/nut/upsd"
#: A pass_persist script: serves OIDs from a JSON file {"OID": ["integer", 3], ...}, re-read on each request.
PASS_PERSIST_SCRIPT = r'''#!PYTHON
import json, sys
path = sys.argv[1]
def table():
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return []
    rows = [(tuple(int(x) for x in k.strip(".").split(".")), v) for k, v in doc.items()]
    return sorted(rows)
def out(*lines):
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
while True:
    cmd = sys.stdin.readline()
    if not cmd:
        break
    cmd = cmd.strip()
    if cmd == "PING":
        out("PONG")
        continue
    oid = sys.stdin.readline().strip()
    key = tuple(int(x) for x in oid.strip(".").split("."))
    if cmd == "set":
        sys.stdin.readline()
        out("not-writable")
        continue
    rows = table()
    hit = None
    for k, v in rows:
        if (cmd == "get" and k == key) or (cmd == "getnext" and k > key):
            hit = (k, v)
            break
    if hit is None:
        out("NONE")
    else:
        out("." + ".".join(map(str, hit[0])), hit[1][0], str(hit[1][1]))
'''


def require_snmpsim() -> None:
    try:
        import snmpsim  # noqa: F401
        import snmpsim_data  # noqa: F401
    except ImportError as exc:
        missing_peer(f"snmpsim / snmpsim-data not installed: {exc}")


def _require(path: str, what: str) -> str:
    found = shutil.which(path) or (path if os.access(path, os.X_OK) else None)
    if not found:
        missing_peer(f"{what} not installed ({path})")
    return found  # type: ignore[return-value]


@contextlib.contextmanager
def snmpsim_lab(*, ups: int = 4, pdu: int = 3, reboot_s: float = 1.0, **kwargs: object) -> Iterator[snmplab.SnmpsimLab]:
    """An snmpsim lab in a temporary directory (see :func:`fleet.lab.snmplab.start_snmpsim`)."""
    require_snmpsim()
    tmp = Path(tempfile.mkdtemp(prefix="fleet-snmpsim-"))
    lab = None
    try:
        lab = snmplab.start_snmpsim(tmp, ups=ups, pdu=pdu, reboot_s=reboot_s, **kwargs)  # type: ignore[arg-type]
        yield lab
    finally:
        if lab is not None:
            snmplab.stop_snmpsim(lab)
        shutil.rmtree(tmp, ignore_errors=True)


@dataclasses.dataclass
class PlainAgent:
    host: str
    port: int
    pid: int
    communities: list[str]


@contextlib.contextmanager
def snmpsim_plain(recordings: Mapping[str, Path]) -> Iterator[PlainAgent]:
    """snmpsim serving ``recordings`` (community -> .snmprec or .snmprec.bz2 file) unmodified.

    Recordings that reference snmpsim's stock variations (``writecache``, ``numeric``) get the stock
    variation directory.
    """
    require_snmpsim()
    import snmpsim

    tmp = Path(tempfile.mkdtemp(prefix="fleet-snmpsim-plain-"))
    pid = None
    try:
        data = tmp / "data"
        data.mkdir()
        for community, path in recordings.items():
            suffix = ".snmprec.bz2" if str(path).endswith(".bz2") else ".snmprec"
            shutil.copyfile(path, data / f"{community}{suffix}")
        host = "127.0.0.1"
        port = free_udp_port(host)
        stock = Path(snmpsim.__file__).resolve().parent / "variation"
        pid = _spawn_plain(data, tmp, host, port, stock, next(iter(recordings)))
        yield PlainAgent(host, port, pid, list(recordings))
    finally:
        if pid is not None:
            snmplab.stop_pid(pid, b"snmpsim")
        shutil.rmtree(tmp, ignore_errors=True)


def _spawn_plain(data: Path, work: Path, host: str, port: int, stock: Path, community: str) -> int:
    logfile = work / "snmpsim.log"
    (work / "cache").mkdir()
    args = [sys.executable, "-c", SNMPSIM_MAIN, f"--cache-dir={work / 'cache'}", "--log-level=error",
            f"--logging-method=file:{logfile}", f"--variation-modules-dir={stock}",
            "--v3-engine-id=auto", f"--data-dir={data}", f"--agent-udpv4-endpoint={host}:{port}"]
    with open(logfile, "ab") as out:
        proc = snmplab.track(subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                              start_new_session=True, env=dict(os.environ, SNMPSIM_ALLOW_ROOT="true")))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"snmpsim exited: {logfile.read_text()[-2000:]}")
        if snmplab.snmp_ping(host, port, community, timeout=0.3) is not None:
            return proc.pid
    snmplab.stop_pid(proc.pid, b"snmpsim")
    raise RuntimeError("snmpsim did not start")


# ---------------------------------------------------------------------------------------------
# net-snmp snmpd
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class V3User:
    name: str
    auth_proto: str   # net-snmp spelling: MD5, SHA, SHA-256...
    auth_key: str
    priv_proto: str   # DES, AES, AES-256...
    priv_key: str


@dataclasses.dataclass
class SnmpdAgent:
    hosts: list[str]
    port: int
    pid: int
    directory: Path
    live_file: Path | None

    @property
    def host(self) -> str:
        return self.hosts[0]

    def set_live(self, values: Mapping[str, tuple[str, object]]) -> None:
        """Replace what the pass_persist script serves: OID -> (type, value), e.g. ("integer", 5)."""
        assert self.live_file is not None, "started without pass_persist"
        tmp = self.live_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({k: [t, v] for k, (t, v) in values.items()}))
        tmp.replace(self.live_file)


@contextlib.contextmanager
def snmpd_agent(*, community: str | None = "public", users: Sequence[V3User] = (),
                values: Mapping[str, tuple[str, str]] = snmplab.SNMPD_UPS_VALUES, hosts: Sequence[str] = ("127.0.0.1",),
                live: tuple[str, Mapping[str, tuple[str, object]]] | None = None,
                sys_object_id: str | None = "1.3.6.1.2.1.33") -> Iterator[SnmpdAgent]:
    """One snmpd on ``hosts`` (one port): ``override`` values, a community and/or v3 authPriv users.

    ``live`` = (subtree OID, initial values) serves that subtree through a ``pass_persist`` script
    reading a JSON file that :meth:`SnmpdAgent.set_live` rewrites.
    """
    binary = _require("snmpd", "net-snmp snmpd (Debian package snmpd)")
    tmp = Path(tempfile.mkdtemp(prefix="fleet-snmpd-"))
    pid = None
    try:
        port = free_udp_port(hosts[0])
        pass_persist = {}
        live_file = None
        if live is not None:
            script = tmp / "live.py"
            script.write_text(PASS_PERSIST_SCRIPT.replace("PYTHON", sys.executable, 1))
            script.chmod(script.stat().st_mode | stat.S_IXUSR)
            live_file = tmp / "live.json"
            live_file.write_text(json.dumps({k: [t, v] for k, (t, v) in live[1].items()}))
            pass_persist[live[0]] = f"{script} {live_file}"
        extra = []
        for u in users:
            extra += [f"createUser {u.name} {u.auth_proto} {u.auth_key} {u.priv_proto} {u.priv_key}",
                      f"rouser {u.name} authpriv"]
        conf = tmp / "snmpd.conf"
        conf.write_text(snmplab.snmpd_config(community=community, values=values, sys_object_id=sys_object_id,
                                             pass_persist=pass_persist, extra=extra))
        (tmp / "persist").mkdir()
        log = tmp / "snmpd.log"
        cmd = snmplab.snmpd_command(conf, log, tmp / "persist", [f"udp:{h}:{port}" for h in hosts])
        cmd[0] = binary
        with open(tmp / "snmpd.out", "wb") as out:
            proc = snmplab.track(subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                                  start_new_session=True, env=snmplab.snmpd_env()))
        pid = proc.pid
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"snmpd exited with {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
            if log.exists() and "NET-SNMP version" in log.read_text(errors="replace") and proc.poll() is None and (
                    not community or snmplab.snmp_ping(hosts[-1], port, community, timeout=0.2) is not None):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"snmpd did not start: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.05)
        yield SnmpdAgent(list(hosts), port, pid, tmp, live_file)
    finally:
        if pid is not None:
            snmplab.stop_pid(pid, b"snmpd")
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# NUT: snmp-ups + upsd + upsc
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class NutUps:
    name: str
    host: str
    port: int
    community: str
    mibs: str           # ietf | apcc | pw ...


@dataclasses.dataclass
class NutServer:
    host: str
    port: int
    env: dict[str, str]

    def upsc(self, ups: str) -> dict[str, str]:
        """What ``upsc UPS@host:port`` prints, as a dict (empty if upsd has no data for it yet)."""
        proc = subprocess.run(["upsc", f"{ups}@{self.host}:{self.port}"], capture_output=True, text=True,
                              timeout=10, env=self.env)
        if proc.returncode != 0:
            return {}
        out = {}
        for line in proc.stdout.splitlines():
            key, sep, value = line.partition(": ")
            if sep:
                out[key.strip()] = value.strip()
        return out

    def wait(self, ups: str, predicate, timeout: float = 15.0) -> dict[str, str]:  # type: ignore[no-untyped-def]
        """Poll ``upsc`` until ``predicate(vars)`` holds; return the variables (raise on timeout)."""
        deadline = time.monotonic() + timeout
        last: dict[str, str] = {}
        while time.monotonic() < deadline:
            last = self.upsc(ups)
            if last and predicate(last):
                return last
            time.sleep(0.25)
        raise AssertionError(f"upsc {ups}: condition not met within {timeout} s; last answer: {last}")


@contextlib.contextmanager
def nut_snmp_ups(upses: Sequence[NutUps], *, port: int | None = None) -> Iterator[NutServer]:
    """NUT's ``snmp-ups`` for each UPS (pollinterval 1 s, every variable each poll) behind one ``upsd``."""
    _require(NUT_DRIVER, "NUT snmp-ups driver (Debian package nut-snmp)")
    _require(NUT_UPSD, "NUT upsd (Debian package nut-server)")
    _require("upsc", "NUT upsc (Debian package nut-client)")
    tmp = Path(tempfile.mkdtemp(prefix="fleet-nut-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        conf, state = tmp / "conf", tmp / "state"
        conf.mkdir()
        state.mkdir(mode=0o770)
        port = port or _free_tcp_port()
        sections = []
        for u in upses:
            sections.append(f"[{u.name}]\n  driver = snmp-ups\n  port = {u.host}:{u.port}\n"
                            f"  community = {u.community}\n  snmp_version = v2c\n  mibs = {u.mibs}\n"
                            "  pollinterval = 1\n  pollfreq = 1\n")
        (conf / "ups.conf").write_text("maxretry = 3\n\n" + "\n".join(sections))
        (conf / "upsd.conf").write_text(f"LISTEN 127.0.0.1 {port}\n")
        (conf / "upsd.users").write_text("")
        (conf / "nut.conf").write_text("MODE=standalone\n")
        for f in conf.iterdir():
            f.chmod(0o600)
        env = dict(os.environ, NUT_CONFPATH=str(conf), NUT_STATEPATH=str(state))
        for u in upses:
            with open(tmp / f"{u.name}.log", "wb") as out:
                procs.append(subprocess.Popen([NUT_DRIVER, "-a", u.name, "-u", "root", "-F"], stdin=subprocess.DEVNULL,
                                             stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                             env=env))
        deadline = time.monotonic() + 30
        while any(not (state / f"snmp-ups-{u.name}").exists() for u in upses):
            if time.monotonic() > deadline:
                logs = {u.name: (tmp / f"{u.name}.log").read_text(errors="replace")[-800:] for u in upses}
                raise RuntimeError(f"snmp-ups did not create its socket: {logs}")
            time.sleep(0.1)
        with open(tmp / "upsd.log", "wb") as out:
            procs.append(subprocess.Popen([NUT_UPSD, "-F", "-u", "root"], stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True, env=env))
        server = NutServer("127.0.0.1", port, env)
        for u in upses:
            server.wait(u.name, lambda v: "ups.status" in v, timeout=30)
        yield server
    finally:
        for proc in reversed(procs):   # by PID: Popen.terminate() signals proc.pid
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            _reap(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def _reap(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def dead_agent(host: str = "127.0.0.1") -> Iterator[tuple[str, int]]:
    """A UDP port that receives and never answers (not ICMP-refused: a silent, dead agent)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((host, 0))
        yield host, sock.getsockname()[1]
    finally:
        sock.close()
