"""The `fleet` command as a person or a script uses it: output, JSON keys, exit codes, secrecy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fleet.cli import main
from inventory.db import make_engine

from .factory import Spec, build

SECRET = "Sup3r-s3cret-PW"
LIST_KEYS = {"hostname", "site", "pod", "rack", "position", "height", "state", "profile", "serial", "asset_tag",
             "bmc", "macs", "primary_ip", "tags", "priority", "power", "health"}


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "fleet.db"
    monkeypatch.setenv("FLEET_DB", str(path))
    assert main(["init"]) == 0
    engine = make_engine(str(path))
    build(engine, [Spec("web-1", rack="R12", state="deployed", tags=["gpu"], macs=["02:00:00:00:00:01"]),
                   Spec("web-2", rack="R12", position=2)])
    engine.dispose()
    return path


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_json_gives_one_object_per_server_with_the_documented_keys(db, capsys) -> None:
    code, out, _ = run(capsys, "list", "--json")
    assert code == 0
    rows = json.loads(out)
    assert [r["hostname"] for r in rows] == ["web-1", "web-2"]
    assert all(set(r) >= LIST_KEYS for r in rows)
    assert rows[0]["macs"] == ["02:00:00:00:00:01"] and rows[0]["bmc"] == "127.0.0.1:623"
    assert rows[0]["rack"] == "R12" and rows[0]["site"] == "par1" and rows[0]["pod"] == "C1"


def test_global_options_work_before_the_command_too(db, capsys) -> None:
    code, out, _ = run(capsys, "--json", "--db", str(db), "list", "tag=gpu")
    assert code == 0 and [r["hostname"] for r in json.loads(out)] == ["web-1"]


def test_list_prints_an_aligned_table_for_people(db, capsys) -> None:
    code, out, _ = run(capsys, "list", "rack=R12")
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:4] == ["HOST", "SITE", "POD", "RACK"]
    assert lines[1].index("par1") == lines[2].index("par1")  # columns line up


def test_count_and_paging(db, capsys) -> None:
    assert json.loads(run(capsys, "list", "--count", "--json")[1]) == {"count": 2}
    page = json.loads(run(capsys, "list", "--after", "web-1", "--limit", "5", "--json")[1])
    assert [r["hostname"] for r in page] == ["web-2"]


def test_state_moves_and_illegal_moves_exit_2(db, capsys) -> None:
    assert run(capsys, "state", "web-2", "commissioning", "--reason", "racked")[0] == 0
    code, _, err = run(capsys, "state", "web-2", "deployed", "--reason", "hurry")
    assert code == 2 and "cannot move from commissioning to deployed" in err
    detail = json.loads(run(capsys, "show", "web-2", "--json")[1])
    assert detail["state"] == "commissioning"
    assert detail["history"][0]["reason"] == "racked" and detail["history"][0]["actor"] == "tester"


def test_bad_usage_and_bad_input_exit_2(db, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["list", "--limit", "many"])
    assert exc.value.code == 2
    assert run(capsys, "list", "colour=red")[0] == 2
    assert run(capsys, "show", "nope-1")[0] == 2


def test_a_missing_inventory_says_how_to_make_one(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("FLEET_DB", str(tmp_path / "none.db"))
    code, _, err = run(capsys, "list")
    assert code == 2 and "fleet init" in err


def test_init_in_a_folder_that_does_not_exist_is_one_line_with_the_remedy(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("FLEET_KEY_FILE", str(tmp_path / "k.key"))
    code, _, err = run(capsys, "init", "--db", str(tmp_path / "no" / "such" / "fleet.db"))
    assert code == 2 and "internal error" not in err
    assert "mkdir -p" in err and len(err.strip().splitlines()) == 1


def test_credential_secrets_never_reach_any_output(db, capsys, monkeypatch) -> None:
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO(SECRET + "\n"))
    outputs = [run(capsys, "credentials", "set", "bmc", "--kind", "ipmi", "--user", "admin", "--password-stdin")]
    outputs.append(run(capsys, "credentials", "assign", "bmc", "rack=R12"))
    for argv in (["credentials", "list"], ["credentials", "list", "--json"], ["show", "web-1", "--json"],
                 ["audit", "--json"], ["audit"], ["list", "--json"]):
        outputs.append(run(capsys, *argv))
    assert all(code == 0 for code, _, _ in outputs)
    for _, out, err in outputs:
        assert SECRET not in out and SECRET not in err
    assert json.loads(run(capsys, "show", "web-1", "--json")[1])["bmc_credential"] == "bmc"
    assert SECRET.encode() not in db.read_bytes()


def test_a_secret_is_never_taken_as_an_argument(db, capsys, monkeypatch) -> None:
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # not a terminal, and no --password-stdin
    code, _, err = run(capsys, "credentials", "set", "bmc", "--kind", "ipmi", "--user", "admin")
    assert code == 2 and "--password-stdin" in err


def test_the_installed_console_script_runs_and_returns_exit_codes(db) -> None:
    fleet_bin = Path(sys.executable).with_name("fleet")
    ok = subprocess.run([str(fleet_bin), "list", "--count", "--json"], capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and json.loads(ok.stdout) == {"count": 2}
    bad = subprocess.run([str(fleet_bin), "frobnicate"], capture_output=True, text=True, check=False)
    assert bad.returncode == 2
