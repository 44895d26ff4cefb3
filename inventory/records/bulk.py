"""The bulk writer: SQLAlchemy Core reads and writes of many rows at once, fast on SQLite and PostgreSQL.

:class:`BulkWriter` preloads rows by key (IN lists, or one scan when there are many), inserts with
one compiled ``executemany`` on SQLite or ``COPY`` on PostgreSQL (reading new ids back without a
query when it can), and updates in one ``executemany`` per set of changed columns. Around a whole
batch, :func:`gc_paused` pauses the cyclic garbage collector and :func:`_sqlite_cache` enlarges
SQLite's page cache. A 100,000-server import spends most of its write time here: mind the loops.
"""

from __future__ import annotations

import gc
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from operator import itemgetter
from typing import Any

from sqlalchemy import Boolean, Connection, Table, bindparam, func, insert, literal, literal_column, select, update

from ..models import Server, utcnow

__all__ = ["BulkWriter", "gc_paused"]

# Chunk size for IN (...) lists: under SQLite's historical limit of 999 bound variables.
_CHUNK = 900
# Above this many keys, one full scan of a table beats many IN (...) queries.
_SCAN_ABOVE = 5000


#: Page cache for a bulk import on SQLite (KiB): the connection's default of 2 MiB makes a
#: 100,000-server batch spill pages to the WAL file while it is written.
_BULK_CACHE_KIB = 65536


@contextmanager
def _sqlite_cache(conn: Connection, size: int) -> Iterator[None]:
    """A larger SQLite page cache while a large batch is written; the connection's own after."""
    if conn.dialect.name != "sqlite" or size < 10_000:
        yield
        return
    before = conn.exec_driver_sql("PRAGMA cache_size").scalar()
    conn.exec_driver_sql(f"PRAGMA cache_size=-{_BULK_CACHE_KIB}")
    try:
        yield
    finally:
        conn.exec_driver_sql(f"PRAGMA cache_size={int(before)}")


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a bulk import builds millions of small objects.

    The collector runs every few hundred allocations and re-scans everything still alive, so a
    100,000-server import spends a third of its time in it while creating no cycles at all.
    Reference counting still frees everything as usual; the previous state is restored after.

    On the way out, what survived the pause (the records, mostly: long-lived by nature) is filed
    as old without a scan, by ``gc.freeze()`` then ``gc.unfreeze()``; otherwise re-enabling the
    collector triggers at once a collection that walks all of it (0.25 s at 100,000 servers).
    Old objects are still scanned by the collector's full collections, as any others. Skipped
    when the application keeps objects frozen itself, since unfreeze would release those too.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            if gc.get_freeze_count() == 0:
                gc.freeze()
                gc.unfreeze()
            gc.enable()


def _chunks(seq: Sequence, size: int = _CHUNK) -> Iterator[Sequence]:
    for i in range(0, len(seq), size):
        yield seq[i:i + size]


