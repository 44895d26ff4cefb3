"""Decommissioning: drain, wipe every disk over SSH, a certificate per disk, then retired; refusals.

Real peers: OpenSSH's sshd runs the wipe script with the system's own tools (lsblk, blkdiscard, dd)
against a loop device backed by a file filled with data; the file must read back as zeros. The lab
test drives the CLI end to end: its servers' "OS" answers the wipe as an SSD (discard) and a hard disk
(overwrite), and a failing wipe keeps the server out of ``retired`` (`fleet decommission`, `wipe-certificates`
and `power` as the installed script; the lab, the import and `list` the same CLI in this process).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update

from fleet import Fleet
from fleet.errors import InputError
from fleet.lab.sshlab import ssh_lab_available
from fleet.workflows.decommission import parse_wipe_output
from inventory.models import Server, WipeCertificate

from .clihelp import fleet as fleet_cli
from .clihelp import fleet_in_process as here
from .factory import Spec, build
from .peers import missing_peer
from .sshpeer import ssh_peer

SIZE = 16 * 1024 * 1024


@pytest.fixture
def loop_disk(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A loop device over a 16 MiB file of non-zero bytes; detached afterwards."""
    if os.geteuid() != 0:
        missing_peer("loop devices need root")
    backing = tmp_path / "disk.img"
    backing.write_bytes(os.urandom(SIZE))
    done = subprocess.run(["losetup", "-f", "--show", str(backing)], capture_output=True, text=True)
    if done.returncode != 0:
        missing_peer(f"no loop device here: {done.stderr.strip()}")
    device = done.stdout.strip()
    try:
        yield device.removeprefix("/dev/"), backing
    finally:
        subprocess.run(["losetup", "-d", device], check=False)


def _server_over_ssh(fleet: Fleet, peer: object, state: str = "deployed") -> None:
    build(fleet.engine, [Spec("wipe-1", state=state, serial="SRV-1")])
    fleet.set_credential("ssh-root", "ssh", peer.client_key_text, username="root",  # type: ignore[attr-defined]
                         options={"port": str(peer.port)})  # type: ignore[attr-defined]
    fleet.assign_credential("ssh-root", ["wipe-1"])
    with fleet.ctx.write() as s:
        s.execute(update(Server).where(Server.hostname == "wipe-1").values(
            primary_ip="127.0.0.1", ssh_host_key=peer.host_key_line))  # type: ignore[attr-defined]


@pytest.mark.parametrize("method", ["auto", "overwrite"])
def test_a_disk_is_wiped_over_real_ssh_certified_and_the_server_retired(sqlite_fleet: Fleet, loop_disk, method
                                                                         ) -> None:
    device, backing = loop_disk
    with ssh_peer(stubs=False) as peer:
        _server_over_ssh(sqlite_fleet, peer)
        result = asyncio.run(sqlite_fleet.decommission("wipe-1", method=method, only_devices=[device]))
    assert result.retired == ["wipe-1"], result.servers
    assert backing.read_bytes().count(0) == SIZE  # every byte of the disk reads back as zero
    [cert] = sqlite_fleet.wipe_certificates("wipe-1")
    assert (cert["device"], cert["result"], cert["verified"], cert["intact"]) == (device, "ok", True, True)
    assert cert["method"] == ("overwrite" if method == "overwrite" else "blkdiscard-secure") or \
        cert["method"] == "blkdiscard"  # loop devices discard (punch holes); secure discard where supported
    assert cert["size_bytes"] == SIZE and cert["server_serial"] == "SRV-1" and cert["job_id"] == result.job_id
    assert sqlite_fleet.server("wipe-1").row.state == "retired"
    history = sqlite_fleet.history("wipe-1")
    assert [h.to_state for h in history][-2:] == ["decommissioning", "retired"]
    assert "certificates on record" in history[-1].reason
    assert {"decommission.start", "decommission.wipe"} <= {a.action for a in sqlite_fleet.audit(limit=50)}
    with sqlite_fleet.ctx.write() as s:  # an edited certificate no longer matches its digest
        s.execute(update(WipeCertificate).values(method="ata-secure-erase"))
    assert sqlite_fleet.wipe_certificates("wipe-1")[0]["intact"] is False


