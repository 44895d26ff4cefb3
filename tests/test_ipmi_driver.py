"""The IPMI driver against real OpenIPMI ipmi_sim instances, checked by ipmitool and the chassis script.

One module-scoped set of 20 simulators (~3.6 MB each) and one driver with two workers serve every
test; each test that changes a simulator uses its own instance (see ``SIM``), so tests do not
depend on their order. Every assertion about what a BMC did is made by an independent party:
``ipmitool`` over the network, or the chassis-control state file ipmi_sim's script keeps.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from fleet.drivers.base import BootDevice, Target
from fleet.drivers.ipmi import IpmiDriver, OpError
from fleet.errors import AuthFailed, DeviceTimeout, DriverError, FatalError, RetryableError, Unsupported
from fleet.profiles import load_profiles
from inventory.secrets import Secret

from .ipmisim import (
    MANUFACTURER_ID,
    SEL_EVENTS,
    SENSORS,
    IpmiSim,
    freeipmi_available,
    ipmi_sim_fixture,
    ipmitool_available,
)

pytestmark = [pytest.mark.peer, pytest.mark.timeout(120)]

sims = ipmi_sim_fixture(count=20, scope="module")

#: Which simulator each test may change.
SIM = {"power": 0, "cycle": 1, "reset": 2, "soft": 3, "boot": 4, "sel": 5, "sel_clear": 6, "reset_bmc": 7,
       "status": 8}
DEADLINE = 1.0
MARGIN = 0.35


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def driver() -> Iterator[IpmiDriver]:
    drv = IpmiDriver(workers=2, test_ops=True, watchdog_margin_s=1.0)
    yield drv
    drv.close()


@pytest.fixture(scope="module")
def sim_options() -> dict[str, Any]:
    """Target options as the Fleet service builds them from the openipmi-sim profile."""
    profile = load_profiles().get("openipmi-sim")
    assert profile.ipmi is not None
    return {"profile": profile.name, "cipher_suites": tuple(profile.ipmi.cipher_suites),
            "quirks": {q.id: q.value for q in profile.quirks}}


@pytest.fixture(autouse=True, scope="module")
def _need_ipmitool() -> None:
    if not ipmitool_available():
        from .peers import missing_peer

        missing_peer("ipmitool is not installed (Debian package ipmitool)")


def target(sim: IpmiSim, options: dict[str, Any], *, password: str = "password", username: str = "admin",
           timeout: float = 3.0, **extra: Any) -> Target:
    return Target(name=f"sim{sim.index}", host=sim.host, port=sim.port, username=username,
                  password=Secret(password), timeout=timeout, options={**options, **extra})


def ipmitool_power(sim: IpmiSim) -> str:
    out = sim.ipmitool("chassis", "power", "status").stdout
    m = re.search(r"Chassis Power is (on|off)", out)
    assert m, out
    return m.group(1)


def wait_for(predicate: Any, timeout: float = 4.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


# ---------------------------------------------------------------------------------------------
# The harness itself (another engineer compares our lab BMC with these answers)
# ---------------------------------------------------------------------------------------------


def test_harness_chassis_script_follows_ipmitool(sims: list[IpmiSim]) -> None:
    sim = sims[SIM["status"]]
    assert sim.alive() and sim.pid > 0
    sim.set_chassis(power=True)
    assert ipmitool_power(sim) == "on"
    sim.set_chassis(power=False)
    assert ipmitool_power(sim) == "off"
    sim.set_chassis(power=True)
    mc = sim.ipmitool("mc", "info").stdout
    assert f"Manufacturer ID           : {MANUFACTURER_ID}" in mc


def test_harness_freeipmi_sees_the_same_bmc(sims: list[IpmiSim]) -> None:
    if not freeipmi_available():
        from .peers import missing_peer

        missing_peer("FreeIPMI is not installed (Debian package freeipmi-tools)")
    sim = sims[SIM["status"]]
    sim.set_chassis(power=True)
    assert sim.freeipmi("ipmi-power", "--stat").stdout.strip().endswith(": on")
    rows = {}
    for line in sim.freeipmi("ipmi-sensors", "--no-header-output", "--comma-separated-output").stdout.splitlines():
        cols = line.split(",")
        rows[cols[1]] = cols[3]
    for spec in SENSORS:
        assert float(rows[spec.name]) == pytest.approx(spec.value)


# ---------------------------------------------------------------------------------------------
# Power
# ---------------------------------------------------------------------------------------------


def test_power_status_agrees_with_ipmitool_and_the_state_file(driver: IpmiDriver, sims: list[IpmiSim],
                                                              sim_options: dict[str, Any]) -> None:
    sim = sims[SIM["status"]]
    for on in (False, True):
        sim.set_chassis(power=on)
        state = run(driver.power_status(target(sim, sim_options)))
        assert state == sim.power_state() == ipmitool_power(sim) == ("on" if on else "off")


def test_power_off_then_on(driver: IpmiDriver, sims: list[IpmiSim], sim_options: dict[str, Any]) -> None:
    sim = sims[SIM["power"]]
    sim.set_chassis(power=True)
    t = target(sim, sim_options)
    run(driver.power_off(t))
    assert sim.power_state() == "off" and ipmitool_power(sim) == "off"
    assert run(driver.power_status(t)) == "off"
    run(driver.power_on(t))
    assert sim.power_state() == "on" and ipmitool_power(sim) == "on"
    assert sim.chassis_log()[-2:] == ["power 0", "power 1"]


def test_power_cycle_turns_off_then_on(driver: IpmiDriver, sims: list[IpmiSim], sim_options: dict[str, Any]) -> None:
    sim = sims[SIM["cycle"]]
    sim.set_chassis(power=True)
    sim.clear_chassis_log()
    run(driver.power_cycle(target(sim, sim_options)))
    assert sim.chassis_log()[0] == "power 0"
    # ipmi_sim powers back on from a one-second timer.
    assert wait_for(lambda: sim.power_state() == "on")
    assert sim.chassis_log() == ["power 0", "power 1"]
    assert ipmitool_power(sim) == "on"


def test_power_reset_keeps_power_on(driver: IpmiDriver, sims: list[IpmiSim], sim_options: dict[str, Any]) -> None:
    sim = sims[SIM["reset"]]
    sim.set_chassis(power=True)
    sim.clear_chassis_log()
    run(driver.power_reset(target(sim, sim_options)))
    assert sim.chassis_log() == ["reset 1"]
    assert sim.power_state() == "on" and ipmitool_power(sim) == "on"


def test_power_soft_asks_for_a_shutdown(driver: IpmiDriver, sims: list[IpmiSim], sim_options: dict[str, Any]) -> None:
    sim = sims[SIM["soft"]]
    sim.set_chassis(power=True)
    sim.clear_chassis_log()
    run(driver.power_soft(target(sim, sim_options)))
    assert sim.chassis_log() == ["shutdown 1"]
    assert sim.power_state() == "off" and ipmitool_power(sim) == "off"


# ---------------------------------------------------------------------------------------------
# Boot device
# ---------------------------------------------------------------------------------------------

_IPMITOOL_BOOT = {"pxe": "Force PXE", "disk": "Force Boot from default Hard-Drive",
                  "bios": "Force Boot into BIOS Setup", "cdrom": "Force Boot from CD/DVD", "none": "No override"}
_SCRIPT_BOOT = {"pxe": "pxe", "disk": "default", "bios": "bios", "cdrom": "cdrom", "none": "none"}


@pytest.mark.parametrize("device", ["pxe", "disk", "bios", "cdrom", "none"])
def test_boot_device_set_then_read_back(driver: IpmiDriver, sims: list[IpmiSim], sim_options: dict[str, Any],
                                        device: str) -> None:
    sim = sims[SIM["boot"]]
    t = target(sim, sim_options)
    run(driver.set_boot(t, device))  # type: ignore[arg-type]
    assert sim.boot_device() == _SCRIPT_BOOT[device]
    assert _IPMITOOL_BOOT[device] in sim.ipmitool("chassis", "bootparam", "get", "5").stdout
    assert run(driver.get_boot(t)) == BootDevice(device)  # type: ignore[arg-type]


def test_persistent_uefi_boot_keeps_what_ipmi_sim_keeps(driver: IpmiDriver, sims: list[IpmiSim],
                                                        sim_options: dict[str, Any]) -> None:
    """ipmi_sim keeps only the device selector, not the persistent/UEFI/valid flags (profile quirk)."""
    sim = sims[SIM["boot"]]
    t = target(sim, sim_options)
    run(driver.set_boot(t, "pxe", persistent=True, uefi=True))
    assert sim.boot_device() == "pxe"
    out = sim.ipmitool("chassis", "bootparam", "get", "5").stdout
    assert "Force PXE" in out and "Options apply to only next boot" in out
    assert run(driver.get_boot(t)) == BootDevice("pxe", persistent=False, uefi=False)
    # Without the quirk the cleared valid bit is honoured: no override.
    plain = target(sim, {"cipher_suites": (3,)})
    assert run(driver.get_boot(plain)) == BootDevice("none")


# ---------------------------------------------------------------------------------------------
# Sensors
# ---------------------------------------------------------------------------------------------


def test_sensors_have_the_configured_values_units_thresholds_and_states(
        driver: IpmiDriver, sims: list[IpmiSim], sim_options: dict[str, Any]) -> None:
    sim = sims[SIM["status"]]
    readings = {r.name: r for r in run(driver.sensors(target(sim, sim_options)))}
    tool = {}
    for line in sim.ipmitool("sensor").stdout.splitlines():
        cols = [c.strip() for c in line.split("|")]
        if len(cols) > 2 and cols[1] not in ("na", ""):
            tool[cols[0]] = float(cols[1]) if not cols[1].startswith("0x") else cols[1]
    for spec in SENSORS:
        r = readings[spec.name]
        assert r.kind == spec.kind and r.unit == spec.unit
        assert r.value == pytest.approx(spec.value) == pytest.approx(tool[spec.name])
        expected = {
            {"lnc": "warning_low", "lc": "critical_low", "lnr": "non_recoverable_low", "unc": "warning_high",
             "uc": "critical_high", "unr": "non_recoverable_high"}[k]: v
            for k, v in spec.threshold_values().items()
        }
        assert r.thresholds == pytest.approx(expected)
        assert r.state == spec.expected_state
    assert readings["Exhaust Temp"].state == "critical"
    assert readings["DIMM A1"].state == "ok"


def test_sdrs_are_read_once_per_model_per_worker(driver: IpmiDriver, sims: list[IpmiSim],
                                                 sim_options: dict[str, Any]) -> None:
    ts = [target(s, sim_options) for s in sims[10:20]]

    async def sweep() -> list[Any]:
        return await driver.gather("sensors", ts)

    first = run(sweep())
    assert all(isinstance(r, list) and len(r) == len(SENSORS) + 1 for r in first)

    async def reads() -> int:
        total = 0
        for shard in {driver.pool.shard_of(t.host, t.port) for t in ts}:
            host = next(t.host for t in ts if driver.pool.shard_of(t.host, t.port) == shard)
            stats = await driver.pool.call("_stats", (), host=host, port=623, username=b"", password=b"",
                                           cipher_suites=(3,), timeout=2, options={})
            total += sum(v for k, v in stats["sdr_reads"].items() if k in {f"{t.host}:{t.port}" for t in ts})
        return total

    after_first = run(reads())
    shards = len({driver.pool.shard_of(t.host, t.port) for t in ts})
    records = len(SENSORS) + 1
    assert after_first <= shards * records  # one BMC per worker read the repository, the rest shared it
    second = run(sweep())
    assert second == first
    assert run(reads()) == after_first  # the second sweep read no SDR


# ---------------------------------------------------------------------------------------------
# SEL
# ---------------------------------------------------------------------------------------------


def test_sel_entries_include_the_uncorrectable_ecc_error(driver: IpmiDriver, sims: list[IpmiSim],
                                                         sim_options: dict[str, Any]) -> None:
    sim = sims[SIM["sel"]]
    entries = run(driver.sel(target(sim, sim_options)))
    assert [e.record_id for e in entries] == [1, 2, 3]
    assert len(entries) == len(SEL_EVENTS)
    ecc = entries[2]
    assert ecc.sensor == "DIMM A1" and "Uncorrectable" in ecc.event and ecc.severity == "critical"
    assert entries[0].severity == "warning" and "Correctable" in entries[0].event
    assert entries[1].sensor == "Exhaust Temp" and entries[1].severity == "critical"
    # ipmi_sim stamps entries with its uptime ("pre-init"); they are placed in wall time from Get SEL Time.
    assert all(e.ts is not None and abs(time.time() - e.ts.timestamp()) < 600 for e in entries)
    elist = sim.ipmitool("sel", "elist").stdout
    assert elist.count("Uncorrectable ECC") == 1 and "DIMM A1" in elist


def test_sel_clear(driver: IpmiDriver, sims: list[IpmiSim], sim_options: dict[str, Any]) -> None:
    sim = sims[SIM["sel_clear"]]
    t = target(sim, sim_options)
    read = run(driver.sel(t, clear=True))
    assert len(read) == len(SEL_EVENTS)
    assert re.search(r"Entries\s+:\s+0\b", sim.ipmitool("sel", "info").stdout)
    assert run(driver.sel(t)) == []
    run(driver.clear_sel(t))  # clearing an empty SEL is fine
    assert run(driver.sel(t)) == []


# ---------------------------------------------------------------------------------------------
# FRU
# ---------------------------------------------------------------------------------------------


def test_fru_fields_with_the_c8_retry(driver: IpmiDriver, sims: list[IpmiSim]) -> None:
    sim = sims[SIM["status"]]
    # The quirk behind the retry, seen by ipmitool: 35 bytes are refused with 0xC8, 34 are read.
    raw = sim.ipmitool("raw", "0x0a", "0x11", "0", "0", "0", "35", check=False)
    assert raw.returncode != 0 and "rsp=0xc8" in raw.stderr
    # No fru-read-max-bytes quirk in the options: the driver starts at 224 bytes and must back off.
    fru = run(driver.fru(target(sim, {"cipher_suites": (3,)})))
    want = sim.fru_fields()
    assert fru.manufacturer == want["manufacturer"] and fru.product == want["product"]
    assert fru.serial == want["serial"] and fru.part_number == want["part_number"]
    assert fru.asset_tag == want["asset_tag"] and fru.board_serial == want["board_serial"]
    assert fru.extra["chassis_serial"] == want["chassis_serial"]
    assert fru.extra["ipmi_manufacturer_id"] == str(MANUFACTURER_ID)
    tool = sim.ipmitool("fru").stdout
    assert f"Product Serial        : {want['serial']}" in tool


# ---------------------------------------------------------------------------------------------
# Failures: dead BMCs, wrong passwords, refused cipher suites
# ---------------------------------------------------------------------------------------------


def _unused_loopback() -> tuple[str, int]:
    for n in range(200, 250):
        host = f"127.0.{n}.254"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind((host, 623 if os.geteuid() == 0 else 0))
            except OSError:
                continue
            return host, s.getsockname()[1]
    raise RuntimeError("no unused loopback address")


def test_a_bmc_that_never_answers_costs_its_deadline(driver: IpmiDriver, sim_options: dict[str, Any]) -> None:
    host, port = _unused_loopback()  # nothing listens there
    dead = Target(name="dead", host=host, port=port, username="admin", password=Secret("password"),
                  timeout=DEADLINE, options=sim_options)
    start = time.monotonic()
    with pytest.raises(DeviceTimeout) as err:
        run(driver.power_status(dead))
    elapsed = time.monotonic() - start
    assert elapsed <= DEADLINE + MARGIN
    assert elapsed >= DEADLINE - 0.05
    assert err.value.target == "dead" and err.value.operation == "power status"
    assert isinstance(err.value, RetryableError) and isinstance(err.value, TimeoutError)


def test_a_socket_that_reads_and_never_replies(driver: IpmiDriver, sims: list[IpmiSim],
                                               sim_options: dict[str, Any]) -> None:
    host, _ = _unused_loopback()
    hole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        hole.bind((host, 0))
        hole.settimeout(0)
        port = hole.getsockname()[1]
        silent = Target(name="hole", host=host, port=port, username="admin", password=Secret("password"),
                        timeout=DEADLINE, options=sim_options)
        live = [target(s, sim_options) for s in sims[10:16]]

        async def both() -> tuple[list[Any], list[float]]:
            t0 = time.monotonic()
            stamps: list[float] = []

            async def one(t: Target) -> Any:
                try:
                    return await driver.power_status(t)
                finally:
                    stamps.append(time.monotonic() - t0)

            results = await asyncio.gather(one(silent), *(one(t) for t in live), return_exceptions=True)
            return list(results), stamps

        results, stamps = run(both())
        assert isinstance(results[0], DeviceTimeout)
        assert all(r in ("on", "off") for r in results[1:])
        assert sorted(stamps)[-2] < 0.5  # the live BMCs did not wait for the dead one
        assert max(stamps) <= DEADLINE + MARGIN
        assert len(hole.recv(4096)) > 0  # it was asked
    finally:
        hole.close()


def test_wrong_password_fails_fast_with_auth_failed(driver: IpmiDriver, sims: list[IpmiSim],
                                                    sim_options: dict[str, Any]) -> None:
    sim = sims[SIM["status"]]
    for t in (target(sim, sim_options, password="wrong-password"), target(sim, sim_options, username="nobody")):
        start = time.monotonic()
        with pytest.raises(AuthFailed) as err:
            run(driver.power_status(t))
        assert time.monotonic() - start < 0.5 < t.timeout
        assert isinstance(err.value, FatalError) and isinstance(err.value, PermissionError)
        assert "wrong-password" not in str(err.value)
    assert run(driver.power_status(target(sim, sim_options))) in ("on", "off")  # the right one still works


def test_wrong_and_right_password_queued_on_one_bmc(driver: IpmiDriver, sims: list[IpmiSim],
                                                    sim_options: dict[str, Any]) -> None:
    sim = sims[SIM["status"]]
    wrong, right = target(sim, sim_options, password="wrong-password"), target(sim, sim_options)

    async def both() -> list[Any]:
        return list(await asyncio.gather(driver.power_status(wrong), driver.power_status(right),
                                         driver.power_status(wrong), return_exceptions=True))

    first, second, third = run(both())
    assert isinstance(first, AuthFailed) and isinstance(third, AuthFailed)
    assert second == ipmitool_power(sim)  # its own session, with its own credentials


def test_cipher_suites_follow_the_options(driver: IpmiDriver, sims: list[IpmiSim]) -> None:
    sim = sims[SIM["status"]]
    # ipmi_sim has no suite 17: [17, 3] falls back to 3; [17] alone is refused, quickly.
    assert run(driver.power_status(target(sim, {"cipher_suites": (17, 3)}))) in ("on", "off")
    start = time.monotonic()
    with pytest.raises(Unsupported, match="cipher suite"):
        run(driver.power_status(target(sim, {"cipher_suites": (17,)})))
    assert time.monotonic() - start < 0.5
    with pytest.raises(Unsupported):
        run(driver.power_status(target(sim, {"cipher_suites": (1, 2)})))


def test_bmc_cold_reset_unsupported_by_ipmi_sim_is_reported_as_such(driver: IpmiDriver, sims: list[IpmiSim],
                                                                     sim_options: dict[str, Any]) -> None:
    """ipmi_sim does not implement Cold Reset: 0xC1 (invalid command), which ipmitool sees too."""
    sim = sims[SIM["reset_bmc"]]
    t = target(sim, sim_options)
    raw = sim.ipmitool("raw", "0x06", "0x02", check=False)
    assert raw.returncode != 0 and "rsp=0xc1" in raw.stderr
    with pytest.raises(Unsupported, match="0xC1"):
        run(driver.bmc_reset(t))
    assert run(driver.power_status(t)) == ipmitool_power(sim)


def test_operations_also_run_over_a_plain_pyghmi_command(sims: list[IpmiSim], sim_options: dict[str, Any]) -> None:
    """The operations do no I/O: run_sync drives them over pyghmi's synchronous Command too."""
    from pyghmi.ipmi.command import Command

    from fleet.drivers.ipmi import BmcState, _pyghmi_fixes, run_sync
    from fleet.drivers.ipmi.ops import op_fru_with_device, op_power_status

    _pyghmi_fixes.apply()  # this process's pyghmi, as the workers use it
    sim = sims[SIM["status"]]
    cmd = Command(bmc=sim.host, userid=b"admin", password=b"password", port=sim.port)
    try:
        assert run_sync(op_power_status(BmcState()), cmd) == ipmitool_power(sim)
        with_quirk, without = BmcState(options=sim_options), BmcState()
        assert run_sync(op_fru_with_device(with_quirk), cmd).serial == sim.fru_fields()["serial"]
        assert run_sync(op_fru_with_device(without), cmd).serial == sim.fru_fields()["serial"]
        assert with_quirk.fru_chunk == 34  # the profile's fru-read-max-bytes
        assert without.fru_chunk == 28  # 224 -> 112 -> 56 -> 28, backing off on 0xC8
    finally:
        cmd.ipmi_session.logout()


