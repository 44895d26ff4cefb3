"""The SNMP driver against real peers: snmpsim recordings (with and without our variation module),
net-snmp snmpd (v2c, v1, v3 authPriv, a fleet on many loopback addresses) and NUT's own snmp-ups.

Peers: tests/snmppeers.py. Each test runs its coroutine with ``asyncio.run`` and a fresh driver.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from fleet.drivers.base import BatteryStatus, Target
from fleet.drivers.snmp import SetNotApplied, SnmpDriver, choose_profile, convert_metric
from fleet.drivers.snmp.conn import _PduError
from fleet.errors import AuthFailed, DeviceTimeout, DriverError, Unsupported
from fleet.lab import snmplab
from fleet.lab.snmplab.agent import free_udp_port
from fleet.profiles import OidSpec, OutletTable, SetCommand, load_profiles
from inventory.secrets import Secret

from .snmppeers import (
    NutServer,
    NutUps,
    SnmpdAgent,
    V3User,
    dead_agent,
    nut_snmp_ups,
    snmpd_agent,
    snmpsim_lab,
    snmpsim_plain,
)

pytestmark = pytest.mark.peer

PROFILES = load_profiles()
UPS_DIR = "UPS"


def run(fn: Callable[[SnmpDriver], Awaitable[Any]], **driver_kwargs: Any) -> Any:
    async def main() -> Any:
        async with SnmpDriver(**{"profiles": PROFILES, **driver_kwargs}) as driver:
            return await fn(driver)

    return asyncio.run(main())


def target(dev: snmplab.LabDevice, *, timeout: float = 1.0, **options: Any) -> Target:
    opts = {"profile": dev.profile, **options}
    return Target(dev.name, dev.host, dev.port, password=Secret(dev.community), timeout=timeout, options=opts)


@pytest.fixture(scope="module")
def lab() -> Iterator[snmplab.SnmpsimLab]:
    # two devices of every model: a SET on one must not show on its twin
    with snmpsim_lab(ups=8, pdu=6, reboot_s=1.0) as lab:
        yield lab


def devices(lab: snmplab.SnmpsimLab, model: str) -> list[snmplab.LabDevice]:
    found = [d for d in lab.devices if d.model == model]
    assert len(found) == 2, found
    return found


# ---------------------------------------------------------------------------------------------
# Readings equal the recordings, after the profile's conversions
# ---------------------------------------------------------------------------------------------


def recorded(model: str) -> dict[str, tuple[str, str]]:
    """The raw recording of a lab model: OID -> (tag, value), parsed here, independently of the lab."""
    path = snmplab.MODELS[model].source_path()
    raw = path.read_bytes()
    if path.suffix == ".bz2":
        import bz2

        raw = bz2.decompress(raw)
    out = {}
    for line in raw.decode("latin-1").splitlines():
        if line and not line.startswith("#"):
            oid, tag, value = line.split("|", 2)
            out[oid] = (tag, value)
    return out


def expected_from_recording(model: str, profile_name: str) -> dict[str, Any]:
    """What each metric must read: the recorded raw value x scale, in seconds for runtimes,
    None for a sentinel or a missing object (docs/profiles.md's rules, applied by hand)."""
    rec = recorded(model)
    out: dict[str, Any] = {}
    for name, spec in PROFILES.get(profile_name).snmp.metrics.items():
        oid, scale = spec.oid, spec.scale
        if oid not in rec and spec.fallback_oid in rec:
            oid, scale = spec.fallback_oid, spec.fallback_scale
        if oid not in rec:
            out[name] = None
            continue
        _tag, value = rec[oid]
        raw = int(value)
        if spec.unit == "enum":
            out[name] = spec.values.get(raw)
        elif raw in spec.unknown:
            out[name] = None
        else:
            factor = {"minutes": 60.0, "timeticks": 0.01}.get(spec.unit, 1.0)
            out[name] = round(raw * scale * factor, 6)
    return out


@pytest.mark.parametrize(("model", "profile"), [
    ("apc-smart-ups", "apc-smart-ups"),      # PowerNet: tenths, TimeTicks
    ("eaton-9px", "eaton-9px"),              # XUPS-MIB
    ("eaton-93e", "eaton-9px"),              # XUPS with runtime 65535 = unknown
    ("eaton-93e", "generic-ups-mib"),        # the same agent through RFC 1628: minutes
    ("ietf-ups", "generic-ups-mib"),         # RFC 1628 only
])
def test_readings_equal_the_recording_after_the_profiles_conversions(lab: snmplab.SnmpsimLab, model: str,
                                                                     profile: str) -> None:
    dev = devices(lab, model)[0]
    snmplab.set_ups_fault(lab, dev.name, "normal")
    readings, unknown, _ = run(lambda d: d.read_metrics(target(dev, profile=profile)))
    expected = expected_from_recording(model, profile)
    assert readings == expected
    assert set(unknown) == {m for m, v in expected.items() if v is None}


def test_spot_values_of_the_apc_and_eaton_recordings(lab: snmplab.SnmpsimLab) -> None:
    apc, eaton = devices(lab, "apc-smart-ups")[0], devices(lab, "eaton-93e")[0]
    for d in (apc, eaton):
        snmplab.set_ups_fault(lab, d.name, "normal")

    async def both(driver: SnmpDriver) -> tuple[BatteryStatus, BatteryStatus, BatteryStatus]:
        return (await driver.battery(target(apc)), await driver.battery(target(eaton)),
                await driver.battery(target(eaton, profile="generic-ups-mib")))

    a, e, g = run(both)
    # upsHighPrecBatteryCapacity 1000 tenths; upsAdvBatteryRunTimeRemaining 288000 TimeTicks = 48 min
    assert (a.status, a.charge_pct, a.runtime_s, a.load_pct, a.input_v, a.battery_temp_c) == \
        ("online", 100.0, 2880.0, 23.4, 230.4, 26.2)
    # xupsBatTimeRemaining 65535: unknown, never 18 hours; RFC 1628 on the same card says 1092 minutes
    assert e.runtime_s is None and "65535" in e.extra["unknown"]["battery_runtime"]
    assert (g.runtime_s, g.charge_pct, g.input_v, g.load_pct, g.battery_temp_c) == (65520.0, 100.0, 227.0, 21.0, 25.0)


def test_one_get_per_poll_and_the_fallback_oid_when_the_agent_lacks_one(lab: snmplab.SnmpsimLab) -> None:
    dev = devices(lab, "apc-smart-ups")[0]
    snmplab.set_ups_fault(lab, dev.name, "normal")
    base = PROFILES.get("apc-smart-ups")
    charge = dataclasses.replace(base.snmp.metrics["battery_charge"], oid="1.3.6.1.4.1.318.1.1.1.2.3.99.0")
    old_card = dataclasses.replace(base, snmp=dataclasses.replace(
        base.snmp, metrics=MappingProxyType({**base.snmp.metrics, "battery_charge": charge})))

    async def go(driver: SnmpDriver) -> tuple[BatteryStatus, int, BatteryStatus, int]:
        first = await driver.battery(target(dev))
        one = driver.stats()["requests"]
        second = await driver.battery(target(dev, profile=old_card))
        return first, one, second, driver.stats()["requests"] - one

    first, one, second, two = run(go)
    assert one == 1 and "fallback" not in first.extra          # every metric OID in one GET
    assert two == 2 and second.extra["fallback"] == ["battery_charge"]
    assert second.charge_pct == 100.0                           # upsAdvBatteryCapacity, whole percent


def test_vendor_sentinels_and_timeticks_for_minutes_are_unknown() -> None:
    data = Path(__import__("snmpsim_data").__file__).parent / "data" / UPS_DIR
    recordings = {"huawei": data / "huawei-gse200m.snmprec.bz2",       # -1 for charge, runtime, temperature
                  "santak": data / "ingrasys-power-switch.snmprec.bz2",  # runtime minutes sent as TimeTicks
                  "eastpower": data / "eastpower-istars-swv053.snmprec.bz2"}  # table instances with a stray .0
    with snmpsim_plain(recordings) as agent:
        def t(name: str) -> Target:
            return Target(name, agent.host, agent.port, password=Secret(name), timeout=1.0,
                          options={"profile": "generic-ups-mib"})

        async def read(driver: SnmpDriver) -> dict[str, BatteryStatus]:
            return {n: await driver.battery(t(n)) for n in recordings}

        # -1 degrees C is physically possible: only a profile can call it a sentinel
        generic = PROFILES.get("generic-ups-mib")
        temperature = dataclasses.replace(generic.snmp.metrics["battery_temperature"], unknown=(-1,))
        huawei_profile = dataclasses.replace(generic, snmp=dataclasses.replace(
            generic.snmp, metrics=MappingProxyType({**generic.snmp.metrics, "battery_temperature": temperature})))
        got = run(read)
        got["huawei-profile"] = run(lambda d: d.battery(dataclasses.replace(
            t("huawei"), options={"profile": huawei_profile})))
    huawei, santak, eastpower = got["huawei"], got["santak"], got["eastpower"]
    assert (huawei.charge_pct, huawei.runtime_s, huawei.battery_temp_c) == (None, None, None)
    assert got["huawei-profile"].battery_temp_c is None
    assert "outside" in huawei.extra["unknown"]["battery_charge"]
    assert huawei.input_v is None and "2369 volts is outside" in huawei.extra["unknown"]["input_voltage"]  # tenths?
    assert huawei.load_pct == 8.0
    assert santak.runtime_s is None
    assert "TimeTicks" in santak.extra["unknown"]["battery_runtime"]
    assert santak.charge_pct == 100.0 and santak.status == "online"
    assert eastpower.input_v is None and eastpower.extra["unknown"]["input_voltage"] == "noSuchInstance"
    assert eastpower.charge_pct == 100.0


def test_convert_metric_rules() -> None:
    from pysnmp.proto import rfc1902

    minutes = OidSpec("1.1", "minutes")
    ticks = OidSpec("1.1", "timeticks")
    tenths = OidSpec("1.1", "percent", scale=0.1, unknown=(-1,))
    enum = OidSpec("1.1", "enum", values=MappingProxyType({1: "ok", 2: "replace"}))
    assert convert_metric("battery_runtime", minutes, rfc1902.Integer32(30)) == (1800.0, None)
    assert convert_metric("battery_runtime", ticks, rfc1902.TimeTicks(180000)) == (1800.0, None)
    assert convert_metric("battery_runtime", ticks, rfc1902.Integer32(30))[0] is None
    assert convert_metric("battery_runtime", minutes, rfc1902.TimeTicks(30))[0] is None
    assert convert_metric("battery_charge", tenths, rfc1902.Gauge32(975)) == (97.5, None)
    assert convert_metric("battery_charge", tenths, rfc1902.Integer32(-1)) == (None, "raw value -1 means unknown")
    assert convert_metric("battery_charge", OidSpec("1.1", "percent"), rfc1902.Integer32(255))[0] is None
    assert convert_metric("input_voltage", OidSpec("1.1", "volts"), rfc1902.OctetString("230.5")) == (230.5, None)
    assert convert_metric("battery_replace", enum, rfc1902.Integer32(2)) == ("replace", None)
    assert convert_metric("battery_replace", enum, rfc1902.Integer32(9))[0] is None


# ---------------------------------------------------------------------------------------------
# Our readings equal NUT's snmp-ups + upsc, on line and on battery
# ---------------------------------------------------------------------------------------------

_NUT_WORDS = {"OL": "online", "OB": "on-battery", "LB": "low-battery", "RB": "replace-battery"}


def _nut_words(nut_vars: dict[str, str]) -> set[str]:
    return {_NUT_WORDS[t] for t in nut_vars["ups.status"].split() if t in _NUT_WORDS}


def _nut_number(nut_vars: dict[str, str], *names: str) -> float | None:
    for n in names:
        if n in nut_vars:
            return float(nut_vars[n])
    return None


def test_readings_match_nut_snmp_ups_on_line_and_on_battery(lab: snmplab.SnmpsimLab) -> None:
    cases = [  # (NUT name, lab device, NUT mib mapping, our profile)
        ("apc", devices(lab, "apc-smart-ups")[1], "apcc", "apc-smart-ups"),
        ("ietf", devices(lab, "ietf-ups")[1], "ietf", "generic-ups-mib"),
        ("eaton", devices(lab, "eaton-93e")[1], "ietf", "generic-ups-mib"),
    ]
    for _, dev, _, _ in cases:
        snmplab.set_ups_fault(lab, dev.name, "normal")
    upses = [NutUps(name, dev.host, dev.port, dev.community, mibs) for name, dev, mibs, _ in cases]
    with nut_snmp_ups(upses) as nut:
        for fault, words in (("normal", {"online"}), ("on-battery", {"on-battery"}),
                             ("low-battery", {"on-battery", "low-battery"}),
                             ("replace-battery", {"online", "replace-battery"})):
            for _, dev, _, _ in cases:
                snmplab.set_ups_fault(lab, dev.name, fault)
            for name, dev, _mibs, profile in cases:
                want = words if name == "apc" or fault != "replace-battery" else {"online"}
                nut_vars = nut.wait(name, lambda v, want=want: _nut_words(v) == want)
                ours = run(lambda d, dev=dev, profile=profile: d.battery(target(dev, profile=profile)))
                _assert_same_as_nut(name, fault, ours, nut_vars, nut)


def _assert_same_as_nut(name: str, fault: str, ours: BatteryStatus, nut_vars: dict[str, str],
                        nut: NutServer) -> None:
    where = f"{name} {fault}: ours {ours}, NUT {nut_vars}"
    assert set(ours.status.split()) == _nut_words(nut_vars), where
    assert ours.charge_pct == _nut_number(nut_vars, "battery.charge"), where
    assert ours.runtime_s == _nut_number(nut_vars, "battery.runtime"), where
    assert ours.input_v == _nut_number(nut_vars, "input.voltage", "input.L1-N.voltage"), where
    assert ours.load_pct == _nut_number(nut_vars, "ups.load", "output.L1.power.percent"), where


# ---------------------------------------------------------------------------------------------
# Identification
# ---------------------------------------------------------------------------------------------


def test_identify_probe_and_choose_the_profile_of_every_lab_device(lab: snmplab.SnmpsimLab) -> None:
    firsts = {d.model: d for d in reversed(lab.devices)}

    async def probe(driver: SnmpDriver) -> dict[str, tuple[dict[str, Any], set[str]]]:
        out = {}
        for model, dev in firsts.items():
            t = Target(dev.name, dev.host, dev.port, password=Secret(dev.community), timeout=1.0)  # no profile
            out[model] = (await driver.identify(t), await driver.probe_mibs(t))
        return out

    found = run(probe)
    assert found["apc-smart-ups"][0]["sys_object_id"] == "1.3.6.1.4.1.318.1.3.2.12"
    assert found["apc-smart-ups"][0]["sys_name"] == firsts["apc-smart-ups"].name  # per device, from fleetdev
    assert found["apc-smart-ups"][0]["sys_descr"].startswith("APC Web/SNMP Management Card")
    assert found["eaton-9px"][0] == {"sys_object_id": "1.3.6.1.4.1.705.1", "sys_descr": None, "sys_name": None}
    assert found["apc-smart-ups"][1] == {"apc-ups"}
    assert found["eaton-93e"][1] == {"eaton-xups", "ietf-ups"}
    assert found["ietf-ups"][1] == {"ietf-ups"}
    assert found["apc-8641"][1] == {"apc-rpdu", "apc-rpdu2"}
    for model, (ident, mibs) in found.items():
        kind = snmplab.MODELS[model].kind
        chosen, why = choose_profile(PROFILES, ident["sys_object_id"], mibs, kind=kind)
        assert chosen is not None and chosen.name == snmplab.MODELS[model].profile, (model, why)


# ---------------------------------------------------------------------------------------------
# Outlets
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["apc-7902b", "apc-8641", "apc-8932"])
def test_outlet_off_turns_exactly_that_outlet_off_and_reads_it_back(lab: snmplab.SnmpsimLab, model: str) -> None:
    dev, twin = devices(lab, model)
    before, twin_before = snmplab.outlet_states(lab, dev.name), snmplab.outlet_states(lab, twin.name)
    number = next(n for n, s in sorted(before.items()) if s == "on")

    async def switch(driver: SnmpDriver) -> tuple[list[Any], list[Any]]:
        t = target(dev)
        seen = await driver.outlets(t)
        await driver.set_outlet(t, number, "off")
        return seen, await driver.outlets(t)

    seen, after_driver = run(switch)
    assert {o.number: o.state for o in seen} == before
    after = snmplab.outlet_states(lab, dev.name)
    assert after == {**before, number: "off"}                       # that outlet, and only it
    assert {o.number: o.state for o in after_driver} == after       # the driver reads it back
    assert snmplab.outlet_states(lab, twin.name) == twin_before     # no leak to the same model's twin
    run(lambda d: d.set_outlet(target(dev), number, "on"))
    assert snmplab.outlet_states(lab, dev.name) == before


