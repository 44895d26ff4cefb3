"""Reusable pieces of the TUI: the filter box, the window table, the key bar and text renderings."""

from .filterbox import FilterBox
from .keybar import KeyBar
from .render import bar, fmt_age, fmt_runtime, health_text, power_text, progress, severity_text, spark, state_text
from .windowtable import WindowTable

__all__ = ["FilterBox", "KeyBar", "WindowTable", "bar", "fmt_age", "fmt_runtime", "health_text", "power_text",
           "progress", "severity_text", "spark", "state_text"]
