"""Remediation policies: load, validate, evaluate and plan. Pure logic: no database, no device I/O.

A policy file is YAML::

    limits:                          # global; a rule's own value for a limit replaces the global one
      max_per_rack: 2                # destructive actions per rack at once (in this plan + still settling)
      max_fleet_percent_per_hour: 5  # distinct servers touched destructively in the last hour
      cooldown: 30m                  # per server, between destructive actions
      settle: 10m                    # how long a destructive action counts as "at once" for its rack
    rules:
      - name: unreachable-bmc
        when: {kind: bmc-unreachable, state: [deployed, ready], for: 10m}
        then:
          ladder: [retry, bmc-reset, outlet-cycle, [quarantine, {work-order: rma}]]
        limits: {max_per_rack: 1}

:func:`load_policies` refuses, with ``file:line`` and the key, anything it does not understand.
:func:`plan` turns findings (open events and readings), the history of past attempts and the
fleet's topology into a :class:`Plan`: the actions to take, in order, and those held back with the
limit that held them. The same input always gives the same plan.

Destructive actions (``bmc-reset``, ``power-cycle``, ``outlet-cycle``, ``soft-shutdown``) are the
ones the limits count. Power actions (all of those but ``bmc-reset``) are never planned on a server
whose power state is unknown. ``quarantine``, ``retry`` and work orders are never held by a limit.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from fleet.errors import ValidationError

__all__ = [
    "ACTIONS",
    "DESTRUCTIVE",
    "EVENT_KINDS",
    "POWER_ACTIONS",
    "SEVERITIES",
    "STATES",
    "Condition",
    "Finding",
    "HeldAction",
    "Limits",
    "PastAction",
    "Plan",
    "PlannedAction",
    "PolicySet",
    "Rule",
    "SkippedAction",
    "Step",
    "evaluate",
    "load_policies",
    "matches",
    "parse_duration",
    "parse_policies",
    "plan",
]

# --------------------------------------------------------------------------------------------------
# Vocabulary

#: Event kinds a rule may react to, and the name of the reading a finding of that kind carries in
#: ``Finding.value`` (``None``: no reading). ``value`` is always accepted as a generic name.
EVENT_KINDS: dict[str, str | None] = {
    "bmc-unreachable": None,
    "bmc-auth-failed": None,
    "sel-ecc-uncorrectable": None,
    "sel-critical": None,
    "sensor-critical": "value",
    "sensor-warning": "value",
    "ups-on-battery": "runtime_s",
    "ups-low-runtime": "runtime_s",
    "ups-battery-failing": "charge_pct",
    "disk-failing": None,
    "disk-missing": None,
    "disk-added": None,
    "serial-changed": None,
    "mac-moved": None,
    "mac-missing": None,
    "mac-unknown": None,
}
#: Kinds whose finding is about a UPS (its ``extra["feeds"]`` lists the servers it feeds).
UPS_KINDS = frozenset({"ups-on-battery", "ups-low-runtime", "ups-battery-failing"})

SEVERITIES: tuple[str, ...] = ("info", "warning", "critical")
#: Lifecycle states (the same as ``inventory.models.STATES``; a test keeps them equal).
STATES: tuple[str, ...] = (
    "new", "commissioning", "ready", "deploying", "deployed", "maintenance",
    "failed", "quarantined", "decommissioning", "retired", "rma",
)
WORK_ORDERS: tuple[str, ...] = ("rma", "battery-replacement")

#: Every action, canonical spelling. Escalation rank: a ladder must climb.
_RANK: dict[str, int] = {
    "retry": 0, "bmc-reset": 1, "power-cycle": 2, "outlet-cycle": 3, "soft-shutdown": 3,
    "quarantine": 4, "work-order:rma": 4, "work-order:battery-replacement": 4,
}
ACTIONS: tuple[str, ...] = tuple(_RANK)
POWER_ACTIONS = frozenset({"power-cycle", "outlet-cycle", "soft-shutdown"})
DESTRUCTIVE = frozenset({"bmc-reset"}) | POWER_ACTIONS
#: Actions on a server itself, meaningless for a UPS finding.
_SERVER_ONLY = frozenset({"retry", "bmc-reset", "power-cycle", "outlet-cycle", "quarantine"})
_TERMINAL = frozenset({"quarantine", "work-order:rma", "work-order:battery-replacement"})

_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_COMPARE = re.compile(r"\s*(?:([a-z_][a-z0-9_]*)\s*)?(<=|>=|==|!=|<|>)\s*(-?\d+(?:\.\d+)?)\s*")
_OPS = {
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b,
}


def parse_duration(text: object, *, field: str = "duration", location: str | None = None) -> timedelta:
    """``"90s"``, ``"10m"``, ``"1h30m"``, ``"2d"``. A bare number is refused: say the unit."""
    if isinstance(text, bool) or not isinstance(text, str):
        raise ValidationError(f"a duration needs a unit, like '10m' or '30s' (got {text!r})",
                              field=field, value=text, location=location)
    m = _DURATION.fullmatch(text.strip())
    if not text.strip() or m is None or not any(m.groups()):
        raise ValidationError(f"bad duration {text!r}: use d, h, m, s, like '10m' or '1h30m'",
                              field=field, value=text, location=location)
    d, h, mi, s = (int(g or 0) for g in m.groups())
    return timedelta(days=d, hours=h, minutes=mi, seconds=s)


# --------------------------------------------------------------------------------------------------
# Policy model


@dataclass(frozen=True)
class Compare:
    """``name op number``, e.g. ``runtime_s < 600``."""

    name: str
    op: str
    number: float

    def test(self, x: float) -> bool:
        return _OPS[self.op](x, self.number)

    def __str__(self) -> str:
        return f"{self.name} {self.op} {self.number:g}"


@dataclass(frozen=True)
class Condition:
    """What a finding must be for a rule to apply. Empty tuples mean "any"."""

    kinds: tuple[str, ...]
    severities: tuple[str, ...] = ()
    states: tuple[str, ...] = ()
    reading: Compare | None = None
    held_for: timedelta = timedelta(0)
    count: Compare | None = None


@dataclass(frozen=True)
class Step:
    """One rung of a ladder: its actions are planned together. ``times``: failures before escalating."""

    actions: tuple[str, ...]
    times: int = 1


@dataclass(frozen=True)
class Limits:
    """Blast-radius limits. ``None``: not limited here (a rule inherits the global limits anyway)."""

    max_per_rack: int | None = None
    max_fleet_percent_per_hour: float | None = None
    cooldown: timedelta | None = None
    settle: timedelta | None = None


DEFAULT_LIMITS = Limits(max_per_rack=2, max_fleet_percent_per_hour=5.0,
                        cooldown=timedelta(minutes=30), settle=timedelta(minutes=10))


@dataclass(frozen=True)
class Rule:
    name: str
    when: Condition
    steps: tuple[Step, ...]
    ladder: bool
    limits: Limits = Limits()
    location: str = ""

    @property
    def actions(self) -> frozenset[str]:
        return frozenset(a for s in self.steps for a in s.actions)


@dataclass(frozen=True)
class PolicySet:
    rules: tuple[Rule, ...]
    limits: Limits = DEFAULT_LIMITS
    source: str = ""

    def rule(self, name: str) -> Rule:
        for r in self.rules:
            if r.name == name:
                return r
        raise KeyError(name)


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
# Loading: YAML with line numbers


class _LDict(dict):
    line: int = 0
    key_lines: dict[Any, int]


class _LList(list):
    line: int = 0
    item_lines: list[int]


class _Loader(yaml.SafeLoader):
    pass


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> _LDict:
    loader.flatten_mapping(node)
    d = _LDict()
    d.line = node.start_mark.line + 1
    d.key_lines = {}
    for k_node, v_node in node.value:
        key = loader.construct_object(k_node, deep=True)
        line = k_node.start_mark.line + 1
        if not isinstance(key, str):
            raise ValidationError(f"keys must be text, not {key!r}", field=str(key),
                                  location=f"{loader.name}:{line}")
        if key in d:
            raise ValidationError(f"duplicate key (first at line {d.key_lines[key]})", field=key,
                                  location=f"{loader.name}:{line}")
        d[key] = loader.construct_object(v_node, deep=True)
        d.key_lines[key] = line
    return d


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> _LList:
    lst = _LList(loader.construct_object(c, deep=True) for c in node.value)
    lst.line = node.start_mark.line + 1
    lst.item_lines = [c.start_mark.line + 1 for c in node.value]
    return lst


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


class _Ctx:
    """Where we are: the file name, for ``file:line``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def at(self, line: int) -> str:
        return f"{self.name}:{line}"

    def err(self, message: str, fld: str, line: int, value: object = None) -> ValidationError:
        return ValidationError(message, field=fld, value=value, location=self.at(line))


