"""The command palette (ctrl+p): go to a screen, open a server by name, filter the servers list."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import TYPE_CHECKING

from textual.command import DiscoveryHit, Hit, Hits, Provider

from fleet.errors import FleetError

if TYPE_CHECKING:
    from .app import FleetApp

SCREENS = (("overview", "Overview", "1"), ("servers", "Servers", "2"), ("racks", "Racks", "3"),
           ("power", "Power", "4"), ("events", "Events", "5"), ("jobs", "Jobs", "6"), ("audit", "Audit", "7"))


class FleetCommands(Provider):
    """Screens, servers by host name (looked up in SQL as you type), and a selector for the servers list."""

    @property
    def fleet_app(self) -> FleetApp:
        return self.app  # type: ignore[return-value]

    async def discover(self) -> Hits:
        for mode, label, key in SCREENS:
            yield DiscoveryHit(f"Go to {label}", partial(self.fleet_app.switch_mode, mode), help=f"key {key}")

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for mode, label, key in SCREENS:
            score = matcher.match(f"Go to {label}")
            if score > 0:
                yield Hit(score, matcher.highlight(f"Go to {label}"), partial(self.fleet_app.switch_mode, mode),
                          help=f"key {key}")
        words = query.strip()
        if not words:
            return
        if "=" in words:
            yield Hit(1.0, f"Filter servers: {words}", partial(self.fleet_app.show_servers, words),
                      help="the selector language")
            return
        if " " in words:
            return
        fleet = self.fleet_app.fleet
        try:
            window = await asyncio.to_thread(fleet.server_window, f"host={words.lower()}*", limit=12, count=False)
        except FleetError:
            return
        for row in window.rows:
            yield Hit(0.9, f"Open server {row.hostname}", partial(self.fleet_app.open_server, row.hostname),
                      help=f"{row.site or ''} {row.rack or ''} · {row.state} · {row.health}")
