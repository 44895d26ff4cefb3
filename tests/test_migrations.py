"""Schema migrations: up and down on both engines, and the models match the migrations exactly."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect
from sqlmodel import SQLModel

import inventory.models  # noqa: F401
from inventory.db import current_revision, downgrade, make_engine, upgrade

from .peers import POSTGRES_URL


def _tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def _roundtrip(engine: Engine) -> None:
    upgrade(engine)
    assert current_revision(engine) is not None
    assert _tables(engine) == set(SQLModel.metadata.tables)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                SQLModel.metadata)
    assert diff == [], f"models and migrations differ: {diff}"
    downgrade(engine, "base")
    assert _tables(engine) == set()
    assert current_revision(engine) is None
    upgrade(engine)  # and back up again: downgrade leaves nothing behind that blocks it
    assert _tables(engine) == set(SQLModel.metadata.tables)


def test_migrations_go_up_and_down_on_sqlite_and_match_the_models(tmp_path) -> None:
    engine = make_engine(str(tmp_path / "m.db"))
    _roundtrip(engine)
    engine.dispose()


@pytest.mark.postgres
def test_migrations_go_up_and_down_on_postgresql_and_match_the_models(pg_schema: str) -> None:
    engine = make_engine(POSTGRES_URL, pg_schema=pg_schema)
    _roundtrip(engine)
    engine.dispose()


def test_sqlite_file_runs_in_wal_mode_with_busy_timeout(tmp_path) -> None:
    engine = make_engine(str(tmp_path / "w.db"))
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()


def test_constraint_names_are_the_same_on_every_engine(sqlite_engine: Engine) -> None:
    uniques = {u["name"] for u in inspect(sqlite_engine).get_unique_constraints("servers")}
    assert "uq_servers_hostname" in uniques


def _fleet_at_0005(engine: Engine) -> None:
    """An inventory at revision 0005 with credentials in use: servers with IPMI endpoints, a UPS."""
    from sqlalchemy import text

    upgrade(engine, "0005")
    now = "2026-01-01 00:00:00"
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO sites (id, code, name, description) VALUES (1, 'par1', '', '')"))
        conn.execute(text("INSERT INTO credentials (id, name, kind, username, secret, options, created_at, "
                          "updated_at) VALUES (1, 'ipmi-admin', 'ipmi', 'admin', :s, '{}', :t, :t), "
                          "(2, 'snmp-ro', 'snmp-v2c', '', :s, '{}', :t, :t)"), {"s": b"sealed", "t": now})
        for i in range(1, 4):
            conn.execute(text(
                "INSERT INTO servers (id, hostname, height, profile, serial, asset_tag, state, state_reason, "
                "state_changed_at, bmc_host, bmc_port, bmc_credential_id, priority, description, created_at, "
                "updated_at) VALUES (:i, :h, 1, 'generic-ipmi', '', '', 'deployed', '', :t, :b, 623, 1, 100, '', "
                ":t, :t)"), {"i": i, "h": f"web-{i}", "b": f"10.0.0.{i}", "t": now})
        conn.execute(text("INSERT INTO ups (id, name, site_id, kind, profile, protocol, host, port, nut_name, "
                          "credential_id, description) VALUES (1, 'ups-1', 1, 'rack', 'generic-ups-mib', 'snmp', "
                          "'10.0.1.1', 161, '', 2, '')"))


def _servers(engine: Engine) -> list[tuple]:
    from sqlalchemy import text

    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT s.hostname, s.bmc_host, s.bmc_port, c.name, c.kind FROM servers s "
            "JOIN credentials c ON c.id = s.bmc_credential_id ORDER BY s.hostname"))]


def _upgrade_keeps_servers_and_takes_redfish(engine: Engine) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    _fleet_at_0005(engine)
    before = _servers(engine)
    upgrade(engine)
    assert current_revision(engine) == "0006"
    assert _servers(engine) == before  # the IPMI endpoints and their credentials, as they were
    now = "2026-01-02 00:00:00"
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO credentials (id, name, kind, username, secret, options, created_at, "
                          "updated_at) VALUES (3, 'rf-admin', 'redfish', 'root', :s, '{}', :t, :t)"),
                     {"s": b"sealed", "t": now})
        conn.execute(text("INSERT INTO bmc_endpoints (server_id, protocol, host, port, credential_id, updated_at) "
                          "VALUES (1, 'redfish', '10.0.0.1', 443, 3, :t)"), {"t": now})
    with pytest.raises(IntegrityError), engine.begin() as conn:  # the check still refuses unknown kinds
        conn.execute(text("INSERT INTO credentials (name, kind, username, secret, options, created_at, "
                          "updated_at) VALUES ('x', 'telnet', '', :s, '{}', :t, :t)"), {"s": b"s", "t": now})
    with pytest.raises(IntegrityError), engine.begin() as conn:  # one endpoint per server and protocol
        conn.execute(text("INSERT INTO bmc_endpoints (server_id, protocol, host, port, updated_at) "
                          "VALUES (1, 'redfish', '10.0.0.9', 443, :t)"), {"t": now})
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
            assert conn.exec_driver_sql("PRAGMA foreign_key_check").all() == []
    downgrade(engine, "0005")  # Redfish goes; the IPMI fleet stays
    assert _servers(engine) == before
    with engine.connect() as conn:
        assert list(conn.execute(text("SELECT name FROM credentials ORDER BY name")).scalars()) == [
            "ipmi-admin", "snmp-ro"]
    upgrade(engine)
    assert _servers(engine) == before


def test_upgrade_to_bmc_endpoints_keeps_every_server_and_admits_redfish_credentials_on_sqlite(tmp_path) -> None:
    engine = make_engine(str(tmp_path / "fleet.db"))
    _upgrade_keeps_servers_and_takes_redfish(engine)
    engine.dispose()


@pytest.mark.postgres
def test_upgrade_to_bmc_endpoints_keeps_every_server_and_admits_redfish_credentials_on_postgresql(
        pg_schema: str) -> None:
    engine = make_engine(POSTGRES_URL, pg_schema=pg_schema)
    _upgrade_keeps_servers_and_takes_redfish(engine)
    engine.dispose()
