"""Free text never carries a terminal's control characters, in or out.

`fleet state --reason` took ESC sequences that `fleet show` printed raw, and bidi overrides (U+202E)
passed `fleet set` and imports. Every entry point now refuses them (naming field, position and
code point, never echoing the character) and every text output shows what is stored escaped.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from fleet import Fleet
from fleet.cli import main
from fleet.errors import ValidationError
from inventory.db import make_engine
from inventory.validate import check_free_text, check_text, visible

from .factory import Spec, build

ESC = "\x1b[2J\x1b[31mpwned"  # clear the screen, then red
RLO = "evil\u202etxt.exe"  # shows as "evilexe.txt"
PERSIAN = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"  # a ZWNJ inside a word
HOSTILE = [ESC, RLO]


@pytest.mark.parametrize(("text", "code"), [
    ("a\x1bb", "U+001B"), ("a\x00b", "U+0000"), ("a\nb", "U+000A"), ("a\rb", "U+000D"), ("a\x7fb", "U+007F"),
    ("a\x9bb", "U+009B"), ("a\u202eb", "U+202E"), ("a\u202ab", "U+202A"), ("a\u2066b", "U+2066"),
    ("a\u2069b", "U+2069"), ("a\u200eb", "U+200E"), ("a\u200fb", "U+200F"), ("a\u061cb", "U+061C"),
    ("a\u200bb", "U+200B"), ("a\ufeffb", "U+FEFF"), ("a\u2028b", "U+2028"), ("a\u0378b", "U+0378"),
    ("\u200dab", "U+200D"), ("ab \u200c", "U+200C"),
])
def test_free_text_refuses_controls_bidi_and_format_characters_naming_field_position_and_code_point(
        text: str, code: str) -> None:
    with pytest.raises(ValidationError) as info:
        check_free_text(text, "reason")
    message = str(info.value)
    assert message.startswith("reason: character ") and code in message
    assert text.strip()[1] not in message or code in ("U+200D", "U+200C")  # never the raw character
    assert all(ch.isprintable() for ch in message)


@pytest.mark.parametrize("text", ["plain words", "tab\tinside", "café crème", "Zürich 3/4", "日本語のラック",
                                  PERSIAN, "family \U0001F468\u200d\U0001F469", "°C ≥ 40"])
def test_free_text_keeps_ordinary_text_tab_and_joiners_inside_words(text: str) -> None:
    assert check_free_text(f"  {text} ", "description") == text


def test_free_text_caps_its_length() -> None:
    assert check_free_text("x" * 256, "reason") == "x" * 256
    with pytest.raises(ValidationError, match="longer than 256"):
        check_free_text("x" * 257, "reason")


def test_config_safe_text_applies_the_free_text_rule_first() -> None:
    with pytest.raises(ValidationError, match=r"U\+202E"):
        check_text(RLO, "serial", 64)


def test_visible_escapes_what_the_rule_refuses_and_nothing_else() -> None:
    assert visible(ESC) == "\\x1b[2J\\x1b[31mpwned"
    assert visible(RLO) == "evil\\u202etxt.exe"
    assert visible("a\x9bb\u2066c") == "a\\x9bb\\u2066c"
    assert visible(f"café\t{PERSIAN}") == f"café\t{PERSIAN}"


# -- every entry point refuses, and writes nothing ---------------------------------------------------------

@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "fleet.db"
    monkeypatch.setenv("FLEET_DB", str(path))
    assert main(["init"]) == 0
    engine = make_engine(str(path))
    build(engine, [Spec("web-1", rack="R12", state="ready"), Spec("web-2", rack="R12", position=2)])
    engine.dispose()
    return path


def _snapshot(db: Path) -> dict[str, list]:
    with sqlite3.connect(db) as conn:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY id").fetchall()
                for t in ("servers", "state_changes", "audit", "ups", "racks", "sites", "credentials")}


def _refused(capsys: pytest.CaptureFixture, db: Path, argv: list[str], code: str) -> None:
    before = _snapshot(db)
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 2, err
    assert code in err and "\x1b" not in err + out and "\u202e" not in err + out, err
    assert _snapshot(db) == before


@pytest.mark.parametrize(("text", "code"), [(ESC, "U+001B"), (RLO, "U+202E")])
def test_the_cli_refuses_hostile_text_in_state_set_add_and_credentials(db, capsys, monkeypatch: pytest.MonkeyPatch,
                                                                       text: str, code: str) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("secret-pw\n"))
    _refused(capsys, db, ["state", "web-1", "maintenance", "--reason", text], code)
    _refused(capsys, db, ["set", "web-1", f"description={text}"], code)
    _refused(capsys, db, ["set", "web-1", f"serial={text}"], code)
    _refused(capsys, db, ["add", "server", "web-3", "--rack", "R12", "--position", "5", "--serial", text], code)
    _refused(capsys, db, ["add", "site", "lon1", "--description", text], code)
    _refused(capsys, db, ["credentials", "set", "c1", "--kind", "ipmi", "--user", text, "--password-stdin"], code)


@pytest.mark.parametrize(("text", "code"), [(ESC, "U+001B"), (RLO, "U+202E")])
def test_imports_refuse_hostile_text_in_yaml_csv_and_netbox(db, capsys, tmp_path: Path, text: str,
                                                            code: str) -> None:
    yaml_file = tmp_path / "x.yaml"
    yaml_file.write_text(json.dumps({"version": 1, "sites": [{"code": "lon1", "description": text}]}))
    _refused(capsys, db, ["import", str(yaml_file)], code)
    yaml_file.write_text(json.dumps({"version": 1, "ups": [{"name": "u1", "site": "par1", "host": "127.0.0.9",
                                                             "description": "ok", "outlets": [
                                                                 {"number": 1, "name": text}]}]}))
    _refused(capsys, db, ["import", str(yaml_file)], code)
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    (csv_dir / "servers.csv").write_text(f"hostname,site,rack,position,asset_tag\nweb-9,par1,R12,9,{text}\n")
    _refused(capsys, db, ["import", str(csv_dir / "servers.csv")], code)
    devices = json.loads((Path(__file__).parents[1] / "examples/netbox/devices.json").read_text())
    devices["results"][0]["description"] = text
    nb = tmp_path / "devices.json"
    nb.write_text(json.dumps(devices))
    _refused(capsys, db, ["import", "--netbox", str(nb)], code)


@pytest.mark.parametrize(("text", "code"), [(ESC, "U+001B"), (RLO, "U+202E")])
def test_the_library_refuses_hostile_text_as_the_tui_and_scripts_call_it(db, text: str, code: str) -> None:
    """The TUI's quarantine reason and edits go through these same Fleet methods."""
    before = _snapshot(db)
    with Fleet.open(str(db)) as f:
        for call in (lambda: f.set_state("web-1", "quarantined", reason=text),
                     lambda: f.set("web-1", {"description": text}),
                     lambda: f.add("rack", {"site": "par1", "name": "R99", "description": text}),
                     lambda: f.set_credential("c1", "ipmi", "pw", username=text),
                     lambda: f.set_threshold("web-1", text, {"warning_high": 50.0})):
            with pytest.raises(ValidationError, match=code.replace("+", r"\+")):
                call()
        assert f.move_to("web-1", "maintenance", reason=f"workflow: device said {text}")  # escaped, not refused
        assert f.server("web-1").state_reason == f"workflow: device said {visible(text)}"
    after = _snapshot(db)
    assert after["audit"][:len(before["audit"])] == before["audit"]
    assert len(after["state_changes"]) == len(before["state_changes"]) + 1


