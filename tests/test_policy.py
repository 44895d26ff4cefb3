"""Remediation policies: strict loading with file:line, ladders, limits, determinism."""

from __future__ import annotations

import math
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.errors import ValidationError
from fleet.model.policy import (
    DESTRUCTIVE,
    POWER_ACTIONS,
    STATES,
    Finding,
    PastAction,
    Plan,
    PolicySet,
    load_policies,
    parse_duration,
    parse_policies,
    plan,
)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT / "examples" / "policies" / "default.yaml"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

LADDER = """\
limits:
  max_per_rack: 2
  max_fleet_percent_per_hour: 50
  cooldown: 30m
  settle: 10m
rules:
  - name: unreachable
    when: {kind: bmc-unreachable, state: [deployed, ready], for: 10m}
    then:
      ladder: [retry, bmc-reset, outlet-cycle, [quarantine, work-order: rma]]
"""


def policies(text: str) -> PolicySet:
    return parse_policies(textwrap.dedent(text), "p.yaml")


def dead(host: str, minutes: int = 60, state: str = "deployed") -> Finding:
    return Finding(host, "bmc-unreachable", "critical", NOW - timedelta(minutes=minutes), state=state)


def did(host: str, action: str, minutes_ago: float, ok: bool = False, rule: str | None = None) -> PastAction:
    return PastAction(host, action, NOW - timedelta(minutes=minutes_ago), ok, rule)


def run(ps: PolicySet, facts, history=(), *, fleet_size=100, rack_of=None, power=None, priority=None) -> Plan:
    hosts = {f.target for f in facts} | {h.target for h in history}
    return plan(ps, facts, history=history, now=NOW, fleet_size=fleet_size,
                rack_of=rack_of if rack_of is not None else dict.fromkeys(hosts, "R1"),
                power_state=power if power is not None else dict.fromkeys(hosts, "on"),
                priority=priority or {})


def actions(p: Plan) -> list[tuple[str, str]]:
    return [(a.target, a.action) for a in p.planned]


# ---------------------------------------------------------------------------------------------- loading


def test_the_default_policy_file_loads() -> None:
    ps = load_policies(DEFAULT)
    names = [r.name for r in ps.rules]
    assert "unreachable-server" in names and "ups-low-runtime" in names
    ladder = ps.rule("unreachable-server")
    assert ladder.ladder
    assert [s.actions for s in ladder.steps] == [("retry",), ("bmc-reset",), ("outlet-cycle",),
                                                  ("quarantine", "work-order:rma")]
    assert ps.limits.max_per_rack is not None and ps.limits.cooldown is not None


def test_states_match_the_inventory() -> None:
    from inventory.models import STATES as INVENTORY_STATES

    assert STATES == INVENTORY_STATES


def test_every_event_kind_the_product_emits_can_be_named_in_a_rule() -> None:
    from fleet.model.events import KINDS, UPS_KINDS

    for kind in KINDS:
        action = "work-order: battery-replacement" if kind in UPS_KINDS else "quarantine"
        ps = policies(f"rules:\n  - name: a\n    when: {{kind: {kind}}}\n    then: [{action}]\n")
        assert ps.rules[0].when.kinds == (kind,)


def test_a_kind_nothing_emits_is_refused_with_file_and_line() -> None:
    with pytest.raises(ValidationError) as e:
        policies("rules:\n  - name: a\n    when:\n      kind: [bmc-unreachable, sel-critical]\n"
                 "    then: [quarantine]\n")
    assert e.value.location == "p.yaml:4" and "unknown value 'sel-critical'" in str(e.value)


