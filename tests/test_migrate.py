"""`fleet migrate --to postgresql+psycopg://...`: a whole SQLite inventory copied into PostgreSQL, row for row."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, insert, select
from sqlmodel import SQLModel

from fleet import Fleet
from fleet.errors import InputError
from inventory.db import make_engine
from inventory.models import (
    Event,
    Job,
    JobStep,
    Rack,
    Reading,
    Server,
    ServerState,
    ThresholdOverride,
    Ups,
    UpsState,
    WipeCertificate,
    WorkOrder,
)

from .clihelp import fleet as run
from .peers import POSTGRES_URL
from .test_import import EXAMPLE, with_credentials

READINGS = 12_345  # more than two chunks of the copy


def _populate(fleet: Fleet) -> None:
    """An inventory with rows in every table: the example fleet, history, readings, events, jobs, certificates."""
    with_credentials(fleet)
    fleet.import_files([EXAMPLE])
    fleet.set_credential("redfish-default", "redfish", "pw", username="root")
    fleet.set("web01.par1.example.net", {"redfish": "127.0.0.10:8443", "redfish_credential": "redfish-default",
                                         "redfish_tls_fingerprint": "sha256:" + "0f" * 32})
    fleet.set_state("web01.par1.example.net", "maintenance", reason="fan — replace «soon»")
    t0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    with fleet.engine.begin() as conn:
        servers = list(conn.execute(select(Server.id).order_by(Server.id)).scalars())
        ups = list(conn.execute(select(Ups.id).order_by(Ups.id)).scalars())
        rack = conn.execute(select(Rack.id).limit(1)).scalar_one()
        conn.execute(insert(Reading), [
            {"ts": t0 + timedelta(seconds=i, microseconds=i % 997), "target_kind": "server",
             "target_id": servers[i % len(servers)], "metric": ("inlet_temp", "power_w", "fan1")[i % 3],
             "value": i / 7 + 0.1, "unit": ("C", "W", "rpm")[i % 3]} for i in range(READINGS)])
        conn.execute(insert(ServerState), [
            {"server_id": sid, "updated_at": t0, "power": "on", "health": "ok", "bmc_reachable": i % 2 == 0,
             "last_seen": t0 if i % 3 else None, "last_error": "",
             "summary": {"sensors": {"inlet": 21.5 + i}, "note": "naïve ✓", "list": [1, None, True]}}
            for i, sid in enumerate(servers)])
        conn.execute(insert(UpsState), [{"ups_id": u, "updated_at": t0, "status": "online", "charge_pct": 99.5,
                                         "runtime_s": None, "reachable": True} for u in ups])  # same keys in each
        event_ids = [conn.execute(insert(Event).values(
            opened_at=t0, updated_at=t0 + timedelta(minutes=i), resolved_at=None if i % 2 else t0,
            target_kind="server", target_id=servers[i], target_name=f"host{i}", kind="temperature",
            severity="critical", status="open" if i % 2 else "resolved", message=f"inlet {30 + i} C", count=i + 1,
            dedup_key=f"server:{servers[i]}:temperature" if i % 2 else None).returning(Event.id)).scalar_one()
            for i in range(5)]
        power_job = conn.execute(insert(Job).values(
            kind="power.cycle", selector="rack=r01", status="interrupted", total=2, done=1, params={"action": "cycle"},
            result={}, actor="tech", created_at=t0, started_at=t0, finished_at=t0 + timedelta(seconds=2),
            heartbeat_at=t0 + timedelta(seconds=2)).returning(Job.id)).scalar_one()
        conn.execute(insert(JobStep), [
            {"job_id": power_job, "target": "db01.par1.example.net", "state": "sent", "sent_at": t0,
             "updated_at": t0, "detail": {"before": "on"}},
            {"job_id": power_job, "target": "db02.par1.example.net", "state": "pending", "sent_at": None,
             "updated_at": t0, "detail": {}}])
        conn.execute(insert(Job), [{"kind": "sweep", "selector": "site=par1", "status": "done", "total": 24,
                                    "done": 24, "params": {"what": ["power", "sensors"]},
                                    "result": {"ok": 24, "per_site": {"par1": 18}}, "actor": "cron",
                                    "created_at": t0, "started_at": t0, "finished_at": t0 + timedelta(seconds=3),
                                    "heartbeat_at": None} for _ in range(3)])
        conn.execute(insert(WorkOrder).values(kind="rma", target_kind="server", target_name="db01.par1.example.net",
                                              reason="dead PSU", event_id=event_ids[0], created_at=t0))
        conn.execute(insert(WipeCertificate).values(
            server_id=servers[0], hostname="db01.par1.example.net", disk_slot="0", disk_serial="S1",
            size_bytes=3_840_755_982_336, method="nvme-format", result="ok", verified=True, started_at=t0,
            finished_at=t0 + timedelta(hours=1), detail={"passes": 1}, digest="ab" * 32))
        conn.execute(insert(ThresholdOverride), [
            {"rack_id": rack, "server_id": None, "sensor": "inlet_temp", "warning_high": 30.0, "critical_high": None},
            {"rack_id": None, "server_id": servers[1], "sensor": "inlet_temp", "warning_high": None,
             "critical_high": 41.5}])
        conn.execute(Ups.__table__.update().where(Ups.id == ups[0]).values(battery_installed=date(2024, 2, 29)))
    with fleet.engine.connect() as conn:
        empty = [t.name for t in SQLModel.metadata.sorted_tables
                 if conn.execute(select(func.count()).select_from(t)).scalar_one() == 0]
    assert empty == [], f"give these tables rows in this test, so the copy is proved for them too: {empty}"


@pytest.fixture
def source(tmp_path: Path) -> Iterator[Fleet]:
    path = tmp_path / "fleet.db"
    fleet = Fleet.init(str(path), key_path=tmp_path / "key", actor="tester")
    _populate(fleet)
    yield fleet
    fleet.close()


def _pg_url(schema: str) -> str:
    return f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"


def _compare(source: Engine, target: Engine, *, extra_audit: int) -> dict[str, int]:
    """Every table's count, and first, last and a few random rows column by column, equal on both sides."""
    rnd = random.Random(12)
    counts = {}
    with source.connect() as src, target.connect() as dst:
        for table in SQLModel.metadata.sorted_tables:
            order = list(table.primary_key.columns)
            n_src = src.execute(select(func.count()).select_from(table)).scalar_one()
            n_dst = dst.execute(select(func.count()).select_from(table)).scalar_one()
            assert n_dst == n_src + (extra_audit if table.name == "audit" else 0), table.name
            counts[table.name] = n_src
            keys = [tuple(r) for r in src.execute(select(*order).order_by(*order))]
            sample = {keys[0], keys[-1], *rnd.sample(keys, min(5, len(keys)))}
            for key in sorted(sample):
                where = [c == v for c, v in zip(order, key, strict=True)]
                a = src.execute(select(table).where(*where)).mappings().one()
                b = dst.execute(select(table).where(*where)).mappings().one()
                for column in table.columns:
                    assert b[column.name] == a[column.name], f"{table.name}{key}.{column.name}"
                    assert type(b[column.name]) is type(a[column.name]), f"{table.name}{key}.{column.name}"
    return counts


