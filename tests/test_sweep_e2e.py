"""A sweep on the lab datacenter: injected faults raise exactly the expected events; cleared, they resolve.

`fleet sweep` and `fleet thresholds` run as the installed script; the lab, the import and the read-backs
(events, list) go through the same CLI in this process (tests/clihelp.py)."""

from __future__ import annotations

import json
import time

from fleet.model.events import KINDS

from .clihelp import fleet
from .clihelp import fleet_in_process as here

FAULTS = [("lab1-r01-s01", "dead"), ("lab1-r01-s02", "ecc"), ("lab1-r01-s03", "sensor-critical"),
          ("lab-ups-001", "low-battery"), ("lab1-r02-s01", "on-battery")]


def _events(env: dict[str, str], status: str = "open") -> set[tuple[str, str]]:
    return {(e["target"], e["kind"]) for e in json.loads(here(env, "events", "--status", status, "--json").stdout)}


def test_one_sweep_raises_exactly_the_injected_faults_and_a_later_one_resolves_them(env, tmp_path) -> None:
    lab = tmp_path / "lab"
    assert here(env, "lab", "start", "--dir", str(lab), "--racks", "2", "--servers-per-rack", "3",
                "--port", "16628").returncode == 0
    try:
        assert here(env, "import", str(lab / "inventory.yaml"), "--secrets", str(lab / "secrets.yaml")
                    ).returncode == 0
        first = json.loads(fleet(env, "sweep", "--json").stdout)
        assert (first["servers_read"], first["ups_read"], first["events_opened"]) == (6, 8, [])
        for target, kind in FAULTS:
            assert here(env, "lab", "fault", target, kind, "--dir", str(lab)).returncode == 0
        time.sleep(2.5)  # dummy-ups rereads its file every second
        start = time.monotonic()
        second = json.loads(fleet(env, "sweep", "--json").stdout)
        assert time.monotonic() - start < 5.0 + 8.0  # the dead BMC costs its deadline once
        expected = {
            ("lab1-r01-s01", "bmc-unreachable"), ("lab1-r01-s02", "sel-ecc-uncorrectable"),
            ("lab1-r01-s03", "sensor-critical"), ("lab-ups-001", "ups-low-runtime"),
            ("lab-ups-001", "ups-on-battery"), ("ups-lab1-r02-s01", "ups-on-battery")}
        # The on-battery UPS's runtime falls as it runs; below 15 min it is also at low runtime.
        assert expected <= _events(env) <= expected | {("ups-lab1-r02-s01", "ups-low-runtime")}
        opened = json.loads(here(env, "events", "--json").stdout)  # as fleet.model.events says they are
        assert {(e["kind"], e["severity"]) for e in opened} <= {(k.name, k.severity) for k in KINDS.values()}
        assert second["servers_read"] == 5 and "lab1-r01-s01" in second["errors"]
        health = {r["hostname"]: r["health"] for r in json.loads(here(env, "list", "rack=R01", "--json").stdout)}
        assert health == {"lab1-r01-s01": "critical", "lab1-r01-s02": "critical", "lab1-r01-s03": "critical"}
        again = json.loads(fleet(env, "sweep", "--json", "--no-ups").stdout)
        assert again["servers_skipped"] == 1  # the dead BMC's circuit breaker holds it back
        assert again["events_opened"] == [] and expected <= _events(env)  # deduplicated, still open
        for target, kind in FAULTS:
            assert here(env, "lab", "fault", target, kind, "--clear", "--dir", str(lab)).returncode == 0
        time.sleep(2.5)
        assert fleet(env, "sweep", "--probe-all").returncode == 0
        assert _events(env) == set()
        assert expected <= _events(env, "resolved")
    finally:
        assert here(env, "lab", "stop", "--dir", str(lab)).returncode == 0


def test_thresholds_set_for_a_rack_and_for_one_server_override_the_profile(env, tmp_path) -> None:
    lab = tmp_path / "lab"
    assert here(env, "lab", "start", "--dir", str(lab), "--racks", "1", "--servers-per-rack", "2", "--no-ups",
                "--no-rack-power", "--port", "16631").returncode == 0
    try:
        assert here(env, "import", str(lab / "inventory.yaml"), "--secrets", str(lab / "secrets.yaml")
                    ).returncode == 0
        # The lab's inlet reads ~23 C; its profile says critical at 45 C. A hot aisle's rack gets 20 C...
        assert fleet(env, "thresholds", "set", "rack=R01", "Inlet Temp", "warning_high=18",
                     "critical_high=20").returncode == 0
        # ...and one server, whose sensor sits elsewhere, its own 40 C.
        assert fleet(env, "thresholds", "set", "lab1-r01-s02", "Inlet Temp", "warning_high=35",
                     "critical_high=40").returncode == 0
        bad = fleet(env, "thresholds", "set", "lab1-r01-s02", "Inlet Temp", "critical_high=30")
        assert bad.returncode == 2 and "rise" in bad.stderr  # warning 35 over critical 30: refused
        assert fleet(env, "sweep", "--no-ups").returncode == 0
        assert _events(env) == {("lab1-r01-s01", "sensor-critical")}
        cleared = fleet(env, "thresholds", "set", "rack=R01", "Inlet Temp", "warning_high=", "critical_high=")
        assert cleared.returncode == 0
        assert fleet(env, "sweep", "--no-ups").returncode == 0
        assert _events(env) == set()
    finally:
        assert here(env, "lab", "stop", "--dir", str(lab)).returncode == 0
