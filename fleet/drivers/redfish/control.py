"""Power and next-boot control of a ComputerSystem: ``ComputerSystem.Reset`` and the ``Boot`` PATCH.

**Power.** The ResetType comes from what the system lists (``ResetType@Redfish.AllowableValues`` on
the action, or its ``@Redfish.ActionInfo``): on = On (else ForceOn), off = ForceOff, soft =
GracefulShutdown, reset = ForceRestart, cycle = PowerCycle, else ForceRestart, else ForceOff then On
(the quirk ``redfish-power-cycle`` = ``PowerCycle`` | ``ForceRestart`` | ``off-on`` forces one; a forced
ResetType the system's list leaves out is refused, naming the quirk, not replaced by another).
An accepted request is not a done one (sushy-tools' fake systems change state 1-11 s later): the
``PowerState`` is read until it is the goal or the confirmation window passes
(``Target.options["confirm_timeout_s"]``, default 60 s; polled every ``poll_interval_s``, default 1 s).
A 409 right after a power-off (iDRAC) is retried within that window.

**Boot.** ``PATCH`` of ``Boot.BootSourceOverrideTarget`` / ``BootSourceOverrideEnabled`` /
``BootSourceOverrideMode`` (sent when the resource shows a mode) with ``If-Match`` and the resource's
ETag when it has one; a 412 is retried with the strong form of the current ETag, then without
``If-Match``. Then read back: a target that did not take is an error; a BMC that keeps ``Continuous``
after ``Once`` (sushy-tools does) is logged, and :func:`get_boot` reports ``persistent=True`` so the
caller sees it. Quirks: ``redfish-boot-all-fields`` (AMI, ASRockRack) sends the mode in every PATCH,
the clearing one too and when the resource shows none; ``redfish-continuous-refused`` sends ``Once``
for a persistent request and logs that the override holds for the next boot only: it is **not**
re-applied at later reboots (that would need the wish kept outside this driver call), and the
returned :class:`BootDevice` says ``persistent=False``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from fleet.errors import DeviceTimeout, DriverError, FatalError, Unsupported

from ..base import BootDevice, PowerState
from .client import Call

__all__ = ["BOOT_TARGETS", "RESET_TYPES", "get_boot", "patch", "power_action", "power_state", "set_boot"]

log = logging.getLogger("fleet.drivers.redfish")

#: Rackfleet's power actions -> ResetTypes in order of preference, and the PowerState each ends in.
RESET_TYPES: dict[str, tuple[str, ...]] = {
    "on": ("On", "ForceOn"), "off": ("ForceOff",), "soft": ("GracefulShutdown",),
    "reset": ("ForceRestart",), "cycle": ("PowerCycle", "ForceRestart"),
}
GOAL: dict[str, PowerState] = {"on": "on", "off": "off", "soft": "off", "reset": "on", "cycle": "on"}
#: Used when the system lists no allowable values: the ResetTypes every implementation has.
_ASSUMED = ("On", "ForceOff", "GracefulShutdown", "ForceRestart")
_POWER_STATES: dict[str, PowerState] = {"On": "on", "Off": "off", "Paused": "on"}

#: Rackfleet boot devices -> BootSourceOverrideTarget, and back (UefiHttp is network boot too).
BOOT_TARGETS = {"pxe": "Pxe", "disk": "Hdd", "bios": "BiosSetup", "cdrom": "Cd", "none": "None"}
_FROM_TARGET = {"Pxe": "pxe", "UefiHttp": "pxe", "Hdd": "disk", "BiosSetup": "bios", "Cd": "cdrom", "None": "none"}


#: The values of the quirk ``redfish-power-cycle`` (fleet/profiles/quirks.py checks profiles for them).
CYCLE_WAYS = ("PowerCycle", "ForceRestart", "off-on")


def _quirk(call: Call, quirk_id: str) -> Any:
    """The value of the profile quirk ``quirk_id`` (``Target.options["quirks"]``), or None."""
    return (call.target.options.get("quirks") or {}).get(quirk_id)


# -- power ---------------------------------------------------------------------------------------

async def power_state(call: Call, system: str) -> PowerState:
    doc = await call.get(system)
    return _POWER_STATES.get(str(doc.get("PowerState")), "unknown")


async def _reset_action(call: Call, system: str) -> tuple[str, tuple[str, ...]]:
    """The Reset action's target and the ResetTypes the system allows (cached per BMC)."""
    key = f"reset:{system}"
    if key in call.bmc.links:
        return call.bmc.links[key]
    doc = await call.get(system)
    action = (doc.get("Actions") or {}).get("#ComputerSystem.Reset")
    if not isinstance(action, dict) or not isinstance(action.get("target"), str):
        raise call.error(Unsupported, f"{system} has no ComputerSystem.Reset action")
    allowed = action.get("ResetType@Redfish.AllowableValues")
    info = action.get("@Redfish.ActionInfo")
    if not isinstance(allowed, list) and isinstance(info, str):
        params = (await call.get(info)).get("Parameters") or []
        for p in params:
            if isinstance(p, dict) and p.get("Name") == "ResetType" and isinstance(p.get("AllowableValues"), list):
                allowed = p["AllowableValues"]
    found = (action["target"], tuple(str(v) for v in allowed) if isinstance(allowed, list) else _ASSUMED)
    call.bmc.links[key] = found
    return found


