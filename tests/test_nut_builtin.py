"""The lab's NUT stand-in (fleet.lab.nutserve) against NUT's own upsd + dummy-ups, so it cannot drift.

The same `.dev` states served both ways must give `fleet ups status --json` the same answers (every
field), upsc the same variables, and raw protocol requests the same answers (errors included); and the
lab must come up, import and sweep with NUT's programs hidden (FLEET_LAB_NUT=auto falls back). `ups status`,
`sweep` and the fallback's `lab start`/`lab stop` run as the installed script; the other steps run the same
CLI in this process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.errors import MissingDependency, PortInUse
from fleet.lab import nutlab
from fleet.lab._proc import environ_has, pid_alive

from .clihelp import fleet
from .clihelp import fleet_in_process as here
from .nutpeer import nut_available
from .peers import missing_peer

SERVERS = ["web01", "web02", "db01", "db02", "db03"]
FAULTS = {"web01": "normal", "web02": "on-battery", "db01": "low-battery", "db02": "replace-battery"}
BMC_PORTS = {"upsd": 16721, "builtin": 16722}


def _need_nut() -> None:
    if not nut_available():
        missing_peer("NUT upsd/dummy-ups/upsc not installed (Debian nut-server nut-client)")


def _ask(port: int, lines: list[str]) -> list[list[str]]:
    """Each request's answer lines (a whole BEGIN LIST block for lists), over one connection."""
    answers = []
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        f = s.makefile("rwb")
        for line in lines:
            f.write(line.encode() + b"\n")
            f.flush()
            got = [f.readline().decode().rstrip("\n")]
            if got[0].startswith("BEGIN LIST"):
                while not got[-1].startswith("END LIST"):
                    got.append(f.readline().decode().rstrip("\n"))
            answers.append(got)
    return answers


def _upsc(name: str, port: int) -> dict[str, str]:
    out = subprocess.run(["upsc", f"{name}@127.0.0.1:{port}"], capture_output=True, text=True, timeout=10).stdout
    return dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)


# Variables that name the driver's build or its file path: the only ones allowed to differ.
_OWN = ("driver.version", "driver.parameter.port")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, nutlab.NutLab]]:
    _need_nut()
    labs: dict[str, nutlab.NutLab] = {}
    try:
        for mode in ("upsd", "builtin"):
            labs[mode] = nutlab.start_nut_lab(tmp_path_factory.mktemp(mode), SERVERS, mode=mode, password="s3cret")
        yield labs
    finally:
        for lab in labs.values():
            nutlab.stop_nut_lab(lab.directory)


def test_the_stand_in_answers_protocol_requests_as_upsd_does(pair: dict[str, nutlab.NutLab]) -> None:
    requests = ["NETVER", "PROTVER", "HELP", "LIST UPS", "LIST VAR db03", "LIST RW db03", "LIST CMD db03",
                "LIST ENUM db03 ups.status", "LIST RANGE db03 ups.status", "LIST CLIENT db03",
                "GET VAR db03 ups.status", "GET VAR db03 no.such.var", "GET VAR nope ups.status",
                "GET UPSDESC db03", "GET UPSDESC nope", "GET NUMLOGINS db03", "GET DESC db03 ups.status",
                "GET TYPE db03 battery.charge", "GET TYPE db03 ups.status", "GET TYPE db03 nope",
                "GET CMDDESC db03 load.off", "LIST VAR nope", "LIST CMD nope", "LIST", "GET VAR db03", "GET",
                "FOO", "GET TRACKING", "INSTCMD db03 load.off", "SET VAR db03 ups.status OB",
                "SET TRACKING ON", "LOGIN db03", "USERNAME fleet", "USERNAME again",
                "PASSWORD wrong", "PASSWORD again", "INSTCMD db03 load.off", "SET VAR db03 ups.load 1",
                "SET VAR nope ups.load 1", "INSTCMD db03 beeper.mute", "LOGIN db03", "LOGOUT"]
    good = ["USERNAME fleet", "PASSWORD s3cret", "SET TRACKING ON", "GET TRACKING", "SET VAR db03 no.such 1",
            "SET VAR db03 driver.name x", "SET VAR db03 device.type x", "INSTCMD db03 beeper.mute",
            "GET TRACKING 00000000-0000-0000-0000-000000000000", "LOGIN db03", "SET TRACKING OFF",
            "INSTCMD db03 load.off", "SET VAR db03 battery.charge 99", "LOGOUT"]
    for lines in (requests, good):
        upsd, ours = (_ask(pair[m].port, lines) for m in ("upsd", "builtin"))
        for line, a, b in zip(lines, upsd, ours, strict=True):
            if line.startswith(("LIST VAR", "LIST RW")):
                a = [x for x in a if not any(f" {v} " in x for v in _OWN)]
                b = [x for x in b if not any(f" {v} " in x for v in _OWN)]
            assert b == a, f"{line!r}: upsd answers {a}, the stand-in {b}"


