"""The lab's Redfish responder (fleet/lab/redfish): sessions, power with a delay, boot overrides with
ETags, the SEL as a LogService, faults, one state shared with IPMI, and the standard.

The lab BMC server runs as a process (``python -m fleet.lab.bmcserver --redfish-port 0``) serving
three lab servers: ``rf1`` speaks IPMI and Redfish with the default profile; ``rf2`` is Redfish-only,
answers a reset with 202 and a task, and wants If-Match; ``rf3`` has no sessions (Basic only, as
sushy-tools), weak ETags and no PowerCycle. Clients verify TLS: against the lab certificate as a CA
bundle, or by its pinned SHA-256 fingerprint. Independent clients: plain aiohttp, ``sushy`` (the
library Ironic drives Redfish with), ``ipmitool`` for the IPMI side, and DMTF's
``rf_protocol_validator``. The server is stopped by its PID.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import hashlib
import json
import os
import random
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from fleet.drivers.redfish.tls import fingerprint_of as fingerprint
from fleet.lab import bmcserver
from fleet.lab.bmcserver import LabServer, LabStartError, lab_control
from fleet.lab.bmcspec import parse_spec
from fleet.lab.redfish import RedfishProfile
from fleet.lab.redfish.lab import inventory_endpoints, read_state

from .peers import missing_peer

PASSWORD = "rf-lab-pw"
DELAY = 0.4  # seconds between an accepted reset and the power change
V1 = "/redfish/v1"
#: What DMTF's protocol validator checks that the lab knowingly does not meet, and why.
KNOWN_VALIDATOR_FAILS = {
    # aiohttp's HTTP parser (llhttp) refuses a request line with an unknown method with 400 before the
    # application sees it; the validator wants 405 or 501 for "FAKEMETHODFORTEST".
    ("PROTO_HTTP_UNSUPPORTED_METHODS", "FAKEMETHODFORTEST"),
}


def _block() -> tuple[list[str], int]:
    for _ in range(50):
        base = f"127.{random.randrange(60, 160)}.{random.randrange(0, 250)}"
        hosts = [f"{base}.{i}" for i in (1, 2, 3)]
        port = random.randrange(20000, 60000)
        try:
            for host in hosts:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.bind((host, port))
        except OSError:
            continue
        return hosts, port
    raise RuntimeError("no free loopback block")


@pytest.fixture(scope="module")
def lab() -> Iterator[dict[str, Any]]:
    hosts, port = _block()
    common = {"power_delay": DELAY}
    doc = {"defaults": {"username": "admin", "password": PASSWORD, "port": port, "power_on_delay": 0.0},
           "bmcs": [
               {"name": "rf1", "host": hosts[0], "redfish": common, "macs": ["02:fb:00:00:00:01"]},
               {"name": "rf2", "host": hosts[1], "ipmi": False, "cold_reset_seconds": 1.0,
                "redfish": {**common, "reset_reply": 202, "require_if_match": True}},
               {"name": "rf3", "host": hosts[2], "redfish": {**common, "sessions": False, "weak_etags": True,
                                                            "reset_types": ["On", "ForceOff", "ForceRestart"]}},
           ]}
    tmp = Path(tempfile.mkdtemp(prefix="rflab-"))
    (tmp / "spec.json").write_text(json.dumps(doc))
    state = tmp / "state"
    pid = bmcserver.start(tmp / "spec.json", state, extra_args=["--redfish-port", "0"], timeout=60)
    try:
        rf = read_state(state)
        assert rf is not None
        yield {"state": state, "rf": rf, "ipmi_port": port, "hosts": hosts,
               "base": {ep["name"]: f"https://{ep['host']}:{ep['port']}" for ep in rf["endpoints"]},
               "ctx": ssl.create_default_context(cafile=rf["ca_file"])}
    finally:
        bmcserver.stop(state, pid=pid)
        assert read_state(state) is None  # a stopped lab names no Redfish endpoints
        shutil.rmtree(tmp, ignore_errors=True)


def _basic() -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode()}


class Client:
    """A small Redfish client on one aiohttp session (TLS verified against the lab CA file)."""

    def __init__(self, lab: dict[str, Any], name: str, session: aiohttp.ClientSession) -> None:
        self.base = lab["base"][name]
        self.ctx = lab["ctx"]
        self.http = session
        self.headers: dict[str, str] = {}

    async def login(self) -> aiohttp.ClientResponse:
        async with self.http.post(self.base + f"{V1}/SessionService/Sessions", ssl=self.ctx,
                                  json={"UserName": "admin", "Password": PASSWORD}) as resp:
            await resp.read()
            if resp.status == 201:
                self.headers = {"X-Auth-Token": resp.headers["X-Auth-Token"]}
            return resp

    async def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                   timeout: float = 10.0) -> tuple[int, Any, Any]:
        async with self.http.request(method, self.base + path, json=body, ssl=self.ctx,
                                     headers={**self.headers, **(headers or {})},
                                     timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            raw = await resp.read()
            return resp.status, (json.loads(raw) if raw and resp.content_type == "application/json" else raw), \
                resp.headers


def run(lab: dict[str, Any], name: str, fn: Any) -> Any:
    async def main() -> Any:
        async with aiohttp.ClientSession() as http:
            return await fn(Client(lab, name, http))
    return asyncio.run(main())


async def _wait_power(c: Client, system: str, want: str, timeout: float = 10.0) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        _, body, _ = await c.call("GET", f"{V1}/Systems/{system}")
        if body["PowerState"] == want:
            return time.monotonic() - t0
        await asyncio.sleep(0.05)
    raise AssertionError(f"{system} not {want} within {timeout} s")


# ---------------------------------------------------------------------------------------------


def test_profiles_are_checked() -> None:
    assert RedfishProfile.from_dict({"reset_types": ["On"]}).reset_types == ("On",)
    with pytest.raises(ValueError, match="unknown Redfish profile key"):
        RedfishProfile.from_dict({"sessionz": True})
    with pytest.raises(ValueError, match="PowerSpin"):
        RedfishProfile.from_dict({"reset_types": ["PowerSpin"]})
    with pytest.raises(Exception, match="needs Redfish"):
        parse_spec({"bmcs": [{"name": "x", "host": "127.0.0.9", "ipmi": False}]})
    hosts, port = _block()
    specs, sets = parse_spec({"bmcs": [{"name": "x", "host": hosts[0], "port": port, "redfish": {"sessionz": 1}}]})
    with tempfile.TemporaryDirectory() as tmp, pytest.raises(LabStartError, match="x: not a Redfish profile"):
        asyncio.run(LabServer(specs, sets, Path(tmp), redfish_port=0).start())


def test_state_file_names_the_certificate_every_client_sees(lab: dict[str, Any]) -> None:
    rf = lab["rf"]
    assert rf["tls_fingerprint"].startswith("sha256:") and len(rf["tls_fingerprint"]) == 71
    assert {ep["name"] for ep in rf["endpoints"]} == {"rf1", "rf2", "rf3"}
    assert all(ep["host"] in lab["hosts"] and ep["system"] == f"{V1}/Systems/{ep['name']}" for ep in rf["endpoints"])
    for ep in rf["endpoints"]:  # the DER certificate each address presents is the one pinned
        with socket.create_connection((ep["host"], ep["port"]), timeout=5) as raw, \
                lab["ctx"].wrap_socket(raw, server_hostname=ep["host"]) as tls:
            assert fingerprint(tls.getpeercert(binary_form=True)) == rf["tls_fingerprint"]
    endpoints = inventory_endpoints(rf, "lab-bmc")
    assert endpoints["rf2"]["credential_kind"] == "redfish" and endpoints["rf2"]["tls_fingerprint"] == \
        rf["tls_fingerprint"]

    async def pinned(c: Client) -> int:  # verification by the pinned fingerprint alone, as the driver does it
        digest = bytes.fromhex(rf["tls_fingerprint"].removeprefix("sha256:"))
        async with c.http.get(c.base + f"{V1}/", ssl=aiohttp.Fingerprint(digest)) as resp:
            return resp.status
    assert run(lab, "rf1", pinned) == 200

    async def wrong_pin(c: Client) -> None:
        async with c.http.get(c.base + f"{V1}/", ssl=aiohttp.Fingerprint(hashlib.sha256(b"x").digest())):
            pass
    with pytest.raises(aiohttp.ServerFingerprintMismatch):
        run(lab, "rf1", wrong_pin)


def test_sessions_login_logout_and_401(lab: dict[str, Any]) -> None:
    async def go(c: Client) -> None:
        status, root, _ = await c.call("GET", f"{V1}/")  # the service root needs no credentials
        assert status == 200 and root["Links"]["Sessions"]["@odata.id"] == f"{V1}/SessionService/Sessions"
        status, body, headers = await c.call("GET", f"{V1}/Systems")
        assert status == 401 and body["error"]["@Message.ExtendedInfo"][0]["MessageId"].endswith("NoValidSession")
        assert headers["WWW-Authenticate"].startswith("Basic")
        bad = await c.call("POST", f"{V1}/SessionService/Sessions", {"UserName": "admin", "Password": "nope"})
        assert bad[0] == 401
        resp = await c.login()
        assert resp.status == 201 and resp.headers["Location"].startswith(f"{V1}/SessionService/Sessions/")
        status, body, _ = await c.call("GET", f"{V1}/Systems")
        assert status == 200 and body["Members"] == [{"@odata.id": f"{V1}/Systems/rf1"}]
        assert (await c.call("GET", resp.headers["Location"]))[1]["UserName"] == "admin"
        assert (await c.call("DELETE", resp.headers["Location"]))[0] == 204
        assert (await c.call("GET", f"{V1}/Systems"))[0] == 401  # the token is gone
        c.headers = _basic()
        assert (await c.call("GET", f"{V1}/Systems/rf1"))[0] == 200
    run(lab, "rf1", go)

    async def basic_only(c: Client) -> None:  # rf3: no SessionService, Basic only
        assert (await c.login()).status == 404
        _, root, _ = await c.call("GET", f"{V1}/")
        assert "SessionService" not in root
        c.headers = _basic()
        assert (await c.call("GET", f"{V1}/Systems/rf3"))[0] == 200
    run(lab, "rf3", basic_only)


def test_power_changes_after_the_delay_and_ipmi_sees_it(lab: dict[str, Any]) -> None:
    async def go(c: Client) -> None:
        await c.login()
        _, system, _ = await c.call("GET", f"{V1}/Systems/rf1")
        action = system["Actions"]["#ComputerSystem.Reset"]
        assert "PowerCycle" in action["ResetType@Redfish.AllowableValues"]
        assert system["PowerState"] == "On"
        t0 = time.monotonic()
        status, _, _ = await c.call("POST", action["target"], {"ResetType": "ForceOff"})
        assert status == 204
        assert (await c.call("GET", f"{V1}/Systems/rf1"))[1]["PowerState"] == "On"  # accepted, not done
        await _wait_power(c, "rf1", "Off")
        assert time.monotonic() - t0 >= DELAY * 0.9
    run(lab, "rf1", go)
    assert lab_control(lab["state"], {"op": "get", "bmc": "rf1"})["bmc"]["power"] == "off"
    ipmitool = shutil.which("ipmitool")
    if ipmitool is None:
        missing_peer("ipmitool is not installed")
    host = lab["hosts"][0]
    cmd = [ipmitool, "-I", "lanplus", "-C", "17", "-H", host, "-p", str(lab["ipmi_port"]), "-U", "admin",
           "-P", PASSWORD, "-N", "1", "-R", "3", "chassis", "power"]
    assert subprocess.run([*cmd, "status"], capture_output=True, text=True, timeout=30).stdout.strip() == \
        "Chassis Power is off"
    subprocess.run([*cmd, "on"], capture_output=True, text=True, timeout=30, check=True)  # IPMI on: Redfish sees it

    async def back_on(c: Client) -> None:
        c.headers = _basic()
        await _wait_power(c, "rf1", "On")
    run(lab, "rf1", back_on)


def test_202_with_a_task_monitor(lab: dict[str, Any]) -> None:
    async def go(c: Client) -> None:
        await c.login()
        status, task, headers = await c.call("POST", f"{V1}/Systems/rf2/Actions/ComputerSystem.Reset",
                                             {"ResetType": "GracefulShutdown"})
        assert status == 202 and task["TaskState"] == "Running" and headers["Retry-After"] == "1"
        monitor = headers["Location"]
        assert (await c.call("GET", monitor))[0] == 202
        t0 = time.monotonic()
        while (await c.call("GET", monitor))[0] == 202:
            assert time.monotonic() - t0 < 10
            await asyncio.sleep(0.05)
        assert (await c.call("GET", f"{V1}/TaskService/Tasks/{task['Id']}"))[1]["TaskState"] == "Completed"
        assert (await c.call("GET", f"{V1}/Systems/rf2"))[1]["PowerState"] == "Off"
        status, _, _ = await c.call("POST", f"{V1}/Systems/rf2/Actions/ComputerSystem.Reset", {"ResetType": "On"})
        assert status == 202
        await _wait_power(c, "rf2", "On")
    run(lab, "rf2", go)


def test_boot_override_with_etags(lab: dict[str, Any]) -> None:
    async def go(c: Client) -> None:
        await c.login()
        path = f"{V1}/Systems/rf1"
        _, system, headers = await c.call("GET", path)
        tag = headers["ETag"]
        assert not tag.startswith("W/")
        assert system["Boot"]["BootSourceOverrideTarget@Redfish.AllowableValues"][:3] == ["None", "Pxe", "Hdd"]
        want = {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once",
                "BootSourceOverrideMode": "UEFI"}
        status, body, _ = await c.call("PATCH", path, {"Boot": want}, {"If-Match": '"not-the-etag"'})
        assert status == 412 and body["error"]["@Message.ExtendedInfo"][0]["MessageId"].endswith("PreconditionFailed")
        assert (await c.call("GET", path))[1]["Boot"]["BootSourceOverrideTarget"] == "None"  # not applied
        status, body, headers = await c.call("PATCH", path, {"Boot": want}, {"If-Match": tag})
        assert status == 200 and {k: body["Boot"][k] for k in want} == want
        assert headers["ETag"] != tag
        assert (await c.call("PATCH", path, {"Boot": want}, {"If-Match": tag}))[0] == 412  # the old tag is stale
        status, body, _ = await c.call("PATCH", path, {"Boot": {"BootSourceOverrideTarget": "Usb"}})
        assert status == 400 and "PropertyValueNotInList" in body["error"]["code"]
        assert (await c.call("PATCH", path, {"PowerState": "Off"}))[0] == 400
        # Continuous, then UefiHttp (a network boot on the IPMI side), then off again
        status, body, _ = await c.call("PATCH", path, {"Boot": {"BootSourceOverrideTarget": "UefiHttp",
                                                                "BootSourceOverrideEnabled": "Continuous"}})
        assert status == 200 and body["Boot"]["BootSourceOverrideTarget"] == "UefiHttp"
    run(lab, "rf1", go)
    boot = lab_control(lab["state"], {"op": "get", "bmc": "rf1"})["bmc"]["boot"]
    assert boot == {"device": "pxe", "valid": True, "persistent": True, "uefi": True}

    async def once_is_consumed(c: Client) -> None:
        c.headers = _basic()
        path = f"{V1}/Systems/rf1"
        assert (await c.call("PATCH", path, {"Boot": {"BootSourceOverrideTarget": "Cd",
                                                      "BootSourceOverrideEnabled": "Once"}}))[0] == 200
        await c.call("POST", f"{path}/Actions/ComputerSystem.Reset", {"ResetType": "ForceRestart"})
        t0 = time.monotonic()
        while (await c.call("GET", path))[1]["Boot"]["BootSourceOverrideEnabled"] != "Disabled":
            assert time.monotonic() - t0 < 5, "a one-time override outlived the boot"
            await asyncio.sleep(0.05)
    run(lab, "rf1", once_is_consumed)
    assert lab_control(lab["state"], {"op": "get", "bmc": "rf1"})["bmc"]["last_boot"] == "cdrom"

    async def needs_if_match(c: Client) -> None:  # rf2 wants If-Match
        await c.login()
        path = f"{V1}/Systems/rf2"
        assert (await c.call("PATCH", path, {"Boot": {"BootSourceOverrideTarget": "Hdd"}}))[0] == 428
        _, _, headers = await c.call("GET", path)
        assert (await c.call("PATCH", path, {"Boot": {"BootSourceOverrideTarget": "Hdd"}},
                             {"If-Match": headers["ETag"]}))[0] == 200
    run(lab, "rf2", needs_if_match)

    async def weak_etags(c: Client) -> None:  # rf3 serves weak ETags: sending one back fails, none succeeds
        c.headers = _basic()
        path = f"{V1}/Systems/rf3"
        _, _, headers = await c.call("GET", path)
        assert headers["ETag"].startswith('W/"')
        assert (await c.call("PATCH", path, {"Boot": {"BootSourceOverrideTarget": "Pxe"}},
                             {"If-Match": headers["ETag"]}))[0] == 412
        assert (await c.call("PATCH", path, {"Boot": {"BootSourceOverrideTarget": "Pxe"}}))[0] == 200
    run(lab, "rf3", weak_etags)


def test_sel_entries_follow_the_lab_faults(lab: dict[str, Any]) -> None:
    async def entries(c: Client) -> list[dict[str, Any]]:
        c.headers = _basic()
        _, body, _ = await c.call("GET", f"{V1}/Managers/rf1/LogServices/SEL/Entries")
        return body["Members"]

    before = run(lab, "rf1", entries)
    assert lab_control(lab["state"], {"op": "fault", "bmc": "rf1", "kind": "ecc"})["ok"]
    assert lab_control(lab["state"], {"op": "fault", "bmc": "rf1", "kind": "sensor-critical",
                                      "value": "CPU1 Temp"})["ok"]
    after = run(lab, "rf1", entries)
    ecc, hot = after[len(before):]
    assert (ecc["SensorType"], ecc["Severity"], ecc["EntryCode"]) == ("Memory", "Critical", "Assert")
    assert "Uncorrectable ECC" in ecc["Message"]
    assert (hot["SensorType"], hot["EntryCode"], hot["Severity"]) == ("Temperature", "Upper Critical - going high",
                                                                      "Critical")
    assert hot["Message"].startswith("CPU1 Temp") and hot["Created"].endswith("+00:00")

    async def health_and_clear(c: Client) -> None:
        c.headers = _basic()
        _, thermal, _ = await c.call("GET", f"{V1}/Chassis/rf1/Thermal")
        cpu1 = next(t for t in thermal["Temperatures"] if t["Name"] == "CPU1 Temp")
        assert cpu1["Status"]["Health"] == "Critical" and cpu1["ReadingCelsius"] >= cpu1["UpperThresholdCritical"]
        _, sensor, _ = await c.call("GET", f"{V1}/Chassis/rf1/Sensors/CPU1Temp")
        assert sensor["Status"]["Health"] == "Critical" and sensor["ReadingUnits"] == "Cel"
        _, system, _ = await c.call("GET", f"{V1}/Systems/rf1")
        assert system["Status"]["Health"] == "Critical"
        _, service, _ = await c.call("GET", f"{V1}/Managers/rf1/LogServices/SEL")
        assert (await c.call("POST", service["Actions"]["#LogService.ClearLog"]["target"], {}))[0] == 204
        assert (await c.call("GET", f"{V1}/Managers/rf1/LogServices/SEL/Entries"))[1]["Members"] == []
    run(lab, "rf1", health_and_clear)
    state = lab_control(lab["state"], {"op": "get", "bmc": "rf1"})["bmc"]
    assert state["sel_entries"] == 0  # IPMI's SEL is the same one
    lab_control(lab["state"], {"op": "fault", "bmc": "rf1", "kind": "sensor-critical", "value": "CPU1 Temp",
                               "clear": True})
    lab_control(lab["state"], {"op": "fault", "bmc": "rf1", "kind": "ecc", "clear": True})


def test_sensors_power_and_inventory(lab: dict[str, Any]) -> None:
    async def go(c: Client) -> None:
        c.headers = _basic()
        _, chassis, _ = await c.call("GET", f"{V1}/Chassis/rf1")
        _, power, _ = await c.call("GET", chassis["Power"]["@odata.id"])
        assert power["PowerControl"][0]["PowerConsumedWatts"] > 0 and power["Voltages"][0]["Name"] == "12V"
        _, sensors, _ = await c.call("GET", chassis["Sensors"]["@odata.id"])
        ids = [m["@odata.id"].rsplit("/", 1)[1] for m in sensors["Members"]]
        assert ids == ["CPU1Temp", "CPU2Temp", "InletTemp", "FAN1", "FAN2", "PSU1Power", "12V"]
        _, fan, _ = await c.call("GET", f"{V1}/Chassis/rf1/Sensors/FAN1")
        assert fan["ReadingType"] == "Rotational" and fan["Reading"] > 1000
        _, nic, _ = await c.call("GET", f"{V1}/Systems/rf1/EthernetInterfaces/eth0")
        assert nic["MACAddress"] == "02:fb:00:00:00:01"
        _, mgr, _ = await c.call("GET", f"{V1}/Managers/rf1")
        assert mgr["Links"]["ManagerForServers"] == [{"@odata.id": f"{V1}/Systems/rf1"}]
    run(lab, "rf1", go)


def test_errors_are_redfish_errors(lab: dict[str, Any]) -> None:
    async def go(c: Client) -> None:
        c.headers = _basic()
        reset = f"{V1}/Systems/rf3/Actions/ComputerSystem.Reset"
        status, body, _ = await c.call("POST", reset, {"ResetType": "PowerCycle"})  # rf3 has no PowerCycle
        assert status == 400 and "ActionParameterValueNotInList" in body["error"]["code"]
        assert (await c.call("POST", reset, {}))[0] == 400
        async with c.http.post(c.base + reset, data=b"{not json", ssl=c.ctx, headers=c.headers) as resp:
            assert resp.status == 400 and "MalformedJSON" in (await resp.json())["error"]["code"]
        status, _, headers = await c.call("DELETE", f"{V1}/Systems/rf3")
        assert status == 405 and headers["Allow"] == "GET, HEAD, PATCH"
        assert (await c.call("GET", f"{V1}/Systems/nope"))[0] == 404
        assert (await c.call("GET", f"{V1}/Systems?$expand=.", None))[0] == 501
    run(lab, "rf3", go)


def test_faults_act_on_redfish_too(lab: dict[str, Any]) -> None:
    state = lab["state"]

    async def wrong_password(c: Client) -> None:
        await c.login()
        assert (await c.call("GET", f"{V1}/Systems/rf1"))[0] == 200
        lab_control(state, {"op": "fault", "bmc": "rf1", "kind": "wrong-password"})
        try:
            assert (await c.call("GET", f"{V1}/Systems/rf1"))[0] == 401  # the session ends
            assert (await c.login()).status == 401
        finally:
            lab_control(state, {"op": "fault", "bmc": "rf1", "kind": "wrong-password", "clear": True})
        assert (await c.login()).status == 201

    async def dead_and_slow(c: Client) -> None:
        c.headers = _basic()
        lab_control(state, {"op": "fault", "bmc": "rf1", "kind": "dead"})
        try:
            with pytest.raises(asyncio.TimeoutError):
                await c.call("GET", f"{V1}/Systems/rf1", timeout=0.5)
        finally:
            lab_control(state, {"op": "fault", "bmc": "rf1", "kind": "dead", "clear": True})
        lab_control(state, {"op": "fault", "bmc": "rf1", "kind": "slow", "value": 300})
        try:
            t0 = time.monotonic()
            assert (await c.call("GET", f"{V1}/Systems/rf1"))[0] == 200
            assert time.monotonic() - t0 >= 0.3
        finally:
            lab_control(state, {"op": "fault", "bmc": "rf1", "kind": "slow", "clear": True})
    run(lab, "rf1", wrong_password)
    run(lab, "rf1", dead_and_slow)


def test_redfish_only_server_has_no_ipmi(lab: dict[str, Any]) -> None:
    from fleet.lab import rmcp

    ping = rmcp.build_asf_ping(7)
    answers = {}
    for name, host in (("rf1", lab["hosts"][0]), ("rf2", lab["hosts"][1])):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.3)
            s.sendto(ping, (host, lab["ipmi_port"]))
            try:
                answers[name] = bool(s.recv(512))
            except (TimeoutError, ConnectionRefusedError):
                answers[name] = False
    assert answers == {"rf1": True, "rf2": False}


def test_manager_reset_goes_dark_and_ends_sessions(lab: dict[str, Any]) -> None:
    async def go(c: Client) -> None:
        await c.login()
        assert (await c.call("POST", f"{V1}/Managers/rf2/Actions/Manager.Reset", {"ResetType": "ForceRestart"}))[0] \
            == 204
        with pytest.raises((aiohttp.ClientError, asyncio.TimeoutError)):
            await c.call("GET", f"{V1}/Systems/rf2", timeout=2)
        t0 = time.monotonic()
        while True:  # back after cold_reset_seconds (1 s)
            try:
                status = (await c.call("GET", f"{V1}/Systems/rf2", timeout=2))[0]
                break
            except aiohttp.ClientError:
                assert time.monotonic() - t0 < 10
                await asyncio.sleep(0.2)
        assert status == 401  # sessions did not survive the reset
    run(lab, "rf2", go)


def test_sushy_drives_the_lab(lab: dict[str, Any]) -> None:
    try:
        import sushy
    except ImportError:
        missing_peer("sushy is not installed (pip install sushy)")
    from sushy import auth as sushy_auth

    auth = sushy_auth.SessionAuth("admin", PASSWORD)  # sushy logs in through our SessionService
    root = sushy.Sushy(lab["base"]["rf1"] + V1, auth=auth, verify=lab["rf"]["ca_file"])
    try:
        assert auth.get_session_resource_id().startswith(f"{V1}/SessionService/Sessions/")
        system = root.get_system(f"{V1}/Systems/rf1")
        assert system.power_state == sushy.SYSTEM_POWER_STATE_ON
        assert sushy.RESET_FORCE_RESTART in system.get_allowed_reset_system_values()
        system.set_system_boot_options(sushy.BOOT_SOURCE_TARGET_PXE, enabled=sushy.BOOT_SOURCE_ENABLED_ONCE,
                                       mode=sushy.BOOT_SOURCE_MODE_UEFI)
        system.refresh()
        assert (system.boot.target, system.boot.enabled, system.boot.mode) == (
            sushy.BOOT_SOURCE_TARGET_PXE, sushy.BOOT_SOURCE_ENABLED_ONCE, sushy.BOOT_SOURCE_MODE_UEFI)
        assert [m.mac_address for m in system.ethernet_interfaces.get_members()] == ["02:fb:00:00:00:01"]
        manager = root.get_manager(f"{V1}/Managers/rf1")
        assert manager.manager_type == sushy.MANAGER_TYPE_BMC
        chassis = root.get_chassis(f"{V1}/Chassis/rf1")
        assert {t.name for t in chassis.thermal.temperatures} >= {"CPU1 Temp", "Inlet Temp"}
    finally:
        auth.close()  # DELETE of the session


def test_protocol_validator_passes(lab: dict[str, Any], tmp_path: Path) -> None:
    validator = shutil.which("rf_protocol_validator") or str(Path(os.sys.executable).with_name("rf_protocol_validator"))
    if not Path(validator).exists():
        missing_peer("DMTF's redfish-protocol-validator is not installed (pip install redfish-protocol-validator)")
    ca = lab["rf"]["ca_file"]
    # requests takes REQUESTS_CA_BUNDLE over a session's own verify: point both at the lab certificate.
    env = {**os.environ, "REQUESTS_CA_BUNDLE": ca, "CURL_CA_BUNDLE": ca}
    proc = subprocess.run([validator, "-r", lab["base"]["rf1"], "-u", "admin", "-p", PASSWORD, "--ca-bundle", ca,
                           "--avoid-http-redirect", "--report-type", "tsv", "--report-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    reports = list(tmp_path.glob("*.tsv"))
    assert reports, proc.stdout + proc.stderr
    with reports[0].open() as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    fails = {(r["Assertion"], r["Method"]) for r in rows if r["Result"] == "FAIL"}
    unexpected = fails - KNOWN_VALIDATOR_FAILS
    assert not unexpected, "\n".join(f"{r['Assertion']} {r['Method']} {r['URI']}: {r['Message']}" for r in rows
                                     if (r["Assertion"], r["Method"]) in unexpected)
    assert sum(r["Result"] == "PASS" for r in rows) >= 250


def test_fleet_lab_start_writes_the_redfish_side(tmp_path: Path) -> None:
    from fleet.lab.datacenter import lab_redfish_endpoints, start_lab, stop_lab

    port = _block()[1]
    info = start_lab(tmp_path, racks=1, servers_per_rack=2, port=port, server_ups=False, rack_power=False,
                     ssh=False, redfish=True)
    try:
        lab_json = json.loads((tmp_path / "lab.json").read_text())
        assert lab_json["redfish"] == info.redfish and info.redfish["port"] == port
        assert info.redfish["credential"] == "lab-redfish" and info.redfish["servers"] == 2
        endpoints = lab_redfish_endpoints(tmp_path)
        assert sorted(endpoints) == ["lab1-r01-s01", "lab1-r01-s02"]
        first = endpoints["lab1-r01-s01"]
        assert first["tls_fingerprint"] == info.redfish["tls_fingerprint"] and first["port"] == port
        ctx = ssl.create_default_context(cafile=info.redfish["ca_file"])
        with socket.create_connection((first["host"], port), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname=first["host"]) as tls:  # host name checked: an IP SAN
            assert fingerprint(tls.getpeercert(binary_form=True)) == first["tls_fingerprint"]
        inventory = (tmp_path / "inventory.yaml").read_text()
        mac = "02:fb:00:00:00:01"
        assert mac in inventory
        # Both servers speak both protocols (REDFISH_MIX), their Redfish endpoint pinned to the certificate.
        assert inventory.count(f"redfish_tls_fingerprint: {first['tls_fingerprint']}") == 2
        assert inventory.count("redfish_credential: lab-redfish") == 2
        assert inventory.count("bmc_credential: lab-bmc") == 2

        async def nic(c: Client) -> str:
            async with c.http.get(f"https://{first['host']}:{port}{first['system']}/EthernetInterfaces/eth0",
                                  ssl=ctx, headers=_basic_for(tmp_path)) as resp:
                return (await resp.json())["MACAddress"]
        assert run({"base": {"x": ""}, "ctx": ctx}, "x", nic) == mac  # the MAC the inventory holds
    finally:
        stop_lab(tmp_path)


def _basic_for(root: Path) -> dict[str, str]:
    import yaml

    cred = next(c for c in yaml.safe_load((root / "secrets.yaml").read_text())["credentials"]
                if c["name"] == "lab-redfish")
    return {"Authorization": "Basic " + base64.b64encode(f"{cred['username']}:{cred['secret']}".encode()).decode()}


def test_one_shared_address_serves_every_system(tmp_path: Path) -> None:
    from fleet.lab.bmcmodel import BmcModel
    from fleet.lab.redfish import RedfishResponder, make_certificate

    hosts, _ = _block()
    specs, sets = parse_spec({"defaults": {"username": "admin", "password": PASSWORD, "port": 6623},
                              "bmcs": [{"name": f"s{i}", "host": h} for i, h in enumerate(hosts)]})
    models = [BmcModel(s, sets[s.sensors]) for s in specs]
    cert = make_certificate(tmp_path, [hosts[0]])

    async def go() -> None:
        responder = RedfishResponder(models, cert, port=0, shared=hosts[0], profile=RedfishProfile(power_delay=0))
        await responder.start()
        try:
            assert len({(ep["host"], ep["port"]) for ep in responder.endpoints}) == 1
            base = f"https://{hosts[0]}:{responder.endpoints[0]['port']}"
            ctx = ssl.create_default_context(cafile=str(cert.cert_file))
            async with aiohttp.ClientSession(headers=_basic()) as http:
                async with http.get(base + f"{V1}/Systems", ssl=ctx) as resp:
                    members = [m["@odata.id"] for m in (await resp.json())["Members"]]
                assert members == [f"{V1}/Systems/s{i}" for i in range(3)]
                async with http.post(base + f"{V1}/Systems/s2/Actions/ComputerSystem.Reset", ssl=ctx,
                                     json={"ResetType": "ForceOff"}) as resp:
                    assert resp.status == 204
                await asyncio.sleep(0.05)
                assert [m.powered() for m in models] == [True, True, False]
        finally:
            await responder.aclose()
    asyncio.run(go())
