"""The event kinds: every kind of event the product opens, named once. Pure data, no I/O.

An event is about a server or a UPS (``about``), opened by the health sweep (:mod:`fleet.ops.sweep`:
BMC, sensors, SEL, UPS) or by SSH facts (:mod:`fleet.ops.facts`, from the drift that
:func:`fleet.model.facts.reconcile` finds), always with the same severity. The emitters name kinds
by the constants below; the policy loader (:mod:`fleet.model.policy`) accepts only these kinds in a
rule's ``when.kind``; ``tests/test_events.py`` keeps the emit sites and this list equal, both ways.

``reading`` is the name of the value a finding of that kind carries to the planner
(``Finding.value``), ``None`` when it carries none; a policy's ``when.reading`` may name it (or
``value``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "BMC_AUTH_FAILED",
    "BMC_UNREACHABLE",
    "DISK_ADDED",
    "DISK_FAILING",
    "DISK_MISSING",
    "DRIFT_KINDS",
    "KINDS",
    "MAC_MISSING",
    "MAC_MOVED",
    "MAC_UNKNOWN",
    "SEL_ECC_UNCORRECTABLE",
    "SENSOR_CRITICAL",
    "SENSOR_WARNING",
    "SERIAL_CHANGED",
    "SEVERITIES",
    "UPS_BATTERY_FAILING",
    "UPS_KINDS",
    "UPS_LOW_RUNTIME",
    "UPS_ON_BATTERY",
    "UPS_UNREACHABLE",
    "EventKind",
]

#: Event severities, least first (a policy's ``severity: ">= warning"`` counts in this order).
SEVERITIES: tuple[str, ...] = ("info", "warning", "critical")

# The sweep, per server (a BMC that does not answer is judged on nothing else).
BMC_UNREACHABLE = "bmc-unreachable"
BMC_AUTH_FAILED = "bmc-auth-failed"
SENSOR_CRITICAL = "sensor-critical"
SENSOR_WARNING = "sensor-warning"
SEL_ECC_UNCORRECTABLE = "sel-ecc-uncorrectable"
# The sweep, per UPS.
UPS_UNREACHABLE = "ups-unreachable"
UPS_ON_BATTERY = "ups-on-battery"
UPS_LOW_RUNTIME = "ups-low-runtime"
UPS_BATTERY_FAILING = "ups-battery-failing"
# SSH facts: drift between what the server says and its inventory record.
SERIAL_CHANGED = "serial-changed"
DISK_MISSING = "disk-missing"
DISK_ADDED = "disk-added"
DISK_FAILING = "disk-failing"
MAC_MOVED = "mac-moved"
MAC_MISSING = "mac-missing"
MAC_UNKNOWN = "mac-unknown"


@dataclass(frozen=True)
class EventKind:
    """One kind: what it is about, who opens it, at what severity, what it means, the reading it carries."""

    name: str
    about: Literal["server", "ups"]
    source: Literal["sweep", "facts"]
    severity: str
    description: str
    reading: str | None = None


def _kinds(*kinds: EventKind) -> dict[str, EventKind]:
    return {k.name: k for k in kinds}


#: Every event kind, by name, in the order of the docs' table.
KINDS: dict[str, EventKind] = _kinds(
    EventKind(BMC_UNREACHABLE, "server", "sweep", "critical", "the BMC did not answer"),
    EventKind(BMC_AUTH_FAILED, "server", "sweep", "critical", "the BMC refused the credential"),
    EventKind(SENSOR_CRITICAL, "server", "sweep", "critical",
              "a sensor past its critical threshold (the profile's, a rack's or the server's own, else the BMC's)",
              reading="value"),
    EventKind(SENSOR_WARNING, "server", "sweep", "warning", "a sensor past its warning threshold", reading="value"),
    EventKind(SEL_ECC_UNCORRECTABLE, "server", "sweep", "critical",
              "uncorrectable memory errors: a memory sensor in critical state, or new SEL entries about ECC"),
    EventKind(SERIAL_CHANGED, "server", "facts", "critical",
              "the system serial differs from the inventory's (board swapped, or the wrong server at this address)"),
    EventKind(DISK_FAILING, "server", "facts", "critical", "a disk's SMART health check did not say PASSED"),
    EventKind(DISK_MISSING, "server", "facts", "critical", "a disk of the inventory is not seen"),
    EventKind(DISK_ADDED, "server", "facts", "warning", "a disk the inventory does not know"),
    EventKind(MAC_MOVED, "server", "facts", "warning", "a known MAC on another interface"),
    EventKind(MAC_MISSING, "server", "facts", "warning", "a NIC of the inventory is not seen"),
    EventKind(MAC_UNKNOWN, "server", "facts", "warning", "a physical NIC the inventory does not know"),
    EventKind(UPS_UNREACHABLE, "ups", "sweep", "warning", "the UPS did not answer"),
    EventKind(UPS_ON_BATTERY, "ups", "sweep", "warning", "the UPS runs on battery", reading="runtime_s"),
    EventKind(UPS_LOW_RUNTIME, "ups", "sweep", "critical",
              "on battery with a low-battery flag or under 15 minutes of runtime left", reading="runtime_s"),
    EventKind(UPS_BATTERY_FAILING, "ups", "sweep", "warning", "the UPS asks for a new battery",
              reading="charge_pct"),
)

#: Kinds whose events are about a UPS (a finding's ``extra["feeds"]`` lists the servers it feeds).
UPS_KINDS = frozenset(k.name for k in KINDS.values() if k.about == "ups")
#: The drift kinds of SSH facts (:data:`fleet.model.facts.DriftKind`).
DRIFT_KINDS = frozenset(k.name for k in KINDS.values() if k.source == "facts")