# ---------------------------------------------------------------------------------------------
# Many BMCs at once
# ---------------------------------------------------------------------------------------------


def test_twenty_bmcs_concurrently_each_answer_for_itself(driver: IpmiDriver, sims: list[IpmiSim],
                                                         sim_options: dict[str, Any]) -> None:
    chosen = sims[9:20]
    for s in chosen:
        s.set_chassis(power=s.index % 2 == 0)
    ts = [target(s, sim_options) for s in chosen]

    async def sweep() -> tuple[list[Any], list[Any]]:
        return await driver.gather("power_status", ts), await driver.gather("fru", ts)

    states, frus = run(sweep())
    assert states == ["on" if s.index % 2 == 0 else "off" for s in chosen]
    assert [f.serial for f in frus] == [s.fru_fields()["serial"] for s in chosen]
    for s in chosen:
        s.set_chassis(power=True)


def test_all_twenty_cold_from_a_fresh_driver(sims: list[IpmiSim], sim_options: dict[str, Any]) -> None:
    for s in sims:
        s.set_chassis(power=True)

    async def sweep() -> list[Any]:
        async with IpmiDriver(workers=2) as drv:
            return await drv.gather("power_status", [target(s, sim_options) for s in sims])

    assert run(sweep()) == ["on"] * len(sims)


