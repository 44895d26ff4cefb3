"""`fleet ups ...` end to end on the lab's per-server UPSes (NUT's upsd and dummy-ups: real NUT)."""

from __future__ import annotations

import json
import os
import time

from .clihelp import fleet


def test_ups_status_follows_lab_faults_and_the_forecast_flags_worn_batteries(env, tmp_path) -> None:
    lab = tmp_path / "lab"
    started = fleet(env, "lab", "start", "--dir", str(lab), "--racks", "1", "--servers-per-rack", "3",
                    "--port", "16625" if os.geteuid() else "623")
    assert started.returncode == 0, started.stderr
    try:
        assert fleet(env, "import", str(lab / "inventory.yaml"), "--secrets", str(lab / "secrets.yaml")
                     ).returncode == 0
        before = json.loads(fleet(env, "ups", "status", "--json").stdout)
        assert [(u["name"], u["status"], u["charge_pct"]) for u in before] == [
            (f"ups-lab1-r01-s0{i}", "online", 100.0) for i in (1, 2, 3)]
        assert fleet(env, "lab", "fault", "lab1-r01-s02", "low-battery", "--dir", str(lab)).returncode == 0
        assert fleet(env, "lab", "fault", "lab1-r01-s03", "replace-battery", "--dir", str(lab)).returncode == 0
        deadline = time.monotonic() + 10
        while True:  # dummy-ups notices its rewritten file within its poll interval
            now = {u["name"]: u for u in json.loads(fleet(env, "ups", "status", "server=lab1-r01-*", "--json").stdout)}
            if "low-battery" in now["ups-lab1-r01-s02"]["status"] or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert now["ups-lab1-r01-s02"]["status"] == "on-battery low-battery"
        assert now["ups-lab1-r01-s02"]["runtime_s"] == 90.0
        assert "replace-battery" in now["ups-lab1-r01-s03"]["status"]
        assert now["ups-lab1-r01-s01"]["status"] == "online"
        due = {b["name"]: b for b in json.loads(fleet(env, "ups", "batteries", "--json").stdout)}
        assert due["ups-lab1-r01-s03"]["replace_now"] is True
        assert due["ups-lab1-r01-s01"]["installed"] is not None
        assert fleet(env, "lab", "fault", "lab1-r01-s02", "low-battery", "--clear", "--dir", str(lab)).returncode == 0
    finally:
        assert fleet(env, "lab", "stop", "--dir", str(lab)).returncode == 0
