"""The Rackfleet TUI: a small App that wires the screens (``tui/screens``) to one :class:`fleet.Fleet`.

    from tui.app import FleetApp
    FleetApp(Fleet.open("fleet.db")).run()

Screens are modes (keys 1-7), each with its own stack: enter opens a server over the current one,
escape goes back. Every action goes through a confirmation (``tui/screens/confirm.py``).
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from datetime import UTC, datetime

from textual.app import App
from textual.binding import Binding

from fleet import Fleet

from .commands import FleetCommands
from .screens import (
    AuditScreen,
    EventsScreen,
    JobsScreen,
    OverviewScreen,
    PowerScreen,
    RacksScreen,
    ServerScreen,
    ServersScreen,
)

__all__ = ["FleetApp"]


def _utcnow() -> datetime:
    """Now, in UTC (the inventory's clock; the TUI imports no inventory module)."""
    return datetime.now(UTC)


class FleetApp(App[None]):
    """``fleet``: the inventory to browse and act on. ``ops_fleet`` makes the fleet a device operation
    runs on (default: one like ``fleet``, with drivers of its own). ``clock`` is read for ages only
    ("3 min ago"): tests pass a fixed one. ``refresh_s`` 0 turns the timed refreshes off."""

    CSS_PATH = "app.tcss"
    TITLE = "Rackfleet"
    COMMANDS = App.COMMANDS | {FleetCommands}
    MODES = {"overview": OverviewScreen, "servers": ServersScreen, "racks": RacksScreen, "power": PowerScreen,
             "events": EventsScreen, "jobs": JobsScreen, "audit": AuditScreen}
    DEFAULT_MODE = "overview"
    BINDINGS = [
        Binding("1", "switch_mode('overview')", "Overview"),
        Binding("2", "switch_mode('servers')", "Servers"),
        Binding("3", "switch_mode('racks')", "Racks"),
        Binding("4", "switch_mode('power')", "Power"),
        Binding("5", "switch_mode('events')", "Events"),
        Binding("6", "switch_mode('jobs')", "Jobs"),
        Binding("7", "switch_mode('audit')", "Audit"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, fleet: Fleet, *, refresh_s: float = 5.0, debounce_s: float = 0.15,
                 clock: Callable[[], datetime] | None = None, ops_fleet: Callable[[], Fleet] | None = None,
                 read_sel: bool = True, selector: str = "", freeze_gc: bool = False) -> None:
        super().__init__()
        self.fleet = fleet
        self.refresh_s = refresh_s
        self.debounce_s = debounce_s
        self.now: Callable[[], datetime] = clock or _utcnow
        self.ops_fleet: Callable[[], Fleet] = ops_fleet or self._ops_fleet
        self.read_sel = read_sel
        self.initial_selector = selector
        #: Move what is alive after each screen's first load out of the collector's sight (``gc.freeze``):
        #: full collections over Textual's and SQLAlchemy's objects blocked the loop 70-280 ms at a time.
        #: Process-wide, so only ``fleet tui`` (a process of its own) turns it on.
        self.freeze_gc = freeze_gc
        if freeze_gc:  # what is imported and open now lives as long as the app; no collection until it shows
            gc.freeze()
            gc.disable()

    def _ops_fleet(self) -> Fleet:
        f = self.fleet
        return Fleet(f.engine, profiles=f.profiles, keyring=f.keyring, actor=f.actor, device_timeout=f.device_timeout)

    def on_mount(self) -> None:
        if self.initial_selector:
            self.show_servers(self.initial_selector)

    # -- navigation used by the palette and the screens -----------------------------------------------------

    def show_servers(self, selector: str) -> None:
        self.switch_mode("servers")
        screen = self.screen
        if isinstance(screen, ServersScreen):
            boxes = screen.query("#filter")
            if boxes:  # already on show: put the selector in its box (the box then queries)
                boxes.first().value = selector  # type: ignore[attr-defined]
                screen.set_selector(selector)
            else:  # composed in a moment, with this selector
                screen.selector = selector

    def open_server(self, hostname: str) -> None:
        self.push_screen(ServerScreen(hostname))
