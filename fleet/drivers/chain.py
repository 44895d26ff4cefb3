"""One driver chain per capability: which driver serves a server, tried in order (bmclib's providers).

For a server and a capability (``power``, ``boot``, ``sensors``, ``sel``, ``fru``, ``outlets``,
``battery``, ``shell``), the **chain** is the profile's ordered driver list for that capability,
filtered to the drivers the registry knows, that declare the capability, and for which the server has
an endpoint with a credential of a kind the driver speaks (an IPMI BMC credential cannot feed the SSH
driver). Then the first driver that answers wins:

- a :class:`~fleet.errors.RetryableError` (timeout, unreachable) tries the next driver;
- :class:`~fleet.errors.Unsupported` ("this driver cannot", e.g. a cipher suite it does not speak,
  a driver not installed in this build) tries the next driver too;
- any other :class:`~fleet.errors.DriverError` (:class:`~fleet.errors.AuthFailed`, a certificate that
  changed, a device that answered wrongly) stops the chain: the next driver would use the same
  credentials on the same machine, and an answer is an answer.

Each call keeps the deadline of its own target (``Target.timeout``). An :class:`Answer` records the
driver that answered and the errors of those tried before it.

Two shapes, one rule:

- :func:`call_chain` walks one server's chain (a single-server command, a sweep's per-server reads);
- :func:`gather_chain` runs many servers stage by stage: the targets are grouped by their current
  driver so each driver gets all its targets in one bulk call (``driver.gather`` where it has one,
  as the IPMI pool does), and only the targets that failed retryably go on, in bulk, to their next
  driver. It never degrades to one call per target.

:class:`ChainedPower` is the power chain as a :class:`~fleet.drivers.base.PowerControl` for
act-then-confirm (:mod:`fleet.ops.power`): the driver that answers the first status query is pinned, so
the action and its confirmation go to the same driver.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fleet.errors import DriverError, RetryableError, Unsupported

from .base import PowerState, Target
from .registry import DriverRegistry
from .registry import registry as default_registry

__all__ = ["Answer", "ChainedPower", "Link", "build_chain", "call_chain", "chain_names", "gather_chain",
           "tries_next"]

#: Used when a server has no profile (or its profile is not loaded): what Rackfleet has always assumed.
DEFAULT_DRIVERS: tuple[str, ...] = ("ipmi",)

#: BMC capabilities that, when a profile gives no list of their own, are served by the power list.
#: This is the one place that fallback lives (the sweep used to read sensors and the SEL through the
#: power driver directly); a profile that lists ``sensors`` or ``sel`` gets exactly that list.
_FALLS_BACK_TO_POWER: frozenset[str] = frozenset({"boot", "sensors", "sel", "fru"})

Call = Callable[[Any, Target], Awaitable[Any]]


@dataclass(frozen=True)
class Link:
    """One driver of a chain and the target (endpoint + credential) it is called with."""

    name: str
    target: Target


@dataclass
class Answer:
    """What a chain gave for one target: the value and the driver that answered, or the error that ended it.

    ``tried`` holds ``(driver, error text)`` for every driver that failed before (and, when nothing
    answered, including the last one).
    """

    target: str
    value: Any = None
    driver: str = ""
    error: DriverError | None = None
    tried: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


def tries_next(exc: DriverError) -> bool:
    """True if the chain moves on to the next driver after ``exc`` (retryable, or "this driver cannot")."""
    return isinstance(exc, (RetryableError, Unsupported))


def chain_names(profile: Any, capability: str) -> tuple[str, ...]:
    """The profile's ordered driver names for ``capability`` (with the power-list fallback, see above)."""
    if profile is None:
        return DEFAULT_DRIVERS
    names = tuple(profile.drivers_for(capability))
    if not names and capability in _FALLS_BACK_TO_POWER:
        names = tuple(profile.drivers_for("power"))
    return names


def build_chain(capability: str, profile: Any, endpoints: Sequence[Target], *,
                registry: DriverRegistry = default_registry) -> list[Link]:
    """The chain of ``capability`` for a server whose reachable endpoints are ``endpoints``.

    An endpoint's ``options["credential_kind"]`` says which credential it carries; a driver is kept
    when the registry knows it, it declares ``capability``, and an endpoint carries a credential kind
    it speaks (a driver registered without credential kinds takes any endpoint; so does an endpoint
    that names no kind). Order is the profile's.
    """
    known = set(registry.names())
    links: list[Link] = []
    for name in chain_names(profile, capability):
        if name not in known or capability not in registry.capabilities(name):
            continue
        kinds = registry.credential_kinds(name)
        for target in endpoints:
            kind = target.options.get("credential_kind")
            if not kinds or kind is None or kind in kinds:
                links.append(Link(name, target))
                break
    return links


def _no_driver(capability: str, target: str, profile: Any) -> Unsupported:
    names = chain_names(profile, capability) if profile is not None else DEFAULT_DRIVERS
    listed = ", ".join(names) or "none"
    return Unsupported(f"no driver can serve {capability} here (profile lists: {listed}; none has an endpoint "
                       f"and credential for this server)", target=target, operation=capability)


async def call_chain(links: Sequence[Link], get_driver: Callable[[str], Any], call: Call, *,
                     capability: str = "", target: str = "") -> Answer:
    """Walk one server's chain: ``await call(driver, target)`` per link until one answers or one is fatal."""
    answer = Answer(target or (links[0].target.name if links else ""))
    if not links:
        answer.error = _no_driver(capability, answer.target, None)
        return answer
    for link in links:
        try:
            answer.value = await call(get_driver(link.name), link.target)
        except DriverError as exc:
            answer.tried.append((link.name, str(exc)))
            answer.error = exc
            if tries_next(exc):
                continue
            return answer
        answer.driver, answer.error = link.name, None
        return answer
    return answer


