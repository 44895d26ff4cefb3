"""Readers and writers on one SQLite inventory: writers queue for the write lock, readers never wait.

Two `fleet import` processes at once used to lose one import to "database is locked" (an internal
error): the import's deferred transaction read, then could not be upgraded to a write once the other
had committed. Writers now begin immediate and wait up to the busy timeout; past it they get Busy.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import event, text

from fleet import Fleet
from inventory import db as inv_db

from .clihelp import FLEET, fleet


def _inventory_file(path: Path, tag: str, n: int = 40) -> Path:
    lines = ["version: 1", f"sites: [{{code: site-{tag}, name: Site {tag}}}]",
             f"racks: [{{site: site-{tag}, name: rack-{tag}, units: 42}}]", "servers:"]
    lines += [f"  - {{hostname: {tag}-{i:03d}, site: site-{tag}, rack: rack-{tag}, position: {i + 1}, "
              f"serial: SN-{tag}-{i:04d}, description: server {i} of {tag}}}" for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _hostnames(env: dict[str, str]) -> list[str]:
    done = fleet(env, "list", "--json")
    assert done.returncode == 0, done.stderr
    return [r["hostname"] for r in json.loads(done.stdout)]


def _hold_write_lock(db: Path, release: threading.Event, started: threading.Event, *, commit_a_write: bool,
                     max_s: float = 300) -> None:
    """Another writer: takes SQLite's write lock, optionally writes a row, and holds the lock until
    ``release`` is set (or ``max_s`` passed); then commits (or rolls back)."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        if commit_a_write:
            conn.execute("INSERT INTO meta (key, value) VALUES ('test.other-writer', 'x')")
        started.set()
        release.wait(max_s)
        conn.execute("COMMIT" if commit_a_write else "ROLLBACK")
    finally:
        conn.close()


@pytest.mark.timeout(900)
def test_two_concurrent_imports_of_different_data_both_succeed_every_time(tmp_path: Path, env) -> None:
    """Ten trials of two `fleet import` processes started together: both exit 0, both data sets stored."""
    a, b = _inventory_file(tmp_path / "a.yaml", "a", 20), _inventory_file(tmp_path / "b.yaml", "b", 20)
    fresh = Path(env["FLEET_DB"])
    for trial in range(10):
        db = tmp_path / f"trial{trial}.db"
        with sqlite3.connect(fresh) as src, sqlite3.connect(db) as dst:
            src.backup(dst)  # an initialised, empty inventory (fleet init once, not ten times)
        trial_env = dict(env, FLEET_DB=str(db))
        procs = [subprocess.Popen([FLEET, "import", str(f)], env=trial_env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for f in (a, b)]
        results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
        for p in procs:
            p.stderr.close()
        assert [rc for rc, _ in results] == [0, 0], f"trial {trial}: {results}"
        with sqlite3.connect(db) as conn:
            hosts = [h for (h,) in conn.execute("SELECT hostname FROM servers")]
            imports = conn.execute("SELECT count(*) FROM audit WHERE action = 'import'").fetchone()[0]
        assert len(hosts) == 40 and {h[0] for h in hosts} == {"a", "b"} and imports == 2, f"trial {trial}"


def test_an_import_waits_for_a_writer_that_commits_while_it_runs(tmp_path: Path, env) -> None:
    """The deterministic form of the race: another writer commits after the import could have read.

    A deferred import read a snapshot, then was refused the upgrade at once ("database is locked");
    an immediate one waits for the other writer's commit and then writes on fresh data.
    """
    db = Path(env["FLEET_DB"])
    data = _inventory_file(tmp_path / "a.yaml", "a")
    started, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold_write_lock, args=(db, release, started),
                              kwargs={"commit_a_write": True, "max_s": 2.0})
    with Fleet.open(str(db), key_path=Path(env["FLEET_KEY_FILE"])) as f:
        f.hostnames()  # a warm engine

        def commit_once_the_import_has_read(_conn, _cursor, statement: str, *_args: object) -> None:
            if statement.lstrip().upper().startswith("SELECT"):
                release.set()  # a deferred import has its snapshot now; an immediate one is still waiting

        event.listen(f.engine, "after_cursor_execute", commit_once_the_import_has_read)
        holder.start()
        assert started.wait(5)
        try:
            result = f.import_files([data])
        finally:
            release.set()
            holder.join()
        event.remove(f.engine, "after_cursor_execute", commit_once_the_import_has_read)
        assert result.created["server"] == 40
        assert len(f.hostnames()) == 40
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'test.other-writer'").fetchone() == ("x",)