def test_servers_in_states_that_do_not_allow_a_wipe_are_refused_and_nothing_moves(sqlite_fleet: Fleet) -> None:
    build(sqlite_fleet.engine, [Spec("a-1", state="deployed"), Spec("a-2", state="deploying", position=2),
                                Spec("a-3", state="retired", position=3)])
    with pytest.raises(InputError, match=r"2 server\(s\) cannot be decommissioned now: a-2: deploying; a-3: retired"):
        asyncio.run(sqlite_fleet.decommission(["a-1", "a-2", "a-3"]))
    assert [s.state for s in sqlite_fleet.servers(["a-1", "a-2", "a-3"])] == ["deployed", "deploying", "retired"]
    assert sqlite_fleet.jobs(kind="decommission") == []
    with pytest.raises(InputError, match="device names"):
        asyncio.run(sqlite_fleet.decommission("a-1", only_devices=["sda; reboot"]))


def test_a_server_unreachable_over_ssh_stays_decommissioning_with_the_reason(sqlite_fleet: Fleet) -> None:
    build(sqlite_fleet.engine, [Spec("a-1", state="deployed")])
    result = asyncio.run(sqlite_fleet.decommission("a-1"))
    assert result.held == ["a-1"] and "no SSH credential" in result.servers["a-1"]["reason"]
    assert sqlite_fleet.server("a-1").row.state == "decommissioning" and sqlite_fleet.wipe_certificates() == []


def test_wipe_output_is_parsed_and_an_unfinished_run_is_told_apart() -> None:
    text = ('noise\n@@rackfleet-wipe {"device": "sda", "result": "ok", "verified": true}\n'
            "@@rackfleet-wipe {broken\n")
    disks, complete = parse_wipe_output(text)
    assert not complete and disks[0]["device"] == "sda" and disks[1]["result"] == "failed"
    assert parse_wipe_output(text + "@@rackfleet-wipe end\n")[1]


def test_lab_servers_are_decommissioned_from_the_cli_with_a_certificate_per_disk(env, tmp_path) -> None:
    why = ssh_lab_available()
    if why:
        missing_peer(why)
    lab = tmp_path / "lab"
    assert here(env, "lab", "start", "--dir", str(lab), "--racks", "1", "--servers-per-rack", "3", "--no-ups",
                "--no-rack-power", "--ssh", "--port", "16639").returncode == 0
    try:
        assert here(env, "import", str(lab / "inventory.yaml"), "--secrets", str(lab / "secrets.yaml")
                    ).returncode == 0
        assert here(env, "lab", "fault", "lab1-r01-s03", "wipe-fails", "--dir", str(lab)).returncode == 0
        refused = fleet_cli(env, "decommission", "lab1-r01-s02", "lab1-r01-s03")  # no --yes, no terminal
        assert refused.returncode == 2 and "refusing without --yes" in refused.stderr
        done = fleet_cli(env, "decommission", "lab1-r01-s02", "lab1-r01-s03", "--yes", "--json")
        assert done.returncode == 1  # one server held back
        result = json.loads(done.stdout)
        assert result["retired"] == ["lab1-r01-s02"] and result["held"] == ["lab1-r01-s03"]
        assert "sdb (write error at sector 81920)" in result["servers"]["lab1-r01-s03"]["reason"]
        certs = json.loads(fleet_cli(env, "wipe-certificates", "--json").stdout)
        mine = {(c["hostname"], c["device"]): (c["method"], c["result"], c["intact"]) for c in certs}
        assert mine == {("lab1-r01-s02", "sda"): ("blkdiscard", "ok", True),
                        ("lab1-r01-s02", "sdb"): ("overwrite", "ok", True),
                        ("lab1-r01-s03", "sda"): ("blkdiscard", "ok", True),
                        ("lab1-r01-s03", "sdb"): ("overwrite", "failed", True)}
        states = {r["hostname"]: (r["state"], r["power"]) for r in json.loads(here(env, "list", "--json").stdout)}
        assert states["lab1-r01-s02"][0] == "retired" and states["lab1-r01-s03"][0] == "decommissioning"
        power = {r["hostname"]: r["after"] for r in json.loads(fleet_cli(env, "power", "status", "lab1-r01-s02",
                                                                         "lab1-r01-s03", "--json").stdout)}
        assert power == {"lab1-r01-s02": "off", "lab1-r01-s03": "on"}  # only the wiped one is switched off
        csv_text = fleet_cli(env, "wipe-certificates", "lab1-r01-s02", "--csv").stdout
        assert csv_text.splitlines()[0].startswith("id,hostname,server_serial,disk_slot,disk_serial")
        assert len(csv_text.splitlines()) == 3
    finally:
        assert here(env, "lab", "stop", "--dir", str(lab)).returncode == 0
