"""Per-target job steps: actions at most once per target per job.

A job that acts on many targets (a power cycle, a boot override, a wipe) keeps one row per target in
``job_steps``, keyed by (job, target), with a small state machine::

    pending ──> sent ──> confirmed | failed | expired
       └──────────────> confirmed | failed | expired     (not acted on: already there, unreadable, expired)

The rule that makes an interrupted job safe to resume: **"sent" is committed before the command goes
out.** A process killed with -9 (or a worker lost mid-batch) leaves ``sent`` on exactly the targets it
may have acted on; a resume (or a redelivered batch) *confirms* those by reading their state instead
of acting again, and acts only on the targets still ``pending``. A target marked sent whose command
never left is then confirmed as it stands: at most once, never twice.

Writes stay cheap at 10,000 targets: rows are inserted in bulk, and :class:`SendGate` group-commits the
"sent" marks (every target that became ready while the previous commit ran goes in the next one, so a
wave of N targets costs a handful of transactions, not N), and final states are written in bulk. The
transitions are enforced in SQL (``WHERE state IN (...)``), so a late or duplicate write cannot move a
step backwards.

Everything here takes a session factory (a callable returning a context manager that commits, such as
``lambda: inventory.db.session_scope(engine)``), not a :class:`~fleet.Fleet`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, or_, select, update
from sqlalchemy.orm import Session

from fleet.errors import FleetError
from inventory.models import JobStep, utcnow

__all__ = ["STATES", "TERMINAL", "TRANSITIONS", "SendGate", "SendStopped", "StepLog", "StepRow"]

SessionFactory = Callable[[], AbstractContextManager[Session]]

STATES: tuple[str, ...] = ("pending", "sent", "confirmed", "failed", "expired")
TERMINAL: frozenset[str] = frozenset({"confirmed", "failed", "expired"})
#: The states a step may move to each state from.
TRANSITIONS: dict[str, frozenset[str]] = {
    "sent": frozenset({"pending"}),
    "confirmed": frozenset({"pending", "sent"}),
    "failed": frozenset({"pending", "sent"}),
    "expired": frozenset({"pending", "sent"}),
}
_CHUNK = 500
_TABLE = JobStep.__table__  # Core statements: executemany, no ORM bookkeeping per row


class SendStopped(FleetError):
    """The job was told to stop (SIGTERM, cancel) before this target's command was sent: not acted on."""


@dataclass(frozen=True)
class StepRow:
    """One target of a job and where its action stands."""

    target: str
    state: str
    sent_at: datetime | None
    updated_at: datetime
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "state": self.state,
                "sent_at": self.sent_at.isoformat(timespec="seconds") if self.sent_at else None,
                "updated_at": self.updated_at.isoformat(timespec="seconds"), **self.detail}


