"""The lab's SNMP UPSes and PDUs: an snmpsim agent of many devices, and a net-snmp ``snmpd`` fleet for scale.

Two kinds of simulated SNMP device, both on loopback only (127.0.0.0/8), both started in the
background and stopped by PID:

**snmpsim devices** (:func:`start_snmpsim`): one ``snmpsim-command-responder`` process on
``127.0.0.1:PORT`` serves N UPSes and M PDUs; each device is a data file, and its **v2c community
is the device's name**. The data files are hard links to one template per model (thousands of
devices cost one template each; symlinks would collapse to the target's name). Templates are real
recordings rewritten so that outlets and battery state go through Rackfleet's variation module
``fleet/lab/snmpvariation/fleetdev.py``, which keys every value by device (the stock ``writecache``
would leak a SET into every device) and keeps state in ``DIR/state/<device>.json``:

=================  ======  ================  =========================================================
model              kind    profile           recording
=================  ======  ================  =========================================================
``apc-smart-ups``  ups     apc-smart-ups     ours (``snmpvariation/data/apc-smart-ups.snmprec``):
                                             PowerNet UPS objects, 3 outlet groups
``eaton-9px``      ups     eaton-9px         snmpsim-data ``UPS/eaton-9px-partial``: XUPS-MIB,
                                             2 receptacles
``eaton-93e``      ups     eaton-9px         snmpsim-data ``UPS/eaton-93e-80``: XUPS-MIB and
                                             RFC 1628 (runtime 65535 in XUPS)
``ietf-ups``       ups     generic-ups-mib   snmpsim-data ``UPS/phoenixtec-power``: RFC 1628 only,
                                             a sysObjectID no profile matches
``apc-7902b``,     pdu     apc-rpdu          snmpsim-data ``UPS/apc-7902b`` (16 outlets),
``apc-8641``,                                ``apc-8641`` (24), ``apc-8932`` (24): rPDU, rPDU2 and
``apc-8932``                                 sPDU outlet tables, all kept consistent
=================  ======  ================  =========================================================

What the variation module changes, per device: ``sysName.0`` answers the device's name; the UPS's
output source, battery status, charge, runtime, input voltage and replace indicator follow its
fault (``normal``, ``on-battery``, ``low-battery`` = on battery and low, ``replace-battery``), with
the recording's values when normal; outlet (group, receptacle) state and command columns are
writable and consistent with each other (rPDU state 1=on/2=off, rPDU2 state 1=off/2=on, the command
columns 1=on/2=off/3=reboot, Eaton's delay columns: 0 = now). A reboot turns the outlet off at once
and on again ``reboot_s`` seconds later. Everything else answers as recorded.

**snmpd fleet** (:func:`start_snmpd_fleet`): one net-snmp ``snmpd`` listening on many loopback
addresses (``127.20.0.1``, ``.2``, ...) given on its command line, answering RFC 1628 UPS objects
from ``override`` lines (static values, :data:`SNMPD_UPS_VALUES`); community ``public`` (or a v3
authPriv user). ~13,800 requests/s against snmpsim's ~250: for scale benches.

API (every function takes the lab directory; nothing here needs the service or a database)::

    lab = start_snmpsim(DIR, ups=4, pdu=2, port=None)   # -> SnmpsimLab; port None = a free one
    lab.devices                      # [LabDevice(name, kind, model, profile, host, port, community)]
    lab.devices[0].inventory_entry() # {"name", "kind", "model", "profile", "host", "port",
                                     #  "snmp_version": "2c", "community"}
    set_ups_fault(DIR, "lab-ups-001", "on-battery")   # normal | on-battery | low-battery | replace-battery
    ups_state(DIR, "lab-ups-001")    # {"on_battery": True, "low_battery": False, "replace_battery": False}
    outlet_states(DIR, "lab-pdu-001")            # {1: "on", 2: "off", ...} as the device holds them
    set_outlet_state(DIR, "lab-pdu-001", 3, "off")   # behind the agent's back (a tripped breaker)
    stop_snmpsim(DIR)                # True if it was running

    fleet = start_snmpd_fleet(DIR2, count=1000)   # -> SnmpdFleet(devices=[LabDevice...], pid, ...)
    stop_snmpd_fleet(DIR2)

``snmpsim-command-responder`` refuses to run as root unless ``SNMPSIM_ALLOW_ROOT=true``, which
:func:`start_snmpsim` sets for its child. ``DIR/snmpsim.json`` / ``DIR/snmpd.json`` record what runs.
"""

from __future__ import annotations

import bz2
import contextlib
import errno
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet.errors import FleetError, InputError, MissingDependency, NotFound, PortInUse
from fleet.lab._proc import cmdline_has, pid_alive, terminate
from fleet.lab.programs import LAB_EXTRA, SBIN_DIRS, require_package, require_program

