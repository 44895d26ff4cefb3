"""Budgeted power-on: an order that keeps every feed, UPS and PDU under its capacity.

After an outage, a rack powered on at once draws every server's inrush current together and can
trip the breaker it was restored on. xCAT's answer is a fixed batch-and-delay throttle that ignores
where the power comes from. This planner uses the topology instead:

- every server has a steady draw (its profile's peak watts) and an inrush draw (peak times the
  profile's inrush factor) for an inrush window after it is switched on;
- every server hangs below a set of *elements*: the power feed(s), UPS(es) and PDU(s) on its power
  path. A server with two PSUs on the A and B feeds counts its full draw against both, since either
  feed must carry it alone when the other fails (redundancy is the point of two feeds);
- servers are switched on in *waves* ``window`` seconds apart. In wave k, an element carries the
  steady draw of every server of earlier waves plus the inrush of its servers in wave k; a server
  joins the earliest wave where that stays within every element's capacity. Since steady draws only
  grow, a server that does not fit into an otherwise empty wave never will: it is reported as
  unplannable, never scheduled past a limit.

Servers are considered by priority (lower number first), then host name. The plan is pure data;
:meth:`PowerOnPlan.peak_loads` recomputes the worst draw per element, which the tests check.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Element", "Load", "PowerOnPlan", "plan_power_on", "summarise_elements"]


@dataclass(frozen=True)
class Element:
    """Something with a capacity on a power path: ``kind`` is feed, ups or pdu."""

    kind: str
    name: str
    capacity_w: float

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name}"


@dataclass(frozen=True)
class Load:
    """One server to power on: its draws and the elements above it."""

    hostname: str
    peak_w: float
    inrush_factor: float = 1.0
    priority: int = 100
    elements: tuple[Element, ...] = ()

    @property
    def inrush_w(self) -> float:
        return self.peak_w * max(self.inrush_factor, 1.0)


@dataclass
class PowerOnPlan:
    window_s: float
    baseline: list[Load] = field(default_factory=list)
    #: Servers in the baseline because their state could not be read, with the reason.
    unknown: dict[str, str] = field(default_factory=dict)
    waves: list[list[Load]] = field(default_factory=list)
    unplannable: list[tuple[Load, str]] = field(default_factory=list)

    def peak_loads(self) -> dict[Element, float]:
        """The highest draw each element sees during the plan (recomputed from the waves)."""
        steady: dict[Element, float] = defaultdict(float)
        peak: dict[Element, float] = defaultdict(float)
        for load in self.baseline:
            for el in set(load.elements):
                steady[el] += load.peak_w
        for wave in self.waves:
            during = dict(steady)
            for load in wave:
                for el in set(load.elements):
                    during[el] = during.get(el, 0.0) + load.inrush_w
            for el, w in during.items():
                peak[el] = max(peak[el], w)
            for load in wave:
                for el in set(load.elements):
                    steady[el] += load.peak_w
        for el, w in steady.items():
            peak[el] = max(peak[el], w)
        return dict(peak)

    def to_json(self) -> dict[str, Any]:
        return {
            "window_s": self.window_s,
            "already_on": [ld.hostname for ld in self.baseline],
            "waves": [{"start_s": round(i * self.window_s, 3), "servers": [ld.hostname for ld in wave]}
                      for i, wave in enumerate(self.waves)],
            "unplannable": [{"hostname": ld.hostname, "reason": why} for ld, why in self.unplannable],
            "peak_loads": [{"element": el.label, "peak_w": round(w, 1), "capacity_w": el.capacity_w}
                           for el, w in sorted(self.peak_loads().items(), key=lambda kv: kv[0].label)],
        }


def plan_power_on(loads: Iterable[Load], *, window_s: float = 2.0, max_wave: int = 0,
                  already_on: Iterable[Load] = ()) -> PowerOnPlan:
    """Waves that keep every element within capacity; servers that can never fit are set apart.

    ``max_wave`` (0: no limit) caps how many servers one wave switches on, for BMC request load.
    ``already_on`` are servers drawing their steady load before the first wave (those that are on,
    and those whose state is unknown: the safe assumption is that they draw).
    """
    plan = PowerOnPlan(window_s=window_s, baseline=list(already_on))
    steady: dict[Element, float] = defaultdict(float)
    for load in plan.baseline:
        for el in set(load.elements):
            steady[el] += load.peak_w
    pending = sorted(loads, key=lambda ld: (ld.priority, ld.hostname))
    for load in pending:
        if load.peak_w < 0 or load.inrush_factor <= 0:
            plan.unplannable.append((load, "negative or zero draw in its profile"))
    pending = [ld for ld in pending if ld.peak_w >= 0 and ld.inrush_factor > 0]
    while pending:
        wave: list[Load] = []
        during: dict[Element, float] = dict(steady)
        rest: list[Load] = []
        for load in pending:
            if max_wave and len(wave) >= max_wave:
                rest.append(load)
                continue
            elements = set(load.elements)
            if all(during.get(el, 0.0) + load.inrush_w <= el.capacity_w for el in elements):
                wave.append(load)
                for el in elements:
                    during[el] = during.get(el, 0.0) + load.inrush_w
            else:
                rest.append(load)
        if not wave:
            # Nothing fits into an empty wave: every remaining server is over some limit for good.
            for load in rest:
                over = [el for el in set(load.elements) if steady.get(el, 0.0) + load.inrush_w > el.capacity_w]
                plan.unplannable.append((load, "; ".join(
                    f"{el.label}: {steady.get(el, 0.0):.0f} W steady + {load.inrush_w:.0f} W inrush > "
                    f"{el.capacity_w:.0f} W" for el in over)))
            break
        plan.waves.append(wave)
        for load in wave:
            for el in set(load.elements):
                steady[el] += load.peak_w
        pending = rest
    return plan


def summarise_elements(loads: Sequence[Load]) -> Mapping[Element, int]:
    """How many of ``loads`` hang below each element."""
    count: dict[Element, int] = defaultdict(int)
    for load in loads:
        for el in set(load.elements):
            count[el] += 1
    return dict(count)