def test_outlet_cycle_goes_off_then_on(lab: snmplab.SnmpsimLab) -> None:
    dev = devices(lab, "apc-7902b")[1]
    before = snmplab.outlet_states(lab, dev.name)
    number = next(n for n, s in sorted(before.items()) if s == "on")
    t0 = time.monotonic()
    run(lambda d: d.set_outlet(target(dev), number, "cycle"))
    assert time.monotonic() - t0 >= lab.reboot_s * 0.9     # it waited for the reboot to finish
    assert snmplab.outlet_states(lab, dev.name) == before


def _rpdu2_profile(states: dict[int, str]) -> Any:
    base = PROFILES.get("apc-rpdu")
    table = OutletTable(
        state_oid="1.3.6.1.4.1.318.1.1.26.9.2.3.1.5",      # rPDU2OutletSwitchedStatusState
        states=MappingProxyType(states),
        commands=MappingProxyType({a: SetCommand("1.3.6.1.4.1.318.1.1.26.9.2.4.1.5", v)   # ...ControlCommand
                                   for a, v in (("on", 1), ("off", 2), ("cycle", 3))}),
        name_oid="1.3.6.1.4.1.318.1.1.26.9.2.3.1.3",
    )
    return dataclasses.replace(base, name="apc-rpdu2-test", snmp=dataclasses.replace(base.snmp, outlets=table))


