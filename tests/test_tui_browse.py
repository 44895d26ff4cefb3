"""The TUI's read queries (fleet/service_browse.py) on SQLite and PostgreSQL: bounded windows, counts,
elevations, history, power tree, events, audit by target."""

from __future__ import annotations

import pytest

from fleet import Fleet
from fleet.errors import NotFound

from .factory import Spec, build
from .tui_factory import populate


@pytest.fixture
def browse(fleet: Fleet) -> Fleet:
    populate(fleet.engine)
    return fleet


def test_server_window_pages_by_host_name_with_the_match_count(fleet: Fleet) -> None:
    build(fleet.engine, [Spec(f"n{i:03d}", rack=f"R{i // 10}", position=i % 10 + 1) for i in range(45)])
    first = fleet.server_window(limit=20)
    assert [r.hostname for r in first.rows][:2] == ["n000", "n001"] and first.total == 45
    assert first.more_after and not first.more_before
    second = fleet.server_window(after=first.last, limit=20)
    assert second.first == "n020" and second.more_before and second.more_after
    third = fleet.server_window(after=second.last, limit=20)
    assert len(third.rows) == 5 and not third.more_after
    back = fleet.server_window(before=third.first, limit=20)
    assert back.rows == second.rows and back.more_before
    assert fleet.server_window("rack=R2", limit=3).total == 10
    assert fleet.server_window("host=n04*", count=False).total == -1


def test_overview_counts_and_upses_on_battery(browse: Fleet) -> None:
    ov = browse.overview()
    assert ov.servers == 10 and ov.by_state["deployed"] == 4
    assert ov.by_health == {"ok": 4, "warning": 1, "critical": 2, "unknown": 3}
    assert ov.by_power["unknown"] == 4 and ov.events_by_severity == {"critical": 2, "warning": 2}
    assert [u.name for u in ov.ups_on_battery] == ["ups-r01"] and ov.ups_total == 2
    assert ov.last_sweep_at is not None and ov.last_sweep_at.tzinfo is not None
    assert browse.overview("site=ams1").servers == 3


def test_rack_elevation_and_server_status(browse: Fleet) -> None:
    el = browse.rack_elevation("r01", "PAR1")
    assert (el.site, el.pod, el.rack, el.units) == ("par1", "C1", "R01", 48)
    assert [u.hostname for u in el.servers] == ["db01.par1", "web03.par1", "web02.par1", "web01.par1"]
    assert {u.ups_status for u in el.servers} == {"on-battery"}
    assert [d.name for d in el.devices] == ["ups-r01"]
    with pytest.raises(NotFound):
        browse.rack_elevation("R99")
    status = browse.server_status("web01.par1")
    assert [u["name"] for u in status["ups"]] == ["ups-web01", "ups-r01"]
    assert status["ups"][1]["outlet"] == "pdu-r01:1"


def test_sensor_history_events_audit_and_power_tree(browse: Fleet) -> None:
    series = {s.metric: s for s in browse.sensor_history("db01.par1", points=5)}
    assert set(series) == {"CPU Temp", "Fan1", "Inlet Temp"}
    assert len(series["CPU Temp"].values) == 5 and series["CPU Temp"].values[-1] == 57.0
    rows, total = browse.event_window(severity="critical")
    assert total == 2 and {r["target"] for r in rows} == {"db01.par1", "db02.par1"}
    assert browse.event_window(kind="ups-*")[1] == 1 and browse.event_window(target="web*")[1] == 1
    assert browse.event_window(status="resolved")[1] == 0
    assert [a.action for a in browse.audit_for("db01.par1")] == ["power.cycle"]
    assert browse.audit_for("db01") == []  # whole names only
    elements, total = browse.power_tree()
    assert total == 4 and elements[0].name == "ups-r01" and elements[0].servers == 4
    assert elements[0].measured_w == pytest.approx(2700 * 0.38)
    assert browse.power_tree(on_battery_only=True)[1] == 1
    assert browse.power_tree(site="ams1") == ([], 0)
