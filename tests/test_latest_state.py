"""Fleet.latest_state: what the whole fleet's latest state reads, pinned on SQLite and PostgreSQL.

The read is a bulk path (fleet/latest_state.py makes its rows through inventory._twin), so its
output is pinned here: never-swept servers read unknown, timestamps are UTC-aware, bmc_reachable
is a bool or None, rows are real frozen StateRow, by host name.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import insert, select

from fleet import Fleet
from fleet.model.views import StateRow
from inventory.models import Server, ServerState


def _add(fleet: Fleet, tmp_path, hosts: list[str]) -> None:
    lines = ["hostname,state"] + [f"{h},deployed" for h in hosts]
    path = tmp_path / "servers.csv"
    path.write_text("\n".join(lines) + "\n")
    fleet.import_files([path])


def test_latest_state_pins_unknown_utc_timestamps_and_bools(fleet: Fleet, tmp_path) -> None:
    _add(fleet, tmp_path, ["c.example.net", "a.example.net", "b.example.net", "d.example.net"])
    seen = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
    later = datetime(2026, 3, 1, 16, 30, 15, tzinfo=timezone(timedelta(hours=2)))  # 14:30:15 UTC
    with fleet.engine.begin() as conn:
        ids = dict(conn.execute(select(Server.hostname, Server.id)).all())
        conn.execute(insert(ServerState), [
            {"server_id": ids["a.example.net"], "updated_at": seen, "power": "on", "health": "ok",
             "bmc_reachable": True, "last_seen": seen, "last_error": "", "summary": {}},
            {"server_id": ids["b.example.net"], "updated_at": later, "power": "off", "health": "critical",
             "bmc_reachable": False, "last_seen": None, "last_error": "timeout", "summary": {}},
            {"server_id": ids["d.example.net"], "updated_at": seen, "power": "unknown", "health": "unknown",
             "bmc_reachable": None, "last_seen": None, "last_error": "", "summary": {}},
        ])
    rows = fleet.latest_state()
    assert [r.hostname for r in rows] == ["a.example.net", "b.example.net", "c.example.net", "d.example.net"]
    a, b, c, d = rows
    assert a == StateRow("a.example.net", "deployed", "on", "ok", True, seen, seen, "")
    assert b == StateRow("b.example.net", "deployed", "off", "critical", False, None, later, "timeout")
    # never swept: no server_state row at all
    assert c == StateRow("c.example.net", "deployed", "unknown", "unknown", None, None, None, "")
    assert d.bmc_reachable is None and d.last_seen is None
    for r in rows:
        assert type(r) is StateRow
        assert type(r.bmc_reachable) in (bool, type(None))
        for ts in (r.last_seen, r.updated_at):
            assert ts is None or ts.utcoffset() == timedelta(0)
    assert b.updated_at == datetime(2026, 3, 1, 14, 30, 15, tzinfo=UTC) and b.updated_at.tzinfo is UTC
    # real frozen, hashable rows, as StateRow(...) makes them
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.power = "off"  # type: ignore[misc]
    assert hash(a) == hash(StateRow(*dataclasses.astuple(a)))
    assert a.to_json()["last_seen"] == StateRow(*dataclasses.astuple(a)).to_json()["last_seen"]
    assert [r.hostname for r in fleet.latest_state("host=b*")] == ["b.example.net"]
