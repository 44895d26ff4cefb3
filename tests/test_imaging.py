"""The imaging workflow on the lab: waves, canary first, evidence, failure budget, resume after a stop.

The BMCs are the lab's (power and next boot through Rackfleet's IPMI driver); the HTTP server is the
real one of ``pxe.serve`` (answer files and callbacks, with tokens); the "installers" are this test's:
a server the lab has just power-cycled gets a DHCP lease line in dnsmasq's log format (there is no DHCP
on loopback; the real dnsmasq is proven in the virtual rack test), fetches its answer file from its own
address and calls back early and late. Servers listed as silent do nothing: their DHCP step times out.
(The end-to-end proof with real firmware, dnsmasq and VMs is ``tests/test_pxe_vmrack.py``.)
"""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from pathlib import Path
from typing import Any

import pytest

from fleet import Fleet
from fleet.core.jobs import JobTracker
from fleet.errors import InputError
from fleet.lab.datacenter import start_lab, stop_lab
from fleet.workflows.imaging import allocate_addresses
from pxe.serve import PxeServer

from .sshpeer import free_port

HOSTS = [f"lab1-r01-s0{i}" for i in range(1, 6)]
MANAGER = "127.20.1.254"  # the manager on rack R01's provisioning network (the lab's pool; loopback here)