@pytest.mark.parametrize(("text", "line", "fld", "words"), [
    # unknown key in a rule, with a suggestion
    ("rules:\n  - name: a\n    when: {kind: disk-failing}\n    then: [quarantine]\n    limit: {}\n",
     5, "limit", "did you mean 'limits'"),
    # unknown key in when
    ("rules:\n  - name: a\n    when:\n      kind: disk-failing\n      severty: critical\n    then: [quarantine]\n",
     5, "when.severty", "did you mean 'severity'"),
    # bad duration
    ("rules:\n  - name: a\n    when:\n      kind: bmc-unreachable\n      for: 10x\n    then: [quarantine]\n",
     5, "when.for", "bad duration '10x'"),
    # duration without a unit
    ("limits:\n  cooldown: 600\nrules: []\n", 2, "limits.cooldown", "needs a unit"),
    # unknown action
    ("rules:\n  - name: a\n    when: {kind: disk-failing}\n    then:\n      - quarantine\n      - reboot\n",
     6, "then[1]", "unknown value 'reboot'"),
    # unknown event kind
    ("rules:\n  - name: a\n    when:\n      kind: bmc-unreachble\n    then: [quarantine]\n",
     4, "when.kind", "did you mean 'bmc-unreachable'"),
    # unknown work order
    ("rules:\n  - name: a\n    when: {kind: disk-failing}\n    then:\n      - work-order: refund\n",
     5, "then[0]", "work-order:refund"),
    # unknown lifecycle state
    ("rules:\n  - name: a\n    when:\n      kind: disk-failing\n      state: [deployed, broken]\n"
     "    then: [quarantine]\n",
     5, "when.state", "'broken'"),
    # ladder that de-escalates
    ("rules:\n  - name: a\n    when: {kind: bmc-unreachable}\n    then:\n      ladder:\n        - outlet-cycle\n"
     "        - bmc-reset\n", 7, "then.ladder[1]", "does not escalate"),
    # ladder step repeated
    ("rules:\n  - name: a\n    when: {kind: bmc-unreachable}\n    then:\n      ladder:\n        - bmc-reset\n"
     "        - [bmc-reset, quarantine]\n", 7, "then.ladder[1]", "already an earlier step"),
    # something after the terminal step
    ("rules:\n  - name: a\n    when: {kind: bmc-unreachable}\n    then:\n      ladder:\n        - quarantine\n"
     "        - work-order: rma\n", 7, "then.ladder[1]", "nothing can follow quarantine"),
    # two power actions at once
    ("rules:\n  - name: a\n    when: {kind: sensor-critical}\n    then: [soft-shutdown, power-cycle]\n",
     4, "then", "contradictory"),
    # a server action on a UPS finding
    ("rules:\n  - name: a\n    when: {kind: ups-low-runtime}\n    then: [outlet-cycle]\n",
     4, "then", "about a UPS"),
    # a reading the kind does not carry
    ("rules:\n  - name: a\n    when:\n      kind: ups-low-runtime\n      reading: temp_c > 90\n"
     "    then: [soft-shutdown]\n",
     5, "when.reading", "carry runtime_s"),
    # a malformed threshold
    ("rules:\n  - name: a\n    when:\n      kind: ups-low-runtime\n      reading: runtime_s < lots\n"
     "    then: [soft-shutdown]\n", 5, "when.reading", "bad comparison"),
    # missing then
    ("rules:\n  - name: a\n    when: {kind: disk-failing}\n", 2, "then", "needs 'then'"),
    # duplicate rule names
    ("rules:\n  - name: a\n    when: {kind: disk-failing}\n    then: [quarantine]\n"
     "  - name: a\n    when: {kind: mac-moved}\n    then: [quarantine]\n", 5, "name", "duplicate rule name"),
    # duplicate key (PyYAML would silently keep the last)
    ("rules:\n  - name: a\n    name: b\n    when: {kind: disk-failing}\n    then: [quarantine]\n",
     3, "name", "duplicate key"),
    # bad global limit
    ("limits:\n  max_per_rack: -1\nrules: []\n", 2, "limits.max_per_rack", "whole number"),
    ("limits:\n  max_fleet_percent_per_hour: 150\nrules: []\n", 2, "limits.max_fleet_percent_per_hour",
     "percentage"),
])
def test_validation_errors_name_file_line_and_key(tmp_path: Path, text: str, line: int, fld: str,
                                                  words: str) -> None:
    path = tmp_path / "policies.yaml"
    path.write_text(text)
    with pytest.raises(ValidationError) as exc:
        load_policies(path)
    err = exc.value
    assert err.location == f"{path}:{line}", str(err)
    assert err.field == fld, str(err)
    assert words in str(err)
    assert str(err).startswith(f"{path}:{line}:")


