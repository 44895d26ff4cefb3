"""Prometheus metrics: values and labels read back with the client's own parser; textfile; --listen."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, insert, select

from fleet import Fleet
from fleet.cli.metrics_cmds import parse_listen
from fleet.errors import InputError
from fleet.service.metrics import FleetCollector, render
from inventory.models import Event, Server, ServerState, Site, Ups, UpsState

from .clihelp import FLEET, fleet
from .factory import Spec, build

NOW = datetime(2026, 11, 1, 12, 0, 0, tzinfo=UTC)


def _populate(engine: Engine) -> None:
    build(engine, [Spec("a1", site="par1", rack="R1", state="deployed"),
                   Spec("a2", site="par1", rack="R1", position=2, state="deployed"),
                   Spec("a3", site="par1", rack="R1", position=3, state="ready"),
                   Spec("b1", site="ams1", rack="R9", state="deployed"),
                   Spec("b2", site="ams1", rack="R9", position=2, state="new")])  # b2: never swept
    with engine.begin() as conn:
        ids = {h: i for h, i in conn.execute(select(Server.hostname, Server.id))}
        sites = {c: i for c, i in conn.execute(select(Site.code, Site.id))}
        conn.execute(insert(ServerState), [
            {"server_id": ids["a1"], "power": "on", "health": "ok", "bmc_reachable": True,
             "updated_at": NOW - timedelta(seconds=60), "last_seen": NOW, "last_error": "", "summary": {}},
            {"server_id": ids["a2"], "power": "on", "health": "ok", "bmc_reachable": True,
             "updated_at": NOW - timedelta(seconds=60), "last_seen": NOW, "last_error": "", "summary": {}},
            {"server_id": ids["a3"], "power": "off", "health": "critical", "bmc_reachable": True,
             "updated_at": NOW - timedelta(seconds=120), "last_seen": NOW, "last_error": "", "summary": {}},
            {"server_id": ids["b1"], "power": "unknown", "health": "unknown", "bmc_reachable": False,
             "updated_at": NOW - timedelta(seconds=300), "last_seen": None, "last_error": "timeout", "summary": {}},
        ])
        ups_ids = []
        for name, kind, site in (("ups-r1", "rack", "par1"), ("ups-b1", "server", "ams1"),
                                 ("ups-dead", "rack", "ams1")):
            ups_ids.append(conn.execute(insert(Ups).values(
                name=name, site_id=sites[site], kind=kind, profile="generic-ups-mib",
                protocol="snmp" if kind == "rack" else "nut", host="127.0.0.1", port=161, nut_name="",
                description="").returning(Ups.id)).scalar_one())
        conn.execute(insert(UpsState), [
            {"ups_id": ups_ids[0], "updated_at": NOW - timedelta(seconds=30), "status": "on-battery",
             "charge_pct": 42.0, "runtime_s": 180.0, "load_pct": 35.0, "input_v": 0.0, "battery_temp_c": 31.5,
             "reachable": True, "last_error": ""},
            {"ups_id": ups_ids[1], "updated_at": NOW - timedelta(seconds=30), "status": "replace-battery",
             "charge_pct": 100.0, "runtime_s": 900.0, "load_pct": 10.0, "input_v": 230.0, "battery_temp_c": None,
             "reachable": True, "last_error": ""},
            {"ups_id": ups_ids[2], "updated_at": NOW - timedelta(seconds=30), "status": "unknown",
             "charge_pct": None, "runtime_s": None, "load_pct": None, "input_v": None, "battery_temp_c": None,
             "reachable": False, "last_error": "timeout"},
        ])
        ev = {"target_kind": "server", "target_id": ids["a3"], "target_name": "a3", "message": "", "count": 1,
              "acked_by": "", "opened_at": NOW, "updated_at": NOW}
        conn.execute(insert(Event), [
            {**ev, "kind": "cpu-temp-critical", "severity": "critical", "status": "open", "dedup_key": "k1"},
            {**ev, "kind": "bmc-unreachable", "severity": "warning", "status": "acked", "dedup_key": "k2",
             "target_id": ids["b1"], "target_name": "b1"},
            {**ev, "kind": "bmc-unreachable", "severity": "warning", "status": "resolved", "dedup_key": None},
        ])


def _samples(text: str) -> dict[str, dict[frozenset, float]]:
    """name → {frozenset(labels): value}, from the client's own parser."""
    out: dict[str, dict[frozenset, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[frozenset(s.labels.items())] = s.value
    return out


def _render(engine: Engine, per_server: bool = False) -> dict[str, dict[frozenset, float]]:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(FleetCollector(engine, per_server=per_server, clock=NOW.timestamp))
    return _samples(generate_latest(registry).decode())


def L(**labels: str) -> frozenset:
    return frozenset(labels.items())


def test_aggregates_count_servers_per_site_rack_state_health_and_power(any_engine: Engine) -> None:
    _populate(any_engine)
    m = _render(any_engine)
    assert m["rackfleet_servers"] == {
        L(site="par1", rack="R1", state="deployed", health="ok", power="on"): 2,
        L(site="par1", rack="R1", state="ready", health="critical", power="off"): 1,
        L(site="ams1", rack="R9", state="deployed", health="unknown", power="unknown"): 1,
        L(site="ams1", rack="R9", state="new", health="unknown", power="unknown"): 1,
    }
    assert m["rackfleet_servers_bmc_unreachable"] == {L(site="par1", rack="R1"): 0, L(site="ams1", rack="R9"): 1}
    # open = not resolved (acked included); resolved ones are not counted
    assert m["rackfleet_events_open"] == {L(severity="critical", kind="cpu-temp-critical"): 1,
                                          L(severity="warning", kind="bmc-unreachable"): 1}
    # no per-server series by default
    assert "rackfleet_server_up" not in m and "rackfleet_server_bmc_up" not in m


def test_staleness_and_last_sweep_are_computed_in_seconds(any_engine: Engine) -> None:
    _populate(any_engine)
    m = _render(any_engine)
    last = m["rackfleet_last_sweep_timestamp_seconds"]
    assert last[L(target="server")] == pytest.approx(NOW.timestamp() - 60, abs=0.01)
    assert last[L(target="ups")] == pytest.approx(NOW.timestamp() - 30, abs=0.01)
    assert m["rackfleet_server_state_age_seconds_count"][L()] == 4  # b2 never swept: not counted
    assert m["rackfleet_server_state_age_seconds_sum"][L()] == pytest.approx(60 + 60 + 120 + 300, abs=0.05)
    assert m["rackfleet_server_state_max_age_seconds"][L()] == pytest.approx(300, abs=0.01)


def test_ups_series_in_base_units_and_status_flags(any_engine: Engine) -> None:
    _populate(any_engine)
    m = _render(any_engine)
    r1 = L(ups="ups-r1", site="par1", rack="", kind="rack")
    dead = L(ups="ups-dead", site="ams1", rack="", kind="rack")
    assert m["rackfleet_ups_battery_charge_ratio"] == {r1: pytest.approx(0.42)}
    assert m["rackfleet_ups_load_ratio"] == {r1: pytest.approx(0.35)}
    assert m["rackfleet_ups_battery_runtime_seconds"] == {r1: 180}
    assert m["rackfleet_ups_input_volts"] == {r1: 0}
    assert m["rackfleet_ups_battery_temperature_celsius"] == {r1: 31.5}
    assert m["rackfleet_ups_on_battery"] == {r1: 1}  # the dead one's status is unknown: absent, not 0
    assert m["rackfleet_ups_low_battery"] == {r1: 0}
    assert m["rackfleet_ups_replace_battery"] == {r1: 0}
    assert m["rackfleet_ups_up"] == {r1: 1, dead: 0}
    # the per-server UPS only shows in the counts...
    assert m["rackfleet_ups_units"] == {L(site="par1", kind="rack", status="on-battery"): 1,
                                        L(site="ams1", kind="server", status="replace-battery"): 1,
                                        L(site="ams1", kind="rack", status="unknown"): 1}
    # ...unless per-server series are asked for
    b1 = L(ups="ups-b1", site="ams1", rack="", kind="server")
    full = _render(any_engine, per_server=True)
    assert full["rackfleet_ups_replace_battery"][b1] == 1
    assert b1 not in full["rackfleet_ups_on_battery"]  # neither on line nor on battery: unknown
    assert full["rackfleet_ups_battery_charge_ratio"][b1] == 1.0


def test_per_server_series_are_absent_when_unknown(any_engine: Engine) -> None:
    _populate(any_engine)
    m = _render(any_engine, per_server=True)
    assert m["rackfleet_server_up"] == {L(host="a1", site="par1", rack="R1"): 1,
                                        L(host="a2", site="par1", rack="R1"): 1,
                                        L(host="a3", site="par1", rack="R1"): 0}
    assert m["rackfleet_server_bmc_up"][L(host="b1", site="ams1", rack="R9")] == 0
    assert len(m["rackfleet_server_bmc_up"]) == 4


def test_an_empty_inventory_renders_valid_text(sqlite_engine: Engine) -> None:
    m = _samples(render(sqlite_engine).decode())
    assert m["rackfleet_server_state_age_seconds_count"][L()] == 0
    assert "rackfleet_servers" not in m  # families without samples print HELP/TYPE only


def test_names_follow_conventions(sqlite_engine: Engine) -> None:
    _populate(sqlite_engine)
    text = render(sqlite_engine, per_server=True).decode()
    names = {f.name for f in text_string_to_metric_families(text)}
    assert all(n.startswith("rackfleet_") for n in names)
    assert not any(n.endswith(("_total", "_percent", "_pct")) for n in names)


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_listen("9464") == ("127.0.0.1", 9464)
    assert parse_listen("[::1]:9000") == ("::1", 9000)
    for bad in ("host:", "127.0.0.1:70000", "x:y"):
        with pytest.raises(InputError):
            parse_listen(bad)


# -- the command ---------------------------------------------------------------------------------------------


@pytest.fixture
def populated_env(env: dict[str, str]) -> dict[str, str]:
    with Fleet.open(env["FLEET_DB"]) as f:
        _populate(f.engine)
    return env


def test_cli_prints_and_writes_a_textfile_atomically(populated_env: dict[str, str], tmp_path) -> None:
    done = fleet(populated_env, "metrics")
    assert done.returncode == 0, done.stderr
    assert _samples(done.stdout)["rackfleet_servers"][
        L(site="par1", rack="R1", state="deployed", health="ok", power="on")] == 2
    outdir = tmp_path / "textfile"
    outdir.mkdir()
    target = outdir / "rackfleet.prom"
    target.write_text("old contents\n")
    done = fleet(populated_env, "metrics", "--textfile", str(target), "--per-server")
    assert done.returncode == 0, done.stderr
    assert os.listdir(outdir) == ["rackfleet.prom"]  # the temporary file was renamed over it
    m = _samples(target.read_text())
    assert m["rackfleet_server_up"][L(host="a3", site="par1", rack="R1")] == 0
    bad = fleet(populated_env, "metrics", "--textfile", str(tmp_path / "missing" / "x.prom"))
    assert bad.returncode == 1 and "cannot write" in bad.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_listen_serves_fresh_state_until_sigterm(populated_env: dict[str, str]) -> None:
    port = _free_port()
    proc = subprocess.Popen([FLEET, "metrics", "--listen", f"127.0.0.1:{port}"], env=populated_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    body = resp.read().decode()
                    assert resp.headers["Content-Type"].startswith("text/plain")
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "metrics endpoint did not come up"
                time.sleep(0.1)
        assert _samples(body)["rackfleet_events_open"][L(severity="critical", kind="cpu-temp-critical")] == 1
        with Fleet.open(populated_env["FLEET_DB"]) as f, f.engine.begin() as conn:
            conn.execute(Event.__table__.update().values(status="resolved"))
        with urllib.request.urlopen(url, timeout=5) as resp:  # every scrape reads afresh
            assert "rackfleet_events_open" not in _samples(resp.read().decode())
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert f"127.0.0.1:{port}" in err


def test_ups_status_words_map_to_flags() -> None:
    from fleet.service.metrics import _flag

    assert (_flag("on-battery low-battery", "on-battery"), _flag("on-battery low-battery", "low-battery")) == (1, 1)
    assert (_flag("online", "on-battery"), _flag("online", "replace-battery")) == (0, 0)
    assert _flag("unknown", "low-battery") is None and _flag("", "on-battery") is None
    assert _flag("low-battery", "on-battery") is None  # neither on line nor on battery said


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _scrape(url: str, timeout: float = 10) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
        return resp.read().decode()


def test_listen_is_bounded_under_500_idle_connections(populated_env: dict[str, str]) -> None:
    """Idle sockets do not cost a thread each, are closed at the read deadline, and never lock out a scrape."""
    port = _free_port()
    deadline_s = 2.0
    proc = subprocess.Popen([FLEET, "metrics", "--listen", f"127.0.0.1:{port}", "--read-timeout", str(deadline_s),
                             "--max-connections", "64"], env=populated_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    idle: list[socket.socket] = []
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        until = time.monotonic() + 20
        while True:
            try:
                _scrape(url, 2)
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < until, "metrics endpoint did not come up"
                time.sleep(0.1)
        threads0, rss0 = _threads(proc.pid), _rss_kib(proc.pid)
        opened = time.monotonic()
        for i in range(500):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            if i % 2:
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # half a request head, then nothing
            idle.append(s)
        time.sleep(0.3)
        peak_threads, peak_rss = _threads(proc.pid), _rss_kib(proc.pid)
        body = _scrape(url)  # a real scrape meanwhile
        assert _samples(body)["rackfleet_events_open"][L(severity="critical", kind="cpu-temp-critical")] == 1
        peak_threads = max(peak_threads, _threads(proc.pid))
        assert peak_threads <= threads0 + 2 and peak_threads <= 6, f"{peak_threads} threads for 500 idle sockets"
        assert peak_rss - rss0 < 20 * 1024, f"RSS grew {peak_rss - rss0} KiB for 500 idle sockets"
        # every idle socket is closed by the server within the deadline (most at once, to make room)
        closed = 0
        for s in idle:
            s.settimeout(max(0.1, opened + deadline_s + 3 - time.monotonic()))
            try:
                data = s.recv(100)
            except ConnectionResetError:
                data = b""
            except TimeoutError:
                data = None
            closed += data == b""
        assert closed == 500, f"only {closed} of 500 idle sockets were closed by the deadline"
        # a request head over the size cap is refused; the listener still serves
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nX-Big: " + b"x" * 20000 + b"\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.1 431 ")
        assert "rackfleet_servers" in _scrape(url)
    finally:
        for s in idle:
            s.close()
        os.kill(proc.pid, signal.SIGTERM)
        _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
