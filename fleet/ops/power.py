"""Power operations at fleet scale: query first, act, then confirm — within a blast radius.

The rules, learned from the anchors' failures (MAAS hard-cycling healthy nodes when a BMC blipped):

- **Never act on an unknown state.** Every action starts with a status query; a server whose state
  cannot be read is reported and left alone.
- **Act, then confirm by query** until the target state or the deadline; "the command was accepted"
  is not success.
- **Bounded concurrency** (a semaphore over the whole operation) and **waves** with a **stagger**
  between them, so a rack does not draw its inrush current at once.
- **Blast radius**: a disruptive action (off, cycle, reset, soft) on more than ``max_servers`` servers,
  or on more than ``max_rack_fraction`` of any rack, is refused unless forced.
- **Audit** every action: who, what, which targets, and each target's result.

This module is pure logic over a :class:`~fleet.drivers.base.PowerControl`; :mod:`fleet.ops.power_action`
resolves the selector, builds the targets and writes the audit entry.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from fleet.core.jobsteps import SendStopped
from fleet.drivers.base import PowerControl, Target
from fleet.errors import DriverError, FleetError, InputError

__all__ = [
    "ACTIONS",
    "DISRUPTIVE",
    "BlastRadius",
    "BlastRadiusExceeded",
    "PowerPlan",
    "PowerResult",
    "check_blast_radius",
    "run_power",
    "summarise",
]

Action = Literal["status", "on", "off", "cycle", "reset", "soft"]
ACTIONS: tuple[str, ...] = ("status", "on", "off", "cycle", "reset", "soft")
#: Actions that interrupt a running server.
DISRUPTIVE: frozenset[str] = frozenset({"off", "cycle", "reset", "soft"})
#: The state each action must reach to count as done.
_GOAL = {"on": "on", "off": "off", "cycle": "on", "reset": "on", "soft": "off"}


class BlastRadiusExceeded(InputError):
    """A disruptive action would touch more servers than the limits allow without ``force``."""


@dataclass(frozen=True)
class BlastRadius:
    """Limits on how much one command may disrupt."""

    max_servers: int = 20
    max_rack_fraction: float = 0.5

    def verdict(self, action: str, hostnames: Sequence[str], racks: dict[str, tuple[int, int]]) -> list[str]:
        """Why ``action`` on these servers is too much; empty when it is within limits.

        ``racks`` maps a rack name to (servers selected in it, servers in it).
        """
        if action not in DISRUPTIVE:
            return []
        reasons = []
        if len(hostnames) > self.max_servers:
            reasons.append(f"{len(hostnames)} servers is more than the limit of {self.max_servers}")
        for rack, (picked, total) in sorted(racks.items()):
            if total and picked / total > self.max_rack_fraction and picked > 1:
                reasons.append(f"{picked} of {total} servers in rack {rack} is more than "
                               f"{self.max_rack_fraction:.0%} of it")
        return reasons


def check_blast_radius(limits: BlastRadius, action: str, hostnames: Sequence[str],
                       racks: dict[str, tuple[int, int]], *, force: bool) -> list[str]:
    """Raise BlastRadiusExceeded unless ``force``; return the reasons (for the audit) either way."""
    reasons = limits.verdict(action, hostnames, racks)
    if reasons and not force:
        raise BlastRadiusExceeded(f"refusing to {action} {len(hostnames)} server(s): " + "; ".join(reasons)
                                  + " (use --force to override)")
    return reasons


@dataclass
class PowerResult:
    """What happened to one server."""

    hostname: str
    action: str
    ok: bool
    before: str = "unknown"
    after: str = "unknown"
    #: done | already | skipped | unknown-state | failed | timeout | status; and for a job cut short:
    #: not-sent (stopped before its command), unconfirmed (sent, stopped before confirming), confirmed
    #: (sent by an earlier run of the job, confirmed on resume by reading its state, not acted on again)
    outcome: str = ""
    error: str = ""
    elapsed_s: float = 0.0
    wave: int = 0
    #: The driver that answered (``ipmi``...; '' if none did), from the server's power chain.
    driver: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"hostname": self.hostname, "action": self.action, "ok": self.ok, "before": self.before,
                "after": self.after, "outcome": self.outcome, "error": self.error,
                "elapsed_s": round(self.elapsed_s, 3), "wave": self.wave,
                "driver": self.driver}


@dataclass
class PowerPlan:
    """How to run an action over many targets."""

    action: Action
    targets: list[tuple[Target, PowerControl]]
    concurrency: int = 64
    wave_size: int = 0  # 0: one wave
    stagger_s: float = 0.0
    confirm_timeout_s: float = 60.0
    poll_interval_s: float = 1.0
    progress: Callable[[PowerResult], None] | None = None
    #: Awaited after the decision to act and before the command goes out (a durable "sent" mark, see
    #: :class:`fleet.core.jobsteps.SendGate`); raising :class:`~fleet.core.jobsteps.SendStopped` leaves
    #: the target alone.
    gate: Callable[[str], Awaitable[None]] | None = None
    #: Targets an earlier run of the same job sent the command to: confirmed by query, never acted on again.
    confirm_only: frozenset[str] = frozenset()
    #: Set (SIGTERM, cancel): no new command is sent and confirmation polls end at their next turn.
    stop: asyncio.Event | None = None
    waves: list[list[int]] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise InputError(f"unknown power action {self.action!r}; actions: {', '.join(ACTIONS)}")
        if self.concurrency < 1:
            raise InputError("concurrency must be at least 1")
        n = len(self.targets)
        size = self.wave_size if self.wave_size > 0 else max(n, 1)
        self.waves = [list(range(i, min(i + size, n))) for i in range(0, n, size)]


async def _status(driver: PowerControl, target: Target) -> str:
    return await driver.power_status(target)


async def _act(driver: PowerControl, target: Target, action: str) -> None:
    calls: dict[str, Callable[[Target], Awaitable[None]]] = {
        "on": driver.power_on, "off": driver.power_off, "cycle": driver.power_cycle,
        "reset": driver.power_reset, "soft": driver.power_soft,
    }
    await calls[action](target)


async def _one(plan: PowerPlan, index: int, wave: int, sem: asyncio.Semaphore) -> PowerResult:
    target, driver = plan.targets[index]
    result = PowerResult(target.name, plan.action, ok=False, wave=wave)
    start = time.monotonic()
    if plan.stop is not None and plan.stop.is_set() and plan.action != "status":
        result.outcome, result.error = "not-sent", "stopped before its command was sent"
        return result
    if target.name in plan.confirm_only and plan.action != "status":
        return await _confirm(plan, target, driver, result, start, sem, resumed=True)
    async with sem:
        try:
            result.before = await _status(driver, target)
        except DriverError as exc:
            result.outcome, result.error = "unknown-state", f"state unknown, not acted on: {exc}"
            result.elapsed_s = time.monotonic() - start
            return result
        if result.before not in ("on", "off"):
            result.outcome, result.error = "unknown-state", f"BMC reports {result.before!r}, not acted on"
            result.elapsed_s = time.monotonic() - start
            return result
        if plan.action == "status":
            result.ok, result.after, result.outcome = True, result.before, "status"
            result.elapsed_s = time.monotonic() - start
            return result
        goal = _GOAL[plan.action]
        if plan.action in ("on", "off", "soft") and result.before == goal:
            result.ok, result.after, result.outcome = True, result.before, "already"
            result.elapsed_s = time.monotonic() - start
            return result
        if plan.action in ("cycle", "reset") and result.before == "off":
            result.after, result.outcome = "off", "skipped"
            result.error = f"server is off: not {plan.action}d (power it on instead)"
            result.elapsed_s = time.monotonic() - start
            return result
        if plan.gate is not None:
            try:
                await plan.gate(target.name)
            except SendStopped as exc:
                result.outcome, result.error = "not-sent", str(exc)
                result.elapsed_s = time.monotonic() - start
                return result
        try:
            await _act(driver, target, plan.action)
        except DriverError as exc:
            result.outcome, result.error = "failed", str(exc)
            result.elapsed_s = time.monotonic() - start
            return result
    return await _confirm(plan, target, driver, result, start, sem)


async def _confirm(plan: PowerPlan, target: Target, driver: PowerControl, result: PowerResult, start: float,
                   sem: asyncio.Semaphore, *, resumed: bool = False) -> PowerResult:
    """Poll until the goal state or the deadline (outside the semaphore, so waiting servers do not
    starve the others). ``resumed``: the command was sent by an earlier run; only its state is read."""
    goal = _GOAL[plan.action]
    deadline = start + plan.confirm_timeout_s
    last_error = ""
    while True:
        if plan.stop is not None and plan.stop.is_set():
            result.outcome, result.error = "unconfirmed", "stopped before the state was confirmed"
            break
        try:
            async with sem:
                result.after = await _status(driver, target)
            last_error = ""
        except DriverError as exc:
            result.after, last_error = "unknown", str(exc)
        if result.after == goal:
            result.ok, result.outcome = True, "confirmed" if resumed else "done"
            break
        if time.monotonic() + plan.poll_interval_s > deadline:
            result.outcome = "timeout"
            result.error = (f"still {result.after} after {plan.confirm_timeout_s:.0f}s, expected {goal}"
                            + (f" ({last_error})" if last_error else ""))
            break
        await asyncio.sleep(plan.poll_interval_s)
    result.elapsed_s = time.monotonic() - start
    return result


async def run_power(plan: PowerPlan) -> list[PowerResult]:
    """Run ``plan`` wave by wave; results in the order of ``plan.targets``."""
    sem = asyncio.Semaphore(plan.concurrency)
    results: list[PowerResult | None] = [None] * len(plan.targets)
    for number, wave in enumerate(plan.waves):
        if number and plan.stagger_s:
            await asyncio.sleep(plan.stagger_s)

        async def run(i: int, w: int = number) -> None:
            res = await _one(plan, i, w, sem)
            driver = plan.targets[i][1]
            res.driver = str(getattr(driver, "answered", getattr(driver, "name", "")) or "")  # chain or driver
            results[i] = res
            if plan.progress:
                plan.progress(res)

        await asyncio.gather(*(run(i) for i in wave))
    done = [r for r in results if r is not None]
    if len(done) != len(plan.targets):  # pragma: no cover - gather returns only when all ran
        raise FleetError("power operation ended with results missing")
    return done


def summarise(results: Sequence[PowerResult]) -> dict[str, int]:
    """Counts by outcome, for the audit entry and the CLI's last line."""
    return dict(Counter(r.outcome for r in results))

