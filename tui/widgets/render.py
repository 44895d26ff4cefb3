"""Small text renderings shared by the screens: coloured states, load bars, sparklines, ages.

Pure functions of their input (no clock read here), so screens render the same data the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from rich.text import Text

from fleet.model.views import visible

HEALTH_STYLE = {"ok": "green", "warning": "yellow", "critical": "bold red", "unknown": "dim"}
POWER_STYLE = {"on": "green", "off": "dim", "unknown": "yellow"}
SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}
STATE_STYLE = {"deployed": "green", "ready": "cyan", "maintenance": "yellow", "failed": "bold red",
               "quarantined": "magenta", "rma": "red", "retired": "dim", "new": "blue", "commissioning": "blue",
               "deploying": "cyan", "decommissioning": "dim"}
_SPARK = "▁▂▃▄▅▆▇█"


def plain(value: Any) -> Any:
    """A cell for a Rich table: stored text as a ``Text`` (never read as markup) with control and bidi
    characters escaped (:func:`inventory.validate.visible`); other renderables as they are."""
    if isinstance(value, str):
        return Text(visible(value))
    if isinstance(value, Text) and not value.spans:
        return Text(visible(value.plain), style=value.style)
    return value


def health_text(value: str) -> Text:
    return Text(value, style=HEALTH_STYLE.get(value, ""))


def power_text(value: str) -> Text:
    return Text(value, style=POWER_STYLE.get(value, ""))


def severity_text(value: str) -> Text:
    return Text(value, style=SEVERITY_STYLE.get(value, ""))


def state_text(value: str) -> Text:
    return Text(value, style=STATE_STYLE.get(value, ""))


def spark(values: Sequence[float], width: int = 24) -> str:
    """A sparkline of the last ``width`` values (flat data draws a flat line)."""
    vals = [v for v in values if v == v][-width:]
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    if hi == lo:
        return _SPARK[3] * len(vals)
    return "".join(_SPARK[min(len(_SPARK) - 1, int((v - lo) / (hi - lo) * len(_SPARK)))] for v in vals)


def bar(fraction: float | None, width: int = 20) -> Text:
    """A load bar: green under 60 %, yellow under 85 %, red beyond; the percentage after it."""
    if fraction is None:
        return Text("·" * width + "    -", style="dim")
    frac = max(0.0, fraction)
    filled = min(width, round(frac * width))
    style = "green" if frac < 0.6 else "yellow" if frac < 0.85 else "bold red"
    text = Text("█" * filled, style=style)
    text.append("·" * (width - filled), style="dim")
    text.append(f" {frac * 100:3.0f}%")
    return text


def progress(fraction: float | None, style: str = "cyan", width: int = 20) -> Text:
    """A progress bar in one colour (the job's status), the percentage after it."""
    if fraction is None:
        return Text("░" * width + "    -", style="dim")
    filled = min(width, round(max(0.0, fraction) * width))
    text = Text("█" * filled, style=style)
    text.append("░" * (width - filled), style="dim")
    text.append(f" {fraction * 100:3.0f}%")
    return text


def fmt_runtime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes = int(seconds // 60)
    return f"{minutes} min" if minutes < 120 else f"{minutes // 60} h {minutes % 60:02d}"


def fmt_age(then: datetime | None, now: datetime) -> str:
    """How long ago ``then`` was, as of ``now`` (given by the caller: the app's clock)."""
    if then is None:
        return "never"
    delta = now - then
    if delta < timedelta(0):
        return "just now"
    secs = int(delta.total_seconds())
    if secs < 90:
        return f"{secs} s ago"
    if secs < 5400:
        return f"{secs // 60} min ago"
    if secs < 172800:
        return f"{secs // 3600} h ago"
    return f"{secs // 86400} days ago"


def fmt_ts(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"