def test_rpdu2_state_is_the_inverse_of_rpdu(lab: snmplab.SnmpsimLab) -> None:
    dev = devices(lab, "apc-8932")[0]
    right, naive = _rpdu2_profile({1: "off", 2: "on"}), _rpdu2_profile({1: "on", 2: "off"})
    truth = snmplab.outlet_states(lab, dev.name)
    number = next(n for n, s in sorted(truth.items()) if s == "off")

    async def read(driver: SnmpDriver) -> tuple[Any, Any, Any, Any]:
        rpdu = await driver.outlets(target(dev))
        rpdu2 = await driver.outlets(target(dev, profile=right))
        wrong = await driver.outlets(target(dev, profile=naive))
        await driver.set_outlet(target(dev, profile=right), number, "on")
        return rpdu, rpdu2, wrong, await driver.outlets(target(dev))

    rpdu, rpdu2, wrong, after = run(read)
    assert [(o.number, o.state) for o in rpdu2] == [(o.number, o.state) for o in rpdu] == sorted(truth.items())
    assert [o.name for o in rpdu2] == [o.name for o in rpdu]
    assert all(w.state != r.state for w, r in zip(wrong, rpdu, strict=True))   # rPDU's map on rPDU2: all backwards
    assert snmplab.outlet_states(lab, dev.name) == {**truth, number: "on"}
    assert {o.number: o.state for o in after}[number] == "on"
    run(lambda d: d.set_outlet(target(dev), number, "off"))