def _line_of(container: object, key: Any, default: int) -> int:
    if isinstance(container, _LDict):
        return container.key_lines.get(key, container.line)
    if isinstance(container, _LList) and isinstance(key, int) and key < len(container.item_lines):
        return container.item_lines[key]
    return default


def _unknown(ctx: _Ctx, d: _LDict, allowed: Iterable[str], where: str) -> None:
    allowed = list(allowed)
    for key in d:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; known keys: {', '.join(allowed)}"
            raise ctx.err(f"unknown key{' in ' + where if where else ''}{hint}", f"{where}.{key}" if where else key,
                          d.key_lines[key], key)


def _one_of(ctx: _Ctx, value: object, choices: Iterable[str], fld: str, line: int) -> str:
    choices = list(choices)
    if not isinstance(value, str) or value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f"; choose from: {', '.join(choices)}"
        raise ctx.err(f"unknown value {value!r}{hint}", fld, line, value)
    return value


def _names(ctx: _Ctx, value: object, choices: Iterable[str], fld: str, line: int) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ctx.err("an empty list matches nothing; leave the key out to match any", fld, line)
    out = []
    for i, v in enumerate(items):
        out.append(_one_of(ctx, v, choices, fld, _line_of(value, i, line)))
    return tuple(dict.fromkeys(out))