def test_commands_with_tracking_end_as_upsd_says_for_dummy_ups(pair: dict[str, nutlab.NutLab]) -> None:
    """dummy-ups lists load.off and does not implement it: tracking goes PENDING, then ERR UNKNOWN."""
    for mode in ("upsd", "builtin"):
        with socket.create_connection(("127.0.0.1", pair[mode].port), timeout=5) as s:
            f = s.makefile("rwb")

            def ask(line: str, f=f) -> str:
                f.write(line.encode() + b"\n")
                f.flush()
                return f.readline().decode().strip()

            assert [ask("USERNAME fleet"), ask("PASSWORD s3cret"), ask("SET TRACKING ON")] == ["OK"] * 3
            ident = ask("INSTCMD db03 load.off").split()
            assert ident[:2] == ["OK", "TRACKING"], (mode, ident)
            deadline = time.monotonic() + 10
            while (verdict := ask(f"GET TRACKING {ident[2]}")) == "PENDING":
                assert time.monotonic() < deadline, mode
                time.sleep(0.1)
            assert verdict == "ERR UNKNOWN", mode


def test_the_same_dev_states_give_ups_status_the_same_answers(tmp_path: Path) -> None:
    """Two labs, one on upsd + dummy-ups, one on the stand-in; the same faults; `fleet ups status --json`
    equal field by field, and upsc equal variable by variable."""
    _need_nut()
    envs, labs = {}, {}
    try:
        for mode in ("upsd", "builtin"):
            lab = tmp_path / mode / "lab"
            env = dict(os.environ, FLEET_DB=str(tmp_path / mode / "fleet.db"),
                       FLEET_KEY_FILE=str(tmp_path / mode / "k"), FLEET_LAB_NUT=mode, COLUMNS="200")
            envs[mode], labs[mode] = env, lab
            done = here(env, "lab", "start", "--dir", str(lab), "--racks", "1", "--servers-per-rack", "5",
                        "--port", str(BMC_PORTS[mode]), "--no-rack-power", "--no-ssh")
            assert done.returncode == 0, done.stderr
            status = json.loads(here(env, "lab", "status", "--dir", str(lab), "--json").stdout)
            assert status["nut_server"] == mode
            assert here(env, "init").returncode == 0
            done = here(env, "import", str(lab / "inventory.yaml"), "--secrets", str(lab / "secrets.yaml"))
            assert done.returncode == 0, done.stderr
        for mode in ("upsd", "builtin"):
            for n, fault in enumerate(FAULTS.values()):
                done = here(envs[mode], "lab", "fault", f"ups-lab1-r01-s0{n + 1}", fault, "--dir", str(labs[mode]))
                assert done.returncode == 0, done.stderr
        # on-battery falls step by step (TIMER lines): compare once both have played the whole file.
        time.sleep(nutlab.STEP_S * 7 + 2)
        answers = {}
        for mode in ("upsd", "builtin"):
            done = fleet(envs[mode], "ups", "status", "--json")
            assert done.returncode == 0, done.stderr
            answers[mode] = json.loads(done.stdout)
        assert [u["status"] for u in answers["builtin"]] == [
            "online", "on-battery", "on-battery low-battery", "online replace-battery", "online"]
        assert answers["builtin"][1]["charge_pct"] == 40.0 and answers["builtin"][1]["runtime_s"] == 600.0
        assert answers["builtin"] == answers["upsd"]  # every field of every UPS
        ports = {m: nutlab.load_nut_lab(labs[m] / "nut").port for m in labs}
        for n in range(1, 6):
            name = f"lab1-r01-s0{n}"
            a, b = (_upsc(name, ports[m]) for m in ("upsd", "builtin"))
            assert a and {k: v for k, v in b.items() if k not in _OWN} == {k: v for k, v in a.items() if k not in _OWN}
    finally:
        for mode, lab in labs.items():
            if (lab / "lab.json").exists():
                here(envs[mode], "lab", "stop", "--dir", str(lab))


