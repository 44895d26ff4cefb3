"""The audit log: who did what to which targets, newest first; filter by ``action= actor= target=``."""

from __future__ import annotations

import json
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static

from fleet.errors import InputError

from ..widgets import FilterBox
from ..widgets.keybar import KeyBar
from ..widgets.render import fmt_ts
from ..widgets.windowtable import WindowTable
from .base import FleetScreen


def parse_audit_filter(text: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {"action": None, "actor": None, "target": None}
    for word in text.split():
        key, eq, value = word.partition("=")
        if not eq:
            key, value = "target", word
        if key not in out:
            raise InputError(f"unknown audit filter {key!r}: action, actor, target")
        out[key] = value or None
    return out


class AuditScreen(FleetScreen):
    """Key 7."""

    TITLE = "Audit"
    BINDINGS = [Binding("slash", "focus_filter", "Filter"), Binding("escape", "focus_table", "Table", show=False)]

    def __init__(self) -> None:
        super().__init__()
        self.filters = parse_audit_filter("")

    def compose(self) -> ComposeResult:
        yield from self.compose_chrome()
        yield FilterBox(placeholder="action=power.cycle actor=tech target=HOST (or just a host name)", id="filter",
                        debounce_s=self.fleet_app.debounce_s)
        yield Static("", id="status")
        yield WindowTable("id", "when (UTC)", "actor", "action", "result", "targets", "detail", id="audit")
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one("#audit", WindowTable).focus()
        super().on_mount()

    def fetch(self) -> Any:
        f = self.filters
        if f["target"]:
            rows = self.fleet.audit_for(f["target"], limit=300)
            return [a for a in rows if (not f["action"] or a.action == f["action"])
                    and (not f["actor"] or a.actor == f["actor"])]
        return self.fleet.audit(limit=300, action=f["action"], actor=f["actor"])

    def show(self, data: Any) -> None:
        cells = []
        for a in data:
            targets = ", ".join(a.targets[:4]) + (f" +{a.target_count - 4}" if a.target_count > 4 else "")
            detail = json.dumps(a.detail, default=str, sort_keys=True)
            cells.append((str(a.id), fmt_ts(a.ts), a.actor, a.action,
                          Text(a.result, style="green" if a.result == "ok" else "bold red"), targets,
                          detail[:70] + ("…" if len(detail) > 70 else "")))
        self.query_one("#audit", WindowTable).set_rows(cells, [str(a.id) for a in data])
        desc = " ".join(f"{k}={v}" for k, v in self.filters.items() if v)
        self.query_one("#status", Static).update(Text(f"{len(data)} entries", style="bold")
                                                 + Text(f" · {desc}" if desc else " · newest first", style="dim"))

    @on(FilterBox.Settled, "#filter")
    def _filter(self, event: FilterBox.Settled) -> None:
        try:
            self.filters = parse_audit_filter(event.value)
        except InputError as exc:
            self.query_one("#status", Static).update(Text(str(exc), style="bold red"))
            return
        self.reload()

    def action_focus_filter(self) -> None:
        self.query_one("#filter", FilterBox).focus()

    def action_focus_table(self) -> None:
        self.query_one("#audit", WindowTable).focus()
