"""Sweeps on a schedule: ``fleet sweep --every 5m`` as a service, and unit/crontab text for operators.

- One sweep at a time per inventory: a lock (an ``flock`` on a file beside a SQLite inventory, a
  PostgreSQL advisory lock for a shared one) is taken for each run; a run that finds it held is skipped
  and says so, so a cron job and a service can never overlap.
- SIGTERM or SIGINT lets the current sweep finish and write its readings, then the loop exits 0.
- Runs start on a fixed cadence (every N seconds from the first), not N seconds after the previous run
  ended, so a slow sweep does not drift the schedule; a run that overran its slot starts the next at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from fleet.errors import FleetError, InputError
from fleet.ops.sweep import run_sweep
from fleet.workflows.remediate import run_remediation

if TYPE_CHECKING:
    from fleet.core.context import Context

__all__ = ["crontab_text", "parse_interval", "run_every", "sweep_lock", "systemd_units"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_LOCK_ID = 0x5241_434B  # "RACK": the PostgreSQL advisory lock key of the sweep


def parse_interval(value: str) -> float:
    """``30s``, ``5m``, ``1h``, ``1d`` (or plain seconds) as seconds; at least 10 s."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", value or "")
    if not m:
        raise InputError(f"{value!r} is not an interval (e.g. 30s, 5m, 1h)")
    seconds = float(m[1]) * _UNITS[m[2] or "s"]
    if seconds < 10:
        raise InputError("an interval shorter than 10 s would keep the BMCs busy: use at least 10s")
    return seconds


@contextlib.contextmanager
def sweep_lock(ctx: Context) -> Iterator[bool]:
    """Yield True if this process holds the inventory's sweep lock, False if another one does."""
    url = ctx.engine.url
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        path = Path(f"{url.database}.sweep.lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        return
    if url.get_backend_name() == "postgresql":
        with ctx.engine.connect() as conn:
            got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": _LOCK_ID}).scalar()
            try:
                yield bool(got)
            finally:
                if got:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_ID})
                conn.commit()
        return
    yield True  # an in-memory inventory is this process's alone


def run_every(ctx: Context, interval_s: float, *, selector: Any = None, ups: bool = True,
              on_result: Callable[[Any], None] | None = None, on_skip: Callable[[str], None] | None = None,
              max_runs: int | None = None, facts: bool = False, remediate: bool = False,
              policy: Any = None, on_remediation: Callable[[Any], None] | None = None,
              on_error: Callable[[str], None] | None = None) -> int:
    """Sweep every ``interval_s`` until SIGTERM/SIGINT (or ``max_runs``); returns how many sweeps ran.

    ``facts`` adds SSH facts to each sweep; ``remediate`` applies the policies after each sweep (within
    their limits). A sweep that fails as a whole (e.g. the database unreachable past its retries) is
    reported through ``on_error`` and the service goes on at the next slot rather than exiting.
    """
    stopping = False

    def stop(_signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    runs = 0
    start = time.monotonic()
    slot = 0
    try:
        while not stopping and (max_runs is None or runs < max_runs):
            with sweep_lock(ctx) as held:
                if held:
                    try:
                        result, remediation = asyncio.run(_one(ctx, selector, ups, facts, remediate, policy))
                    except (FleetError, OperationalError) as exc:
                        if on_error is None:
                            raise
                        on_error(f"this sweep failed: {exc}")
                    else:
                        if on_result:
                            on_result(result)
                        if remediation is not None and on_remediation:
                            on_remediation(remediation)
                    runs += 1
                elif on_skip:
                    on_skip("another sweep holds the lock; this run is skipped")
            slot += 1
            if max_runs is not None and runs >= max_runs:
                break
            next_start = start + slot * interval_s
            while not stopping and time.monotonic() < next_start:
                time.sleep(min(0.5, max(0.0, next_start - time.monotonic())))
            if time.monotonic() > next_start + interval_s:  # overran by more than a slot: catch up, once
                slot = int((time.monotonic() - start) // interval_s)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return runs


async def _one(ctx: Context, selector: Any, ups: bool, facts: bool, remediate: bool, policy: Any
               ) -> tuple[Any, Any]:
    try:
        result = await run_sweep(ctx, selector, ups=ups, facts=facts)
        remediation = await run_remediation(ctx, selector, policy=policy, apply=True) if remediate else None
        return result, remediation
    finally:
        await ctx.aclose()


def _fleet_bin() -> str:
    return str(Path(sys.executable).with_name("fleet"))


def systemd_units(*, every: str = "5m", db: str | None = None, user: str = "rackfleet") -> str:
    """A long-running service (``fleet sweep --every``) for systemd, with the environment it needs."""
    interval = parse_interval(every)
    env = f"Environment=FLEET_DB={db}\n" if db else ""
    return f"""# /etc/systemd/system/rackfleet-sweep.service
# Install: systemctl daemon-reload && systemctl enable --now rackfleet-sweep.service
[Unit]
Description=Rackfleet health sweeps every {every}
After=network-online.target postgresql.service
Wants=network-online.target

[Service]
Type=simple
User={user}
{env}Environment=FLEET_KEY_FILE=/etc/rackfleet/secret.key
ExecStart={_fleet_bin()} sweep --every {every}
# SIGTERM lets the current sweep finish and write its readings.
KillSignal=SIGTERM
TimeoutStopSec={int(interval) + 120}
Restart=on-failure
RestartSec=30

[Install]
WantedBy=multi-user.target
"""


def crontab_text(*, every: str = "5m", db: str | None = None) -> str:
    """A crontab line; overlapping runs are prevented by the sweep lock, not by cron."""
    minutes = max(1, int(parse_interval(every) // 60))
    env = f"FLEET_DB={db} " if db else ""
    return (f"# Rackfleet health sweep every {minutes} min (a run that finds the previous one still going is "
            "skipped)\n"
            f"*/{minutes} * * * * {env}FLEET_KEY_FILE=/etc/rackfleet/secret.key {_fleet_bin()} sweep --json "
            ">> /var/log/rackfleet/sweep.jsonl 2>&1\n")
