"""The TUI's screens, one area per module."""

from .audit import AuditScreen
from .events import EventsScreen
from .jobs import JobsScreen
from .overview import OverviewScreen
from .power import PowerScreen
from .racks import RacksScreen
from .server import ServerScreen
from .servers import ServersScreen

__all__ = ["AuditScreen", "EventsScreen", "JobsScreen", "OverviewScreen", "PowerScreen", "RacksScreen",
           "ServerScreen", "ServersScreen"]
