"""Servers: the selector filter box over a keyset-paged window of the fleet.

The table never holds more than one window (``WINDOW`` rows); ``n``/``p`` move to the next/previous
window, the status line says how many match in all. Typing re-queries after a short pause, in a worker.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static

from fleet.errors import SelectorError
from fleet.service.browse import BrowseRow, ServerWindow

from ..widgets import FilterBox
from ..widgets.keybar import KeyBar
from ..widgets.render import health_text, power_text, state_text
from ..widgets.windowtable import Cell, WindowTable
from .base import ACTION_BINDINGS, FleetScreen

WINDOW = 200
_COLUMNS = (" ", "host", "site", "pod", "rack", "U", "state", "power", "health", "profile", "ip")


class ServersScreen(FleetScreen):
    """Key 2."""

    TITLE = "Servers"
    BINDINGS = [
        Binding("slash", "focus_filter", "Filter"),
        Binding("escape", "focus_table", "Table", show=False),
        Binding("space", "mark", "Mark"),
        Binding("asterisk", "mark_window", "Mark window", show=False),
        Binding("n", "next_window", "Next"),
        Binding("p", "previous_window", "Prev"),
        *ACTION_BINDINGS,
    ]

    def __init__(self, selector: str = "") -> None:
        super().__init__()
        self.selector = selector
        self.after: str | None = None
        self.before: str | None = None
        self.window: ServerWindow | None = None
        #: The selector whose window the table shows (``selector`` may be newer, its query on the way).
        self.shown_selector: str | None = None
        self.marked: set[str] = set()
        self.window_index = 0

    def compose(self) -> ComposeResult:
        yield from self.compose_chrome()
        yield FilterBox(placeholder="selector: rack=R01 state=deployed host=web* tag=gpu health=critical",
                        value=self.selector, id="filter", debounce_s=self.fleet_app.debounce_s)
        yield Static("", id="status")
        yield WindowTable(*_COLUMNS, id="servers")
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one("#servers", WindowTable).focus()
        super().on_mount()

    # -- data ---------------------------------------------------------------------------------------------

    def fetch(self) -> tuple[str, ServerWindow | SelectorError]:
        selector = self.selector
        try:
            return selector, self.fleet.server_window(selector, after=self.after, before=self.before, limit=WINDOW)
        except SelectorError as exc:  # a half-typed selector: say so beside the box, keep the last window
            return selector, exc

    def show(self, data: Any) -> None:
        selector, window = data
        status = self.query_one("#status", Static)
        if isinstance(window, SelectorError):
            status.update(Text(str(window), style="bold red"))
            return
        if selector != self.selector:
            return  # an older query; the newer one is on its way
        moved = self.window is None or window.first != self.window.first
        self.window = window
        table = self.query_one("#servers", WindowTable)
        table.set_rows([self._cells(r) for r in window.rows], [r.hostname for r in window.rows],
                       keep_cursor=not moved)
        self.shown_selector = selector
        self._status()

    def _cells(self, r: BrowseRow) -> tuple[Cell, ...]:
        return (Text("●", style="bold magenta") if r.hostname in self.marked else "", r.hostname, r.site or "",
                r.pod or "", r.rack or "", "" if r.position is None else str(r.position), state_text(r.state),
                power_text(r.power), health_text(r.health), r.profile, r.primary_ip or "")

    def _status(self) -> None:
        w = self.window
        if w is None:
            return
        start = self.window_index * WINDOW
        shown = f"{start + 1:,}-{start + len(w.rows):,}" if w.rows else "none"
        text = Text(f"{w.total:,} match", style="bold")
        text.append(f" · showing {shown}" + (f" · {len(self.marked)} marked" if self.marked else ""))
        hints = [k for k, ok in (("n next", w.more_after), ("p previous", w.more_before)) if ok]
        if hints:
            text.append(" · " + ", ".join(hints), style="dim")
        self.query_one("#status", Static).update(text)
        self.sub_title = f"{self.selector or 'all'} · {w.total:,} match"

    @on(FilterBox.Settled, "#filter")
    def _filter(self, event: FilterBox.Settled) -> None:
        self.set_selector(event.value.strip())

    def set_selector(self, selector: str) -> None:
        self.selector = selector
        self.after = self.before = None
        self.window_index = 0
        self.reload()

    # -- keys ---------------------------------------------------------------------------------------------

    def action_focus_filter(self) -> None:
        self.query_one("#filter", FilterBox).focus()

    def action_focus_table(self) -> None:
        self.query_one("#servers", WindowTable).focus()

    def _cursor_host(self) -> str | None:
        return self.query_one("#servers", WindowTable).cursor_key

    def selected_hosts(self) -> list[str]:
        if self.marked:
            return sorted(self.marked)
        host = self._cursor_host()
        return [host] if host else []

    @on(WindowTable.RowSelected, "#servers")
    def _row_selected(self, event: WindowTable.RowSelected) -> None:
        self.action_open()

    def action_open(self) -> None:
        host = self._cursor_host()
        if host:
            from .server import ServerScreen

            self.app.push_screen(ServerScreen(host))

    def action_mark(self) -> None:
        host = self._cursor_host()
        if host is None:
            return
        self.marked.symmetric_difference_update({host})
        table = self.query_one("#servers", WindowTable)
        row = next((r for r in self.window.rows if r.hostname == host), None) if self.window else None
        if row is not None:
            table.update_row(host, self._cells(row))
        table.action_cursor(1)
        self._status()

    def action_mark_window(self) -> None:
        if self.window is not None:
            self.marked.update(r.hostname for r in self.window.rows)
            table = self.query_one("#servers", WindowTable)
            for r in self.window.rows:
                table.update_row(r.hostname, self._cells(r))
            self._status()

    def action_next_window(self) -> None:
        if self.window is not None and self.window.more_after:
            self.after, self.before = self.window.last, None
            self.window_index += 1
            self.reload()

    def action_previous_window(self) -> None:
        if self.window is not None and self.window.more_before:
            self.after, self.before = None, self.window.first
            self.window_index = max(0, self.window_index - 1)
            self.reload()
