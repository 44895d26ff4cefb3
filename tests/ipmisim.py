"""OpenIPMI ``ipmi_sim`` instances for real-peer tests, and the independent clients that check them.

Each instance is one BMC: its own loopback address ``127.0.N.M`` (port 623 when we are root, else a
free high port), its own ``lan.conf``, emulation file, state directory and chassis-control state,
all in a temporary directory removed on exit. It is started with ``-n`` (no console, no daemon) and
stopped by its PID, never by name.

What every instance holds (the data the tests assert and that our own lab BMC must answer alike):

- the MC ``mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02`` (OpenIPMI's ipmisim1.emu:
  manufacturer 0x1291 MontaVista, product 0x0f02), a SEL, user ``admin``/``password`` (admin);
- :data:`SENSORS`: threshold sensors with full SDRs (``main_sdr_add``), thresholds and raw values,
  plus a memory sensor with a compact SDR;
- :data:`SEL_EVENTS`: SEL entries, among them an uncorrectable memory ECC error (ipmi_sim stamps
  each entry with its own monotonic clock, so the timestamps are "pre-init" values);
- a FRU (device 0) with chassis, board and product areas whose serials carry the instance number
  (:meth:`IpmiSim.fru_fields`), so a test can tell which BMC answered;
- a ``chassis_control`` script of ours (:data:`CHASSIS_SCRIPT`) that keeps ``power`` and ``boot``
  in a state file and appends every ``set`` to a log: ipmi_sim runs ``SCRIPT get power`` (expects
  ``power:0``), ``SCRIPT set power 1|0``, ``set reset 1``, ``set shutdown 1``,
  ``set boot pxe|none|cdrom|bios|default``. A soft shutdown turns power off at once.

ipmi_sim offers cipher suites 0-11 only (no 17); the helpers use ``-C 3``.

Use::

    with ipmi_sim(count=3) as sims:          # skips (or fails under FLEET_REQUIRE_PEERS=1) without ipmi_sim
        sim = sims[0]
        sim.ipmitool("chassis", "power", "status").stdout   # 'Chassis Power is on'
        sim.power_state()                                    # 'on', as the chassis script sees it

    sims = ipmi_sim_fixture(count=20, scope="module")       # in a test module: a fixture named ``sims``
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from .peers import missing_peer

__all__ = [
    "CHASSIS_SCRIPT",
    "MANUFACTURER_ID",
    "PRODUCT_ID",
    "SEL_EVENTS",
    "SENSORS",
    "IpmiSim",
    "SimSelEvent",
    "SimSensor",
    "freeipmi_available",
    "ipmi_ping",
    "ipmi_sim",
    "ipmi_sim_fixture",
    "ipmitool_available",
    "reserve_loopback",
]

IPMI_SIM = "ipmi_sim"
USER = "admin"
PASSWORD = "password"
MANUFACTURER_ID = 0x1291
PRODUCT_ID = 0x0F02
#: Seconds an external client command may take before the harness gives up on it.
CLIENT_TIMEOUT = 20.0

# ---------------------------------------------------------------------------------------------
# The emulated hardware
# ---------------------------------------------------------------------------------------------

_THRESHOLD_BITS = ("lnc", "lc", "lnr", "unc", "uc", "unr")  # bit 0 .. bit 5, as in the SDR masks
#: Scanning on (else readings are "unavailable"), no event generation: the SEL holds only SEL_EVENTS.
_SCANNING_NO_EVENTS = "enable scanning per-state " + " ".join(["0" * 15] * 4)


@dataclasses.dataclass(frozen=True)
class SimSensor:
    """A threshold sensor: ``value = (m * raw + b) * 10**r_exp`` in ``unit``.

    ``thresholds`` maps ``lnc lc lnr unc uc unr`` to raw bytes; :meth:`threshold_values` gives them
    converted. ``sensor_type``/``unit_code`` are the IPMI codes (temperature 0x01 / degrees C 1,
    voltage 0x02 / volts 4, fan 0x04 / RPM 18).
    """

    number: int
    name: str
    kind: str
    sensor_type: int
    unit_code: int
    unit: str
    raw: int
    m: int = 1
    b: int = 0
    r_exp: int = 0
    entity_id: int = 0x07  # system board
    thresholds: dict[str, int] = dataclasses.field(default_factory=dict)
    expected_state: str = "ok"

    def convert(self, raw: int) -> float:
        return round((self.m * raw + self.b) * 10.0 ** self.r_exp, 6)

    @property
    def value(self) -> float:
        return self.convert(self.raw)

    def threshold_values(self) -> dict[str, float]:
        return {k: self.convert(v) for k, v in self.thresholds.items()}

    def sdr(self) -> bytes:
        """A Full Sensor Record (SDR type 0x01, IPMI 2.0 table 43-1)."""
        mask = sum(1 << _THRESHOLD_BITS.index(k) for k in self.thresholds)
        th = [self.thresholds.get(k, 0) for k in ("unr", "uc", "unc", "lnr", "lc", "lnc")]
        name = self.name.encode("ascii")
        body = bytes([
            0x20, 0x00, self.number,            # owner id, owner LUN, sensor number
            self.entity_id, 0x01,               # entity id, instance
            0x7F, 0x68,                         # initialisation, capabilities (thresholds readable+settable)
            self.sensor_type, 0x01,             # sensor type, event/reading type: threshold
            0x00, 0x00, 0x00, 0x00,             # assertion / deassertion event masks
            mask, mask,                         # readable, settable threshold masks
            0x00, self.unit_code, 0x00,         # units 1 (unsigned), base unit, modifier unit
            0x00,                               # linear
            self.m & 0xFF, (self.m >> 8 & 0x3) << 6,
            self.b & 0xFF, (self.b >> 8 & 0x3) << 6,
            0x00,                               # accuracy, direction
            ((self.r_exp & 0xF) << 4) | 0x0,    # R (result) exponent, B exponent
            0x00, 0x00, 0x00, 0x00,             # analog flags, nominal, normal max, normal min
            0xFF, 0x00,                         # sensor maximum, minimum reading
            *th,                                # unr uc unc lnr lc lnc
            0x00, 0x00,                         # hysteresis + / -
            0x00, 0x00, 0x00,                   # reserved, reserved, OEM
            0xC0 | len(name), *name,
        ])
        return bytes([0x00, 0x00, 0x51, 0x01, len(body)]) + body

    def emu_lines(self) -> list[str]:
        enabled = "".join("1" if k in self.thresholds else "0" for k in reversed(_THRESHOLD_BITS))
        values = " ".join(f"{self.thresholds.get(k, 0):#04x}" for k in reversed(_THRESHOLD_BITS))
        return [
            f"sensor_add 0x20 0 {self.number} {self.sensor_type:#04x} 0x01",
            f"sensor_set_threshold 0x20 0 {self.number} settable {enabled} {values}",
            f"sensor_set_event_support 0x20 0 {self.number} {_SCANNING_NO_EVENTS}",
            f"sensor_set_value 0x20 0 {self.number} {self.raw:#04x} 0",
            f"main_sdr_add 0x20 {_hexbytes(self.sdr())}",
        ]


@dataclasses.dataclass(frozen=True)
class SimDiscreteSensor:
    """A sensor-specific discrete sensor with a Compact Sensor Record (SDR type 0x02)."""

    number: int
    name: str
    sensor_type: int
    entity_id: int = 0x20  # memory device

    def sdr(self) -> bytes:
        name = self.name.encode("ascii")
        body = bytes([
            0x20, 0x00, self.number, self.entity_id, 0x01,
            0x63, 0x40,                         # initialisation, capabilities
            self.sensor_type, 0x6F,             # sensor type, sensor-specific event/reading type
            0x3F, 0x00, 0x3F, 0x00, 0x3F, 0x00,  # assertion, deassertion, reading masks (offsets 0-5)
            0x00, 0x00, 0x00,                   # units
            0x01, 0x00,                         # record sharing: one sensor
            0x00, 0x00,                         # hysteresis
            0x00, 0x00, 0x00, 0x00,             # reserved x3, OEM
            0xC0 | len(name), *name,
        ])
        return bytes([0x00, 0x00, 0x51, 0x02, len(body)]) + body

    def emu_lines(self) -> list[str]:
        return [
            f"sensor_add 0x20 0 {self.number} {self.sensor_type:#04x} 0x6f",
            f"sensor_set_event_support 0x20 0 {self.number} {_SCANNING_NO_EVENTS}",
            f"main_sdr_add 0x20 {_hexbytes(self.sdr())}",
        ]


#: The threshold sensors every instance has. "Exhaust Temp" reads above its upper critical threshold.
SENSORS: tuple[SimSensor, ...] = (
    SimSensor(1, "CPU Temp", "temperature", 0x01, 1, "celsius", raw=45, entity_id=0x03,
              thresholds={"unc": 75, "uc": 85, "unr": 95}),
    SimSensor(2, "Inlet Temp", "temperature", 0x01, 1, "celsius", raw=24, entity_id=0x37,
              thresholds={"lnc": 5, "lc": 3, "unc": 42, "uc": 47}),
    SimSensor(3, "Exhaust Temp", "temperature", 0x01, 1, "celsius", raw=88, entity_id=0x37,
              thresholds={"unc": 70, "uc": 85}, expected_state="critical"),
    SimSensor(4, "Fan1", "fan", 0x04, 18, "rpm", raw=90, m=60, entity_id=0x1D,
              thresholds={"lc": 10, "lnc": 14}),
    SimSensor(5, "12V", "voltage", 0x02, 4, "volts", raw=200, m=6, r_exp=-2,
              thresholds={"lc": 180, "lnc": 190, "unc": 210, "uc": 220}),
)
#: The memory sensor the ECC events name.
MEMORY_SENSOR = SimDiscreteSensor(6, "DIMM A1", 0x0C)


@dataclasses.dataclass(frozen=True)
class SimSelEvent:
    """A system event record (type 0x02): sensor type/number, event type, direction and data 1-3."""

    sensor_type: int
    sensor_number: int
    event_type: int
    data: tuple[int, int, int]
    description: str
    severity: str
    deassertion: bool = False

    def emu_line(self) -> str:
        # byte 1-4 timestamp (ipmi_sim replaces it), generator id 0x0020 (BMC), EvM rev 0x04
        direction = self.event_type | (0x80 if self.deassertion else 0)
        event = [0, 0, 0, 0, 0x20, 0x00, 0x04, self.sensor_type, self.sensor_number, direction, *self.data]
        return f"sel_add 0x20 0x02 {_hexbytes(bytes(event))}"


#: SEL entries, in record order (record ids 1, 2, 3).
SEL_EVENTS: tuple[SimSelEvent, ...] = (
    SimSelEvent(0x0C, MEMORY_SENSOR.number, 0x6F, (0x00, 0xFF, 0xFF), "Correctable ECC", "warning"),
    SimSelEvent(0x01, 3, 0x01, (0x59, 88, 85), "Upper Critical going high", "critical"),
    SimSelEvent(0x0C, MEMORY_SENSOR.number, 0x6F, (0x01, 0xFF, 0xFF), "Uncorrectable ECC", "critical"),
)


def _hexbytes(data: bytes) -> str:
    return " ".join(f"0x{b:02x}" for b in data)


# --- FRU (IPMI Platform Management FRU Information Storage Definition v1.0) -------------------


def _fru_field(text: str) -> bytes:
    raw = text.encode("ascii")
    if len(raw) > 63:
        raise ValueError(f"FRU field too long: {text!r}")
    return bytes([0xC0 | len(raw)]) + raw


def _fru_area(head: bytes, fields: Sequence[str]) -> bytes:
    body = bytearray(head)
    for f in fields:
        body += _fru_field(f)
    body += b"\xc1"  # end of fields
    while (len(body) + 2 + 1) % 8:  # version + length bytes come first, checksum last
        body += b"\x00"
    area = bytearray([0x01, (len(body) + 3) // 8]) + body
    area.append(-sum(area) & 0xFF)
    return bytes(area)


def build_fru(fields: dict[str, str]) -> bytes:
    """A FRU image with chassis, board and product areas holding ``fields`` (see :meth:`IpmiSim.fru_fields`)."""
    chassis = _fru_area(bytes([0x17]), [fields["chassis_part"], fields["chassis_serial"]])  # 0x17: rack mount
    board = _fru_area(bytes([0x00, 0x00, 0x00, 0x00]),  # English, mfg date unspecified
                      [fields["board_manufacturer"], fields["board_product"], fields["board_serial"],
                       fields["board_part"], ""])
    product = _fru_area(bytes([0x00]),
                        [fields["manufacturer"], fields["product"], fields["part_number"], fields["version"],
                         fields["serial"], fields["asset_tag"], ""])
    offset = 1  # in 8-byte units, after the common header
    header = bytearray([0x01, 0x00, offset, offset + len(chassis) // 8,
                        offset + (len(chassis) + len(board)) // 8, 0x00, 0x00])
    header.append(-sum(header) & 0xFF)
    return bytes(header) + chassis + board + product


# --- the chassis-control script ------------------------------------------------------------------

#: ``SCRIPT STATEFILE get NAME...`` prints ``NAME:VALUE`` lines; ``SCRIPT STATEFILE set NAME VALUE...``
#: updates ``power``/``boot`` (``shutdown 1`` means power 0) and appends ``NAME VALUE`` to STATEFILE.log.
CHASSIS_SCRIPT = r"""#!/bin/sh
# chassis_control for ipmi_sim (Rackfleet tests): power and boot device kept in a state file.
state=$1; op=$2; shift 2
put() {
  sed "s/^$1:.*/$1:$2/" "$state" > "$state.tmp" && mv "$state.tmp" "$state"
}
case $op in
get)
  for name; do
    grep "^$name:" "$state" || echo "$name:0"
  done ;;