def test_without_nut_the_lab_falls_back_and_a_sweep_reads_every_ups(tmp_path: Path) -> None:
    """NUT's programs hidden (no libexec folder, a PATH without them): auto picks the stand-in; lab start,
    import and sweep give readings of every per-server UPS, a fault included; lab stop ends it by PID."""
    lab = tmp_path / "lab"
    env = dict(os.environ, FLEET_DB=str(tmp_path / "fleet.db"), FLEET_KEY_FILE=str(tmp_path / "k"),
               FLEET_LAB_NUT="auto", FLEET_NUT_LIBEXEC=str(tmp_path / "no-nut"),
               PATH=str(Path(sys.executable).parent))
    done = fleet(env, "lab", "start", "--dir", str(lab), "--racks", "1", "--servers-per-rack", "3", "--port", "16723",
                 "--no-ssh", timeout=180)
    assert done.returncode == 0, done.stderr
    try:
        assert "the lab's NUT stand-in" in done.stdout + done.stderr
        nut = nutlab.load_nut_lab(lab / "nut")
        assert nut.server == "builtin" and nut.driver_pids == {}
        assert environ_has(nut.upsd_pid, f"NUT_CONFPATH={lab.resolve() / 'nut' / 'conf'}".encode())
        assert here(env, "init").returncode == 0
        assert here(env, "import", str(lab / "inventory.yaml"), "--secrets", str(lab / "secrets.yaml")).returncode == 0
        assert here(env, "lab", "fault", "ups-lab1-r01-s02", "low-battery", "--dir", str(lab)).returncode == 0
        time.sleep(1.5)  # the stand-in rereads a changed .dev file every second, as dummy-ups does
        sweep = fleet(env, "sweep", timeout=180)
        assert sweep.returncode == 0, sweep.stdout + sweep.stderr
        ups = {u["name"]: u for u in json.loads(fleet(env, "ups", "status", "--json").stdout)}
        server_ups = {n: u for n, u in ups.items() if u["protocol"] == "nut"}
        assert len(server_ups) == 3 and all(u["ok"] for u in server_ups.values()), server_ups
        assert server_ups["ups-lab1-r01-s02"]["status"] == "on-battery low-battery"
        assert server_ups["ups-lab1-r01-s01"]["charge_pct"] == 100.0
        events = here(env, "events").stdout
        assert any("ups-lab1-r01-s02" in line and "ups-on-battery" in line for line in events.splitlines()), events
    finally:
        stop = fleet(env, "lab", "stop", "--dir", str(lab), timeout=120)
    assert stop.returncode == 0, stop.stderr
    assert not pid_alive(nut.upsd_pid) or not environ_has(nut.upsd_pid, str(lab.resolve()).encode())


def test_asking_for_upsd_without_nut_or_on_a_taken_port_says_what_to_do(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_NUT_LIBEXEC", str(tmp_path / "none"))
    monkeypatch.setenv("PATH", str(tmp_path / "none"))
    assert nutlab.nut_server_mode("auto") == ("builtin", {})
    with pytest.raises(MissingDependency, match=r"upsd and dummy-ups not found.*FLEET_LAB_NUT=builtin"):
        nutlab.start_nut_lab(tmp_path / "a", 1, mode="upsd")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(PortInUse, match="in use"):
            nutlab.start_nut_lab(tmp_path / "b", 1, mode="builtin", port=taken.getsockname()[1])
    assert not (tmp_path / "b" / "nutlab.json").exists()
