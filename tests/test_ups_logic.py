"""UPS logic that needs no device: selectors, SNMPv3 secrets, battery forecasts from recorded history."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import func, insert, select

from fleet import Fleet
from fleet.errors import SelectorError, Unsupported, ValidationError
from fleet.ops.ups import battery_forecast, credential_json, parse_ups_selector, reveal_v3
from inventory.models import Reading, Ups, UpsState

from .factory import Spec, build


def _ups(fleet: Fleet, name: str, installed: date | None, **kw) -> int:
    with fleet.engine.begin() as conn:
        site = conn.exec_driver_sql("SELECT id FROM sites LIMIT 1").scalar()
        return conn.execute(insert(Ups).values(name=name, site_id=site, kind=kw.get("kind", "rack"),
                                               profile="generic-ups-mib", protocol="snmp", host="127.0.0.9",
                                               port=161, nut_name="", battery_installed=installed,
                                               description="").returning(Ups.id)).scalar_one()


def _history(fleet: Fleet, ups_id: int, points: list[tuple[int, float, float]]) -> None:
    now = datetime.now(UTC)
    with fleet.engine.begin() as conn:
        for days_ago, runtime, load in points:
            ts = now - timedelta(days=days_ago)
            conn.execute(insert(Reading), [
                {"ts": ts, "target_kind": "ups", "target_id": ups_id, "metric": "battery.runtime", "value": runtime,
                 "unit": "s"},
                {"ts": ts, "target_kind": "ups", "target_id": ups_id, "metric": "ups.load", "value": load,
                 "unit": "%"}])


def test_runtime_trend_at_load_forecasts_the_replacement_date(sqlite_fleet: Fleet) -> None:
    build(sqlite_fleet.engine, [Spec("web-1")])
    fading = _ups(sqlite_fleet, "ups-fading", date.today() - timedelta(days=400))
    steady = _ups(sqlite_fleet, "ups-steady", date.today() - timedelta(days=400))
    # runtime x load falls by 10%-points x minutes a month: 1200 s at 50% load now, 1500 s 90 days ago.
    _history(sqlite_fleet, fading, [(90, 1500, 50), (60, 1400, 50), (30, 1300, 50), (0, 1200, 50)])
    # A quiet night (low load, long runtime) is not mistaken for a healthier battery.
    _history(sqlite_fleet, steady, [(90, 1200, 50), (60, 2400, 25), (30, 1200, 50), (0, 1200, 50)])
    rows = {r.name: r for r in battery_forecast(sqlite_fleet.ctx, min_runtime_s=300)}
    f = rows["ups-fading"]
    assert f.runtime_trend_s_per_30d == pytest.approx(-100, abs=1)
    # 60000 -> 15000 (300 s at 50 %) at 1666.7 per 10 days: 270 days from now.
    assert abs((f.due_by_trend - (date.today() + timedelta(days=270))).days) <= 2
    assert rows["ups-steady"].due_by_trend is None
    assert f.due_by_age == date.today() - timedelta(days=400) + timedelta(days=round(4 * 365.25))
    assert not f.replace_now


def test_old_batteries_and_replace_battery_status_are_due_now(fleet: Fleet) -> None:
    """On both engines: a combined status ("on-battery low-battery replace-battery") fits its column."""
    build(fleet.engine, [Spec("web-1")])
    _ups(fleet, "ups-old", date.today() - timedelta(days=5 * 365))
    flagged = _ups(fleet, "ups-flagged", date.today())
    with fleet.engine.begin() as conn:
        conn.execute(insert(UpsState).values(ups_id=flagged, status="on-battery low-battery replace-battery",
                                             last_error=""))
    rows = {r.name: r for r in battery_forecast(fleet.ctx)}
    assert rows["ups-old"].replace_now and "service life" in rows["ups-old"].reasons[0]
    assert rows["ups-flagged"].replace_now and rows["ups-flagged"].reasons == ("the UPS reports replace-battery",)


def test_ups_selectors_filter_in_sql(sqlite_fleet: Fleet) -> None:
    build(sqlite_fleet.engine, [Spec("web-1")])
    _ups(sqlite_fleet, "ups-a1", None, kind="rack")
    _ups(sqlite_fleet, "ups-b1", None, kind="server")
    with sqlite_fleet.engine.connect() as conn:
        def names(sel: str) -> list[str]:
            return sorted(conn.execute(select(Ups.name).where(parse_ups_selector(sel))).scalars())
        assert names("ups-a*") == ["ups-a1"]
        assert names("kind=server") == ["ups-b1"]
        assert names("site=PAR1 protocol=snmp") == ["ups-a1", "ups-b1"]
    with pytest.raises(SelectorError):
        parse_ups_selector("colour=red")
    with pytest.raises(SelectorError):
        parse_ups_selector("ups;reboot")


def test_snmp_v3_secrets_hold_both_passphrases_and_refuse_short_ones(sqlite_fleet: Fleet) -> None:
    sqlite_fleet.set_credential("v3", "snmp-v3", credential_json("authpass1", "privpass1"), username="monitor",
                                options={"auth_proto": "SHA", "priv_proto": "AES"})
    assert reveal_v3(sqlite_fleet.secret("v3")[1]) == ("authpass1", "privpass1")
    with pytest.raises(ValidationError, match="at least 8"):
        credential_json("short", None)
    with pytest.raises(ValidationError, match="auth and priv"):
        sqlite_fleet.set_credential("v3b", "snmp-v3", "just-one-passphrase", username="monitor")


def test_retention_thins_old_readings_to_one_per_hour_or_drops_them(fleet: Fleet) -> None:
    build(fleet.engine, [Spec("web-1")])
    ups = _ups(fleet, "ups-r", None)
    now = datetime.now(UTC)
    with fleet.engine.begin() as conn:
        rows = [{"ts": now - timedelta(days=40, minutes=m), "target_kind": "ups", "target_id": ups,
                 "metric": "battery.charge", "value": 100.0, "unit": "%"} for m in range(0, 120, 10)]
        rows += [{"ts": now - timedelta(minutes=m), "target_kind": "ups", "target_id": ups,
                  "metric": "battery.charge", "value": 99.0, "unit": "%"} for m in range(5)]
        conn.execute(insert(Reading), rows)
    assert fleet.prune_readings(older_than_days=30)["deleted"] == 12 - len(
        {(now - timedelta(days=40, minutes=m)).strftime("%Y-%m-%d %H") for m in range(0, 120, 10)})
    with fleet.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Reading)).scalar() >= 5 + 2
    fleet.prune_readings(older_than_days=30, keep_hourly=False)
    with fleet.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Reading)).scalar() == 5  # recent ones untouched
    assert fleet.audit(action="readings.prune")[0].detail["keep_hourly"] is False


def test_an_outlet_on_a_pdu_whose_profile_says_no_outlet_control_is_refused_before_any_packet(
        sqlite_fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from fleet.ops.ups import outlet_action
    from inventory.models import Pdu, Site

    with sqlite_fleet.engine.begin() as conn:
        site = conn.execute(insert(Site).values(code="q1", name="q1", description="").returning(Site.id)).scalar_one()
        conn.execute(insert(Pdu).values(name="dumb-pdu", site_id=site, profile="generic-pdu", host="127.0.0.9",
                                        port=161, description=""))
    called: list[str] = []

    async def outlets(self: object, target: object) -> list:  # any packet would go through here first
        called.append("outlets")
        raise AssertionError("the driver was asked")

    monkeypatch.setattr(type(sqlite_fleet.driver("snmp")), "outlets", outlets)
    with pytest.raises(Unsupported) as err:
        asyncio.run(outlet_action(sqlite_fleet.ctx, "dumb-pdu:3", "off"))
    assert not called
    assert "dumb-pdu outlet 3: profile generic-pdu cannot switch outlets (quirk no-outlet-control" in str(err.value)