def test_broken_yaml_is_reported_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("rules:\n  - name: a\n    when: {kind: disk-failing\n    then: [quarantine]\n")
    with pytest.raises(ValidationError, match=r"not valid YAML") as exc:
        load_policies(path)
    assert exc.value.location is not None and exc.value.location.startswith(f"{path}:")


def test_durations() -> None:
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("2d") == timedelta(days=2)
    for bad in ("", "10", "m", "10x", "1m1h", 10):
        with pytest.raises(ValidationError):
            parse_duration(bad)


def test_severity_range_and_count() -> None:
    ps = policies("""\
        rules:
          - name: noisy-ecc
            when: {kind: sel-ecc-uncorrectable, severity: ">= warning", count: ">= 3"}
            then: [work-order: rma]
    """)
    f = Finding("s1", "sel-ecc-uncorrectable", "warning", NOW, count=2)
    assert actions(run(ps, [f])) == []
    assert actions(run(ps, [Finding("s1", "sel-ecc-uncorrectable", "warning", NOW, count=3)])) == \
        [("s1", "work-order:rma")]
    assert actions(run(ps, [Finding("s1", "sel-ecc-uncorrectable", "info", NOW, count=9)])) == []


# ---------------------------------------------------------------------------------------------- ladder


def test_for_waits_until_the_condition_held_long_enough() -> None:
    ps = policies(LADDER)
    assert run(ps, [dead("s1", minutes=5)]).planned == ()
    assert actions(run(ps, [dead("s1", minutes=10)])) == [("s1", "retry")]


def test_the_ladder_escalates_only_after_failures() -> None:
    ps = policies(LADDER)
    f = dead("s1")
    assert actions(run(ps, [f])) == [("s1", "retry")]
    assert actions(run(ps, [f], [did("s1", "retry", 50)])) == [("s1", "bmc-reset")]
    history = [did("s1", "retry", 50), did("s1", "bmc-reset", 45)]
    assert actions(run(ps, [f], history)) == [("s1", "outlet-cycle")]
    history.append(did("s1", "outlet-cycle", 10))
    assert actions(run(ps, [f], history)) == [("s1", "quarantine"), ("s1", "work-order:rma")]
    history += [did("s1", "quarantine", 1, ok=True), did("s1", "work-order:rma", 1, ok=True)]
    p = run(ps, [f], history)
    assert p.planned == () and p.held == ()
    assert "every step done" in p.skipped[0].detail


def test_a_step_that_succeeded_is_given_time_before_escalating() -> None:
    ps = policies(LADDER)
    f = dead("s1")
    # The BMC reset went through 2 minutes ago: wait (settle/cooldown) before cycling the outlet.
    history = [did("s1", "retry", 50), did("s1", "bmc-reset", 2, ok=True)]
    p = run(ps, [f], history)
    assert p.planned == ()
    assert "waiting until" in p.skipped[0].detail
    # 40 minutes later and still unreachable: the reset did not cure it.
    history = [did("s1", "retry", 50), did("s1", "bmc-reset", 40, ok=True)]
    assert actions(run(ps, [f], history)) == [("s1", "outlet-cycle")]


def test_attempts_before_the_finding_opened_belong_to_another_episode() -> None:
    ps = policies(LADDER)
    old = [did("s1", "retry", 300), did("s1", "bmc-reset", 290), did("s1", "outlet-cycle", 280)]
    assert actions(run(ps, [dead("s1", minutes=60)], old)) == [("s1", "retry")]


def test_retry_n_times_before_escalating() -> None:
    ps = policies("""\
        rules:
          - name: unreachable
            when: {kind: bmc-unreachable}
            then: {ladder: [retry: 3, bmc-reset]}
    """)
    f = dead("s1")
    assert actions(run(ps, [f], [did("s1", "retry", 5), did("s1", "retry", 4)])) == [("s1", "retry")]
    three = [did("s1", "retry", m) for m in (5, 4, 3)]
    assert actions(run(ps, [f], three)) == [("s1", "bmc-reset")]


