"""A disruptive power action as a durable, resumable job: intent first, "sent" before each command.

:func:`run_power_job` wraps :func:`fleet.ops.power.run_power` so that an action cut short (kill -9, SIGTERM,
a crash) says exactly which servers were acted on, and a resume does not act on them twice:

1. **Intent, before anything is sent**: the job row, a ``pending`` step per target
   (:mod:`fleet.core.jobsteps`) and an audit row ``power.ACTION`` with result ``started`` (who, the targets).
2. **Each target as its command goes out**: its step moves to ``sent`` and an audit row (result
   ``sent``, the batch's targets) is written in the same transaction, committed *before* the command
   is sent; marks are group-committed, so a wave costs a few transactions, not one per server.
3. **The outcome**: steps ``confirmed`` (state read back) or ``failed``, in bulk; the confirmed power
   state becomes each server's latest state (``server_state``: power, when, which job), so ``fleet
   list`` shows it before the next sweep; a closing audit row with the counts, as before.

``stop`` set (the CLI sets it on SIGTERM): nothing more is sent, confirmation polls end, the job is
``cancelled`` with what it did recorded. A resume (:func:`resume_spec`, ``fleet power --resume JOB``)
confirms the targets marked ``sent`` by reading their state, acts only on those still ``pending``,
and leaves finished ones as they ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from fleet.core.jobs import JobTracker, mark_interrupted, owner_alive
from fleet.core.jobsteps import SendGate, StepLog
from fleet.errors import Busy, InputError, NotFound
from fleet.ops.power import PowerPlan, PowerResult, run_power, summarise
from inventory.models import Audit, Job, Server, ServerState, utcnow

__all__ = ["PowerRun", "ResumeSpec", "resume_spec", "run_power_job"]

SessionFactory = Callable[[], AbstractContextManager[Session]]
#: Outcomes whose step is final: confirmed (state read back as the goal) or failed.
_CONFIRMED = frozenset({"done", "already", "confirmed"})
_FAILED = frozenset({"failed", "timeout", "skipped", "unknown-state"})
_RESUMABLE = ("interrupted", "cancelled", "failed")
_PLAN_KEYS = ("concurrency", "wave_size", "stagger_s", "confirm_timeout_s", "poll_interval_s")


class PowerRun(list):  # type: ignore[type-arg]
    """The results of a power job, by host name, with the job's id and whether it was stopped."""

    job_id: int | None = None
    stopped: bool = False


@dataclass(frozen=True)
class ResumeSpec:
    """What an interrupted power job was doing, read back from its row and steps."""

    job_id: int
    action: str
    selector: str
    options: dict[str, Any]
    forced_past: list[str]
    states: dict[str, str]
    finished: dict[str, dict[str, Any]]

    @property
    def sent(self) -> list[str]:
        return sorted(t for t, s in self.states.items() if s == "sent")

    @property
    def pending(self) -> list[str]:
        return sorted(t for t, s in self.states.items() if s == "pending")


def audit_row(session: Session, actor: str, action: str, targets: Sequence[str], result: str,
              **detail: Any) -> None:
    """One audit entry (who, what, which targets, how it ended), in ``session``'s transaction."""
    session.execute(insert(Audit).values(ts=utcnow(), actor=actor, action=action, targets=list(targets)[:1000],
                                         target_count=len(targets), result=result, detail=detail))


def resume_spec(engine: Any, sessions: SessionFactory, job_id: int) -> ResumeSpec:
    """Read an interrupted power job back; refuses a job that runs, finished or is not a power job."""
    mark_interrupted(engine)
    with sessions() as s:
        job = s.get(Job, job_id)
        if job is None:
            raise NotFound(f"no job {job_id}")
        kind, status, owner = job.kind, job.status, job.owner
        params, selector, result = dict(job.params or {}), job.selector, dict(job.result or {})
    if kind != "power":
        raise InputError(f"job {job_id} is a {kind} job, not a power job")
    if status == "running" and owner_alive(owner or "") is not False:
        raise InputError(f"job {job_id} is still running (owner {owner})")
    if status not in _RESUMABLE and status != "running":
        raise InputError(f"job {job_id} is {status}: nothing to resume")
    log = StepLog(sessions, job_id)
    rows = log.rows()
    if not rows:
        raise InputError(f"job {job_id} recorded no targets (it predates per-target steps): nothing to resume")
    return ResumeSpec(job_id, str(params.get("action", "")), selector,
                      {k: params[k] for k in _PLAN_KEYS if k in params}, list(result.get("forced_past", [])),
                      {r.target: r.state for r in rows},
                      {r.target: {"state": r.state, **r.detail} for r in rows if r.state not in ("pending", "sent")})


def _step_of(r: PowerResult) -> tuple[str, dict[str, Any]] | None:
    detail = {"outcome": r.outcome, "before": r.before, "after": r.after, "error": r.error[:300]}
    if r.outcome in _CONFIRMED:
        return "confirmed", detail
    if r.outcome in _FAILED:
        return "failed", detail
    return None  # not-sent (still pending) or unconfirmed (still sent): a resume picks it up