__all__ = [
    "MODELS",
    "SNMPD_UPS_VALUES",
    "UPS_FAULTS",
    "LabDevice",
    "LabModel",
    "SnmpLabError",
    "SnmpdFleet",
    "SnmpsimLab",
    "build_template",
    "outlet_states",
    "set_outlet_state",
    "set_ups_fault",
    "set_ups_state",
    "snmp_ping",
    "snmpd_command",
    "snmpd_config",
    "snmpd_env",
    "spawn_snmpsim",
    "start_snmpd_fleet",
    "start_snmpsim",
    "stop_pid",
    "stop_snmpd_fleet",
    "stop_snmpsim",
    "track",
    "ups_state",
    "variation_dir",
]

SNMPSIM_FILE = "snmpsim.json"
SNMPD_FILE = "snmpd.json"
UPS_FAULTS = ("normal", "on-battery", "low-battery", "replace-battery")
VARIATION = "fleetdev"
_FLAGS = ("on_battery", "low_battery", "replace_battery")


class SnmpLabError(FleetError, RuntimeError):
    """A simulated SNMP agent could not be built or started (the message holds its log's tail)."""


def variation_dir() -> Path:
    """Rackfleet's snmpsim variation modules (``--variation-modules-dir``)."""
    return Path(__file__).resolve().parent / "snmpvariation"


def _snmpsim_data_dir() -> Path:
    try:
        import snmpsim_data
    except ImportError:
        raise MissingDependency("the snmpsim-data package is not installed", remedy=LAB_EXTRA) from None
    return Path(snmpsim_data.__file__).resolve().parent / "data"


# ---------------------------------------------------------------------------------------------
# Models: a recording plus the rules that make its battery and outlets per-device
# ---------------------------------------------------------------------------------------------

_Rule = dict[str, Callable[[int], int]]

#: Battery-dependent objects per MIB family: OID -> {condition: raw value from the recorded one}.
_BATTERY_RULES: dict[str, dict[str, _Rule]] = {
    "ietf": {
        "1.3.6.1.2.1.33.1.4.1.0": {"on_battery": lambda r: 5},                     # upsOutputSource: battery(5)
        "1.3.6.1.2.1.33.1.2.1.0": {"low_battery": lambda r: 3},                    # upsBatteryStatus: low(3)
        "1.3.6.1.2.1.33.1.2.2.0": {"on_battery": lambda r: 45},                    # upsSecondsOnBattery
        "1.3.6.1.2.1.33.1.2.3.0": {"on_battery": lambda r: round(r * 0.6),         # upsEstimatedMinutesRemaining
                                   "low_battery": lambda r: min(r, 2)},
        "1.3.6.1.2.1.33.1.2.4.0": {"on_battery": lambda r: max(0, r - 18),         # upsEstimatedChargeRemaining
                                   "low_battery": lambda r: min(r, 9)},
        "1.3.6.1.2.1.33.1.3.3.1.3.1": {"on_battery": lambda r: 0},                 # upsInputVoltage.1
    },
    "xups": {
        "1.3.6.1.4.1.534.1.4.5.0": {"on_battery": lambda r: 5},                    # xupsOutputSource: battery(5)
        "1.3.6.1.4.1.534.1.2.4.0": {"on_battery": lambda r: max(0, r - 18),        # xupsBatCapacity
                                    "low_battery": lambda r: min(r, 9)},
        "1.3.6.1.4.1.534.1.2.1.0": {"on_battery": lambda r: r if r == 65535 else round(r * 0.6),
                                    "low_battery": lambda r: r if r == 65535 else min(r, 120)},
        "1.3.6.1.4.1.534.1.2.5.0": {"on_battery": lambda r: 2},                    # xupsBatteryAbmStatus: discharging
        "1.3.6.1.4.1.534.1.3.4.1.2.1": {"on_battery": lambda r: 0},                # xupsInputVoltage.1
    },
    "apc-ups": {
        "1.3.6.1.4.1.318.1.1.1.4.1.1.0": {"on_battery": lambda r: 3},              # upsBasicOutputStatus: onBattery
        "1.3.6.1.4.1.318.1.1.1.2.1.1.0": {"low_battery": lambda r: 3},             # upsBasicBatteryStatus: low
        "1.3.6.1.4.1.318.1.1.1.2.2.4.0": {"replace_battery": lambda r: 2},         # upsAdvBatteryReplaceIndicator
        "1.3.6.1.4.1.318.1.1.1.2.1.2.0": {"on_battery": lambda r: 4500},           # upsBasicBatteryTimeOnBattery
        "1.3.6.1.4.1.318.1.1.1.2.3.1.0": {"on_battery": lambda r: round(r * 0.815),  # upsHighPrecBatteryCapacity
                                          "low_battery": lambda r: min(r, 95)},
        "1.3.6.1.4.1.318.1.1.1.2.2.1.0": {"on_battery": lambda r: int(r * 0.815),  # upsAdvBatteryCapacity
                                          "low_battery": lambda r: min(r, 9)},
        "1.3.6.1.4.1.318.1.1.1.2.2.3.0": {"on_battery": lambda r: round(r * 0.6),  # upsAdvBatteryRunTimeRemaining
                                          "low_battery": lambda r: min(r, 18000)},
        "1.3.6.1.4.1.318.1.1.1.3.2.1.0": {"on_battery": lambda r: 0},              # upsAdvInputLineVoltage
        "1.3.6.1.4.1.318.1.1.1.3.3.1.0": {"on_battery": lambda r: 0},              # upsHighPrecInputLineVoltage
    },
}


