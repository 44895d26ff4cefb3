"""Design for failure, end to end on the lab: six kinds of fault in one run, one sweep, one plan, one apply.

The lab (3 racks of 3 servers, each with its own NUT UPS, each answering SSH through a real sshd) gets a
dead BMC, an uncorrectable ECC entry in a SEL, a UPS on battery with little runtime, a failing disk
(SMART over SSH), a changed serial (over SSH) and, on every server of rack R03, a CPU over its critical
threshold. One ``fleet sweep --facts`` raises exactly the expected events; ``fleet remediate`` (dry run)
plans exactly the expected actions, the rule that would power-cycle all of R03 held to one server by its
per-rack limit; ``--apply`` carries the plan out and the audit log shows each action; once the faults are
cleared, the next sweep resolves every event. The commands under test (sweep, remediate, power, facts) run
as the installed script; the lab, the import and the read-backs run the same CLI in this process.
"""

from __future__ import annotations

import json
import time

import pytest

from fleet.lab.sshlab import ssh_lab_available

from .clihelp import fleet
from .clihelp import fleet_in_process as here
from .peers import missing_peer

POLICY = """\
version: 1
limits: {max_per_rack: 2, max_fleet_percent_per_hour: 100, cooldown: 0s, settle: 10m}
rules:
  - name: unreachable-server
    when: {kind: bmc-unreachable, state: [deployed], for: 0s}
    then:
      ladder: [retry: 1, bmc-reset, outlet-cycle, [quarantine, work-order: rma]]
    limits: {max_per_rack: 1}
  - name: uncorrectable-ecc
    when: {kind: sel-ecc-uncorrectable, state: [deployed]}
    then: [quarantine, work-order: rma]
  - name: failing-disk
    when: {kind: disk-failing, state: [deployed]}
    then: [quarantine, work-order: rma]
  - name: identity-drift
    when: {kind: serial-changed, state: [deployed]}
    then: [quarantine]
  - name: hot-server-cycle
    when: {kind: sensor-critical, state: [deployed], for: 0s}
    then: [power-cycle]
    limits: {max_per_rack: 1}
  - name: ups-low-runtime
    when: {kind: ups-low-runtime}
    then: [soft-shutdown]
    limits: {max_per_rack: 40, cooldown: 0s}
"""

HOT = ("lab1-r03-s01", "lab1-r03-s02", "lab1-r03-s03")
FAULTS = [("lab1-r01-s01", "dead"), ("lab1-r01-s02", "ecc"), ("ups-lab1-r01-s03", "low-battery"),
          ("lab1-r02-s01", "disk-failing"), ("lab1-r02-s02", "serial-changed")] + [(h, "sensor-critical") for h in HOT]
EXPECTED_EVENTS = {
    ("lab1-r01-s01", "bmc-unreachable"), ("lab1-r01-s02", "sel-ecc-uncorrectable"),
    ("ups-lab1-r01-s03", "ups-on-battery"), ("ups-lab1-r01-s03", "ups-low-runtime"),
    ("lab1-r02-s01", "disk-failing"), ("lab1-r02-s02", "serial-changed"),
} | {(h, "sensor-critical") for h in HOT}
EXPECTED_PLAN = {
    ("lab1-r01-s01", "retry"),  # the first rung of the unreachable ladder
    ("lab1-r01-s02", "quarantine"), ("lab1-r01-s02", "work-order:rma"),
    ("lab1-r01-s03", "soft-shutdown"),  # fed by the UPS at low runtime
    ("lab1-r02-s01", "quarantine"), ("lab1-r02-s01", "work-order:rma"),
    ("lab1-r02-s02", "quarantine"),
}


def _events(env: dict[str, str], status: str = "open") -> set[tuple[str, str]]:
    return {(e["target"], e["kind"]) for e in json.loads(here(env, "events", "--status", status, "--json").stdout)}


