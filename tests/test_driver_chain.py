"""The driver chain's rules (fleet.drivers.chain): order, filtering, fallback, stop, bulk grouping.

The drivers here are in-memory stand-ins: what is under test is the chain's logic, not a protocol
(the chain against a real IPMI BMC is tests/test_driver_chain_e2e.py).
"""

from __future__ import annotations

import asyncio
from types import MappingProxyType
from typing import Any

import pytest

from fleet.drivers.base import Target
from fleet.drivers.chain import (
    ChainedPower,
    Link,
    build_chain,
    call_chain,
    chain_names,
    gather_chain,
)
from fleet.drivers.registry import DriverRegistry
from fleet.errors import AuthFailed, DeviceTimeout, DeviceUnreachable, DriverError, Unsupported


class _Profile:
    def __init__(self, **drivers: tuple[str, ...]) -> None:
        self.drivers = MappingProxyType(drivers)

    def drivers_for(self, capability: str) -> tuple[str, ...]:
        return self.drivers.get(capability, ())


def _registry() -> DriverRegistry:
    reg = DriverRegistry()
    reg.register("bmc-a", "x:A", {"power", "sensors", "sel"}, "a", credential_kinds={"ipmi"})
    reg.register("bmc-b", "x:B", {"power", "sensors"}, "b", credential_kinds={"ipmi"})
    reg.register("shell", "x:S", {"power", "shell"}, "s", credential_kinds={"ssh"})
    reg.register("anykind", "x:K", {"power"}, "k")
    return reg


def _target(name: str, kind: str | None = "ipmi") -> Target:
    return Target(name=name, host="127.0.0.1", port=623, timeout=1.0,
                  options={"credential_kind": kind} if kind else {})


class _Driver:
    """Answers ``power_status`` per target from a table: a value, or an exception to raise."""

    def __init__(self, name: str, answers: dict[str, Any] | None = None, default: Any = "on",
                 bulk: bool = False) -> None:
        self.name = name
        self.answers = answers or {}
        self.default = default
        self.calls: list[str] = []
        self.bulk_calls: list[list[str]] = []
        if bulk:
            self.gather = self._gather

    async def power_status(self, target: Target) -> str:
        self.calls.append(target.name)
        value = self.answers.get(target.name, self.default)
        if isinstance(value, BaseException):
            raise value
        return value

    async def power_on(self, target: Target) -> None:
        self.calls.append(f"on:{target.name}")

    async def _gather(self, method: str, targets: list[Target], *args: Any) -> list[Any]:
        self.bulk_calls.append([t.name for t in targets])
        return await asyncio.gather(*(getattr(self, method)(t, *args) for t in targets), return_exceptions=True)


def _drivers(*drivers: _Driver) -> Any:
    table = {d.name: d for d in drivers}
    return table.__getitem__


# -- building a chain --------------------------------------------------------------------------------


def test_the_chain_keeps_the_profiles_order() -> None:
    links = build_chain("power", _Profile(power=("bmc-b", "bmc-a")), [_target("s1")], registry=_registry())
    assert [link.name for link in links] == ["bmc-b", "bmc-a"]


def test_drivers_without_a_credential_of_their_kind_are_left_out() -> None:
    reg = _registry()
    profile = _Profile(power=("bmc-a", "shell", "anykind"))
    assert [x.name for x in build_chain("power", profile, [_target("s1", "ipmi")], registry=reg)] == [
        "bmc-a", "anykind"]  # no SSH credential: the shell driver cannot be asked
    assert [x.name for x in build_chain("power", profile, [_target("s1", "ssh")], registry=reg)] == [
        "shell", "anykind"]
    both = build_chain("power", profile, [_target("s1", "ipmi"), _target("s1-os", "ssh")], registry=reg)
    assert [(x.name, x.target.name) for x in both] == [("bmc-a", "s1"), ("shell", "s1-os"), ("anykind", "s1")]


def test_unknown_drivers_and_drivers_without_the_capability_are_left_out() -> None:
    profile = _Profile(sel=("bmc-b", "nosuch", "bmc-a"))
    assert [x.name for x in build_chain("sel", profile, [_target("s1")], registry=_registry())] == ["bmc-a"]


def test_sensors_and_sel_fall_back_to_the_power_list_only_when_the_profile_has_none() -> None:
    assert chain_names(_Profile(power=("bmc-a", "bmc-b")), "sensors") == ("bmc-a", "bmc-b")
    assert chain_names(_Profile(power=("bmc-a",), sensors=("bmc-b",)), "sensors") == ("bmc-b",)
    assert chain_names(_Profile(power=("bmc-a",)), "outlets") == ()  # not a BMC capability: no fallback
    assert chain_names(None, "power") == ("ipmi",)


# -- walking one chain -------------------------------------------------------------------------------


def _links(*names: str) -> list[Link]:
    return [Link(n, _target("s1")) for n in names]


