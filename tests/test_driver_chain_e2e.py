"""The driver chain against a real BMC: the lab's RMCP+ BMC, Rackfleet's real IPMI driver (pyghmi workers).

Two test-only drivers are registered in the driver registry for these tests (and removed after):
``slowtest`` truly times out (it waits out the target's deadline, then raises DeviceTimeout) and
``authfail`` refuses the credentials (AuthFailed). A profile saying ``power = ["slowtest", "ipmi"]``
must fall back to IPMI; ``["authfail", "ipmi"]`` must stop, and IPMI must never be called.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from types import MappingProxyType
from typing import Any

import pytest
from sqlalchemy import update

from fleet import Fleet
from fleet.drivers.base import Target
from fleet.drivers.registry import registry
from fleet.errors import AuthFailed, DeviceTimeout
from fleet.profiles import ProfileSet, load_profiles
from inventory.models import Server

from .factory import Spec, build
from .test_lab_bmc import PASSWORD, _block, _doc, threaded_lab


class SlowDriver:
    """Answers nothing: waits out the call's deadline, then reports the timeout, as a dead path does."""

    name = "slowtest"

    def __init__(self) -> None:
        self.calls = 0

    async def power_status(self, target: Target) -> str:
        self.calls += 1
        await asyncio.sleep(target.timeout)
        raise DeviceTimeout(f"no answer within {target.timeout:g}s", target=target.name, operation="power status")


class AuthFailDriver:
    """Refuses the credentials, as a BMC that rejects the password does."""

    name = "authfail"

    def __init__(self) -> None:
        self.calls = 0

    async def power_status(self, target: Target) -> str:
        self.calls += 1
        raise AuthFailed("authfail: the BMC refused user admin", target=target.name, operation="power status")


@pytest.fixture
def test_drivers() -> Iterator[None]:
    registry.register("slowtest", f"{__name__}:SlowDriver", {"power"}, "test only: always times out",
                      credential_kinds={"ipmi"})
    registry.register("authfail", f"{__name__}:AuthFailDriver", {"power"}, "test only: refuses credentials",
                      credential_kinds={"ipmi"})
    try:
        yield
    finally:
        registry.unregister("slowtest")
        registry.unregister("authfail")


@pytest.fixture
def lab() -> Iterator[tuple[Any, Any, tuple[str, int]]]:
    pairs = _block(1)
    with threaded_lab(_doc(pairs)) as (server, call):
        yield server, call, pairs[0]


def _fleet(engine: Any, keyring: Any, bmc: tuple[str, int], power: tuple[str, ...],
           **extra: Any) -> tuple[Fleet, SlowDriver, AuthFailDriver]:
    base = load_profiles().get("generic-ipmi")
    drivers = {**{k: v for k, v in base.drivers.items() if k != "power"}, "power": power, **extra}
    profile = dataclasses.replace(base, name="chaintest", drivers=MappingProxyType(drivers))
    slow, auth = SlowDriver(), AuthFailDriver()
    fleet = Fleet(engine, keyring=keyring, actor="tester", profiles=ProfileSet([profile]), device_timeout=2.0,
                  drivers={"slowtest": slow, "authfail": auth})
    build(engine, [Spec("chain-1", rack="R1", profile="chaintest")])
    with engine.begin() as conn:
        conn.execute(update(Server).where(Server.hostname == "chain-1").values(bmc_host=bmc[0], bmc_port=bmc[1]))
    fleet.set_credential("bmc", "ipmi", PASSWORD, username="admin")
    fleet.assign_credential("bmc", "host=chain-1")
    return fleet, slow, auth


def _run(fleet: Fleet, coro: Any) -> Any:
    async def go() -> Any:
        try:
            return await coro
        finally:
            await fleet.aclose()
    return asyncio.run(go())


def test_power_status_falls_back_from_a_driver_that_times_out_to_ipmi(
        test_drivers: None, lab: Any, sqlite_engine: Any, keyring: Any) -> None:
    server, call, bmc = lab
    fleet, slow, _ = _fleet(sqlite_engine, keyring, bmc, ("slowtest", "ipmi"))
    [result] = _run(fleet, fleet.power("status", "host=chain-1"))
    assert (result.ok, result.before, result.outcome, result.driver) == (True, "on", "status", "ipmi")
    assert result.to_json()["driver"] == "ipmi"
    assert slow.calls == 1  # tried first, waited out its deadline, then IPMI answered
    assert call(lambda: server.stats.sessions_opened) >= 1  # the real BMC was asked


def test_power_status_stops_on_an_auth_failure_and_never_calls_ipmi(
        test_drivers: None, lab: Any, sqlite_engine: Any, keyring: Any) -> None:
    server, call, bmc = lab
    fleet, _, auth = _fleet(sqlite_engine, keyring, bmc, ("authfail", "ipmi"))
    [result] = _run(fleet, fleet.power("status", "host=chain-1"))
    assert (result.ok, result.outcome, result.driver) == (False, "unknown-state", "")
    assert "refused user admin" in result.error
    assert auth.calls == 1
    stats = call(lambda: server.stats.as_dict())
    assert stats["datagrams"] == 0 and stats["sessions_opened"] == 0  # IPMI never spoke to the BMC
    assert "ipmi" not in fleet.ctx.started_drivers  # nor was the IPMI driver even started


def test_a_sweep_reads_sensors_and_sel_through_their_own_chains_and_records_the_drivers(
        test_drivers: None, lab: Any, sqlite_engine: Any, keyring: Any) -> None:
    _, _, bmc = lab
    # power falls back from slowtest; sensors and sel have their own list (ipmi only): slowtest is not asked
    fleet, slow, _ = _fleet(sqlite_engine, keyring, bmc, ("slowtest", "ipmi"))
    result = _run(fleet, fleet.sweep("host=chain-1", ups=False))
    assert result.errors == {} and result.servers_read == 1
    assert result.to_json()["drivers"] == {"power": {"ipmi": 1}, "sensors": {"ipmi": 1}, "sel": {"ipmi": 1}}
    assert slow.calls == 1  # power only: the sensors and SEL were not read through the power chain
