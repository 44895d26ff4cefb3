"""KeyBar: the active key bindings in one line at the bottom, as one widget.

Textual's Footer recomposes a widget per binding whenever focus or screen changes (16 widgets per
change here, 10-40 ms of the event loop each time on 2 cores). The key bar redraws one line of text.
"""

from __future__ import annotations

from rich.text import Text
from textual.screen import Screen
from textual.widgets import Static


class KeyBar(Static):
    """The screen's bindings that ask to be shown (``Binding.show``), then the command palette's key."""

    DEFAULT_CSS = """
    KeyBar { dock: bottom; height: 1; width: 1fr; background: $panel; color: $text-muted; padding: 0 1; }
    """

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._changed)
        self._changed(self.screen)

    def _changed(self, screen: Screen) -> None:
        if not self.is_attached or screen is not self.screen:
            return
        text = Text(no_wrap=True, overflow="ellipsis")
        seen: set[str] = set()
        palette = None
        key_style = f"bold {self.app.theme_variables.get('accent', 'yellow')}"
        for _node, binding, enabled, _tooltip in screen.active_bindings.values():
            if binding.action == "app.command_palette" or binding.action == "command_palette":
                palette = binding
                continue
            if not binding.show or binding.action in seen:
                continue
            seen.add(binding.action)
            text.append(f" {self.app.get_key_display(binding)} ", style=key_style if enabled else "dim")
            text.append(f"{binding.description} ", style="" if enabled else "dim")
        if palette is not None and self.app.ENABLE_COMMAND_PALETTE:
            text.append("  ")
            text.append(f"{self.app.get_key_display(palette)} ", style=key_style)
            text.append("palette")
        self.update(text)
