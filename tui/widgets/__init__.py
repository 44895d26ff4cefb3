"""Reusable pieces of the TUI: text renderings (bars, sparklines, colours) and the filter box."""

from .filterbox import FilterBox
from .render import bar, fmt_age, fmt_runtime, health_text, power_text, severity_text, spark, state_text

__all__ = ["FilterBox", "bar", "fmt_age", "fmt_runtime", "health_text", "power_text", "severity_text", "spark",
           "state_text"]