def _choose(call: Call, action: str, allowed: tuple[str, ...]) -> str | None:
    """The ResetType for ``action``; None for cycle done as off-then-on."""
    forced = _quirk(call, "redfish-power-cycle") if action == "cycle" else None
    if forced is not None:
        if forced not in CYCLE_WAYS:
            raise call.error(Unsupported, f"quirk redfish-power-cycle = {forced!r} is not one of "
                             f"{', '.join(CYCLE_WAYS)}")
        if forced == "off-on":
            return None
        # A system that lists no values (the assumed set) may still take the ResetType the profile names.
        if forced in allowed or allowed is _ASSUMED:
            return str(forced)
        raise call.error(Unsupported, f"quirk redfish-power-cycle says cycle with {forced}, which the system "
                         f"does not allow (allowed: {', '.join(allowed) or 'none'})")
    prefs = RESET_TYPES[action]
    for reset in prefs:
        if reset in allowed:
            return reset
    if action == "cycle" and "ForceOff" in allowed and "On" in allowed:
        return None
    raise call.error(Unsupported, f"the system allows no ResetType for {action} (wanted {' or '.join(prefs)}; "
                     f"allowed: {', '.join(allowed) or 'none'})")


async def _reset(call: Call, target: str, reset: str) -> None:
    """POST the Reset; a 409 (busy right after a power change) is retried within the deadline."""
    wait = 0.5
    while True:
        reply = await call.action(target, {"ResetType": reset}, ok=(200, 201, 202, 204, 409))
        if reply.status != 409:
            return
        if time.monotonic() + wait >= call.deadline:
            raise call.status_error("POST", call.path_of(target), reply)
        log.debug("%s: Reset %s answered 409; retrying in %.1fs", call.target.name, reset, wait)
        await asyncio.sleep(wait)
        wait = min(wait * 2, 4.0)


async def _confirm(call: Call, system: str, reset: str, goal: PowerState) -> None:
    interval = max(0.05, float(call.target.options.get("poll_interval_s", 1.0)))
    started = time.monotonic()
    last: PowerState | None = None
    while True:
        try:
            last = await power_state(call, system)
        except DeviceTimeout:
            if last is None or time.monotonic() < call.deadline:
                raise
        else:
            if last == goal:
                return
        if time.monotonic() + interval >= call.deadline:
            raise call.error(DeviceTimeout, f"ResetType {reset} was accepted but PowerState is still {last} after "
                             f"{time.monotonic() - started:.1f}s (expected {goal})")
        await asyncio.sleep(interval)


async def power_action(call: Call, system: str, action: str) -> None:
    """Do ``action`` (on, off, soft, reset, cycle) and confirm the PowerState it ends in."""
    target, allowed = await _reset_action(call, system)
    reset = _choose(call, action, allowed)
    if reset is None:  # cycle as off, then on
        await _reset(call, target, "ForceOff")
        await _confirm(call, system, "ForceOff", "off")
        await _reset(call, target, "On")
        await _confirm(call, system, "On", "on")
        return
    await _reset(call, target, reset)
    await _confirm(call, system, reset, GOAL[action])