async def gather_chain(chains: Sequence[Sequence[Link]], get_driver: Callable[[str], Any],
                       call: Call | str, *args: Any, capability: str = "", concurrency: int = 0) -> list[Answer]:
    """Run ``call`` over many servers' chains, driver by driver in bulk; answers in the order of ``chains``.

    ``call`` is a method name (then a driver with ``gather(method, targets, *args)`` gets its targets
    in one call) or ``call(driver, target)``. Stage ``k`` sends every still-open target to the ``k``-th
    driver of its chain, grouped by driver; targets whose call failed retryably (or Unsupported) go to
    the next stage. ``concurrency`` > 0 bounds the calls in flight per group when there is no ``gather``.
    """
    answers = [Answer(links[0].target.name if links else "") for links in chains]
    for i, links in enumerate(chains):
        if not links:
            answers[i].error = _no_driver(capability, answers[i].target, None)
    pending = [i for i, links in enumerate(chains) if links]
    stage = 0
    while pending:
        groups: dict[str, list[int]] = defaultdict(list)
        for i in pending:
            groups[chains[i][stage].name].append(i)
        results = await asyncio.gather(*(
            _bulk(get_driver(name), [chains[i][stage].target for i in idx], call, args, concurrency)
            for name, idx in groups.items()))
        pending = []
        for (name, idx), got in zip(groups.items(), results, strict=True):
            for i, value in zip(idx, got, strict=True):
                answer = answers[i]
                if isinstance(value, DriverError):
                    answer.tried.append((name, str(value)))
                    answer.error = value
                    if tries_next(value) and stage + 1 < len(chains[i]):
                        pending.append(i)
                elif isinstance(value, BaseException):
                    raise value  # a bug, not a device condition: never swallowed into a result
                else:
                    answer.value, answer.driver, answer.error = value, name, None
        stage += 1
    return answers


async def _bulk(driver: Any, targets: list[Target], call: Call | str, args: tuple[Any, ...],
                concurrency: int) -> list[Any]:
    """One driver's bulk call over ``targets``: values in order, a DriverError in place of a failure."""
    if isinstance(call, str):
        bulk = getattr(driver, "gather", None)
        if bulk is not None:
            return list(await bulk(call, targets, *args))
        method = getattr(driver, call)

        def fn(d: Any, t: Target) -> Awaitable[Any]:
            return method(t, *args)
    else:
        fn = call  # type: ignore[assignment]
    sem = asyncio.Semaphore(concurrency) if concurrency > 0 else None

    async def one(t: Target) -> Any:
        if sem is None:
            return await fn(driver, t)
        async with sem:
            return await fn(driver, t)

    return list(await asyncio.gather(*(one(t) for t in targets), return_exceptions=True))


class ChainedPower:
    """One server's power chain as a PowerControl: the driver that first answers is pinned.

    ``power_status`` walks the chain; once a driver has answered, every later call (the action, the
    confirmation polls) goes to that driver only: switching drivers between acting and confirming
    would confirm one path's command through another. ``answered`` names the pinned driver ('' until
    one answered); ``tried`` the drivers that failed before it, with their errors.
    """

    def __init__(self, links: Sequence[Link], get_driver: Callable[[str], Any], *, profile: Any = None) -> None:
        self.links = list(links)
        self._get = get_driver
        self._profile = profile
        self._pinned: Link | None = None
        self.answered = ""
        self.tried: list[tuple[str, str]] = []

    @property
    def name(self) -> str:
        return self.answered or (self.links[0].name if self.links else "")

    async def _run(self, method: str, target: Target) -> Any:
        if self._pinned is not None:
            return await getattr(self._get(self._pinned.name), method)(self._pinned.target)
        if not self.links:
            raise _no_driver("power", target.name, self._profile)
        answer = await call_chain(self.links, self._get, lambda d, t: getattr(d, method)(t),
                                  capability="power", target=target.name)
        self.tried = answer.tried
        if answer.error is not None:
            raise answer.error
        self._pinned = next(link for link in self.links if link.name == answer.driver)
        self.answered = answer.driver
        return answer.value

    async def power_status(self, target: Target) -> PowerState:
        return await self._run("power_status", target)

    async def power_on(self, target: Target) -> None:
        await self._run("power_on", target)

    async def power_off(self, target: Target) -> None:
        await self._run("power_off", target)

    async def power_cycle(self, target: Target) -> None:
        await self._run("power_cycle", target)

    async def power_reset(self, target: Target) -> None:
        await self._run("power_reset", target)

    async def power_soft(self, target: Target) -> None:
        await self._run("power_soft", target)



def power_chains(servers: Sequence[tuple[Sequence[Target], Any]], get_driver: Callable[[str], Any]
                 ) -> list[tuple[Target, ChainedPower]]:
    """(target, its power chain) for each server's (endpoints, profile): the pairs :mod:`fleet.ops.power`
    runs on. The chain is built over all of a server's endpoints (each driver gets the one whose
    credential it speaks); the target that names the server in results and job steps is its first."""
    return [(endpoints[0], ChainedPower(build_chain("power", profile, endpoints), get_driver, profile=profile))
            for endpoints, profile in servers]