class StepLog:
    """The steps of one job, read and written in bulk through ``sessions``."""

    def __init__(self, sessions: SessionFactory, job_id: int) -> None:
        self.sessions = sessions
        self.job_id = job_id

    def open(self, targets: Iterable[str]) -> int:
        """Add a ``pending`` step for each target the job has no step for yet; how many were added."""
        wanted = list(dict.fromkeys(targets))
        with self.sessions() as s:
            have = set(s.execute(select(_TABLE.c.target).where(_TABLE.c.job_id == self.job_id)).scalars())
            now = utcnow()
            rows = [{"job_id": self.job_id, "target": t, "state": "pending", "updated_at": now, "detail": {}}
                    for t in wanted if t not in have]
            for i in range(0, len(rows), 5000):
                s.execute(insert(_TABLE), rows[i:i + 5000])
        return len(rows)

    def states(self) -> dict[str, str]:
        """Target → state."""
        with self.sessions() as s:
            return dict(s.execute(select(_TABLE.c.target, _TABLE.c.state)
                                  .where(_TABLE.c.job_id == self.job_id)).all())

    def rows(self) -> list[StepRow]:
        """Every step of the job, by target."""
        return steps_of(self.sessions, self.job_id)

    def mark_sent(self, targets: Sequence[str], *, also: Callable[[Session, list[str]], None] | None = None
                  ) -> list[str]:
        """Move ``pending`` steps to ``sent`` in one committed transaction; return the targets moved.

        ``also(session, moved)`` runs in the same transaction (the audit row of the batch), so the
        record of the batch and the marks are durable together, before any command is sent."""
        now = utcnow()
        with self.sessions() as s:
            moved = []
            for i in range(0, len(targets), _CHUNK):
                chunk = list(targets[i:i + _CHUNK])
                moved += s.execute(update(_TABLE).where(_TABLE.c.job_id == self.job_id,
                                                        _TABLE.c.target.in_(chunk), _TABLE.c.state == "pending")
                                   .values(state="sent", sent_at=now, updated_at=now)
                                   .returning(_TABLE.c.target)).scalars().all()
            if also is not None and moved:
                also(s, moved)
        return moved

    def finish(self, outcomes: Mapping[str, tuple[str, dict[str, Any]]]) -> None:
        """Write final states in bulk: target → (state, detail). A step already final is left alone."""
        by_state: dict[str, list[dict[str, Any]]] = {}
        now = utcnow()
        for target, (state, detail) in outcomes.items():
            if state not in TRANSITIONS:
                raise ValueError(f"{state!r} is not a final step state ({', '.join(sorted(TERMINAL))})")
            by_state.setdefault(state, []).append({"t": target, "d": dict(detail)})
        if not by_state:
            return
        with self.sessions() as s:
            for state, params in by_state.items():
                stmt = (update(_TABLE).where(_TABLE.c.job_id == self.job_id, _TABLE.c.target == bindparam("t"),
                                             or_(*(_TABLE.c.state == f for f in sorted(TRANSITIONS[state]))))
                        .values(state=state, updated_at=now, detail=bindparam("d")))
                for i in range(0, len(params), 5000):
                    s.connection().execute(stmt, params[i:i + 5000])


def steps_of(sessions: SessionFactory, job_id: int) -> list[StepRow]:
    """The steps of job ``job_id``, by target (empty for a job that keeps none)."""
    with sessions() as s:
        rows = s.execute(select(_TABLE.c.target, _TABLE.c.state, _TABLE.c.sent_at, _TABLE.c.updated_at,
                                _TABLE.c.detail).where(_TABLE.c.job_id == job_id).order_by(_TABLE.c.target)).all()
    return [StepRow(t, st, sent, upd, dict(d or {})) for t, st, sent, upd, d in rows]


class SendGate:
    """``await gate.sent(target)`` returns once the target's "sent" mark is committed (group commit).

    The first waiter starts a commit on the next loop turn; targets that become ready while a commit
    runs (in a thread, so the event loop keeps polling BMCs) join the next one. ``stop`` set: new
    waiters get :class:`SendStopped` (a batch already committed still goes out: it is marked sent).
    ``also`` writes alongside each batch, in its transaction (see :meth:`StepLog.mark_sent`).
    """

    def __init__(self, log: StepLog, *, stop: asyncio.Event | None = None,
                 also: Callable[[Session, list[str]], None] | None = None) -> None:
        self.log = log
        self.stop = stop
        self.also = also
        self.commits = 0
        self._waiting: list[tuple[str, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None

    async def sent(self, target: str) -> None:
        if self.stop is not None and self.stop.is_set():
            raise SendStopped(f"{target}: stopped before its command was sent")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((target, fut))
        if self._task is None:
            self._task = asyncio.create_task(self._flush())
        await fut

    async def _flush(self) -> None:
        try:
            while self._waiting:
                await asyncio.sleep(0)  # let the targets that are ready on this turn join the batch
                batch, self._waiting = self._waiting, []
                if self.stop is not None and self.stop.is_set():
                    for target, fut in batch:
                        fut.set_exception(SendStopped(f"{target}: stopped before its command was sent"))
                    continue
                try:
                    moved = set(await asyncio.to_thread(self.log.mark_sent, [t for t, _ in batch], also=self.also))
                    self.commits += 1
                except BaseException as exc:  # the marks are not durable: none of these may be sent
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc if isinstance(exc, Exception) else SendStopped(str(exc)))
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for target, fut in batch:
                    if fut.done():
                        continue
                    if target in moved:
                        fut.set_result(None)
                    else:  # not pending any more (sent or final already): never send twice
                        fut.set_exception(SendStopped(f"{target}: already sent or finished in this job"))
        finally:
            self._task = None