# -- text stored before this rule prints escaped -----------------------------------------------------------

def test_a_legacy_row_with_control_characters_prints_escaped_in_show_list_and_audit(db, capsys) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE servers SET description = ?, state_reason = ?, serial = ? WHERE hostname = 'web-1'",
                     (ESC, RLO, "[link=http://x]y[/link]"))
        conn.execute("INSERT INTO audit (ts, actor, action, targets, target_count, result, detail) "
                     "VALUES ('2026-01-01 00:00:00', ?, 'set.server', ?, 1, 'ok', ?)",
                     (f"mallory{ESC}", json.dumps([f"web-1{RLO}"]), json.dumps({"changes": {"description": ESC}})))
    for argv in (["show", "web-1"], ["list"], ["audit"]):
        assert main(argv) == 0
        out, _err = capsys.readouterr()
        assert "\x1b" not in out and "\u202e" not in out, argv
        if argv[0] == "show":
            assert "\\x1b[2J\\x1b[31mpwned" in out and "evil\\u202etxt.exe" in out
            assert "[link=http://x]y[/link]" in out  # stored text is never read as Rich markup
        if argv[0] == "audit":
            assert "mallory\\x1b[2J" in out and "web-1evil\\u202etxt.exe" in out
    assert main(["show", "web-1", "--json"]) == 0
    out, _ = capsys.readouterr()
    assert "\x1b" not in out and "\u202e" not in out and json.loads(out)["description"] == ESC


def test_the_tui_shows_legacy_control_characters_escaped_in_tables_and_the_server_view(tmp_path: Path) -> None:
    import asyncio

    from sqlalchemy import insert, update

    from inventory.db import write_connection
    from inventory.models import Audit, Server, utcnow
    from tui.screens import AuditScreen, ServerScreen

    from .tui_factory import make_app, make_fleet, screen_text, settle

    f = make_fleet(tmp_path)
    with write_connection(f.engine) as conn:
        conn.execute(update(Server).where(Server.hostname == "db01.par1")
                     .values(serial="[link=http://x]SN[/link]", asset_tag=ESC, state_reason=RLO))
        conn.execute(insert(Audit).values(ts=utcnow(), actor=f"mallory{ESC}", action="set.server",
                                          targets=[f"db01{RLO}"], target_count=1, result="ok", detail={}))

    async def go() -> tuple[str, str]:
        app = make_app(f)
        async with app.run_test(size=(150, 45)) as pilot:
            await settle(pilot)
            app.push_screen(ServerScreen("db01.par1"))
            await settle(pilot)
            server_view = screen_text(app)
            await pilot.press("escape", "7")
            await settle(pilot)
            assert isinstance(app.screen, AuditScreen)
            return server_view, screen_text(app)

    try:
        server_view, audit_view = asyncio.run(go())
    finally:
        f.close()
    for text in (server_view, audit_view):
        assert "\x1b" not in text and "\u202e" not in text
    assert "\\x1b[2J" in server_view and "evil\\u202etxt.exe" in server_view
    assert "[link=http://x]SN[/link]" in server_view  # not read as markup
    assert "mallory\\x1b[2J" in audit_view and "db01evil\\u202etxt.exe" in audit_view
