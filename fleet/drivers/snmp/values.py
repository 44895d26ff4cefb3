"""SNMP values into readings: the profile's conversion rules, pure and tested without a network.

An agent's answer is a pyasn1 value, or a :class:`_Missing` for an object it does not have;
:func:`convert_metric` turns one into a reading in canonical units (or None, with the reason) under
the profile's ``OidSpec``, :func:`battery_status_word` gives the ``BatteryStatus.status`` words, and
the small decoders (:func:`_missing_or`, :func:`_text`, :func:`_power_state`) read the values the
session and the driver get back. pyasn1 and pysnmp are imported inside the functions, so importing
this module loads neither.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..base import PowerState

# Plausible ranges after conversion: a reading outside is a vendor sentinel the profile does not
# list (e.g. -1 for "no estimate"), reported as unknown rather than stored as if real.
_RANGES: Mapping[str, tuple[float, float]] = {
    "percent": (0.0, 1000.0),
    "battery_charge": (0.0, 100.0),
    "seconds": (0.0, 7 * 86400.0),
    "celsius": (-40.0, 150.0),
    "volts": (0.0, 1000.0),
    "amps": (0.0, 10000.0),
    "watts": (0.0, 10_000_000.0),
}
_CANONICAL_UNIT = {"percent": "percent", "seconds": "seconds", "minutes": "seconds", "timeticks": "seconds",
                   "celsius": "celsius", "volts": "volts", "amps": "amps", "watts": "watts", "enum": "enum"}


class _Missing:
    """An object the agent does not have (noSuchObject, noSuchInstance, endOfMibView, noSuchName)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"<missing: {self.reason}>"


def _raw_number(value: Any) -> float | None:
    from pyasn1.type import univ

    if isinstance(value, univ.Integer):
        return int(value)
    if isinstance(value, univ.OctetString):
        try:
            return float(bytes(value).decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            return None
    return None


def _is_timeticks(value: Any) -> bool:
    from pysnmp.proto import rfc1902

    return isinstance(value, rfc1902.TimeTicks)


def convert_metric(name: str, spec: Any, value: Any) -> tuple[Any, str | None]:
    """``(value, why_unknown)`` for one reading of metric ``name`` under its profile ``OidSpec``.

    Numbers come back in canonical units (percent, seconds, celsius, volts, amps, watts), enums as
    their vocabulary word. ``value`` is None (with the reason) for a raw value listed in
    ``spec.unknown``, an enum value the profile does not map, a runtime whose ASN.1 type contradicts
    the profile's unit (TimeTicks where minutes or seconds are expected, or the reverse), and a
    reading outside the plausible range of its unit (negative volts, a charge of 255%).
    """
    if isinstance(value, _Missing):
        return None, value.reason
    raw = _raw_number(value)
    if raw is None:
        return None, f"not a number ({value.__class__.__name__} {value!s:.40})"
    if spec.unit == "enum":
        word = spec.values.get(int(raw))
        if word is None:
            return None, f"raw value {int(raw)} is not in the profile's map"
        return word, None
    if raw in spec.unknown:
        return None, f"raw value {int(raw) if raw == int(raw) else raw} means unknown"
    if name == "battery_runtime" or spec.unit == "timeticks":
        ticks = _is_timeticks(value)
        if spec.unit == "timeticks" and not ticks:
            return None, f"the profile expects TimeTicks but the agent sent {value.__class__.__name__} {int(raw)}"
        if spec.unit in ("minutes", "seconds") and ticks:
            return None, f"the profile expects {spec.unit} but the agent sent TimeTicks {int(raw)}"
    number = raw * spec.scale
    if spec.unit == "minutes":
        number *= 60.0
    elif spec.unit == "timeticks":
        number /= 100.0
    unit = _CANONICAL_UNIT.get(spec.unit, spec.unit)
    lo, hi = _RANGES.get(name, _RANGES.get(unit, (-math.inf, math.inf)))
    if not lo <= number <= hi:
        return None, f"{number:g} {unit} is outside {lo:g}..{hi:g}"
    return round(number, 6), None


def battery_status_word(readings: Mapping[str, Any]) -> str:
    """The ``BatteryStatus.status`` string from converted readings (see :class:`BatteryStatus`).

    ``online`` or ``on-battery`` from the output source (bypass, boost and trim are on line; off,
    other and unknown say neither), else from seconds on battery; then ``low-battery`` (battery
    status low or depleted) and ``replace-battery``; ``unknown`` when nothing applies.
    """
    words: list[str] = []
    source = readings.get("output_source")
    if source == "on_battery":
        words.append("on-battery")
    elif source in ("online", "bypass", "boost", "trim"):
        words.append("online")
    elif source is None and readings.get("seconds_on_battery") is not None:
        words.append("on-battery" if readings["seconds_on_battery"] > 0 else "online")
    if readings.get("battery_status") in ("low", "depleted"):
        words.append("low-battery")
    if readings.get("battery_replace") == "replace":
        words.append("replace-battery")
    return " ".join(words) or "unknown"


@dataclass(frozen=True)
class _FallbackSpec:
    """An OidSpec read through its fallback OID: the fallback's scale, the same unit and rules."""

    base: Any

    def __getattr__(self, name: str) -> Any:
        if name == "scale":
            return self.base.fallback_scale
        return getattr(self.base, name)


def _missing_or(value: Any) -> Any:
    from pysnmp.proto import rfc1905

    if isinstance(value, rfc1905.NoSuchObject):
        return _Missing("noSuchObject")
    if isinstance(value, rfc1905.NoSuchInstance):
        return _Missing("noSuchInstance")
    if isinstance(value, rfc1905.EndOfMibView):
        return _Missing("endOfMibView")
    from pyasn1.type import univ

    if isinstance(value, univ.Null):
        return _Missing("null")
    return value


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, _Missing):
        return None
    from pyasn1.type import univ

    if isinstance(value, univ.OctetString):
        raw = bytes(value)
        try:
            return raw.decode("utf-8").rstrip("\x00").strip()
        except UnicodeDecodeError:
            return raw.decode("latin-1").strip()
    return str(value)


def _oid_tuple(oid: str) -> tuple[int, ...]:
    return tuple(int(x) for x in oid.strip(".").split(".") if x)


def _power_state(table: Any, value: Any) -> PowerState:
    raw = _raw_number(_missing_or(value)) if not isinstance(value, _Missing) else None
    word = table.states.get(int(raw), "unknown") if raw is not None else "unknown"
    # A pending change has not happened yet: pending_off is still on, pending_on still off.
    return {"on": "on", "off": "off", "pending_off": "on", "pending_on": "off"}.get(word, "unknown")  # type: ignore[return-value]

