"""Planning: findings, the history of past attempts and the fleet's topology → a :class:`Plan`.

:func:`plan` is a pure function: the actions to take, in order, and those held back with the limit
that held them, or skipped; the same input (in any order) always gives the same plan. Destructive
actions (``bmc-reset``, ``power-cycle``, ``outlet-cycle``, ``soft-shutdown``) are the ones the limits
count. Power actions (all of those but ``bmc-reset``) are never planned on a server whose power
state is unknown. ``quarantine``, ``retry`` and work orders are never held by a limit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from fleet.model.events import UPS_KINDS
from fleet.model.policy.language import DESTRUCTIVE, POWER_ACTIONS, PolicySet, Rule

__all__ = [
    "Finding",
    "HeldAction",
    "PastAction",
    "Plan",
    "PlannedAction",
    "SkippedAction",
    "evaluate",
    "matches",
    "plan",
]

# --------------------------------------------------------------------------------------------------
# Facts and results


@dataclass(frozen=True)
class Finding:
    """An open event or a reading about ``target`` (a server, or a UPS for the ``ups-*`` kinds).

    ``value`` is the reading (``runtime_s`` for UPS kinds, the sensor value...), ``count`` how many
    times it was seen, ``state`` the server's lifecycle state, ``extra`` anything else (for a UPS:
    ``feeds``, the servers it feeds).
    """

    target: str
    kind: str
    severity: str
    opened_at: datetime
    value: float | None = None
    state: str | None = None
    count: int = 1
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class PastAction:
    """An attempt already made: ``ok`` is whether it did what it was asked. ``rule`` when known."""

    target: str
    action: str
    at: datetime
    ok: bool
    rule: str | None = None


@dataclass(frozen=True)
class PlannedAction:
    target: str
    action: str
    rule: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"target": self.target, "action": self.action, "rule": self.rule, "reason": self.reason}


@dataclass(frozen=True)
class HeldAction:
    """An action a limit held back. ``limit`` is the limit's key, ``detail`` says why in words."""

    target: str
    action: str
    rule: str
    reason: str
    limit: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"target": self.target, "action": self.action, "rule": self.rule, "reason": self.reason,
                "limit": self.limit, "detail": self.detail}


@dataclass(frozen=True)
class SkippedAction:
    """Not needed now (already done, awaiting a result, ladder exhausted): not a limit at work."""

    target: str
    action: str
    rule: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"target": self.target, "action": self.action, "rule": self.rule, "detail": self.detail}


@dataclass(frozen=True)
class Plan:
    """``planned`` in the order to execute them; ``held`` and ``skipped`` for the operator."""

    planned: tuple[PlannedAction, ...] = ()
    held: tuple[HeldAction, ...] = ()
    skipped: tuple[SkippedAction, ...] = ()

    def to_dict(self) -> dict[str, list[dict[str, str]]]:
        return {"planned": [a.to_dict() for a in self.planned], "held": [a.to_dict() for a in self.held],
                "skipped": [a.to_dict() for a in self.skipped]}

# --------------------------------------------------------------------------------------------------
# Evaluation


def matches(rule: Rule, finding: Finding, now: datetime) -> bool:
    """Does ``finding`` satisfy ``rule.when`` at ``now``?"""
    c = rule.when
    if finding.kind not in c.kinds:
        return False
    if c.severities and finding.severity not in c.severities:
        return False
    if c.states and finding.state not in c.states:
        return False
    if c.reading is not None and (finding.value is None or not c.reading.test(finding.value)):
        return False
    if now - finding.opened_at < c.held_for:
        return False
    return not (c.count is not None and not c.count.test(finding.count))


def evaluate(policy_set: PolicySet, facts: Iterable[Finding], now: datetime) -> list[tuple[Rule, Finding]]:
    """Every (rule, finding) that matches: rules in file order, findings by target, kind, time."""
    ordered = sorted(facts, key=_finding_key)
    return [(r, f) for r in policy_set.rules for f in ordered if matches(r, f, now)]


def _finding_key(f: Finding) -> tuple[Any, ...]:
    return (f.target, f.kind, f.opened_at, f.severity, f.value if f.value is not None else -math.inf, f.count)


def _describe(rule: Rule, f: Finding) -> str:
    bits = [f"{f.kind} on {f.target}"]
    if rule.when.reading is not None and f.value is not None:
        bits.append(f"{rule.when.reading.name}={f.value:g}")
    if rule.when.held_for:
        bits.append(f"open since {f.opened_at.isoformat()}")
    if f.count > 1:
        bits.append(f"seen {f.count} times")
    return ", ".join(bits)


