"""Sweeps on a schedule: one at a time, SIGTERM finishes cleanly, a briefly locked database loses nothing.

`fleet sweep` runs as the installed script; the lab, the import and the audit polls run the same CLI in this
process (tests/clihelp.py).
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import threading
import time

import pytest

from fleet import Fleet
from fleet.errors import InputError
from fleet.workflows.schedule import crontab_text, parse_interval, sweep_lock, systemd_units

from .clihelp import FLEET, fleet
from .clihelp import fleet_in_process as here


@pytest.fixture
def lab_env(env, tmp_path):
    lab = tmp_path / "lab"
    assert here(env, "lab", "start", "--dir", str(lab), "--racks", "1", "--servers-per-rack", "2", "--no-ups",
                "--no-rack-power", "--port", "16629").returncode == 0
    try:
        assert here(env, "import", str(lab / "inventory.yaml"), "--secrets", str(lab / "secrets.yaml")
                    ).returncode == 0
        yield env
    finally:
        here(env, "lab", "stop", "--dir", str(lab))


def test_intervals_parse_and_refuse_nonsense() -> None:
    assert (parse_interval("30s"), parse_interval("5m"), parse_interval("1h"), parse_interval("90")) == (
        30, 300, 3600, 90)
    for bad in ("5x", "", "1s", "-5m"):
        with pytest.raises(InputError):
            parse_interval(bad)


def test_schedule_texts_name_the_interval_and_the_inventory() -> None:
    unit = systemd_units(every="5m", db="/var/lib/rackfleet/fleet.db")
    assert "sweep --every 5m" in unit and "FLEET_DB=/var/lib/rackfleet/fleet.db" in unit and "[Install]" in unit
    assert crontab_text(every="10m").startswith("# Rackfleet") and "*/10 * * * *" in crontab_text(every="10m")


def test_a_sweep_finding_another_running_is_skipped_with_exit_75(lab_env) -> None:
    with Fleet.open(lab_env["FLEET_DB"]) as f, sweep_lock(f.ctx) as held:
        assert held
        done = fleet(lab_env, "sweep")
    assert done.returncode == 75 and "another sweep" in done.stderr
    assert fleet(lab_env, "sweep").returncode == 0  # and runs once the lock is free


def test_sweep_every_runs_on_its_cadence_and_sigterm_finishes_cleanly(lab_env) -> None:
    proc = subprocess.Popen([FLEET, "sweep", "--every", "10s", "--json"], env=lab_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            audit = json.loads(here(lab_env, "audit", "--action", "sweep", "--json").stdout)
            if audit:
                break
            time.sleep(0.5)
        assert audit, "no sweep ran"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert json.loads(out.split("\n}\n")[0] + "\n}")["servers_read"] == 2


def test_a_database_locked_past_its_busy_timeout_delays_the_sweep_but_loses_no_reading(lab_env) -> None:
    db = lab_env["FLEET_DB"]
    before = sqlite3.connect(db).execute("SELECT count(*) FROM readings").fetchone()[0]
    locker = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    locker.execute("BEGIN EXCLUSIVE")
    timer = threading.Timer(7.0, lambda: locker.execute("COMMIT"))  # longer than the 5 s busy timeout
    timer.start()
    try:
        done = fleet(lab_env, "sweep", "--json", timeout=120)
    finally:
        timer.join()
        locker.close()
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    after = sqlite3.connect(db).execute("SELECT count(*) FROM readings").fetchone()[0]
    assert after - before == result["readings"] > 0


def _documents(text: str) -> list[dict]:
    decoder, docs, at = json.JSONDecoder(), [], 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at >= len(text):
            return docs
        doc, at = decoder.raw_decode(text, at)
        docs.append(doc)


def test_sweep_every_survives_a_hung_bmc_and_a_locked_database_without_losing_a_reading(lab_env, tmp_path) -> None:
    lab = tmp_path / "lab"
    assert here(lab_env, "lab", "fault", "lab1-r01-s01", "slow", "--value", "60000", "--dir", str(lab)
                ).returncode == 0  # answers after a minute: past every deadline
    db = lab_env["FLEET_DB"]
    before = sqlite3.connect(db).execute("SELECT count(*) FROM readings").fetchone()[0]
    proc = subprocess.Popen([FLEET, "sweep", "--every", "10s", "--json"], env=lab_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    locker = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    try:
        time.sleep(3.0)
        locker.execute("BEGIN EXCLUSIVE")  # held across the first sweep's write, past the 5 s busy timeout
        time.sleep(7.0)
        locker.execute("COMMIT")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            if len(json.loads(here(lab_env, "audit", "--action", "sweep", "--json").stdout)) >= 3:
                break
            time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        locker.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    runs = _documents(out)
    assert len(runs) >= 3, err
    assert all(r["servers_read"] == 1 for r in runs)  # the healthy one, every time
    assert "lab1-r01-s01" in runs[0]["errors"]  # the hung one cost its deadline, then its breaker held it back
    after = sqlite3.connect(db).execute("SELECT count(*) FROM readings").fetchone()[0]
    assert after - before == sum(r["readings"] for r in runs) > 0