class BulkWriter:
    """Bulk reads and writes over one connection, in one transaction the caller owns.

    Knows tables and rows, nothing of records: the kind writers (:mod:`inventory.records.writer`)
    build on it. ``now`` is the one timestamp of the batch, ``now_sql`` the same as SQL text.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.now = utcnow()
        # The time as SQL text, so executemany does not run the UTC type's converter on every row.
        self.now_sql = literal_column(str(literal(self.now, Server.__table__.c.created_at.type).compile(
            dialect=conn.dialect, compile_kwargs={"literal_binds": True})))

    def _rows_by_keys(self, table: Table, column: Any, keys: Sequence, columns: Sequence | None = None) -> list:
        """Rows of ``table`` whose ``column`` is one of ``keys``: by IN lists, or one scan when many."""
        cols = list(columns) if columns is not None else list(table.c)
        if not keys:
            return []
        if len(keys) > _SCAN_ABOVE:
            wanted = set(keys)
            rows = self.conn.execute(select(*cols, column.label("_key"))).mappings()
            return [r for r in rows if r["_key"] in wanted]
        out: list = []
        for chunk in _chunks(list(keys)):
            out.extend(self.conn.execute(select(*cols).where(column.in_(chunk))).mappings())
        return out

    def _insert(self, table: Table, rows: Sequence[dict] | Sequence[tuple], *, columns: Sequence[str] | None = None,
                stamps: Sequence[str] = (), key: Sequence[str] = ()) -> dict[Any, int]:
        """Bulk insert ``rows``; ``stamps`` are time columns set to now.

        ``rows`` are dicts (all with the same keys) or, with ``columns``, tuples of those columns
        (the bulk rows of an import: no dict per row to build and take apart again).

        With ``key`` (natural-key columns), returns natural key -> new id, read back in one query
        as the rows above the largest id before the insert (filtered by the keys inserted, so rows
        other writers commit meanwhile are never taken for ours).
        """
        if not rows:
            return {}
        if columns is None:
            names = list(rows[0])  # type: ignore[arg-type]
            width = len(names)
            if any(len(r) != width for r in rows):
                raise AssertionError(f"rows for {table.name} must all have the same columns")
            get = itemgetter(*names)
            tuples: Sequence[tuple] = list(map(get, rows)) if width > 1 else [(get(r),) for r in rows]
        else:
            names = list(columns)
            tuples = rows  # type: ignore[assignment]
        stmt = insert(table)
        if stamps:
            stmt = stmt.values({name: self.now_sql for name in stamps})
        before = (self.conn.execute(select(func.max(table.c.id))).scalar() or 0) if key else 0
        if self.conn.dialect.name == "sqlite":
            self._executemany_sqlite(stmt, table, names, tuples)
        elif not self._copy_postgres(table, names, tuples, stamps):
            # psycopg pipelines a plain executemany (measured 5x faster than multi-row
            # INSERT ... RETURNING batches); COPY, above, is faster still.
            for chunk in _chunks(tuples, 20_000):
                self.conn.execute(stmt, [dict(zip(names, t, strict=True)) for t in chunk])
        if not key:
            return {}
        at = [names.index(k) for k in key]
        keys = list(map(itemgetter(*at), tuples)) if len(at) > 1 else [t[at[0]] for t in tuples]
        if self.conn.dialect.name == "sqlite":
            # Our transaction holds the write lock, and SQLite gives each new row max(rowid) + 1:
            # when the ids above ``before`` are exactly before+1 .. before+n, they are ours, in
            # insert order, and the read-back of 100,000 keys (0.4 s) is not needed.
            top, n = self.conn.execute(select(func.max(table.c.id), func.count()).where(table.c.id > before)).one()
            if n == len(keys) and top == before + n:
                return dict(zip(keys, range(before + 1, top + 1), strict=True))
        wanted = set(keys)
        cols = [table.c[k] for k in key]
        out: dict[Any, int] = {}
        for row in self.conn.execute(select(table.c.id, *cols).where(table.c.id > before)).all():
            k = tuple(row[1:]) if len(key) > 1 else row[1]
            if k in wanted:
                out[k] = row[0]
        return out

    def _copy_postgres(self, table: Table, names: list[str], rows: Sequence[tuple], stamps: Sequence[str]) -> bool:
        """``COPY ... FROM STDIN`` through psycopg: about 10x an executemany for 100,000 rows.

        Used only when psycopg can adapt every value itself (no SQLAlchemy bind processor in
        the way, e.g. JSON); returns False to let the caller insert another way.
        """
        dbapi = self.conn.connection.driver_connection
        if len(rows) < 1000 or not hasattr(dbapi, "cursor") or self.conn.dialect.driver != "psycopg":
            return False
        if any(table.c[n].type._cached_bind_processor(self.conn.dialect) is not None
               and not isinstance(table.c[n].type, Boolean) for n in names):  # ours are real bools
            return False
        quote = self.conn.dialect.identifier_preparer
        columns = ", ".join(quote.quote(n) for n in (*names, *stamps))
        extra = (self.now,) * len(stamps)
        with dbapi.cursor() as cursor, cursor.copy(
                f"COPY {quote.format_table(table)} ({columns}) FROM STDIN") as copy:
            if extra:
                for r in rows:
                    copy.write_row(r + extra)
            else:
                for r in rows:
                    copy.write_row(r)
        return True

    def _executemany_sqlite(self, stmt: Any, table: Table, names: list[str], rows: Sequence[tuple]) -> None:
        """The Core insert, compiled once and run by the driver's executemany on plain tuples.

        SQLAlchemy's per-row parameter processing costs about as much as SQLite's own work for a
        100,000-row insert; here the column types' bind processors run column by column instead.
        """
        dialect = self.conn.dialect
        compiled = stmt.compile(dialect=dialect, column_keys=names)
        order = list(compiled.positiontup or ())
        params: Sequence[tuple] = rows
        if order != names:
            at = [names.index(n) for n in order]
            if len(at) > 1:
                params = list(map(itemgetter(*at), rows))
            else:
                params = [(r[at[0]],) for r in rows] if at else [()] * len(rows)
        processors = []
        for i, name in enumerate(order):
            col_type = table.c[name].type
            process = col_type._cached_bind_processor(dialect)
            if process is None:
                continue
            # None stays None; and the driver binds a bool as the integer 1 or 0, as the processor would.
            if isinstance(col_type, Boolean):
                if all(v is None or type(v) is bool for v in map(itemgetter(i), params)):
                    continue
            elif all(v is None for v in map(itemgetter(i), params)):
                continue
            processors.append((i, process))
        if processors:
            columns = [list(c) for c in zip(*params, strict=True)]
            for i, process in processors:
                columns[i] = [None if v is None else process(v) for v in columns[i]]
            params = list(zip(*columns, strict=True))
        for chunk in _chunks(params, 50_000):
            self.conn.exec_driver_sql(compiled.string, list(chunk))

    def _update(self, table: Table, changes: list[tuple[int, dict]], stamps: Sequence[str] = ()) -> None:
        """Apply ``(id, {column: value})`` changes, one executemany per set of changed columns."""
        groups: dict[tuple[str, ...], list[dict]] = defaultdict(list)
        for row_id, values in changes:
            groups[tuple(sorted(values))].append({"_id": row_id, **{f"v_{k}": v for k, v in values.items()}})
        for cols, params in groups.items():
            values: dict[str, Any] = {c: bindparam(f"v_{c}", type_=table.c[c].type) for c in cols}
            values.update({s: self.now_sql for s in stamps})
            stmt = update(table).where(table.c.id == bindparam("_id")).values(values)
            self.conn.execute(stmt, params)