def test_a_plain_action_list_is_done_once_and_retried_if_it_failed() -> None:
    ps = policies("""\
        rules:
          - name: ecc
            when: {kind: sel-ecc-uncorrectable}
            then: [quarantine, work-order: rma]
    """)
    f = Finding("s1", "sel-ecc-uncorrectable", "critical", NOW - timedelta(hours=1), state="deployed")
    assert actions(run(ps, [f])) == [("s1", "quarantine"), ("s1", "work-order:rma")]
    history = [did("s1", "quarantine", 30, ok=True), did("s1", "work-order:rma", 30, ok=False)]
    assert actions(run(ps, [f], history)) == [("s1", "work-order:rma")]
    q = Finding("s1", "sel-ecc-uncorrectable", "critical", NOW - timedelta(hours=1), state="quarantined")
    assert actions(run(ps, [q])) == [("s1", "work-order:rma")]


# ---------------------------------------------------------------------------------------------- limits


def test_a_rule_that_would_cycle_a_whole_rack_is_held_to_k_per_rack() -> None:
    ps = policies(LADDER)
    hosts = [f"r1-{i:02d}" for i in range(10)] + ["r2-00"]
    rack_of = {h: h[:2].upper() for h in hosts}
    facts = [dead(h) for h in hosts]
    history = [did(h, "retry", 50) for h in hosts] + [did(h, "bmc-reset", 45) for h in hosts]
    p = run(ps, facts, history, rack_of=rack_of)
    assert actions(p) == [("r1-00", "outlet-cycle"), ("r1-01", "outlet-cycle"), ("r2-00", "outlet-cycle")]
    assert [(h.target, h.limit) for h in p.held] == [(f"r1-{i:02d}", "max_per_rack") for i in range(2, 10)]
    assert "rack R1" in p.held[0].detail


def test_recent_destructive_actions_still_count_against_their_rack() -> None:
    ps = policies(LADDER)
    # r1-09 was cycled 5 minutes ago (inside settle): only one more this time.
    facts = [dead("r1-00"), dead("r1-01")]
    history = [did(h, a, m) for h in ("r1-00", "r1-01") for a, m in (("retry", 50), ("bmc-reset", 45))]
    history.append(did("r1-09", "outlet-cycle", 5, ok=True))
    p = run(ps, facts, history, rack_of=dict.fromkeys(("r1-00", "r1-01", "r1-09"), "R1"))
    assert actions(p) == [("r1-00", "outlet-cycle")]
    assert [h.limit for h in p.held] == ["max_per_rack"]


def test_the_fleet_percentage_per_hour_counts_history() -> None:
    ps = policies(LADDER.replace("max_fleet_percent_per_hour: 50", "max_fleet_percent_per_hour: 5"))
    hosts = [f"s{i}" for i in range(6)]
    rack_of = {h: f"R{i}" for i, h in enumerate(hosts)} | {"old1": "R8", "old2": "R9", "old3": "R9"}
    facts = [dead(h) for h in hosts]
    history = [did(h, "retry", 50) for h in hosts]
    # 5% of 100 = 5 servers per hour; 3 were reset in the last hour (one 2 hours ago does not count).
    history += [did("old1", "bmc-reset", 20), did("old2", "power-cycle", 59), did("old3", "bmc-reset", 30),
                did("s5", "bmc-reset", 120, ok=False)]
    p = run(ps, facts, history, fleet_size=100, rack_of=rack_of)
    assert actions(p) == [("s0", "bmc-reset"), ("s1", "bmc-reset")]
    assert {h.target: h.limit for h in p.held} == dict.fromkeys(["s2", "s3", "s4", "s5"],
                                                                 "max_fleet_percent_per_hour")
    assert "5%" in p.held[0].detail


def test_cooldown_per_server() -> None:
    ps = policies(LADDER)
    f = dead("s1", minutes=120)
    history = [did("s1", "retry", 100), did("s1", "bmc-reset", 20)]
    p = run(ps, [f], history)
    assert p.planned == ()
    assert [(h.action, h.limit) for h in p.held] == [("outlet-cycle", "cooldown")]
    history = [did("s1", "retry", 100), did("s1", "bmc-reset", 31)]
    assert actions(run(ps, [f], history)) == [("s1", "outlet-cycle")]


