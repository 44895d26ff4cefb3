"""Every TUI screen, driven with Pilot on a small deterministic fleet, checked by what a person sees."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import update

from inventory.db import make_engine
from inventory.models import ServerState
from tui.screens import RacksScreen, ServerScreen, ServersScreen
from tui.widgets import FilterBox

from .factory import Spec, build
from .tui_factory import T0, FakeBmc, keys, make_app, make_fleet, screen_text, settle, sync

SIZE = (150, 45)


@pytest.fixture
def fleet(tmp_path):
    f = make_fleet(tmp_path)
    yield f
    f.close()


@sync
async def test_overview_shows_states_health_events_last_sweep_and_upses_on_battery(fleet) -> None:
    app = make_app(fleet)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        text = screen_text(app)
        assert "Servers by lifecycle state (10)" in text
        assert "deployed" in text and "quarantined" in text
        assert "critical" in text and "unknown" in text
        assert "14 min ago" in text and "2026-01-15 11:51:00 UTC" in text  # the fixed clock: 12:05
        assert "UPSes on battery (1 of 2)" in text and "ups-r01" in text and "21 min" in text


@sync
async def test_servers_filter_takes_the_selector_language_debounced_in_a_worker(fleet) -> None:
    settled: list[str] = []

    def hook(message) -> None:
        if isinstance(message, FilterBox.Settled):
            settled.append(message.value)

    app = make_app(fleet, debounce_s=0.15)
    async with app.run_test(size=SIZE, message_hook=hook) as pilot:
        await keys(pilot, "2")
        assert "10 match" in screen_text(app)
        await keys(pilot, "slash")
        for ch in "rack=R01 state=deployed":  # typed quickly: one query when typing pauses
            await pilot.press(ch if ch != " " else "space")
        await settle(pilot, 0.3)
        text = screen_text(app)
        assert settled[-1] == "rack=R01 state=deployed" and len(settled) < 6  # not one query per key
        assert "3 match" in text
        assert "db01.par1" in text and "web01.par1" in text and "web03.par1" not in text
        await keys(pilot, "type: bogus=1")
        assert "unknown selector key 'bogus'" in screen_text(app)  # said beside the box; no crash
        assert isinstance(app.screen, ServersScreen) and app.is_running


@sync
async def test_servers_table_holds_one_keyset_window_and_pages(tmp_path) -> None:
    from .tui_factory import make_fleet as mk

    fleet = mk(tmp_path)
    build(fleet.engine, [Spec(f"n{i:04d}.big", site="big1", rack=f"B{i // 40:02d}", position=i % 40 + 1)
                         for i in range(450)])
    app = make_app(fleet)
    async with app.run_test(size=SIZE) as pilot:
        await keys(pilot, "2", "slash", "type:site=big1", "escape")
        screen = app.screen
        table = screen.query_one("#servers")
        assert table.row_count == 200  # a window, never the whole selection
        assert "450 match · showing 1-200" in screen_text(app)
        await keys(pilot, "n")
        assert "showing 201-400" in screen_text(app)
        assert table.get_row_at(0)[1] == "n0200.big"
        await keys(pilot, "n")
        assert table.row_count == 50 and "showing 401-450" in screen_text(app)
        await keys(pilot, "p")
        assert table.get_row_at(0)[1] == "n0200.big"
    fleet.close()


@sync
async def test_racks_navigate_sites_pods_racks_to_an_elevation_and_a_server(fleet) -> None:
    app = make_app(fleet)
    async with app.run_test(size=SIZE) as pilot:
        await keys(pilot, "3")
        assert isinstance(app.screen, RacksScreen)
        text = screen_text(app)
        assert "ams1  (1 racks, 3 servers)" in text and "par1  (2 racks, 7 servers)" in text
        await keys(pilot, "down", "enter")  # open par1: its pod and racks load in a worker
        assert "pod C1" in screen_text(app) and "R01  4 srv" in screen_text(app)
        await keys(pilot, "down", "down", "enter")
        text = screen_text(app)
        assert "Rack R01  site par1, pod C1 · 48 U · 4 servers" in text
        # Every server of R01 hangs on the PDU behind ups-r01, on battery: that shows, not web01's own online UPS.
        assert text.count("ups-r01 on-battery") == 4 and "ups-web01" not in text
        assert "rack UPS ups-r01: on-battery" in text
        elevation = app.screen.query_one("#elevation")
        rows = [elevation.get_row_at(i) for i in range(elevation.row_count)]
        labels = [str(r[1]) for r in rows]
        assert labels.index("db01.par1") < labels.index("web03.par1") < labels.index("web01.par1")  # top down
        elevation.focus()
        row = labels.index("db01.par1")
        elevation.move_cursor(row=row)
        await keys(pilot, "enter")
        assert isinstance(app.screen, ServerScreen) and app.screen.hostname == "db01.par1"


@sync
async def test_server_screen_identity_sparklines_sel_power_path_nics_disks_audit(fleet) -> None:
    app = make_app(fleet, bmc=FakeBmc(), read_sel=True)
    from .tui_factory import with_bmc_credentials

    with_bmc_credentials(fleet)
    async with app.run_test(size=SIZE) as pilot:
        app.open_server("db01.par1")
        await settle(pilot)
        text = screen_text(app)
        assert "db01.par1" in text and "par1 / C1 / R01  U10" in text and "SN-DB01" in text
        assert "critical" in text and "5 min ago" in text
        assert "CPU Temp" in text and "57" in text
        assert re.search("CPU Temp +57 +C +[▁▂▃▄▅▆▇█]{12}", text)  # 12 readings as a sparkline
        assert "Uncorrectable ECC" in text and "2 entries (l reads again)" in text  # read live, in a worker
        assert "pdu-r01:4" in text and "on-battery" in text
        assert "PM9A3" in text and "S64ANS0T" in text
        assert "power.cycle" in text  # recent audit naming this server
        await keys(pilot, "escape")
        assert not isinstance(app.screen, ServerScreen)


@sync
async def test_server_screen_says_why_the_sel_is_unavailable(fleet) -> None:
    app = make_app(fleet, read_sel=True)  # no BMC credential: the SEL cannot be read
    async with app.run_test(size=SIZE) as pilot:
        app.open_server("web02.par1")
        await settle(pilot)
        assert "unavailable: web02.par1: no BMC credential" in screen_text(app)
        assert "NICs" in screen_text(app) and "02:00:00:00:01:02" in screen_text(app)


@sync
async def test_power_screen_bars_load_against_capacity_and_on_battery_first(fleet) -> None:
    app = make_app(fleet)
    async with app.run_test(size=SIZE) as pilot:
        await keys(pilot, "4")
        text = screen_text(app)
        assert "1 UPS on battery, shortest runtime 21 min" in text
        table = app.screen.query_one("#power")
        first = table.get_row_at(0)
        assert first[1] == "ups-r01" and str(first[4]) == "on-battery" and str(first[5]).endswith("38%")
        assert "1,026 / 2,700 W" in text and "2,400 est / 3,600 W" in text
        assert table.row_count == 4
        await keys(pilot, "b")
        assert table.row_count == 1
        await keys(pilot, "b", "slash", "type:site=ams1")
        assert table.row_count == 0
        await keys(pilot, "clear", "type:site=nowhere")
        assert "no site 'nowhere'" in str(list(app._notifications)[-1].message)


@sync
async def test_events_filter_and_acknowledge(fleet) -> None:
    app = make_app(fleet)
    async with app.run_test(size=SIZE) as pilot:
        await keys(pilot, "5")
        assert "4 events" in screen_text(app)
        await keys(pilot, "slash", "type:severity=critical", "escape")
        table = app.screen.query_one("#events")
        assert table.row_count == 2 and {str(table.get_row_at(i)[4]) for i in range(2)} == {"db01.par1", "db02.par1"}
        await keys(pilot, "k")
        assert "acked by tester" in screen_text(app)
        assert fleet.audit(action="event.ack")[0].targets == ("db02.par1",)
        await keys(pilot, "slash", "clear", "type:colour=red")
        assert "unknown event filter 'colour'" in screen_text(app)


@sync
async def test_jobs_screen_shows_progress_bars(fleet) -> None:
    app = make_app(fleet)
    async with app.run_test(size=SIZE) as pilot:
        await keys(pilot, "6")
        text = screen_text(app)
        assert "3 recent jobs · 1 running" in text
        table = app.screen.query_one("#jobs")
        rows = {table.get_row_at(i)[1]: table.get_row_at(i) for i in range(table.row_count)}
        assert str(rows["power"][3]) == "running" and str(rows["power"][4]).endswith(" 50%")
        assert str(rows["sweep"][4]).endswith("100%") and str(rows["remediate"][3]) == "failed"
        assert "job 3 (remediate)" in text


@sync
async def test_audit_screen_filters_by_target_and_action(fleet) -> None:
    app = make_app(fleet)
    async with app.run_test(size=SIZE) as pilot:
        await keys(pilot, "7")
        table = app.screen.query_one("#audit")
        assert table.row_count == 4 and table.get_row_at(0)[3] == "state"
        await keys(pilot, "slash", "type:db01.par1")
        assert table.row_count == 1 and table.get_row_at(0)[3] == "power.cycle"
        await keys(pilot, "clear", "type:action=sweep")
        assert table.row_count == 1 and str(table.get_row_at(0)[4]) == "partial"


@sync
async def test_command_palette_opens_a_server_by_name_and_filters_servers(fleet) -> None:
    app = make_app(fleet)
    async with app.run_test(size=SIZE) as pilot:
        await keys(pilot, "ctrl+p", "type:gpu0")
        await settle(pilot, 0.2)
        assert "Open server gpu01.par1" in screen_text(app)
        await keys(pilot, "enter")
        await settle(pilot, 0.2)
        assert isinstance(app.screen, ServerScreen) and app.screen.hostname == "gpu01.par1"
        await keys(pilot, "escape", "ctrl+p", "type:tag=db")
        await settle(pilot, 0.2)
        await keys(pilot, "enter")
        await settle(pilot, 0.2)
        assert isinstance(app.screen, ServersScreen) and "2 match" in screen_text(app)


@sync
async def test_a_failing_query_is_a_notification_never_a_crash(fleet, monkeypatch) -> None:
    def broken(*_a, **_k):
        raise RuntimeError("database went away")

    monkeypatch.setattr(fleet, "overview", broken)
    app = make_app(fleet)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        notes = list(app._notifications)
        assert notes and notes[-1].severity == "error" and "database went away" in notes[-1].message
        await keys(pilot, "2")
        assert app.is_running and "10 match" in screen_text(app)


@sync
async def test_screens_refresh_on_a_timer_as_another_process_writes(fleet) -> None:
    app = make_app(fleet, refresh_s=0.2)
    async with app.run_test(size=SIZE) as pilot:
        await keys(pilot, "2", "slash", "type:health=critical", "escape")
        assert "2 match" in screen_text(app)
        other = make_engine(fleet.engine.url.render_as_string())  # another writer on the same file
        with other.begin() as conn:  # as a sweep would: gpu01 (id 6) turns critical
            conn.execute(update(ServerState).where(ServerState.server_id == 6)
                         .values(health="critical", updated_at=T0 + timedelta(minutes=1)))
        other.dispose()
        for _ in range(20):
            await pilot.pause(0.1)
            if "3 match" in screen_text(app):
                break
        assert "3 match" in screen_text(app)


@sync
async def test_a_failure_while_drawing_is_a_notification_too(fleet, monkeypatch) -> None:
    from tui.screens import OverviewScreen

    def broken(self, data) -> None:
        raise ValueError("cannot draw this")

    monkeypatch.setattr(OverviewScreen, "show", broken)
    app = make_app(fleet)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert "cannot draw this" in str(list(app._notifications)[-1].message) and app.is_running


@sync
async def test_fleet_tui_with_a_selector_opens_the_servers_screen_filtered(fleet) -> None:
    app = make_app(fleet, selector="rack=R02")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, ServersScreen)
        assert "3 match" in screen_text(app) and app.screen.query_one("#filter").value == "rack=R02"