def test_smart_ups_outlet_groups(lab: snmplab.SnmpsimLab) -> None:
    dev = devices(lab, "apc-smart-ups")[0]

    async def go(driver: SnmpDriver) -> tuple[Any, Any]:
        t = target(dev)
        groups = await driver.outlets(t)
        await driver.set_outlet(t, 3, "off")
        return groups, await driver.outlets(t)

    groups, after = run(go)
    assert [(g.number, g.name, g.state) for g in groups] == [
        (1, "Main Outlets", "on"), (2, "Outlet Group 1", "on"), (3, "Outlet Group 2", "on")]
    assert [g.state for g in after] == ["on", "on", "off"]
    assert snmplab.outlet_states(lab, dev.name) == {1: "on", 2: "on", 3: "off"}
    run(lambda d: d.set_outlet(target(dev), 3, "on"))


def test_eaton_receptacles_switch_by_delay_and_cycle_as_off_then_on(lab: snmplab.SnmpsimLab) -> None:
    dev = devices(lab, "eaton-9px")[0]

    async def go(driver: SnmpDriver) -> tuple[Any, Any]:
        t = target(dev)
        await driver.set_outlet(t, 2, "off")
        off = await driver.outlets(t)
        await driver.set_outlet(t, 2, "cycle")   # no cycle command in XUPS-MIB: off, confirm, on, confirm
        return off, await driver.outlets(t)

    off, cycled = run(go)
    assert [(o.number, o.state) for o in off] == [(1, "on"), (2, "off")]
    assert [(o.number, o.state) for o in cycled] == [(1, "on"), (2, "on")]
    assert snmplab.outlet_states(lab, dev.name) == {1: "on", 2: "on"}


