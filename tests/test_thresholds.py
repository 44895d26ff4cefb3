"""Threshold overrides: a server's own beat its rack's, which beat the profile's (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest

from fleet import Fleet
from fleet.errors import NotFound, ValidationError

from .factory import Spec, build


def test_server_overrides_beat_rack_overrides_and_clearing_falls_back(fleet: Fleet) -> None:
    build(fleet.engine, [Spec("a-1", rack="R1"), Spec("a-2", rack="R1", position=2), Spec("b-1", rack="R2")])
    fleet.set_threshold("rack=R1", "Inlet Temp", {"warning_high": 30, "critical_high": 35})
    fleet.set_threshold("a-2", "Inlet Temp", {"critical_high": 40})
    got = fleet.threshold_overrides(["a-1", "a-2", "b-1"])
    assert got["a-1"] == {"Inlet Temp": {"warning_high": 30, "critical_high": 35}}
    assert got["a-2"] == {"Inlet Temp": {"warning_high": 30, "critical_high": 40}}
    assert "b-1" not in got
    fleet.set_threshold("rack=R1", "Inlet Temp", {"warning_high": None})
    assert fleet.threshold_overrides(["a-1"])["a-1"] == {"Inlet Temp": {"critical_high": 35}}
    assert fleet.audit(action="threshold.set")[0].targets == ("rack=R1",)


def test_bad_thresholds_and_unknown_scopes_are_refused(fleet: Fleet) -> None:
    build(fleet.engine, [Spec("a-1", rack="R1")])
    with pytest.raises(ValidationError, match="rise"):
        fleet.set_threshold("a-1", "FAN1", {"critical_low": 900, "warning_low": 600})
    with pytest.raises(ValidationError, match="unknown threshold"):
        fleet.set_threshold("a-1", "FAN1", {"critical_hi": 1})
    with pytest.raises(NotFound):
        fleet.set_threshold("rack=R9", "FAN1", {"critical_low": 1})
    with pytest.raises(ValidationError):
        fleet.set_threshold("a-1", "FAN1; reboot", {"critical_low": 1})
    assert fleet.threshold_overrides(["a-1"]) == {}