def _compare(ctx: _Ctx, value: object, fld: str, line: int, *, default_name: str | None = None) -> Compare:
    if isinstance(value, int) and not isinstance(value, bool) and default_name == "count":
        return Compare("count", ">=", float(value))
    m = _COMPARE.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise ctx.err(f"bad comparison {value!r}: write it like 'runtime_s < 600' or '>= 3'", fld, line, value)
    name = m.group(1) or default_name
    if name is None:
        raise ctx.err(f"name the reading in {value!r}, like 'runtime_s < 600'", fld, line, value)
    return Compare(name, m.group(2), float(m.group(3)))


def _severities(ctx: _Ctx, value: object, line: int) -> tuple[str, ...]:
    if isinstance(value, str) and value.strip()[:2] in (">=", "<="):
        op, level = value.strip()[:2], value.strip()[2:].strip()
        _one_of(ctx, level, SEVERITIES, "when.severity", line)
        i = SEVERITIES.index(level)
        return SEVERITIES[i:] if op == ">=" else SEVERITIES[: i + 1]
    return _names(ctx, value, SEVERITIES, "when.severity", line)


def _condition(ctx: _Ctx, when: object, line: int) -> Condition:
    if not isinstance(when, _LDict):
        raise ctx.err("'when' must be a mapping with at least 'kind'", "when", line, when)
    _unknown(ctx, when, ("kind", "severity", "state", "reading", "for", "count"), "when")
    if "kind" not in when:
        raise ctx.err("missing 'kind' (the event kind this rule reacts to)", "when.kind", when.line)
    ln = when.key_lines
    kinds = _names(ctx, when["kind"], EVENT_KINDS, "when.kind", ln["kind"])
    ups = {k in UPS_KINDS for k in kinds}
    if len(ups) > 1:
        raise ctx.err("a rule cannot mix UPS kinds and server kinds: they act on different targets",
                      "when.kind", ln["kind"], list(kinds))
    cond = Condition(kinds=kinds)
    if "severity" in when:
        cond = _replace(cond, severities=_severities(ctx, when["severity"], ln["severity"]))
    if "state" in when:
        cond = _replace(cond, states=_names(ctx, when["state"], STATES, "when.state", ln["state"]))
    if "reading" in when:
        cmp = _compare(ctx, when["reading"], "when.reading", ln["reading"])
        for k in kinds:
            if cmp.name not in ("value", EVENT_KINDS[k]):
                have = EVENT_KINDS[k]
                why = f"{k} findings carry {have}" if have else f"{k} findings carry no reading"
                raise ctx.err(f"unknown reading {cmp.name!r}: {why}", "when.reading", ln["reading"], cmp.name)
        cond = _replace(cond, reading=cmp)
    if "for" in when:
        cond = _replace(cond, held_for=parse_duration(when["for"], field="when.for", location=ctx.at(ln["for"])))
    if "count" in when:
        cmp = _compare(ctx, when["count"], "when.count", ln["count"], default_name="count")
        if cmp.name != "count":
            raise ctx.err(f"'count' compares the count, not {cmp.name!r}", "when.count", ln["count"])
        cond = _replace(cond, count=cmp)
    return cond


