"""Events recorded from findings (opened, updated, resolved), listed and acknowledged; work orders; retention.

The sweeps (:mod:`fleet.ops.sweep`) and SSH facts (:mod:`fleet.ops.facts`) turn what they see into
:class:`Finding` values and :func:`record_events` in their own write transaction; people list and
acknowledge the events here (audited). Work orders (RMA, battery
replacement) are opened by remediation. :func:`prune_readings` keeps the readings table bounded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, insert, select, update

from fleet.errors import InputError, NotFound
from inventory.models import Event, Reading, WorkOrder, utcnow

if TYPE_CHECKING:
    from fleet.core.context import Context

__all__ = ["Finding", "ack_event", "events", "prune_readings", "record_events", "work_orders"]


@dataclass
class Finding:
    """Something a sweep or a facts run saw on one target: an event to open, or to keep open."""

    target_kind: str
    target_id: int
    target_name: str
    kind: str
    severity: str
    message: str



def record_events(conn: Any, now: datetime, findings: Sequence[Finding], judged: dict[tuple[str, int], set[str]]
                  ) -> tuple[list[str], list[str], list[str]]:
    """Open, update and resolve events on ``conn`` (the caller's transaction): (opened, updated, resolved).

    A finding opens an event, or updates the open one of the same target and kind; an open event of a
    kind in ``judged[target]`` that no finding repeats is resolved. Sweeps and SSH facts both record here.
    """
    opened: list[str] = []
    updated: list[str] = []
    resolved: list[str] = []
    open_events = {(e.target_kind, e.target_id, e.kind): e for e in conn.execute(
        select(Event.id, Event.target_kind, Event.target_id, Event.kind, Event.target_name)
        .where(Event.status != "resolved"))}
    seen: set[tuple[str, int, str]] = set()
    for f in findings:
        key = (f.target_kind, f.target_id, f.kind)
        seen.add(key)
        label = f"{f.kind} {f.target_name}"
        if key in open_events:
            conn.execute(update(Event).where(Event.id == open_events[key].id).values(
                updated_at=now, count=Event.count + 1, message=f.message, severity=f.severity))
            updated.append(label)
        else:
            conn.execute(insert(Event).values(
                opened_at=now, updated_at=now, target_kind=f.target_kind, target_id=f.target_id,
                target_name=f.target_name, kind=f.kind, severity=f.severity, status="open", message=f.message,
                count=1, acked_by="", dedup_key=f"{f.kind}:{f.target_kind}:{f.target_id}"))
            opened.append(label)
    for key, ev in open_events.items():
        target_kind, target_id, kind = key
        if key not in seen and kind in judged.get((target_kind, target_id), ()):
            conn.execute(update(Event).where(Event.id == ev.id).values(
                status="resolved", resolved_at=now, updated_at=now, dedup_key=None))
            resolved.append(f"{kind} {ev.target_name}")
    return opened, updated, resolved


def events(ctx: Context, *, status: str | None = "open", kind: str | None = None, limit: int = 200
           ) -> list[dict[str, Any]]:
    """Events, newest first: ``status`` open (default), acked, resolved, or None for all."""
    stmt = select(Event).order_by(Event.id.desc()).limit(limit)
    if status == "open":
        stmt = stmt.where(Event.status != "resolved")
    elif status:
        stmt = stmt.where(Event.status == status)
    if kind:
        stmt = stmt.where(Event.kind == kind)
    with ctx.read() as s:
        return [{"id": e.id, "opened_at": e.opened_at.isoformat(timespec="seconds"),
                 "updated_at": e.updated_at.isoformat(timespec="seconds"),
                 "resolved_at": e.resolved_at.isoformat(timespec="seconds") if e.resolved_at else None,
                 "target_kind": e.target_kind, "target": e.target_name, "kind": e.kind,
                 "severity": e.severity, "status": e.status, "count": e.count, "message": e.message,
                 "acked_by": e.acked_by} for e in s.execute(stmt).scalars()]


def ack_event(ctx: Context, event_id: int) -> None:
    """Acknowledge an open event (it stays open until its condition clears). Audited."""
    with ctx.write() as s:
        ev = s.get(Event, event_id)
        if ev is None or ev.status == "resolved":
            raise NotFound(f"no open event {event_id}")
        ev.status, ev.acked_by, ev.updated_at = "acked", ctx.actor, utcnow()
        ctx.audit(s, "event.ack", [ev.target_name], event=event_id, kind=ev.kind)


def work_orders(ctx: Context, *, status: str | None = "open") -> list[dict[str, Any]]:
    """Work orders (RMA, battery replacement), newest first, for people or a ticketing system."""
    stmt = select(WorkOrder).order_by(WorkOrder.id.desc())
    if status:
        stmt = stmt.where(WorkOrder.status == status)
    with ctx.read() as s:
        return [{"id": w.id, "kind": w.kind, "target_kind": w.target_kind, "target": w.target_name,
                 "status": w.status, "reason": w.reason, "created_at": w.created_at.isoformat(timespec="seconds"),
                 "actor": w.actor, "external_ref": w.external_ref} for w in s.execute(stmt).scalars()]


def prune_readings(ctx: Context, *, older_than_days: float, keep_hourly: bool = True) -> dict[str, int]:
    """Retention: readings older than N days are dropped, or (``keep_hourly``) thinned to one per hour
    per target and metric (the first of each hour). Audited. Returns the rows deleted."""
    if older_than_days <= 0:
        raise InputError("--older-than must be positive")
    cutoff = utcnow() - timedelta(days=older_than_days)
    with ctx.write() as s:
        if keep_hourly:
            hour = func.strftime("%Y-%m-%d %H", Reading.ts) if ctx.engine.dialect.name == "sqlite" \
                else func.date_trunc("hour", Reading.ts)
            keep = (select(func.min(Reading.id)).where(Reading.ts < cutoff)
                    .group_by(Reading.target_kind, Reading.target_id, Reading.metric, hour))
            deleted = s.execute(delete(Reading).where(Reading.ts < cutoff, Reading.id.not_in(keep))).rowcount
        else:
            deleted = s.execute(delete(Reading).where(Reading.ts < cutoff)).rowcount
        ctx.audit(s, "readings.prune", ["readings"], deleted=deleted, older_than_days=older_than_days,
                    keep_hourly=keep_hourly)
    return {"deleted": deleted}
