"""One server: identity, power and health, sensors with sparklines, SEL, UPS and outlets, NICs, disks,
recent audit, and the actions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Vertical
from textual.widgets import DataTable, Label, Static
from textual.worker import Worker, WorkerState

from fleet.service_browse import SensorSeries
from fleet.views import AuditRow, ServerDetail

from ..actions import run_device_op
from ..widgets.keybar import KeyBar
from ..widgets.render import fmt_age, fmt_runtime, fmt_ts, health_text, power_text, spark, state_text
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
            with Vertical(classes="panel"):
                yield Static(id="identity")
                yield Label("Power path: UPS and outlets", classes="section")
                yield DataTable(id="ups", show_cursor=False)
                yield Label("NICs", classes="section")
                yield DataTable(id="nics", show_cursor=False)
                yield Label("Disks", classes="section")
                yield DataTable(id="disks", show_cursor=False)
            with Vertical(classes="panel"):
                yield Label("Sensors (last readings, oldest → newest)", classes="section")
                yield DataTable(id="sensors", show_cursor=False)
                yield Label("SEL (read from the BMC: l)", classes="section", id="sel-title")
                yield DataTable(id="sel", show_cursor=False)
                yield Label("Recent audit", classes="section")
                yield DataTable(id="audit", show_cursor=False)
        yield KeyBar()

    def on_mount(self) -> None:
        self.sub_title = self.hostname
        for table_id, columns in (("ups", ("PSU", "outlet", "UPS", "status", "charge", "runtime")),
                                  ("nics", ("name", "mac", "ip", "switch", "port", "pxe")),
                                  ("disks", ("slot", "kind", "model", "serial", "GB")),
                                  ("sensors", ("sensor", "value", "unit", "history")),
                                  ("sel", ("id", "time", "sensor", "event")),
                                  ("audit", ("when", "actor", "action", "result"))):
            self.query_one(f"#{table_id}", DataTable).add_columns(*columns)
        super().on_mount()
        if self.fleet_app.read_sel:
            self.action_load_sel()

    def fetch(self) -> ServerData:
        f = self.fleet
        return ServerData(f.server(self.hostname), f.server_status(self.hostname),
                          f.sensor_history(self.hostname, points=24), f.audit_for(self.hostname, limit=12))

    def show(self, data: Any) -> None:
        d: ServerData = data
        row, st = d.detail.row, d.status
        ident = Table.grid(padding=(0, 2))
        ident.add_column(style="bold")
        ident.add_column()
        place = " / ".join(x for x in (row.site, row.pod, row.rack) if x)
        if row.position is not None:
            place += f"  U{row.position}" + (f"-{row.position + row.height - 1}" if row.height > 1 else "")
        state = state_text(row.state)
        if d.detail.state_reason:
            state.append(f"  ({d.detail.state_reason})", style="dim")
        power = power_text(st["power"])
        power.append("   health ")
        power.append_text(health_text(st["health"]))
        seen = fmt_age(st["last_seen"], self.fleet_app.now()) if st["last_seen"] else "never swept"
        for key, value in (("host", Text(row.hostname, style="bold")), ("where", place or "-"),
                           ("state", state), ("power", power), ("last seen", seen),
                           ("profile", row.profile), ("serial", row.serial or "-"), ("asset", row.asset_tag or "-"),
                           ("BMC", row.bmc or "-"), ("IP", row.primary_ip or "-"),
                           ("tags", ", ".join(row.tags) or "-")):
            ident.add_row(key, value)
        if st["last_error"]:
            ident.add_row("last error", Text(st["last_error"], style="red"))
        self.query_one("#identity", Static).update(ident)

        ups = self.query_one("#ups", DataTable)
        ups.clear()
        for u in st["ups"]:
            status = Text(u["status"], style="bold yellow" if "battery" in u["status"] else "")
            ups.add_row(str(u["psu"]), u["outlet"], u["name"], status,
                        f"{u['charge_pct']:.0f}%" if u["charge_pct"] is not None else "-", fmt_runtime(u["runtime_s"]))
        nics = self.query_one("#nics", DataTable)
        nics.clear()
        for n in d.detail.nics:
            nics.add_row(n.name, n.mac, n.ip or "", n.switch, n.switch_port, "yes" if n.pxe else "")
        disks = self.query_one("#disks", DataTable)
        disks.clear()
        for disk in d.detail.disks:
            disks.add_row(disk["slot"], disk["kind"], disk["model"], disk["serial"], str(disk["size_gb"]))
        sensors = self.query_one("#sensors", DataTable)
        sensors.clear()
        for s in d.sensors:
            last = s.values[-1] if s.values else None
            sensors.add_row(s.metric, "-" if last is None else f"{last:g}", s.unit, Text(spark(s.values), style="cyan"))
        if not d.sensors:
            sensors.add_row(Text("no readings yet (a sweep records them)", style="dim"), "", "", "")
        audit = self.query_one("#audit", DataTable)
        audit.clear()
        for a in d.audit:
            audit.add_row(fmt_ts(a.ts), a.actor, a.action,
                          Text(a.result, style="green" if a.result == "ok" else "bold red"))

    def selected_hosts(self) -> list[str]:
        return [self.hostname]

    def action_reload(self) -> None:
        self.reload()

    # -- SEL, live from the BMC --------------------------------------------------------------------------

    def action_load_sel(self) -> None:
        make, host = self.fleet_app.ops_fleet, self.hostname
        self.query_one("#sel-title", Label).update("SEL: reading the BMC…")
        self.run_worker(lambda: run_device_op(make, lambda f: f.sel(host)), name="sel", group="sel",
                        exclusive=True, thread=True, exit_on_error=False)

    @on(Worker.StateChanged)
    def _sel_done(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "sel":
            return
        title = self.query_one("#sel-title", Label)
        table = self.query_one("#sel", DataTable)
        if event.state == WorkerState.SUCCESS:
            entries = event.worker.result or []
            table.clear()
            for e in entries[-50:]:
                table.add_row(str(e.record_id), fmt_ts(e.ts), e.sensor,
                              Text(e.event, style={"critical": "bold red", "warning": "yellow"}.get(e.severity, "")))
            title.update(f"SEL ({len(entries)} entries; l reads again)")
        elif event.state == WorkerState.ERROR:
            title.update(Text(f"SEL unavailable: {describe_error(event.worker.error)}", style="red"))
