"""A rack UPS carries the servers behind its PDU (issue 12, section 4), end to end on the lab.

The lab's rack UPS (an APC Smart-UPS on snmpsim) feeds a switched PDU whose outlets feed the servers'
PSU 2; no server is on an outlet of the UPS itself. On battery and low, a sweep's finding must plan a
soft shutdown of every server of the rack, least important first, within the per-rack limit. `fleet ups`,
`sweep` and `remediate` run as the installed script; the lab, the import, `set` and `events` the same CLI
in this process.
"""

from __future__ import annotations

import json
import time

from .clihelp import fleet
from .clihelp import fleet_in_process as here

HOSTS = [f"lab1-r01-s0{i}" for i in range(1, 6)]
# The shipped rule (examples/policies/default.yaml), with a per-rack limit small enough to bind.
TIGHT = """version: 1
rules:
  - name: ups-low-runtime
    when:
      kind: ups-low-runtime
    then: [soft-shutdown]
    limits:
      max_per_rack: 2
      max_fleet_percent_per_hour: 100
      cooldown: 0s
"""


def test_a_rack_ups_on_low_battery_shuts_down_its_racks_servers_through_the_pdu(env, tmp_path) -> None:
    lab = tmp_path / "lab"
    started = here(env, "lab", "start", "--dir", str(lab), "--racks", "1", "--servers-per-rack", "5",
                   "--port", "16652")
    assert started.returncode == 0, started.stderr
    try:
        assert here(env, "import", str(lab / "inventory.yaml"), "--secrets", str(lab / "secrets.yaml")
                    ).returncode == 0
        # Priorities: the lab gives s01 and s05 50, the others 100; s03 is made the least important.
        assert here(env, "set", "lab1-r01-s03", "priority=900").returncode == 0
        status = {u["name"]: u for u in json.loads(fleet(env, "ups", "status", "--json").stdout)}
        assert status["lab-ups-001"]["feeds"] == HOSTS  # through lab-pdu-001: it has no server outlet itself
        assert status["ups-lab1-r01-s02"]["feeds"] == ["lab1-r01-s02"]
        on_path = json.loads(fleet(env, "ups", "status", "server=lab1-r01-s04", "--json").stdout)
        assert [u["name"] for u in on_path] == ["lab-ups-001", "ups-lab1-r01-s04"]

        assert here(env, "lab", "fault", "lab-ups-001", "low-battery", "--dir", str(lab)).returncode == 0
        time.sleep(1.0)
        assert fleet(env, "sweep").returncode in (0, 1)
        events = json.loads(here(env, "events", "--json").stdout)
        assert ("lab-ups-001", "ups-low-runtime") in {(e["target"], e["kind"]) for e in events}

        order = ["lab1-r01-s03", "lab1-r01-s02", "lab1-r01-s04", "lab1-r01-s01", "lab1-r01-s05"]
        shipped = json.loads(fleet(env, "remediate", "--json").stdout)  # examples/policies/default.yaml
        assert [(a["target"], a["action"]) for a in shipped["planned"]] == [(h, "soft-shutdown") for h in order]
        assert all("fed by lab-ups-001" in a["reason"] for a in shipped["planned"])

        policy = tmp_path / "tight.yaml"
        policy.write_text(TIGHT)
        tight = json.loads(fleet(env, "remediate", "--policy", str(policy), "--json").stdout)
        assert [(a["target"], a["action"]) for a in tight["planned"]] == [(h, "soft-shutdown") for h in order[:2]]
        assert [(h["target"], h["action"], h["limit"]) for h in tight["held"]] == [
            (h, "soft-shutdown", "max_per_rack") for h in order[2:]]
    finally:
        assert here(env, "lab", "stop", "--dir", str(lab)).returncode == 0
