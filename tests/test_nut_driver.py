"""The NUT client against NUT's own upsd + dummy-ups (real peer), checked with NUT's own clients (upsc, upscmd).

One module-wide upsd serves 50 dummy-ups UPSes (``ups0``...``ups49``) and a ``clone`` UPS; tests that change a
UPS's state each use their own UPS. Failure cases use a small private upsd, a closed port and a silent
TCP listener.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.drivers.base import BatteryStatus, Target
from fleet.drivers.nut import (
    DEFAULT_VARIABLES,
    NotConfirmed,
    NutDriver,
    UnknownUps,
    battery_status,
    outlet_list,
    parse_line,
    parse_status,
    quote,
)
from fleet.errors import (
    AuthFailed,
    DeviceTimeout,
    DeviceUnreachable,
    FatalError,
    InputError,
    RetryableError,
    Unsupported,
)
from fleet.profiles import load_profiles
from inventory.secrets import Secret

from .nutpeer import ADMIN, MONITOR, NutPeer, free_port, nut_available, nut_peer, nut_peer_fixture
from .peers import missing_peer

peer = nut_peer_fixture(count=50, clone=True, scope="module")
PROFILES = load_profiles()


def target(peer: NutPeer, name: str, *, user: tuple[str, str] | None = None, timeout: float = 5.0,
           **options: object) -> Target:
    return Target(name=f"lab-{name}", host=peer.host, port=peer.port,
                  username=user[0] if user else "", password=Secret(user[1]) if user else None,
                  timeout=timeout, options={"nut_name": name, **options})


def run(coro_fn, *args, **kwargs):
    """Run one driver coroutine on a fresh driver, closing it afterwards."""

    async def main():
        async with NutDriver(profiles=PROFILES) as drv:
            return await coro_fn(drv, *args, **kwargs)

    return asyncio.run(main())


def assert_matches_upsc(status: BatteryStatus, upsc: dict[str, str], expected_status: str) -> None:
    assert status.status == expected_status
    assert status.charge_pct == float(upsc["battery.charge"])
    assert status.runtime_s == float(upsc["battery.runtime"])
    assert status.load_pct == float(upsc["ups.load"])
    assert status.input_v == float(upsc["input.voltage"])
    assert status.battery_temp_c == float(upsc["battery.temperature"])
    assert status.extra["ups.status"] == upsc["ups.status"]
    assert status.extra["battery.date"] == upsc["battery.date"]
    assert status.extra["ups.realpower.nominal"] == float(upsc["ups.realpower.nominal"])


# ---------------------------------------------------------------------------------------------
# The line format and the status vocabulary (no peer)
# ---------------------------------------------------------------------------------------------


def test_parse_line_quotes_and_escapes() -> None:
    assert parse_line('VAR ups1 ups.status "OB DISCHRG"') == ["VAR", "ups1", "ups.status", "OB DISCHRG"]
    assert parse_line(r'UPS u2 "UPS two, \"quoted\" \\ back"') == ["UPS", "u2", 'UPS two, "quoted" \\ back']
    assert parse_line('VAR u x ""') == ["VAR", "u", "x", ""]
    with pytest.raises(ValueError):
        parse_line('VAR u x "open')
    for value in ["plain", "two words", 'q"uote', "back\\slash", ""]:
        assert parse_line(f"SET VAR u x {quote(value)}")[-1] == value


@pytest.mark.parametrize(("raw", "status"), [
    ("OL", "online"), ("OL CHRG", "online"), ("OB DISCHRG", "on-battery"), ("OB DISCHRG LB", "on-battery low-battery"),
    ("OL RB", "online replace-battery"), ("OB LB RB", "on-battery low-battery replace-battery"),
    ("OL BYPASS OVER", "online"), ("FSD OB LB", "on-battery low-battery"), ("OFF", "unknown"), ("WAIT", "unknown"),
    ("", "unknown"), (None, "unknown"), ("OL OB", "unknown"),
])
def test_status_vocabulary(raw: str | None, status: str) -> None:
    assert parse_status(raw)[0] == status


def test_missing_variables_are_none_and_flags_are_named() -> None:
    st = battery_status({"ups.status": "OL TRIM", "battery.charge": "n/a"})
    assert st.status == "online"
    assert st.charge_pct is None and st.runtime_s is None and st.load_pct is None and st.input_v is None
    assert st.battery_temp_c is None
    assert st.extra["conditions"] == ["online", "trim"]
    assert battery_status({}).status == "unknown"


def test_outlets_from_variables() -> None:
    values = {"ups.status": "OL", "outlet.1.status": "on", "outlet.1.desc": "PSU A", "outlet.2.status": "off",
              "outlet.3.switchable": "no"}
    assert [(o.number, o.name, o.state) for o in outlet_list(values)] == [
        (0, "output", "on"), (1, "PSU A", "on"), (2, "outlet 2", "off")]
    assert outlet_list({"ups.status": "OL OFF"})[0].state == "off"


# ---------------------------------------------------------------------------------------------
# Readings equal upsc's
# ---------------------------------------------------------------------------------------------


def test_battery_on_line_equals_upsc(peer: NutPeer) -> None:
    status = run(lambda d: d.battery(target(peer, "ups0", profile="nut-dummy")))
    assert_matches_upsc(status, peer.upsc("ups0"), "online")
    assert status.extra["ups.mfr"] == "Rackfleet Lab"


@pytest.mark.parametrize(("ups", "changes", "expected"), [
    ("ups1", {"ups.status": "OB DISCHRG", "battery.charge": "64", "battery.runtime": "912", "ups.load": "31",
              "input.voltage": "0.0"}, "on-battery"),
    ("ups2", {"ups.status": "OB DISCHRG LB", "battery.charge": "9", "battery.runtime": "95",
              "input.voltage": "0.0"}, "on-battery low-battery"),
    ("ups3", {"ups.status": "OL CHRG RB", "battery.charge": "97", "battery.runtime": "240",
              "battery.temperature": "41.5"}, "online replace-battery"),
])
def test_battery_states_equal_upsc(peer: NutPeer, ups: str, changes: dict[str, str], expected: str) -> None:
    peer.set_vars(ups, changes)
    status = run(lambda d: d.battery(target(peer, ups)))
    assert_matches_upsc(status, peer.upsc(ups), expected)


def test_list_ups_equals_upsc(peer: NutPeer) -> None:
    assert run(lambda d: d.list_ups(peer.host, peer.port)) == peer.upsc_list()


def test_quoted_values_are_read_and_written_as_upsd_means(peer: NutPeer) -> None:
    listed = run(lambda d: d.list_ups(peer.host, peer.port))
    assert listed["ups4"] == peer.description("ups4") == 'Lab UPS "ups4" \\ rack A'
    run(lambda d: d.set_var(target(peer, "ups4", user=ADMIN), "ups.mfr", "Two words"))
    assert peer.upsc("ups4", "ups.mfr")["ups.mfr"] == "Two words"
    # NUT 2.8.0 loses quotes and backslashes between upsd and the driver on SET (upsrw too): the read-back says so.
    with pytest.raises(NotConfirmed, match=r"ups\.mfr reads 'Rack '"):
        run(lambda d: d.set_var(target(peer, "ups4", user=ADMIN, timeout=3.0), "ups.mfr", 'Rack "A"'))


def test_fifty_ups_polled_at_once_over_pooled_connections(peer: NutPeer) -> None:
    names = [f"ups{i}" for i in range(5, 50)] + ["ups0"]
    expected = {n: peer.upsc(n) for n in names}

    async def main() -> tuple[list[BatteryStatus], int, float]:
        async with NutDriver(connections=2, pipeline=32) as drv:
            started = time.perf_counter()
            for _ in range(3):
                results = await asyncio.gather(*(drv.battery(target(peer, n)) for n in names))
            return results, drv.connections_opened, time.perf_counter() - started

    results, opened, elapsed = asyncio.run(main())
    assert opened <= 2
    for name, status in zip(names, results, strict=True):
        assert_matches_upsc(status, expected[name], "online")
    assert elapsed < 5.0


# ---------------------------------------------------------------------------------------------
# Commands: INSTCMD and SET VAR as the admin
# ---------------------------------------------------------------------------------------------


def test_instcmd_the_driver_does_not_implement_is_unsupported(peer: NutPeer) -> None:
    assert "load.off" in peer.upscmd_list("ups5")  # listed by dummy-ups 2.8.0...
    with pytest.raises(Unsupported, match="does not implement"):
        run(lambda d: d.instcmd(target(peer, "ups5", user=ADMIN), "load.off"))
    verdict = peer.upscmd("ups5", "load.off")  # ...and upscmd -w hears the same verdict (yet exits 0)
    assert "ERR UNKNOWN" in verdict.stdout + verdict.stderr
    with pytest.raises(Unsupported, match="CMD-NOT-SUPPORTED"):
        run(lambda d: d.instcmd(target(peer, "ups5", user=ADMIN), "beeper.mute"))
    assert "CMD-NOT-SUPPORTED" in peer.upscmd("ups5", "beeper.mute").stderr


def test_profile_without_a_command_refuses_before_sending(peer: NutPeer) -> None:
    with pytest.raises(Unsupported, match=r"nut-dummy.*load_off"):
        run(lambda d: d.set_outlet(target(peer, "ups6", user=ADMIN, profile="nut-dummy"), 0, "off"))
    with pytest.raises(Unsupported, match="no outlet 3"):
        run(lambda d: d.set_outlet(target(peer, "ups6", user=ADMIN), 3, "off"))
    assert run(lambda d: d.power_status(target(peer, "ups6"))) == "on"
    assert peer.upsc("ups6", "ups.status")["ups.status"] == "OL"


def test_a_profile_by_name_needs_the_profile_set_it_is_looked_up_in() -> None:
    """The driver imports no profile module: the caller hands it the Profile, or a name and the ProfileSet."""
    t = Target("lab-x", "127.0.0.1", 9, options={"nut_name": "x", "profile": "nut-dummy"})
    with pytest.raises(Unsupported, match="given by name"):
        asyncio.run(NutDriver().battery(t))
    assert NutDriver(profiles=PROFILES)._ups(t).profile == "nut-dummy"
    given = Target("lab-x", "127.0.0.1", 9, options={"nut_name": "x", "profile": PROFILES.get("nut-dummy")})
    assert NutDriver()._ups(given) == NutDriver(profiles=PROFILES)._ups(t)
    assert NutDriver()._ups(Target("lab-x", "127.0.0.1", 9)).variables == DEFAULT_VARIABLES


def test_set_var_as_admin_is_confirmed_and_read_only_is_unsupported(peer: NutPeer) -> None:
    run(lambda d: d.set_var(target(peer, "ups7", user=ADMIN), "ups.status", "OB DISCHRG"))
    assert peer.upsc("ups7", "ups.status")["ups.status"] == "OB DISCHRG"
    assert run(lambda d: d.battery(target(peer, "ups7"))).status == "on-battery"
    with pytest.raises(Unsupported, match="READONLY"):
        run(lambda d: d.set_var(target(peer, "ups7", user=ADMIN), "driver.name", "x"))


def test_wrong_password_and_a_user_without_rights_are_auth_failures(peer: NutPeer) -> None:
    for user in [(ADMIN[0], "wrong-password"), MONITOR]:
        with pytest.raises(AuthFailed, match="ACCESS-DENIED") as info:
            run(lambda d, u=user: d.instcmd(target(peer, "ups8", user=u), "load.off"))
        assert info.value.target == "lab-ups8" and info.value.operation == "instcmd load.off"
    with pytest.raises(AuthFailed):
        run(lambda d: d.set_var(target(peer, "ups8", user=(ADMIN[0], "wrong")), "ups.status", "OB"))
    with pytest.raises(AuthFailed, match="no credential"):
        run(lambda d: d.instcmd(target(peer, "ups8"), "load.off"))
    assert peer.upsc("ups8", "ups.status")["ups.status"] == "OL"


def test_unknown_ups_names_it_and_the_ups_served(peer: NutPeer) -> None:
    with pytest.raises(UnknownUps) as info:
        run(lambda d: d.battery(target(peer, "no-such-ups")))
    err = info.value
    assert isinstance(err, FatalError) and isinstance(err, LookupError)
    assert "'no-such-ups'" in str(err) and "ups0" in str(err)
    assert err.ups == "no-such-ups" and "ups49" in err.known
    assert err.target == "lab-no-such-ups" and err.operation == "battery"


def test_shutdown_on_a_driver_that_implements_it_is_confirmed(peer: NutPeer) -> None:
    """NUT's clone driver implements shutdown.stayoff (ups.status gains FSD): tracking says SUCCESS, upsc agrees."""
    assert peer.upscmd_list("clone0") == ["shutdown.return", "shutdown.stayoff"]
    assert run(lambda d: d.commands(target(peer, "clone0"))) == ["shutdown.return", "shutdown.stayoff"]
    run(lambda d: d.shutdown(target(peer, "clone0", user=ADMIN), stay_off=True))
    assert "FSD" in peer.upsc("clone0", "ups.status")["ups.status"].split()
    status = run(lambda d: d.battery(target(peer, "clone0")))
    assert status.status == "online" and "forced-shutdown" in status.extra["conditions"]