@dataclass(frozen=True)
class _OutletColumn:
    prefix: str          # the column OID, without the index
    role: str            # state | command | delay_off | delay_on
    values: Mapping[str, str] = field(default_factory=dict)  # on/off/reboot/pending_* -> raw
    idle_from_record: bool = False


@dataclass(frozen=True)
class _OutletFamily:
    truth: str                       # the column whose recorded value gives each outlet's initial state
    truth_states: Mapping[str, str]  # raw -> on | off
    columns: tuple[_OutletColumn, ...]


_OUTLET_RULES: dict[str, _OutletFamily] = {
    "rpdu": _OutletFamily(
        truth="1.3.6.1.4.1.318.1.1.12.3.3.1.1.4", truth_states={"1": "on", "2": "off"},
        columns=(
            _OutletColumn("1.3.6.1.4.1.318.1.1.12.3.3.1.1.4", "command", {"on": "1", "off": "2", "reboot": "3"}),
            _OutletColumn("1.3.6.1.4.1.318.1.1.12.3.5.1.1.4", "state", {"on": "1", "off": "2"}),
            _OutletColumn("1.3.6.1.4.1.318.1.1.26.9.2.3.1.5", "state", {"on": "2", "off": "1"}),  # rPDU2: inverted
            _OutletColumn("1.3.6.1.4.1.318.1.1.26.9.2.4.1.5", "command", {"on": "1", "off": "2", "reboot": "3"}),
            _OutletColumn("1.3.6.1.4.1.318.1.1.4.4.2.1.3", "command", {"on": "1", "off": "2", "reboot": "3"}),
        ),
    ),
    "apc-outlet-groups": _OutletFamily(
        truth="1.3.6.1.4.1.318.1.1.1.12.1.2.1.3", truth_states={"1": "on", "2": "off"},
        columns=(
            _OutletColumn("1.3.6.1.4.1.318.1.1.1.12.1.2.1.3", "state", {"on": "1", "off": "2"}),
            _OutletColumn("1.3.6.1.4.1.318.1.1.1.12.3.2.1.3", "command", {"on": "1", "off": "2", "reboot": "3"}),
        ),
    ),
    "xups-receptacles": _OutletFamily(
        truth="1.3.6.1.4.1.534.1.12.2.1.2", truth_states={"1": "on", "2": "off"},
        columns=(
            _OutletColumn("1.3.6.1.4.1.534.1.12.2.1.2", "state",
                          {"on": "1", "off": "2", "pending_off": "3", "pending_on": "4"}),
            _OutletColumn("1.3.6.1.4.1.534.1.12.2.1.3", "delay_off", idle_from_record=True),
            _OutletColumn("1.3.6.1.4.1.534.1.12.2.1.4", "delay_on", idle_from_record=True),
        ),
    ),
}


@dataclass(frozen=True)
class LabModel:
    """A simulated device model: its recording, hardware profile and the rules applied to it."""

    name: str
    kind: str                       # ups | pdu
    profile: str
    source: str                     # "snmpsim-data:UPS/x.snmprec[.bz2]" or "rackfleet:x.snmprec"
    battery: tuple[str, ...] = ()   # keys of _BATTERY_RULES
    outlets: tuple[str, ...] = ()   # keys of _OUTLET_RULES
    description: str = ""

    def source_path(self) -> Path:
        origin, _, rel = self.source.partition(":")
        if origin == "rackfleet":
            return variation_dir() / "data" / rel
        if origin == "snmpsim-data":
            return _snmpsim_data_dir() / rel
        raise SnmpLabError(f"model {self.name}: unknown recording origin {origin!r}")