# ---------------------------------------------------------------------------------------------
# The pool: wedged and dead workers, closing
# ---------------------------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_wedged_worker_is_killed_and_replaced(sims: list[IpmiSim], sim_options: dict[str, Any]) -> None:
    sim = sims[SIM["status"]]
    t = target(sim, sim_options)

    async def scenario() -> None:
        async with IpmiDriver(workers=2, test_ops=True, watchdog_margin_s=0.5) as drv:
            assert await drv.power_status(t) in ("on", "off")
            shard = drv.pool.shard_of(t.host, t.port)
            old = drv.stats()["workers"][shard]["pid"]
            start = time.monotonic()
            with pytest.raises(OpError) as err:
                await drv.pool.call("_wedge", (30,), host=t.host, port=t.port, username=b"", password=b"",
                                    cipher_suites=(3,), timeout=0.5, options={})
            assert err.value.kind == "timeout" and "killed" in err.value.message
            assert time.monotonic() - start < 0.5 + 0.5 + 0.5
            assert not _pid_alive(old)
            assert await drv.power_status(t) in ("on", "off")  # a new worker took over the shard
            assert drv.stats()["workers"][shard]["pid"] not in (None, old)
            assert drv.stats()["wedged"] == 1

    run(scenario())


def test_a_worker_that_exits_is_replaced(sims: list[IpmiSim], sim_options: dict[str, Any]) -> None:
    sim = sims[SIM["status"]]
    t = target(sim, sim_options)

    async def scenario() -> None:
        async with IpmiDriver(workers=1, test_ops=True) as drv:
            with pytest.raises(OpError, match="exited"):
                await drv.pool.call("_exit", (3,), host=t.host, port=t.port, username=b"", password=b"",
                                    cipher_suites=(3,), timeout=2, options={})
            assert await drv.power_status(t) in ("on", "off")
            assert drv.stats()["restarts"] == 1

    run(scenario())