set)
  while [ $# -ge 2 ]; do
    name=$1; value=$2; shift 2
    echo "$name $value" >> "$state.log"
    case $name in
      power) put power "$value" ;;
      boot) put boot "$value" ;;
      shutdown) [ "$value" = 1 ] && put power 0 ;;
    esac
  done ;;
check) ;;
*) echo "unknown operation $op" >&2; exit 1 ;;
esac
exit 0
"""

# ---------------------------------------------------------------------------------------------
# Loopback addresses and a liveness probe
# ---------------------------------------------------------------------------------------------

_used_addresses: set[tuple[str, int]] = set()


def _udp_port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def reserve_loopback(count: int, *, port: int | None = None) -> list[tuple[str, int]]:
    """``count`` free (loopback address, UDP port) pairs: 127.0.N.M with a random N, port 623 as root.

    Non-root processes cannot bind 623, so they get a free high port on each address instead.
    """
    rng = random.Random()
    want_port = port if port is not None else (623 if os.geteuid() == 0 else 0)
    found: list[tuple[str, int]] = []
    for _ in range(200):
        n = rng.randrange(100, 250)
        for m in range(2, 255):
            host = f"127.0.{n}.{m}"
            p = want_port or _free_high_port(host)
            if (host, p) in _used_addresses or not _udp_port_free(host, p):
                continue
            found.append((host, p))
            _used_addresses.add((host, p))
            if len(found) == count:
                return found
    raise RuntimeError(f"no {count} free loopback addresses for ipmi_sim")


def _free_high_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _checksum(data: bytes) -> int:
    return -sum(data) & 0xFF


def ipmi_ping(host: str, port: int, timeout: float = 0.2) -> bool:
    """True if an IPMI LAN endpoint answers Get Channel Authentication Capabilities (sessionless)."""
    header = bytes([0x20, 0x06 << 2])
    body = bytes([0x81, 0x00, 0x38, 0x8E, 0x04])
    msg = header + bytes([_checksum(header)]) + body + bytes([_checksum(body)])
    packet = b"\x06\x00\xff\x07" + b"\x00" + b"\x00" * 8 + bytes([len(msg)]) + msg
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(packet, (host, port))
            data = s.recv(512)
        except OSError:
            return False
    return len(data) > 20 and data[:4] == b"\x06\x00\xff\x07"


# ---------------------------------------------------------------------------------------------
# One instance
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class IpmiSim:
    """One running ipmi_sim: where it listens, who may log in, and what its chassis script keeps."""

    index: int
    host: str
    port: int
    workdir: Path
    user: str = USER
    password: str = PASSWORD
    process: subprocess.Popen[bytes] | None = dataclasses.field(default=None, repr=False)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def state_file(self) -> Path:
        return self.workdir / "chassis.state"

    @property
    def log_file(self) -> Path:
        return self.workdir / "chassis.state.log"

    # -- what the chassis script sees --------------------------------------------------------

    def _state(self) -> dict[str, str]:
        lines = self.state_file.read_text().splitlines()
        return dict(line.split(":", 1) for line in lines if ":" in line)

    def power_state(self) -> str:
        """``on`` or ``off``, as ipmi_sim's chassis script records it."""
        return "on" if self._state().get("power") == "1" else "off"

    def boot_device(self) -> str:
        """``none``, ``pxe``, ``default`` (disk), ``cdrom`` or ``bios``, as the chassis script records it."""
        return self._state().get("boot", "none")

    def chassis_log(self) -> list[str]:
        """Every ``set`` ipmi_sim asked of the chassis script, oldest first, e.g. ``['power 0', 'reset 1']``."""
        return self.log_file.read_text().splitlines() if self.log_file.exists() else []

    def set_chassis(self, *, power: bool | None = None, boot: str | None = None) -> None:
        """Set the state behind ipmi_sim's back (as if the server changed by itself)."""
        state = self._state()
        if power is not None:
            state["power"] = "1" if power else "0"
        if boot is not None:
            state["boot"] = boot
        tmp = self.state_file.with_suffix(".py-tmp")
        tmp.write_text("".join(f"{k}:{v}\n" for k, v in state.items()))
        tmp.replace(self.state_file)

    def clear_chassis_log(self) -> None:
        self.log_file.unlink(missing_ok=True)

    # -- what it was given ------------------------------------------------------------------

    def fru_fields(self) -> dict[str, str]:
        """The FRU fields of this instance; serials carry the instance number."""
        n = self.index
        return {
            "chassis_part": "RF-CH-1U",
            "chassis_serial": f"CH{n:05d}",
            "board_manufacturer": "OpenIPMI",
            "board_product": "SimBoard",
            "board_serial": f"BRD{n:05d}",
            "board_part": "RF-MB-01",
            "manufacturer": "OpenIPMI",
            "product": "ipmi_sim server",
            "part_number": "RF-SIM-1",
            "version": "1.0",
            "serial": f"SIM{n:05d}",
            "asset_tag": f"ASSET-{n}",
        }

    # -- independent clients ----------------------------------------------------------------

    def ipmitool(self, *args: str, cipher: int = 3, password: str | None = None,
                 timeout: float = CLIENT_TIMEOUT, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``ipmitool -I lanplus -C 3 -H host -p port -U admin -E -N 1 -R 1 ARGS`` (password via IPMI_PASSWORD)."""
        cmd = ["ipmitool", "-I", "lanplus", "-C", str(cipher), "-H", self.host, "-p", str(self.port),
               "-U", self.user, "-E", "-N", "1", "-R", "1", *args]
        env = {**os.environ, "IPMI_PASSWORD": self.password if password is None else password}
        return _run(cmd, env=env, timeout=timeout, check=check)

    def freeipmi(self, tool: str, *args: str, cache_dir: Path | None = None, password: str | None = None,
                 timeout: float = CLIENT_TIMEOUT, check: bool = True) -> subprocess.CompletedProcess[str]:
        """A FreeIPMI tool (``ipmi-power``, ``ipmi-sensors``, ``ipmi-sel``, ``ipmi-fru``...) against this BMC.

        Uses ``-D LAN_2_0 -W opensesspriv``, cipher suite 3, short session/retransmission timeouts
        (a dead BMC costs about 2 s) and, for the tools that read SDRs, a private SDR cache directory
        (else FreeIPMI writes to ``~/.freeipmi``).
        """
        cmd = [tool, "-h", f"{self.host}:{self.port}", "-u", self.user,
               "-p", self.password if password is None else password,
               "-D", "LAN_2_0", "-W", "opensesspriv", "-I", "3", "-l", "ADMIN",
               "--session-timeout=2000", "--retransmission-timeout=250"]
        if tool in _SDR_TOOLS:
            cache = cache_dir or (self.workdir / "sdr-cache")
            cache.mkdir(exist_ok=True)
            cmd += ["--sdr-cache-directory", str(cache)]
        cmd += args
        return _run(cmd, env=None, timeout=timeout, check=check)

    # -- lifecycle --------------------------------------------------------------------------

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """Stop the process by its PID: SIGTERM, then SIGKILL after 2 s."""
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


_SDR_TOOLS = frozenset({"ipmi-sensors", "ipmi-sel", "ipmi-fru", "ipmi-sdr"})


def _run(cmd: list[str], *, env: dict[str, str] | None, timeout: float,
         check: bool) -> subprocess.CompletedProcess[str]:
    try:
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{cmd[0]} did not finish within {timeout} s: {' '.join(cmd[1:4])}...") from exc
    if check and res.returncode != 0:
        raise AssertionError(f"{cmd[0]} {' '.join(a for a in cmd[-4:])} failed ({res.returncode}):\n"
                             f"{res.stdout}{res.stderr}")
    return res


def _lan_conf(sim: IpmiSim) -> str:
    return f"""# ipmi_sim LAN configuration written by tests/ipmisim.py
name "sim{sim.index}"
set_working_mc 0x20
  startlan 1
    addr {sim.host} {sim.port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid {(sim.index + 0xA1234567):08x}89abcdefa123456789abcdef
  endlan
  chassis_control "{sim.workdir / 'chassis.sh'} {sim.state_file}"
  user 2 true "{sim.user}" "{sim.password}" admin 10 none md2 md5 straight
"""


def _emulation(sim: IpmiSim, *, sensors: Sequence[SimSensor], sel: Sequence[SimSelEvent]) -> str:
    fru = build_fru(sim.fru_fields())
    lines = [
        "# ipmi_sim emulation written by tests/ipmisim.py",
        "mc_setbmc 0x20",
        f"mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f {MANUFACTURER_ID:#x} {PRODUCT_ID:#x}",
        "sel_enable 0x20 1000 0x0a",
        f"mc_add_fru_data 0x20 0 {len(fru)} data {_hexbytes(fru)}",
    ]
    for sensor in sensors:
        lines += sensor.emu_lines()
    lines += MEMORY_SENSOR.emu_lines()
    lines += [event.emu_line() for event in sel]
    lines.append("mc_enable 0x20")
    return "\n".join(lines) + "\n"


def _start(sim: IpmiSim, *, power_on: bool, sensors: Sequence[SimSensor], sel: Sequence[SimSelEvent]) -> None:
    sim.workdir.mkdir(parents=True, exist_ok=True)
    (sim.workdir / "state").mkdir(exist_ok=True)
    script = sim.workdir / "chassis.sh"
    script.write_text(CHASSIS_SCRIPT)
    script.chmod(0o755)
    sim.state_file.write_text(f"power:{int(power_on)}\nboot:none\n")
    (sim.workdir / "lan.conf").write_text(_lan_conf(sim))
    (sim.workdir / "sim.emu").write_text(_emulation(sim, sensors=sensors, sel=sel))
    with open(sim.workdir / "ipmi_sim.log", "wb") as log:
        sim.process = subprocess.Popen(
            [IPMI_SIM, "-c", str(sim.workdir / "lan.conf"), "-f", str(sim.workdir / "sim.emu"),
             "-s", str(sim.workdir / "state"), "-n"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=sim.workdir,
        )


def _wait_ready(sims: Sequence[IpmiSim], deadline: float) -> list[IpmiSim]:
    """Wait until each answers a ping; return those that died instead."""
    pending = list(sims)
    dead: list[IpmiSim] = []
    while pending and time.monotonic() < deadline:
        still = []
        for sim in pending:
            if not sim.alive():
                dead.append(sim)
            elif not ipmi_ping(sim.host, sim.port, timeout=0.05):
                still.append(sim)
        pending = still
        if pending:
            time.sleep(0.02)
    if pending:
        names = ", ".join(s.address for s in pending)
        raise RuntimeError(f"ipmi_sim did not answer within the start-up deadline: {names}")
    return dead


def ipmitool_available() -> bool:
    return shutil.which("ipmitool") is not None


def freeipmi_available() -> bool:
    return shutil.which("ipmi-power") is not None


@contextlib.contextmanager
def ipmi_sim(count: int = 1, *, power_on: bool | Sequence[bool] = True,
             sensors: Sequence[SimSensor] = SENSORS, sel: Sequence[SimSelEvent] = SEL_EVENTS,
             start_timeout: float = 10.0) -> Iterator[list[IpmiSim]]:
    """Start ``count`` ipmi_sim instances; stop them by PID and remove their directory on exit.

    ``power_on`` is the initial power state, one for all or one per instance. Without ipmi_sim
    installed the calling test is skipped (failed under FLEET_REQUIRE_PEERS=1).
    """
    if shutil.which(IPMI_SIM) is None:
        missing_peer("OpenIPMI ipmi_sim is not installed (Debian package openipmi)")
    powers = [power_on] * count if isinstance(power_on, bool) else list(power_on)
    if len(powers) != count:
        raise ValueError("power_on needs one value per instance")
    root = Path(tempfile.mkdtemp(prefix="rackfleet-ipmisim-"))
    sims: list[IpmiSim] = []
    try:
        addresses = reserve_loopback(count)
        for i, (host, port) in enumerate(addresses):
            sims.append(IpmiSim(index=i, host=host, port=port, workdir=root / f"sim{i}"))
        for sim, on in zip(sims, powers, strict=True):
            _start(sim, power_on=on, sensors=sensors, sel=sel)
        dead = _wait_ready(sims, time.monotonic() + start_timeout)
        for attempt in range(3):  # an address taken between our check and ipmi_sim's bind: move it
            if not dead:
                break
            for sim in dead:
                sim.host, sim.port = reserve_loopback(1)[0]
                _start(sim, power_on=powers[sim.index], sensors=sensors, sel=sel)
            dead = _wait_ready(dead, time.monotonic() + start_timeout)
            if dead and attempt == 2:
                log = (dead[0].workdir / "ipmi_sim.log").read_text(errors="replace")
                raise RuntimeError(f"ipmi_sim failed to start on {dead[0].address}:\n{log}")
        yield sims
    finally:
        for sim in sims:
            sim.stop()
            _used_addresses.discard((sim.host, sim.port))
        shutil.rmtree(root, ignore_errors=True)


def ipmi_sim_fixture(count: int = 1, *, scope: str = "function", **options: Any) -> Callable[..., Any]:
    """A pytest fixture yielding ``count`` running instances (a list of :class:`IpmiSim`).

    In a test module: ``sims = ipmi_sim_fixture(count=20, scope="module")``.
    """

    @pytest.fixture(scope=scope)  # type: ignore[call-overload]
    def _fixture() -> Iterator[list[IpmiSim]]:
        with ipmi_sim(count, **options) as sims:
            yield sims

    return _fixture