def record_confirmed_power(sessions: SessionFactory, results: Sequence[PowerResult], source: str) -> int:
    """Make each confirmed power state its server's latest state (when, and ``source``); how many."""
    seen = {r.hostname: r.after for r in results if r.outcome in _CONFIRMED and r.after in ("on", "off")}
    if not seen:
        return 0
    now = utcnow()
    names = list(seen)
    with sessions() as s:
        ids: dict[str, int] = {}
        for i in range(0, len(names), 500):
            ids.update(s.execute(select(Server.hostname, Server.id).where(Server.hostname.in_(names[i:i + 500]))).all())
        have: set[int] = set()
        sids = list(ids.values())
        for i in range(0, len(sids), 500):
            have.update(s.execute(select(ServerState.server_id).where(
                ServerState.server_id.in_(sids[i:i + 500]))).scalars())
        table = ServerState.__table__
        updates = [{"sid": ids[h], "p": p} for h, p in seen.items() if h in ids and ids[h] in have]
        if updates:
            s.connection().execute(update(table).where(table.c.server_id == bindparam("sid")).values(
                power=bindparam("p"), power_at=now, power_source=source, updated_at=now), updates)
        fresh = [{"server_id": ids[h], "power": p, "power_at": now, "power_source": source, "updated_at": now,
                  "summary": {}} for h, p in seen.items() if h in ids and ids[h] not in have]
        if fresh:
            s.execute(insert(table), fresh)
    return len(seen)


async def run_power_job(sessions: SessionFactory, actor: str, action: str, selector: str,
                        pairs: Sequence[tuple[Any, Any]], problems: Sequence[str], *, forced_past: Sequence[str] = (),
                        progress: Callable[[PowerResult], None] | None = None, stop: asyncio.Event | None = None,
                        resume: ResumeSpec | None = None, **options: Any) -> PowerRun:
    """Run a disruptive ``action`` on ``pairs`` ((Target, PowerControl)) as a job; see the module docstring.

    ``problems`` are "host: why" lines for selected servers that cannot be acted on (recorded failed).
    ``options`` are :class:`~fleet.ops.power.PowerPlan`'s (concurrency, wave_size, ...). With ``resume``,
    the job is taken over: its sent targets are confirmed, its pending ones acted on.
    """
    verb = f"power.{action}"
    hostnames = [t.name for t, _ in pairs]
    problem_hosts = {p.partition(": ")[0]: p.partition(": ")[2] for p in problems}
    everyone = sorted(set(hostnames) | set(problem_hosts) | set(resume.states if resume else ()))
    params = {"action": action, **{k: v for k, v in options.items() if k in _PLAN_KEYS}}
    tracker = JobTracker(None, "power", selector, params=params, total=len(everyone), min_write_s=0.25,
                         job_id=resume.job_id if resume else None, sessions=sessions, actor=actor)
    stop = stop or asyncio.Event()
    run = PowerRun()
    with tracker as job:
        if job.id is None:
            raise Busy("the inventory is busy: the power job could not be recorded, so nothing was sent; retry")
        run.job_id = job.id
        log = StepLog(sessions, job.id)
        log.open(everyone)
        with sessions() as s:  # the intent: durable before any command
            audit_row(s, actor, verb, everyone, "started", job=job.id, forced_past=list(forced_past),
                      **({"resumed": True, "sent_before": len(resume.sent)} if resume else {}))
        if problem_hosts:
            log.finish({h: ("failed", {"outcome": "failed", "error": why}) for h, why in problem_hosts.items()
                        if not resume or resume.states.get(h) == "pending"})
        job.result["forced_past"] = list(forced_past)
        finished = dict(resume.finished) if resume else {}
        job.done = sum(1 for f in finished.values() if f["state"] == "confirmed")
        job.failed = len(finished) - job.done + len(problem_hosts)
        todo = [(t, d) for t, d in pairs if t.name not in finished]

        def batch_audit(session: Session, moved: list[str]) -> None:
            audit_row(session, actor, verb, moved, "sent", job=job.id)

        def tick(res: PowerResult) -> None:
            if res.ok:
                job.progress(advance=1)
            elif res.outcome in _FAILED:
                job.progress(failed=job.failed + 1)
            if progress is not None:
                progress(res)

        gate = SendGate(log, stop=stop, also=batch_audit)
        plan = PowerPlan(action, list(todo), progress=tick, gate=gate.sent,  # type: ignore[arg-type]
                         confirm_only=frozenset(resume.sent) if resume else frozenset(), stop=stop,
                         **{k: v for k, v in options.items() if k in _PLAN_KEYS})
        results = await run_power(plan) if todo else []
        log.finish({r.hostname: step for r in results if (step := _step_of(r)) is not None})
        record_confirmed_power(sessions, results, f"{verb} job {job.id}")
        for host, f in finished.items():
            results.append(PowerResult(host, action, ok=f["state"] == "confirmed", before=f.get("before", "unknown"),
                                       after=f.get("after", "unknown"), outcome=f.get("outcome", f["state"]),
                                       error=f.get("error", "")))
        for host, why in problem_hosts.items():
            if host not in finished:
                results.append(PowerResult(host, action, ok=False, outcome="failed", error=why))
        results.sort(key=lambda r: r.hostname)
        counts = summarise(results)
        job.result["outcomes"] = counts
        job.result["sent_marks_commits"] = gate.commits
        run.stopped = stop.is_set()
        if run.stopped:
            job.status = "cancelled"
            job.result["stopped"] = "stop requested (SIGTERM): no further command sent"
        ok = sum(r.ok for r in results)
        verdict = ("interrupted" if run.stopped else "ok" if ok == len(results) else "failed" if ok == 0
                   else "partial")
        with sessions() as s:
            audit_row(s, actor, verb, [r.hostname for r in results], verdict, job=job.id, outcomes=counts,
                      forced_past=list(forced_past),
                      failures={r.hostname: r.error for r in results if not r.ok and r.error}
                      if len(results) <= 200 else {"count": len(results) - ok})
    run.extend(results)
    return run
