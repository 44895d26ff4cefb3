"""`fleet ups ...` end to end on the lab's per-server UPSes (NUT's upsd and dummy-ups: real NUT).

`fleet ups`, `outlet` and `add` run as the installed script; the lab, the import, credentials and the
read-backs (show, audit, export) run the same CLI in this process (tests/clihelp.py).
"""

from __future__ import annotations

import json
import time

from .clihelp import fleet
from .clihelp import fleet_in_process as here


def test_ups_status_follows_lab_faults_and_the_forecast_flags_worn_batteries(env, tmp_path) -> None:
    lab = tmp_path / "lab"
    started = here(env, "lab", "start", "--dir", str(lab), "--racks", "1", "--servers-per-rack", "3",
                   "--port", "16625")
    assert started.returncode == 0, started.stderr
    try:
        assert here(env, "import", str(lab / "inventory.yaml"), "--secrets", str(lab / "secrets.yaml")
                    ).returncode == 0
        before = json.loads(fleet(env, "ups", "status", "kind=server", "--json").stdout)
        assert [(u["name"], u["status"], u["charge_pct"]) for u in before] == [
            (f"ups-lab1-r01-s0{i}", "online", 100.0) for i in (1, 2, 3)]
        assert here(env, "lab", "fault", "lab1-r01-s02", "low-battery", "--dir", str(lab)).returncode == 0
        assert here(env, "lab", "fault", "lab1-r01-s03", "replace-battery", "--dir", str(lab)).returncode == 0
        deadline = time.monotonic() + 10
        while True:  # dummy-ups notices its rewritten file within its poll interval
            now = {u["name"]: u for u in json.loads(fleet(env, "ups", "status", "server=lab1-r01-*", "--json").stdout)}
            seen = ("low-battery" in now["ups-lab1-r01-s02"]["status"]
                    and "replace-battery" in now["ups-lab1-r01-s03"]["status"])
            if seen or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert now["ups-lab1-r01-s02"]["status"] == "on-battery low-battery"
        assert now["ups-lab1-r01-s02"]["runtime_s"] == 90.0
        assert "replace-battery" in now["ups-lab1-r01-s03"]["status"]
        assert now["ups-lab1-r01-s01"]["status"] == "online"
        due = {b["name"]: b for b in json.loads(fleet(env, "ups", "batteries", "--json").stdout)}
        assert due["ups-lab1-r01-s03"]["replace_now"] is True
        assert due["ups-lab1-r01-s01"]["installed"] is not None
        assert here(env, "lab", "fault", "lab1-r01-s02", "low-battery", "--clear", "--dir", str(lab)).returncode == 0
    finally:
        assert here(env, "lab", "stop", "--dir", str(lab)).returncode == 0


def test_rack_ups_and_pdu_on_snmp_switch_and_report_as_the_lab_sets_them(env, tmp_path) -> None:
    lab = tmp_path / "lab"
    started = here(env, "lab", "start", "--dir", str(lab), "--racks", "1", "--servers-per-rack", "2", "--no-ups",
                   "--port", "16626")
    assert started.returncode == 0, started.stderr
    try:
        assert here(env, "import", str(lab / "inventory.yaml"), "--secrets", str(lab / "secrets.yaml")
                    ).returncode == 0
        path = json.loads(here(env, "show", "lab1-r01-s02", "--json").stdout)["power_feeds"]
        assert path == [{"psu": 2, "outlet": 2, "pdu": "lab-pdu-001", "ups": "lab-ups-001", "ups_kind": "rack",
                         "feed": "R01-A"}]
        off = json.loads(fleet(env, "outlet", "off", "lab1-r01-s02", "--yes", "--json").stdout)
        assert [(o["device"], o["outlet"], o["before"], o["after"], o["ok"]) for o in off] == [
            ("lab-pdu-001", 2, "on", "off", True)]
        from fleet.lab.snmplab import outlet_states

        states = outlet_states(lab / "snmp", "lab-pdu-001")
        assert states[2] == "off" and states[1] == "on"  # exactly that outlet, as the device holds it
        assert fleet(env, "outlet", "on", "lab-pdu-001:2", "--yes").returncode == 0
        assert here(env, "lab", "fault", "lab-ups-001", "on-battery", "--dir", str(lab)).returncode == 0
        ups = json.loads(fleet(env, "ups", "status", "kind=rack", "--json").stdout)[0]
        assert ups["status"] == "on-battery" and ups["charge_pct"] < 100
        assert [a["action"] for a in json.loads(here(env, "audit", "--json").stdout)][:2] == ["outlet.on",
                                                                                              "outlet.off"]
    finally:
        assert here(env, "lab", "stop", "--dir", str(lab)).returncode == 0


