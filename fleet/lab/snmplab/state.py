"""Fault and outlet control of an snmpsim lab's devices, through the same state files the ``fleetdev`` variation
module reads (``DIR/state/<device>.json``, under a lock): a UPS's battery flags, a PDU's outlets."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fleet.errors import InputError
from fleet.lab.snmplab.agent import write_json
from fleet.lab.snmplab.simlab import SnmpsimLab

__all__ = ["UPS_FAULTS", "outlet_states", "set_outlet_state", "set_ups_fault", "set_ups_state", "ups_state"]

UPS_FAULTS = ("normal", "on-battery", "low-battery", "replace-battery")
_FLAGS = ("on_battery", "low_battery", "replace_battery")


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
        write_json(path, state)
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