MODELS: Mapping[str, LabModel] = {m.name: m for m in (
    LabModel("apc-smart-ups", "ups", "apc-smart-ups", "rackfleet:apc-smart-ups.snmprec",
             ("apc-ups",), ("apc-outlet-groups",), "APC Smart-UPS 3000 (NMC2), PowerNet-MIB, 3 outlet groups"),
    LabModel("eaton-9px", "ups", "eaton-9px", "snmpsim-data:UPS/eaton-9px-partial.snmprec.bz2",
             ("xups",), ("xups-receptacles",), "Eaton 9PX 2200i, XUPS-MIB, 2 receptacles"),
    LabModel("eaton-93e", "ups", "eaton-9px", "snmpsim-data:UPS/eaton-93e-80.snmprec.bz2",
             ("xups", "ietf"), (), "Eaton 93E 80 kVA, XUPS-MIB and RFC 1628"),
    LabModel("ietf-ups", "ups", "generic-ups-mib", "snmpsim-data:UPS/phoenixtec-power.snmprec.bz2",
             ("ietf",), (), "Phoenixtec UPS, RFC 1628 only"),
    LabModel("apc-7902b", "pdu", "apc-rpdu", "snmpsim-data:UPS/apc-7902b.snmprec",
             (), ("rpdu",), "APC AP7902B switched rack PDU, 16 outlets"),
    LabModel("apc-8641", "pdu", "apc-rpdu", "snmpsim-data:UPS/apc-8641.snmprec",
             (), ("rpdu",), "APC AP8641 switched rack PDU, 24 outlets"),
    LabModel("apc-8932", "pdu", "apc-rpdu", "snmpsim-data:UPS/apc-8932.snmprec",
             (), ("rpdu",), "APC AP8932 switched rack PDU, 24 outlets"),
)}

DEFAULT_UPS_MODELS = ("apc-smart-ups", "eaton-9px", "eaton-93e", "ietf-ups")
DEFAULT_PDU_MODELS = ("apc-7902b", "apc-8641", "apc-8932")

_NUMERIC_TAGS = {"2", "65", "66", "67", "70"}
_SYS_NAME = "1.3.6.1.2.1.1.5.0"


def _read_records(path: Path) -> list[str]:
    raw = bz2.decompress(path.read_bytes()) if path.suffix == ".bz2" else path.read_bytes()
    return [line for line in raw.decode("latin-1").splitlines() if line.strip() and not line.startswith("#")]


def _oid_key(oid: str) -> tuple[int, ...]:
    return tuple(int(x) for x in oid.split("."))


def build_template(model: LabModel | str, dest: str | os.PathLike[str]) -> dict[str, Any]:
    """Write ``model``'s rewritten recording to ``dest``; return what the lab must know about it.

    The answer: ``{"outlets": {"<n>": "on"|"off"}}``, each outlet's initial state as recorded.
    Records that referenced snmpsim's stock ``writecache`` become plain values (read-only names);
    any other stock variation left in the file is an error, so the agent needs only our module.
    """
    m = MODELS[model] if isinstance(model, str) else model
    records = _read_records(m.source_path())
    parsed: list[tuple[str, str, str]] = []
    for line in records:
        oid, tag, value = line.split("|", 2)
        parsed.append((oid, tag, value))
    by_oid = {oid: (tag, value) for oid, tag, value in parsed}

    battery: dict[str, _Rule] = {}
    for fam in m.battery:
        battery.update(_BATTERY_RULES[fam])
    initial: dict[str, str] = {}
    columns: list[_OutletColumn] = []
    for fam in m.outlets:
        family = _OUTLET_RULES[fam]
        prefix = family.truth + "."
        for oid, (tag, value) in by_oid.items():
            if oid.startswith(prefix):
                raw = value if ":" not in tag else ""
                if raw not in family.truth_states:
                    raise SnmpLabError(f"{m.name}: outlet {oid} reads {value!r}, "
                                       f"not one of {sorted(family.truth_states)}")
                initial[oid[len(prefix):]] = family.truth_states[raw]
        columns.extend(family.columns)

    out: list[str] = [f"# Rackfleet lab template {m.name} from {m.source}; rewritten for the {VARIATION} variation."]
    for oid, tag, value in sorted(parsed, key=lambda r: _oid_key(r[0])):
        base_tag, _, module = tag.partition(":")
        if oid == _SYS_NAME:
            out.append(f"{oid}|{base_tag.rstrip('xe')}:{VARIATION}|role=name")
            continue
        rule = battery.get(oid)
        if rule is not None and base_tag in _NUMERIC_TAGS and not module:
            recorded = int(value)
            params = [f"normal={recorded}"] + [f"{cond}={fn(recorded)}" for cond, fn in rule.items()]
            out.append(f"{oid}|{base_tag}:{VARIATION}|{','.join(params)}")
            continue
        replaced = False
        for col in columns:
            if not oid.startswith(col.prefix + "."):
                continue
            index = oid[len(col.prefix) + 1:]
            if "." in index or index not in initial:
                continue
            params = [f"outlet={index}", f"role={col.role}"]
            if col.role in ("state", "command"):
                params += [f"{k}={v}" for k, v in col.values.items()] + [f"initial={initial[index]}"]
            else:
                params.append(f"idle={int(value) if not module else -1}")
            out.append(f"{oid}|{base_tag}:{VARIATION}|{','.join(params)}")
            replaced = True
            break
        if replaced:
            continue
        if module == "writecache":
            settings = dict(item.split("=", 1) for item in value.split(",") if "=" in item)
            if "value" not in settings:
                raise SnmpLabError(f"{m.name}: writecache record {oid} has no value")
            out.append(f"{oid}|{base_tag}|{settings['value']}")
            continue
        if module:
            raise SnmpLabError(f"{m.name}: record {oid} uses the stock variation {module!r}; add a rule for it")
        out.append(f"{oid}|{tag}|{value}")
    target = Path(dest)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text("\n".join(out) + "\n", encoding="latin-1")
    tmp.replace(target)
    return {"outlets": dict(sorted(initial.items(), key=lambda kv: int(kv[0])))}