def test_add_ups_and_pdu_without_a_profile_recognises_the_model_from_the_device(env, tmp_path) -> None:
    from fleet.lab.snmplab import start_snmpsim, stop_snmpsim

    lab = start_snmpsim(tmp_path / "snmp", ups=2, pdu=1, ups_models=["apc-smart-ups", "eaton-9px"],
                        pdu_models=["apc-8641"])
    try:
        here(env, "add", "site", "t1")
        for dev in lab.devices:
            assert here(env, "credentials", "set", f"c-{dev.name}", "--kind", "snmp-v2c", "--password-stdin",
                        stdin=dev.community + "\n").returncode == 0
            kind = "ups" if dev.kind == "ups" else "pdu"
            added = fleet(env, "add", kind, dev.name, "--snmp", f"{dev.host}:{dev.port}", "--credential",
                          f"c-{dev.name}", "--site", "t1")
            assert added.returncode == 0, added.stderr
            assert f"as profile {dev.profile}" in added.stderr
        exported = here(env, "export").stdout
        assert "profile: apc-smart-ups" in exported and "profile: eaton-9px" in exported
        assert "profile: apc-rpdu" in exported
    finally:
        stop_snmpsim(lab)


def test_fleet_ups_status_matches_upsc_on_every_lab_ups(env, tmp_path) -> None:
    import shutil
    import subprocess

    from fleet.lab.nutlab import load_nut_lab

    from .peers import missing_peer

    if shutil.which("upsc") is None:
        missing_peer("NUT's upsc is not installed (Debian package nut-client)")
    lab = tmp_path / "lab"
    assert here(env, "lab", "start", "--dir", str(lab), "--racks", "1", "--servers-per-rack", "4", "--no-rack-power",
                "--port", "16627").returncode == 0
    try:
        assert here(env, "import", str(lab / "inventory.yaml"), "--secrets", str(lab / "secrets.yaml")
                    ).returncode == 0
        # Steady states (on battery at low battery, a worn battery): the on-battery fault's runtime moves
        # every 2 s, faster than two clients can read the same second.
        assert here(env, "lab", "fault", "lab1-r01-s02", "replace-battery", "--dir", str(lab)).returncode == 0
        assert here(env, "lab", "fault", "lab1-r01-s04", "low-battery", "--dir", str(lab)).returncode == 0
        time.sleep(2.5)  # dummy-ups polls its file every second
        nut = load_nut_lab(lab / "nut")
        flags = {"OL": "online", "OB": "on-battery", "LB": "low-battery", "RB": "replace-battery"}
        for _attempt in range(3):
            ours = {u["name"]: u for u in json.loads(fleet(env, "ups", "status", "--json").stdout)}
            theirs = {}
            for u in nut.ups:
                out = subprocess.run(["upsc", f"{u.nut_name}@{nut.host}:{nut.port}"], capture_output=True,
                                     text=True, timeout=10, check=True).stdout
                theirs[u.name] = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
            mismatches = []
            for name, v in theirs.items():
                mine = ours[name]
                status = " ".join(flags[f] for f in v["ups.status"].split() if f in flags)
                got = (mine["status"], mine["charge_pct"], mine["runtime_s"], mine["load_pct"], mine["input_v"])
                want = (status, float(v["battery.charge"]), float(v["battery.runtime"]), float(v["ups.load"]),
                        float(v["input.voltage"]))
                if got != want:
                    mismatches.append((name, got, want))
            if not mismatches:
                break
            time.sleep(1)  # an on-battery UPS's runtime steps down between our read and upsc's
        assert mismatches == []
        assert {u["status"] for u in ours.values()} >= {"online", "online replace-battery", "on-battery low-battery"}
    finally:
        assert here(env, "lab", "stop", "--dir", str(lab)).returncode == 0