def test_close_stops_the_workers_and_refuses_new_calls(sims: list[IpmiSim], sim_options: dict[str, Any]) -> None:
    t = target(sims[SIM["status"]], sim_options)
    drv = IpmiDriver(workers=2, test_ops=True)

    async def use() -> dict[str, Any]:
        await drv.start()
        await drv.power_status(t)
        return await drv.pool.call("_stats", (), host=t.host, port=t.port, username=b"", password=b"",
                                   cipher_suites=(3,), timeout=2, options={})

    stats = run(use())
    assert stats["max_fd"] < 1024
    assert stats["nofile"][0] == stats["nofile"][1]  # soft limit raised to the hard one
    pids = drv.pool.pids()
    assert len(pids) == 2 and all(_pid_alive(p) for p in pids)
    drv.close()
    assert not any(_pid_alive(p) for p in pids)
    drv.close()  # idempotent
    with pytest.raises(DriverError, match="closed"):
        run(drv.power_status(t))


def test_idle_sessions_are_kept_alive_then_closed(sims: list[IpmiSim], sim_options: dict[str, Any]) -> None:
    t = target(sims[SIM["status"]], sim_options)
    spec = {"host": t.host, "port": t.port, "username": b"", "password": b"", "cipher_suites": (3,),
            "timeout": 2, "options": {}}

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
        async with IpmiDriver(workers=1, test_ops=True, keepalive_s=0.2, session_idle_s=2.5) as drv:
            await drv.power_status(t)
            first = await drv.pool.call("_stats", (), **spec)
            await asyncio.sleep(1.6)  # housekeeping runs once a second: at least one keepalive
            kept = await drv.pool.call("_stats", (), **spec)
            await drv.power_status(t)  # on the same session: no new login
            reused = await drv.pool.call("_stats", (), **spec)
            await asyncio.sleep(3.6)
            closed = await drv.pool.call("_stats", (), **spec)
            return first, kept, reused, closed

    first, kept, reused, closed = run(scenario())
    assert first["sessions"] == 1 and first["logins"] == 1
    assert kept["keepalives"] >= 1 and kept["sessions"] == 1
    assert reused["logins"] == 1
    assert closed["sessions"] == 0  # closed after session_idle_s unused