# ---------------------------------------------------------------------------------------------
# Devices and labs
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabDevice:
    """One simulated SNMP device, as an inventory entry needs it."""

    name: str
    kind: str
    model: str
    profile: str
    host: str
    port: int
    community: str
    snmp_version: str = "2c"

    def inventory_entry(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "model": self.model, "profile": self.profile,
                "host": self.host, "port": self.port, "snmp_version": self.snmp_version,
                "community": self.community}


@dataclass
class SnmpsimLab:
    """A running snmpsim agent and the devices it serves (``DIR/snmpsim.json``)."""

    directory: Path
    pid: int
    host: str
    port: int
    devices: list[LabDevice]
    models: dict[str, dict[str, Any]]
    reboot_s: float
    startup_s: float = 0.0

    @property
    def state_dir(self) -> Path:
        return self.directory / "state"

    def device(self, name: str) -> LabDevice:
        for d in self.devices:
            if d.name == name:
                return d
        raise NotFound(f"no simulated SNMP device {name!r} in {self.directory}")

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "host": self.host, "port": self.port, "reboot_s": self.reboot_s,
                "startup_s": self.startup_s, "models": self.models,
                "devices": [d.inventory_entry() for d in self.devices]}

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> SnmpsimLab:
        root = Path(directory)
        try:
            doc = json.loads((root / SNMPSIM_FILE).read_text())
        except FileNotFoundError:
            raise NotFound(f"no snmpsim lab in {root} (no {SNMPSIM_FILE})") from None
        devices = [LabDevice(d["name"], d["kind"], d["model"], d["profile"], d["host"], d["port"], d["community"],
                             d.get("snmp_version", "2c")) for d in doc["devices"]]
        return cls(root, doc["pid"], doc["host"], doc["port"], devices, doc["models"], doc["reboot_s"],
                   doc.get("startup_s", 0.0))


