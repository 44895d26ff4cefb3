"""The power operation over a selector: resume, blast radius, driver chains, the durable job; budgeted power-on.

:func:`power` is what ``fleet power`` and every workflow call. It resolves the servers and their power
chains, checks the blast radius (refusals audited), and runs :func:`fleet.ops.power.run_power` (query,
act, confirm) directly for ``status``, or as a durable job (:mod:`fleet.ops.power_job`: intent first,
"sent" before each command) for an action, so that a resume never acts twice. With ``budget``, a
power-on goes in the waves :func:`power_on_plan` computes from the power path (:mod:`fleet.model.budget`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from fleet.core.targets import CHUNK, AnySelector, bmc_targets, rack_occupancy, servers
from fleet.drivers.chain import power_chains
from fleet.errors import InputError, NotFound
from fleet.model.budget import Element, Load, plan_power_on
from fleet.ops.bmc import each
from fleet.ops.power import ACTIONS, BlastRadius, PowerPlan, PowerResult, check_blast_radius, run_power, summarise
from fleet.ops.power_job import resume_spec, run_power_job
from inventory.models import Pdu, PowerFeed, Server, Ups
from inventory.powerpath import server_elements
from inventory.selectors import parse_selector

if TYPE_CHECKING:
    from fleet.core.context import Context

__all__ = ["budgeted_on", "inrush_window", "power", "power_loads", "power_on_plan"]


async def power(ctx: Context, action: str, selector: AnySelector, *, force: bool = False,
                concurrency: int = 64, wave_size: int = 0, stagger_s: float = 0.0,
                confirm_timeout_s: float = 60.0, poll_interval_s: float = 1.0,
                limits: Any = None, progress: Any = None, budget: bool = False,
                resume: int | None = None, stop: Any = None) -> list[Any]:
    """Query, act and confirm ``action`` on the selected servers (see :mod:`fleet.ops.power`). Audited.

    A disruptive action runs as a job with a step per server, "sent" recorded before each command
    (:mod:`fleet.ops.power_job`); ``resume`` (a job id; ``action``/``selector`` are then the job's)
    confirms what that job sent and acts only on what it never sent. ``stop`` (an asyncio.Event)
    stops sending. With ``budget`` (``on`` only), servers are switched on in the waves of
    :func:`power_on_plan`, an inrush window apart; servers that would put a feed, UPS or PDU over
    capacity are not switched.
    """
    if budget:
        if action != "on":
            raise InputError("--budget plans a power-on: use it with 'on'")
        return await budgeted_on(ctx, selector, concurrency=concurrency, confirm_timeout_s=confirm_timeout_s,
                                       poll_interval_s=poll_interval_s, progress=progress, max_wave=wave_size)
    spec = resume_spec(ctx.engine, ctx.write, resume) if resume is not None else None
    if spec is not None:
        action, selector = spec.action, [f"host={','.join(sorted(spec.states))}"]
    if action not in ACTIONS:
        raise InputError(f"unknown power action {action!r}; actions: {', '.join(ACTIONS)}")
    sel = parse_selector(selector)
    if sel.is_empty and action != "status":
        raise InputError("name the servers (a selector); an empty selector would mean the whole fleet")
    targets, problems = bmc_targets(ctx, sel)
    hostnames = [h for h, _, _ in targets]
    if not targets and not problems:
        raise NotFound(f"no servers match {str(sel)!r}")
    if spec is not None:  # the job's own limits were checked (or forced) when it started
        reasons = spec.forced_past
    else:
        try:
            everyone = hostnames + [p.split(":")[0] for p in problems]
            reasons = check_blast_radius(limits or BlastRadius(), action, everyone,
                                         rack_occupancy(ctx, everyone), force=force)
        except InputError as exc:
            if action != "status":
                ctx.audit_failure(f"power.{action}", hostnames, exc, refused=True)
            raise
    pairs = power_chains([(ts, p) for _, ts, p in targets], ctx.driver)
    options = dict(concurrency=concurrency, wave_size=wave_size, stagger_s=stagger_s,
                   confirm_timeout_s=confirm_timeout_s, poll_interval_s=poll_interval_s)
    if action == "status":
        results = await run_power(PowerPlan(action, pairs, progress=progress, **options))  # type: ignore[arg-type]
        for problem in problems:
            host, _, why = problem.partition(": ")
            results.append(PowerResult(host, action, ok=False, outcome="failed", error=why))
        return sorted(results, key=lambda r: r.hostname)
    return await run_power_job(ctx.write, ctx.actor, action, spec.selector if spec else str(sel), pairs,
                               problems, forced_past=reasons, progress=progress, stop=stop, resume=spec,
                               **(spec.options if spec else options))


async def power_on_plan(ctx: Context, selector: AnySelector, *, max_wave: int = 0
                        ) -> tuple[Any, list[str]]:
    """Plan a budgeted power-on of the selected servers (see :mod:`fleet.model.budget`); nothing is switched.

    Servers already on, and those whose state cannot be read, count as drawing their steady load.
    Returns the plan and warnings.
    """
    targets, problems = bmc_targets(ctx, selector)
    hostnames = [h for h, _, _ in targets]
    if not targets:
        raise NotFound(f"no servers with a BMC match {str(parse_selector(selector))!r}")
    statuses = await each(ctx, f"host={','.join(hostnames)}", "power", "power status",
                                lambda d, t: d.power_status(t))
    loads, warnings = power_loads(ctx, hostnames)
    off = [loads[h] for h, state, err in statuses if not err and state == "off"]
    running = [loads[h] for h, state, err in statuses if err or state != "off"]
    warnings += [f"{h}: state unknown ({err}); counted as drawing power, not switched" for h, _, err in statuses
                 if err]
    warnings += problems
    plan = plan_power_on(off, window_s=inrush_window(ctx, hostnames), max_wave=max_wave, already_on=running)
    plan.unknown = {h: err for h, _, err in statuses if err}
    return plan, warnings


def power_loads(ctx: Context, hostnames: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """Each server's draw (from its profile) and the feeds, UPSes and PDUs on its power path.

    A server's path is every element above each of its outlets, through any number of hops
    (:func:`inventory.powerpath.server_elements`); a server with no outlet on record hangs on its
    rack's feeds. Elements with no known capacity are left out, with a warning.
    """
    warnings: list[str] = []
    loads: dict[str, Any] = {}
    with ctx.read() as s:
        rows: list[Any] = []
        for i in range(0, len(hostnames), CHUNK):
            rows += s.execute(select(Server.id, Server.hostname, Server.profile, Server.priority,
                                        Server.rack_id).where(Server.hostname.in_(hostnames[i:i + CHUNK]))).all()
        above = server_elements(s, [r.id for r in rows])
        objects = {kind: {o.id: o for o in s.execute(select(model).where(model.id.in_(
            {h.id for hops in above.values() for h in hops if h.kind == kind}))).scalars()}
            for kind, model in (("feed", PowerFeed), ("ups", Ups), ("pdu", Pdu))}
    cache: dict[tuple[str, int], Any] = {}

    def element(kind: str, obj: Any) -> Any:
        key = (kind, obj.id)
        if key not in cache:
            capacity = obj.capacity_w
            if not capacity and kind != "feed" and obj.profile in ctx.profiles:
                power = ctx.profiles.get(obj.profile).power
                capacity = getattr(power, "capacity_w", None) if power else None
            if not capacity:
                warnings.append(f"{kind} {obj.name} has no capacity on record: not budgeted")
            cache[key] = Element(kind, obj.name, float(capacity)) if capacity else None
        return cache[key]

    for row in rows:
        profile = ctx.profile(row.profile)
        power = profile.power if profile is not None else None
        peak = getattr(power, "peak_w", None) if power else None
        if not peak:
            warnings.append(f"{row.hostname}: profile {row.profile} gives no peak watts; 500 W assumed")
            peak = 500.0
        factor = getattr(power, "inrush_factor", None) or 1.5
        elements = [element(h.kind, objects[h.kind][h.id]) for h in above.get(row.id, ())]
        loads[row.hostname] = Load(row.hostname, float(peak), float(factor), row.priority,
                                   tuple(el for el in elements if el is not None))
    return loads, sorted(set(warnings))


def inrush_window(ctx: Context, hostnames: Sequence[str]) -> float:
    """The longest inrush window among these servers' profiles (2 s when none says)."""
    windows = [2.0]
    for name in {r.profile for r in servers(ctx, f"host={','.join(hostnames)}")} if hostnames else ():
        power = ctx.profiles.get(name).power if name in ctx.profiles else None
        if power is not None and getattr(power, "inrush_window_s", None):
            windows.append(float(power.inrush_window_s))
    return max(windows)


async def budgeted_on(ctx: Context, selector: Any, *, concurrency: int, confirm_timeout_s: float,
                      poll_interval_s: float, progress: Any, max_wave: int) -> list[Any]:
    """Switch on in the waves of :func:`power_on_plan`, an inrush window apart; audited as one action."""
    plan, warnings = await power_on_plan(ctx, selector, max_wave=max_wave)
    targets = {h: (ts, p) for h, ts, p in bmc_targets(ctx, selector)[0]}
    results: list[Any] = []
    for number, wave in enumerate(plan.waves):
        if number:
            await asyncio.sleep(plan.window_s)  # the previous wave's inrush is over
        pairs = power_chains([targets[load.hostname] for load in wave], ctx.driver)
        wave_results = await run_power(PowerPlan("on", pairs, concurrency=concurrency,
                                                 confirm_timeout_s=confirm_timeout_s,
                                                 poll_interval_s=poll_interval_s, progress=progress))
        for r in wave_results:
            r.wave = number
        results += wave_results
    results += [PowerResult(ld.hostname, "on", ok=False, outcome="over-budget", error=why)
                for ld, why in plan.unplannable]
    results += [PowerResult(ld.hostname, "on", ok=False, outcome="unknown-state",
                            error=f"state unknown, not acted on: {plan.unknown[ld.hostname]}")
                if ld.hostname in plan.unknown else
                PowerResult(ld.hostname, "on", ok=True, before="on", after="on", outcome="already")
                for ld in plan.baseline]
    results.sort(key=lambda r: r.hostname)
    ok = sum(r.ok for r in results)
    with ctx.write() as s:
        ctx.audit(s, "power.on", [r.hostname for r in results],
                    "ok" if ok == len(results) else ("failed" if not ok else "partial"),
                    budget=plan.to_json()["peak_loads"], waves=len(plan.waves), outcomes=summarise(results),
                    warnings=warnings[:50])
    return results