def test_a_writer_held_up_past_the_bound_gets_the_one_line_busy_error_and_changes_nothing(
        tmp_path: Path, env) -> None:
    db = Path(env["FLEET_DB"])
    data = _inventory_file(tmp_path / "a.yaml", "a")
    started, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold_write_lock, args=(db, release, started), kwargs={"commit_a_write": False})
    holder.start()
    try:
        assert started.wait(5)
        done = fleet(env, "import", str(data))  # the other writer holds the lock until this has finished
    finally:
        release.set()
        holder.join()
    assert done.returncode == 75, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: the inventory is busy: another writer held it for 5 s; retry"], done.stderr
    assert "internal error" not in done.stderr
    assert _hostnames(env) == []
    assert "import" not in fleet(env, "audit", "--json").stdout


def test_readers_are_not_blocked_by_an_open_write_transaction(tmp_path: Path, env) -> None:
    """While another writer holds the write lock (uncommitted), reads return the committed data,
    and a reader's open transaction does not stop that writer from committing."""
    db = Path(env["FLEET_DB"])
    assert fleet(env, "import", str(_inventory_file(tmp_path / "a.yaml", "a", n=3))).returncode == 0
    other = sqlite3.connect(db, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("UPDATE servers SET description = 'uncommitted' WHERE hostname = 'a-000'")
        with Fleet.open(str(db), key_path=Path(env["FLEET_KEY_FILE"])) as f:
            t0 = time.monotonic()
            rows = f.servers()
            detail = f.server("a-000")
            waited = time.monotonic() - t0
            assert [r.hostname for r in rows] == ["a-000", "a-001", "a-002"]
            assert detail.description == "server 0 of a"  # the committed snapshot, not the open write
            # It did not wait for the lock (a blocked read would have waited the whole busy timeout).
            assert waited < inv_db.SQLITE_BUSY_TIMEOUT_MS / 1000
            with inv_db.read_session(f.engine) as s:
                s.execute(text("SELECT count(*) FROM servers"))  # a reader's transaction is open...
                other.execute("COMMIT")  # ...and the writer commits all the same
    finally:
        other.close()


def test_every_write_path_runs_in_a_write_transaction(tmp_path: Path, env, monkeypatch: pytest.MonkeyPatch
                                                      ) -> None:
    """With the strict check on, a write statement in a deferred (read) transaction raises: a tour of
    the library's write paths must not trip it."""
    monkeypatch.setattr(inv_db, "STRICT_WRITES", True)
    db = Path(env["FLEET_DB"])
    with Fleet.open(str(db), key_path=Path(env["FLEET_KEY_FILE"])) as f:
        with pytest.raises(RuntimeError, match="read transaction"), inv_db.read_session(f.engine) as s:
            from inventory.models import Meta

            s.add(Meta(key="x", value="y"))
            s.flush()
        f.import_files([_inventory_file(tmp_path / "a.yaml", "a", n=3)])
        f.add("server", {"hostname": "z-001", "rack": "rack-a", "position": 10, "serial": "Z1"})
        f.set("a-000", {"description": "moved"})
        f.set_state("a-001", "commissioning", reason="burn-in")
        f.remove("z-001")
        f.set_credential("ipmi-x", "ipmi", "pw", username="admin")
        f.assign_credential("ipmi-x", "host=a-000")
        f.set_threshold("a-000", "cpu-temp", {"warning_high": 80.0})
        f.prune_readings(older_than_days=30)
        f.pxe_callback_key()
        from fleet.core.jobs import JobTracker, mark_interrupted

        with JobTracker(f.ctx, "sweep", "all") as job:
            job.progress(1, force=True)
        mark_interrupted(f.engine)
        assert f.audit(action="set.server")
