"""A mixed Redfish/IPMI fleet end to end: `fleet lab start --redfish`, imported, driven with the real script.

One lab for the module, 6 servers (fleet/lab/datacenter.py ``REDFISH_MIX``): s01, s02, s05, s06 speak
IPMI and Redfish (profile ``rackfleet-lab-redfish``: ``power = ["redfish", "ipmi", "ssh"]``), s03 IPMI
only (``rackfleet-lab``), s04 Redfish only (no IPMI socket at all). The lab's stats op counts IPMI
datagrams and Redfish requests, which is how a test knows which protocol a command used; the BMC model
behind both protocols is the witness of what a command did. Setup (lab start, import, faults, reading
the lab) runs in-process; the commands under test run as the `fleet` script.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from .clihelp import fleet, fresh_env
from .clihelp import fleet_in_process as here

PORT = "16671"
DUAL, IPMI_ONLY, REDFISH_ONLY = "lab1-r01-s01", "lab1-r01-s03", "lab1-r01-s04"
SERVERS = [f"lab1-r01-s0{n}" for n in range(1, 7)]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("rfe2e")
    env = fresh_env(tmp)
    directory = tmp / "lab"
    started = here(env, "lab", "start", "--redfish", "--dir", str(directory), "--racks", "1",
                   "--servers-per-rack", "6", "--port", PORT, "--no-ups", "--no-rack-power", "--no-ssh", "--json")
    assert started.returncode == 0, started.stderr
    try:
        imported = here(env, "import", str(directory / "inventory.yaml"), "--secrets",
                        str(directory / "secrets.yaml"))
        assert imported.returncode == 0, imported.stderr
        yield {"env": env, "dir": directory, "info": json.loads(started.stdout)}
    finally:
        here(env, "lab", "stop", "--dir", str(directory))


def _bmc(lab: dict[str, Any], name: str) -> dict[str, Any]:
    from fleet.lab.bmcserver import lab_control

    return lab_control(lab["dir"] / "bmc", {"op": "get", "bmc": name})["bmc"]


def _counts(lab: dict[str, Any]) -> tuple[int, int]:
    """(IPMI datagrams, Redfish requests) the lab has answered so far."""
    from fleet.lab.bmcserver import lab_control

    stats = lab_control(lab["dir"] / "bmc", {"op": "stats"})
    return stats["datagrams"], stats["redfish_requests"]


def _fault(lab: dict[str, Any], host: str, kind: str, *, clear: bool = False) -> None:
    done = here(lab["env"], "lab", "fault", host, kind, "--dir", str(lab["dir"]), *(["--clear"] if clear else []))
    assert done.returncode == 0, done.stderr


def _until(check: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def test_the_lab_writes_a_mixed_inventory(lab: dict[str, Any]) -> None:
    inventory = yaml.safe_load((lab["dir"] / "inventory.yaml").read_text())
    servers = {s["hostname"]: s for s in inventory["sites"][0]["pods"][0]["racks"][0]["servers"]}
    fingerprint = lab["info"]["redfish"]["tls_fingerprint"]
    assert fingerprint.startswith("sha256:") and lab["info"]["redfish"]["redfish_only"] == 1
    for name, srv in servers.items():
        ipmi, redfish = "bmc" in srv, "redfish" in srv
        assert (ipmi, redfish) == {IPMI_ONLY: (True, False), REDFISH_ONLY: (False, True)}.get(name, (True, True))
        assert srv["profile"] == ("rackfleet-lab-redfish" if redfish else "rackfleet-lab")
        if redfish:
            assert srv["redfish"].endswith(f":{PORT}") and srv["redfish_credential"] == "lab-redfish"
            assert srv["redfish_tls_fingerprint"] == fingerprint  # pinned: no `fleet bmc trust` step needed
    secrets = yaml.safe_load((lab["dir"] / "secrets.yaml").read_text())["credentials"]
    assert {(c["name"], c["kind"]) for c in secrets} == {("lab-bmc", "ipmi"), ("lab-redfish", "redfish")}


def test_power_status_answers_for_every_server_and_names_the_driver(lab: dict[str, Any]) -> None:
    done = fleet(lab["env"], "power", "status", "host=*", "--json")
    assert done.returncode == 0, done.stderr
    got = {r["hostname"]: (r["after"], r["driver"]) for r in json.loads(done.stdout)}
    assert got == {name: ("on", "ipmi" if name == IPMI_ONLY else "redfish") for name in SERVERS}


def test_power_cycle_of_a_redfish_only_server_reaches_the_bmc(lab: dict[str, Any]) -> None:
    before = _bmc(lab, REDFISH_ONLY)["boot_count"]
    done = fleet(lab["env"], "power", "cycle", REDFISH_ONLY, "--yes", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)[0]
    assert (result["outcome"], result["after"], result["driver"]) == ("done", "on", "redfish")
    # The lab applies an accepted reset after its power delay (1 s, as BMCs answer 204 and act later):
    # the model sees the cycle (off, then a new boot) and its power is on again. Known gap: the driver
    # confirms a cycle by the first PowerState "On", which here is still the state before the cycle.
    assert _until(lambda: _bmc(lab, REDFISH_ONLY)["boot_count"] > before), _bmc(lab, REDFISH_ONLY)
    assert _until(lambda: _bmc(lab, REDFISH_ONLY)["power"] == "on")


def test_bootdev_on_a_dual_server_goes_through_redfish_and_reads_back(lab: dict[str, Any]) -> None:
    datagrams, requests = _counts(lab)
    done = fleet(lab["env"], "bootdev", "pxe", DUAL, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)[0]
    assert (result["ok"], result["device"], result["persistent"]) == (True, "pxe", False)
    after_datagrams, after_requests = _counts(lab)
    assert after_datagrams == datagrams and after_requests > requests  # Redfish only, IPMI untouched
    boot = _bmc(lab, DUAL)["boot"]  # the BMC's own flags (what IPMI would read back)
    assert (boot["device"], boot["valid"], boot["persistent"]) == ("pxe", True, False)


def test_sensors_and_sel_through_redfish(lab: dict[str, Any]) -> None:
    datagrams, requests = _counts(lab)
    sensors = fleet(lab["env"], "sensors", DUAL, "--json")
    assert sensors.returncode == 0, sensors.stderr
    assert _counts(lab)[0] == datagrams and _counts(lab)[1] > requests  # a dual server: Redfish first
    readings = {s["name"]: s for s in json.loads(sensors.stdout)}
    # The profile's sensor names, with its units and thresholds, values as the BMC model has them.
    assert {"Inlet Temp", "CPU1 Temp", "CPU2 Temp", "FAN1", "FAN2", "12V", "PSU1 Power"} <= set(readings)
    model = _bmc(lab, DUAL)["sensors"]
    assert readings["FAN1"]["unit"] == "rpm" and abs(readings["FAN1"]["value"] - model["FAN1"]) <= 1000
    assert readings["Inlet Temp"]["state"] == "ok" and readings["Inlet Temp"]["thresholds"]["critical_high"] == 45
    _fault(lab, REDFISH_ONLY, "ecc")  # an uncorrectable ECC error in the BMC's event log
    try:
        sel = fleet(lab["env"], "sel", REDFISH_ONLY, "--json")  # no IPMI there: Redfish's LogServices
        assert sel.returncode == 0, sel.stderr
        last = json.loads(sel.stdout)[-1]
        assert "Uncorrectable ECC" in last["event"] and last["severity"] == "critical", last
    finally:
        _fault(lab, REDFISH_ONLY, "ecc", clear=True)


def test_a_sweep_reads_every_server_and_counts_drivers_per_capability(lab: dict[str, Any]) -> None:
    done = fleet(lab["env"], "sweep", "--no-ups", "--probe-all", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["servers"], result["servers_read"], result["errors"]) == (6, 6, {})
    for capability in ("power", "sensors", "sel"):
        assert result["drivers"][capability] == {"redfish": 5, "ipmi": 1}, (capability, result["drivers"])


def test_a_dead_redfish_side_falls_back_to_ipmi(lab: dict[str, Any]) -> None:
    dual = "lab1-r01-s02"
    _fault(lab, dual, "redfish-dead")  # its Redfish hangs; its IPMI still answers
    try:
        done = fleet(lab["env"], "power", "status", dual, "--json")
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)[0]
        assert (result["after"], result["driver"]) == ("on", "ipmi")
        assert result["elapsed_s"] < 5.0 + 4.0  # Redfish's deadline (5 s), then IPMI
    finally:
        _fault(lab, dual, "redfish-dead", clear=True)


def test_a_wrong_redfish_password_stops_the_chain(lab: dict[str, Any]) -> None:
    env = lab["env"]
    secret = next(c["secret"] for c in yaml.safe_load((lab["dir"] / "secrets.yaml").read_text())["credentials"]
                  if c["name"] == "lab-redfish")
    assert here(env, "credentials", "set", "lab-redfish", "--kind", "redfish", "--user", "admin",
                "--password-stdin", stdin="not-the-password\n").returncode == 0
    try:
        datagrams, _ = _counts(lab)
        done = fleet(env, "power", "status", DUAL, "--json")
        result = json.loads(done.stdout)[0]
        assert done.returncode == 1 and result["outcome"] == "unknown-state" and result["driver"] == ""
        assert "401" in result["error"] and "refused" in result["error"], result["error"]
        assert _counts(lab)[0] == datagrams  # IPMI was never asked: an auth failure is an answer
        assert "not-the-password" not in done.stdout + done.stderr
    finally:
        assert here(env, "credentials", "set", "lab-redfish", "--kind", "redfish", "--user", "admin",
                    "--password-stdin", stdin=secret + "\n").returncode == 0
    assert json.loads(fleet(env, "power", "status", DUAL, "--json").stdout)[0]["driver"] == "redfish"