def test_a_timeout_tries_the_next_driver_and_the_answer_names_it() -> None:
    a = _Driver("a", default=DeviceTimeout("no answer in 1.0s", target="s1", operation="power status"))
    b = _Driver("b", default="off")
    answer = asyncio.run(call_chain(_links("a", "b"), _drivers(a, b), lambda d, t: d.power_status(t)))
    assert (answer.ok, answer.value, answer.driver) == (True, "off", "b")
    assert [name for name, _ in answer.tried] == ["a"] and "no answer" in answer.tried[0][1]


@pytest.mark.parametrize("error", [DeviceUnreachable("refused"), Unsupported("cipher suite 0 only")])
def test_unreachable_and_unsupported_try_the_next_driver(error: DriverError) -> None:
    a, b = _Driver("a", default=error), _Driver("b")
    answer = asyncio.run(call_chain(_links("a", "b"), _drivers(a, b), lambda d, t: d.power_status(t)))
    assert answer.driver == "b" and b.calls == ["s1"]


@pytest.mark.parametrize("error", [AuthFailed("password refused"), DriverError("BMC answered nonsense")])
def test_an_auth_failure_or_a_wrong_answer_stops_the_chain(error: DriverError) -> None:
    a, b = _Driver("a", default=error), _Driver("b")
    answer = asyncio.run(call_chain(_links("a", "b"), _drivers(a, b), lambda d, t: d.power_status(t)))
    assert answer.error is error and answer.driver == "" and b.calls == []


def test_when_every_driver_fails_retryably_the_last_error_is_kept_and_all_are_listed() -> None:
    a = _Driver("a", default=DeviceTimeout("a timed out"))
    b = _Driver("b", default=DeviceUnreachable("b refused"))
    answer = asyncio.run(call_chain(_links("a", "b"), _drivers(a, b), lambda d, t: d.power_status(t)))
    assert isinstance(answer.error, DeviceUnreachable) and [n for n, _ in answer.tried] == ["a", "b"]


def test_an_empty_chain_is_unsupported_not_a_crash() -> None:
    answer = asyncio.run(call_chain([], _drivers(), lambda d, t: d.power_status(t), capability="power",
                                    target="s1"))
    assert isinstance(answer.error, Unsupported) and "power" in str(answer.error)


# -- many servers: bulk per driver -------------------------------------------------------------------


def test_gather_groups_targets_by_driver_and_sends_only_the_retryable_failures_on_in_bulk() -> None:
    names = [f"s{i}" for i in range(6)]
    a = _Driver("a", bulk=True, answers={"s1": DeviceTimeout("t"), "s3": DeviceTimeout("t"),
                                          "s4": AuthFailed("no")})
    b = _Driver("b", bulk=True, default="off")
    chains = [[Link("a", _target(n)), Link("b", _target(n))] for n in names[:5]] + [[Link("b", _target("s5"))]]
    answers = asyncio.run(gather_chain(chains, _drivers(a, b), "power_status"))
    assert a.bulk_calls == [["s0", "s1", "s2", "s3", "s4"]]  # one bulk call, not one per server
    assert b.bulk_calls == [["s5"], ["s1", "s3"]]  # stage 1 (its own chain), then the retryable ones, together
    assert [(x.target, x.driver, x.value) for x in answers] == [
        ("s0", "a", "on"), ("s1", "b", "off"), ("s2", "a", "on"), ("s3", "b", "off"), ("s4", "", None),
        ("s5", "b", "off")]
    assert isinstance(answers[4].error, AuthFailed)  # stopped: b never saw s4


def test_gather_with_a_callable_bounds_concurrency_per_driver() -> None:
    inflight, peak = 0, 0

    async def call(driver: Any, target: Target) -> str:
        nonlocal inflight, peak
        inflight += 1
        peak = max(peak, inflight)
        await asyncio.sleep(0.01)
        inflight -= 1
        return target.name

    chains = [[Link("a", _target(f"s{i}"))] for i in range(20)]
    answers = asyncio.run(gather_chain(chains, _drivers(_Driver("a")), call, concurrency=4))
    assert [x.value for x in answers] == [f"s{i}" for i in range(20)] and peak == 4


def test_a_bug_in_a_driver_is_raised_not_reported_as_a_device_error() -> None:
    a = _Driver("a", bulk=True, default=KeyError("oops"))
    with pytest.raises(KeyError):
        asyncio.run(gather_chain([[Link("a", _target("s1"))]], _drivers(a), "power_status"))


# -- power: act and confirm through the driver that answered ----------------------------------------


def test_chained_power_pins_the_driver_that_answered_the_status() -> None:
    a, b = _Driver("a", default=DeviceTimeout("t")), _Driver("b", default="off")
    power = ChainedPower(_links("a", "b"), _drivers(a, b))

    async def run() -> None:
        assert await power.power_status(_target("s1")) == "off"
        await power.power_on(_target("s1"))
        await power.power_status(_target("s1"))

    asyncio.run(run())
    assert power.answered == "b" and a.calls == ["s1"]  # a is not asked again once b answered
    assert b.calls == ["s1", "on:s1", "s1"]
