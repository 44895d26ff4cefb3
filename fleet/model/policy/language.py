"""The policy language: its actions, states and limits, durations, and the parsed model of a policy file.

What :mod:`fleet.model.policy.loader` builds from YAML and :mod:`fleet.model.policy.planner` plans
with: :class:`PolicySet` (the global :class:`Limits` and the rules), :class:`Rule` (a
:class:`Condition` on findings, the steps of its ladder (:class:`Step`), its own limits). The event
kinds a condition may name are :mod:`fleet.model.events`'. Pure data, no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from fleet.errors import ValidationError

__all__ = [
    "ACTIONS",
    "DEFAULT_LIMITS",
    "DESTRUCTIVE",
    "POWER_ACTIONS",
    "STATES",
    "WORK_ORDERS",
    "Compare",
    "Condition",
    "Limits",
    "PolicySet",
    "Rule",
    "Step",
    "parse_duration",
]

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
# The model of a policy file


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