def test_errors_name_target_and_operation_and_never_the_password(driver: IpmiDriver, sims: list[IpmiSim],
                                                                 sim_options: dict[str, Any]) -> None:
    t = target(sims[SIM["status"]], sim_options, password="s3cret-pw")
    with pytest.raises(AuthFailed) as err:
        run(driver.sensors(t))
    assert err.value.target == t.name and err.value.operation == "read sensors"
    assert str(err.value).startswith(f"{t.name} read sensors: ")
    assert "s3cret-pw" not in str(err.value) and "s3cret-pw" not in repr(t)


def test_a_refused_login_on_a_model_with_ipmi_over_lan_off_by_default_says_how_to_enable_it(
        driver: IpmiDriver, sims: list[IpmiSim], sim_options: dict[str, Any]) -> None:
    # Quirk ipmi-over-lan-disabled-by-default (dell-r640/r650): its value, the remedy, joins the error.
    sim = sims[SIM["status"]]
    remedy = load_profiles().get("dell-r640").bmc.ipmi_over_lan_remedy
    assert remedy
    quirks = {**sim_options["quirks"], "ipmi-over-lan-disabled-by-default": remedy}
    with pytest.raises(AuthFailed) as err:
        run(driver.power_status(target(sim, {**sim_options, "quirks": quirks}, password="wrong-pass-lan")))
    assert "ships with IPMI over LAN off" in str(err.value) and "racadm set iDRAC.IPMILan.Enable 1" in str(err.value)
    # Without the quirk the same refusal is plain bad credentials.
    with pytest.raises(AuthFailed) as plain:
        run(driver.power_status(target(sim, sim_options, password="wrong-pass-lan2")))
    assert "IPMI over LAN" not in str(plain.value)


def test_a_0xcc_on_chassis_control_is_called_a_lab_set_up_fault_only_with_the_quirk() -> None:
    """Quirk power-needs-chassis-control-script (openipmi-sim): pure logic over the operation's reply."""
    from fleet.drivers.ipmi import BmcState, OpError, Response
    from fleet.drivers.ipmi.ops import op_power_control

    def refused(state: BmcState) -> str:
        op = op_power_control(state, "on")
        next(op)
        with pytest.raises(OpError) as err:
            op.send(Response(0xCC, b""))
        return str(err.value)

    with_quirk = refused(BmcState(options={"quirks": {"power-needs-chassis-control-script": True}}))
    assert "0xCC" in with_quirk and "quirk power-needs-chassis-control-script: a lab set-up fault" in with_quirk
    assert "lab set-up fault" not in refused(BmcState())