# ---------------------------------------------------------------------------------------------
# Failures: no upsd, a silent server, a lost NUT driver
# ---------------------------------------------------------------------------------------------


def test_upsd_not_running_is_unreachable_fast() -> None:
    port = free_port()
    t = Target(name="ghost", host="127.0.0.1", port=port, timeout=5.0, options={"nut_name": "ups0"})
    started = time.monotonic()
    with pytest.raises(DeviceUnreachable, match="refused") as info:
        run(lambda d: d.battery(t))
    assert time.monotonic() - started < 1.0
    assert info.value.target == "ghost" and info.value.operation == "battery"


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP listener that accepts connections (the kernel does) and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield s.getsockname()[1]


def test_silent_server_times_out_within_the_deadline(silent_server: int) -> None:
    t = Target(name="mute", host="127.0.0.1", port=silent_server, timeout=0.5, options={"nut_name": "ups0"})
    started = time.monotonic()
    with pytest.raises(DeviceTimeout, match=r"within 0\.5 s"):
        run(lambda d: d.battery(t))
    elapsed = time.monotonic() - started
    assert 0.45 <= elapsed < 0.8

    async def many() -> list[BaseException]:
        async with NutDriver() as drv:
            return await asyncio.gather(*(drv.battery(t) for _ in range(20)), return_exceptions=True)

    started = time.monotonic()
    errors = asyncio.run(many())
    assert all(isinstance(e, DeviceTimeout) for e in errors)
    assert time.monotonic() - started < 0.8


