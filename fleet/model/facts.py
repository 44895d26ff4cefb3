"""SSH facts against the inventory: how what a running server says differs from its record.

Pure functions, no I/O and no database: :func:`reconcile` compares :class:`~fleet.drivers.sshfacts.Facts`
(parsed by the SSH driver) with a :class:`ServerInventoryView` (a plain snapshot of the inventory's
record, built by the caller) and returns :class:`Drift` findings, which the caller turns into events.

Drift kinds (:data:`fleet.model.events.DRIFT_KINDS`, each an event kind of the same name):
``serial-changed``, ``disk-missing``, ``disk-added``, ``disk-failing`` (SMART did not say PASSED),
``mac-moved`` (a known MAC on another interface), ``mac-missing`` (a known MAC is not seen),
``mac-unknown`` (a physical NIC the inventory does not know).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from fleet.drivers.sshfacts import Facts
from fleet.model.events import (
    DISK_ADDED,
    DISK_FAILING,
    DISK_MISSING,
    MAC_MISSING,
    MAC_MOVED,
    MAC_UNKNOWN,
    SERIAL_CHANGED,
)

__all__ = ["Drift", "DriftKind", "InventoryDisk", "InventoryNic", "ServerInventoryView", "reconcile"]


@dataclass(frozen=True)
class InventoryDisk:
    slot: str
    serial: str
    model: str = ""


@dataclass(frozen=True)
class InventoryNic:
    name: str
    mac: str


@dataclass(frozen=True)
class ServerInventoryView:
    """What the inventory believes about one server: a plain snapshot, built by the caller."""

    hostname: str
    serial: str = ""
    disks: tuple[InventoryDisk, ...] = ()
    nics: tuple[InventoryNic, ...] = ()


#: For type checkers: the same names as :data:`fleet.model.events.DRIFT_KINDS` (a test keeps them equal).
DriftKind = Literal["serial-changed", "disk-missing", "disk-added", "disk-failing",
                    "mac-moved", "mac-missing", "mac-unknown"]


@dataclass(frozen=True)
class Drift:
    kind: DriftKind
    subject: str  # the serial, disk serial or MAC concerned
    message: str
    expected: str | None = None
    seen: str | None = None
    details: dict[str, Any] = field(default_factory=dict, compare=False)


# -- reconciling -------------------------------------------------------------------------------

def _norm(value: str) -> str:
    return value.strip().lower()


def reconcile(facts: Facts, inventory: ServerInventoryView) -> list[Drift]:
    """Differences between what the server reports and what the inventory holds, as drift findings.

    Unknowns are not drift: an unreadable serial, or a disk without a serial, yields nothing.
    """
    name = inventory.hostname
    drifts: list[Drift] = []

    if inventory.serial and facts.serial and _norm(inventory.serial) != _norm(facts.serial):
        drifts.append(Drift(SERIAL_CHANGED, inventory.serial,
                            f"{name}: system serial is {facts.serial!r}, inventory says {inventory.serial!r} "
                            "(board swapped, or the wrong server at this address?)",
                            expected=inventory.serial, seen=facts.serial))

    seen_disks = {_norm(d.serial): d for d in facts.disks if d.serial}
    known_disks = {_norm(d.serial): d for d in inventory.disks if d.serial}
    for key, disk in known_disks.items():
        if key not in seen_disks:
            drifts.append(Drift(DISK_MISSING, disk.serial,
                                f"{name}: disk {disk.serial} ({disk.model or 'unknown model'}) in slot {disk.slot} "
                                "is not seen", expected=disk.serial, details={"slot": disk.slot}))
    for key, disk in seen_disks.items():
        if key not in known_disks:
            drifts.append(Drift(DISK_ADDED, disk.serial,
                                f"{name}: disk {disk.serial} ({disk.model or 'unknown model'}) at /dev/{disk.name} "
                                "is not in the inventory", seen=disk.serial, details={"device": disk.name}))
    for disk in facts.disks:
        if disk.smart is not None and disk.smart.passed is False:
            label = disk.serial or disk.name
            slot = known_disks[_norm(disk.serial)].slot if _norm(disk.serial) in known_disks else None
            where = f" in slot {slot}" if slot else ""
            note = f": {disk.smart.message}" if disk.smart.message else ""
            drifts.append(Drift(DISK_FAILING, label,
                                f"{name}: disk {label} at /dev/{disk.name}{where} fails its SMART health check{note}",
                                seen="FAILED", details={"device": disk.name, "slot": slot}))

    seen_macs = {n.mac: n for n in facts.nics}
    known_macs = {_norm(n.mac): n for n in inventory.nics}
    for mac, nic in known_macs.items():
        seen = seen_macs.get(mac)
        if seen is None:
            drifts.append(Drift(MAC_MISSING, mac, f"{name}: NIC {nic.name} ({mac}) is not seen",
                                expected=nic.name))
        elif nic.name and seen.name != nic.name:
            drifts.append(Drift(MAC_MOVED, mac, f"{name}: MAC {mac} is on {seen.name}, inventory says {nic.name}",
                                expected=nic.name, seen=seen.name))
    for mac, nic in seen_macs.items():
        if nic.physical and mac not in known_macs:
            drifts.append(Drift(MAC_UNKNOWN, mac, f"{name}: NIC {nic.name} ({mac}) is not in the inventory",
                                seen=nic.name))
    return drifts