# --------------------------------------------------------------------------------------------------
# Planning


class _Planner:
    def __init__(self, ps: PolicySet, history: Sequence[PastAction], now: datetime, fleet_size: int,
                 rack_of: Mapping[str, str], power_state: Mapping[str, str], priority: Mapping[str, int]):
        self.ps, self.now, self.fleet_size = ps, now, fleet_size
        self.rack_of, self.power_state, self.priority = rack_of, power_state, priority
        self.history = sorted(history, key=lambda h: (h.at, h.target, h.action, h.ok, h.rule or ""))
        self.by_target: dict[str, list[PastAction]] = {}
        for h in self.history:
            self.by_target.setdefault(h.target, []).append(h)
        self.planned: list[PlannedAction] = []
        self.held: list[HeldAction] = []
        self.skipped: list[SkippedAction] = []
        self.keys: set[tuple[str, str]] = set()
        self.destructive_targets: set[str] = set()

    # -- limits
    def _limit(self, rule: Rule, name: str) -> Any:
        """The rule's own value when it sets one, else the global one."""
        own = getattr(rule.limits, name)
        return own if own is not None else getattr(self.ps.limits, name)

    def fleet_cap(self, pct: float) -> int:
        """Servers per hour ``pct`` allows: rounded down, but at least one unless ``pct`` is 0."""
        return max(1, math.floor(self.fleet_size * pct / 100.0)) if pct > 0 else 0

    def rack_busy(self, rack: str) -> set[str]:
        """Servers of ``rack`` with a destructive action in this plan or still settling from one."""
        settle = self.ps.limits.settle or timedelta(0)
        busy = {h.target for h in self.history if h.action in DESTRUCTIVE
                and self.now - settle < h.at <= self.now and self.rack_of.get(h.target) == rack}
        return busy | {p.target for p in self.planned
                       if p.action in DESTRUCTIVE and self.rack_of.get(p.target) == rack}

    def fleet_touched(self) -> set[str]:
        """Servers with a destructive action in the last hour or in this plan."""
        hour = timedelta(hours=1)
        touched = {h.target for h in self.history
                   if h.action in DESTRUCTIVE and self.now - hour < h.at <= self.now}
        return touched | {p.target for p in self.planned if p.action in DESTRUCTIVE}

    def _check(self, rule: Rule, target: str, action: str) -> tuple[str, str] | None:
        """The limit that holds (target, action) back, as (key, words); ``None`` if free to go."""
        if action in POWER_ACTIONS:
            key = f"outlet:{target}" if action == "outlet-cycle" and f"outlet:{target}" in self.power_state \
                else target
            state = self.power_state.get(key)
            if state not in ("on", "off"):
                return ("unknown-power-state",
                        f"never act on an unknown power state ({target} is {state or 'not known'})")
            if state == "off" and action != "soft-shutdown":
                return ("power-off", f"{target} is off: cycling it would power it on")
        if action not in DESTRUCTIVE:
            return None
        if target in self.destructive_targets:
            return ("one-per-server", f"{target} already has a destructive action in this plan")
        cooldown = self._limit(rule, "cooldown") or timedelta(0)
        last = [h for h in self.by_target.get(target, ()) if h.action in DESTRUCTIVE and h.at <= self.now]
        if last and cooldown and self.now - last[-1].at < cooldown:
            until = last[-1].at + cooldown
            return ("cooldown", f"{last[-1].action} on {target} at {last[-1].at.isoformat()}; "
                                f"cooldown until {until.isoformat()}")
        rack = self.rack_of.get(target)
        if rack is None:
            return ("unknown-rack", f"{target} has no known rack: the per-rack limit cannot be kept")
        k = self._limit(rule, "max_per_rack")
        if k is not None:
            busy = self.rack_busy(rack)
            if len(busy) >= k:
                return ("max_per_rack", f"rack {rack} already has {len(busy)} destructive action(s) "
                                        f"at once; the limit is {k}")
        pct = self._limit(rule, "max_fleet_percent_per_hour")
        if pct is not None:
            cap = self.fleet_cap(pct)
            touched = self.fleet_touched()
            if target not in touched and len(touched) >= cap:
                return ("max_fleet_percent_per_hour",
                        f"{len(touched)} of {self.fleet_size} servers acted on in the last hour; "
                        f"the limit is {pct:g}% ({cap})")
        return None

    def offer(self, rule: Rule, target: str, action: str, reason: str) -> None:
        if (target, action) in self.keys:
            return
        held = self._check(rule, target, action)
        self.keys.add((target, action))
        if held is not None:
            self.held.append(HeldAction(target, action, rule.name, reason, held[0], held[1]))
            return
        self.planned.append(PlannedAction(target, action, rule.name, reason))
        if action in DESTRUCTIVE:
            self.destructive_targets.add(target)

    def skip(self, rule: Rule, target: str, action: str, detail: str) -> None:
        if (target, action) not in self.keys:
            self.skipped.append(SkippedAction(target, action, rule.name, detail))

    # -- rules
    def attempts(self, target: str, action: str, since: datetime) -> list[PastAction]:
        return [h for h in self.by_target.get(target, ()) if h.action == action and since <= h.at <= self.now]

    def run(self, rule: Rule, f: Finding) -> None:
        reason = _describe(rule, f)
        if f.kind in UPS_KINDS:
            self.run_ups(rule, f, reason)
            return
        verify = max(self._limit(rule, "cooldown") or timedelta(0), self.ps.limits.settle or timedelta(0))
        for i, step in enumerate(rule.steps):
            last_step = i == len(rule.steps) - 1
            pending: list[str] = []
            failed_out = succeeded = False
            last_at: datetime | None = None
            for a in step.actions:
                tries = self.attempts(f.target, a, f.opened_at)
                if not tries:
                    pending.append(a)
                    continue
                last_at = max(last_at, tries[-1].at) if last_at else tries[-1].at
                if tries[-1].ok:
                    succeeded = True
                elif last_step or sum(not t.ok for t in tries) < step.times:
                    pending.append(a)
                else:
                    failed_out = True
            if pending:
                for a in pending:
                    if a == "quarantine" and f.state == "quarantined":
                        self.skip(rule, f.target, a, f"{f.target} is already quarantined")
                        continue
                    why = reason if i == 0 else f"{reason}; step {i} ({'+'.join(rule.steps[i - 1].actions)}) " \
                                                "did not cure it"
                    self.offer(rule, f.target, a, why)
                return
            if last_step:
                self.skip(rule, f.target, "+".join(step.actions), "every step done; the finding is still open"
                          if rule.ladder else "already done")
                return
            if succeeded and not failed_out and last_at is not None and self.now - last_at < verify:
                self.skip(rule, f.target, "+".join(rule.steps[i + 1].actions),
                          f"{'+'.join(step.actions)} succeeded at {last_at.isoformat()}; waiting until "
                          f"{(last_at + verify).isoformat()} to see whether it cured {f.kind}")
                return
            # failed, or succeeded without curing it: climb

    def run_ups(self, rule: Rule, f: Finding, reason: str) -> None:
        feeds = sorted(set(f.extra.get("feeds", ()) or ()),
                       key=lambda s: (-self.priority[s] if s in self.priority else -math.inf, s))
        for a in rule.steps[0].actions:
            if a != "soft-shutdown":
                if any(h.ok for h in self.attempts(f.target, a, f.opened_at)):
                    self.skip(rule, f.target, a, "already done")
                else:
                    self.offer(rule, f.target, a, reason)
                continue
            for server in feeds:
                if self.power_state.get(server) == "off":
                    self.skip(rule, server, a, f"{server} is already off")
                    continue
                if any(h.ok for h in self.attempts(server, a, f.opened_at)):
                    self.skip(rule, server, a, f"{server} was already asked to shut down")
                    continue
                prio = self.priority.get(server)
                why = f"{reason}; fed by {f.target}, priority {prio if prio is not None else 'none'}"
                self.offer(rule, server, a, why)


def plan(policy_set: PolicySet, facts: Sequence[Finding], *, history: Sequence[PastAction], now: datetime,
         fleet_size: int, rack_of: Mapping[str, str], power_state: Mapping[str, str],
         priority: Mapping[str, int]) -> Plan:
    """What to do about ``facts`` now, within every limit. Deterministic: a pure function of its input.

    ``history``: past attempts (all targets; those after a finding opened drive its ladder, those in
    the last hour the fleet-wide limit, the last destructive one per server its cooldown).
    ``power_state``: ``"on"``/``"off"`` per server (``"outlet:HOST"`` for the outlet feeding HOST,
    preferred for outlet-cycle); anything else is unknown. ``priority``: lower numbers shut down last;
    servers without one shut down first. ``rack_of``: server → rack.
    """
    if fleet_size <= 0:
        raise ValueError("fleet_size must be positive")
    p = _Planner(policy_set, history, now, fleet_size, rack_of, power_state, priority)
    for rule, f in evaluate(policy_set, facts, now):
        p.run(rule, f)
    return Plan(tuple(p.planned), tuple(p.held), tuple(p.skipped))