def _check_udp_port(host: str, port: int) -> None:
    """:class:`~fleet.errors.PortInUse` if UDP ``host:port`` is taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(f"the lab's SNMP port {host}:{port} (UDP) is in use",
                                remedy="stop what listens there or choose another port") from None
            raise


def _free_udp_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _check_loopback(host: str) -> None:
    import ipaddress

    if not ipaddress.IPv4Address(host).is_loopback:
        raise InputError(f"lab agents listen on loopback only (127.0.0.0/8), not {host}")




#: Children started here, by PID, so that stopping one also settles its Popen (no "still running"
#: ResourceWarning when the object is collected).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def track(proc: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
    """Remember a background child so that :func:`stop_pid` can settle its Popen; returns it."""
    _CHILDREN[proc.pid] = proc
    return proc


def stop_pid(pid: int, marker: bytes, timeout: float = 10.0) -> bool:
    """SIGTERM ``pid`` (then SIGKILL) if it is alive and its command line holds ``marker``."""
    proc = _CHILDREN.pop(pid, None)
    try:
        return terminate(pid, lambda p: cmdline_has(p, marker), timeout=timeout)
    finally:
        if proc is not None:
            proc.poll()  # reaped above: Popen learns it (ECHILD) and stops worrying


def snmp_ping(host: str, port: int, community: str, *, oid: str = "1.3.6.1.2.1.1.2.0",
              timeout: float = 0.5) -> Any:
    """One blocking SNMP v2c GET of ``oid``; the value, or None if nothing answered in ``timeout``."""
    from pyasn1.codec.ber import decoder, encoder
    from pysnmp.proto import api

    p = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]
    pdu = p.GetRequestPDU()
    p.apiPDU.set_defaults(pdu)
    p.apiPDU.set_varbinds(pdu, [(oid, p.Null(""))])
    msg = p.Message()
    p.apiMessage.set_defaults(msg)
    p.apiMessage.set_community(msg, community)
    p.apiMessage.set_pdu(msg, pdu)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(encoder.encode(msg), (host, port))
            data, _ = s.recvfrom(65535)
        except (TimeoutError, ConnectionRefusedError):
            return None
    rsp, _ = decoder.decode(data, asn1Spec=p.Message())
    varbinds = p.apiPDU.get_varbinds(p.apiMessage.get_pdu(rsp))
    return varbinds[0][1] if varbinds else None


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


def _plan(ups: int, pdu: int, ups_models: Sequence[str], pdu_models: Sequence[str],
          prefix: str) -> list[tuple[str, LabModel]]:
    for name in (*ups_models, *pdu_models):
        if name not in MODELS:
            raise InputError(f"unknown lab SNMP model {name!r}; models: {', '.join(MODELS)}")
    if (ups and not ups_models) or (pdu and not pdu_models):
        raise InputError("no models to build the requested devices from")
    width = max(3, len(str(max(ups, pdu, 1))))
    out = [(f"{prefix}ups-{i + 1:0{width}d}", MODELS[ups_models[i % len(ups_models)]]) for i in range(ups)]
    out += [(f"{prefix}pdu-{i + 1:0{width}d}", MODELS[pdu_models[i % len(pdu_models)]]) for i in range(pdu)]
    return out


def start_snmpsim(directory: str | os.PathLike[str], *, ups: int = 4, pdu: int = 2, host: str = "127.0.0.1",
                  port: int | None = None, ups_models: Sequence[str] = DEFAULT_UPS_MODELS,
                  pdu_models: Sequence[str] = DEFAULT_PDU_MODELS, prefix: str = "lab-",
                  reboot_s: float = 2.0, timeout: float = 120.0, python: str | None = None) -> SnmpsimLab:
    """Start one snmpsim agent serving ``ups`` UPSes and ``pdu`` PDUs on ``host:port`` (v2c community = name).

    Devices are named ``{prefix}ups-001``..., ``{prefix}pdu-001``..., their models taken in turn from
    ``ups_models`` / ``pdu_models``. Returns once the agent answers the last device's sysName.
    The directory holds ``templates/``, ``data/`` (hard links), ``state/``, ``cache/``,
    ``snmpsim.log`` and ``snmpsim.json``; an earlier lab's device state there is cleared.
    """
    _check_loopback(host)
    if ups < 0 or pdu < 0 or ups + pdu == 0:
        raise InputError("an snmpsim lab needs at least one device")
    require_package("snmpsim", "snmpsim")
    require_package("snmpsim_data", "snmpsim-data")
    if port:
        _check_udp_port(host, port)
    root = Path(directory).resolve()
    root.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(NotFound):
        old = SnmpsimLab.load(root)
        if pid_alive(old.pid) and cmdline_has(old.pid, b"snmpsim"):
            raise InputError(f"an snmpsim lab (pid {old.pid}) already runs in {root}; stop it first")
    plan = _plan(ups, pdu, ups_models, pdu_models, prefix)
    for sub in ("data", "state", "cache"):
        shutil.rmtree(root / sub, ignore_errors=True)
        (root / sub).mkdir()
    models: dict[str, dict[str, Any]] = {}
    for _, model in plan:
        if model.name not in models:
            info = build_template(model, root / "templates" / f"{model.name}.snmprec")
            models[model.name] = {"kind": model.kind, "profile": model.profile, **info}
    indexes = {m: _build_index(root / "templates" / f"{m}.snmprec", root / "cache") for m in models}
    for name, model in plan:
        data_file = root / "data" / f"{name}.snmprec"
        os.link(root / "templates" / f"{model.name}.snmprec", data_file)
        base = _index_base(data_file, root / "cache")
        for suffix, path in indexes[model.name]:
            os.link(path, f"{base}{suffix}")
    port = port or _free_udp_port(host)
    t0 = time.monotonic()
    pid = spawn_snmpsim(root / "data", workdir=root, host=host, port=port, state_dir=root / "state",
                        reboot_s=reboot_s, wait_community=plan[-1][0], timeout=timeout, python=python)
    devices = [LabDevice(name, model.kind, model.name, model.profile, host, port, name) for name, model in plan]
    lab = SnmpsimLab(root, pid, host, port, devices, models, reboot_s, round(time.monotonic() - t0, 2))
    _write_json(root / SNMPSIM_FILE, lab.to_json())
    return lab


def _index_base(text_file: Path, cache: Path) -> str:
    """Where snmpsim looks for a data file's index (snmpsim.record.search.database.RecordIndex)."""
    stem = str(text_file)
    stem = stem[: stem.rindex(os.path.extsep)] if os.path.extsep in os.path.basename(stem) else stem
    return os.path.join(cache, os.path.splitdrive(stem + os.path.extsep + "dbm")[1].replace(os.path.sep, "_"))


def _build_index(template: Path, cache: Path) -> list[tuple[str, Path]]:
    """Index ``template`` once, as snmpsim would; return (suffix, file) of the index files.

    Every device's data file is a hard link to its template, so their indexes are the same bytes:
    hard-linking the template's index under each device's index name spares snmpsim indexing
    every device at start-up (1,000 devices: 20 s and 360 MB of cache without this). The template
    is dated a minute back so that snmpsim finds every index newer than its data file.
    """
    from snmpsim import confdir
    from snmpsim.record.search.database import RecordIndex
    from snmpsim.variation import SnmprecRecord

    past = time.time() - 60
    os.utime(template, (past, past))
    cache.mkdir(parents=True, exist_ok=True)
    saved = confdir.cache
    confdir.cache = str(cache)
    try:
        RecordIndex(str(template), SnmprecRecord()).create(force_index_build=True)
    finally:
        confdir.cache = saved
    base = _index_base(template, cache)
    files = [(p.name[len(os.path.basename(base)):], p) for p in cache.iterdir()
             if p.name.startswith(os.path.basename(base) + ".") or p.name == os.path.basename(base)]
    if not files:
        raise SnmpLabError(f"snmpsim left no index for {template} in {cache}")
    return files


