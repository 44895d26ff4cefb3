"""The Redfish driver against a scripted BMC (sessions, ETags, LogServices, task monitors: what sushy-tools
lacks) and against hostile ones: 500, 503 with Retry-After, invalid JSON, a redirect to another host, a
wrong certificate, an endless body, a hang. Each is an aiohttp.web server on 127.0.0.1 in the test's
own event loop; each failure must be a clear error of the right class within its deadline.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from fleet.drivers.base import BootDevice, Target
from fleet.drivers.redfish import RedfishDriver
from fleet.errors import AuthFailed, DeviceTimeout, DeviceUnreachable, FatalError, RetryableError, Unsupported
from inventory.secrets import Secret

from .redfishbmc import ScriptedBmc, serve
from .redfishpeer import free_port, make_cert

R = "/redfish/v1"


@pytest.fixture(scope="module")
def certs() -> Iterator[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        good, good_key, der = make_cert(Path(tmp), "good")
        other, other_key, _ = make_cert(Path(tmp), "other")
        yield {"cert": good, "key": good_key, "fp": "sha256:" + hashlib.sha256(der).hexdigest(),
               "other": other, "other_key": other_key}


def target(port: int, certs: dict[str, Any], *, timeout: float = 2.0, password: str = "pw-123456",
           **options: Any) -> Target:
    opts = {"credential_kind": "redfish", "tls_fingerprint": certs["fp"], "confirm_timeout_s": 5.0,
            "poll_interval_s": 0.05, **options}
    return Target("bmc1", "127.0.0.1", port, "admin", Secret(password), timeout, opts)


def with_bmc(certs: dict[str, Any], bmc: ScriptedBmc,
             fn: Callable[[RedfishDriver, Target], Awaitable[Any]], **options: Any) -> Any:
    async def main() -> Any:
        async with serve(bmc.app(), certs["cert"], certs["key"]) as port:
            driver = RedfishDriver()
            try:
                return await fn(driver, target(port, certs, **options))
            finally:
                await driver.aclose()

    return asyncio.run(main())


# -- sessions --------------------------------------------------------------------------------------

def test_session_made_once_reused_renewed_on_401_deleted_on_close_over_one_connection(certs: dict[str, Any],
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    bmc = ScriptedBmc()

    async def go(driver: RedfishDriver, t: Target) -> None:
        await driver.power_status(t)
        await driver.get_boot(t)
        assert [p for m, p, _ in bmc.log if m == "POST"] == [f"{R}/SessionService/Sessions"]
        bmc.tokens.clear()  # the BMC forgets the session (a BMC reboot, an idle timeout)
        await driver.power_status(t)
        assert len([p for m, p, _ in bmc.log if m == "POST"]) == 2

    with caplog.at_level(logging.DEBUG, logger="fleet.drivers.redfish"):
        with_bmc(certs, bmc, go)
    assert all(kind == "token" for m, p, kind in bmc.log if p not in (R, f"{R}/", f"{R}/SessionService/Sessions"))
    assert bmc.deleted_sessions == ["2"]  # the live one, at close
    assert len(bmc.connections) == 1  # one kept-alive connection for all of it
    assert "tok-" not in caplog.text and "pw-123456" not in caplog.text


def test_refused_session_is_auth_failed_and_the_echoed_password_is_scrubbed(certs: dict[str, Any]) -> None:
    with pytest.raises(AuthFailed) as info:
        with_bmc(certs, ScriptedBmc(password="the-right-one"), lambda d, t: d.power_status(t))
    assert "pw-123456" not in str(info.value) and "admin" in str(info.value)


# -- power -----------------------------------------------------------------------------------------

def test_reset_types_from_action_info_and_409_after_off_retried(certs: dict[str, Any]) -> None:
    bmc = ScriptedBmc()

    async def go(driver: RedfishDriver, t: Target) -> str:
        await driver.power_on(t)
        await driver.power_off(t)
        await driver.power_on(t)  # right after the off: 409 once, retried
        await driver.power_cycle(t)
        return await driver.power_status(t)

    assert with_bmc(certs, bmc, go) == "on"
    assert bmc.resets == [("On", 204), ("ForceOff", 204), ("On", 409), ("On", 204), ("PowerCycle", 204)]


def test_cycle_falls_back_to_off_then_on_when_neither_cycle_type_is_allowed(certs: dict[str, Any]) -> None:
    bmc = ScriptedBmc()
    bmc.reset_types = ["On", "ForceOff"]
    bmc.conflicts_after_off = 0
    assert with_bmc(certs, bmc, lambda d, t: d.power_cycle(t)) is None
    assert [r for r, _ in bmc.resets] == ["ForceOff", "On"]


# -- boot ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("mode", "expected"), [
    ("required", ['W/"1"']),                   # the ETag as given is accepted
    ("strong-only", ['W/"1"', '"1"']),         # 412 on the weak one: the strong form
    ("refuse", ['W/"1"', '"1"', None]),        # 412 to any If-Match: without it
])
def test_boot_patch_if_match_ladder(certs: dict[str, Any], mode: str, expected: list[str | None]) -> None:
    bmc = ScriptedBmc()
    bmc.if_match = mode

    async def go(driver: RedfishDriver, t: Target) -> BootDevice:
        await driver.set_boot(t, "pxe", persistent=False, uefi=False)
        return await driver.get_boot(t)

    assert with_bmc(certs, bmc, go) == BootDevice("pxe", persistent=False, uefi=False)
    assert bmc.patches == expected
    assert bmc.boot["BootSourceOverrideEnabled"] == "Once" and bmc.boot["BootSourceOverrideMode"] == "Legacy"


def test_boot_bios_and_none(certs: dict[str, Any]) -> None:
    async def go(driver: RedfishDriver, t: Target) -> list[BootDevice]:
        await driver.set_boot(t, "bios", persistent=True, uefi=True)
        bios = await driver.get_boot(t)
        await driver.set_boot(t, "none")
        return [bios, await driver.get_boot(t)]

    assert with_bmc(certs, ScriptedBmc(), go) == [BootDevice("bios", True, True), BootDevice("none", uefi=True)]


# -- profile quirks (fleet/profiles/quirks.py) that act in the driver ------------------------------

@pytest.mark.parametrize(("way", "resets"), [("off-on", ["ForceOff", "On"]), ("ForceRestart", ["ForceRestart"])])
def test_quirk_redfish_power_cycle_forces_the_way_to_cycle(certs: dict[str, Any], way: str,
                                                           resets: list[str]) -> None:
    bmc = ScriptedBmc()  # lists PowerCycle: without the quirk a cycle is PowerCycle (test above)
    bmc.conflicts_after_off = 0
    with_bmc(certs, bmc, lambda d, t: d.power_cycle(t), quirks={"redfish-power-cycle": way})
    assert [r for r, _ in bmc.resets] == resets and bmc.power == "On"


def test_quirk_redfish_power_cycle_with_a_reset_type_the_system_does_not_list_is_refused(
        certs: dict[str, Any]) -> None:
    bmc = ScriptedBmc()
    bmc.reset_types = ["On", "ForceOff", "PowerCycle"]
    with pytest.raises(Unsupported, match="quirk redfish-power-cycle says cycle with ForceRestart"):
        with_bmc(certs, bmc, lambda d, t: d.power_cycle(t), quirks={"redfish-power-cycle": "ForceRestart"})
    assert bmc.resets == []


def test_quirk_redfish_boot_all_fields_sends_mode_enabled_and_target_in_every_patch(certs: dict[str, Any]) -> None:
    def ami() -> ScriptedBmc:
        bmc = ScriptedBmc()
        bmc.wants_all_boot_fields = True
        del bmc.boot["BootSourceOverrideMode"]  # the resource shows no mode until one is set
        return bmc

    async def go(driver: RedfishDriver, t: Target) -> list[BootDevice]:
        await driver.set_boot(t, "pxe", persistent=False, uefi=True)
        pxe = await driver.get_boot(t)
        await driver.set_boot(t, "none")
        return [pxe, await driver.get_boot(t)]

    with pytest.raises(FatalError, match=r"HTTP 400 .*missing BootSourceOverrideMode"):
        with_bmc(certs, ami(), go)  # without the quirk the mode is left out and the BMC refuses
    bmc = ami()
    got = with_bmc(certs, bmc, go, quirks={"redfish-boot-all-fields": True})
    assert got == [BootDevice("pxe", persistent=False, uefi=True), BootDevice("none", uefi=True)]
    assert [b["BootSourceOverrideMode"] for b in bmc.boot_bodies] == ["UEFI", "UEFI"]  # clearing keeps the mode
    assert all(len(b) == 3 for b in bmc.boot_bodies)


def test_quirk_redfish_continuous_refused_sends_once_and_says_it_is_not_persistent(
        certs: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    def refusing() -> ScriptedBmc:
        bmc = ScriptedBmc()
        bmc.refuses_continuous = True
        return bmc

    async def go(driver: RedfishDriver, t: Target) -> BootDevice:
        await driver.set_boot(t, "pxe", persistent=True, uefi=True)
        return await driver.get_boot(t)

    with pytest.raises(FatalError, match=r"HTTP 400 .*Continuous is not supported"):
        with_bmc(certs, refusing(), go)
    with pytest.raises(FatalError, match="Continuous is not supported"):  # a false value is no quirk
        with_bmc(certs, refusing(), go, quirks={"redfish-continuous-refused": False})
    bmc = refusing()
    with caplog.at_level(logging.WARNING, logger="fleet.drivers.redfish"):
        got = with_bmc(certs, bmc, go, quirks={"redfish-continuous-refused": True})
    assert got == BootDevice("pxe", persistent=False, uefi=True)
    assert [b["BootSourceOverrideEnabled"] for b in bmc.boot_bodies] == ["Once"]
    assert "next boot only and is not re-applied" in caplog.text


# -- readings --------------------------------------------------------------------------------------

def test_sel_from_the_sel_log_service_paged_then_cleared_through_a_task_monitor(certs: dict[str, Any]) -> None:
    bmc = ScriptedBmc()

    async def go(driver: RedfishDriver, t: Target) -> Any:
        before = await driver.sel(t)
        await driver.clear_sel(t)
        return before, await driver.sel(t)

    before, after = with_bmc(certs, bmc, go)
    assert [e.record_id for e in before] == [1, 2]
    assert before[1].severity == "critical" and "ECC" in before[1].event and before[1].sensor == "Memory"
    assert before[0].ts is not None and before[0].ts.year == 2026
    assert after == []
    monitor = [p for m, p, _ in bmc.log if p.endswith("TaskMonitors/7")]
    assert len(monitor) == 3  # two 202s, then done


def test_task_monitor_that_never_ends_is_a_timeout_within_the_deadline(certs: dict[str, Any]) -> None:
    bmc = ScriptedBmc()
    bmc.task_polls = 10_000
    started = time.monotonic()
    with pytest.raises(DeviceTimeout, match="still running at the deadline"):
        with_bmc(certs, bmc, lambda d, t: d.clear_sel(t), timeout=1.0)
    assert time.monotonic() - started < 3


def test_sensors_from_power_and_the_sensors_collection(certs: dict[str, Any]) -> None:
    readings = {r.name: r for r in with_bmc(certs, ScriptedBmc(), lambda d, t: d.sensors(t))}
    assert readings["System Power"].value == 312.0  # from Power; the Sensors duplicate is not repeated
    assert (readings["P12V"].unit, readings["P12V"].thresholds) == ("volts", {"critical_high": 13.2})
    assert readings["PSU2"].state == "absent" and readings["PSU1"].value == 160.0
    inlet = readings["Inlet Temp"]
    assert (inlet.kind, inlet.unit, inlet.state) == ("temperature", "celsius", "warning")
    assert inlet.thresholds == {"warning_high": 40.0, "critical_high": 50.0}


def test_fru_nics_firmware_and_bmc_reset(certs: dict[str, Any]) -> None:
    async def go(driver: RedfishDriver, t: Target) -> Any:
        out = await driver.fru(t), await driver.nics(t), await driver.firmware(t)
        await driver.bmc_reset(t)
        return out

    fru, nics, firmware = with_bmc(certs, ScriptedBmc(), go)
    assert (fru.manufacturer, fru.product, fru.serial, fru.board_serial) == ("Contoso", "R9000", "SN-42", "CH-9")
    assert [(n.id, n.mac) for n in nics] == [("nic1", "aa:bb:cc:00:00:01"), ("nic2", "aa:bb:cc:00:00:02")]
    assert firmware == {"BMC": "7.10.30", "BIOS": "2.3.4"}


# -- hostile BMCs ----------------------------------------------------------------------------------

ROOT = {"@odata.id": f"{R}/", "Systems": {"@odata.id": f"{R}/Systems"}}


def hostile(certs: dict[str, Any], handler: Callable[[web.Request], Awaitable[web.StreamResponse]], *,
            cert: str = "cert", timeout: float = 1.0) -> tuple[BaseException, float]:
    """Serve the root and ``handler`` for everything else; return the error power_status gives, and when."""
    async def route(request: web.Request) -> web.StreamResponse:
        if request.path.rstrip("/") == R:
            return web.json_response(ROOT)
        return await handler(request)

    async def main() -> tuple[BaseException, float]:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", route)
        async with serve(app, certs[cert], certs[f"{cert}_key" if cert != "cert" else "key"]) as port:
            started = time.monotonic()
            async with RedfishDriver() as driver:
                try:
                    await driver.power_status(target(port, certs, timeout=timeout))
                except Exception as exc:  # the test inspects it
                    return exc, time.monotonic() - started
            raise AssertionError("the hostile BMC's answer was taken")

    return asyncio.run(main())


def test_500_is_retryable(certs: dict[str, Any]) -> None:
    async def fail(request: web.Request) -> web.Response:
        return web.json_response({"error": {"code": "Base.1.0.InternalError", "message": "boom"}}, status=500)

    exc, _ = hostile(certs, fail)
    assert type(exc) is RetryableError and "HTTP 500" in str(exc) and "boom" in str(exc)


def test_503_with_retry_after_is_waited_out_then_past_the_deadline_is_retryable(certs: dict[str, Any]) -> None:
    calls: list[int] = []

    async def busy(request: web.Request) -> web.Response:
        calls.append(1)
        if len(calls) <= 2:
            return web.Response(status=503, headers={"Retry-After": "0.2"})
        if request.path.endswith("/Systems"):
            return web.json_response({"Members": [{"@odata.id": f"{R}/Systems/1"}]})
        return web.json_response({"PowerState": "On"})

    async def route(request: web.Request) -> web.Response:
        return web.json_response(ROOT) if request.path.rstrip("/") == R else await busy(request)

    async def main() -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", route)
        async with serve(app, certs["cert"], certs["key"]) as port, RedfishDriver() as driver:
            return await driver.power_status(target(port, certs, timeout=2.0))

    assert asyncio.run(main()) == "on"

    async def long_busy(request: web.Request) -> web.Response:
        return web.Response(status=503, headers={"Retry-After": "30"})

    exc, took = hostile(certs, long_busy)
    assert type(exc) is RetryableError and "Retry-After 30s is past the deadline" in str(exc) and took < 1.0


def test_invalid_json_is_fatal(certs: dict[str, Any]) -> None:
    async def garbage(request: web.Request) -> web.Response:
        return web.Response(body=b"{not json", content_type="application/json")

    exc, _ = hostile(certs, garbage)
    assert type(exc) is FatalError and "invalid JSON" in str(exc)


def test_redirect_to_another_host_is_never_followed(certs: dict[str, Any]) -> None:
    async def away(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "https://192.0.2.1/redfish/v1/Systems"})

    exc, took = hostile(certs, away)
    assert type(exc) is FatalError and "redirect to https://192.0.2.1/redfish/v1/Systems not followed" in str(exc)
    assert took < 1.0


def test_wrong_certificate_is_fatal_naming_both_fingerprints(certs: dict[str, Any]) -> None:
    async def never(request: web.Request) -> web.Response:
        raise AssertionError("no request may pass a wrong certificate")

    exc, _ = hostile(certs, never, cert="other")
    assert type(exc) is FatalError and certs["fp"] in str(exc) and "seen sha256:" in str(exc)


def test_endless_body_is_cut_at_the_limit(certs: dict[str, Any]) -> None:
    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        chunk = b" " * 65536
        while True:
            await resp.write(chunk)

    exc, took = hostile(certs, endless, timeout=5.0)
    assert type(exc) is FatalError and "exceeds 4194304 bytes" in str(exc) and took < 5.0


def test_hang_is_a_timeout_within_the_deadline(certs: dict[str, Any]) -> None:
    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(3600)
        raise AssertionError

    exc, took = hostile(certs, hang, timeout=0.5)
    assert type(exc) is DeviceTimeout and "within 0.5s" in str(exc)
    assert 0.4 < took < 1.5


def test_refused_connection_is_unreachable(certs: dict[str, Any]) -> None:
    port = free_port()

    async def main() -> None:
        async with RedfishDriver() as driver:
            await driver.power_status(target(port, certs))

    with pytest.raises(DeviceUnreachable, match="cannot connect"):
        asyncio.run(main())
