"""Events: filter (``status= severity= kind= target=``, or words for the target), acknowledge with ``k``."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static
from textual.worker import Worker, WorkerState

from fleet.errors import InputError

from ..widgets import FilterBox
from ..widgets.keybar import KeyBar
from ..widgets.render import fmt_ts, severity_text
from ..widgets.windowtable import WindowTable
from .base import ACTION_BINDINGS, FleetScreen, describe_error

_KEYS = ("status", "severity", "kind", "target")


def parse_event_filter(text: str) -> dict[str, str | None]:
    """``status=acked severity=critical kind=ups-* web*`` → the keyword filters (open events by default)."""
    out: dict[str, str | None] = {"status": "open", "severity": None, "kind": None, "target": None}
    for word in text.split():
        key, eq, value = word.partition("=")
        if not eq:
            key, value = "target", word
        if key not in _KEYS:
            raise InputError(f"unknown event filter {key!r}: {', '.join(_KEYS)}")
        out[key] = value or None
    return out


class EventsScreen(FleetScreen):
    """Key 5."""

    TITLE = "Events"
    BINDINGS = [Binding("slash", "focus_filter", "Filter"), Binding("k", "ack", "Acknowledge"),
                Binding("escape", "focus_table", "Table", show=False),
                Binding("m", "remediate", "Remediate"), *ACTION_BINDINGS]

    def __init__(self) -> None:
        super().__init__()
        self.filters: dict[str, str | None] = parse_event_filter("")

    def compose(self) -> ComposeResult:
        yield from self.compose_chrome()
        yield FilterBox(placeholder="status=open|acked|resolved|all severity=critical kind=ups-* target (glob)",
                        id="filter", debounce_s=self.fleet_app.debounce_s)
        yield Static("", id="status")
        yield WindowTable("id", "opened", "severity", "status", "target", "kind", "count", "message", id="events")
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one("#events", WindowTable).focus()
        super().on_mount()

    def fetch(self) -> Any:
        return self.fleet.event_window(limit=300, **self.filters)

    def show(self, data: Any) -> None:
        rows, total = data
        cells = []
        for e in rows:
            status = Text(e["status"] + (f" by {e['acked_by']}" if e["acked_by"] else ""),
                          style="dim" if e["status"] != "open" else "bold")
            cells.append((str(e["id"]), fmt_ts(e["opened_at"]), severity_text(e["severity"]), status, e["target"],
                          e["kind"], str(e["count"]), e["message"][:80]))
        self.query_one("#events", WindowTable).set_rows(cells, [str(e["id"]) for e in rows])
        desc = " ".join(f"{k}={v}" for k, v in self.filters.items() if v)
        self.query_one("#status", Static).update(
            Text(f"{total:,} events", style="bold") + Text(f" · {desc}" + (f" · newest {len(rows)} shown"
                                                                           if total > len(rows) else ""), style="dim"))

    @on(FilterBox.Settled, "#filter")
    def _filter(self, event: FilterBox.Settled) -> None:
        try:
            self.filters = parse_event_filter(event.value)
        except InputError as exc:
            self.query_one("#status", Static).update(Text(str(exc), style="bold red"))
            return
        self.reload()

    def _cursor(self) -> tuple[int, str] | None:
        table = self.query_one("#events", WindowTable)
        if not table.row_count:
            return None
        row = table.get_row_at(table.cursor_row)
        return int(str(row[0])), str(row[4])

    def selected_hosts(self) -> list[str]:
        cur = self._cursor()
        if cur is None:
            return []
        return [cur[1]]

    def action_ack(self) -> None:
        cur = self._cursor()
        if cur is None:
            return
        fleet, event_id = self.fleet, cur[0]
        self.run_worker(lambda: (fleet.ack_event(event_id), event_id)[1], name="ack", group="ack", thread=True,
                        exit_on_error=False)

    @on(Worker.StateChanged)
    def _acked(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "ack":
            return
        if event.state == WorkerState.SUCCESS:
            self.notify(f"event {event.worker.result} acknowledged", timeout=3)
            self.reload()
        elif event.state == WorkerState.ERROR:
            self.notify(describe_error(event.worker.error), title="cannot acknowledge", severity="error")

    def action_remediate(self) -> None:
        """The policies' plan for every open event (a dry run first)."""
        self.start_action("remediate", [])

    def action_focus_filter(self) -> None:
        self.query_one("#filter", FilterBox).focus()

    def action_focus_table(self) -> None:
        self.query_one("#events", WindowTable).focus()
