"""`fleet power ...` end to end: the installed CLI, an inventory, and real BMCs.

Against OpenIPMI's ipmi_sim (an implementation we did not write), with ipmitool as the witness;
then against our lab datacenter, driven the way an operator would (`fleet lab start`, import,
`fleet lab fault`).
"""

from __future__ import annotations

import json
import socket
import time

import pytest

from .clihelp import fleet
from .clihelp import fleet_in_process as here
from .ipmisim import ipmi_sim


def _rack_with(env: dict[str, str], servers: list[tuple[str, str, int]], profile: str) -> None:
    assert here(env, "add", "site", "t1").returncode == 0
    assert here(env, "add", "rack", "R1", "--site", "t1").returncode == 0
    assert here(env, "credentials", "set", "bmc", "--kind", "ipmi", "--user", "admin", "--password-stdin",
                stdin="password\n").returncode == 0
    for i, (host, bmc_host, bmc_port) in enumerate(servers):
        added = here(env, "add", "server", host, "--rack", "R1", "--position", str(i + 1), "--bmc",
                     f"{bmc_host}:{bmc_port}", "--bmc-credential", "bmc", "--profile", profile)
        assert added.returncode == 0, added.stderr


@pytest.mark.peer
def test_power_off_through_the_cli_turns_an_ipmi_sim_off_as_ipmitool_confirms(env) -> None:
    with ipmi_sim(count=2) as sims:
        _rack_with(env, [(f"sim-{i}", s.host, s.port) for i, s in enumerate(sims)], "openipmi-sim")
        assert "Chassis Power is on" in sims[0].ipmitool("chassis", "power", "status").stdout
        done = fleet(env, "power", "off", "sim-0", "--yes", "--json")
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert [(r["hostname"], r["before"], r["after"], r["outcome"]) for r in result] == [
            ("sim-0", "on", "off", "done")]
        assert "Chassis Power is off" in sims[0].ipmitool("chassis", "power", "status").stdout
        assert "Chassis Power is on" in sims[1].ipmitool("chassis", "power", "status").stdout  # only that one
        entry = json.loads(here(env, "audit", "--action", "power.off", "--json").stdout)[0]
        assert (entry["actor"], entry["targets"], entry["result"]) == ("tech", ["sim-0"], "ok")
        on = json.loads(fleet(env, "power", "on", "sim-0", "--json").stdout)[0]
        assert (on["before"], on["after"], on["outcome"]) == ("off", "on", "done")
        assert "Chassis Power is on" in sims[0].ipmitool("chassis", "power", "status").stdout
        boot = fleet(env, "bootdev", "pxe", "sim-1", "--json")
        assert boot.returncode == 0 and json.loads(boot.stdout)[0]["device"] == "pxe"
        assert "Force PXE" in sims[1].ipmitool("chassis", "bootparam", "get", "5").stdout


@pytest.mark.peer
def test_a_dead_bmc_is_reported_within_its_deadline_and_not_acted_on(env) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:  # swallows every datagram, answers none
        sink.bind(("127.0.99.1", 0))
        _rack_with(env, [("mute-1", "127.0.99.1", sink.getsockname()[1])], "generic-ipmi")
        start = time.monotonic()
        done = fleet(env, "power", "cycle", "mute-1", "--yes", "--json")
        elapsed = time.monotonic() - start
    result = json.loads(done.stdout)[0]
    assert done.returncode == 1
    assert result["outcome"] == "unknown-state" and "not acted on" in result["error"]
    assert result["elapsed_s"] <= 5.0 + 1.0  # the per-call deadline (5 s) and a little
    assert elapsed < 30  # the whole command, process start and worker start included