@pytest.fixture
def lab_fleet(env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The lab's one rack of five servers, imported and waiting for an OS. Set up in-process (the lab's
    library calls and the Fleet API, not ``fleet`` subprocesses: the CLI is not what these tests are about)."""
    for name in ("FLEET_DB", "FLEET_KEY_FILE", "FLEET_SECRET_KEY", "FLEET_ACTOR"):
        if name in env:
            monkeypatch.setenv(name, env[name])
    lab = tmp_path / "lab"
    start_lab(lab, racks=1, servers_per_rack=5, server_ups=False, rack_power=False, ssh=False, port=16638)
    try:
        f = Fleet.open(env["FLEET_DB"])
        f.import_files([lab / "inventory.yaml"], secrets=[lab / "secrets.yaml"])
        for host in HOSTS:  # servers waiting for an OS
            for state in ("maintenance", "ready"):
                f.set_state(host, state, reason="test")
        yield f
    finally:
        stop_lab(lab)


def _get(ip: str, port: int, path: str) -> int:
    conn = http.client.HTTPConnection(MANAGER, port, timeout=5, source_address=(ip, 0))
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


async def _installers(fleet: Fleet, root: Path, port: int, silent: set[str], stop: asyncio.Event,
                      forge: dict[str, str] | None = None) -> list[str]:
    """Play the servers: react to each power action the job records by a lease, a fetch and callbacks.
    ``forge`` maps a server to another address that sends its callbacks, with its token, while it boots."""
    served: dict[str, str] = {}
    forged: dict[str, str] = {}
    order: list[str] = []
    while not stop.is_set():
        jobs = fleet.jobs(kind="image", limit=1)
        servers = jobs[0].params.get("servers", {}) if jobs else {}
        index = json.loads((root / "hosts.json").read_text()) if (root / "hosts.json").exists() else {"hosts": []}
        by_name = {h["hostname"]: h for h in index["hosts"]}
        for host, entry in servers.items():
            since = entry.get("since")
            if forge and host in forge and entry["step"] == "booting" and forged.get(host) != since \
                    and host in by_name:
                forged[host] = since
                for phase in ("early", "late"):  # the answer file is public: its token is no secret
                    path = f"/cb/{host}/{phase}?token={by_name[host]['token']}"
                    assert await asyncio.to_thread(_get, forge[host], port, path) == 403
            if entry["step"] != "booting" or served.get(host) == since or host in silent or host not in by_name:
                continue
            served[host] = since
            order.append(host)
            h = by_name[host]
            stamp = time.strftime("%b %d %H:%M:%S", time.localtime())
            with open(root / "var" / "dnsmasq.log", "a") as log:
                log.write(f"{stamp} dnsmasq-dhcp[1]: 1 DHCPACK(br0) {h['ip']} {h['mac']} {h['short_name']}\n")
            await asyncio.sleep(0.2)
            assert await asyncio.to_thread(_get, h["ip"], port, f"/answers/{host}/preseed.cfg") == 200
            for phase in ("early", "late"):
                assert await asyncio.to_thread(_get, h["ip"], port, f"/cb/{host}/{phase}?token={h['token']}") == 200
        await asyncio.sleep(0.3)
    return order


async def _image(fleet: Fleet, root: Path, silent: set[str], *, resume: int | None = None,
                 cancel_after_deployed: int = 0, forge: dict[str, str] | None = None, **options: Any) -> Any:
    port = free_port()
    allocate_addresses(fleet.ctx, HOSTS)
    fleet.pxe_render("rack=R01", out=root, manager_url=f"http://{MANAGER}:{port}", os="debian-12")
    server = PxeServer(root, dnsmasq=False, listen=(MANAGER, port))
    await server.start()
    stop = asyncio.Event()
    players = asyncio.create_task(_installers(fleet, root, port, silent, stop, forge))
    try:
        task = asyncio.create_task(fleet.image("rack=R01", os="debian-12", root=root,
                                               manager_url=f"http://{MANAGER}:{port}", serve=False, resume=resume,
                                               **options) if resume is None else
                                   fleet.image(None, resume=resume))
        if cancel_after_deployed:
            while sum(1 for s in fleet.servers("rack=R01") if s.state == "deployed") < cancel_after_deployed:
                await asyncio.sleep(0.2)
            task.cancel()
        try:
            return await task
        except asyncio.CancelledError:
            return None
    finally:
        stop.set()
        await players
        await server.stop()
        await fleet.aclose()


def test_a_rack_is_imaged_canary_first_in_waves_and_every_server_deployed_on_evidence(lab_fleet, tmp_path) -> None:
    fleet = lab_fleet
    result = asyncio.run(_image(fleet, tmp_path / "pxe", set(), canary=1, wave=2, dhcp_timeout_s=20))
    assert result.status == "done" and result.deployed == HOSTS and result.failed == [], result.servers[HOSTS[0]]
    assert result.waves == [HOSTS[:1], HOSTS[1:3], HOSTS[3:]]
    assert {s.state for s in fleet.servers("rack=R01")} == {"deployed"}
    entry = result.servers["lab1-r01-s03"]
    assert set(entry["evidence"]) >= {"lease", "fetch", "early", "late", "power"}
    assert entry["evidence"]["fetch"].startswith("http/answers/lab1-r01-s03/preseed.cfg by 127.20.1.")
    history = fleet.history("lab1-r01-s03")
    assert [h.to_state for h in history][-2:] == ["deploying", "deployed"]
    assert "late callback" in history[-1].reason
    audit = {a.action for a in fleet.audit(limit=500)}
    assert {"ip.allocate", "pxe.render", "bootdev", "power.cycle", "pxe.lease", "pxe.callback"} <= audit
    job = fleet.jobs(kind="image")[0]
    assert (job.status, job.done, job.failed) == ("done", 5, 0)
    assert [w["deployed"] for w in job.result["waves"]] == [1, 2, 2]


def test_a_failed_canary_stops_the_job_before_any_other_server_is_touched(lab_fleet, tmp_path) -> None:
    fleet = lab_fleet
    result = asyncio.run(_image(fleet, tmp_path / "pxe", {HOSTS[0]}, canary=1, wave=4, dhcp_timeout_s=4))
    assert result.status == "failed" and "canary" in result.stopped
    assert result.failed == [HOSTS[0]] and "no DHCP lease for 02:fb:00:00:00:01 within 4 s" in \
        result.servers[HOSTS[0]]["reason"]
    states = {s.hostname: s.state for s in fleet.servers("rack=R01")}
    assert states[HOSTS[0]] == "failed" and all(states[h] == "ready" for h in HOSTS[1:])
    assert all(result.servers[h]["step"] == "pending" for h in HOSTS[1:])


def test_a_forged_callback_from_another_address_is_refused_and_does_not_move_the_server(lab_fleet, tmp_path) -> None:
    fleet = lab_fleet
    # the canary does not boot; someone else sends its early and late callbacks, with its token
    result = asyncio.run(_image(fleet, tmp_path / "pxe", {HOSTS[0]}, canary=1, wave=4, dhcp_timeout_s=4,
                                forge={HOSTS[0]: "127.20.1.250"}))
    assert result.failed == [HOSTS[0]] and "no DHCP lease" in result.servers[HOSTS[0]]["reason"]
    assert not {"early", "late"} & set(result.servers[HOSTS[0]]["evidence"])
    assert {s.hostname: s.state for s in fleet.servers(HOSTS[:1])} == {HOSTS[0]: "failed"}
    refused = [a for a in fleet.audit(action="pxe.callback", limit=50) if HOSTS[0] in a.targets]
    assert len(refused) == 2 and all(a.result == "failed" for a in refused)
    assert {(a.detail["reason"], a.detail["ip"]) for a in refused} == {("wrong-address", "127.20.1.250")}


def test_failures_past_the_budget_hold_the_next_wave_back(lab_fleet, tmp_path) -> None:
    fleet = lab_fleet
    silent = {HOSTS[1], HOSTS[2]}  # both in the second wave
    result = asyncio.run(_image(fleet, tmp_path / "pxe", silent, canary=1, wave=2, failure_budget=1,
                                   dhcp_timeout_s=4))
    assert result.deployed == [HOSTS[0]] and result.failed == sorted(silent)
    assert "over the budget of 1" in result.stopped
    assert {s.hostname: s.state for s in fleet.servers(HOSTS[3:])} == {h: "ready" for h in HOSTS[3:]}


def test_a_stopped_job_resumes_where_it_was_and_leaves_finished_servers_alone(lab_fleet, tmp_path) -> None:
    fleet = lab_fleet
    root = tmp_path / "pxe"
    first = asyncio.run(_image(fleet, root, set(), canary=1, wave=2, dhcp_timeout_s=20, cancel_after_deployed=1))
    assert first is None
    job = fleet.jobs(kind="image")[0]
    assert job.status == "cancelled" and job.params["servers"][HOSTS[0]]["step"] == "deployed"
    cycles_before = sum(1 for a in fleet.audit(action="power.cycle", limit=100) if HOSTS[0] in a.targets)
    with JobTracker(fleet.ctx, "sweep", "") as other:
        pass
    with pytest.raises(InputError, match="not an image job"):
        asyncio.run(fleet.image(None, resume=other.id))
    result = asyncio.run(_image(fleet, root, set(), resume=job.id))
    assert result.job_id == job.id and result.status == "done" and result.deployed == HOSTS
    assert sum(1 for a in fleet.audit(action="power.cycle", limit=100) if HOSTS[0] in a.targets) == cycles_before


def test_servers_in_service_are_refused_without_reimage_and_nothing_is_touched(lab_fleet, tmp_path) -> None:
    fleet = lab_fleet
    fleet.set_state(HOSTS[0], "deploying", reason="test")
    fleet.set_state(HOSTS[0], "deployed", reason="test")
    with pytest.raises(InputError, match=r"lab1-r01-s01: deployed \(use --reimage"):
        asyncio.run(fleet.image("rack=R01", os="debian-12", root=tmp_path / "pxe", manager_url="http://127.0.0.1:9"))
    assert not (tmp_path / "pxe").exists() and fleet.jobs(kind="image") == []