def test_six_faults_one_sweep_one_plan_applied_within_limits_then_resolved(env, tmp_path) -> None:
    why = ssh_lab_available()
    if why:
        missing_peer(why)
    lab = tmp_path / "lab"
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    started = here(env, "lab", "start", "--dir", str(lab), "--racks", "3", "--servers-per-rack", "3",
                   "--no-rack-power", "--ssh", "--port", "16632")
    assert started.returncode == 0, started.stderr
    try:
        assert here(env, "import", str(lab / "inventory.yaml"), "--secrets", str(lab / "secrets.yaml")
                    ).returncode == 0
        clean = json.loads(fleet(env, "sweep", "--facts", "--json").stdout)
        assert (clean["servers_read"], clean["ups_read"], clean["facts_read"], clean["events_opened"]) == (
            9, 9, 9, [])
        for target, kind in FAULTS:
            done = here(env, "lab", "fault", target, kind, "--dir", str(lab))
            assert done.returncode == 0, done.stderr
        time.sleep(2.5)  # dummy-ups rereads its file every second

        swept = fleet(env, "sweep", "--facts", "--json")
        assert swept.returncode == 1  # the dead BMC could not be read
        assert _events(env) == EXPECTED_EVENTS
        assert set(json.loads(swept.stdout)["errors"]) == {"lab1-r01-s01"}

        dry = json.loads(fleet(env, "remediate", "--policy", str(policy), "--json").stdout)
        planned = {(a["target"], a["action"]) for a in dry["planned"]}
        cycled = {t for t, a in planned if a == "power-cycle"}
        assert len(cycled) == 1 and cycled <= set(HOT)  # a whole rack's worth, held to K=1
        assert planned - {(t, "power-cycle") for t in cycled} == EXPECTED_PLAN
        held = {(a["target"], a["action"]) for a in dry["held"]}
        assert held == {(h, "power-cycle") for h in HOT} - {(t, "power-cycle") for t in cycled}
        assert dry["applied"] == []
        assert json.loads(here(env, "show", "lab1-r01-s02", "--json").stdout)["state"] == "deployed"  # dry run

        applied = json.loads(fleet(env, "remediate", "--policy", str(policy), "--apply", "--json").stdout)["applied"]
        outcome = {(a["target"], a["action"]): a["ok"] for a in applied}
        assert set(outcome) == planned
        assert outcome.pop(("lab1-r01-s01", "retry")) is False  # still dead: the ladder climbs next time
        assert all(outcome.values()), applied
        states = {r["hostname"]: r["state"] for r in json.loads(here(env, "list", "--json").stdout)}
        assert {h for h, s in states.items() if s == "quarantined"} == {"lab1-r01-s02", "lab1-r02-s01",
                                                                        "lab1-r02-s02"}
        power = {r["hostname"]: r["after"] for r in json.loads(fleet(env, "power", "status", "rack=R01", "rack=R03",
                                                                     "--json").stdout)}
        assert power["lab1-r01-s03"] == "off" and all(power[h] == "on" for h in HOT)
        orders = {(o["kind"], o["target"]) for o in json.loads(here(env, "work-orders", "--json").stdout)}
        assert orders == {("rma", "lab1-r01-s02"), ("rma", "lab1-r02-s01")}
        audit = json.loads(here(env, "audit", "--action", "remediate", "--json").stdout)
        assert {(a["targets"][0], a["detail"]["step"]) for a in audit} == planned
        assert any(a["action"] == "power.cycle" and a["targets"] == sorted(cycled)
                   for a in json.loads(here(env, "audit", "--json").stdout))
        jobs = {j["kind"] for j in json.loads(here(env, "jobs", "--json").stdout)}
        assert {"sweep", "remediate", "power"} <= jobs

        for target, kind in FAULTS:
            assert here(env, "lab", "fault", target, kind, "--clear", "--dir", str(lab)).returncode == 0
        time.sleep(2.5)
        final = fleet(env, "sweep", "--facts", "--probe-all", "--json")
        assert final.returncode == 0, final.stdout
        assert _events(env) == set()
        assert _events(env, "resolved") >= EXPECTED_EVENTS
    finally:
        assert here(env, "lab", "stop", "--dir", str(lab)).returncode == 0


def test_asking_for_ssh_hosts_where_sshd_cannot_run_is_refused_before_anything_starts(tmp_path, monkeypatch
                                                                                      ) -> None:
    from fleet.errors import NeedsRoot
    from fleet.lab import datacenter, sshlab

    monkeypatch.setattr(sshlab, "ssh_lab_problem",
                        lambda: NeedsRoot("SSH hosts in the lab need root (test)", remedy="run as root, or --no-ssh"))
    with pytest.raises(NeedsRoot, match="need root"):
        datacenter.start_lab(tmp_path / "lab", racks=1, servers_per_rack=1, ssh=True, port=16633)
    assert not (tmp_path / "lab" / "lab.json").exists() and not (tmp_path / "lab" / "nut").exists()


def test_every_lab_server_of_two_sites_answers_ssh_with_what_its_inventory_record_says(env, tmp_path) -> None:
    why = ssh_lab_available()
    if why:
        missing_peer(why)
    lab = tmp_path / "lab"
    # 18 servers: more than one sshd's 16 listening sockets; two sites interleave the racks.
    assert here(env, "lab", "start", "--dir", str(lab), "--sites", "2", "--racks", "2", "--servers-per-rack", "9",
                "--no-ups", "--no-rack-power", "--ssh", "--port", "16634").returncode == 0
    try:
        assert here(env, "import", str(lab / "inventory.yaml"), "--secrets", str(lab / "secrets.yaml")
                    ).returncode == 0
        got = json.loads(fleet(env, "facts", "tag=lab", "--json").stdout)
        assert len(got["facts"]) == 18 and got["errors"] == {}
        assert all(drift == [] for drift in got["drift"].values()), got["drift"]
        assert got["facts"]["lab2-r02-s09"]["serial"] == json.loads(here(env, "show", "lab2-r02-s09", "--json"
                                                                            ).stdout)["serial"]
    finally:
        assert here(env, "lab", "stop", "--dir", str(lab)).returncode == 0
    assert not list((lab / "ssh").glob("sshd.*.pid"))  # every sshd stopped