def test_a_rule_can_set_its_own_limits() -> None:
    ps = policies(LADDER.replace("for: 10m}", "for: 10m}\n    limits: {max_per_rack: 1, cooldown: 5m}"))
    hosts = ["a", "b", "c"]
    history = [did(h, "retry", 50) for h in hosts] + [did("a", "bmc-reset", 45), did("b", "bmc-reset", 45)]
    p = run(ps, [dead(h) for h in hosts], history)
    assert actions(p) == [("a", "outlet-cycle")]
    assert {h.target: h.limit for h in p.held} == {"b": "max_per_rack", "c": "max_per_rack"}


def test_unknown_power_state_refuses_power_actions_but_not_quarantine_or_work_orders() -> None:
    ps = policies("""\
        rules:
          - name: hot
            when: {kind: sensor-critical}
            then: [soft-shutdown, quarantine, work-order: rma]
          - name: unreachable
            when: {kind: bmc-unreachable}
            then: {ladder: [outlet-cycle, quarantine]}
    """)
    facts = [Finding("hot1", "sensor-critical", "critical", NOW, value=101.0),
             Finding("dead1", "bmc-unreachable", "critical", NOW)]
    for state in ({}, {"hot1": "unknown", "dead1": "?"}):
        p = run(ps, facts, power=state)
        assert actions(p) == [("hot1", "quarantine"), ("hot1", "work-order:rma")]
        assert sorted((h.target, h.action, h.limit) for h in p.held) == [
            ("dead1", "outlet-cycle", "unknown-power-state"), ("hot1", "soft-shutdown", "unknown-power-state")]
        assert "never act on an unknown power state" in p.held[0].detail
    # The outlet's own state is preferred for an outlet cycle (the BMC is dead, the outlet is not).
    p = run(ps, facts[1:], power={"dead1": "unknown", "outlet:dead1": "on"})
    assert actions(p) == [("dead1", "outlet-cycle")]


def test_a_server_that_is_off_is_not_cycled_on() -> None:
    ps = policies("rules:\n  - name: u\n    when: {kind: bmc-unreachable}\n    then: {ladder: [power-cycle]}\n")
    p = run(ps, [dead("s1")], power={"s1": "off"})
    assert p.planned == () and p.held[0].limit == "power-off"


def test_a_server_without_a_rack_gets_no_destructive_action() -> None:
    ps = policies(LADDER)
    p = run(ps, [dead("s1")], [did("s1", "retry", 50)], rack_of={})
    assert p.held[0].limit == "unknown-rack"


def test_one_destructive_action_per_server_per_plan() -> None:
    ps = policies("""\
        rules:
          - name: hot
            when: {kind: sensor-critical}
            then: [soft-shutdown]
          - name: unreachable
            when: {kind: bmc-unreachable}
            then: {ladder: [bmc-reset]}
    """)
    facts = [Finding("s1", "sensor-critical", "critical", NOW, value=99.0), dead("s1")]
    p = run(ps, facts)
    assert actions(p) == [("s1", "soft-shutdown")]
    assert p.held[0].limit == "one-per-server"


# ---------------------------------------------------------------------------------------------- UPS


UPS_RULE = """\
limits: {max_per_rack: 2, max_fleet_percent_per_hour: 100, cooldown: 30m}
rules:
  - name: low-runtime
    when: {kind: ups-low-runtime, reading: runtime_s < 600}
    then: [soft-shutdown, work-order: battery-replacement]
    limits: {max_per_rack: 10}
"""


