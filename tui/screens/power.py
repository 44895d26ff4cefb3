"""Power: feeds, UPSes and PDUs with their load against capacity as bars; UPSes on battery first, with runtime."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static

from fleet.service.browse import PowerElement

from ..widgets import FilterBox
from ..widgets.keybar import KeyBar
from ..widgets.render import bar, fmt_runtime
from ..widgets.windowtable import WindowTable
from .base import FleetScreen


class PowerScreen(FleetScreen):
    """Key 4. The filter takes ``site=CODE``; ``b`` shows only UPSes on battery."""

    TITLE = "Power"
    BINDINGS = [Binding("slash", "focus_filter", "Filter"), Binding("b", "battery", "On battery only"),
                Binding("escape", "focus_table", "Table", show=False)]

    def __init__(self) -> None:
        super().__init__()
        self.site: str | None = None
        self.battery_only = False

    def compose(self) -> ComposeResult:
        yield from self.compose_chrome()
        yield FilterBox(placeholder="site=CODE (empty: every site)", id="filter",
                        debounce_s=self.fleet_app.debounce_s)
        yield Static("", id="status")
        yield WindowTable("kind", "name", "site", "rack", "status", "load / capacity", "watts", "charge", "runtime",
                          "servers", "fed by", id="power")
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one("#power", WindowTable).focus()
        super().on_mount()

    def fetch(self) -> tuple[list[PowerElement], int]:
        return self.fleet.power_tree(site=self.site, on_battery_only=self.battery_only, limit=300)

    def show(self, data: Any) -> None:
        elements, total = data
        cells = []
        on_battery = [e for e in elements if "on-battery" in e.status]
        for e in elements:
            status = Text(e.status or "", style="bold yellow" if "battery" in e.status else "")
            watts = e.measured_w if e.measured_w is not None else e.estimate_w
            how = "" if e.measured_w is not None else " est"
            cap = f"{watts or 0:,.0f}{how} / {e.capacity_w:,.0f} W" if e.capacity_w else \
                (f"{watts:,.0f}{how} W" if watts else "-")
            cells.append((e.kind, e.name, e.site or "", e.rack or "", status, bar(e.load_fraction, 16), cap,
                          f"{e.charge_pct:.0f}%" if e.charge_pct is not None else "",
                          fmt_runtime(e.runtime_s) if e.runtime_s is not None else "", str(e.servers or ""),
                          e.upstream or ""))
        self.query_one("#power", WindowTable).set_rows(cells, [f"{e.kind}:{e.name}" for e in elements])
        text = Text(f"{total:,} feeds, UPSes and PDUs" + (f" (first {len(elements)})" if total > len(elements) else ""),
                    style="bold")
        if on_battery:
            shortest = min((e.runtime_s for e in on_battery if e.runtime_s is not None), default=None)
            text.append(f" · {len(on_battery)} UPS on battery", style="bold yellow")
            if shortest is not None:
                text.append(f", shortest runtime {fmt_runtime(shortest)}", style="bold yellow")
        text.append(" · watts: UPS measured, else the profiles' peak (est)", style="dim")
        self.query_one("#status", Static).update(text)

    @on(FilterBox.Settled, "#filter")
    def _filter(self, event: FilterBox.Settled) -> None:
        words = event.value.split()
        site = None
        for w in words:
            if w.startswith("site="):
                site = w.removeprefix("site=") or None
            elif w:
                site = w
        self.site = site
        self.reload()

    def action_battery(self) -> None:
        self.battery_only = not self.battery_only
        self.notify("UPSes on battery only" if self.battery_only else "every feed, UPS and PDU", timeout=2)
        self.reload()

    def action_focus_filter(self) -> None:
        self.query_one("#filter", FilterBox).focus()

    def action_focus_table(self) -> None:
        self.query_one("#power", WindowTable).focus()