@pytest.mark.peer
def test_a_wrong_password_fails_fast_with_an_auth_error(env) -> None:
    with ipmi_sim(count=1) as sims:
        _rack_with(env, [("sim-0", sims[0].host, sims[0].port)], "openipmi-sim")
        assert fleet(env, "credentials", "set", "bmc", "--kind", "ipmi", "--user", "admin", "--password-stdin",
                     stdin="not-the-password\n").returncode == 0
        done = fleet(env, "power", "status", "sim-0", "--json")
        result = json.loads(done.stdout)[0]
        assert done.returncode == 1 and result["outcome"] == "unknown-state"
        assert "password" in result["error"].lower() or "auth" in result["error"].lower()
        assert result["elapsed_s"] < 2.0


def test_lab_datacenter_power_cycle_faults_and_audit(env, tmp_path) -> None:
    lab = tmp_path / "lab"
    started = here(env, "lab", "start", "--dir", str(lab), "--racks", "2", "--servers-per-rack", "3",
                   "--port", "16623")
    assert started.returncode == 0, started.stderr
    try:
        assert here(env, "import", str(lab / "inventory.yaml"), "--secrets", str(lab / "secrets.yaml")
                     ).returncode == 0
        status = json.loads(fleet(env, "power", "status", "rack=R01", "--json").stdout)
        assert [r["after"] for r in status] == ["on", "on", "on"]
        cycled = json.loads(fleet(env, "power", "cycle", "lab1-r01-s02", "--yes", "--json").stdout)[0]
        assert (cycled["ok"], cycled["outcome"]) == (True, "done")
        state = json.loads(here(env, "lab", "status", "--dir", str(lab), "--json").stdout)
        assert state["running"] is True
        assert here(env, "lab", "fault", "lab1-r01-s03", "dead", "--dir", str(lab)).returncode == 0
        after = {r["hostname"]: r for r in json.loads(fleet(env, "power", "status", "rack=R01", "--json").stdout)}
        assert after["lab1-r01-s03"]["outcome"] == "unknown-state"
        assert after["lab1-r01-s01"]["outcome"] == "status"
        sensors = json.loads(fleet(env, "sensors", "lab1-r01-s01", "--json").stdout)
        assert {"CPU1 Temp", "Inlet Temp", "FAN1"} <= {s["name"] for s in sensors}
        fru = json.loads(fleet(env, "fru", "lab1-r01-s01", "--json").stdout)
        assert fru["serial"] == "LAB000001"
        refused = fleet(env, "power", "off", "rack=R01", "--yes")
        assert refused.returncode == 2 and "3 of 3 servers in rack lab1/R01" in refused.stderr
        audit = [a["action"] for a in json.loads(here(env, "audit", "--json").stdout)]
        assert audit[:2] == ["power.off", "power.cycle"]
    finally:
        assert here(env, "lab", "stop", "--dir", str(lab)).returncode == 0


def test_budgeted_power_on_switches_a_rack_on_in_waves_within_its_feed(env, tmp_path) -> None:
    lab = tmp_path / "lab"
    assert here(env, "lab", "start", "--dir", str(lab), "--racks", "1", "--servers-per-rack", "3",
                "--port", "16624").returncode == 0
    try:
        assert here(env, "import", str(lab / "inventory.yaml"), "--secrets", str(lab / "secrets.yaml")
                     ).returncode == 0
        assert fleet(env, "power", "off", "rack=R01", "--yes", "--force").returncode == 0
        # Feed R01-A: 1800 W; each server peaks at 450 W with 1.5x inrush (675 W) for 2 s.
        plan = json.loads(fleet(env, "power", "on", "rack=R01", "--budget", "--plan", "--json").stdout)
        assert [len(w["servers"]) for w in plan["waves"]] == [2, 1]
        assert all(p["peak_w"] <= p["capacity_w"] for p in plan["peak_loads"])
        done = json.loads(fleet(env, "power", "on", "rack=R01", "--budget", "--json").stdout)
        assert [(r["outcome"], r["wave"]) for r in done] == [("done", 0), ("done", 0), ("done", 1)]
        entry = json.loads(here(env, "audit", "--action", "power.on", "--json").stdout)[0]
        assert entry["detail"]["waves"] == 2 and entry["result"] == "ok"
    finally:
        here(env, "lab", "stop", "--dir", str(lab))