def test_a_command_accepted_but_never_carried_out_times_out_naming_the_state(lab: snmplab.SnmpsimLab) -> None:
    dev = devices(lab, "apc-7902b")[0]
    base = PROFILES.get("apc-rpdu")
    # read "state" from rPDUOutletStatusIndex, which never changes: outlet 1 always reads 1 ("on")
    frozen = dataclasses.replace(base, snmp=dataclasses.replace(base.snmp, outlets=dataclasses.replace(
        base.snmp.outlets, state_oid="1.3.6.1.4.1.318.1.1.12.3.5.1.1.1")))
    assert snmplab.outlet_states(lab, dev.name)[1] == "on"
    t0 = time.monotonic()
    try:
        with pytest.raises(DeviceTimeout, match="outlet 1 still reads 'on', not 'off', 1 s after the command"):
            run(lambda d: d.set_outlet(target(dev, profile=frozen, confirm_timeout=1), 1, "off"))
        assert time.monotonic() - t0 < 2.5
        assert snmplab.outlet_states(lab, dev.name)[1] == "off"    # the PDU did switch: we could not see it
    finally:
        snmplab.set_outlet_state(lab, dev.name, 1, "on")


def test_a_set_the_agent_ignores_is_detected_as_not_applied() -> None:
    path = snmplab.MODELS["apc-7902b"].source_path()
    with snmpsim_plain({"plain": path}) as agent:
        t = Target("plain", agent.host, agent.port, password=Secret("plain"), timeout=1.0,
                   options={"profile": "apc-rpdu", "confirm_timeout": 2})

        async def go(driver: SnmpDriver) -> tuple[Any, Any, Any]:
            before = await driver.outlets(t)
            with pytest.raises(SetNotApplied) as err:
                await driver.set_outlet(t, 3, "on")
            return before, err.value, await driver.outlets(t)

        before, err, after = run(go)
    assert "noSuchInstance" in str(err) and "errorStatus 0" in str(err)
    assert isinstance(err, Unsupported) and err.target == "plain" and err.operation == "outlet 3 on"
    assert before == after and {o.number: o.state for o in after}[3] == "off"


