"""Remediation: open events → the policies' plan (:mod:`fleet.model.policy`) → actions, within limits.

``fleet remediate`` prints the plan (a dry run, the default); ``--apply`` executes it. The planner is
pure; this module gathers its inputs from the inventory (open events as findings, the history of past
remediation actions from the audit log, each server's rack, power state and priority) and carries the
planned actions out through the operations (:mod:`fleet.ops`), recording each one in the audit log as
``remediate`` with the action (``step``), the rule and whether it worked, which is the history the next plan reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select

from fleet.core.targets import hostnames, servers
from fleet.datafiles import data_path
from fleet.errors import FleetError
from fleet.model.events import KINDS
from fleet.model.policy import Finding, PastAction, Plan, PolicySet, load_policies, plan
from fleet.ops.bmc import bmc_reset
from fleet.ops.lifecycle import set_state
from fleet.ops.power_action import power
from fleet.ops.sweep import run_sweep
from fleet.ops.ups import outlet_action
from inventory.models import Audit, Event, Rack, Server, ServerState, Site, Ups, UpsState, WorkOrder, utcnow
from inventory.powerpath import carried_hostnames
from inventory.selectors import parse_selector

if TYPE_CHECKING:
    from fleet.core.context import Context

__all__ = ["DEFAULT_POLICY", "RemediationRun", "execute", "gather", "load", "remediation_plan", "run_remediation"]

DEFAULT_POLICY = data_path("examples", "policies", "default.yaml")  # the checkout's, or the installed copy
_HISTORY = timedelta(days=2)


@dataclass
class RemediationRun:
    plan: Plan
    applied: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {**self.plan.to_dict(), "applied": self.applied}


def gather(ctx: Context, now: datetime) -> dict[str, Any]:
    """The planner's inputs from the inventory: findings, history, racks, power states, priorities."""
    with ctx.engine.connect() as conn:
        servers = conn.execute(select(Server.hostname, Server.state, Server.priority, Site.code, Rack.name,
                                      ServerState.power)
                               .outerjoin(Rack, Rack.id == Server.rack_id).outerjoin(Site, Site.id == Rack.site_id)
                               .outerjoin(ServerState, ServerState.server_id == Server.id)).all()
        events = conn.execute(select(Event.target_kind, Event.target_name, Event.kind, Event.severity,
                                     Event.opened_at, Event.count).where(Event.status != "resolved")).all()
        ups_ids = dict(conn.execute(select(Ups.name, Ups.id)).all())
        # The servers each UPS with an open finding carries: through its PDUs, any number of hops.
        wanted = {ups_ids[t] for k, t, *_ in events if k == "ups" and t in ups_ids}
        feeds = carried_hostnames(conn, {"ups": wanted}) if wanted else {}
        ups_readings = {name: {"runtime_s": runtime, "charge_pct": charge} for name, runtime, charge in conn.execute(
            select(Ups.name, UpsState.runtime_s, UpsState.charge_pct).join(UpsState, UpsState.ups_id == Ups.id))}
        history_rows = conn.execute(select(Audit.ts, Audit.targets, Audit.result, Audit.detail)
                                    .where(Audit.action == "remediate", Audit.ts >= now - _HISTORY)).all()
    state_of = {h: st for h, st, *_ in servers}
    findings = []
    for target_kind, target, kind, severity, opened_at, count in events:
        extra: dict[str, Any] = {}
        value = None
        if target_kind == "ups":  # the servers it feeds, and the reading its kind carries (runtime, charge)
            extra["feeds"] = feeds.get(("ups", ups_ids.get(target, -1)), ())
            reading = KINDS[kind].reading if kind in KINDS else None
            value = ups_readings.get(target, {}).get(reading) if reading else None
        findings.append(Finding(target=target, kind=kind, severity=severity, opened_at=_aware(opened_at),
                                value=value, state=state_of.get(target), count=count, extra=extra))
    history = [PastAction(target=targets[0], action=detail.get("step", ""), at=_aware(ts),
                          ok=result == "ok", rule=detail.get("rule"))
               for ts, targets, result, detail in history_rows if targets]
    return {
        "findings": findings, "history": history, "fleet_size": max(len(servers), 1),
        "rack_of": {h: f"{site}/{rack}" for h, _st, _p, site, rack, _pw in servers if rack},
        "power_state": {h: pw for h, *_rest, pw in servers if pw in ("on", "off")},
        "priority": {h: p for h, _st, p, *_ in servers},
    }