# -- boot ----------------------------------------------------------------------------------------

def _boot_of(doc: dict[str, Any]) -> dict[str, Any]:
    boot = doc.get("Boot")
    return boot if isinstance(boot, dict) else {}


async def get_boot(call: Call, system: str) -> BootDevice:
    boot = _boot_of(await call.get(system))
    enabled = str(boot.get("BootSourceOverrideEnabled") or "Disabled")
    target = str(boot.get("BootSourceOverrideTarget") or "None")
    uefi = boot.get("BootSourceOverrideMode") == "UEFI"
    if enabled == "Disabled" or target == "None":
        return BootDevice("none", uefi=uefi)
    name = _FROM_TARGET.get(target)
    if name is None:
        raise call.error(Unsupported, f"boot override target {target!r} has no Rackfleet name")
    return BootDevice(name, persistent=enabled == "Continuous", uefi=uefi)  # type: ignore[arg-type]


def _strong(tag: str | None) -> str | None:
    return tag[2:] if tag and tag.startswith("W/") else tag


async def patch(call: Call, path: str, body: dict[str, Any], etag: str | None) -> None:
    """PATCH ``body`` with If-Match ``etag``; on 412: the current ETag in strong form, then no If-Match."""
    tries: list[str | None] = [etag, "fresh", None] if etag else [None]
    for tag in tries:
        if tag == "fresh":
            tag = _strong((await call.send("GET", path)).etag)
            if tag is None:
                continue
        reply = await call.send("PATCH", path, body, if_match=tag, ok=(200, 202, 204, 412))
        if reply.status == 202 and reply.headers.get("Location"):
            await call.follow_task(reply.headers["Location"], reply)
        if reply.status != 412:
            return
        log.debug("%s: PATCH %s answered 412 (If-Match %s)", call.target.name, path, "set" if tag else "none")
    raise call.error(FatalError, f"PATCH {call.path_of(path)} refused with 412 (precondition failed) even "
                     f"without If-Match")


async def set_boot(call: Call, system: str, device: str, persistent: bool, uefi: bool) -> BootDevice:
    """Set the next boot device, read it back and return what the BMC reports."""
    if device not in BOOT_TARGETS:
        raise call.error(Unsupported, f"unknown boot device {device!r}")
    reply = await call.send("GET", system)
    doc = reply.data if isinstance(reply.data, dict) else {}
    boot = _boot_of(doc)
    wanted = BOOT_TARGETS[device]
    allowed = boot.get("BootSourceOverrideTarget@Redfish.AllowableValues")
    if device != "none" and isinstance(allowed, list) and wanted not in allowed:
        raise call.error(Unsupported, f"the system does not offer boot target {wanted} "
                         f"(it offers {', '.join(map(str, allowed))})")
    enabled = "Continuous" if persistent else "Once"
    once_only = persistent and device != "none" and bool(_quirk(call, "redfish-continuous-refused"))
    if once_only:
        enabled = "Once"
    body: dict[str, Any] = {"BootSourceOverrideTarget": wanted,
                            "BootSourceOverrideEnabled": "Disabled" if device == "none" else enabled}
    mode = "UEFI" if uefi else "Legacy"
    if _quirk(call, "redfish-boot-all-fields"):
        # Mode, enabled and target in every request; clearing keeps the mode the resource shows.
        body["BootSourceOverrideMode"] = boot.get("BootSourceOverrideMode", mode) if device == "none" else mode
    elif device != "none" and "BootSourceOverrideMode" in boot:
        body["BootSourceOverrideMode"] = mode
    await patch(call, system, {"Boot": body}, reply.etag)
    got = await get_boot(call, system)
    if got.device != device:
        raise call.error(DriverError, f"BMC reports next boot {got.device!r} after setting {device!r}")
    if once_only:
        log.warning("%s: the BMC refuses Continuous (quirk redfish-continuous-refused): boot device %s is set "
                    "for the next boot only and is not re-applied after it", call.target.name, device)
    if device != "none" and not persistent and got.persistent:
        log.warning("%s: BMC keeps BootSourceOverrideEnabled=Continuous after Once was asked: the override "
                    "stays until it is cleared", call.target.name)
    return got