def test_outlet_errors(lab: snmplab.SnmpsimLab) -> None:
    pdu, ups = devices(lab, "apc-8641")[0], devices(lab, "ietf-ups")[0]

    async def go(driver: SnmpDriver) -> list[DriverError]:
        errors = []
        for coro in (driver.set_outlet(target(pdu), 99, "off"),          # no such outlet
                     driver.outlets(target(ups)),                         # RFC 1628 has no outlet table
                     driver.battery(target(pdu))):                        # a PDU has no battery
            try:
                await coro
            except DriverError as exc:
                errors.append(exc)
        return errors

    missing, no_table, no_battery = run(go)
    assert isinstance(missing, Unsupported) and "outlet 99 does not exist" in str(missing)
    assert isinstance(no_table, Unsupported) and "no outlet table" in str(no_table)
    assert isinstance(no_battery, Unsupported)


def test_outlet_switched_behind_the_agents_back_reads_back(lab: snmplab.SnmpsimLab) -> None:
    dev = devices(lab, "apc-8641")[1]
    snmplab.set_outlet_state(lab, dev.name, 5, "off")
    try:
        states = {o.number: o.state for o in run(lambda d: d.outlets(target(dev)))}
        assert states == snmplab.outlet_states(lab, dev.name) and states[5] == "off"
    finally:
        snmplab.set_outlet_state(lab, dev.name, 5, "on")


def test_outlets_over_snmpv1_walk_with_getnext(lab: snmplab.SnmpsimLab) -> None:
    dev = devices(lab, "apc-7902b")[0]
    v1 = run(lambda d: d.outlets(target(dev, snmp_version="1")))
    assert {o.number: o.state for o in v1} == snmplab.outlet_states(lab, dev.name)


# ---------------------------------------------------------------------------------------------
# net-snmp snmpd: v3 authPriv, v1 fallback, live values, a dead agent, many in flight
# ---------------------------------------------------------------------------------------------

USERS = [V3User("fleet", "SHA", "authkey-sha1", "AES", "privkey-aes1"),
         V3User("fleet256", "SHA-256", "authkey-sha256", "AES-256", "privkey-aes256"),
         V3User("fleetmd5", "MD5", "authkey-md5x", "DES", "privkey-desx")]


def v3_target(agent: SnmpdAgent, user: V3User, *, auth: str | None = None, priv: str | None = None,
              host: str | None = None, timeout: float = 1.0) -> Target:
    protos = {"SHA": "SHA", "SHA-256": "SHA256", "MD5": "MD5", "AES": "AES", "AES-256": "AES256", "DES": "DES"}
    keys = json.dumps({"auth": auth or user.auth_key, "priv": priv or user.priv_key})
    return Target(f"v3-{user.name}", host or agent.host, agent.port, username=user.name, password=Secret(keys),
                  timeout=timeout, options={"profile": "generic-ups-mib", "snmp_version": "3",
                                            "auth_proto": protos[user.auth_proto],
                                            "priv_proto": protos[user.priv_proto]})


SNMPD_EXPECTED = {"charge_pct": 97.0, "runtime_s": 42 * 60.0, "load_pct": 33.0, "input_v": 230.0,
                  "battery_temp_c": 25.0, "status": "online"}


def _fields(b: BatteryStatus) -> dict[str, Any]:
    return {k: getattr(b, k) for k in SNMPD_EXPECTED}


def test_v3_authpriv_against_snmpd() -> None:
    with snmpd_agent(community=None, users=USERS) as agent, \
            snmpd_agent(community=None, users=[V3User("fleet", "SHA", "other-auth-key", "AES", "other-priv-key")],
                        hosts=("127.0.0.2",)) as other:
        async def go(driver: SnmpDriver) -> dict[str, Any]:
            out: dict[str, Any] = {u.name: await driver.battery(v3_target(agent, u)) for u in USERS}
            # the same user name with other keys on another agent: keys are kept per engine ID
            out["other"] = await driver.battery(v3_target(other, USERS[0], auth="other-auth-key",
                                                          priv="other-priv-key"))
            out["again"] = await driver.battery(v3_target(agent, USERS[0]))
            out["identify"] = await driver.identify(v3_target(agent, USERS[0]))
            t0 = time.monotonic()
            try:
                await driver.battery(v3_target(agent, USERS[1], auth="wrong-auth-key"))
            except DriverError as exc:
                out["wrong_auth"] = (exc, time.monotonic() - t0)
            try:
                await driver.battery(v3_target(agent, V3User("nobody", "SHA", "x" * 8, "AES", "y" * 8)))
            except DriverError as exc:
                out["unknown_user"] = exc
            try:
                await driver.battery(v3_target(agent, USERS[2], priv="wrong-priv-key", timeout=0.3))
            except DriverError as exc:
                out["wrong_priv"] = exc
            out["after"] = await driver.battery(v3_target(agent, USERS[1]))
            out["stats"] = driver.stats()
            return out

        got = run(go)
    for name in ("fleet", "fleet256", "fleetmd5", "other", "again", "after"):
        assert _fields(got[name]) == SNMPD_EXPECTED, name
    assert got["identify"]["sys_object_id"] == "1.3.6.1.2.1.33"
    err, elapsed = got["wrong_auth"]
    assert isinstance(err, AuthFailed) and "authentication key" in str(err) and elapsed < 0.5
    assert isinstance(got["unknown_user"], AuthFailed) and "nobody" in str(got["unknown_user"])
    # net-snmp drops what it cannot decrypt without a report: a wrong privacy key is a timeout
    assert isinstance(got["wrong_priv"], DeviceTimeout) and "privacy key" in str(got["wrong_priv"])
    assert got["stats"]["v3_engine"] is True