def _replace(obj: Any, **kw: Any) -> Any:
    from dataclasses import replace
    return replace(obj, **kw)


def _action(ctx: _Ctx, value: object, fld: str, line: int) -> tuple[str, int]:
    """One action: ``"bmc-reset"``, ``{work-order: rma}``, ``"work-order: rma"``, ``{retry: 3}``."""
    if isinstance(value, _LDict):
        if len(value) != 1:
            raise ctx.err(f"an action is one name (or one 'name: argument'), not {dict(value)!r}", fld, line)
        (name, arg), = value.items()
        if name == "work-order":
            return _one_of(ctx, f"work-order:{arg}", [a for a in ACTIONS if a.startswith("work-order:")],
                           fld, line), 1
        if name == "retry":
            if isinstance(arg, bool) or not isinstance(arg, int) or not 1 <= arg <= 20:
                raise ctx.err(f"retry takes a number of tries from 1 to 20, not {arg!r}", fld, line, arg)
            return "retry", arg
        raise ctx.err(f"{name!r} takes no argument (only work-order and retry do)", fld, line, name)
    if isinstance(value, str):
        text = re.sub(r"\s*:\s*", ":", value.strip())
        if text == "work-order":
            raise ctx.err(f"say which work order: work-order: {'|'.join(WORK_ORDERS)}", fld, line, value)
        return _one_of(ctx, text, ACTIONS, fld, line), 1
    raise ctx.err(f"an action must be a name, not {value!r}", fld, line, value)


def _check_step(ctx: _Ctx, actions: Sequence[str], fld: str, line: int, kinds: tuple[str, ...]) -> None:
    seen: set[str] = set()
    for a in actions:
        if a in seen:
            raise ctx.err(f"{a} appears twice", fld, line, a)
        seen.add(a)
        if a in _SERVER_ONLY and kinds[0] in UPS_KINDS:
            raise ctx.err(f"{a} acts on a server, but {kinds[0]} findings are about a UPS", fld, line, a)
    power = sorted(seen & POWER_ACTIONS)
    if len(power) > 1:
        raise ctx.err(f"contradictory: {' and '.join(power)} at once", fld, line, power)
    if "retry" in seen and len(seen) > 1:
        raise ctx.err("retry is a step of its own: it only checks again", fld, line)