# snmpsim keeps at most 31 data files (and their indexes) open and reopens the others on every
# request, which makes an agent of 1,000 devices 3x slower; keep them all open (one fd each).
_SNMPSIM_MAIN = ("import sys; from snmpsim import datafile; datafile.DataFile.max_queue_entries = 1 << 20; "
                 "from snmpsim.commands.responder import main; sys.argv[0] = 'snmpsim'; sys.exit(main())")


def spawn_snmpsim(data_dir: str | os.PathLike[str], *, workdir: str | os.PathLike[str], host: str, port: int,
                  state_dir: str | os.PathLike[str] | None = None, reboot_s: float = 2.0,
                  wait_community: str | None = None, timeout: float = 120.0, python: str | None = None) -> int:
    """Run ``snmpsim-command-responder`` on ``data_dir`` at ``host:port`` in the background; return its PID.

    With ``state_dir`` our variation modules are loaded (``fleetdev`` keeps device state there);
    without, the agent serves plain recordings. ``workdir`` receives ``cache/`` and ``snmpsim.log``.
    Returns once ``wait_community`` (default: the first data file's name) answers sysObjectID or
    sysName; stop it with :func:`stop_pid`.
    """
    _check_loopback(host)
    require_package("snmpsim", "snmpsim")
    _check_udp_port(host, port)
    work = Path(workdir)
    (work / "cache").mkdir(parents=True, exist_ok=True)
    logfile = work / "snmpsim.log"
    if wait_community is None:
        names = sorted(f.name.split(".snmprec")[0] for f in Path(data_dir).iterdir() if ".snmprec" in f.name)
        if not names:
            raise SnmpLabError(f"no .snmprec files in {data_dir}")
        wait_community = names[0]
    args = [python or sys.executable, "-c",
            _SNMPSIM_MAIN, f"--cache-dir={work / 'cache'}", "--log-level=error", f"--logging-method=file:{logfile}"]
    if state_dir is not None:
        args += [f"--variation-modules-dir={variation_dir()}",
                 f"--variation-module-options={VARIATION}:state={state_dir},reboot_s={reboot_s}"]
    # engine options last: each engine starts at --v3-engine-id
    args += ["--v3-engine-id=auto", f"--data-dir={data_dir}", f"--agent-udpv4-endpoint={host}:{port}"]
    env = dict(os.environ, SNMPSIM_ALLOW_ROOT="true")
    with open(logfile, "ab") as out:
        proc = track(subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                      start_new_session=True, env=env))
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise SnmpLabError(f"snmpsim exited with status {proc.returncode}:\n{_tail(logfile)}")
        if snmp_ping(host, port, wait_community, timeout=0.3) is not None:
            return proc.pid
        if time.monotonic() > deadline:
            stop_pid(proc.pid, b"snmpsim")
            raise SnmpLabError(f"snmpsim did not answer within {timeout} s:\n{_tail(logfile)}")


def stop_snmpsim(directory: str | os.PathLike[str] | SnmpsimLab) -> bool:
    """Stop the snmpsim agent of a lab directory by its PID; True if it was running."""
    root = directory.directory if isinstance(directory, SnmpsimLab) else Path(directory)
    try:
        lab = SnmpsimLab.load(root)
    except NotFound:
        return False
    stopped = stop_pid(lab.pid, b"snmpsim")
    (root / SNMPSIM_FILE).unlink(missing_ok=True)
    return stopped


