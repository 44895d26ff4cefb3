"""Every TUI action goes through a confirmation that lists the servers, the blast-radius verdict and the
dry run; confirmed, it runs in a worker through fleet.Fleet (a fake BMC driver here; the lab test drives
a real one), and the audit log records it."""

from __future__ import annotations

import pytest
from textual.worker import Worker, WorkerState

from tui.screens.confirm import ActionMenu, ConfirmAction

from .tui_factory import FakeBmc, keys, make_app, make_fleet, screen_text, settle, sync, with_bmc_credentials

SIZE = (150, 45)


@pytest.fixture
def fleet(tmp_path):
    f = make_fleet(tmp_path)
    with_bmc_credentials(f)
    yield f
    f.close()


async def _servers(pilot, selector: str) -> None:
    await keys(pilot, "2", "slash", f"type:{selector}", "escape")


@sync
async def test_power_cycle_confirmed_reaches_the_driver_and_the_audit(fleet) -> None:
    bmc = FakeBmc()
    states: list[tuple[str, WorkerState]] = []

    def hook(message) -> None:
        if isinstance(message, Worker.StateChanged):
            states.append((message.worker.group, message.state))

    app = make_app(fleet, bmc)
    async with app.run_test(size=SIZE, message_hook=hook) as pilot:
        await _servers(pilot, "host=db01.par1")
        await keys(pilot, "C")
        assert isinstance(app.screen, ConfirmAction)
        text = screen_text(app)
        assert "Power cycle — 1 server(s)" in text and "Touches (1): db01.par1" in text
        assert "Blast radius: within the limits" in text
        assert "Dry run: the plan" in text and "power off, then on" in text
        assert bmc.calls == []  # nothing happens before the confirmation
        await keys(pilot, "y")
        await settle(pilot, 0.2)
        assert ("cycle", "db01.par1") in bmc.calls
        assert ("action", WorkerState.SUCCESS) in states
        entry = fleet.audit(action="power.cycle")[0]
        assert entry.actor == "tester" and entry.targets == ("db01.par1",) and entry.result == "ok"
        assert any("db01.par1: done (on → on)" in str(n.message) for n in app._notifications)
        job = fleet.jobs(kind="power")[0]  # recorded as a job, which the jobs screen shows
        assert (job.status, job.total, job.done) == ("done", 1, 1)
        await keys(pilot, "6")
        table = app.screen.query_one("#jobs")
        row = table.get_row_at(0)
        assert row[1] == "power" and str(row[3]) == "done" and str(row[4]).endswith("100%")


@sync
async def test_cancel_touches_nothing(fleet) -> None:
    bmc = FakeBmc()
    app = make_app(fleet, bmc)
    async with app.run_test(size=SIZE) as pilot:
        await _servers(pilot, "host=web01.par1")
        await keys(pilot, "C", "escape")
        assert not isinstance(app.screen, ConfirmAction)
        assert bmc.calls == [] and fleet.audit(action="power.cycle")[0].targets == ("db01.par1",)  # the factory's


@sync
async def test_past_the_blast_radius_confirm_needs_force(fleet) -> None:
    bmc = FakeBmc()
    app = make_app(fleet, bmc)
    async with app.run_test(size=SIZE) as pilot:
        await _servers(pilot, "rack=R01")
        await keys(pilot, "asterisk", "a")  # mark the window: all four servers of R01
        assert isinstance(app.screen, ActionMenu) and "Action on 4 servers" in screen_text(app)
        menu = app.screen.query_one("#actions")
        menu.highlighted = [o.id for o in menu._options].index("power-off")
        await keys(pilot, "enter")
        text = screen_text(app)
        assert "Blast radius: EXCEEDS the limits" in text
        assert "4 of 4 servers in rack par1/R01 is more than 50% of it" in text
        assert "db01.par1, web01.par1, web02.par1, web03.par1" in text
        await keys(pilot, "y")  # refused: force not ticked
        assert isinstance(app.screen, ConfirmAction) and bmc.calls == []
        await keys(pilot, "f", "y")
        await settle(pilot, 0.2)
        assert sorted(h for op, h in bmc.calls if op == "off") == ["db01.par1", "web01.par1", "web02.par1",
                                                                   "web03.par1"]
        entry = fleet.audit(action="power.off")[0]
        assert entry.target_count == 4 and entry.detail["forced_past"]


@sync
async def test_boot_device_through_the_menu(fleet) -> None:
    bmc = FakeBmc()
    app = make_app(fleet, bmc)
    async with app.run_test(size=SIZE) as pilot:
        await _servers(pilot, "host=gpu01.par1")
        await keys(pilot, "a")
        menu = app.screen.query_one("#actions")
        menu.highlighted = [o.id for o in menu._options].index("boot-pxe")
        await keys(pilot, "enter")
        assert "Next boot: PXE — 1 server(s)" in screen_text(app) and "Dry run" not in screen_text(app)
        await keys(pilot, "y")
        await settle(pilot, 0.2)
        assert bmc.boot == {"gpu01.par1": "pxe"}
        assert fleet.audit(action="bootdev")[0].detail["device"] == "pxe"


