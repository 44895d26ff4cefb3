"""What both kinds of lab SNMP agent share: the device record, background children stopped by PID, a one-GET
ping, loopback and UDP port checks, and the atomic JSON write of what runs."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet.errors import FleetError, InputError, PortInUse
from fleet.lab._proc import cmdline_has, terminate

__all__ = [
    "LabDevice",
    "SnmpLabError",
    "check_loopback",
    "check_udp_port",
    "free_udp_port",
    "log_tail",
    "snmp_ping",
    "stop_pid",
    "track",
    "write_json",
]


class SnmpLabError(FleetError, RuntimeError):
    """A simulated SNMP agent could not be built or started (the message holds its log's tail)."""


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


def check_udp_port(host: str, port: int) -> None:
    """:class:`~fleet.errors.PortInUse` if UDP ``host:port`` is taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(f"the lab's SNMP port {host}:{port} (UDP) is in use",
                                remedy="stop what listens there or choose another port") from None
            raise


def free_udp_port(host: str) -> int:
    """A UDP port free on ``host`` now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def check_loopback(host: str) -> None:
    """:class:`~fleet.errors.InputError` unless ``host`` is a loopback address."""
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


def log_tail(path: Path, n: int = 3000) -> str:
    """The last ``n`` characters of a log, for an error message."""
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


def write_json(path: Path, doc: Any) -> None:
    """Write ``doc`` to ``path`` as JSON, atomically (a reader sees the old file or the new one)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
    tmp.replace(path)