@pytest.mark.postgres
def test_migrate_copies_every_table_row_for_row_into_postgresql(source: Fleet, pg_schema: str) -> None:
    result = source.migrate(_pg_url(pg_schema))

    target = make_engine(POSTGRES_URL, pg_schema=pg_schema)
    try:
        counts = _compare(source.engine, target, extra_audit=1)
        assert result.counts == counts and counts["readings"] == READINGS
        restored = Fleet(target, keyring=source.keyring, actor="tester")  # ciphertext copied: the same key opens it
        assert [restored.secret(c.name) for c in source.credentials()] == \
            [source.secret(c.name) for c in source.credentials()]
        assert restored.export("yaml") == source.export("yaml")
        last = restored.audit(limit=1)[0]
        assert last.action == "migrate" and last.actor == "tester" and last.detail["rows"] == sum(counts.values())
        # Sequences are past the copied ids: new rows get fresh ones.
        restored.add("site", {"code": "ams1", "name": "Amsterdam"})
        with target.begin() as conn:
            new_id = conn.execute(insert(Reading).values(ts=datetime.now(UTC), target_kind="server", target_id=1,
                                                         metric="x", value=1.0).returning(Reading.id)).scalar_one()
        assert new_id == READINGS + 1
        assert result.sequences["readings"] == READINGS + 1
    finally:
        target.dispose()


@pytest.mark.postgres
def test_migrate_refuses_a_target_that_is_not_empty(source: Fleet, pg_schema: str) -> None:
    source.migrate(_pg_url(pg_schema))
    with pytest.raises(InputError, match="not empty"):
        source.migrate(_pg_url(pg_schema))
    target = make_engine(POSTGRES_URL, pg_schema=pg_schema)
    try:
        _compare(source.engine, target, extra_audit=1)  # the refused second copy wrote nothing
    finally:
        target.dispose()


@pytest.mark.postgres
def test_cli_migrate_prints_per_table_counts(source: Fleet, pg_schema: str, tmp_path: Path) -> None:
    env = {**__import__("os").environ, "FLEET_DB": str(tmp_path / "fleet.db"), "FLEET_KEY_FILE": str(tmp_path / "key")}
    done = run(env, "migrate", "--to", _pg_url(pg_schema), "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["tables"]["readings"] == READINGS and out["schema"] == pg_schema
    assert out["rows"] == sum(out["tables"].values()) and "ciphertext" in out["credentials"]
    assert "readings: 12345/12345" in done.stderr  # progress on stderr
    again = run(env, "migrate", "--to", _pg_url(pg_schema))
    assert again.returncode == 2 and "not empty" in again.stderr and again.stderr.count("\n") == 1