def test_soft_shutdown_on_battery_goes_by_priority() -> None:
    ps = policies(UPS_RULE)
    feeds = ["db1", "web1", "web2", "batch1", "cache1"]
    ups = Finding("ups-r1", "ups-low-runtime", "critical", NOW, value=420.0, extra={"feeds": feeds})
    priority = {"db1": 1, "cache1": 2, "web1": 5, "web2": 5, "batch1": 9}
    p = run(ps, [ups], rack_of=dict.fromkeys(feeds, "R1"), power=dict.fromkeys(feeds, "on"), priority=priority)
    # In the order the rule lists its actions; shutdowns from the highest priority number to the lowest.
    assert actions(p) == [("batch1", "soft-shutdown"), ("web1", "soft-shutdown"), ("web2", "soft-shutdown"),
                          ("cache1", "soft-shutdown"), ("db1", "soft-shutdown"),
                          ("ups-r1", "work-order:battery-replacement")]
    assert "priority 9" in p.planned[0].reason


def test_soft_shutdown_respects_limits_keeping_the_most_important_running() -> None:
    ps = policies(UPS_RULE.replace("max_per_rack: 10", "max_per_rack: 2"))
    feeds = ["db1", "web1", "batch1", "off1", "nopower"]
    ups = Finding("ups-r1", "ups-low-runtime", "critical", NOW, value=300.0, extra={"feeds": feeds})
    power = {"db1": "on", "web1": "on", "batch1": "on", "off1": "off"}
    p = run(ps, [ups], rack_of=dict.fromkeys(feeds, "R1"), power=power,
            priority={"db1": 1, "web1": 5, "batch1": 9, "off1": 7})
    assert [a for a in actions(p) if a[1] == "soft-shutdown"] == [("batch1", "soft-shutdown"),
                                                                  ("web1", "soft-shutdown")]
    assert [(h.target, h.limit) for h in p.held] == [("nopower", "unknown-power-state"), ("db1", "max_per_rack")]
    assert [(s.target, s.detail) for s in p.skipped] == [("off1", "off1 is already off")]


def test_a_server_already_asked_to_shut_down_is_not_asked_again() -> None:
    ps = policies(UPS_RULE)
    ups = Finding("ups-r1", "ups-low-runtime", "critical", NOW - timedelta(minutes=3), value=300.0,
                  extra={"feeds": ["a", "b"]})
    p = run(ps, [ups], [did("a", "soft-shutdown", 1, ok=True)], rack_of={"a": "R1", "b": "R1"},
            power={"a": "on", "b": "on"})
    assert actions(p) == [("b", "soft-shutdown"), ("ups-r1", "work-order:battery-replacement")]
    assert p.skipped[0].target == "a"


def test_the_runtime_threshold_is_a_real_threshold() -> None:
    ps = policies(UPS_RULE)
    ups = Finding("ups-r1", "ups-low-runtime", "critical", NOW, value=900.0, extra={"feeds": ["a"]})
    assert run(ps, [ups], rack_of={"a": "R1"}, power={"a": "on"}).planned == ()


# ---------------------------------------------------------------------------------------------- property

KINDS = ["bmc-unreachable", "sensor-critical", "sel-ecc-uncorrectable", "ups-low-runtime"]
HOSTS = [f"h{i}" for i in range(12)]
ACTS = ["retry", "bmc-reset", "power-cycle", "outlet-cycle", "quarantine", "soft-shutdown", "work-order:rma"]

PROPERTY_POLICY = """\
limits: {max_per_rack: 2, max_fleet_percent_per_hour: 20, cooldown: 15m, settle: 10m}
rules:
  - name: unreachable
    when: {kind: bmc-unreachable, for: 5m}
    then: {ladder: [retry, bmc-reset, power-cycle, outlet-cycle, [quarantine, work-order: rma]]}
    limits: {max_per_rack: 1}
  - name: hot
    when: {kind: sensor-critical}
    then: [soft-shutdown, quarantine]
  - name: ecc
    when: {kind: sel-ecc-uncorrectable}
    then: [quarantine, work-order: rma]
  - name: ups
    when: {kind: ups-low-runtime, reading: runtime_s < 600}
    then: [soft-shutdown]
    limits: {max_fleet_percent_per_hour: 50, cooldown: 0s}
"""

