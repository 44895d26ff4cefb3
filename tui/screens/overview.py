"""The fleet at a glance: servers by lifecycle state, health and power; open events; last sweep; UPSes on battery."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Grid
from textual.widgets import Static

from fleet.service.browse import Overview

from ..widgets.keybar import KeyBar
from ..widgets.render import (
    HEALTH_STYLE,
    POWER_STYLE,
    SEVERITY_STYLE,
    STATE_STYLE,
    fmt_age,
    fmt_runtime,
    fmt_ts,
    progress,
)
from .base import FleetScreen

_STATE_ORDER = ("deployed", "ready", "maintenance", "deploying", "commissioning", "new", "failed", "quarantined",
                "decommissioning", "rma", "retired")


def _counts(title: str, counts: dict[str, int], order: tuple[str, ...], styles: dict[str, str], total: int
            ) -> Table:
    table = Table(title=title, title_justify="left", box=None, expand=True, show_header=False)
    table.add_column("what")
    table.add_column("n", justify="right")
    table.add_column("share")
    keys = [k for k in order if k in counts] + sorted(k for k in counts if k not in order)
    for key in keys:
        style = styles.get(key, "") or "white"
        table.add_row(Text(key, style=style), f"{counts[key]:,}",
                      progress(counts[key] / total if total else None, style.replace("bold ", ""), 14))
    if not keys:
        table.add_row(Text("none", style="dim"), "", "")
    return table


class OverviewScreen(FleetScreen):
    """Key 1."""

    TITLE = "Overview"

    def compose(self) -> ComposeResult:
        yield from self.compose_chrome()
        with Grid(id="overview"):
            yield Static(id="ov-state", classes="panel")
            yield Static(id="ov-health", classes="panel")
            yield Static(id="ov-events", classes="panel")
            yield Static(id="ov-power", classes="panel")
            yield Static(id="ov-sweep", classes="panel")
            yield Static(id="ov-ups", classes="panel")
            yield Static(id="ov-attention", classes="panel")
        yield KeyBar()

    def fetch(self) -> tuple[Overview, list[dict[str, Any]]]:
        critical, _ = self.fleet.event_window(status="open", severity="critical", limit=10)
        return self.fleet.overview(), critical

    def show(self, data: Any) -> None:
        ov, critical = data
        attention = Table(title="Needs attention: open critical events, newest first", title_justify="left",
                          box=None, expand=True)
        for col in ("opened (UTC)", "target", "kind", "message"):
            attention.add_column(col, no_wrap=True, overflow="ellipsis")
        for e in critical:
            attention.add_row(fmt_ts(e["opened_at"]), Text(e["target"], style="bold"), Text(e["kind"], style="red"),
                              e["message"])
        if not critical:
            attention.add_row(Text("nothing critical", style="green"), "", "", "")
        self.query_one("#ov-attention", Static).update(attention)
        self.sub_title = f"{ov.servers:,} servers"
        self.query_one("#ov-state", Static).update(
            _counts(f"Servers by lifecycle state ({ov.servers:,})", ov.by_state, _STATE_ORDER, STATE_STYLE,
                    ov.servers))
        self.query_one("#ov-health", Static).update(
            _counts("By health", ov.by_health, ("ok", "warning", "critical", "unknown"), HEALTH_STYLE, ov.servers))
        self.query_one("#ov-power", Static).update(
            _counts("By power state", ov.by_power, ("on", "off", "unknown"), POWER_STYLE, ov.servers))
        events = Table(title="Open events by severity", title_justify="left", box=None, expand=True,
                       show_header=False)
        events.add_column("severity")
        events.add_column("n", justify="right")
        for sev in ("critical", "warning", "info"):
            n = ov.events_by_severity.get(sev, 0)
            events.add_row(Text(sev, style=SEVERITY_STYLE.get(sev, "") if n else "dim"), f"{n:,}")
        events.add_row(Text("press 5 for the events", style="dim"), "")
        self.query_one("#ov-events", Static).update(events)
        sweep = Text("Last sweep\n", style="bold")
        age = fmt_age(ov.last_sweep_at, self.fleet_app.now())
        sweep.append(age, style="bold red" if ov.last_sweep_at is None else "")
        if ov.last_sweep_at is not None:
            sweep.append(f"\n{ov.last_sweep_at:%Y-%m-%d %H:%M:%S} UTC", style="dim")
        self.query_one("#ov-sweep", Static).update(sweep)
        ups = Table(title=f"UPSes on battery ({len(ov.ups_on_battery)} of {ov.ups_total:,})", title_justify="left",
                    box=None, expand=True)
        ups.add_column("UPS")
        ups.add_column("charge", justify="right")
        ups.add_column("runtime", justify="right")
        for u in ov.ups_on_battery[:8]:
            ups.add_row(Text(u.name, style="yellow"), f"{u.charge_pct:.0f}%" if u.charge_pct is not None else "-",
                        fmt_runtime(u.runtime_s))
        if not ov.ups_on_battery:
            ups.add_row(Text("none: all on mains", style="green"), "", "")
        self.query_one("#ov-ups", Static).update(ups)
