"""Engines, sessions and schema migrations.

SQLite is the embedded default (one file, WAL, ``synchronous=NORMAL``, a busy timeout, foreign
keys on); PostgreSQL (``postgresql+psycopg://...``) serves teams and scale-out. The schema is
always created and changed by Alembic migrations (``inventory/migrations``), never by
``create_all``, so a database made today upgrades cleanly tomorrow.

Readers and writers open their transactions differently, and this module is the one place that
knows how (the engine/session factory every operation uses):

- ``read_session(engine)`` / ``read_connection(engine)``: a deferred ``BEGIN``. In WAL mode a
  reader never waits for a writer (the TUI reads while a sweep writes).
- ``write_session(engine)`` / ``write_connection(engine)``: ``BEGIN IMMEDIATE`` on SQLite, which
  takes the write lock up front and waits for it up to the busy timeout. A deferred transaction
  that has read cannot be upgraded to a write once another writer has committed (SQLite answers
  SQLITE_BUSY at once, without waiting), so every unit of work that may write starts as a writer.
  On PostgreSQL both are a plain ``BEGIN`` (row locks, with a ``lock_timeout`` as the bound).

A writer that waited longer than the bound gets :class:`fleet.errors.Busy` (exit code 75), mapped
here for every statement on the engine, never an "internal error".
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event, inspect
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.pool import StaticPool
from sqlmodel import Session

from fleet.errors import Busy, InputError

__all__ = [
    "DEFAULT_DB",
    "SQLITE_BUSY_TIMEOUT_MS",
    "current_revision",
    "db_url",
    "downgrade",
    "make_engine",
    "read_connection",
    "read_session",
    "session_scope",
    "upgrade",
    "write_connection",
    "write_session",
    "writer",
]

DEFAULT_DB = "fleet.db"
SQLITE_BUSY_TIMEOUT_MS = 5000  # how long a writer waits for another writer (SQLite busy timeout, PG lock_timeout)
_WRITE = "rackfleet_write"  # execution option: this connection's transactions are writers
_TX = "rackfleet_tx"  # connection.info: "read" or "write", the kind of the transaction now open
#: When True, a write statement inside a read transaction raises (tests turn it on to prove that
#: every write path goes through write_session/write_connection). Also ``FLEET_DB_STRICT=1``.
STRICT_WRITES = os.environ.get("FLEET_DB_STRICT") == "1"
_DML = ("insert", "update", "delete", "replace")
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
        # pysqlite's own BEGIN handling is off (isolation_level=None): we emit BEGIN or BEGIN IMMEDIATE.
        event.listen(engine, "begin", _sqlite_begin)
        event.listen(engine, "before_cursor_execute", _check_write)
        event.listen(engine, "handle_error", _map_busy)
        return engine
    if url.startswith("postgresql"):
        # Our settings go after the URL's own ``options`` (a user's ``?options=-csearch_path=...`` stays):
        # connect_args would otherwise replace the URL's options, not add to them.
        parsed = make_url(url)
        given = parsed.query.get("options", "")
        given = " ".join(given) if isinstance(given, tuple) else given
        options = " ".join(o for o in (given, f"-clock_timeout={SQLITE_BUSY_TIMEOUT_MS}",
                                       f"-csearch_path={pg_schema}" if pg_schema else "") if o)
        engine = create_engine(parsed.difference_update_query(["options"]), echo=echo, pool_pre_ping=True,
                               pool_size=5, max_overflow=10, connect_args={"options": options})
        event.listen(engine, "handle_error", _map_busy)
        return engine
    raise InputError(f"unsupported database URL {url!r}: use a file path, sqlite:///PATH or postgresql+psycopg://")


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    dbapi_conn.isolation_level = None  # autocommit at the driver; SQLAlchemy issues BEGIN itself
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    write = bool(conn.get_execution_options().get(_WRITE))
    conn.info[_TX] = "write" if write else "read"
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _check_write(conn: Connection, _cursor, statement: str, _params, _context, _many) -> None:
    if STRICT_WRITES and conn.info.get(_TX) == "read" and statement.lstrip()[:7].lower().startswith(_DML):
        raise RuntimeError(f"a write in a read transaction (use inventory.db.write_session): {statement[:80]}")


def _busy_message() -> str:
    return f"the inventory is busy: another writer held it for {SQLITE_BUSY_TIMEOUT_MS / 1000:g} s; retry"


def _map_busy(ctx: ExceptionContext) -> None:
    """SQLite's "database is locked" and PostgreSQL's lock timeout are :class:`Busy`, not bugs."""
    orig = ctx.original_exception
    if type(orig).__name__ == "OperationalError" and type(orig).__module__ == "sqlite3":
        if "locked" in str(orig).lower() or "busy" in str(orig).lower():
            raise Busy(_busy_message()) from orig
    elif getattr(orig, "sqlstate", None) == "55P03":  # lock_not_available (lock_timeout)
        raise Busy(_busy_message()) from orig


def writer(engine: Engine) -> Engine:
    """``engine`` as a writer: its transactions begin with ``BEGIN IMMEDIATE`` on SQLite."""
    return engine.execution_options(**{_WRITE: True})


@contextmanager
def write_session(engine: Engine) -> Iterator[Session]:
    """A writer's session: takes the write lock at its first statement (waiting up to the busy
    timeout, then :class:`~fleet.errors.Busy`), commits on success, rolls back on any error."""
    with Session(writer(engine), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


@contextmanager
def read_session(engine: Engine) -> Iterator[Session]:
    """A reader's session (deferred: never waits for a writer in WAL mode); nothing it does is committed."""
    with Session(engine, expire_on_commit=False) as session:
        yield session


@contextmanager
def write_connection(engine: Engine) -> Iterator[Connection]:
    """A Core connection in a writer's transaction (``BEGIN IMMEDIATE``), committed on success."""
    with writer(engine).begin() as conn:
        yield conn


def read_connection(engine: Engine) -> Connection:
    """A Core connection for reading (``with read_connection(engine) as conn:``)."""
    return engine.connect()


session_scope = write_session  # the name callers used before readers and writers were told apart


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

    with write_connection(engine) as conn:
        command.upgrade(_alembic_config(engine, conn), revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Take the schema down to ``revision`` (``base`` removes every table)."""
    from alembic import command

    with write_connection(engine) as conn:
        command.downgrade(_alembic_config(engine, conn), revision)


def current_revision(engine: Engine) -> str | None:
    """The schema revision the database is at, or None for an empty database."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return MigrationContext.configure(conn).get_current_revision()