findings = st.builds(
    lambda host, kind, age, value, feeds: Finding(
        host if kind != "ups-low-runtime" else f"ups-{host}", kind, "critical", NOW - timedelta(minutes=age),
        value=value, state="deployed", extra={"feeds": feeds} if kind == "ups-low-runtime" else {}),
    st.sampled_from(HOSTS), st.sampled_from(KINDS), st.integers(0, 180), st.floats(0, 1200),
    st.lists(st.sampled_from(HOSTS), max_size=6, unique=True))
past = st.builds(lambda h, a, age, ok: PastAction(h, a, NOW - timedelta(minutes=age), ok),
                 st.sampled_from(HOSTS), st.sampled_from(ACTS), st.integers(0, 150), st.booleans())


@settings(max_examples=300, deadline=None)
@given(facts=st.lists(findings, max_size=15), history=st.lists(past, max_size=25),
       racks=st.lists(st.sampled_from(["R1", "R2", "R3"]), min_size=len(HOSTS), max_size=len(HOSTS)),
       states=st.lists(st.sampled_from(["on", "off", "unknown"]), min_size=len(HOSTS), max_size=len(HOSTS)),
       prios=st.lists(st.integers(1, 9), min_size=len(HOSTS), max_size=len(HOSTS)),
       fleet_size=st.integers(12, 60), seed=st.randoms(use_true_random=False))
def test_plans_never_exceed_a_limit_and_are_deterministic(facts, history, racks, states, prios, fleet_size,
                                                          seed) -> None:
    ps = parse_policies(PROPERTY_POLICY, "property.yaml")
    rack_of, power, priority = dict(zip(HOSTS, racks, strict=True)), dict(zip(HOSTS, states, strict=True)), \
        dict(zip(HOSTS, prios, strict=True))

    def go(f, h) -> Plan:
        return plan(ps, f, history=h, now=NOW, fleet_size=fleet_size, rack_of=rack_of, power_state=power,
                    priority=priority)

    p = go(facts, history)
    assert p == go(list(facts), list(history))
    shuffled_f, shuffled_h = list(facts), list(history)
    seed.shuffle(shuffled_f)
    seed.shuffle(shuffled_h)
    assert p == go(shuffled_f, shuffled_h), "the order of the input must not matter"

    destructive = [a for a in p.planned if a.action in DESTRUCTIVE]
    # never an unknown power state, never cycling an off server
    for a in p.planned:
        if a.action in POWER_ACTIONS:
            assert power[a.target] in ("on", "off")
            if a.action != "soft-shutdown":
                assert power[a.target] == "on"
    # one destructive action per server, and no duplicates at all
    assert len({a.target for a in destructive}) == len(destructive)
    assert len({(a.target, a.action) for a in p.planned}) == len(p.planned)
    settle, hour = timedelta(minutes=10), timedelta(hours=1)
    for a in destructive:
        rule = ps.rule(a.rule)
        # cooldown
        cooldown = rule.limits.cooldown if rule.limits.cooldown is not None else ps.limits.cooldown
        prior = [h for h in history if h.target == a.target and h.action in DESTRUCTIVE]
        if prior and cooldown:
            assert NOW - max(h.at for h in prior) >= cooldown
    # per rack: at the time each action was added, its rack was under the rule's K
    for i, a in enumerate(destructive):
        rule = ps.rule(a.rule)
        k = rule.limits.max_per_rack if rule.limits.max_per_rack is not None else ps.limits.max_per_rack
        rack = rack_of[a.target]
        before = {b.target for b in destructive[:i] if rack_of[b.target] == rack}
        before |= {h.target for h in history if h.action in DESTRUCTIVE and NOW - settle < h.at
                   and rack_of[h.target] == rack}
        assert len(before) < k
        # fleet-wide per hour, history included
        pct = rule.limits.max_fleet_percent_per_hour
        pct = pct if pct is not None else ps.limits.max_fleet_percent_per_hour
        cap = max(1, math.floor(fleet_size * pct / 100))
        touched = {b.target for b in destructive[:i]} | {h.target for h in history if h.action in DESTRUCTIVE
                                                         and NOW - hour < h.at}
        assert a.target in touched or len(touched) < cap
    # every held action names its limit
    assert all(h.limit and h.detail for h in p.held)
