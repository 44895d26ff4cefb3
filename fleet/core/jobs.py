"""Jobs: long operations (sweeps, remediation, power waves, imaging) recorded as they run.

A job row is written when the operation starts (status ``running``, the owner ``host:pid``), its
progress and a heartbeat are written as it goes (at most every ``min_write_s``), and its end status and
result when it finishes: ``done``, ``partial`` (some targets failed), ``failed`` (it raised) or
``cancelled``. A ``running`` job whose owner process is gone from this host (a crash, a kill -9), or
whose heartbeat is older than ``STALE_AFTER_S`` on another host, reads as ``interrupted``: the TUI and
``fleet jobs`` show it, and resumable kinds (imaging) pick their state up from ``params``/``result``.

State lives in the database only, so a later worker on another host can take a job over.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import timedelta
from typing import Any, Protocol

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import OperationalError

from fleet.core.jobsteps import steps_of
from fleet.errors import Busy, NotFound
from fleet.model.views import JobRow
from inventory.db import write_connection
from inventory.models import Job, utcnow

__all__ = ["STALE_AFTER_S", "JobContext", "JobTracker", "get_job", "job_row", "list_jobs", "mark_interrupted",
           "owner_alive"]

STALE_AFTER_S = 300.0
_HOST = socket.gethostname()
log = logging.getLogger(__name__)


def _busy(exc: OperationalError | Busy) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _owner() -> str:
    return f"{_HOST}:{os.getpid()}"


def owner_alive(owner: str) -> bool | None:
    """Is the process that owns a job alive? ``None`` when it runs on another host (unknown here)."""
    host, _, pid = owner.rpartition(":")
    if host != _HOST or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mark_interrupted(engine: Any) -> int:
    """Mark ``running`` jobs whose owner died (this host) or went silent (other hosts) ``interrupted``.

    Reads first and writes only when there is something to mark, so a screen polling the jobs every
    second does not compete with a sweep for SQLite's write lock."""
    with engine.connect() as conn:
        rows = conn.execute(select(Job.id, Job.owner, Job.heartbeat_at).where(Job.status == "running")).all()
    stale_before = utcnow() - timedelta(seconds=STALE_AFTER_S)
    dead = []
    for job_id, owner, beat in rows:
        alive = owner_alive(owner or "")
        if alive is False or (alive is None and (beat is None or beat < stale_before)):
            dead.append(job_id)
    if dead:
        with write_connection(engine) as conn:
            # It ended when it was last heard of (its heartbeat), not when someone noticed.
            conn.execute(update(Job).where(Job.id.in_(dead), Job.status == "running")
                         .values(status="interrupted",
                                 finished_at=func.coalesce(Job.heartbeat_at, Job.started_at, Job.created_at)))
    return len(dead)


class JobContext(Protocol):
    """What a job tracker needs of its context (:class:`fleet.core.context.Context` has it)."""

    actor: str
    engine: Any

    def write(self) -> AbstractContextManager[Any]: ...

    def read(self) -> AbstractContextManager[Any]: ...


