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
