"""Output for the CLI: aligned tables for people, JSON for automation.

JSON goes to stdout as one document (a list of objects for listings), keys stable and documented
in README.md. Human messages and warnings go to stderr, so ``--json`` output stays parseable.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from inventory.validate import visible

__all__ = ["Out", "run_async"]


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if hasattr(value, "to_json"):
        return value.to_json()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _cell(value: Any) -> Text:
    """A table cell: stored text with control/bidi characters escaped (:func:`visible`), never read as markup."""
    return Text("" if value is None else visible(value))


class Out:
    """Where the CLI writes. ``json_mode`` switches listings to JSON."""

    def __init__(self, json_mode: bool = False) -> None:
        self.json_mode = json_mode
        # Piped output is never wrapped to a guessed width: scripts and `grep` see whole lines.
        width = None if sys.stdout.isatty() else 4000
        self.console = Console(highlight=False, soft_wrap=False, width=width)
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)

    def json(self, data: Any) -> None:
        sys.stdout.write(json.dumps(data, default=_default, indent=2, sort_keys=False) + "\n")

    def table(self, columns: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None) -> None:
        table = Table(title=title, box=None, header_style="bold", pad_edge=False, show_edge=False)
        for col in columns:
            table.add_column(col, overflow="fold")
        for row in rows:
            table.add_row(*(_cell(v) for v in row))
        self.console.print(table)

    def kv(self, pairs: Sequence[tuple[str, Any]], *, title: str | None = None) -> None:
        table = Table(title=title, box=None, show_header=False, pad_edge=False)
        table.add_column(style="bold")
        table.add_column(overflow="fold")
        for key, value in pairs:
            table.add_row(_cell(key), _cell(value))
        self.console.print(table)

    def info(self, message: str) -> None:
        self.err.print(visible(message), markup=False)

    def warn(self, message: str) -> None:
        self.err.print(f"warning: {visible(message)}", style="yellow", markup=False)

    def error(self, message: str) -> None:
        self.err.print(f"error: {visible(message)}", style="red", markup=False)


def run_async(fleet: Any, coro_fn: Any) -> Any:
    """Run ``coro_fn()`` to completion, then close the fleet's drivers (their workers and sessions)."""
    import asyncio

    async def go() -> Any:
        try:
            return await coro_fn()
        finally:
            await fleet.aclose()

    return asyncio.run(go())