def _aware(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts


def remediation_plan(ctx: Context, policies: PolicySet, *, now: datetime | None = None,
                     selector: Sequence[str] | str | None = None) -> Plan:
    """The plan for the fleet's open events (optionally only the selected servers and their UPSes)."""
    now = now or utcnow()
    inputs = gather(ctx, now)
    if selector:
        keep = set(hostnames(ctx, selector))
        inputs["findings"] = [f for f in inputs["findings"]
                              if f.target in keep or keep & set(f.extra.get("feeds", ()))]
    return plan(policies, inputs.pop("findings"), now=now, **inputs)


async def execute(ctx: Context, the_plan: Plan, *, progress: Any = None) -> list[dict[str, Any]]:
    """Carry out the planned actions in order; each is audited as ``remediate`` (the planner's history).

    ``progress(ok)`` is called after each action."""
    done = []
    for action in the_plan.planned:
        ok, note = True, ""
        try:
            note = await _do(ctx, action.target, action.action, action.reason)
        except FleetError as exc:
            ok, note = False, str(exc)
        with ctx.write() as s:
            ctx.audit(s, "remediate", [action.target], "ok" if ok else "failed", step=action.action,
                         rule=action.rule, reason=action.reason, note=note[:300])
        done.append({"target": action.target, "action": action.action, "rule": action.rule, "ok": ok,
                     "note": note})
        if progress is not None:
            progress(ok)
    return done


async def _do(ctx: Context, target: str, action: str, reason: str) -> str:
    if action == "retry":
        result = await run_sweep(ctx, f"host={target}", ups=False, probe_all=True)
        if target in result.errors:
            raise FleetError(f"still unreachable: {result.errors[target]}")
        return "answered again"
    if action == "bmc-reset":
        await bmc_reset(ctx, target)
        return "BMC cold reset sent"
    if action in ("power-cycle", "soft-shutdown"):
        verb = "cycle" if action == "power-cycle" else "soft"
        results = await power(ctx, verb, f"host={target}", force=True, confirm_timeout_s=120)
        r = results[0]
        if not r.ok:
            raise FleetError(f"{verb}: {r.outcome}: {r.error}")
        return f"{verb}: {r.before} -> {r.after}"
    if action == "outlet-cycle":
        results = await outlet_action(ctx, target, "cycle")
        if not results or not all(r.ok for r in results):
            raise FleetError("; ".join(r.error for r in results if r.error) or "no outlet switched")
        return ", ".join(f"{r.device}:{r.outlet}" for r in results)
    if action == "quarantine":
        rows = servers(ctx, f"host={target}")
        if rows and rows[0].state != "quarantined":
            set_state(ctx, target, "quarantined", reason=f"remediation: {reason}"[:256])
        return "quarantined"
    if action.startswith("work-order:"):
        kind = action.split(":", 1)[1]
        target_kind = "ups" if kind == "battery-replacement" else "server"
        with ctx.write() as s:
            s.execute(insert(WorkOrder).values(kind=kind, target_kind=target_kind, target_name=target,
                                               status="open", reason=reason[:512], external_ref="",
                                               actor=ctx.actor, created_at=utcnow()))
        return f"work order {kind} opened"
    raise FleetError(f"no executor for action {action!r}")


def load(path: str | Path | None) -> PolicySet:
    """The policies at ``path``, else the default set that ships in ``examples/policies/``."""
    return load_policies(path or DEFAULT_POLICY)


async def run_remediation(ctx: Context, selector: str | Sequence[str] | None = None, *,
                          policy: str | Path | None = None, apply: bool = False) -> RemediationRun:
    """Plan remediation of open events by the policies (dry run); with ``apply``, carry it out (audited)."""
    the_plan = remediation_plan(ctx, load(policy), selector=selector)
    run = RemediationRun(the_plan)
    if apply:
        with ctx.job("remediate", str(parse_selector(selector)), params={"policy": str(policy or "")},
                        total=len(the_plan.planned)) as job:
            run.applied = await execute(ctx, the_plan, progress=lambda ok: job.progress(
                advance=1 if ok else 0, failed=job.failed + (0 if ok else 1)))
    return run
