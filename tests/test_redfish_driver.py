"""The Redfish driver against OpenStack's sushy-tools emulator (``--fake``, TLS, bcrypt Basic auth).

One emulator for the module (two fake systems), a fresh driver per test. sushy-tools has no
SessionService (so Basic auth is used), no LogServices and no Chassis Power: those paths are proven
against the scripted BMC in ``test_redfish_hostile.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from fleet.drivers.base import BootDevice
from fleet.drivers.redfish import RedfishDriver, fetch_fingerprint
from fleet.drivers.registry import registry
from fleet.errors import AuthFailed, DeviceTimeout, FatalError, Unsupported

from .redfishpeer import PASSWORD, make_cert, sushy_peer_fixture

pytestmark = pytest.mark.peer

sushy = sushy_peer_fixture(count=2)


def run(fn: Callable[[RedfishDriver], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with RedfishDriver() as driver:
            return await fn(driver)

    return asyncio.run(main())


def test_registered_as_redfish_with_its_capabilities() -> None:
    assert registry.load("redfish") is RedfishDriver
    assert registry.capabilities("redfish") == {"power", "boot", "sensors", "sel", "fru", "bmc"}
    assert registry.credential_kinds("redfish") == {"redfish"}


def test_fetch_fingerprint_is_the_certificate_the_emulator_presents(sushy: Any) -> None:
    assert asyncio.run(fetch_fingerprint(sushy.host, sushy.port, 3.0)) == sushy.fingerprint


def test_resources_found_by_links_cached_per_bmc_basic_auth_without_sessions(sushy: Any) -> None:
    target = sushy.target("fake1")

    async def go(driver: RedfishDriver) -> Any:
        first = await driver.power_status(target)
        state = driver.bmc_state(target)
        assert state is not None and state.root is not None
        assert state.sessions_uri == ""  # sushy-tools has no SessionService: HTTP Basic
        assert state.token is None
        system = state.links["system:fake1"]
        assert system.endswith("00000000-0000-4000-8000-000000000001")  # fake1 found by its Name
        return first, await driver.power_status(target)

    first, second = run(go)
    assert first == second and first in ("on", "off")


def test_power_on_and_off_are_confirmed_not_only_accepted(sushy: Any) -> None:
    target = sushy.target("fake0")

    async def go(driver: RedfishDriver) -> list[str]:
        seen = []
        for action in (driver.power_on, driver.power_off):
            await action(target)
            seen.append(await driver.power_status(target))  # right after: the change already shows
        return seen

    assert run(go) == ["on", "off"]


def test_cycle_without_powercycle_uses_forcerestart_and_ends_on(sushy: Any) -> None:
    target = sushy.target("fake1")

    async def go(driver: RedfishDriver) -> list[str]:
        await driver.power_on(target)
        await driver.power_cycle(target)  # sushy offers no PowerCycle: ForceRestart
        after_cycle = await driver.power_status(target)
        await driver.power_soft(target)  # GracefulShutdown
        return [after_cycle, await driver.power_status(target)]

    assert run(go) == ["on", "off"]


def test_unconfirmed_power_change_is_a_timeout_naming_the_state(sushy: Any) -> None:
    target = sushy.target("fake0", confirm_timeout_s=0.3)

    async def go(driver: RedfishDriver) -> None:
        if await driver.power_status(target) == "on":
            await driver.power_off(dataclasses.replace(target, options={**target.options, "confirm_timeout_s": 20}))
        await driver.power_on(target)

    started = time.monotonic()
    with pytest.raises(DeviceTimeout, match=r"accepted but PowerState is still off") as info:
        run(go)
    assert info.type is DeviceTimeout
    assert time.monotonic() - started < 25


def test_boot_override_set_and_read_back_continuous_after_once_is_reported(sushy: Any,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    target = sushy.target("fake0")

    async def go(driver: RedfishDriver) -> list[BootDevice]:
        await driver.set_boot(target, "pxe", persistent=False, uefi=True)
        once = await driver.get_boot(target)
        await driver.set_boot(target, "disk", persistent=True, uefi=False)
        legacy = await driver.get_boot(target)
        await driver.set_boot(target, "cdrom", persistent=True, uefi=True)
        return [once, legacy, await driver.get_boot(target)]

    with caplog.at_level(logging.WARNING, logger="fleet.drivers.redfish"):
        once, legacy, cd = run(go)
    # sushy-tools keeps Continuous whatever is asked: get_boot says so, and the driver logs it.
    assert once == BootDevice("pxe", persistent=True, uefi=True)
    assert "keeps BootSourceOverrideEnabled=Continuous after Once" in caplog.text
    assert legacy == BootDevice("disk", persistent=True, uefi=False)
    assert cd == BootDevice("cdrom", persistent=True, uefi=True)


def test_boot_target_the_system_does_not_offer_is_unsupported(sushy: Any) -> None:
    with pytest.raises(Unsupported, match="does not offer boot target BiosSetup"):
        run(lambda d: d.set_boot(sushy.target("fake0"), "bios"))


def test_sensors_from_chassis_thermal_in_the_ipmi_style(sushy: Any) -> None:
    readings = {r.name: r for r in run(lambda d: d.sensors(sushy.target("fake0")))}
    intake = readings["Chassis Intake Temp"]
    assert (intake.kind, intake.value, intake.unit, intake.state) == ("temperature", 25.0, "celsius", "ok")
    assert intake.thresholds == {"warning_high": 30.0, "critical_high": 40.0, "non_recoverable_high": 50.0,
                                 "warning_low": 10.0, "critical_low": 5.0, "non_recoverable_low": 0.0}
    fan = readings["BaseBoard System Fan"]
    assert (fan.kind, fan.value, fan.unit) == ("fan", 2100.0, "rpm")
    assert readings["CPU Temp"].thresholds["critical_high"] == 45.0


def test_fru_nics_and_firmware(sushy: Any) -> None:
    target = sushy.target("fake1")

    async def go(driver: RedfishDriver) -> Any:
        return await driver.fru(target), await driver.nics(target), await driver.firmware(target)

    fru, nics, firmware = run(go)
    assert fru.manufacturer == "Sushy Emulator" and fru.extra["Name"] == "fake1"
    assert [n.mac for n in nics] == ["52:54:00:00:00:01"]
    assert firmware == {"BMC": "1.00"}  # its FirmwareInventory link leads nowhere: the manager's version


def test_sel_without_logservices_is_unsupported_so_the_chain_moves_on(sushy: Any) -> None:
    with pytest.raises(Unsupported, match="no LogServices"):
        run(lambda d: d.sel(sushy.target("fake0")))


def test_wrong_password_is_auth_failed_without_the_password(sushy: Any) -> None:
    with pytest.raises(AuthFailed) as info:
        run(lambda d: d.power_status(sushy.target("fake0", password="wrong-pass-xyz")))
    assert "wrong-pass-xyz" not in str(info.value) and PASSWORD not in str(info.value)
    assert "401" in str(info.value)


def test_no_fingerprint_and_no_ca_file_is_refused_naming_fleet_bmc_trust(sushy: Any) -> None:
    with pytest.raises(FatalError, match="fleet bmc trust"):
        run(lambda d: d.power_status(sushy.target("fake0", tls_fingerprint=None)))


def test_changed_certificate_is_fatal_naming_both_fingerprints(sushy: Any) -> None:
    pinned = "sha256:" + "ab" * 32
    with pytest.raises(FatalError) as info:
        run(lambda d: d.power_status(sushy.target("fake0", tls_fingerprint=pinned)))
    assert pinned in str(info.value) and sushy.fingerprint in str(info.value)
    assert "changed" in str(info.value)


def test_ca_file_verifies_and_another_ca_is_refused(sushy: Any) -> None:
    state = run(lambda d: d.power_status(sushy.target("fake0", tls_fingerprint=None, ca_file=str(sushy.cert_file))))
    assert state in ("on", "off")
    with tempfile.TemporaryDirectory() as tmp:
        other, _, _ = make_cert(Path(tmp), "other")
        with pytest.raises(FatalError, match="not trusted"):
            run(lambda d: d.power_status(sushy.target("fake0", tls_fingerprint=None, ca_file=str(other))))