def test_snmpv1_agent_answering_nosuchname_gets_one_get_per_oid() -> None:
    values = {k: v for k, v in snmplab.SNMPD_UPS_VALUES.items() if k != "1.3.6.1.2.1.33.1.2.7.0"}  # no temperature
    with snmpd_agent(values=values) as agent:
        t = Target("v1", agent.host, agent.port, password=Secret("public"), timeout=1.0,
                   options={"profile": "generic-ups-mib", "snmp_version": "1"})

        async def go(driver: SnmpDriver) -> tuple[BatteryStatus, int]:
            status = await driver.battery(t)
            return status, driver.stats()["requests"]

        status, requests = run(go)
    assert status.battery_temp_c is None and status.extra["unknown"]["battery_temperature"] == "noSuchName"
    assert {k: v for k, v in _fields(status).items() if k != "battery_temp_c"} == \
        {k: v for k, v in SNMPD_EXPECTED.items() if k != "battery_temp_c"}
    n = len(PROFILES.get("generic-ups-mib").snmp.metrics)
    assert requests == 1 + n     # the whole GET, refused, then one GET per OID


def test_a_pdu_too_big_is_split() -> None:
    calls: list[int] = []

    async def go(driver: SnmpDriver) -> dict[str, Any]:
        from pysnmp.proto import rfc1902

        async def fake(target: Target, conn: Any, operation: str, kind: str, varbinds: Any, **kw: Any) -> Any:
            calls.append(len(varbinds))
            if len(varbinds) > 3:
                raise _PduError(1, 0)  # tooBig
            return [(name, rfc1902.Integer32(int(str(name).rsplit(".", 1)[1]))) for name, _ in varbinds]

        driver._exchange = fake  # type: ignore[method-assign]
        t = Target("x", "127.0.0.1", 9, password=Secret("c"), timeout=1.0)
        conn = await driver._conn(t, "test")
        return await driver._get(t, conn, [f"1.3.6.{i}" for i in range(1, 11)], "test")

    got = run(go)
    assert {k: int(v) for k, v in got.items()} == {f"1.3.6.{i}": i for i in range(1, 11)}
    assert calls == [10, 5, 2, 3, 5, 2, 3]     # halves until the agent takes them


def test_pass_persist_live_value_is_followed() -> None:
    source = "1.3.6.1.2.1.33.1.4.1.0"
    values = {k: v for k, v in snmplab.SNMPD_UPS_VALUES.items() if k != source}
    with snmpd_agent(values=values, live=("1.3.6.1.2.1.33.1.4.1", {source: ("integer", 3)})) as agent:
        t = Target("live", agent.host, agent.port, password=Secret("public"), timeout=1.0,
                   options={"profile": "generic-ups-mib"})
        first = run(lambda d: d.battery(t))
        agent.set_live({source: ("integer", 5)})
        second = run(lambda d: d.battery(t))
    assert (first.status, second.status) == ("online", "on-battery")


