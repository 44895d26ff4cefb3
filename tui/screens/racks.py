"""Racks as elevations: sites → pods/containers → racks on the left (loaded as they open), the chosen rack
unit by unit on the right, each server coloured by health with the state of the UPS that feeds it."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Static, Tree
from textual.worker import Worker, WorkerState

from fleet.service.browse import Elevation

from ..widgets.keybar import KeyBar
from ..widgets.render import HEALTH_STYLE, fmt_runtime, health_text, power_text, state_text
from .base import ACTION_BINDINGS, FleetScreen, describe_error


class RacksScreen(FleetScreen):
    """Key 3."""

    TITLE = "Racks"
    BINDINGS = [Binding("tab", "focus_next", "Switch pane", show=False),
                Binding("left_square_bracket", "focus_tree", "Tree", show=False), *ACTION_BINDINGS]

    def __init__(self) -> None:
        super().__init__()
        self.rack: tuple[str, str] | None = None  # (site, rack)
        self.elevation: Elevation | None = None

    def compose(self) -> ComposeResult:
        yield from self.compose_chrome()
        with Horizontal():
            tree: Tree[Any] = Tree("Sites", id="rack-tree")
            tree.show_root = False
            yield tree
            with Vertical(id="elevation-pane"):
                yield Static("Choose a rack on the left (enter).", id="rack-title")
                yield DataTable(id="elevation", cursor_type="row")
                yield Static(id="rack-devices")
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one("#elevation", DataTable).add_columns("U", "server", "state", "power", "health", "UPS")
        self.query_one("#rack-tree", Tree).focus()
        super().on_mount()

    # -- the tree: sites now, racks when a site opens ----------------------------------------------------

    def fetch(self) -> Any:
        sites = self.fleet.sites() if not self.loads else None
        elevation = self.fleet.rack_elevation(self.rack[1], self.rack[0]) if self.rack else None
        return sites, elevation

    def show(self, data: Any) -> None:
        sites, elevation = data
        if sites is not None:
            tree = self.query_one("#rack-tree", Tree)
            tree.clear()
            for site in sites:
                node = tree.root.add(f"{site.code}  ({site.racks} racks, {site.servers} servers)",
                                     data=("site", site.code), allow_expand=True)
                node.add_leaf("…", data=("loading", site.code))
            if tree.root.children:
                tree.move_cursor(tree.root.children[0])
            if len(sites) == 1:
                tree.root.children[0].expand()
        if elevation is not None:
            self._show_elevation(elevation)

    @on(Tree.NodeExpanded, "#rack-tree")
    def _expanded(self, event: Tree.NodeExpanded) -> None:
        kind, code = event.node.data or ("", "")
        if kind != "site" or not (event.node.children and event.node.children[0].data[0] == "loading"):
            return
        fleet, node = self.fleet, event.node
        self.run_worker(lambda: (node, fleet.racks(code)), name="racks", group="racks", thread=True,
                        exit_on_error=False)

    @on(Worker.StateChanged)
    def _racks_loaded(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "racks":
            if event.state == WorkerState.ERROR:
                self.notify(describe_error(event.worker.error), title="could not list racks", severity="error")
            elif event.state == WorkerState.SUCCESS:
                node, racks = event.worker.result
                node.remove_children()
                pods: dict[str, Any] = {}
                for r in racks:
                    parent = node
                    if r.pod:
                        if r.pod not in pods:
                            pods[r.pod] = node.add(f"pod {r.pod}", data=("pod", r.pod), expand=True)
                        parent = pods[r.pod]
                    parent.add_leaf(f"{r.name}  {r.servers} srv, {r.used_units}/{r.units} U",
                                    data=("rack", (r.site, r.name)))
        elif event.worker.group == "elevation":
            if event.state == WorkerState.ERROR:
                self.notify(describe_error(event.worker.error), title="could not load the rack", severity="error")
            elif event.state == WorkerState.SUCCESS:
                self._show_elevation(event.worker.result)

    @on(Tree.NodeSelected, "#rack-tree")
    def _selected(self, event: Tree.NodeSelected) -> None:
        kind, value = event.node.data or ("", "")
        if kind != "rack":
            return
        self.open_rack(*value)

    def open_rack(self, site: str, rack: str) -> None:
        self.rack = (site, rack)
        fleet = self.fleet
        self.run_worker(lambda: fleet.rack_elevation(rack, site), name="elevation", group="elevation",
                        exclusive=True, thread=True, exit_on_error=False)

    def _show_elevation(self, el: Elevation) -> None:
        self.elevation = el
        self.sub_title = f"{el.site} / {el.pod or '-'} / {el.rack}"
        title = Text(f"Rack {el.rack}", style="bold")
        title.append(f"  site {el.site}" + (f", pod {el.pod}" if el.pod else "") + f" · {el.units} U · "
                     f"{len(el.servers)} servers")
        self.query_one("#rack-title", Static).update(title)
        table = self.query_one("#elevation", DataTable)
        cursor = table.cursor_row
        table.clear()
        by_top: dict[int, Any] = {}
        for unit in el.servers:
            if unit.position is not None:
                by_top[unit.position + unit.height - 1] = unit
        u = el.units
        while u >= 1:
            unit = by_top.get(u)
            if unit is None:
                low = u
                while low > 1 and by_top.get(low - 1) is None:
                    low -= 1
                label = f"{u:2d}" if low == u else f"{u:2d}-{low}"
                table.add_row(Text(label, style="dim"), Text("· empty" if low == u else f"· {u - low + 1} U empty",
                                                             style="dim"), "", "", "", "", key=f"empty-{u}")
                u = low - 1
                continue
            label = f"{u:2d}" if unit.height == 1 else f"{u:2d}-{unit.position:d}"
            colour = HEALTH_STYLE.get(unit.health, "")
            ups = Text(unit.ups or "-", style="bold yellow" if unit.ups_status and "battery" in unit.ups_status
                       else "")
            if unit.ups_status and unit.ups_status not in ("online", "unknown"):
                ups.append(f" {unit.ups_status}", style="bold yellow")
            table.add_row(Text(label, style=colour), Text(unit.hostname, style=colour), state_text(unit.state),
                          power_text(unit.power), health_text(unit.health), ups, key=unit.hostname)
            u = (unit.position or u) - 1
        unplaced = [s for s in el.servers if s.position is None]
        for unit in unplaced:
            table.add_row("?", unit.hostname, state_text(unit.state), power_text(unit.power),
                          health_text(unit.health), unit.ups or "-", key=unit.hostname)
        if table.row_count:
            table.move_cursor(row=min(cursor, table.row_count - 1), animate=False)
        devices = Text()
        for d in el.devices:
            devices.append(f"{d.kind} UPS {d.name}: ", style="bold")
            devices.append(d.status, style="bold yellow" if "battery" in d.status else "")
            devices.append(f" · charge {d.charge_pct:.0f}%" if d.charge_pct is not None else "")
            devices.append(f" · runtime {fmt_runtime(d.runtime_s)}" if d.runtime_s is not None else "")
            devices.append(f" · load {d.load_pct:.0f}%\n" if d.load_pct is not None else "\n")
        self.query_one("#rack-devices", Static).update(devices)

    # -- selection ------------------------------------------------------------------------------------------

    def _cursor_host(self) -> str | None:
        table = self.query_one("#elevation", DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return None if key is None or key.startswith("empty-") else key

    def selected_hosts(self) -> list[str]:
        host = self._cursor_host()
        return [host] if host else []

    @on(DataTable.RowSelected, "#elevation")
    def _open(self, event: DataTable.RowSelected) -> None:
        host = self._cursor_host()
        if host:
            from .server import ServerScreen

            self.app.push_screen(ServerScreen(host))

    def action_focus_tree(self) -> None:
        self.query_one("#rack-tree", Tree).focus()
