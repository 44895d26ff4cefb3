"""From a UPS's NUT variables to results: status words, battery readings, outlets (pure, no network).

NUT names its variables after docs/nut-names.txt (``ups.status``, ``battery.charge``...);
:data:`DEFAULT_VARIABLES` and :data:`DEFAULT_COMMANDS` are NUT's standard names, used when a target
has no profile (a profile's ``[nut]`` table overrides them). :func:`parse_status` reads the
``ups.status`` flags, :func:`battery_status` builds a :class:`~fleet.drivers.base.BatteryStatus`,
:func:`outlet_list` the outlets (outlet 0 is the UPS output as a whole).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..base import BatteryStatus, OutletStatus, PowerState

#: Readings and the NUT variable holding each when the target has no profile (NUT's docs/nut-names.txt).
DEFAULT_VARIABLES: Mapping[str, str] = {
    "ups_status": "ups.status",
    "battery_charge": "battery.charge",
    "battery_runtime": "battery.runtime",
    "output_load": "ups.load",
    "input_voltage": "input.voltage",
    "battery_temperature": "battery.temperature",
    "nominal_power": "ups.realpower.nominal",
}

#: UPS-wide actions and their instant commands when the target has no profile.
DEFAULT_COMMANDS: Mapping[str, str] = {
    "load_off": "load.off",
    "load_on": "load.on",
    "load_cycle": "shutdown.reboot",
    "shutdown_return": "shutdown.return",
    "shutdown_stayoff": "shutdown.stayoff",
}

#: Variables copied into ``BatteryStatus.extra`` when the UPS has them (numbers where they parse).
EXTRA_VARIABLES = (
    "battery.date", "battery.mfr.date", "battery.type", "battery.charge.low", "battery.runtime.low",
    "battery.voltage", "battery.voltage.nominal", "ups.realpower.nominal", "ups.power.nominal",
    "ups.realpower", "ups.power", "ups.temperature", "input.frequency", "output.voltage",
    "ups.mfr", "ups.model", "ups.serial", "ups.firmware", "device.mfr", "device.model", "device.serial",
    "ups.beeper.status", "ups.test.result", "ups.timer.shutdown", "ups.timer.start", "driver.name",
)

#: ``ups.status`` flags (NUT docs/new-drivers.txt) and what they mean, for ``extra["conditions"]``.
STATUS_FLAGS: Mapping[str, str] = {
    "OL": "online", "OB": "on-battery", "LB": "low-battery", "HB": "high-battery",
    "RB": "replace-battery", "CHRG": "charging", "DISCHRG": "discharging", "BYPASS": "bypass",
    "CAL": "calibrating", "OFF": "output-off", "OVER": "overload", "TRIM": "trim", "BOOST": "boost",
    "FSD": "forced-shutdown", "ALARM": "alarm", "TEST": "testing", "OVERHEAT": "overheat", "COMMBAD": "comm-lost",
    "NOCOMM": "comm-lost", "WAIT": "waiting",
}

_OUTLET_RE = re.compile(r"^outlet\.(\d+)\.(status|desc|name)$")


def parse_status(ups_status: str | None) -> tuple[str, tuple[str, ...]]:
    """Our status words for an ``ups.status`` value, and its flags.

    ``OL`` -> online, ``OB`` -> on-battery, ``LB`` -> low-battery, ``RB`` -> replace-battery, combined
    with spaces in that order (``"OB DISCHRG LB"`` -> ``"on-battery low-battery"``); none of them ->
    ``unknown`` (e.g. ``OFF``, ``WAIT``, an empty value). Other flags (CHRG, BYPASS, OVER, FSD...) are
    in the second item, as upsd spelled them.
    """
    flags = tuple((ups_status or "").split())
    words = [name for flag, name in (("OL", "online"), ("OB", "on-battery"), ("LB", "low-battery"),
                                     ("RB", "replace-battery")) if flag in flags]
    if "online" in words and "on-battery" in words:  # both at once: a driver in transition; trust neither
        words = [w for w in words if w not in ("online", "on-battery")]
    return (" ".join(words) or "unknown"), flags


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if number == number and abs(number) != float("inf") else None


def battery_status(values: Mapping[str, str], variables: Mapping[str, str] = DEFAULT_VARIABLES) -> BatteryStatus:
    """A :class:`BatteryStatus` from a UPS's variables (``variables`` maps our metrics to NUT names)."""

    def var(metric: str) -> str | None:
        name = variables.get(metric, DEFAULT_VARIABLES.get(metric))
        return values.get(name) if name else None

    raw_status = var("ups_status")
    status, flags = parse_status(raw_status)
    extra: dict[str, Any] = {}
    if raw_status is not None:
        extra["ups.status"] = raw_status
        extra["conditions"] = [STATUS_FLAGS.get(f, f.lower()) for f in flags]
    for name in EXTRA_VARIABLES:
        if name in values:
            number = _number(values[name])
            extra[name] = number if number is not None and name not in _TEXT_EXTRAS else values[name]
    nominal = variables.get("nominal_power")
    if nominal and nominal in values and nominal not in extra:
        extra[nominal] = _number(values[nominal])
    return BatteryStatus(
        status=status,
        charge_pct=_number(var("battery_charge")),
        runtime_s=_number(var("battery_runtime")),
        load_pct=_number(var("output_load")),
        input_v=_number(var("input_voltage")),
        battery_temp_c=_number(var("battery_temperature")),
        extra=extra,
    )


_TEXT_EXTRAS = frozenset({"battery.date", "battery.mfr.date", "battery.type", "ups.mfr", "ups.model", "ups.serial",
                          "ups.firmware", "device.mfr", "device.model", "device.serial", "ups.beeper.status",
                          "ups.test.result", "driver.name"})


def _outlet_state(values: Mapping[str, str], number: int, status_var: str = "ups.status") -> PowerState:
    if number == 0:
        flags = values.get(status_var, "").split()
        if "OFF" in flags:
            return "off"
        return "on" if ("OL" in flags or "OB" in flags) else "unknown"
    state = values.get(f"outlet.{number}.status", "").strip().lower()
    return "on" if state == "on" else "off" if state == "off" else "unknown"


def outlet_list(values: Mapping[str, str], status_var: str = "ups.status") -> list[OutletStatus]:
    """Outlet 0 (the whole output) and every ``outlet.N`` with a status, from a UPS's variables."""
    numbers = sorted({int(m.group(1)) for v in values if (m := _OUTLET_RE.match(v)) and m.group(2) == "status"} - {0})
    out = [OutletStatus(0, values.get("outlet.0.desc") or "output", _outlet_state(values, 0, status_var))]
    for n in numbers:
        name = values.get(f"outlet.{n}.desc") or values.get(f"outlet.{n}.name") or f"outlet {n}"
        out.append(OutletStatus(n, name, _outlet_state(values, n, status_var)))
    return out
