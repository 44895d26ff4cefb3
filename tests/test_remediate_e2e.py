"""Remediation on the lab: a sweep's events become a dry-run plan; --apply carries it out, audited.

`fleet sweep`, `remediate` and `power` run as the installed script; the lab, the import and the read-backs
(show, work-orders, audit) run the same CLI in this process (tests/clihelp.py).
"""

from __future__ import annotations

import json
import time

from .clihelp import fleet
from .clihelp import fleet_in_process as here


def test_ecc_and_a_ups_at_low_runtime_are_planned_then_applied_within_the_limits(env, tmp_path) -> None:
    lab = tmp_path / "lab"
    assert here(env, "lab", "start", "--dir", str(lab), "--racks", "1", "--servers-per-rack", "3",
                "--port", "16630").returncode == 0
    try:
        assert here(env, "import", str(lab / "inventory.yaml"), "--secrets", str(lab / "secrets.yaml")
                    ).returncode == 0
        assert here(env, "lab", "fault", "lab1-r01-s02", "ecc", "--dir", str(lab)).returncode == 0
        assert here(env, "lab", "fault", "lab1-r01-s03", "low-battery", "--dir", str(lab)).returncode == 0
        time.sleep(2.5)
        assert fleet(env, "sweep").returncode in (0, 1)
        dry = json.loads(fleet(env, "remediate", "--json").stdout)
        planned = {(a["target"], a["action"]) for a in dry["planned"]}
        assert ("lab1-r01-s02", "quarantine") in planned and ("lab1-r01-s02", "work-order:rma") in planned
        assert ("lab1-r01-s03", "soft-shutdown") in planned  # fed by the UPS at low runtime
        assert dry["applied"] == []
        assert json.loads(here(env, "show", "lab1-r01-s02", "--json").stdout)["state"] == "deployed"  # dry run
        applied = json.loads(fleet(env, "remediate", "--apply", "--json").stdout)["applied"]
        assert all(a["ok"] for a in applied), applied
        assert json.loads(here(env, "show", "lab1-r01-s02", "--json").stdout)["state"] == "quarantined"
        status = {r["hostname"]: r["after"] for r in json.loads(fleet(env, "power", "status", "rack=R01",
                                                                      "--json").stdout)}
        assert status["lab1-r01-s03"] == "off" and status["lab1-r01-s01"] == "on"
        orders = json.loads(here(env, "work-orders", "--json").stdout)
        assert [(o["kind"], o["target"]) for o in orders] == [("rma", "lab1-r01-s02")]
        audit = [a for a in json.loads(here(env, "audit", "--action", "remediate", "--json").stdout)]
        assert {(a["targets"][0], a["detail"]["step"]) for a in audit} == {(a["target"], a["action"])
                                                                            for a in applied}
        again = json.loads(fleet(env, "remediate", "--json").stdout)  # done once: not planned twice
        assert not {(a["target"], a["action"]) for a in again["planned"]} & {(a["target"], a["action"])
                                                                            for a in applied}
    finally:
        assert here(env, "lab", "stop", "--dir", str(lab)).returncode == 0