def _steps(ctx: _Ctx, then: object, line: int, kinds: tuple[str, ...]) -> tuple[tuple[Step, ...], bool]:
    if isinstance(then, _LDict):
        _unknown(ctx, then, ("ladder",), "then")
        if "ladder" not in then:
            raise ctx.err("'then' is a list of actions or {ladder: [...]}", "then", then.line)
        rungs, lline = then["ladder"], then.key_lines["ladder"]
        if not isinstance(rungs, _LList) or not rungs:
            raise ctx.err("a ladder is a non-empty list of steps", "then.ladder", lline, rungs)
        steps: list[Step] = []
        for i, rung in enumerate(rungs):
            rline = _line_of(rungs, i, lline)
            items = rung if isinstance(rung, _LList) else [rung]
            if not items:
                raise ctx.err("an empty step does nothing", f"then.ladder[{i}]", rline)
            parsed = [_action(ctx, it, f"then.ladder[{i}]", _line_of(items, j, rline)) for j, it in enumerate(items)]
            acts = tuple(a for a, _ in parsed)
            _check_step(ctx, acts, f"then.ladder[{i}]", rline, kinds)
            if "soft-shutdown" in acts:
                raise ctx.err("soft-shutdown is not a rung of a ladder: use it in a plain 'then' list",
                              f"then.ladder[{i}]", rline)
            if steps:
                prev = steps[-1].actions
                term = sorted(set(prev) & _TERMINAL)
                if term:
                    raise ctx.err(f"contradictory ladder: nothing can follow {term[0]}", f"then.ladder[{i}]", rline)
                for a in acts:
                    done = [s for s in steps if a in s.actions]
                    if done:
                        raise ctx.err(f"contradictory ladder: {a} is already an earlier step",
                                      f"then.ladder[{i}]", rline, a)
                if max(_RANK[a] for a in acts) <= max(_RANK[a] for a in prev):
                    raise ctx.err(f"contradictory ladder: {'+'.join(acts)} after {'+'.join(prev)} does not "
                                  "escalate (retry, bmc-reset, power-cycle, outlet-cycle, quarantine/work-order)",
                                  f"then.ladder[{i}]", rline)
            steps.append(Step(acts, max(t for _, t in parsed)))
        return tuple(steps), True
    if isinstance(then, _LList):
        if not then:
            raise ctx.err("'then' needs at least one action", "then", line)
        parsed = [_action(ctx, it, f"then[{j}]", _line_of(then, j, line)) for j, it in enumerate(then)]
        acts = tuple(a for a, _ in parsed)
        _check_step(ctx, acts, "then", then.line, kinds)
        if "retry" in acts:
            raise ctx.err("retry only makes sense as the first step of a ladder", "then", then.line)
        return (Step(acts),), False
    if isinstance(then, str):
        act, _ = _action(ctx, then, "then", line)
        _check_step(ctx, (act,), "then", line, kinds)
        if act == "retry":
            raise ctx.err("retry only makes sense as the first step of a ladder", "then", line)
        return (Step((act,)),), False
    raise ctx.err("'then' is a list of actions or {ladder: [...]}", "then", line, then)


def _limits(ctx: _Ctx, value: object, fld: str, line: int) -> Limits:
    if not isinstance(value, _LDict):
        raise ctx.err("limits must be a mapping", fld, line, value)
    _unknown(ctx, value, ("max_per_rack", "max_fleet_percent_per_hour", "cooldown", "settle"), fld)
    out = Limits()
    ln = value.key_lines
    if "max_per_rack" in value:
        k = value["max_per_rack"]
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ctx.err(f"a whole number of servers (0 forbids), not {k!r}", f"{fld}.max_per_rack",
                          ln["max_per_rack"], k)
        out = _replace(out, max_per_rack=k)
    if "max_fleet_percent_per_hour" in value:
        p = value["max_fleet_percent_per_hour"]
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p <= 100:
            raise ctx.err(f"a percentage from 0 to 100, not {p!r}", f"{fld}.max_fleet_percent_per_hour",
                          ln["max_fleet_percent_per_hour"], p)
        out = _replace(out, max_fleet_percent_per_hour=float(p))
    for key in ("cooldown", "settle"):
        if key in value:
            out = _replace(out, **{key: parse_duration(value[key], field=f"{fld}.{key}",
                                                       location=ctx.at(ln[key]))})
    return out


