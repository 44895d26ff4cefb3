"""The snmpd fleet, for scale: one net-snmp ``snmpd`` listening on many loopback addresses (``127.20.0.1``,
``.2``, ...), answering RFC 1628 UPS objects from ``override`` lines (:data:`SNMPD_UPS_VALUES`); community
``public`` or a v3 authPriv user. ~13,800 requests/s against snmpsim's ~250."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet.errors import InputError, NotFound
from fleet.lab._proc import cmdline_has, pid_alive
from fleet.lab.programs import SBIN_DIRS, require_program
from fleet.lab.snmplab.agent import (
    LabDevice,
    SnmpLabError,
    check_loopback,
    free_udp_port,
    log_tail,
    snmp_ping,
    stop_pid,
    track,
    write_json,
)

__all__ = ["SNMPD_FILE", "SNMPD_UPS_VALUES", "SnmpdFleet", "snmpd_command", "snmpd_config", "snmpd_env",
           "start_snmpd_fleet", "stop_snmpd_fleet"]

SNMPD_FILE = "snmpd.json"

#: RFC 1628 objects every UPS of the snmpd fleet answers (OID -> (snmpd override type, value)):
#: the seven a battery poll of the generic-ups-mib profile reads, plus identity.
SNMPD_UPS_VALUES: Mapping[str, tuple[str, str]] = {
    "1.3.6.1.2.1.33.1.1.1.0": ("octet_str", "Rackfleet"),        # upsIdentManufacturer
    "1.3.6.1.2.1.33.1.1.2.0": ("octet_str", "LAB-UPS-1500"),     # upsIdentModel
    "1.3.6.1.2.1.33.1.2.1.0": ("integer", "2"),                  # upsBatteryStatus: normal
    "1.3.6.1.2.1.33.1.2.2.0": ("integer", "0"),                  # upsSecondsOnBattery
    "1.3.6.1.2.1.33.1.2.3.0": ("integer", "42"),                 # upsEstimatedMinutesRemaining
    "1.3.6.1.2.1.33.1.2.4.0": ("integer", "97"),                 # upsEstimatedChargeRemaining
    "1.3.6.1.2.1.33.1.2.7.0": ("integer", "25"),                 # upsBatteryTemperature
    "1.3.6.1.2.1.33.1.3.3.1.3.1": ("integer", "230"),            # upsInputVoltage.1
    "1.3.6.1.2.1.33.1.4.1.0": ("integer", "3"),                  # upsOutputSource: normal
    "1.3.6.1.2.1.33.1.4.4.1.4.1": ("integer", "310"),            # upsOutputPower.1
    "1.3.6.1.2.1.33.1.4.4.1.5.1": ("integer", "33"),             # upsOutputPercentLoad.1
    "1.3.6.1.2.1.33.1.9.6.0": ("integer", "900"),                # upsConfigOutputPower
}


@dataclass
class SnmpdFleet:
    """A running snmpd answering for many UPSes, one loopback address each (``DIR/snmpd.json``)."""

    directory: Path
    pid: int
    port: int
    devices: list[LabDevice]
    community: str
    v3_user: str | None = None
    startup_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "port": self.port, "community": self.community, "v3_user": self.v3_user,
                "startup_s": self.startup_s, "devices": [d.inventory_entry() for d in self.devices]}

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> SnmpdFleet:
        root = Path(directory)
        try:
            doc = json.loads((root / SNMPD_FILE).read_text())
        except FileNotFoundError:
            raise NotFound(f"no snmpd fleet in {root} (no {SNMPD_FILE})") from None
        devices = [LabDevice(d["name"], d["kind"], d["model"], d["profile"], d["host"], d["port"], d["community"],
                             d.get("snmp_version", "2c")) for d in doc["devices"]]
        return cls(root, doc["pid"], doc["port"], devices, doc["community"], doc.get("v3_user"),
                   doc.get("startup_s", 0.0))


def _snmpd_binary() -> str:
    return require_program("snmpd", "install net-snmp's agent (Debian: apt install snmpd)", extra_dirs=SBIN_DIRS)


def snmpd_config(*, community: str | None = "public", values: Mapping[str, tuple[str, str]] = SNMPD_UPS_VALUES,
                 sys_object_id: str | None = "1.3.6.1.2.1.33", v3_user: str | None = None,
                 v3_auth: tuple[str, str] | None = None, v3_priv: tuple[str, str] | None = None,
                 pass_persist: Mapping[str, str] | None = None, extra: Iterable[str] = ()) -> str:
    """An ``snmpd.conf`` of static UPS values (``override``), a v2c community and/or a v3 authPriv user.

    ``v3_auth``/``v3_priv`` are (protocol, passphrase), e.g. ("SHA", "...") and ("AES", "...");
    ``pass_persist`` maps an OID subtree to a script (live values).
    """
    lines = ["# Rackfleet lab snmpd: static UPS objects; listening addresses come from the command line.",
             "dontLogTCPWrappersConnects yes"]
    if sys_object_id:
        lines.append(f"sysObjectID .{sys_object_id.lstrip('.')}")
    lines += ["sysDescr Rackfleet lab UPS (net-snmp snmpd)", "sysName rackfleet-lab-ups",
              "sysContact lab", "sysLocation loopback"]
    if community:
        lines.append(f"rocommunity {community} 127.0.0.0/8")
    if v3_user:
        if v3_auth is None or v3_priv is None:
            raise InputError("a v3 user needs auth and priv (protocol, passphrase) pairs")
        lines.append(f"createUser {v3_user} {v3_auth[0]} {v3_auth[1]} {v3_priv[0]} {v3_priv[1]}")
        lines.append(f"rouser {v3_user} authpriv")
    for oid, (typ, value) in values.items():
        lines.append(f"override .{oid.lstrip('.')} {typ} {value}")
    for oid, script in (pass_persist or {}).items():
        lines.append(f"pass_persist .{oid.lstrip('.')} {script}")
    lines += list(extra)
    return "\n".join(lines) + "\n"


def snmpd_command(config: Path, log: Path, persistent_dir: Path, addresses: Sequence[str]) -> list[str]:
    """The snmpd command line: foreground, only our config, no SMUX/AgentX, no MIB files loaded."""
    return [_snmpd_binary(), "-f", "-C", "-c", str(config), "-Lf", str(log), f"--persistentDir={persistent_dir}",
            "-I", "-smux", *addresses]


def snmpd_env() -> dict[str, str]:
    """Environment for net-snmp programs: no MIB texts (Debian ships none), no user config files."""
    env = dict(os.environ)
    env.update(MIBS="", MIBDIRS="/nonexistent", SNMPCONFPATH="/nonexistent")
    return env


def start_snmpd_fleet(directory: str | os.PathLike[str], *, count: int, first_host: str = "127.20.0.1",
                      port: int | None = None, community: str = "public",
                      values: Mapping[str, tuple[str, str]] = SNMPD_UPS_VALUES, prefix: str = "snmpd-ups-",
                      v3_user: str | None = None, v3_auth: tuple[str, str] | None = None,
                      v3_priv: tuple[str, str] | None = None, timeout: float = 60.0) -> SnmpdFleet:
    """Start one snmpd answering as ``count`` UPSes, one per loopback address from ``first_host``.

    Every address answers the same :data:`SNMPD_UPS_VALUES` (RFC 1628; profile ``generic-ups-mib``).
    ``port`` defaults to 161 as root, else a free high port (the same port on every address).
    """
    from fleet.lab.bmcserver import ensure_fd_limit, loopback_hosts

    if count < 1:
        raise InputError("an snmpd fleet needs at least one device")
    check_loopback(first_host)
    root = Path(directory).resolve()
    root.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(NotFound):
        old = SnmpdFleet.load(root)
        if pid_alive(old.pid) and cmdline_has(old.pid, b"snmpd"):
            raise InputError(f"an snmpd fleet (pid {old.pid}) already runs in {root}; stop it first")
    hosts = loopback_hosts(count, first=first_host)
    if port is None:
        port = 161 if os.geteuid() == 0 else free_udp_port(hosts[0])
    conf = root / "snmpd.conf"
    conf.write_text(snmpd_config(community=community, values=values, v3_user=v3_user, v3_auth=v3_auth,
                                 v3_priv=v3_priv))
    persist = root / "persist"
    shutil.rmtree(persist, ignore_errors=True)
    persist.mkdir()
    log = root / "snmpd.log"
    log.unlink(missing_ok=True)
    cmd = snmpd_command(conf, log, persist, [f"udp:{h}:{port}" for h in hosts])
    ensure_fd_limit(count + 256)
    needed = count + 256

    def raise_limit() -> None:  # the child inherits ours, but be explicit after a fork
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < needed:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))

    t0 = time.monotonic()
    with open(root / "snmpd.out", "ab") as out:
        proc = track(subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                      start_new_session=True, env=snmpd_env(), preexec_fn=raise_limit))
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise SnmpLabError(f"snmpd exited with status {proc.returncode}:\n{log_tail(log)}")
        # snmpd logs its version once every endpoint is open (it exits if one cannot be bound);
        # only then does an answer come from this snmpd and not from another on the same address
        if log.exists() and "NET-SNMP version" in log_tail(log) and proc.poll() is None and (
                not community or snmp_ping(hosts[-1], port, community, timeout=0.3) is not None):
            break
        if time.monotonic() > deadline:
            stop_pid(proc.pid, b"snmpd")
            raise SnmpLabError(f"snmpd did not answer on {hosts[-1]}:{port} within {timeout} s:\n{log_tail(log)}")
        time.sleep(0.05)
    devices = [LabDevice(f"{prefix}{i + 1:05d}", "ups", "snmpd-ups", "generic-ups-mib", h, port, community,
                         "3" if v3_user and not community else "2c") for i, h in enumerate(hosts)]
    fleet = SnmpdFleet(root, proc.pid, port, devices, community, v3_user, round(time.monotonic() - t0, 2))
    write_json(root / SNMPD_FILE, fleet.to_json())
    return fleet


def stop_snmpd_fleet(directory: str | os.PathLike[str] | SnmpdFleet) -> bool:
    """Stop the snmpd of a fleet directory by its PID; True if it was running."""
    root = directory.directory if isinstance(directory, SnmpdFleet) else Path(directory)
    try:
        fleet = SnmpdFleet.load(root)
    except NotFound:
        return False
    stopped = stop_pid(fleet.pid, b"snmpd")
    (root / SNMPD_FILE).unlink(missing_ok=True)
    return stopped
