"""SSH facts, the server side: the script a server runs and the parser of what it prints.

Pure functions, no I/O: :data:`FACTS_SCRIPT` is run by :class:`fleet.drivers.ssh.SshDriver` in one SSH
session, and :func:`parse_facts` turns its output into :class:`Facts`. What the facts mean for the
inventory (drift) is :mod:`fleet.model.facts`.

The script prints sections, each introduced by a line ``@@rackfleet <section> [arg]``:

- ``hostname`` / ``kernel`` (``uname -r``) / ``serial`` (DMI product serial, from sysfs or
  ``dmidecode`` when readable);
- ``lsblk``: ``lsblk -J -b -o NAME,SERIAL,MODEL,SIZE,TYPE``;
- ``smart DISK``: ``smartctl --json -H -i /dev/DISK`` per whole disk, when ``smartctl`` exists;
- ``nics``: one ``NAME MAC physical|virtual`` line per interface except ``lo``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["FACTS_SCRIPT", "Disk", "Facts", "Nic", "SmartHealth", "parse_facts"]

MARK = "@@rackfleet"

#: POSIX sh, run as one command over SSH. Every probe is optional: a missing tool leaves its section empty.
FACTS_SCRIPT = r"""
M=@@rackfleet
echo "$M hostname"; hostname 2>/dev/null || uname -n
echo "$M kernel"; uname -r
echo "$M serial"
if [ -r /sys/class/dmi/id/product_serial ]; then cat /sys/class/dmi/id/product_serial 2>/dev/null
elif command -v dmidecode >/dev/null 2>&1; then dmidecode -s system-serial-number 2>/dev/null; fi
echo "$M lsblk"
if command -v lsblk >/dev/null 2>&1; then lsblk -J -b -o NAME,SERIAL,MODEL,SIZE,TYPE 2>/dev/null; fi
if command -v smartctl >/dev/null 2>&1 && command -v lsblk >/dev/null 2>&1; then
  for d in $(lsblk -d -n -r -o NAME,TYPE 2>/dev/null | awk '$2 == "disk" { print $1 }'); do
    echo "$M smart $d"; smartctl --json -H -i "/dev/$d" 2>/dev/null
  done
fi
echo "$M nics"
for f in /sys/class/net/*/address; do
  [ -r "$f" ] || continue
  n=${f%/address}; n=${n##*/}
  [ "$n" = lo ] && continue
  if [ -e "/sys/class/net/$n/device" ]; then k=physical; else k=virtual; fi
  echo "$n $(cat "$f") $k"
done
echo "$M end"
"""


@dataclass(frozen=True)
class SmartHealth:
    """``smartctl -H``: ``passed`` is True/False, or None when SMART gave no verdict."""

    passed: bool | None
    model: str = ""
    serial: str = ""
    message: str = ""


@dataclass(frozen=True)
class Disk:
    name: str
    serial: str = ""
    model: str = ""
    size_bytes: int | None = None
    type: str = "disk"
    smart: SmartHealth | None = None


@dataclass(frozen=True)
class Nic:
    name: str
    mac: str
    physical: bool = True


@dataclass(frozen=True)
class Facts:
    hostname: str = ""
    kernel: str = ""
    serial: str = ""
    disks: tuple[Disk, ...] = ()
    nics: tuple[Nic, ...] = ()
    #: The host key the server presented ("ssh-ed25519 AAAA..."), filled in by the driver.
    host_key: str | None = None
    #: Sections that could not be parsed (the rest is still usable).
    problems: tuple[str, ...] = ()

    @property
    def macs(self) -> dict[str, str]:
        """Interface name -> MAC (lower case)."""
        return {n.name: n.mac for n in self.nics}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- parsing -----------------------------------------------------------------------------------

def _sections(text: str) -> list[tuple[str, str, str]]:
    """(name, argument, body) per ``@@rackfleet`` section, in order."""
    out: list[tuple[str, str, str]] = []
    name = arg = None
    body: list[str] = []
    for line in text.splitlines():
        if line.startswith(MARK + " "):
            if name is not None:
                out.append((name, arg or "", "\n".join(body)))
            parts = line[len(MARK) + 1:].split(None, 1)
            name = parts[0] if parts else ""
            arg = parts[1].strip() if len(parts) > 1 else ""
            body = []
        elif name is not None:
            body.append(line)
    if name is not None:
        out.append((name, arg or "", "\n".join(body)))
    return out


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _size(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _parse_smart(body: str) -> SmartHealth:
    data = json.loads(body)
    status = data.get("smart_status") or {}
    passed = status.get("passed") if isinstance(status.get("passed"), bool) else None
    messages = [m.get("string", "") for m in (data.get("smartctl") or {}).get("messages") or []
                if isinstance(m, dict)]
    return SmartHealth(passed=passed, model=_text(data.get("model_name")), serial=_text(data.get("serial_number")),
                       message="; ".join(m for m in messages if m))


def _parse_lsblk(body: str) -> list[Disk]:
    data = json.loads(body)
    disks = []
    for dev in data.get("blockdevices") or []:
        kind = _text(dev.get("type"))
        if kind != "disk":  # whole disks only; partitions are children, loop/rom devices are not disks
            continue
        disks.append(Disk(name=_text(dev.get("name")), serial=_text(dev.get("serial")), model=_text(dev.get("model")),
                          size_bytes=_size(dev.get("size")), type=kind))
    return disks


def parse_facts(text: str, *, host_key: str | None = None) -> Facts:
    """Parse the output of :data:`FACTS_SCRIPT`. A malformed section is noted in ``problems``, not raised."""
    values: dict[str, str] = {}
    disks: list[Disk] = []
    smart: dict[str, SmartHealth] = {}
    nics: list[Nic] = []
    problems: list[str] = []
    for name, arg, body in _sections(text):
        if name in ("hostname", "kernel", "serial"):
            values[name] = body.strip().splitlines()[0].strip() if body.strip() else ""
        elif name == "lsblk" and body.strip():
            try:
                disks = _parse_lsblk(body)
            except (ValueError, AttributeError, TypeError) as exc:
                problems.append(f"lsblk: unreadable output ({exc})")
        elif name == "smart" and arg:
            try:
                smart[arg] = _parse_smart(body)
            except (ValueError, AttributeError, TypeError) as exc:
                smart[arg] = SmartHealth(passed=None, message="unreadable smartctl output")
                problems.append(f"smart {arg}: unreadable output ({exc})")
        elif name == "nics":
            for line in body.splitlines():
                parts = line.split()
                if len(parts) >= 2:
                    nics.append(Nic(parts[0], parts[1].lower(), parts[2] != "virtual" if len(parts) > 2 else True))
    serial = values.get("serial", "")
    if serial.lower() in ("", "none", "not specified", "to be filled by o.e.m.", "default string", "0"):
        serial = ""
    disks = [Disk(d.name, d.serial, d.model, d.size_bytes, d.type, smart.get(d.name)) for d in disks]
    return Facts(hostname=values.get("hostname", ""), kernel=values.get("kernel", ""), serial=serial,
                 disks=tuple(disks), nics=tuple(nics), host_key=host_key, problems=tuple(problems))
