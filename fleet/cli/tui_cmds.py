"""``fleet tui``: the technician's terminal UI (also what plain ``fleet`` opens on a terminal)."""

from __future__ import annotations

import argparse
import sys

from .output import Out


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("tui", parents=[common], help="the terminal UI (keys 1-7 for the screens, ctrl+p palette)",
                       description="Browse and act on the fleet in a terminal UI. Every action asks for confirmation.")
    p.add_argument("selector", nargs="*", help="open the servers screen filtered by this selector")
    p.add_argument("--refresh", type=float, default=5.0, metavar="S",
                   help="seconds between refreshes of the screen on top (0: only on demand); default 5")
    p.set_defaults(func=cmd_tui)


def wants_tui() -> bool:
    """Plain ``fleet`` opens the TUI only for a person at a terminal (both stdin and stdout are TTYs)."""
    return sys.stdin.isatty() and sys.stdout.isatty()


def cmd_tui(args: argparse.Namespace, out: Out) -> int:
    from fleet.service.facade import Fleet
    from tui.app import FleetApp

    fleet = Fleet.open(args.db)
    try:
        FleetApp(fleet, refresh_s=max(0.0, float(getattr(args, "refresh", 5.0))), freeze_gc=True,
                 selector=" ".join(getattr(args, "selector", []) or [])).run()
    finally:
        fleet.close()
    return 0
