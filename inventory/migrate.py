"""Copy a whole inventory into an empty database (``fleet migrate --to URL``): SQLite to PostgreSQL, mostly.

Every table of ``SQLModel.metadata`` is copied (so a table added tomorrow is copied without a
change here), parents before children (``metadata.sorted_tables``), primary keys kept, in bulk:
rows are read in primary-key order in chunks and written with one Core ``executemany`` per chunk,
all in one transaction on the target. PostgreSQL sequences are then set past the largest ids, so
the next row inserted there gets a fresh one.

Credentials are copied as they are stored: ciphertext sealed with the source's key ring (the
``meta`` table's key check value comes along), so the target opens them with the same secret key.
Nothing here decrypts anything, and nothing talks to a device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, Integer, func, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import SQLModel

from fleet.errors import FleetError, InputError

from . import models as _models  # noqa: F401  (registers every table on SQLModel.metadata)
from .db import current_revision, upgrade

__all__ = ["CHUNK", "MigrateResult", "copy_inventory", "migrate", "tables"]

#: Rows per read and per executemany: large enough for bulk speed, small enough to bound memory.
CHUNK = 5000

Progress = Callable[[str, int, int], None]  # (table, rows copied so far, rows in the table)


@dataclass
class MigrateResult:
    source: str
    target: str
    schema: str | None
    counts: dict[str, int] = field(default_factory=dict)
    sequences: dict[str, int] = field(default_factory=dict)  # PostgreSQL: table -> next id

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "target": self.target, "schema": self.schema, "tables": self.counts,
                "rows": sum(self.counts.values()), "sequences": self.sequences,
                "credentials": "copied as ciphertext: open the target with the same secret key"}


def tables() -> list[Any]:
    """Every inventory table, parents before children."""
    return list(SQLModel.metadata.sorted_tables)


def _count(conn: Any, table: Any) -> int:
    return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def _non_empty(conn: Any) -> list[str]:
    return [t.name for t in tables() if conn.execute(select(1).select_from(t).limit(1)).first() is not None]


def copy_inventory(source: Engine, target: Engine, *, chunk: int = CHUNK, progress: Progress | None = None,
                   on_done: Callable[[Any, MigrateResult], None] | None = None) -> MigrateResult:
    """Copy every row of ``source`` into ``target`` (schema at head, every table empty): one target transaction.

    Refuses (``InputError``) a target with any row in any inventory table. The source is read in
    one transaction too, so the copy is a consistent snapshot even if the source is in use.
    ``on_done(connection, result)`` runs last in the target's transaction (the caller's audit row).
    """
    result = MigrateResult(source.url.render_as_string(hide_password=True),
                           target.url.render_as_string(hide_password=True), None)
    with source.connect() as src, target.connect() as dst:
        if src.dialect.name == "postgresql":
            src = src.execution_options(isolation_level="REPEATABLE READ")
        with src.begin(), dst.begin():
            busy = _non_empty(dst)
            if busy:
                raise InputError(f"the target inventory is not empty ({', '.join(busy[:5])} hold rows): migrate "
                                 "copies into an empty database; give a new database or schema")
            for table in tables():
                total = _count(src, table)
                done = 0
                if progress is not None:
                    progress(table.name, 0, total)
                order = list(table.primary_key.columns) or list(table.columns)
                rows = src.execution_options(yield_per=chunk).execute(select(table).order_by(*order))
                for part in rows.partitions(chunk):
                    dst.execute(table.insert(), [dict(r._mapping) for r in part])
                    done += len(part)
                    if progress is not None:
                        progress(table.name, done, total)
                result.counts[table.name] = done
            if dst.dialect.name == "postgresql":
                result.sequences = _reset_sequences(dst)
            if on_done is not None:
                on_done(dst, result)
    return result


def _reset_sequences(conn: Any) -> dict[str, int]:
    """Set each serial primary key's sequence past the largest id copied; returns the next id by table."""
    out: dict[str, int] = {}
    for table in tables():
        pk = list(table.primary_key.columns)
        if len(pk) != 1 or not isinstance(pk[0].type, Integer):
            continue
        seq = conn.execute(text("SELECT pg_get_serial_sequence(:t, :c)"),
                           {"t": table.name, "c": pk[0].name}).scalar()
        if seq is None:
            continue
        top = conn.execute(select(func.max(pk[0]))).scalar()
        if top is None:
            conn.execute(text("SELECT setval(CAST(:s AS regclass), 1, false)"), {"s": seq})
            out[table.name] = 1
        else:
            conn.execute(text("SELECT setval(CAST(:s AS regclass), :v, true)"), {"s": seq, "v": int(top)})
            out[table.name] = int(top) + 1
    return out


def migrate(source: Engine, target: Engine, *, chunk: int = CHUNK, progress: Progress | None = None,
            on_done: Callable[[Any, MigrateResult], None] | None = None) -> MigrateResult:
    """``fleet init`` on the target (Alembic to head), then :func:`copy_inventory`.

    The source must be at the same head (``Fleet.open`` checks it): the copy is column for column.
    """
    if source.url == target.url and source.dialect.name == "sqlite":
        raise InputError("the target is the source: give another database")
    try:
        upgrade(target)
    except SQLAlchemyError as exc:
        raise FleetError(f"cannot prepare the target database: {exc.__class__.__name__}: "
                         f"{str(getattr(exc, 'orig', exc)).splitlines()[0]}") from None
    with target.connect() as conn:
        schema = conn.execute(text("SELECT current_schema()")).scalar() if conn.dialect.name == "postgresql" \
            else None
    if current_revision(source) != current_revision(target):
        raise FleetError(f"the source schema is at {current_revision(source)}, the target at "
                         f"{current_revision(target)}: run 'fleet init' on the source first")
    result = copy_inventory(source, target, chunk=chunk, progress=progress, on_done=on_done)
    result.schema = schema
    return result