def test_lost_driver_is_retryable_and_stopped_upsd_is_unreachable() -> None:
    with nut_peer(2) as small:

        async def main() -> None:
            async with NutDriver() as drv:
                t0 = target(small, "ups0")
                assert (await drv.battery(t0)).status == "online"
                small.drivers["ups1"].terminate()
                small.drivers["ups1"].wait(5)
                deadline = time.monotonic() + 10
                while True:  # upsd notices the lost driver socket within a poll or two
                    try:
                        await drv.battery(target(small, "ups1"))
                    except RetryableError as exc:
                        assert "DRIVER-NOT-CONNECTED" in str(exc) or "DATA-STALE" in str(exc)
                        assert not isinstance(exc, DeviceUnreachable)
                        break
                    assert time.monotonic() < deadline, "upsd still serves a UPS whose driver stopped"
                    await asyncio.sleep(0.2)
                small.stop_upsd()  # the pooled connection dies: the next call fails fast, mapped
                started = time.monotonic()
                with pytest.raises(DeviceUnreachable):
                    await drv.battery(t0)
                assert time.monotonic() - started < 1.0

        asyncio.run(main())


def test_not_confirmed_when_the_ups_does_not_change(peer: NutPeer, monkeypatch: pytest.MonkeyPatch) -> None:
    """SET VAR of a value the driver silently rewrites: the read-back within the deadline tells."""

    async def main() -> None:
        async with NutDriver() as drv:
            t = target(peer, "ups9", user=ADMIN, timeout=3.0)
            # Nothing in dummy-ups refuses a value, so fake the read-back: it keeps answering the old one.
            real = drv._variables

            async def stale(ups):
                values = await real(ups)
                return {**values, "battery.charge": "100"}

            monkeypatch.setattr(drv, "_variables", stale)
            with pytest.raises(NotConfirmed, match=r"battery\.charge reads '100'"):
                await drv.set_var(t, "battery.charge", "55")

    asyncio.run(main())


