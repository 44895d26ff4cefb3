"""Power operations' rules, over a scripted PowerControl: query first, act, confirm, limit, audit.

The drivers themselves are proven against real BMC implementations elsewhere (ipmi_sim, ipmitool);
this file proves the decisions made above them, which need exact control of what a BMC answers.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from fleet import Fleet
from fleet.drivers.base import Target
from fleet.errors import DeviceTimeout
from fleet.ops.power import BlastRadius, BlastRadiusExceeded

from .factory import Spec, build


class ScriptedBmcs:
    """A PowerControl whose BMCs answer as a test says: state per host, failures, delays."""

    def __init__(self, states: dict[str, str], *, dead: set[str] = frozenset(), stuck: set[str] = frozenset(),
                 lag_polls: int = 0) -> None:
        self.states = dict(states)
        self.dead, self.stuck = set(dead), set(stuck)
        self.lag = {h: 0 for h in states}
        self.lag_polls = lag_polls
        self.actions: list[tuple[str, str, float]] = []

    async def power_status(self, target: Target) -> str:
        await asyncio.sleep(0)
        if target.name in self.dead:
            raise DeviceTimeout("no answer", target=target.name, operation="power status")
        if self.lag[target.name] > 0:  # the BMC reports the old state for a few polls
            self.lag[target.name] -= 1
            return "off" if self.states[target.name] == "on" else "on"
        return self.states[target.name]

    async def _set(self, target: Target, action: str, state: str) -> None:
        self.actions.append((target.name, action, time.monotonic()))
        if target.name not in self.stuck:
            self.states[target.name] = state
            self.lag[target.name] = self.lag_polls

    async def power_on(self, target: Target) -> None:
        await self._set(target, "on", "on")

    async def power_off(self, target: Target) -> None:
        await self._set(target, "off", "off")

    async def power_cycle(self, target: Target) -> None:
        await self._set(target, "cycle", "on")

    async def power_reset(self, target: Target) -> None:
        await self._set(target, "reset", "on")

    async def power_soft(self, target: Target) -> None:
        await self._set(target, "soft", "off")


def _fleet(fleet: Fleet, n: int = 4, racks: int = 1) -> list[str]:
    names = [f"n{i:02d}" for i in range(n)]
    build(fleet.engine, [Spec(h, rack=f"R{i % racks}", position=i + 1) for i, h in enumerate(names)])
    fleet.set_credential("bmc", "ipmi", "pw", username="admin")
    fleet.assign_credential("bmc", "host=n*")
    return names


def run(fleet: Fleet, *args, **kw):
    kw.setdefault("poll_interval_s", 0.01)
    kw.setdefault("confirm_timeout_s", 1.0)
    return asyncio.run(fleet.power(*args, **kw))


def test_off_acts_then_confirms_by_query(sqlite_fleet: Fleet) -> None:
    _fleet(sqlite_fleet, 2)
    bmcs = ScriptedBmcs({"n00": "on", "n01": "on"}, lag_polls=2)
    sqlite_fleet.ctx.use_driver("ipmi", bmcs)
    results = run(sqlite_fleet, "off", "n00")
    assert [(r.hostname, r.ok, r.before, r.after, r.outcome) for r in results] == [("n00", True, "on", "off", "done")]
    assert [a[:2] for a in bmcs.actions] == [("n00", "off")]


def test_a_server_whose_state_is_unknown_is_never_acted_on(sqlite_fleet: Fleet) -> None:
    _fleet(sqlite_fleet, 2)
    bmcs = ScriptedBmcs({"n00": "on", "n01": "on"}, dead={"n01"})
    sqlite_fleet.ctx.use_driver("ipmi", bmcs)
    results = {r.hostname: r for r in run(sqlite_fleet, "cycle", "n00 n01", force=True)}
    assert results["n01"].outcome == "unknown-state" and not results["n01"].ok
    assert "not acted on" in results["n01"].error
    assert [a[0] for a in bmcs.actions] == ["n00"]


def test_already_in_state_and_cycle_of_an_off_server_do_nothing(sqlite_fleet: Fleet) -> None:
    _fleet(sqlite_fleet, 2)
    bmcs = ScriptedBmcs({"n00": "off", "n01": "off"})
    sqlite_fleet.ctx.use_driver("ipmi", bmcs)
    assert run(sqlite_fleet, "off", "n00")[0].outcome == "already"
    cycled = run(sqlite_fleet, "cycle", "n01")[0]
    assert (cycled.ok, cycled.outcome) == (False, "skipped")
    assert bmcs.actions == []


def test_a_stuck_power_state_times_out_and_is_reported(sqlite_fleet: Fleet) -> None:
    _fleet(sqlite_fleet, 1)
    sqlite_fleet.ctx.use_driver("ipmi", ScriptedBmcs({"n00": "on"}, stuck={"n00"}))
    r = run(sqlite_fleet, "off", "n00", confirm_timeout_s=0.2)[0]
    assert (r.ok, r.outcome) == (False, "timeout") and "expected off" in r.error


def test_blast_radius_refuses_most_of_a_rack_without_force_and_audits_the_refusal(sqlite_fleet: Fleet) -> None:
    _fleet(sqlite_fleet, 4)
    bmcs = ScriptedBmcs(dict.fromkeys(["n00", "n01", "n02", "n03"], "on"))
    sqlite_fleet.ctx.use_driver("ipmi", bmcs)
    with pytest.raises(BlastRadiusExceeded, match="3 of 4 servers in rack par1/R0"):
        run(sqlite_fleet, "off", "n00 n01 n02")
    assert bmcs.actions == []
    refused = sqlite_fleet.audit(action="power.off")[0]
    assert refused.result == "failed" and refused.detail["refused"] is True
    assert all(r.ok for r in run(sqlite_fleet, "off", "n00 n01 n02", force=True))
    assert sqlite_fleet.audit(action="power.off")[0].detail["forced_past"]


def test_blast_radius_counts_servers_fleet_wide() -> None:
    limits = BlastRadius(max_servers=2, max_rack_fraction=1.0)
    assert limits.verdict("off", ["a", "b", "c"], {}) == ["3 servers is more than the limit of 2"]
    assert limits.verdict("status", ["a", "b", "c"], {}) == []
    assert limits.verdict("on", ["a", "b", "c"], {}) == []


def test_waves_run_in_order_with_a_stagger_between_them(sqlite_fleet: Fleet) -> None:
    names = _fleet(sqlite_fleet, 6, racks=6)
    bmcs = ScriptedBmcs(dict.fromkeys(names, "off"))
    sqlite_fleet.ctx.use_driver("ipmi", bmcs)
    results = run(sqlite_fleet, "on", "host=n*", wave_size=2, stagger_s=0.15)
    assert all(r.ok for r in results) and sorted({r.wave for r in results}) == [0, 1, 2]
    times = {h: t for h, _, t in bmcs.actions}
    for a, b in (("n01", "n02"), ("n03", "n04")):
        assert times[b] - times[a] >= 0.15  # the next wave waits for the stagger


def test_concurrency_is_bounded(sqlite_fleet: Fleet) -> None:
    names = _fleet(sqlite_fleet, 8, racks=8)
    in_flight = peak = 0

    class Counting(ScriptedBmcs):
        async def power_status(self, target: Target) -> str:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.02)
            in_flight -= 1
            return await super().power_status(target)

    sqlite_fleet.ctx.use_driver("ipmi", Counting(dict.fromkeys(names, "on")))
    run(sqlite_fleet, "status", "host=n*", concurrency=3)
    assert peak == 3


def test_every_action_is_audited_with_per_target_results(sqlite_fleet: Fleet) -> None:
    _fleet(sqlite_fleet, 2, racks=2)
    sqlite_fleet.ctx.use_driver("ipmi", ScriptedBmcs({"n00": "on", "n01": "on"}, dead={"n01"}))
    run(sqlite_fleet, "off", "n00 n01")
    entry = sqlite_fleet.audit(action="power.off")[0]
    assert entry.actor == "tester" and entry.targets == ("n00", "n01") and entry.result == "partial"
    assert entry.detail["outcomes"] == {"done": 1, "unknown-state": 1}
    assert "n01" in entry.detail["failures"]


def test_servers_without_bmc_credentials_are_reported_not_skipped_silently(sqlite_fleet: Fleet) -> None:
    build(sqlite_fleet.engine, [Spec("lonely", rack="R9")])
    results = run(sqlite_fleet, "status", "lonely")
    assert results[0].ok is False and "no BMC credential" in results[0].error


def test_an_empty_selector_cannot_power_off_the_fleet(sqlite_fleet: Fleet) -> None:
    _fleet(sqlite_fleet, 1)
    with pytest.raises(ValueError, match="name the servers"):
        run(sqlite_fleet, "off", "")
