"""Imaging and decommissioning in the TUI: started through the same confirmation as power, followed on the
jobs screen per wave and per server."""

from __future__ import annotations

from sqlalchemy import insert
from textual.widgets import OptionList

from inventory.models import Job
from tui.actions import ACTIONS
from tui.screens.confirm import ActionMenu, ConfirmAction

from .tui_factory import T0, keys, make_app, make_fleet, screen_text, settle, sync

SIZE = (160, 50)


def _choose(app: object, key: str) -> None:
    menu = app.screen  # type: ignore[attr-defined]
    assert isinstance(menu, ActionMenu)
    options = menu.query_one(OptionList)
    options.highlighted = [a.key for a in ACTIONS].index(key)


@sync
async def test_an_image_job_shows_each_wave_and_each_servers_evidence_or_reason(tmp_path) -> None:
    fleet = make_fleet(tmp_path)
    servers = {
        "web01.par1": {"step": "deployed", "wave": 0, "reason": "", "evidence": {
            "lease": "10.0.0.11 for 02:00:00:00:01:01 at T", "fetch": "http/answers/web01.par1/preseed.cfg by "
            "10.0.0.11 at T", "late": "from 10.0.0.11 at T"}},
        "web02.par1": {"step": "installing", "wave": 1, "reason": "", "evidence": {"lease": "10.0.0.12 at T"}},
        "db01.par1": {"step": "failed", "wave": 1, "reason": "no DHCP lease for 02:00:00:00:01:04 within 300 s",
                      "evidence": {}},
    }
    with fleet.ctx.write() as s:
        s.execute(insert(Job).values(kind="image", selector="rack=R01", status="running", total=3, done=1, failed=1,
                                     actor="tester", owner="elsewhere:1", created_at=T0, started_at=T0,
                                     heartbeat_at=T0.replace(year=2100),
                                     params={"options": {"os": "debian-12", "root": "/srv/pxe", "canary": 1},
                                             "waves": [["web01.par1"], ["web02.par1", "db01.par1"]],
                                             "servers": servers},
                                     result={}))
    app = make_app(fleet)
    async with app.run_test(size=SIZE) as pilot:
        await keys(pilot, "6")
        text = screen_text(app)
        assert "(image)" in text and "debian-12 · tree /srv/pxe" in text
        assert "canary" in text and "1/1 deployed" in text and "0/2 deployed, 1 failed" in text
        assert "web01.par1 deployed" in text and "lease: 10.0.0.11 for 02:00:00:00:01:01" in text
        assert "web02.par1 installing" in text
        assert "db01.par1 failed  no DHCP lease for 02:00:00:00:01:04 within 300 s" in text
    fleet.close()


@sync
async def test_decommission_goes_through_the_confirmation_and_shows_on_the_jobs_screen(tmp_path) -> None:
    fleet = make_fleet(tmp_path)
    app = make_app(fleet)
    async with app.run_test(size=SIZE) as pilot:
        await keys(pilot, "2", "slash", "type:host=gpu01.par1", "escape", "a")
        _choose(app, "decommission")
        await keys(pilot, "enter")
        await settle(pilot, 0.2)
        assert isinstance(app.screen, ConfirmAction)
        text = screen_text(app)
        assert "Decommission: wipe every disk, certify, retire — 1 server(s)" in text
        assert "Touches (1): gpu01.par1" in text and "none (cannot wipe)" in text
        assert fleet.server("gpu01.par1").row.state == "ready"  # nothing before the confirmation
        await keys(pilot, "y")
        await settle(pilot, 0.3)
        assert fleet.server("gpu01.par1").row.state == "decommissioning"
        assert any("gpu01.par1: decommissioning (cannot wipe over SSH: no SSH credential" in str(n.message)
                   for n in app._notifications)
        await keys(pilot, "6")
        text = screen_text(app)
        assert "(decommission)" in text and "gpu01.par1 decommissioning" in text
    fleet.close()


@sync
async def test_imaging_a_server_that_is_not_ready_is_refused_before_any_confirmation(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FLEET_PXE_MANAGER_URL", "http://10.0.0.1:8080")
    fleet = make_fleet(tmp_path)
    app = make_app(fleet)
    async with app.run_test(size=SIZE) as pilot:
        await keys(pilot, "2", "slash", "type:host=db02.par1", "escape", "a")
        _choose(app, "image")
        await keys(pilot, "enter")
        await settle(pilot, 0.2)
        assert not isinstance(app.screen, ConfirmAction)
        assert any("cannot be imaged now: db02.par1: failed" in str(n.message) for n in app._notifications)
        await keys(pilot, "slash", "clear", "type:host=gpu01.par1", "escape", "a")
        _choose(app, "image")
        await keys(pilot, "enter")
        await settle(pilot, 0.2)
        assert isinstance(app.screen, ConfirmAction)
        text = screen_text(app)
        assert "Image over PXE" in text and "canary" in text and "installs debian-12" in text
        await keys(pilot, "escape")
        assert fleet.jobs(kind="image") == [] and fleet.server("gpu01.par1").row.state == "ready"
    fleet.close()
