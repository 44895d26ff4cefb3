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

The modules, in the order they build on each other:

- :mod:`~fleet.model.policy.language`: the actions, states, limits and durations of the language,
  and the parsed model (:class:`PolicySet`, :class:`Rule`, :class:`Condition`, :class:`Step`).
  The event kinds a rule may name are :mod:`fleet.model.events`'.
- :mod:`~fleet.model.policy.loader`: :func:`load_policies` refuses, with ``file:line`` and the key,
  anything it does not understand.
- :mod:`~fleet.model.policy.planner`: :func:`plan` turns findings (open events and readings), the
  history of past attempts and the fleet's topology into a :class:`Plan`: the actions to take, in
  order, and those held back with the limit that held them. The same input always gives the same plan.
"""

from fleet.model.policy.language import (
    ACTIONS,
    DESTRUCTIVE,
    POWER_ACTIONS,
    STATES,
    Condition,
    Limits,
    PolicySet,
    Rule,
    Step,
    parse_duration,
)
from fleet.model.policy.loader import load_policies, parse_policies
from fleet.model.policy.planner import (
    Finding,
    HeldAction,
    PastAction,
    Plan,
    PlannedAction,
    SkippedAction,
    evaluate,
    matches,
    plan,
)

__all__ = [
    "ACTIONS",
    "DESTRUCTIVE",
    "POWER_ACTIONS",
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