@sync
async def test_outlet_confirmation_names_the_outlets_and_a_failure_is_a_notification(fleet) -> None:
    app = make_app(fleet)
    async with app.run_test(size=SIZE) as pilot:
        await _servers(pilot, "host=web02.par1")
        await keys(pilot, "a")
        menu = app.screen.query_one("#actions")
        menu.highlighted = [o.id for o in menu._options].index("outlet-cycle")
        await keys(pilot, "enter")
        text = screen_text(app)
        assert "web02.par1: pdu-r01:2 (PSU 2)" in text and "outlet off, then on" in text
        await keys(pilot, "y")
        await settle(pilot, 0.3)
        notes = list(app._notifications)
        assert notes[-1].severity == "error"  # the PDU has no credential: refused, said, not crashed
        assert app.is_running


@sync
async def test_quarantine_asks_for_a_reason(fleet) -> None:
    app = make_app(fleet)
    async with app.run_test(size=SIZE) as pilot:
        await _servers(pilot, "host=web03.par1")
        await keys(pilot, "X")
        assert "Quarantine (lifecycle) — 1 server(s)" in screen_text(app)
        await keys(pilot, "enter")  # no reason yet: refused
        assert isinstance(app.screen, ConfirmAction)
        await keys(pilot, "type:fan noise", "enter")
        await settle(pilot, 0.2)
        detail = fleet.server("web03.par1")
        assert detail.row.state == "quarantined" and detail.state_reason == "fan noise"


@sync
async def test_remediate_shows_the_dry_run_plan_then_applies_it(fleet) -> None:
    bmc = FakeBmc()
    app = make_app(fleet, bmc)
    async with app.run_test(size=SIZE) as pilot:
        await keys(pilot, "5", "m")
        text = screen_text(app)
        assert "Remediate by the policies — the policies' plan" in text
        assert "soft-shutdown" in text and "quarantine" in text and "critical-temperature" in text
        assert bmc.calls == [] and fleet.server("db01.par1").row.state == "deployed"  # a dry run so far
        await keys(pilot, "y")
        await settle(pilot, 0.3)
        assert ("soft", "db01.par1") in bmc.calls
        assert fleet.server("db01.par1").row.state == "quarantined"
        steps = {a.detail["step"] for a in fleet.audit(action="remediate")}
        assert steps == {"soft-shutdown", "quarantine"}


@sync
async def test_an_action_without_a_selection_says_so(fleet) -> None:
    app = make_app(fleet)
    async with app.run_test(size=SIZE) as pilot:
        await _servers(pilot, "host=nothing-here")
        await keys(pilot, "a")
        assert not isinstance(app.screen, ActionMenu)
        assert "select a server first" in str(list(app._notifications)[-1].message)


@sync
async def test_an_action_on_a_ups_event_is_refused_before_the_confirmation(fleet) -> None:
    app = make_app(fleet)
    async with app.run_test(size=SIZE) as pilot:
        await keys(pilot, "5", "C")  # the newest event is ups-r01's
        assert not isinstance(app.screen, ConfirmAction)
        note = list(app._notifications)[-1]
        assert note.severity == "error" and "not a server: ups-r01" in str(note.message)


@sync
async def test_budgeted_power_on_shows_its_waves_then_keeps_every_element_under_capacity(fleet) -> None:
    bmc = FakeBmc({h: "off" for h in ("db01.par1", "web01.par1", "web02.par1", "web03.par1")})
    app = make_app(fleet, bmc)
    async with app.run_test(size=SIZE) as pilot:
        await _servers(pilot, "rack=R01")
        await keys(pilot, "asterisk", "a")
        menu = app.screen.query_one("#actions")
        menu.highlighted = [o.id for o in menu._options].index("power-on-budget")
        await keys(pilot, "enter")
        text = screen_text(app)
        assert "wave 1" in text and "db01.par1, web02.par1, web03.par1" in text
        assert "web01.par1: ups ups-web01: 0 W steady + 900 W inrush > 600 W" in text  # its own UPS is too small
        assert [c for c in bmc.calls if c[0] == "on"] == []  # the plan read power states only
        await keys(pilot, "y")
        await settle(pilot, 0.2)
        assert sorted(h for op, h in bmc.calls if op == "on") == ["db01.par1", "web02.par1", "web03.par1"]
        assert fleet.audit(action="power.on")[0].detail["waves"] == 1
