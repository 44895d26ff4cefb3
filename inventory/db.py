"""Engines, sessions and schema migrations.

SQLite is the embedded default (one file, WAL, ``synchronous=NORMAL``, a busy timeout, foreign
keys on); PostgreSQL (``postgresql+psycopg://...``) serves teams and scale-out. The schema is
always created and changed by Alembic migrations (``inventory/migrations``), never by
``create_all``, so a database made today upgrades cleanly tomorrow.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.pool import StaticPool
from sqlmodel import Session

from fleet.errors import InputError

__all__ = [
    "DEFAULT_DB",
    "SQLITE_BUSY_TIMEOUT_MS",
    "current_revision",
    "db_url",
    "downgrade",
    "make_engine",
    "session_scope",
    "upgrade",
]

DEFAULT_DB = "fleet.db"
SQLITE_BUSY_TIMEOUT_MS = 5000
_MIGRATIONS = Path(__file__).with_name("migrations")


def db_url(value: str | None = None) -> str:
    """The database URL from ``value``, else ``FLEET_DB``, else ``./fleet.db``. Plain paths mean SQLite."""
    raw = value or os.environ.get("FLEET_DB") or DEFAULT_DB
    if "://" in raw:
        if raw.startswith("postgresql://") or raw.startswith("postgres://"):
            raw = "postgresql+psycopg://" + raw.split("://", 1)[1]
        return raw
    return f"sqlite:///{Path(raw).expanduser()}"


def make_engine(url: str, *, echo: bool = False, pg_schema: str | None = None) -> Engine:
    """An engine for ``url`` with Rackfleet's settings applied on every connection.

    ``pg_schema`` puts every table in that PostgreSQL schema (tests use a private one each).
    """
    url = db_url(url)
    if url.startswith("sqlite"):
        memory = url in ("sqlite://", "sqlite:///:memory:") or "mode=memory" in url
        kwargs: dict = {"connect_args": {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}}
        if memory:
            kwargs["poolclass"] = StaticPool
        engine = create_engine(url, echo=echo, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        # Let SQLAlchemy manage transactions (pysqlite's own BEGIN handling defers them badly).
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
        return engine
    if url.startswith("postgresql"):
        connect_args = {"options": f"-csearch_path={pg_schema}"} if pg_schema else {}
        return create_engine(url, echo=echo, pool_pre_ping=True, pool_size=5, max_overflow=10,
                             connect_args=connect_args)
    raise InputError(f"unsupported database URL {url!r}: use a file path, sqlite:///PATH or postgresql+psycopg://")


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    dbapi_conn.isolation_level = None  # autocommit at the driver; SQLAlchemy issues BEGIN itself
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session whose work commits on success and rolls back on any error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def _alembic_config(engine: Engine, connection):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to ``revision`` (the latest by default)."""
    from alembic import command

    with engine.begin() as conn:
        command.upgrade(_alembic_config(engine, conn), revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Take the schema down to ``revision`` (``base`` removes every table)."""
    from alembic import command

    with engine.begin() as conn:
        command.downgrade(_alembic_config(engine, conn), revision)


def current_revision(engine: Engine) -> str | None:
    """The schema revision the database is at, or None for an empty database."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return MigrationContext.configure(conn).get_current_revision()
