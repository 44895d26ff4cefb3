"""One server: identity, power and health, sensors with sparklines, SEL, UPS and outlets, NICs, disks,
recent audit, and the actions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, VerticalScroll
from textual.widgets import Static
from textual.worker import Worker, WorkerState

from fleet.model.views import AuditRow, ServerDetail, visible
from fleet.service.browse import SensorSeries

from ..actions import run_device_op
from ..widgets.keybar import KeyBar
from ..widgets.render import fmt_age, fmt_runtime, fmt_ts, health_text, plain, power_text, spark, state_text
from .base import ACTION_BINDINGS, FleetScreen, describe_error


@dataclass
class ServerData:
    detail: ServerDetail
    status: dict[str, Any]
    sensors: list[SensorSeries]
    audit: list[AuditRow]


class ServerScreen(FleetScreen):
    """Pushed from the servers list or a rack elevation (enter); escape goes back."""

    TITLE = "Server"
    BINDINGS = [Binding("escape", "app.pop_screen", "Back"), Binding("l", "load_sel", "Read SEL"),
                Binding("r", "reload", "Refresh"), *ACTION_BINDINGS]

    def __init__(self, hostname: str) -> None:
        super().__init__()
        self.hostname = hostname
        self.sel_state = "not read"

    def compose(self) -> ComposeResult:
        yield from self.compose_chrome()
        with Grid(id="server-grid"):
            # One Static per column, each a stack of Rich tables: few widgets, cheap to mount and to redraw.
            with VerticalScroll(classes="panel"):
                yield Static(id="server-left")
            with VerticalScroll(classes="panel"):
                yield Static(id="server-right")
        yield KeyBar()

    def on_mount(self) -> None:
        self.sub_title = self.hostname
        self.data: ServerData | None = None
        self.sel_text: Text | Table = Text("not read yet (l reads it)", style="dim")
        super().on_mount()
        if self.fleet_app.read_sel:
            self.action_load_sel()

    def fetch(self) -> ServerData:
        f = self.fleet
        return ServerData(f.server(self.hostname), f.server_status(self.hostname),
                          f.sensor_history(self.hostname, points=24), f.audit_for(self.hostname, limit=12))

    def show(self, data: Any) -> None:
        self.data = data
        self._draw()

    def _draw(self) -> None:
        d = self.data
        if d is None:
            return
        row, st = d.detail.row, d.status
        ident = Table.grid(padding=(0, 2))
        ident.add_column(style="bold")
        ident.add_column()
        place = " / ".join(x for x in (row.site, row.pod, row.rack) if x)
        if row.position is not None:
            place += f"  U{row.position}" + (f"-{row.position + row.height - 1}" if row.height > 1 else "")
        state = state_text(row.state)
        if d.detail.state_reason:
            state.append(f"  ({visible(d.detail.state_reason)})", style="dim")
        power = power_text(st["power"])
        power.append("   health ")
        power.append_text(health_text(st["health"]))
        seen = fmt_age(st["last_seen"], self.fleet_app.now()) if st["last_seen"] else "never swept"
        for key, value in (("host", Text(row.hostname, style="bold")), ("where", place or "-"),
                           ("state", state), ("power", power), ("last seen", seen),
                           ("profile", row.profile), ("serial", row.serial or "-"), ("asset", row.asset_tag or "-"),
                           ("BMC", row.bmc or "-"), ("IP", row.primary_ip or "-"),
                           ("tags", ", ".join(row.tags) or "-")):
            ident.add_row(key, plain(value))
        if st["last_error"]:
            ident.add_row("last error", Text(visible(st["last_error"]), style="red"))
        ups = [(str(u["psu"]), u["outlet"], u["name"],
                Text(u["status"], style="bold yellow" if "battery" in u["status"] else ""),
                f"{u['charge_pct']:.0f}%" if u["charge_pct"] is not None else "-", fmt_runtime(u["runtime_s"]))
               for u in st["ups"]]
        nics = [(n.name, n.mac, n.ip or "", n.switch, n.switch_port, "yes" if n.pxe else "") for n in d.detail.nics]
        disks = [(x["slot"], x["kind"], x["model"], x["serial"], str(x["size_gb"])) for x in d.detail.disks]
        left = Group(ident,
                     _section("Power path: UPS and outlets", ("PSU", "outlet", "UPS", "status", "charge", "runtime"),
                              ups, "no outlet on record"),
                     _section("NICs", ("name", "mac", "ip", "switch", "port", "pxe"), nics, "none on record"),
                     _section("Disks", ("slot", "kind", "model", "serial", "GB"), disks, "none on record"))
        sensors = [(s.metric, "-" if not s.values else f"{s.values[-1]:g}", s.unit,
                    Text(spark(s.values), style="cyan")) for s in d.sensors]
        audit = [(fmt_ts(a.ts), a.actor, a.action, Text(a.result, style="green" if a.result == "ok" else "bold red"))
                 for a in d.audit]
        right = Group(_section("Sensors (last readings, oldest → newest)", ("sensor", "value", "unit", "history"),
                               sensors, "no readings yet (a sweep records them)"),
                      Text("\nSEL", style=_SECTION), self.sel_text,
                      _section("Recent audit", ("when", "actor", "action", "result"), audit, "nothing yet"))
        self.query_one("#server-left", Static).update(left)
        self.query_one("#server-right", Static).update(right)

    def selected_hosts(self) -> list[str]:
        return [self.hostname]

    def action_reload(self) -> None:
        self.reload()

    # -- SEL, live from the BMC --------------------------------------------------------------------------

    def action_load_sel(self) -> None:
        make, host = self.fleet_app.ops_fleet, self.hostname
        self.sel_text = Text("reading the BMC…", style="dim")
        self._draw()
        self.run_worker(lambda: run_device_op(make, lambda f: f.sel(host)), name="sel", group="sel",
                        exclusive=True, thread=True, exit_on_error=False)

    @on(Worker.StateChanged)
    def _sel_done(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "sel":
            return
        if event.state == WorkerState.SUCCESS:
            entries = event.worker.result or []
            rows = [(str(e.record_id), fmt_ts(e.ts), e.sensor,
                     Text(e.event, style={"critical": "bold red", "warning": "yellow"}.get(e.severity, "")))
                    for e in entries[-50:]]
            table = _table(("id", "time", "sensor", "event"), rows, "empty")
            table.caption = f"{len(entries)} entries (l reads again)"
            table.caption_justify = "left"
            self.sel_text = table
        elif event.state == WorkerState.ERROR:
            self.sel_text = Text(f"unavailable: {describe_error(event.worker.error)}", style="red")
        else:
            return
        self._draw()


_SECTION = "bold #ffa62b"


def _table(columns: tuple[str, ...], rows: list[tuple[Any, ...]], empty: str) -> Table | Text:
    if not rows:
        return Text(empty, style="dim")
    table = Table(box=None, header_style="bold", pad_edge=False, show_edge=False, expand=False)
    for col in columns:
        table.add_column(col, no_wrap=True, overflow="ellipsis")
    for row in rows:
        table.add_row(*(plain(c) for c in row))
    return table


def _section(title: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]], empty: str) -> Group:
    return Group(Text(f"\n{title}", style=_SECTION), _table(columns, rows, empty))