class JobTracker:
    """Record one operation as a job: ``with JobTracker(ctx, "sweep", selector) as job: job.progress(...)``.

    The tracker writes in its own short transactions, so a job's row is visible to other processes
    (the TUI) while it runs. An exception inside the block marks the job ``failed`` and propagates.
    """

    def __init__(self, ctx: JobContext | None, kind: str, selector: str = "", *, params: dict[str, Any] | None = None,
                 total: int = 0, min_write_s: float = 0.5, job_id: int | None = None,
                 sessions: Callable[[], AbstractContextManager[Any]] | None = None, actor: str | None = None) -> None:
        #: ``ctx`` (:class:`fleet.core.context.Context`) may be None when ``sessions`` (a committing
        #: session factory) and ``actor`` are given.
        if ctx is None and (sessions is None or actor is None):
            raise TypeError("JobTracker needs a context, or both sessions and actor")
        self._sessions = sessions or ctx.write  # type: ignore[union-attr]
        self.actor = actor if actor is not None else ctx.actor  # type: ignore[union-attr]
        self.kind = kind
        self.selector = selector[:512]
        self.params = dict(params or {})
        self.total = total
        self.done = 0
        self.failed = 0
        self.result: dict[str, Any] = {}
        self.status = "done"
        self.id: int | None = job_id
        self._min_write_s = min_write_s
        self._last_write = 0.0
        self._started = utcnow()
        self._trailing: Any = None  # the deferred write of throttled progress (asyncio handle)

    def __enter__(self) -> JobTracker:
        self._started = utcnow()
        self._insert_or_take_over()
        self._last_write = time.monotonic()
        return self

    def _insert_or_take_over(self) -> bool:
        """Write the job's row; False when the database is busy (locked): bookkeeping never stops the work,
        the row is written at the next progress or at the end."""
        now = utcnow()
        try:
            with self._sessions() as s:
                if self.id is None:
                    self.id = s.execute(insert(Job).values(
                        kind=self.kind, selector=self.selector, params=self.params, status="running",
                        total=self.total, actor=self.actor, owner=_owner(), created_at=self._started,
                        started_at=self._started, heartbeat_at=now, result={}).returning(Job.id)).scalar_one()
                else:  # taking over (resuming) an existing job
                    s.execute(update(Job).where(Job.id == self.id).values(
                        status="running", owner=_owner(), heartbeat_at=now, finished_at=None))
        except (OperationalError, Busy) as exc:
            if not _busy(exc):
                raise
            log.warning("job %s: database busy, its row will be written later", self.kind)
            return False
        return True

    def progress(self, done: int | None = None, *, failed: int | None = None, total: int | None = None,
                 advance: int = 0, force: bool = False, **result: Any) -> None:
        """Update counters (absolute ``done``/``failed``/``total`` or ``advance``); written at most every
        ``min_write_s`` unless ``force``; a throttled update is written when the interval is up even if no
        further call comes (a trailing write, inside an event loop), and always at the end. Keyword
        arguments merge into the job's result."""
        if done is not None:
            self.done = done
        self.done += advance
        if failed is not None:
            self.failed = failed
        if total is not None:
            self.total = total
        self.result.update(result)
        now = time.monotonic()
        if force or now - self._last_write >= self._min_write_s:
            self._flush()
        elif self._trailing is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._trailing = loop.call_later(self._min_write_s - (now - self._last_write), self._flush)

    def phase(self, name: str) -> None:
        """Enter a phase of the job (``reading``, ``writing``...): recorded in its result, written now."""
        self.progress(force=True, phase=name)

    def _flush(self) -> None:
        if self._trailing is not None:
            self._trailing.cancel()
            self._trailing = None
        self._write()
        self._last_write = time.monotonic()

    def save_params(self, **params: Any) -> None:
        """Persist resumable state now (imaging keeps its per-server progress here)."""
        self.params.update(params)
        self._write()

    def _write(self, *, final: bool = False, **extra: Any) -> None:
        attempts = 6 if final else 1
        for attempt in range(attempts):
            try:
                if self.id is None and not self._insert_or_take_over():
                    raise OperationalError("insert job", {}, Exception("database is locked"))
                with self._sessions() as s:
                    s.execute(update(Job).where(Job.id == self.id).values(
                        done=self.done, failed=self.failed, total=self.total, result=dict(self.result),
                        params=dict(self.params), heartbeat_at=utcnow(), **extra))
                return
            except (OperationalError, Busy) as exc:
                if not _busy(exc):
                    raise
                if attempt + 1 < attempts:
                    time.sleep(0.5 * (attempt + 1))
        log.warning("job %s: database busy, %s", self.kind,
                    "its end could not be recorded" if final else "progress not recorded this time")

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if self._trailing is not None:
            self._trailing.cancel()
            self._trailing = None
        if exc is not None:
            cancelled = isinstance(exc, (KeyboardInterrupt, SystemExit)) or exc_type.__name__ == "CancelledError"
            self.status = "cancelled" if cancelled else "failed"
            self.result["error"] = str(exc)[:500] or exc_type.__name__
        elif self.status == "done" and self.failed:
            self.status = "partial"
        self._write(final=True, status=self.status, finished_at=utcnow())


def job_row(j: Job) -> JobRow:
    """The result type of a job row."""
    return JobRow(id=j.id or 0, kind=j.kind, selector=j.selector, status=j.status, total=j.total, done=j.done,
                  failed=j.failed, actor=j.actor, owner=j.owner, created_at=j.created_at, started_at=j.started_at,
                  finished_at=j.finished_at, heartbeat_at=j.heartbeat_at, params=dict(j.params or {}),
                  result=dict(j.result or {}))


def list_jobs(ctx: JobContext, *, kind: str | None = None, status: str | None = None, limit: int = 50
              ) -> list[JobRow]:
    """Jobs newest first; a running job whose process died reads as ``interrupted``."""
    mark_interrupted(ctx.engine)
    with ctx.read() as s:
        q = select(Job).order_by(Job.id.desc()).limit(limit)
        if kind:
            q = q.where(Job.kind == kind)
        if status:
            q = q.where(Job.status == status)
        return [job_row(j) for j in s.execute(q).scalars()]


def get_job(ctx: JobContext, job_id: int) -> JobRow:
    """One job with its per-target steps."""
    mark_interrupted(ctx.engine)
    with ctx.read() as s:
        j = s.get(Job, job_id)
        if j is None:
            raise NotFound(f"no job {job_id}")
        row = job_row(j)
    return replace(row, steps=tuple(steps_of(ctx.write, job_id)))
