"""Snapshots of every TUI screen on the deterministic factory fleet (fixed data, fixed clock).

Regenerate after a deliberate change of the look: ``pytest tests/test_tui_snapshots.py --snapshot-update``,
then look at the SVGs (or the report pytest-textual-snapshot writes) before committing them.
"""

from __future__ import annotations

import pytest

from .tui_factory import keys, make_app, make_fleet, settle

SIZE = (140, 40)


@pytest.fixture
def fleet(tmp_path):
    f = make_fleet(tmp_path)
    yield f
    f.close()


def _steps(*names: str):
    async def run_before(pilot) -> None:
        await settle(pilot)
        await keys(pilot, *names)
        await settle(pilot, 0.1)

    return run_before


@pytest.mark.parametrize("name, steps", [
    ("overview", ()),
    ("servers-filtered", ("2", "slash", "type:site=par1 health!=ok", "escape")),
    ("rack-elevation", ("3", "down", "enter", "down", "down", "enter", "tab")),
    ("power", ("4",)),
    ("events", ("5",)),
    ("jobs", ("6",)),
    ("audit", ("7",)),
    ("confirm-power-cycle", ("2", "slash", "type:rack=R01", "escape", "asterisk", "C")),
])
def test_screen_snapshot(snap_compare, fleet, name: str, steps: tuple[str, ...]) -> None:
    assert snap_compare(make_app(fleet), terminal_size=SIZE, run_before=_steps(*steps))


def test_server_screen_snapshot(snap_compare, fleet) -> None:
    app = make_app(fleet)

    async def run_before(pilot) -> None:
        await settle(pilot)
        app.open_server("db01.par1")
        await settle(pilot, 0.1)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
