"""WindowTable: a read-only table for a window of rows, cheap to replace and to repaint.

Textual's DataTable measures every cell of every new row and renders cells through Rich on each
repaint: replacing a window of 200 rows cost 40-80 ms of the event loop here (2 cores). A window
table does less: column widths are the cells' lengths, only the visible lines are drawn (from
segments cached per row), and a refresh that brings the same rows changes nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.events import Click
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from fleet.model.views import visible

Cell = str | Text

__all__ = ["Cell", "WindowTable"]


def _visible(cell: Cell) -> Cell:
    """Stored text is drawn with control and bidi characters escaped, never raw."""
    return visible(cell) if isinstance(cell, str) else cell


@functools.lru_cache(maxsize=256)
def _parsed(style: str) -> Style:
    return Style.parse(style)


def _style(style: str | Style) -> Style:
    return style if isinstance(style, Style) else _parsed(style)


class WindowTable(ScrollView, can_focus=True):
    """Rows of cells (``str`` or one-line ``rich.text.Text``), one key each; a row cursor."""

    DEFAULT_CSS = """
    WindowTable { height: 1fr; }
    WindowTable > .windowtable--header { text-style: bold; background: $panel; }
    WindowTable > .windowtable--cursor { background: $block-cursor-blurred-background; }
    WindowTable:focus > .windowtable--cursor { background: $block-cursor-background;
                                               color: $block-cursor-foreground; text-style: bold; }
    WindowTable > .windowtable--even { background: $surface-lighten-1 10%; }
    """
    COMPONENT_CLASSES = {"windowtable--header", "windowtable--cursor", "windowtable--even"}
    BINDINGS = [
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "cursor_to(0)", "First", show=False),
        Binding("end", "cursor_to(-1)", "Last", show=False),
        Binding("enter", "select", "Open", show=False),
    ]

    cursor_row: reactive[int] = reactive(0, always_update=True)

    @dataclass
    class RowSelected(Message):
        """Enter (or a click on the cursor's row) on a row."""

        table: WindowTable
        row_index: int
        key: str

        @property
        def control(self) -> WindowTable:
            return self.table

    @dataclass
    class RowHighlighted(Message):
        table: WindowTable
        row_index: int
        key: str

        @property
        def control(self) -> WindowTable:
            return self.table

    def __init__(self, *columns: str, zebra: bool = True, id: str | None = None) -> None:
        super().__init__(id=id)
        self.columns: list[str] = list(columns)
        self.zebra = zebra
        self._rows: list[tuple[Cell, ...]] = []
        self._keys: list[str] = []
        self._index: dict[str, int] = {}
        self._widths: list[int] = [len(c) for c in self.columns]
        self._lines: dict[int, list[Segment]] = {}

    # -- content ------------------------------------------------------------------------------------------

    @property
    def row_count(self) -> int:
        return len(self._rows)

    def get_row_at(self, index: int) -> list[Cell]:
        return list(self._rows[index])

    def get_row_index(self, key: str) -> int:
        return self._index[key]

    def key_at(self, index: int) -> str:
        return self._keys[index]

    @property
    def cursor_key(self) -> str | None:
        return self._keys[self.cursor_row] if self._rows else None

    def set_rows(self, rows: Sequence[Sequence[Cell]], keys: Sequence[str], *, keep_cursor: bool = True) -> bool:
        """Show these rows (replacing the last ones). False, and nothing redrawn, when they are the same."""
        new_rows = [tuple(_visible(c) for c in r) for r in rows]
        new_keys = list(keys)
        if new_keys == self._keys and new_rows == self._rows:
            return False
        old_key = self.cursor_key if keep_cursor else None
        self._rows, self._keys = new_rows, new_keys
        self._index = {k: i for i, k in enumerate(new_keys)}
        widths = [len(c) for c in self.columns]
        for row in new_rows:
            for i, cell in enumerate(row[:len(widths)]):
                n = cell.cell_len if isinstance(cell, Text) else len(cell)
                if n > widths[i]:
                    widths[i] = n
        self._widths = [min(w, 80) for w in widths]
        self._lines.clear()
        self.virtual_size = Size(sum(self._widths) + 2 * len(self._widths), len(new_rows) + 1)
        cursor = self._index.get(old_key, self.cursor_row) if old_key is not None else 0
        self.cursor_row = max(0, min(cursor, len(new_rows) - 1))
        self.refresh()
        return True

    def update_row(self, key: str, row: Sequence[Cell]) -> None:
        index = self._index[key]
        row = tuple(_visible(c) for c in row)
        self._rows[index] = row
        self._lines.pop(index, None)
        for i, cell in enumerate(row[:len(self._widths)]):
            n = min(cell.cell_len if isinstance(cell, Text) else len(cell), 80)
            if n > self._widths[i]:  # a wider cell: every line is drawn again
                self._widths[i] = n
                self._lines.clear()
        self.refresh()

    def clear(self) -> None:
        self.set_rows([], [])

    # -- cursor -------------------------------------------------------------------------------------------

    def move_cursor(self, *, row: int, animate: bool = False) -> None:
        self.cursor_row = row

    def validate_cursor_row(self, row: int) -> int:
        return max(0, min(row, len(self._rows) - 1)) if self._rows else 0

    def watch_cursor_row(self, old: int, new: int) -> None:
        self._lines.pop(old, None)
        self._lines.pop(new, None)
        body = max(1, self.size.height - 1)
        top = round(self.scroll_offset.y)
        if new < top:
            self.scroll_to(y=new, animate=False)
        elif new >= top + body:
            self.scroll_to(y=new - body + 1, animate=False)
        self.refresh()
        if self._rows:
            self.post_message(self.RowHighlighted(self, new, self._keys[new]))

    def action_cursor(self, delta: int) -> None:
        self.cursor_row += delta

    def action_page(self, direction: int) -> None:
        self.cursor_row += direction * max(1, self.size.height - 2)

    def action_cursor_to(self, row: int) -> None:
        self.cursor_row = row if row >= 0 else len(self._rows) - 1

    def action_select(self) -> None:
        if self._rows:
            self.post_message(self.RowSelected(self, self.cursor_row, self._keys[self.cursor_row]))

    def on_click(self, event: Click) -> None:
        index = round(self.scroll_offset.y) + event.y - 1
        if 0 <= index < len(self._rows):
            if index == self.cursor_row and event.chain > 1:
                self.action_select()
            self.cursor_row = index

    # -- drawing ------------------------------------------------------------------------------------------

    def _cells(self, cells: Sequence[Cell], base: Style) -> list[Segment]:
        out: list[Segment] = []
        for i, width in enumerate(self._widths):
            cell = cells[i] if i < len(cells) else ""
            out.append(Segment(" ", base))
            if isinstance(cell, Text):
                text = cell.copy()
                text.truncate(width, pad=True)
                # Text.render leaves the text's own style to the caller; spans come with theirs.
                own = base + _style(cell.style) if cell.style else base
                for seg in text.render(self.app.console):
                    if seg.text != "\n":
                        out.append(Segment(seg.text, own + seg.style if seg.style else own))
            else:
                value = cell[:width]
                out.append(Segment(value + " " * (width - len(value)), base))
            out.append(Segment(" ", base))
        return out

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        if y == 0:
            segments = self._cells(self.columns, self.get_component_rich_style("windowtable--header"))
        else:
            index = round(scroll_y) + y - 1
            if index >= len(self._rows):
                return Strip.blank(width, self.rich_style)
            segments = self._lines.get(index)
            if segments is None:
                style = self.rich_style
                if index == self.cursor_row:
                    style = style + self.get_component_rich_style("windowtable--cursor")
                elif self.zebra and index % 2:
                    style = style + self.get_component_rich_style("windowtable--even")
                segments = self._cells(self._rows[index], style)
                self._lines[index] = segments
        line_style = self.rich_style if y else self.get_component_rich_style("windowtable--header")
        return Strip(segments).crop_extend(round(scroll_x), round(scroll_x) + width, line_style)

    def on_focus(self) -> None:
        self._lines.pop(self.cursor_row, None)
        self.refresh()

    def on_blur(self) -> None:
        self._lines.pop(self.cursor_row, None)
        self.refresh()
