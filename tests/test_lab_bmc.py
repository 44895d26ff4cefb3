"""The lab BMC (fleet/lab): codec, BMC model, RMCP+ session layer, the server process, and real peers.

Independent clients prove it: ``ipmitool -I lanplus`` with cipher suites 3 and 17, FreeIPMI
(``ipmi-power``, ``ipmi-sensors``, ``ipmi-sel``, ``bmc-info``, ``ipmi-chassis``) and pyghmi; and the same
commands get the same answers from it as from OpenIPMI's ``ipmi_sim`` (tests/ipmisim.py) when both hold
the same sensors, SEL and FRU. A small console written on :mod:`fleet.lab.rmcp` checks what the tools
cannot show (status codes, sequence numbers, retransmissions, timeouts).

Every server started here is stopped by its PID; temporary directories are removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet.errors import DeviceUnreachable, PortInUse, ValidationError
from fleet.lab import bmcmodel, bmcserver, bmcspec, rakp, rmcp, rmcpsession
from fleet.lab.bmc import Bmc
from fleet.lab.bmcserver import LabServer, LabStartError, lab_control
from fleet.lab.bmcspec import parse_spec
from fleet.lab.rmcp import PayloadType, RmcppStatus

from .peers import missing_peer

REPO = Path(__file__).resolve().parent.parent
ROOT = os.geteuid() == 0
PASSWORD = "password"
CLIENT_TIMEOUT = 20.0


# ---------------------------------------------------------------------------------------------
# Helpers: addresses, an in-thread server, a console built on the codec
# ---------------------------------------------------------------------------------------------


def _block(count: int) -> list[tuple[str, int]]:
    """``count`` (loopback host, port) pairs in a random 127.R.0.0/16 block; port 623 as root."""
    for _ in range(50):
        block = random.randrange(160, 250)
        port = 623 if ROOT else random.randrange(20000, 60000)
        hosts = bmcserver.loopback_hosts(count, f"127.{block}.{random.randrange(0, 200)}.1")
        free = True
        for host in (hosts[0], hosts[-1]):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    s.bind((host, port))
                except OSError:
                    free = False
        if free:
            return [(h, port) for h in hosts]
    raise RuntimeError("no free loopback block")


@contextlib.contextmanager
def threaded_lab(doc: dict[str, Any]) -> Iterator[tuple[LabServer, Any]]:
    """A LabServer on its own event loop thread; ``call(fn, *args)`` runs ``fn`` on that thread."""
    specs, sets = parse_spec(doc)
    loop = asyncio.new_event_loop()
    server = LabServer(specs, sets, None)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def call(fn: Any, *args: Any) -> Any:
        async def run() -> Any:
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(run(), loop).result(10)

    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(30)
        yield server, call
    finally:
        asyncio.run_coroutine_threadsafe(server.aclose(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


class Console:
    """A minimal RMCP+ console (remote side) on the codec, for what the tools cannot show."""

    def __init__(self, host: str, port: int, timeout: float = 0.5) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(timeout)
        self.addr = (host, port)
        self.keys: rmcp.SessionKeys | None = None
        self.suite = rmcp.CIPHER_SUITES[17]
        self.bmc_sid = 0
        self.console_sid = random.getrandbits(31) + 1
        self.seq = 0
        self.rq_seq = 0

    def close(self) -> None:
        self.sock.close()

    def exchange(self, datagram: bytes) -> bytes:
        self.sock.sendto(datagram, self.addr)
        return self.sock.recv(4096)

    def _rmcpp(self, ptype: int, payload: bytes) -> bytes:
        reply = self.exchange(rmcp.build_v20(ptype, payload))
        _, body = rmcp.parse_datagram(reply)
        return rmcp.parse_session(body).payload

    def login(self, password: str = PASSWORD, *, suite: int = 17, user: bytes = b"admin", role: int = 0x14,
              tamper_rakp3: bool = False) -> Any:
        """Run Open Session .. RAKP 4; return the first message with a non-zero status, or RAKP 4."""
        cs = self.suite = rmcp.CIPHER_SUITES[suite]
        req = rakp.OpenSessionRequest(1, 4, self.console_sid, cs.auth, cs.integrity, cs.confidentiality)
        opened = rakp.OpenSessionResponse.parse(self._rmcpp(PayloadType.OPEN_SESSION_REQUEST, req.build()))
        if opened.status:
            return opened
        assert opened.suite == cs and opened.console_sid == self.console_sid
        rm = os.urandom(16)
        r2 = rakp.Rakp2.parse(self._rmcpp(PayloadType.RAKP1, rakp.Rakp1(2, opened.bmc_sid, rm, role, user).build()))
        if r2.status:
            return r2
        kuid = password.encode()
        expected = rakp.rakp2_auth_code(cs, kuid, self.console_sid, opened.bmc_sid, rm, r2.bmc_random, r2.bmc_guid,
                                        role, user)
        if expected != r2.auth_code:
            raise PermissionError("RAKP 2 HMAC mismatch: wrong password")
        code = rakp.rakp3_auth_code(cs, kuid, r2.bmc_random, self.console_sid, role, user)
        if tamper_rakp3:
            code = bytes([code[0] ^ 1]) + code[1:]
        r4 = rakp.Rakp4.parse(self._rmcpp(PayloadType.RAKP3, rakp.Rakp3(3, 0, opened.bmc_sid, code).build()))
        if r4.status:
            return r4
        sik = rakp.session_integrity_key(cs, kuid, rm, r2.bmc_random, role, user)
        assert r4.icv == rakp.rakp4_icv(cs, sik, rm, opened.bmc_sid, r2.bmc_guid)
        self.keys = rmcp.SessionKeys(cs, sik)
        self.bmc_sid = opened.bmc_sid
        return r4

    def packet(self, netfn: int, cmd: int, data: bytes = b"", *, seq: int | None = None) -> bytes:
        if seq is None:
            self.seq += 1
            seq = self.seq
        self.rq_seq = (self.rq_seq + 1) % 64
        msg = rmcp.build_ipmi_request(netfn, cmd, data, self.rq_seq)
        return rmcp.build_v20(PayloadType.IPMI, msg, self.bmc_sid, seq, self.keys)

    def send(self, datagram: bytes) -> rmcp.IpmiResponse:
        reply = self.exchange(datagram)
        _, body = rmcp.parse_datagram(reply)
        packet = rmcp.parse_session(body, lambda sid: self.suite.integrity_len)
        assert self.keys is not None and packet.session_id == self.console_sid
        assert self.keys.auth_code(packet.signed) == packet.auth_code
        return rmcp.parse_ipmi_response(self.keys.decrypt(packet.payload))

    def command(self, netfn: int, cmd: int, data: bytes = b"") -> rmcp.IpmiResponse:
        return self.send(self.packet(netfn, cmd, data))


def _doc(pairs: list[tuple[str, int]], **defaults: Any) -> dict[str, Any]:
    return {"defaults": {"password": PASSWORD, **defaults},
            "bmcs": [{"name": f"b{i}", "host": h, "port": p} for i, (h, p) in enumerate(pairs)]}


# ---------------------------------------------------------------------------------------------
# The codec
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suite_id", [3, 17])
def test_packets_are_signed_encrypted_and_tamper_evident(suite_id: int) -> None:
    suite = rmcp.CIPHER_SUITES[suite_id]
    keys = rmcp.SessionKeys(suite, os.urandom(suite.integrity_len))
    for size in (0, 1, 14, 15, 16, 31, 200):
        payload = os.urandom(size)
        data = rmcp.build_v20(PayloadType.IPMI, payload, 0x1234, 7, keys)
        rclass, body = rmcp.parse_datagram(data)
        packet = rmcp.parse_session(body, lambda sid: suite.integrity_len)
        assert (rclass, packet.session_id, packet.sequence) == (rmcp.CLASS_IPMI, 0x1234, 7)
        assert packet.encrypted and packet.authenticated
        assert len(packet.signed) % 4 == 0 and packet.signed[-1] == 0x07
        assert keys.auth_code(packet.signed) == packet.auth_code
        assert keys.decrypt(packet.payload) == payload
    tampered = bytearray(data)
    tampered[20] ^= 0x01
    packet = rmcp.parse_session(bytes(tampered[4:]), lambda sid: suite.integrity_len)
    assert keys.auth_code(packet.signed) != packet.auth_code


def test_rakp_codes_agree_between_console_and_bmc_sides() -> None:
    suite = rmcp.CIPHER_SUITES[17]
    rm, rc, guid = os.urandom(16), os.urandom(16), os.urandom(16)
    # HMAC keys are zero-padded to the block size: a password padded to 20 bytes gives the same codes.
    a = rakp.rakp2_auth_code(suite, b"pw", 1, 2, rm, rc, guid, 0x14, b"admin")
    b = rakp.rakp2_auth_code(suite, b"pw".ljust(20, b"\0"), 1, 2, rm, rc, guid, 0x14, b"admin")
    assert a == b and len(a) == 32
    assert len(rakp.rakp4_icv(suite, b"k" * 32, rm, 2, guid)) == 16
    assert len(rakp.rakp4_icv(rmcp.CIPHER_SUITES[3], b"k" * 20, rm, 2, guid)) == 12
    sik = rakp.session_integrity_key(suite, b"pw", rm, rc, 0x14, b"admin")
    assert rmcp.SessionKeys(suite, sik).k1 != sik


def test_messages_round_trip() -> None:
    req = rmcp.parse_ipmi_request(rmcp.build_ipmi_request(0x00, 0x01, b"\x05", 9))
    assert (req.netfn, req.cmd, req.data, req.rq_seq) == (0x00, 0x01, b"\x05", 9)
    resp = rmcp.parse_ipmi_response(rmcp.build_ipmi_response(req, 0xC1, b"\x01"))
    assert (resp.netfn, resp.cmd, resp.completion_code, resp.data, resp.rq_seq) == (0x01, 0x01, 0xC1, b"\x01", 9)
    with pytest.raises(rmcp.ProtocolError):
        rmcp.parse_ipmi_request(b"\x20\x18\x00\x81\x04\x01\x00")  # bad checksum
    # An Open Session Request with null algorithm payloads means "any".
    raw = bytes([7, 0, 0, 0]) + (42).to_bytes(4, "little") + bytes([0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0,
                                                                    2, 0, 0, 0, 0, 0, 0, 0])
    osr = rakp.OpenSessionRequest.parse(raw)
    assert (osr.tag, osr.console_sid, osr.auth, osr.integrity, osr.confidentiality) == (7, 42, None, None, None)
    mtype, tag = rmcp.parse_asf(rmcp.parse_datagram(rmcp.build_asf_pong(9))[1])
    assert (mtype, tag) == (0x40, 9)


# ---------------------------------------------------------------------------------------------
# The BMC model
# ---------------------------------------------------------------------------------------------


def _bmc(**item: Any) -> Bmc:
    specs, sets = parse_spec({"bmcs": [{"name": "m1", "host": "127.1.2.3", **item}]})
    return Bmc(specs[0], sets[specs[0].sensors])


def test_spec_is_checked() -> None:
    with pytest.raises(ValidationError, match="loopback"):
        parse_spec({"bmcs": [{"name": "x", "host": "10.0.0.1"}]})
    with pytest.raises(ValidationError, match="unknown key"):
        parse_spec({"bmcs": [{"name": "x", "host": "127.0.0.9", "colour": "red"}]})
    with pytest.raises(ValidationError, match="unique"):
        parse_spec({"bmcs": [{"name": "x", "host": "127.0.0.9"}, {"name": "x", "host": "127.0.0.8"}]})
    with pytest.raises(ValidationError, match="sensor profile"):
        parse_spec({"bmcs": [{"name": "x", "host": "127.0.0.9", "sensors": "nope"}]})


def test_lab_sensors_match_the_hardware_profile() -> None:
    """Names and thresholds of hardware-profiles/servers/rackfleet-lab.toml, converted from the SDR."""
    profile = tomllib.loads((REPO / "hardware-profiles/servers/rackfleet-lab.toml").read_text())
    assert profile["match"]["ipmi"] == {"manufacturer_id": bmcspec.MANUFACTURER_ID,
                                        "product_ids": [bmcspec.PRODUCT_ID]}
    sensors = bmcspec.SENSOR_PROFILES["rackfleet-lab"]
    keys = {"critical_low": "lc", "warning_low": "lnc", "warning_high": "unc", "critical_high": "uc"}
    for wanted in profile["sensors"]:
        sensor = sensors.find(wanted["name"])
        assert sensor is not None, wanted["name"]
        got = {k: sensor.to_value(sensor.thresholds[v]) for k, v in keys.items() if v in sensor.thresholds}
        assert got == pytest.approx({k: wanted[k] for k in keys if k in wanted}), wanted["name"]
    # The SDR: headers, lengths and the MC locator at the end.
    for i, record in enumerate(sensors.sdr):
        assert record[0] | record[1] << 8 == i + 1 and record[2] == 0x51 and record[4] == len(record) - 5
    assert sensors.sdr[-1][3] == 0x12


def test_power_transitions_delays_and_boot_flags() -> None:
    bmc = _bmc(power="off", power_on_delay=5)
    t = 1000.0
    bmc.boot_flags = bytes([0x80, 0x04, 0, 0, 0])  # PXE, next boot only
    bmc.power("on", t)
    assert not bmc.powered(t + 4.9) and bmc.powered(t + 5.0)
    assert bmc.last_boot == "pxe" and not bmc.boot_flags[0] & 0x80  # a one-time override is used up
    bmc.boot_flags = bytes([0xE0, 0x08, 0, 0, 0])  # disk, persistent, UEFI
    bmc.power("cycle", t + 10)
    assert not bmc.powered(t + 10)
    assert bmc.powered(t + 10 + bmcmodel.CYCLE_OFF_SECONDS + 5) and bmc.boot_flags[0] == 0xE0
    assert bmc.last_boot == "disk" and bmc.boot_count == 2
    bmc.power("reset", t + 20)
    assert bmc.reset_count == 1 and bmc.boot_count == 3
    bmc.set_fault("stuck-power")
    bmc.power("off", t + 30)
    assert bmc.powered(t + 30)
    bmc.set_fault("stuck-power", on=False)
    bmc.power("soft", t + 30)
    assert not bmc.powered(t + 30)
    bmc.power("cycle", t + 31)  # a cycle of a server that is off leaves it off (as ipmi_sim)
    assert not bmc.powered(t + 40)


def test_chassis_and_boot_option_commands() -> None:
    bmc = _bmc()
    assert bmc.handle(0x00, 0x01, b"", 4) == (0, bytes([0x01, 0x00, 0x00]))
    assert bmc.handle(0x00, 0x02, b"\x00", 2)[0] == 0xD4  # chassis control needs operator
    assert bmc.handle(0x00, 0x02, b"\x00", 3)[0] == 0
    assert bmc.handle(0x00, 0x01, b"", 4)[1][0] == 0x00
    assert bmc.handle(0x00, 0x08, bytes([5, 0xA0, 0x04, 0, 0, 0]), 4)[0] == 0
    assert bmc.handle(0x00, 0x09, bytes([5, 0, 0]), 4) == (0, bytes([1, 5, 0xA0, 0x04, 0, 0, 0]))
    assert bmc.handle(0x00, 0x09, bytes([0x42, 0, 0]), 4)[0] == 0x80  # parameter not supported
    assert bmc.handle(0x3A, 0x01, b"", 4)[0] == 0xC1  # unknown command


def test_fru_image_is_valid_and_carries_the_serial() -> None:
    image = _bmc(serial="SN-12345").fru_image()
    assert sum(image[:8]) & 0xFF == 0
    for offset in image[2:5]:  # chassis, board, product areas
        start = offset * 8
        length = image[start + 1] * 8
        assert sum(image[start:start + length]) & 0xFF == 0
    assert image.count(b"SN-12345") == 3
    bmc = _bmc()
    cc, data = bmc.handle(0x0A, 0x11, bytes([0, 0, 0, 16]), 2)
    assert cc == 0 and data[0] == 16 and data[1:] == bmc.fru_image()[:16]


def test_sel_reservation_clear_and_fault_events() -> None:
    bmc = _bmc()
    bmc.set_fault("ecc")
    bmc.set_fault("sensor-critical", value="CPU1 Temp")
    assert [r[10] for r in bmc.sel] == [0x0C, 0x01]  # sensor types: memory, temperature
    assert bmc.sel[0][13] & 0x0F == 0x01  # offset 1: uncorrectable ECC
    cc, reading = bmc.handle(0x04, 0x2D, b"\x01", 2)
    assert cc == 0 and reading[2] & 0x10  # at or above upper critical
    cc, reading = bmc.handle(0x04, 0x2D, b"\x08", 2)
    assert cc == 0 and reading[2] == 0x02  # memory sensor: uncorrectable ECC asserted
    assert bmc.handle(0x0A, 0x47, b"\x00\x00CLR\xaa", 3)[0] == 0xC5  # no reservation
    _, res = bmc.handle(0x0A, 0x42, b"", 2)
    assert bmc.handle(0x0A, 0x47, res + b"CLR\xaa", 3) == (0, b"\x01")
    assert bmc.handle(0x0A, 0x43, b"\x00\x00\x00\x00\x00\xff", 2)[0] == 0xCB
    bmc.set_fault("sensor-critical", on=False, value="CPU1 Temp")
    assert bmc.sel[-1][12] == 0x81  # deassertion
    assert "sensor-critical" not in bmc.faults()


# ---------------------------------------------------------------------------------------------
# The session layer, with our console
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tlab() -> Iterator[tuple[LabServer, Any, list[tuple[str, int]]]]:
    pairs = _block(8)
    with threaded_lab(_doc(pairs, cold_reset_seconds=0.5)) as (server, call):
        yield server, call, pairs


@pytest.mark.parametrize("suite", [3, 17])
def test_console_session_both_suites(tlab: Any, suite: int) -> None:
    server, call, pairs = tlab
    console = Console(*pairs[0])
    try:
        assert console.login(suite=suite).status == 0
        assert console.command(0x00, 0x01).completion_code == 0
        assert console.command(0x00, 0x02, b"\x01").completion_code == 0xD4  # the session starts at User
        assert console.command(0x06, 0x3B, b"\x04").data == b"\x04"
        assert console.command(0x06, 0x3B, b"\x05").completion_code == 0x81
        assert console.command(0x00, 0x02, b"\x01").completion_code == 0
        assert console.command(0x3A, 0x99).completion_code == 0xC1
        device = console.command(0x06, 0x01).data
        assert int.from_bytes(device[6:9], "little") == 32473 and device[9:11] == b"\x01\x00"
        before = call(server.session_count)
        assert console.command(0x06, 0x3C, console.bmc_sid.to_bytes(4, "little")).completion_code == 0
        assert call(server.session_count) == before - 1
    finally:
        console.close()


def test_login_failures_answer_fast_with_the_right_status(tlab: Any) -> None:
    server, call, pairs = tlab
    console = Console(*pairs[1])
    try:
        assert console.login(user=b"root").status == RmcppStatus.UNAUTHORIZED_NAME
        assert console.login(tamper_rakp3=True).status == RmcppStatus.INVALID_INTEGRITY_CHECK_VALUE
        with pytest.raises(PermissionError, match="RAKP 2"):
            console.login(password="not-it")
        call(server.find("b1").bmc.set_fault, "wrong-password")
        with pytest.raises(PermissionError, match="RAKP 2"):
            console.login()
        call(server.find("b1").bmc.set_fault, "wrong-password", False)
        assert console.login(role=0x15).status == RmcppStatus.UNAUTHORIZED_ROLE  # OEM is above admin
        md5 = rakp.OpenSessionRequest(1, 4, 9, 0x02, 0x01, 0x01)  # RAKP-HMAC-MD5: not offered
        answer = rakp.OpenSessionResponse.parse(console._rmcpp(PayloadType.OPEN_SESSION_REQUEST, md5.build()))
        assert answer.status == RmcppStatus.INVALID_AUTH_ALGORITHM
        any_suite = rakp.OpenSessionRequest(1, 0, 9, None, None, None)
        answer = rakp.OpenSessionResponse.parse(console._rmcpp(PayloadType.OPEN_SESSION_REQUEST, any_suite.build()))
        assert answer.status == 0 and answer.suite is not None and answer.suite.id == 17 and answer.max_privilege == 4
        assert console.login().status == 0
    finally:
        console.close()


def test_sequence_numbers_replays_and_retransmissions(tlab: Any) -> None:
    server, call, pairs = tlab
    console = Console(*pairs[2])
    bmc = server.find("b2").bmc
    try:
        console.login()
        console.command(0x06, 0x3B, b"\x04")
        event = bytes(16)
        first = console.packet(0x0A, 0x44, event)  # Add SEL Entry
        assert console.send(first).completion_code == 0
        assert console.send(first).completion_code == 0  # the same packet again: the cached answer
        assert call(lambda: len(bmc.sel)) == 1
        retry = rmcp.build_v20(PayloadType.IPMI, rmcp.build_ipmi_request(0x0A, 0x44, event, console.rq_seq),
                               console.bmc_sid, console.seq + 1, console.keys)  # new seq, same rqSeq: a retry
        console.seq += 1
        assert console.send(retry).completion_code == 0
        assert call(lambda: len(bmc.sel)) == 1
        assert console.command(0x0A, 0x44, event).completion_code == 0  # a new request runs
        assert call(lambda: len(bmc.sel)) == 2
        for _ in range(45):
            console.command(0x00, 0x01)
        for stale in (0, console.seq - 40):  # sequence 0 and far behind the window: silence
            with pytest.raises(TimeoutError):
                console.send(console.packet(0x00, 0x01, seq=stale))
        with pytest.raises(TimeoutError):  # a packet signed with the wrong key: silence
            wrong = rmcp.SessionKeys(console.suite, b"x" * 32)
            console.send(rmcp.build_v20(PayloadType.IPMI, rmcp.build_ipmi_request(0, 1), console.bmc_sid,
                                        console.seq + 1, wrong))
        assert console.command(0x00, 0x01).completion_code == 0
    finally:
        console.close()


def test_sessions_expire_and_the_table_is_bounded(tlab: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    server, call, pairs = tlab
    ep = server.find("b3")
    consoles = [Console(*pairs[3]) for _ in range(server.max_sessions + 1)]
    try:
        for c in consoles[:-1]:
            assert c.login().status == 0
        assert consoles[-1].login().status == RmcppStatus.INSUFFICIENT_RESOURCES
        monkeypatch.setattr(rmcpsession, "EVICT_IDLE_SECONDS", 0.0)  # the oldest idle session makes room
        assert consoles[-1].login().status == 0
        with pytest.raises(TimeoutError):
            consoles[0].command(0x00, 0x01)
        monkeypatch.setattr(rmcpsession, "EVICT_IDLE_SECONDS", 10.0)
        call(server.sweep, time.monotonic() + ep.bmc.spec.session_timeout + 1)
        assert ep.sessions is None and ep not in server._live
        assert consoles[-1].login().status == 0
        # Half-open sessions (a console that vanished after Open Session) go after PENDING_TIMEOUT.
        req = rakp.OpenSessionRequest(1, 4, 5, 0x03, 0x04, 0x01)
        for _ in range(5):
            consoles[0]._rmcpp(PayloadType.OPEN_SESSION_REQUEST, req.build())
        assert call(lambda: len(ep.sessions)) == 6
        call(server.sweep, time.monotonic() + rmcpsession.PENDING_TIMEOUT + 1)
        assert call(lambda: len(ep.sessions)) == 1
    finally:
        for c in consoles:
            c.close()


def test_repeated_sessions_leave_nothing_behind(tlab: Any) -> None:
    """Thousands of logins, closed or abandoned, leave no session and no growing table behind."""
    server, call, pairs = tlab
    console = Console(*pairs[4])
    try:
        for i in range(600):
            assert console.login(suite=3 if i % 2 else 17).status == 0
            console.command(0x00, 0x01)
            if i % 50:  # every 50th is abandoned without Close Session
                console.command(0x06, 0x3C, console.bmc_sid.to_bytes(4, "little"))
        assert call(lambda: len(server.find("b4").sessions)) == 12
        call(server.sweep, time.monotonic() + 3600)
        assert call(server.session_count) == 0 and not server._live
    finally:
        console.close()


def test_dead_slow_and_cold_reset(tlab: Any) -> None:
    server, call, pairs = tlab
    ep = server.find("b5")
    console = Console(*pairs[5], timeout=1.0)
    try:
        call(ep.bmc.set_fault, "dead")
        with pytest.raises(TimeoutError):
            console.login()
        call(ep.bmc.set_fault, "dead", False)
        call(ep.bmc.set_fault, "slow", True, 300)
        t0 = time.monotonic()
        assert console.login().status == 0
        assert time.monotonic() - t0 >= 0.9  # three exchanges, each 300 ms late
        call(ep.bmc.set_fault, "slow", False)
        console.command(0x06, 0x3B, b"\x04")
        assert console.command(0x06, 0x02).completion_code == 0  # answered, then silent for 0.5 s
        other = Console(*pairs[5], timeout=0.2)
        with pytest.raises(TimeoutError):
            other.login()
        other.close()
        time.sleep(0.5)
        with pytest.raises(TimeoutError):  # the reset ended every session
            console.command(0x00, 0x01)
        assert console.login().status == 0
    finally:
        console.close()


def test_sessionless_commands_and_asf_ping(tlab: Any) -> None:
    _, _, pairs = tlab
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1)
        s.sendto(rmcp.build_asf_ping(5), pairs[6])
        mtype, tag = rmcp.parse_asf(rmcp.parse_datagram(s.recv(512))[1])
        assert (mtype, tag) == (0x40, 5)
        s.sendto(rmcp.build_v15(rmcp.build_ipmi_request(0x06, 0x54, b"\x0e\x00\x80")), pairs[6])
        packet = rmcp.parse_session(rmcp.parse_datagram(s.recv(512))[1])
        resp = rmcp.parse_ipmi_response(packet.payload)
        assert resp.completion_code == 0 and resp.data == bytes([1, 0xC0, 3, 1, 0x41, 0x81, 0xC0, 17, 3, 0x44, 0x81])
        s.sendto(rmcp.build_v15(rmcp.build_ipmi_request(0x06, 0x38, b"\x8e\x04")), pairs[6])
        resp = rmcp.parse_ipmi_response(rmcp.parse_session(rmcp.parse_datagram(s.recv(512))[1]).payload)
        assert resp.data[1] & 0x80 and resp.data[3] & 0x02  # IPMI 2.0 only


def test_garbage_is_dropped_and_the_bmc_keeps_answering(tlab: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Malformed datagrams are counted and dropped as protocol errors, never as crashes."""
    server, call, pairs = tlab
    console = Console(*pairs[7])
    rng = random.Random(7)
    try:
        console.login()
        good = console.packet(0x00, 0x01)
        samples = [rng.randbytes(rng.randrange(0, 80)) for _ in range(300)]
        samples += [good[:n] for n in range(len(good))]  # every truncation of a valid packet
        samples += [bytes([6, 0, 0xFF, 7]) + rng.randbytes(rng.randrange(0, 60)) for _ in range(300)]
        samples += [bytes([6, 0, 0xFF, 7, 6, p]) + rng.randbytes(40) for p in range(256)]
        bad_before = call(lambda: server.stats.bad)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(0, len(samples), 100):  # in bursts the socket's receive buffer can hold
                for sample in samples[i:i + 100]:
                    s.sendto(sample, pairs[7])
                time.sleep(0.02)
        assert console.command(0x00, 0x01).completion_code == 0
        assert call(lambda: server.stats.bad) > bad_before
        assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    finally:
        console.close()


