"""Network UPS Tools: an asyncio client of upsd's network protocol (TCP 3493, RFC 9271), for per-server UPSes.

A small USB UPS feeds one server; NUT's driver (``usbhid-ups``...) reads it and ``upsd`` serves it on
the network under a name (``nut_name``). :class:`NutDriver` speaks upsd's line protocol itself. See
``docs/nut.md``. The modules:

- :mod:`.protocol`: the line format, pipelined connections and their pool (asyncio streams);
- :mod:`.readings`: from a UPS's variables to status words, battery readings and outlets (pure);
- :mod:`.driver`: :class:`NutDriver`, deadlines, the mapping of upsd's errors, commands confirmed
  by tracking and read-back.
"""

from .driver import NotConfirmed, NutDriver, UnknownUps
from .protocol import DEFAULT_PORT, parse_line, quote
from .readings import DEFAULT_COMMANDS, DEFAULT_VARIABLES, battery_status, outlet_list, parse_status

__all__ = [
    "DEFAULT_COMMANDS",
    "DEFAULT_PORT",
    "DEFAULT_VARIABLES",
    "NotConfirmed",
    "NutDriver",
    "UnknownUps",
    "battery_status",
    "outlet_list",
    "parse_line",
    "parse_status",
    "quote",
]
