"""The technician's and the importer's commands end to end through the installed `fleet` script.

Steps that only set a test up (credentials for an import, the site and rack a UPS goes in) run the same CLI
in this process (tests/clihelp.py); every command a test is about runs as the script."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .clihelp import fleet
from .clihelp import fleet_in_process as here

REPO = Path(__file__).resolve().parent.parent
CREDS = [("ipmi-default", "ipmi", "admin"), ("ssh-deploy", "ssh", "deploy"), ("snmp-ro", "snmp-v2c", ""),
         ("nut-monitor", "nut", "monitor")]


def _dump(env: dict[str, str]) -> str:
    """Every row of every table, as text: to prove that a refused import changed nothing."""
    import sqlite3

    conn = sqlite3.connect(env["FLEET_DB"])
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
    text = "\n".join(f"{t}: {sorted(map(repr, conn.execute(f'SELECT * FROM {t}')))}" for t in tables)
    conn.close()
    return hashlib.sha256(text.encode()).hexdigest()


def _credentials(env: dict[str, str]) -> None:
    for name, kind, user in CREDS:
        args = ["credentials", "set", name, "--kind", kind, "--password-stdin"] + (["--user", user] if user else [])
        assert here(env, *args, stdin="secret\n").returncode == 0


def test_import_of_a_file_with_one_bad_line_exits_2_names_it_and_changes_nothing(env) -> None:
    _credentials(env)
    assert fleet(env, "import", str(REPO / "examples/example-fleet.yaml")).returncode == 0
    before = _dump(env)
    bad = fleet(env, "import", str(REPO / "examples/example-fleet-bad.yaml"))
    assert bad.returncode == 2
    assert "example-fleet-bad.yaml:24" in bad.stderr and "mac" in bad.stderr
    assert _dump(env) == before
    assert json.loads(fleet(env, "list", "site=tst1", "--count", "--json").stdout) == {"count": 0}


def test_example_fleet_imports_lists_and_round_trips_through_export(env, tmp_path) -> None:
    _credentials(env)
    first = fleet(env, "import", str(REPO / "examples/example-fleet.yaml"), "--json")
    assert first.returncode == 0 and json.loads(first.stdout)["created"]["server"] == 24
    again = json.loads(fleet(env, "import", str(REPO / "examples/example-fleet.yaml"), "--json").stdout)
    assert again["created"] == {} and again["updated"] == {} and again["unchanged"]["server"] == 24
    exported = fleet(env, "export").stdout
    (tmp_path / "export.yaml").write_text(exported)
    assert "secret" not in exported.lower().replace("# credentials are referenced by name only: no secret", "")
    assert fleet(env, "export", "--format", "csv", "--out", str(tmp_path / "csv")).returncode == 0
    assert {p.name for p in (tmp_path / "csv").iterdir()} >= {"servers.csv", "racks.csv", "ups.csv"}
    other = dict(env, FLEET_DB=str(tmp_path / "other.db"))
    assert fleet(other, "init").returncode == 0
    _credentials(other)
    assert fleet(other, "import", str(tmp_path / "csv")).returncode == 0
    assert fleet(other, "export").stdout == exported


def test_a_technician_racks_edits_and_removes_one_server(env) -> None:
    for argv in (["add", "site", "par1", "--name", "Paris 1"], ["add", "pod", "C3", "--site", "par1", "--kind",
                 "container"], ["add", "rack", "R12", "--site", "par1", "--pod", "C3", "--feed", "A:8000"]):
        assert fleet(env, *argv).returncode == 0, argv
    assert fleet(env, "credentials", "set", "bmc", "--kind", "ipmi", "--user", "admin", "--password-stdin",
                 stdin="pw\n").returncode == 0
    added = fleet(env, "add", "server", "web-1", "--rack", "R12", "--position", "10", "--bmc", "127.0.0.5:6230",
                  "--mac", "02:00:00:00:00:01", "--bmc-credential", "bmc", "--profile", "supermicro-x11")
    assert added.returncode == 0, added.stderr
    row = json.loads(fleet(env, "list", "pod=C3", "--json").stdout)[0]
    assert (row["hostname"], row["site"], row["rack"], row["position"], row["bmc"], row["macs"]) == (
        "web-1", "par1", "R12", 10, "127.0.0.5:6230", ["02:00:00:00:00:01"])
    overlap = fleet(env, "add", "server", "web-2", "--rack", "R12", "--position", "10")
    assert overlap.returncode == 2 and "overlaps web-1" in overlap.stderr
    dup_mac = fleet(env, "add", "server", "web-3", "--rack", "R12", "--position", "11", "--mac", "02-00-00-00-00-01")
    assert dup_mac.returncode == 2 and "already belongs to web-1" in dup_mac.stderr
    assert fleet(env, "add", "server", "web$(reboot)", "--rack", "R12", "--position", "12").returncode == 2
    assert fleet(env, "set", "web-1", "serial=ABC123", "tags=gpu,edge", "position=20").returncode == 0
    row = json.loads(fleet(env, "show", "web-1", "--json").stdout)
    assert (row["serial"], row["tags"], row["position"]) == ("ABC123", ["edge", "gpu"], 20)
    assert fleet(env, "set", "web-1", "state=deployed").returncode == 2
    assert fleet(env, "state", "web-1", "commissioning", "--reason", "racked").returncode == 0
    refused = fleet(env, "remove", "web-1")
    assert refused.returncode == 2 and "--force" in refused.stderr
    assert fleet(env, "remove", "web-1", "--force").returncode == 0
    actions = [a["action"] for a in json.loads(fleet(env, "audit", "--json").stdout)]
    assert actions == ["remove", "state", "set.server", "add.server", "credentials.set", "add.rack", "add.pod",
                       "add.site"]
    assert all(a["actor"] == "tech" for a in json.loads(fleet(env, "audit", "--json").stdout))


def test_a_ups_is_added_with_what_it_feeds(env) -> None:
    here(env, "add", "site", "par1")
    here(env, "add", "rack", "R1", "--site", "par1")
    here(env, "add", "server", "web-1", "--rack", "R1", "--position", "1")
    here(env, "credentials", "set", "nut", "--kind", "nut", "--user", "mon", "--password-stdin", stdin="pw\n")
    added = fleet(env, "add", "ups", "ups-web-1", "--nut", "ups@127.0.0.7", "--credential", "nut", "--profile",
                  "nut-dummy", "--kind", "server", "--feeds", "web-1")
    assert added.returncode == 0, added.stderr
    feeds = json.loads(fleet(env, "show", "web-1", "--json").stdout)["power_feeds"]
    assert feeds == [{"psu": 1, "outlet": 0, "pdu": None, "ups": "ups-web-1", "ups_kind": "server", "feed": None}]
    assert "nut_name: ups" in fleet(env, "export").stdout


def test_profiles_can_be_listed_and_shown(env) -> None:
    names = [p["name"] for p in json.loads(fleet(env, "profiles", "list", "--json").stdout)]
    assert {"generic-ipmi", "apc-rpdu", "rackfleet-lab"} <= set(names)
    shown = json.loads(fleet(env, "profiles", "show", "apc-rpdu", "--json").stdout)
    assert shown["kind"] == "pdu" and shown["snmp"]
    assert fleet(env, "profiles", "show", "dell-r460").returncode == 2
