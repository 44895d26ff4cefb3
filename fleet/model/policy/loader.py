"""Loading policy files: YAML with line numbers, validated into a :class:`~fleet.model.policy.language.PolicySet`.

:func:`load_policies` and :func:`parse_policies` refuse, with ``file:line``, the key and what would
be right, anything they do not understand: an unknown key, action, state or event kind (the kinds
are :data:`fleet.model.events.KINDS`), a duration without a unit, a ladder that does not escalate,
a duplicate key or rule name.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from fleet.errors import ValidationError
from fleet.model.events import KINDS, SEVERITIES, UPS_KINDS
from fleet.model.policy.language import (
    _RANK,
    _SERVER_ONLY,
    _TERMINAL,
    ACTIONS,
    DEFAULT_LIMITS,
    POWER_ACTIONS,
    STATES,
    WORK_ORDERS,
    Compare,
    Condition,
    Limits,
    PolicySet,
    Rule,
    Step,
    parse_duration,
)

__all__ = ["load_policies", "parse_policies"]

_COMPARE = re.compile(r"\s*(?:([a-z_][a-z0-9_]*)\s*)?(<=|>=|==|!=|<|>)\s*(-?\d+(?:\.\d+)?)\s*")

# --------------------------------------------------------------------------------------------------
# YAML with line numbers


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


# --------------------------------------------------------------------------------------------------
# Validation: YAML → the model


def _condition(ctx: _Ctx, when: object, line: int) -> Condition:
    if not isinstance(when, _LDict):
        raise ctx.err("'when' must be a mapping with at least 'kind'", "when", line, when)
    _unknown(ctx, when, ("kind", "severity", "state", "reading", "for", "count"), "when")
    if "kind" not in when:
        raise ctx.err("missing 'kind' (the event kind this rule reacts to)", "when.kind", when.line)
    ln = when.key_lines
    kinds = _names(ctx, when["kind"], KINDS, "when.kind", ln["kind"])
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
            have = KINDS[k].reading
            if cmp.name not in ("value", have):
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