def test_a_dead_agent_costs_only_its_timeout_times_attempts(lab: snmplab.SnmpsimLab) -> None:
    live_dev = devices(lab, "ietf-ups")[0]
    with dead_agent() as (host, port):
        def dead(timeout: float, **options: Any) -> Target:
            return Target("dead", host, port, password=Secret("public"), timeout=timeout,
                          options={"profile": "generic-ups-mib", **options})

        async def timed(driver: SnmpDriver, t: Target) -> tuple[BaseException | None, float]:
            t0 = time.monotonic()
            try:
                await driver.battery(t)
            except DriverError as exc:
                return exc, time.monotonic() - t0
            return None, time.monotonic() - t0

        async def go(driver: SnmpDriver) -> dict[str, Any]:
            await driver.battery(target(live_dev))       # warm up: imports, sockets
            out = {"default": await timed(driver, dead(0.3)),
                   "no_retry": await timed(driver, dead(0.3, snmp_retries=0))}
            t0 = time.monotonic()
            many = await asyncio.gather(*(driver.battery(dead(0.3, n=i)) for i in range(40)),
                                        driver.battery(target(live_dev)), return_exceptions=True)
            out["many"] = (many, time.monotonic() - t0)
            return out

        got = run(go)
    err, elapsed = got["default"]
    assert isinstance(err, DeviceTimeout) and "wrong community" in str(err)
    assert 0.6 <= elapsed < 0.6 + 0.35, elapsed            # 0.3 s x (1 retry + 1)
    err, elapsed = got["no_retry"]
    assert isinstance(err, DeviceTimeout) and 0.3 <= elapsed < 0.3 + 0.35, elapsed
    results, elapsed = got["many"]
    assert all(isinstance(r, DeviceTimeout) for r in results[:-1]) and isinstance(results[-1], BatteryStatus)
    assert elapsed < 0.6 + 0.5, elapsed                    # forty dead agents wait side by side


@pytest.mark.parametrize("inflight", [64, 128])
def test_many_requests_in_flight_against_an_snmpd_fleet(tmp_path: Path, inflight: int) -> None:
    fleet = snmplab.start_snmpd_fleet(tmp_path / "fleet", count=200, first_host="127.21.0.1",
                                      port=free_udp_port("127.21.0.1"))
    try:
        targets = [Target(d.name, d.host, d.port, password=Secret(d.community), timeout=2.0,
                          options={"profile": d.profile}) for d in fleet.devices] * 8

        async def go(driver: SnmpDriver) -> tuple[list[Any], dict[str, Any]]:
            return await driver.gather("battery", targets), driver.stats()

        results, stats = run(go, max_inflight=inflight)
    finally:
        assert snmplab.stop_snmpd_fleet(tmp_path / "fleet")
    assert len({d.host for d in fleet.devices}) == 200
    bad = [r for r in results if not isinstance(r, BatteryStatus)]
    assert not bad, bad[:3]
    assert all(_fields(r) == SNMPD_EXPECTED for r in results)
    assert stats["max_inflight_seen"] == inflight and stats["timeouts"] == 0


def test_max_inflight_is_bounded() -> None:
    with pytest.raises(ValueError):
        SnmpDriver(max_inflight=129)


def test_a_profile_by_name_needs_the_profile_set_it_is_looked_up_in() -> None:
    """The driver imports no profile module: the caller hands it the Profile, or a name and the ProfileSet."""
    t = Target("x", "127.0.0.1", 9, password=Secret("c"), timeout=1.0, options={"profile": "generic-ups-mib"})
    with pytest.raises(Unsupported, match="given by name"):
        asyncio.run(SnmpDriver().battery(t))
    assert SnmpDriver(profiles=PROFILES)._profile(t, "test").name == "generic-ups-mib"
    given = dataclasses.replace(t, options={"profile": PROFILES.get("generic-ups-mib")})
    assert SnmpDriver()._profile(given, "test") is given.options["profile"]


# ---------------------------------------------------------------------------------------------
# The lab API
# ---------------------------------------------------------------------------------------------


def test_lab_api_faults_inventory_entries_and_stop(tmp_path: Path) -> None:
    lab = snmplab.start_snmpsim(tmp_path / "lab", ups=1, pdu=1, ups_models=["apc-smart-ups"],
                                pdu_models=["apc-8932"], prefix="t-")
    try:
        ups, pdu = lab.devices
        assert ups.inventory_entry() == {"name": "t-ups-001", "kind": "ups", "model": "apc-smart-ups",
                                         "profile": "apc-smart-ups", "host": "127.0.0.1", "port": lab.port,
                                         "snmp_version": "2c", "community": "t-ups-001"}
        assert snmplab.set_ups_fault(tmp_path / "lab", ups.name, "low-battery") == \
            {"on_battery": True, "low_battery": True, "replace_battery": False}
        assert snmplab.ups_state(tmp_path / "lab", ups.name)["low_battery"] is True
        assert run(lambda d: d.battery(target(ups))).status == "on-battery low-battery"
        with pytest.raises(Exception, match="not a UPS"):
            snmplab.set_ups_fault(lab, pdu.name, "on-battery")
        assert len(snmplab.outlet_states(lab, pdu.name)) == 24
        assert snmplab.SnmpsimLab.load(tmp_path / "lab").devices == lab.devices
    finally:
        assert snmplab.stop_snmpsim(tmp_path / "lab")
    assert not os.path.exists(f"/proc/{lab.pid}") or "Z" in Path(f"/proc/{lab.pid}/stat").read_text().split()[2]
    assert not snmplab.stop_snmpsim(tmp_path / "lab")