def test_fd_limit_is_reported_clearly() -> None:
    with pytest.raises(LabStartError, match="file descriptors needed"):
        bmcserver.ensure_fd_limit(1 << 40)


# ---------------------------------------------------------------------------------------------
# The server process and its control socket
# ---------------------------------------------------------------------------------------------


class LabProcess:
    """A ``python -m fleet.lab.bmcserver`` in a temporary directory, stopped by PID."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="rackfleet-lab-"))
        self.spec = self.dir / "spec.json"
        self.spec.write_text(json.dumps(doc))
        self.state = self.dir / "state"
        self.pid = bmcserver.start(self.spec, self.state, timeout=60)
        self.bmcs = {b["name"]: b for b in self.control({"op": "list"})["bmcs"]}

    def control(self, request: dict[str, Any]) -> dict[str, Any]:
        answer = lab_control(self.state, request)
        assert answer["ok"], answer
        return answer

    def close(self) -> None:
        try:
            bmcserver.stop(self.state, pid=self.pid)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def test_server_process_lifecycle_and_control() -> None:
    pairs = _block(2)
    lab = LabProcess(_doc(pairs, power_on_delay=0.2))
    try:
        assert int((lab.state / bmcserver.PID_FILE).read_text()) == lab.pid
        ready = json.loads((lab.state / bmcserver.READY_FILE).read_text())
        assert ready["bmcs"] == 2 and ready["pid"] == lab.pid
        assert lab.control({"op": "ping"})["bmcs"] == 2
        host, port = pairs[1]
        state = lab.control({"op": "power", "bmc": f"{host}:{port}", "action": "off"})["bmc"]
        assert state["name"] == "b1" and state["power"] == "off"
        assert lab.control({"op": "power", "bmc": "b1", "action": "on"})["bmc"]["pending_power"] == "on"
        time.sleep(0.25)
        assert lab.control({"op": "get", "bmc": "b1"})["bmc"]["power"] == "on"
        faults = lab.control({"op": "fault", "bmc": "b0", "kind": "slow", "value": 50})["bmc"]["faults"]
        assert faults == {"slow": 50}
        assert lab.control({"op": "fault", "bmc": "b0", "kind": "slow", "clear": True})["bmc"]["faults"] == {}
        bad = lab_control(lab.state, {"op": "fault", "bmc": "b0", "kind": "melt"})
        assert not bad["ok"] and "unknown fault" in bad["error"]
        assert not lab_control(lab.state, {"op": "get", "bmc": "nobody"})["ok"]
        assert lab.control({"op": "stats"})["bmcs"] == 2
        with pytest.raises(LabStartError, match="already runs"):
            bmcserver.start(lab.spec, lab.state, timeout=30)
        assert (lab.state / bmcserver.READY_FILE).exists()
        os.kill(lab.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while (lab.state / bmcserver.PID_FILE).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        for name in (bmcserver.PID_FILE, bmcserver.READY_FILE, bmcserver.CONTROL_SOCKET):
            assert not (lab.state / name).exists(), name
        with pytest.raises(DeviceUnreachable):
            lab_control(lab.state, {"op": "ping"})
    finally:
        lab.close()


def test_start_reports_a_bad_spec_or_a_taken_address(tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"bmcs": [{"name": "x", "host": "192.0.2.1"}]}))
    with pytest.raises(LabStartError, match="loopback"):
        bmcserver.start(spec, tmp_path / "state", timeout=30)
    (host, port), = _block(1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind((host, port))
        spec.write_text(json.dumps(_doc([(host, port)])))
        with pytest.raises(PortInUse, match="is in use"):
            bmcserver.start(spec, tmp_path / "state", timeout=30)
    assert not (tmp_path / "state" / bmcserver.PID_FILE).exists()


# ---------------------------------------------------------------------------------------------
# Real peers: ipmitool, FreeIPMI, pyghmi
# ---------------------------------------------------------------------------------------------


def _need(tool: str, package: str) -> None:
    if shutil.which(tool) is None:
        missing_peer(f"{tool} is not installed (Debian package {package})")


def _run(cmd: list[str], *, env: dict[str, str] | None = None, check: bool = True,
         timeout: float = CLIENT_TIMEOUT) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout}{res.stderr}")
    return res


def ipmitool(host: str, port: int, *args: str, cipher: int = 17, password: str = PASSWORD,
             check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = ["ipmitool", "-I", "lanplus", "-C", str(cipher), "-H", host, "-p", str(port), "-U", "admin", "-E",
           "-N", "1", "-R", "1", *args]
    return _run(cmd, env={**os.environ, "IPMI_PASSWORD": password}, check=check)


def freeipmi(tool: str, host: str, port: int, *args: str, cipher: int = 17, password: str = PASSWORD,
             cache: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    target = host if port == 623 else f"{host}:{port}"
    cmd = [tool, "-h", target, "-u", "admin", "-p", password, "-D", "LAN_2_0", "-W", "opensesspriv",
           "-I", str(cipher), "-l", "ADMIN", "--session-timeout=2000", "--retransmission-timeout=250"]
    if cache is not None:
        cache.mkdir(exist_ok=True, mode=0o700)
        cmd += ["--sdr-cache-directory", str(cache)]
    return _run([*cmd, *args], check=check)


PEER_NAMES = ("tool3", "tool17", "free", "pyg", "authfail", "dead", "twin")


@pytest.fixture(scope="module")
def peers() -> Iterator[LabProcess]:
    """One server process with a BMC per test below (none shares state with another test)."""
    from .ipmisim import MEMORY_SENSOR, SEL_EVENTS, SENSORS, IpmiSim

    pairs = _block(len(PEER_NAMES))
    twin_fru = IpmiSim(index=0, host="", port=0, workdir=Path()).fru_fields()
    doc = {
        "defaults": {"password": PASSWORD, "cold_reset_seconds": 1.0},
        "sensor_profiles": {"ipmisim": [
            *({"number": s.number, "name": s.name, "kind": s.kind, "sensor_type": s.sensor_type,
               "unit_code": s.unit_code, "raw": s.raw, "m": s.m, "b": s.b, "r_exp": s.r_exp,
               "entity_id": s.entity_id, "thresholds": dict(s.thresholds)} for s in SENSORS),
            {"number": MEMORY_SENSOR.number, "name": MEMORY_SENSOR.name, "kind": "memory",
             "entity_id": MEMORY_SENSOR.entity_id},
        ]},
        "bmcs": [{"name": name, "host": h, "port": p, "serial": f"SN-{name}",
                  "cold_reset_seconds": 3.0 if name.startswith("tool") else 1.0}
                 for name, (h, p) in zip(PEER_NAMES, pairs, strict=True)],
    }
    twin = doc["bmcs"][-1]
    twin.update(sensors="ipmisim", fru={**twin_fru, "mfg_minutes": 0}, sel=[
        {"sensor_type": e.sensor_type, "sensor_number": e.sensor_number, "event_type": e.event_type,
         "data": list(e.data), "deassertion": e.deassertion} for e in SEL_EVENTS])
    lab = LabProcess(doc)
    try:
        yield lab
    finally:
        lab.close()


def _addr(lab: LabProcess, name: str) -> tuple[str, int]:
    return lab.bmcs[name]["host"], lab.bmcs[name]["port"]


@pytest.mark.peer
@pytest.mark.parametrize("cipher", [3, 17])
def test_ipmitool(peers: LabProcess, cipher: int) -> None:
    _need("ipmitool", "ipmitool")
    name = f"tool{cipher}"
    host, port = _addr(peers, name)

    def tool(*args: str) -> str:
        res = ipmitool(host, port, *args, cipher=cipher)
        return res.stdout + res.stderr

    assert tool("chassis", "power", "status").strip() == "Chassis Power is on"
    assert "Down/Off" in tool("chassis", "power", "off")
    assert tool("chassis", "power", "status").strip() == "Chassis Power is off"
    assert peers.control({"op": "get", "bmc": name})["bmc"]["power"] == "off"
    assert "Up/On" in tool("chassis", "power", "on")
    assert "Cycle" in tool("chassis", "power", "cycle")
    assert "Reset" in tool("chassis", "power", "reset")
    status = tool("chassis", "status")
    assert re.search(r"System Power\s+: (on|off)", status) and "Cooling/Fan Fault    : false" in status
    assert "Set Boot Device to pxe" in tool("chassis", "bootdev", "pxe")
    param = tool("chassis", "bootparam", "get", "5")
    assert "Boot Flag Valid" in param and "Force PXE" in param and "only next boot" in param
    tool("chassis", "bootdev", "disk", "options=persistent,efiboot")
    param = tool("chassis", "bootparam", "get", "5")
    assert "all future boots" in param and "BIOS EFI boot" in param and "Hard-Drive" in param
    assert peers.control({"op": "get", "bmc": name})["bmc"]["boot"] == {
        "device": "disk", "valid": True, "persistent": True, "uefi": True}
    info = tool("mc", "info")
    assert re.search(r"Manufacturer ID\s+: 32473", info) and re.search(r"Product ID\s+: 1 \(0x0001\)", info)
    sdr = tool("sdr", "list")
    for sensor in ("CPU1 Temp", "Inlet Temp", "FAN1", "PSU1 Power", "12V"):
        assert re.search(rf"^{re.escape(sensor)}\s+\|", sdr, re.M), sensor
    elist = tool("sdr", "elist")
    assert re.search(r"^Inlet Temp\s+\| 03h \| ok\s+\| 55\.1 \| \d+ degrees C", elist, re.M)
    assert "SEL has no entries" in tool("sel", "list")
    fru = tool("fru", "print")
    assert re.search(rf"Product Serial\s+: SN-{name}", fru) and re.search(r"Product Manufacturer\s+: Rackfleet", fru)
    if cipher == 17:  # once is enough: a cold reset silences the BMC for cold_reset_seconds (3 s here)
        assert "Sent cold reset command to MC" in tool("mc", "reset", "cold")
        assert peers.control({"op": "get", "bmc": name})["bmc"]["resetting"]
        assert ipmitool(host, port, "chassis", "power", "status", cipher=cipher, check=False).returncode != 0
        deadline = time.monotonic() + 5
        while peers.control({"op": "get", "bmc": name})["bmc"]["resetting"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert tool("chassis", "power", "status").strip() in ("Chassis Power is on", "Chassis Power is off")


@pytest.mark.peer
def test_freeipmi(peers: LabProcess, tmp_path: Path) -> None:
    _need("ipmi-power", "freeipmi-tools")
    host, port = _addr(peers, "free")
    shown = host  # ipmi-power names a host:port target without its port (LAB-NOTES)
    for cipher in (3, 17):
        assert freeipmi("ipmi-power", host, port, "--stat", cipher=cipher).stdout.strip() == f"{shown}: on"
    assert freeipmi("ipmi-power", host, port, "--off").stdout.strip() == f"{shown}: ok"
    assert freeipmi("ipmi-power", host, port, "--stat").stdout.strip() == f"{shown}: off"
    assert freeipmi("ipmi-power", host, port, "--on").stdout.strip() == f"{shown}: ok"
    sensors = freeipmi("ipmi-sensors", host, port, "--output-sensor-thresholds", cache=tmp_path / "c").stdout
    row = next(line for line in sensors.splitlines() if "| Inlet Temp " in line)
    cells = [c.strip() for c in row.split("|")]
    assert cells[2:5] == ["Temperature", cells[3], "C"] and cells[5:11] == [
        "N/A", "0.00", "5.00", "40.00", "45.00", "N/A"] and cells[11] == "'OK'"
    peers.control({"op": "fault", "bmc": "free", "kind": "ecc"})
    peers.control({"op": "fault", "bmc": "free", "kind": "sensor-critical", "value": "CPU1 Temp"})
    sel = freeipmi("ipmi-sel", host, port, cache=tmp_path / "c").stdout
    assert re.search(r"Memory ECC\s+\| Memory\s+\| Uncorrectable memory error", sel)
    assert re.search(r"CPU1 Temp\s+\| Temperature\s+\| Upper Critical - going high ; Sensor Reading = 97\.00 C ; "
                     r"Threshold = 95\.00 C", sel)
    sensors = freeipmi("ipmi-sensors", host, port, cache=tmp_path / "c").stdout
    assert re.search(r"CPU1 Temp .*'At or Above \(>=\) Upper Critical Threshold'", sensors)
    info = freeipmi("bmc-info", host, port).stdout
    assert re.search(r"Manufacturer ID\s+: .*\(32473\)", info) and re.search(r"Product ID\s+: 1$", info, re.M)
    assert re.search(r"IPMI Version\s+: 2\.0", info)
    flags = freeipmi("ipmi-chassis", host, port, "--get-boot-flags").stdout
    assert re.search(r"Boot device selector\s+: No override", flags)
    freeipmi("ipmi-chassis-config", host, port, "--commit", "--key-pair=Chassis_Boot_Flags:Boot_Device=PXE")
    assert peers.control({"op": "get", "bmc": "free"})["bmc"]["boot"] == {
        "device": "pxe", "valid": True, "persistent": False, "uefi": False}


@pytest.mark.peer
def test_pyghmi(peers: LabProcess) -> None:
    from pyghmi.ipmi import command

    host, port = _addr(peers, "pyg")
    ipmi = command.Command(bmc=host, port=port, userid=b"admin", password=PASSWORD.encode(), keepalive=False)
    try:
        assert ipmi.get_power() == {"powerstate": "on"}
        ipmi.set_power("off", wait=True)
        assert ipmi.get_power() == {"powerstate": "off"}
        ipmi.set_bootdev("network", persist=False, uefiboot=True)
        assert ipmi.get_bootdev() == {"bootdev": "network", "persistent": False, "uefimode": True}
        readings = {r.name: r for r in ipmi.get_sensor_data()}
        assert readings["Inlet Temp"].units == "°C" and 20 <= readings["Inlet Temp"].value <= 26
        assert readings["CPU1 Temp"].value is None  # off: the CPU sensor has no reading
        inventory = ipmi.get_inventory_of_component("System")
        assert inventory["Serial Number"] == "SN-pyg" and inventory["Manufacturer ID"] == 32473
        ipmi.set_power("on", wait=True)
        assert peers.control({"op": "get", "bmc": "pyg"})["bmc"]["last_boot"] == "pxe"
    finally:
        ipmi.ipmi_session.logout()


@pytest.mark.peer
def test_wrong_password_fails_fast_in_every_client(peers: LabProcess) -> None:
    _need("ipmitool", "ipmitool")
    _need("ipmi-power", "freeipmi-tools")
    from pyghmi import exceptions as pyghmi_exc
    from pyghmi.ipmi import command

    host, port = _addr(peers, "authfail")
    peers.control({"op": "fault", "bmc": "authfail", "kind": "wrong-password"})
    t0 = time.monotonic()
    assert ipmitool(host, port, "chassis", "power", "status", check=False).returncode != 0
    assert "password invalid" in freeipmi("ipmi-power", host, port, "--stat", check=False).stdout
    with pytest.raises(pyghmi_exc.IpmiException, match=r"[Pp]assword"):
        command.Command(bmc=host, port=port, userid=b"admin", password=PASSWORD.encode(), keepalive=False)
    assert time.monotonic() - t0 < 1.5  # no client waited for a timeout
    peers.control({"op": "fault", "bmc": "authfail", "kind": "wrong-password", "clear": True})
    assert "is on" in ipmitool(host, port, "chassis", "power", "status").stdout


@pytest.mark.peer
def test_a_dead_bmc_costs_the_client_its_timeout_only(peers: LabProcess) -> None:
    _need("ipmitool", "ipmitool")
    host, port = _addr(peers, "dead")
    peers.control({"op": "fault", "bmc": "dead", "kind": "dead"})
    t0 = time.monotonic()
    assert ipmitool(host, port, "chassis", "power", "status", check=False).returncode != 0
    assert time.monotonic() - t0 < 4.0  # -N 1 -R 1
    peers.control({"op": "fault", "bmc": "dead", "kind": "dead", "clear": True})
    assert "is on" in ipmitool(host, port, "chassis", "power", "status").stdout


# ---------------------------------------------------------------------------------------------
# The same answers as ipmi_sim
# ---------------------------------------------------------------------------------------------

_SEL_TIME = re.compile(r"^(\s*\d+ \|).*?\|.*?\|")  # ipmitool: id | date | time |
_FREEIPMI_SEL_TIME = re.compile(r"^(\d+\s+\|)[^|]*\|[^|]*\|")


@pytest.mark.peer
def test_same_answers_as_ipmi_sim(peers: LabProcess, tmp_path: Path) -> None:
    """Power, chassis control, boot device, SDR (and SEL, FRU) as ipmitool and FreeIPMI see them."""
    _need("ipmitool", "ipmitool")
    _need("ipmi-power", "freeipmi-tools")
    from .ipmisim import ipmi_sim

    twin = _addr(peers, "twin")
    with ipmi_sim(1) as sims:
        sim = (sims[0].host, sims[0].port)

        def both(kind: str, *args: str, normalise: Any = None) -> None:
            outs = []
            for i, (host, port) in enumerate((sim, twin)):
                if kind == "ipmitool":
                    res = ipmitool(host, port, *args, cipher=3)
                else:
                    cache = tmp_path / f"cache{i}" if kind in ("ipmi-sensors", "ipmi-sel") else None
                    res = freeipmi(kind, host, port, *args, cipher=3, cache=cache)
                text = res.stdout.replace(f"{host}:{port}", "HOST").replace(host, "HOST")
                outs.append(normalise(text) if normalise else text)
            assert outs[0] == outs[1], f"{kind} {' '.join(args)}:\nipmi_sim:\n{outs[0]}\nlab:\n{outs[1]}"

        # SDR, sensors and thresholds
        both("ipmitool", "sdr", "list")
        both("ipmitool", "sdr", "elist")
        both("ipmi-sensors", "--output-sensor-thresholds")
        # SEL and FRU (ipmi_sim stamps its own clock: compare all but the time columns)
        both("ipmitool", "sel", "elist",
             normalise=lambda t: "\n".join(_SEL_TIME.sub(r"\1 T |", line) for line in t.splitlines()))
        both("ipmi-sel", normalise=lambda t: "\n".join(_FREEIPMI_SEL_TIME.sub(r"\1 T | T |", line)
                                                        for line in t.splitlines()))
        both("ipmitool", "fru", "print")
        # power and chassis control
        for args in (["chassis", "power", "status"], ["chassis", "power", "off"], ["chassis", "status"],
                     ["chassis", "power", "on"], ["chassis", "power", "status"], ["chassis", "power", "reset"],
                     ["chassis", "power", "soft"], ["chassis", "power", "status"], ["chassis", "power", "cycle"],
                     ["chassis", "power", "on"], ["chassis", "power", "cycle"], ["chassis", "power", "status"]):
            both("ipmitool", *args)
        time.sleep(1.5)  # both bring a cycled server back after about a second
        both("ipmitool", "chassis", "power", "status")
        both("ipmitool", "chassis", "status")
        for args in (["--stat"], ["--off"], ["--stat"], ["--on"], ["--stat"]):
            both("ipmi-power", *args)
        both("ipmi-chassis", "--get-chassis-status")
        # boot device (ipmi_sim keeps neither the valid nor the persistent bit: LAB-NOTES)
        for device in ("pxe", "disk", "bios", "cdrom"):
            both("ipmitool", "chassis", "bootdev", device)
            both("ipmitool", "chassis", "bootparam", "get", "5",
                 normalise=lambda t: re.findall(r"Boot Device Selector : .*", t))
            both("ipmi-chassis", "--get-boot-flags")
        # identity differs on purpose (MontaVista's ids vs RFC 5612's; ipmi_sim is also an IPMB event
        # receiver, which we do not claim); the fields do not
        both("ipmitool", "mc", "info",
             normalise=lambda t: [line.split(":")[0] for line in t.splitlines() if ":" in line])


# ---------------------------------------------------------------------------------------------
# Scale: one process, a thousand BMCs, some dead
# ---------------------------------------------------------------------------------------------


@pytest.mark.peer
def test_a_thousand_bmcs_in_one_process(peers: LabProcess) -> None:
    _need("ipmi-power", "freeipmi-tools")
    count = 1000
    pairs = _block(count)
    t0 = time.monotonic()
    lab = LabProcess(_doc(pairs))
    try:
        started = time.monotonic() - t0
        ready = json.loads((lab.state / bmcserver.READY_FILE).read_text())
        base = peers.control({"op": "stats"})  # a server of 7 BMCs: the interpreter's own size
        per_bmc = (ready["rss_bytes"] - base["rss_bytes"]) / count
        assert started < 20 and per_bmc < 50_000, (started, per_bmc)
        dead = [h for h, _ in pairs[::50]]  # 2 %
        for host in dead:
            lab.control({"op": "fault", "bmc": host, "kind": "dead"})
        port = pairs[0][1]
        hosts = ",".join(h if port == 623 else f"{h}:{port}" for h, _ in pairs)
        t1 = time.monotonic()
        res = _run(["ipmi-power", "-h", hosts, "-u", "admin", "-p", PASSWORD, "-D", "LAN_2_0", "-I", "17",
                    "--session-timeout=2000", "--retransmission-timeout=250", "-F", "128", "--stat"],
                   check=False, timeout=60)
        swept = time.monotonic() - t1
        answers = dict(line.rsplit(": ", 1) for line in res.stdout.splitlines() if ": " in line)
        assert sum(v == "on" for v in answers.values()) == count - len(dead)
        assert all(answers[h] != "on" for h in dead)  # ipmi-power prints hosts without their port
        assert swept < 20, swept
        stats = lab.control({"op": "stats"})
        assert stats["sessions_opened"] >= count - len(dead) and stats["login_failures"] == 0
        print(f"\n1000 BMCs: ready in {started:.2f} s, {per_bmc / 1024:.1f} KiB/BMC, "
              f"FreeIPMI --stat sweep {swept:.2f} s with {len(dead)} dead", file=sys.stderr)
    finally:
        lab.close()