# ---------------------------------------------------------------------------------------------
# The lab's per-server UPSes (fleet.lab.nutlab)
# ---------------------------------------------------------------------------------------------


def test_nut_lab_faults_read_alike_by_the_driver_and_upsc(tmp_path: Path) -> None:
    from fleet.lab import nutlab
    from fleet.lab._proc import cmdline_has, pid_alive

    if not nut_available():
        missing_peer("NUT upsd/dummy-ups/upsc not installed (Debian nut-server nut-client)")
    lab = nutlab.start_nut_lab(tmp_path, ["web01.lab1", "web02.lab1", "db01.lab1", "db02.lab1"])
    try:
        assert nutlab.nut_lab_running(tmp_path)
        entry = lab.inventory_ups("web01.lab1")
        assert entry == {"name": "ups-web01", "profile": "nut-dummy", "protocol": "nut", "host": "127.0.0.1",
                         "port": lab.port, "nut_name": "web01", "credential": "lab-nut", "kind": "server"}
        assert lab.credentials()[0]["username"] == lab.user
        faults = {"web01": "normal", "web02": "on-battery", "db01": "low-battery", "db02": "replace-battery"}
        for ups, fault in faults.items():
            nutlab.nut_fault(tmp_path, ups, fault)
        expected = {"normal": "online", "on-battery": "on-battery", "low-battery": "on-battery low-battery",
                    "replace-battery": "online replace-battery"}

        def upsc(name: str) -> dict[str, str]:
            out = subprocess.run(["upsc", f"{name}@{lab.host}:{lab.port}"], capture_output=True, text=True,
                                 timeout=10).stdout
            return dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)

        async def read(name: str, drv: NutDriver) -> BatteryStatus:
            u = lab.find(name)
            return await drv.battery(Target(u.name, u.host, u.port, timeout=3.0,
                                            options={"nut_name": u.nut_name, "profile": PROFILES.get(u.profile)}))

        async def main() -> None:
            async with NutDriver() as drv:
                deadline = time.monotonic() + 10
                while True:  # dummy-ups re-reads a rewritten file within its poll interval
                    seen = {n: (await read(n, drv)).status for n in faults}
                    if seen == {n: expected[f] for n, f in faults.items()}:
                        break
                    assert time.monotonic() < deadline, seen
                    await asyncio.sleep(0.3)
                first = (await read("web02", drv)).runtime_s
                for name in faults:
                    reference = upsc(name)
                    status = await read(name, drv)
                    if name != "web02":  # web02's runtime is falling between the two reads
                        assert_matches_upsc(status, reference, expected[faults[name]])
                await asyncio.sleep(nutlab.STEP_S * 2 + 0.5)
                later = await read("web02", drv)
                assert later.status == "on-battery" and later.runtime_s < first
                assert later.extra["battery.mfr.date"] == "2023/11/02"

        asyncio.run(main())
        memory = nutlab.nut_memory(tmp_path)
        assert memory["drivers"] == 4 and 0 < memory["driver_pss_avg"] < memory["driver_rss_avg"]
        with pytest.raises(InputError):
            nutlab.nut_fault(tmp_path, "web01", "on-fire")
    finally:
        pids = [lab.upsd_pid, *lab.driver_pids.values()]
        assert nutlab.stop_nut_lab(tmp_path)
    assert not nutlab.nut_lab_running(tmp_path)
    for pid in pids:  # gone, or (PIDs wrap at 32768 here) reused by a process that is not NUT's
        assert not pid_alive(pid) or not cmdline_has(pid, str(tmp_path).encode()), f"pid {pid} still runs"
