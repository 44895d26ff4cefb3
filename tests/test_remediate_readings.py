"""Each UPS finding reaches the planner with the reading its kind carries (fleet.model.events).

``ups-battery-failing`` carries the charge, ``ups-on-battery`` and ``ups-low-runtime`` the runtime: a
rule ``reading: charge_pct < 50`` is compared with a charge, never with seconds of runtime.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import insert, select

from fleet.model.events import UPS_BATTERY_FAILING, UPS_LOW_RUNTIME
from fleet.model.policy import parse_policies
from fleet.workflows.remediate import gather, remediation_plan
from inventory.models import Event, Site, Ups, UpsState, utcnow

from .factory import Spec, build

POLICY = """
version: 1
rules:
  - name: worn-battery
    when:
      kind: ups-battery-failing
      reading: charge_pct < 50
    then: [work-order: battery-replacement]
"""


def _ups(fleet, *, charge: float, runtime: float, kind: str) -> None:
    build(fleet.engine, [Spec("n1.example.net", state="deployed")])
    now = utcnow()
    with fleet.engine.begin() as conn:
        site = conn.execute(select(Site.id)).scalar_one()
        ups = conn.execute(insert(Ups).values(name="ups-r1", site_id=site, host="127.0.0.1")
                           .returning(Ups.id)).scalar_one()
        conn.execute(insert(UpsState).values(ups_id=ups, charge_pct=charge, runtime_s=runtime, status="ok"))
        conn.execute(insert(Event).values(opened_at=now - timedelta(hours=1), updated_at=now, target_kind="ups",
                                          target_id=ups, target_name="ups-r1", kind=kind, severity="warning",
                                          status="open", message="", count=1, acked_by=""))


def test_a_battery_failing_finding_carries_the_charge_and_a_low_runtime_one_the_runtime(sqlite_fleet) -> None:
    _ups(sqlite_fleet, charge=40.0, runtime=1200.0, kind=UPS_BATTERY_FAILING)
    [finding] = gather(sqlite_fleet.ctx, utcnow())["findings"]
    assert (finding.kind, finding.value) == (UPS_BATTERY_FAILING, 40.0)
    with sqlite_fleet.engine.begin() as conn:
        conn.execute(Event.__table__.update().values(kind=UPS_LOW_RUNTIME))
    [finding] = gather(sqlite_fleet.ctx, utcnow())["findings"]
    assert (finding.kind, finding.value) == (UPS_LOW_RUNTIME, 1200.0)


def test_a_charge_rule_plans_on_the_charge_not_on_seconds_of_runtime(sqlite_fleet) -> None:
    _ups(sqlite_fleet, charge=40.0, runtime=1200.0, kind=UPS_BATTERY_FAILING)
    plan = remediation_plan(sqlite_fleet.ctx, parse_policies(POLICY, "p.yaml"))
    assert [(a.target, a.action) for a in plan.planned] == [("ups-r1", "work-order:battery-replacement")]
    with sqlite_fleet.engine.begin() as conn:  # charge 80 %: runtime 1200 s is not "under 50"
        conn.execute(UpsState.__table__.update().values(charge_pct=80.0))
    assert remediation_plan(sqlite_fleet.ctx, parse_policies(POLICY, "p.yaml")).planned == ()