def _rule(ctx: _Ctx, raw: object, line: int, index: int) -> Rule:
    where = f"rules[{index}]"
    if not isinstance(raw, _LDict):
        raise ctx.err("a rule is a mapping with name, when, then", where, line, raw)
    _unknown(ctx, raw, ("name", "when", "then", "limits", "description"), "")
    for key in ("name", "when", "then"):
        if key not in raw:
            raise ctx.err(f"a rule needs {key!r}", key, raw.line)
    name = raw["name"]
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,62}", name):
        raise ctx.err(f"a rule name is lowercase letters, digits, '-', '_', '.', not {name!r}", "name",
                      raw.key_lines["name"], name)
    when = _condition(ctx, raw["when"], raw.key_lines["when"])
    steps, ladder = _steps(ctx, raw["then"], raw.key_lines["then"], when.kinds)
    limits = _limits(ctx, raw["limits"], "limits", raw.key_lines["limits"]) if "limits" in raw else Limits()
    return Rule(name=name, when=when, steps=steps, ladder=ladder, limits=limits, location=ctx.at(raw.line))


def parse_policies(text: str, name: str = "<policies>") -> PolicySet:
    """Parse and validate policy YAML; errors name ``name:line`` and the key."""
    ctx = _Ctx(name)
    loader = _Loader(text)
    loader.name = name
    try:
        doc = loader.get_single_data()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 1
        raise ValidationError(f"not valid YAML: {e.problem or e}", location=ctx.at(line)) from None
    finally:
        loader.dispose()
    if doc is None:
        raise ValidationError("empty policy file", location=ctx.at(1))
    if isinstance(doc, _LList):
        rules_raw, rline, limits = doc, doc.line, DEFAULT_LIMITS
    elif isinstance(doc, _LDict):
        _unknown(ctx, doc, ("version", "limits", "rules"), "")
        if doc.get("version", 1) != 1:
            raise ctx.err("only version 1 is known", "version", doc.key_lines["version"], doc["version"])
        if "rules" not in doc:
            raise ctx.err("missing 'rules'", "rules", doc.line)
        rules_raw, rline = doc["rules"], doc.key_lines["rules"]
        limits = DEFAULT_LIMITS
        if "limits" in doc:
            given = _limits(ctx, doc["limits"], "limits", doc.key_lines["limits"])
            limits = Limits(*(g if g is not None else d for g, d in zip(
                (given.max_per_rack, given.max_fleet_percent_per_hour, given.cooldown, given.settle),
                (DEFAULT_LIMITS.max_per_rack, DEFAULT_LIMITS.max_fleet_percent_per_hour,
                 DEFAULT_LIMITS.cooldown, DEFAULT_LIMITS.settle), strict=True)))
    else:
        raise ctx.err("a policy file is a mapping (limits, rules) or a list of rules", "", 1, doc)
    if not isinstance(rules_raw, _LList):
        raise ctx.err("'rules' must be a list", "rules", rline, rules_raw)
    rules: list[Rule] = []
    seen: dict[str, str] = {}
    for i, raw in enumerate(rules_raw):
        r = _rule(ctx, raw, _line_of(rules_raw, i, rline), i)
        if r.name in seen:
            raise ctx.err(f"duplicate rule name {r.name!r} (first at {seen[r.name]})", "name",
                          raw.key_lines["name"], r.name)
        seen[r.name] = r.location
        rules.append(r)
    return PolicySet(rules=tuple(rules), limits=limits, source=name)


def load_policies(path: str | Path) -> PolicySet:
    """Load and validate a policy file. Raises :class:`ValidationError` with ``file:line``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ValidationError(f"cannot read policy file: {e.strerror}", location=str(p)) from None
    return parse_policies(text, str(p))


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
