"""`fleet migrate` figure: a SQLite inventory with N readings copied into a private PostgreSQL schema.

    .venv/bin/python bench/migrate.py [--readings 200000]

Prints the wall and CPU time of ``inventory.migrate.migrate`` (schema creation included) and, beside
it, the floor: the readings alone read from SQLite and written with one plain Core ``executemany``
per chunk into another empty schema, measured in the same run. Nothing here is asserted.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, insert, select, text

REPO = Path(__file__).resolve().parent.parent
while str(REPO) in sys.path:
    sys.path.remove(str(REPO))
sys.path.insert(0, str(REPO))

from inventory.db import make_engine, upgrade  # noqa: E402
from inventory.migrate import CHUNK, migrate  # noqa: E402
from inventory.models import Reading  # noqa: E402

PG = os.environ.get("FLEET_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--readings", type=int, default=200_000)
    args = parser.parse_args()
    admin = create_engine(PG, isolation_level="AUTOCOMMIT")
    schemas = [f"bench_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    with tempfile.TemporaryDirectory() as tmp, admin.connect() as conn:
        for s in schemas:
            conn.execute(text(f'CREATE SCHEMA "{s}"'))
        try:
            source = make_engine(str(Path(tmp) / "fleet.db"))
            upgrade(source)
            t0 = datetime(2025, 1, 1, tzinfo=UTC)
            with source.begin() as c:
                c.execute(insert(Reading), [{"ts": t0 + timedelta(seconds=i), "target_kind": "server",
                                             "target_id": i % 1000, "metric": "inlet_temp", "value": i / 3,
                                             "unit": "C"} for i in range(args.readings)])
            target = make_engine(PG, pg_schema=schemas[0])
            wall, cpu = time.perf_counter(), _cpu()
            result = migrate(source, target)
            wall, cpu = time.perf_counter() - wall, _cpu() - cpu
            floor_target = make_engine(PG, pg_schema=schemas[1])
            upgrade(floor_target)
            fwall, fcpu = time.perf_counter(), _cpu()
            with source.connect() as src, floor_target.begin() as dst:
                rows = src.execution_options(yield_per=CHUNK).execute(select(Reading.__table__))
                for part in rows.partitions(CHUNK):
                    dst.execute(insert(Reading.__table__), [dict(r._mapping) for r in part])
            fwall, fcpu = time.perf_counter() - fwall, _cpu() - fcpu
            print(f"migrate: {sum(result.counts.values())} rows ({args.readings} readings) in {wall:.2f} s wall, "
                  f"{cpu:.2f} s CPU (schema creation included)")
            print(f"floor (readings only, plain Core executemany): {fwall:.2f} s wall, {fcpu:.2f} s CPU; "
                  f"ratio {wall / fwall:.2f}")
            target.dispose()
            floor_target.dispose()
            source.dispose()
        finally:
            for s in schemas:
                conn.execute(text(f'DROP SCHEMA "{s}" CASCADE'))


if __name__ == "__main__":
    main()