def _write_json(path: Path, doc: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
    tmp.replace(path)


# ---------------------------------------------------------------------------------------------
# Fault and outlet control (the same state files the variation module reads)
# ---------------------------------------------------------------------------------------------


def _state_paths(lab: SnmpsimLab, device: str) -> tuple[Path, Path]:
    lab.device(device)
    return lab.state_dir / f"{device}.json", lab.state_dir / f"{device}.lock"


def _read_state(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _update_state(lab: SnmpsimLab, device: str, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    import fcntl

    path, lock = _state_paths(lab, device)
    with open(lock, "a") as lf:
        fcntl.flock(lf, fcntl.LOCK_EX)
        state = _read_state(path)
        change(state)
        _write_json(path, state)
    return state


def _lab(directory: str | os.PathLike[str] | SnmpsimLab) -> SnmpsimLab:
    return directory if isinstance(directory, SnmpsimLab) else SnmpsimLab.load(directory)


def set_ups_state(directory: str | os.PathLike[str] | SnmpsimLab, device: str, *, on_battery: bool | None = None,
                  low_battery: bool | None = None, replace_battery: bool | None = None) -> dict[str, bool]:
    """Set a simulated UPS's battery flags (None leaves one as it is); return all three."""
    lab = _lab(directory)
    if lab.device(device).kind != "ups":
        raise InputError(f"{device} is a {lab.device(device).kind}, not a UPS")
    wanted = {"on_battery": on_battery, "low_battery": low_battery, "replace_battery": replace_battery}

    def change(state: dict[str, Any]) -> None:
        for key, value in wanted.items():
            if value is not None:
                state[key] = bool(value)

    state = _update_state(lab, device, change)
    return {k: bool(state.get(k)) for k in _FLAGS}


def set_ups_fault(directory: str | os.PathLike[str] | SnmpsimLab, device: str, fault: str) -> dict[str, bool]:
    """``normal`` | ``on-battery`` | ``low-battery`` (on battery and low) | ``replace-battery`` (on line)."""
    if fault not in UPS_FAULTS:
        raise InputError(f"unknown UPS fault {fault!r}; faults: {', '.join(UPS_FAULTS)}")
    flags = {
        "normal": (False, False, False),
        "on-battery": (True, False, False),
        "low-battery": (True, True, False),
        "replace-battery": (False, False, True),
    }[fault]
    return set_ups_state(directory, device, on_battery=flags[0], low_battery=flags[1], replace_battery=flags[2])


def ups_state(directory: str | os.PathLike[str] | SnmpsimLab, device: str) -> dict[str, bool]:
    """A simulated UPS's battery flags as its agent answers them."""
    lab = _lab(directory)
    path, _ = _state_paths(lab, device)
    state = _read_state(path)
    return {k: bool(state.get(k)) for k in _FLAGS}


def outlet_states(directory: str | os.PathLike[str] | SnmpsimLab, device: str) -> dict[int, str]:
    """Each outlet's state (``on``/``off``) as the simulated device holds it, pending changes applied."""
    lab = _lab(directory)
    d = lab.device(device)
    path, _ = _state_paths(lab, device)
    state = _read_state(path)
    now = time.time()
    out: dict[int, str] = {}
    for outlet, initial in lab.models[d.model].get("outlets", {}).items():
        value = state.get("outlets", {}).get(outlet, initial)
        pending = state.get("pending", {}).get(outlet)
        if pending is not None and now >= pending["at"]:
            value = pending["state"]
        out[int(outlet)] = value
    return out


def set_outlet_state(directory: str | os.PathLike[str] | SnmpsimLab, device: str, outlet: int, state: str) -> None:
    """Switch a simulated outlet behind the agent's back (no SNMP): a breaker, a person at the PDU."""
    if state not in ("on", "off"):
        raise InputError(f"outlet state must be on or off, not {state!r}")
    lab = _lab(directory)
    if str(outlet) not in lab.models[lab.device(device).model].get("outlets", {}):
        raise InputError(f"{device} has no outlet {outlet}")

    def change(doc: dict[str, Any]) -> None:
        doc.setdefault("outlets", {})[str(outlet)] = state
        doc.setdefault("pending", {}).pop(str(outlet), None)

    _update_state(lab, device, change)


# ---------------------------------------------------------------------------------------------
# The snmpd fleet
# ---------------------------------------------------------------------------------------------

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
    from .bmcserver import ensure_fd_limit, loopback_hosts

    if count < 1:
        raise InputError("an snmpd fleet needs at least one device")
    _check_loopback(first_host)
    root = Path(directory).resolve()
    root.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(NotFound):
        old = SnmpdFleet.load(root)
        if pid_alive(old.pid) and cmdline_has(old.pid, b"snmpd"):
            raise InputError(f"an snmpd fleet (pid {old.pid}) already runs in {root}; stop it first")
    hosts = loopback_hosts(count, first=first_host)
    if port is None:
        port = 161 if os.geteuid() == 0 else _free_udp_port(hosts[0])
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
            raise SnmpLabError(f"snmpd exited with status {proc.returncode}:\n{_tail(log)}")
        # snmpd logs its version once every endpoint is open (it exits if one cannot be bound);
        # only then does an answer come from this snmpd and not from another on the same address
        if log.exists() and "NET-SNMP version" in _tail(log) and proc.poll() is None and (
                not community or snmp_ping(hosts[-1], port, community, timeout=0.3) is not None):
            break
        if time.monotonic() > deadline:
            stop_pid(proc.pid, b"snmpd")
            raise SnmpLabError(f"snmpd did not answer on {hosts[-1]}:{port} within {timeout} s:\n{_tail(log)}")
        time.sleep(0.05)
    devices = [LabDevice(f"{prefix}{i + 1:05d}", "ups", "snmpd-ups", "generic-ups-mib", h, port, community,
                         "3" if v3_user and not community else "2c") for i, h in enumerate(hosts)]
    fleet = SnmpdFleet(root, proc.pid, port, devices, community, v3_user, round(time.monotonic() - t0, 2))
    _write_json(root / SNMPD_FILE, fleet.to_json())
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
