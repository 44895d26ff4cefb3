"""`fleet facts` against OpenSSH's sshd: host key pinned while commissioning, drift becomes events."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from fleet import Fleet

from .clihelp import fleet
from .factory import Spec, build
from .sshpeer import ssh_peer, sshd_available


def test_facts_pin_the_host_key_then_enforce_it_and_record_drift_as_events(env) -> None:
    if not sshd_available():
        from .peers import missing_peer

        missing_peer("OpenSSH sshd is not installed or we are not root")
    with ssh_peer() as peer:
        f = Fleet.open(env["FLEET_DB"], key_path=Path(env["FLEET_KEY_FILE"]))
        build(f.engine, [Spec("node-1", state="commissioning", serial="SN-EXPECTED")])
        with f.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE servers SET primary_ip='127.0.0.1'")
            sid = conn.exec_driver_sql("SELECT id FROM servers").scalar()
            conn.exec_driver_sql(f"INSERT INTO disks (server_id, slot, kind, model, serial, size_gb) "
                                 f"VALUES ({sid}, '0', 'ssd', 'X', 'S1HEALTHY', 480), "
                                 f"({sid}, '1', 'ssd', 'X', 'S2FAILING', 480), ({sid}, '2', 'ssd', 'X', 'GONE', 480)")
        f.set_credential("deploy", "ssh", peer.client_key_text, username=peer.target().username,
                         options={"port": peer.port})
        f.assign_credential("deploy", "node-1")
        first = json.loads(fleet(env, "facts", "node-1", "--json").stdout)
        assert first["errors"] == {} and first["pinned"] == ["node-1"]
        kinds = {d["kind"] for d in first["drift"]["node-1"]}
        assert {"serial-changed", "disk-failing", "disk-missing"} <= kinds
        events = {(e["target"], e["kind"]) for e in json.loads(fleet(env, "events", "--json").stdout)}
        assert {("node-1", "serial-changed"), ("node-1", "disk-failing"), ("node-1", "disk-missing")} <= events
        assert f.servers("node-1")[0].state == "commissioning"
        with f.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT ssh_host_key FROM servers").scalar() == peer.host_key_line
        peer.restart(new_host_key=True)  # a reinstalled (or impersonated) host
        again = json.loads(fleet(env, "facts", "node-1", "--json").stdout)
        assert "node-1" in again["errors"] and "host key" in again["errors"]["node-1"].lower()
        f.close()


@pytest.mark.parametrize("state", ["deployed"])
def test_a_server_in_service_without_a_pinned_key_is_refused(env, state: str) -> None:
    if not sshd_available():
        from .peers import missing_peer

        missing_peer("OpenSSH sshd is not installed or we are not root")
    with ssh_peer() as peer:
        f = Fleet.open(env["FLEET_DB"], key_path=Path(env["FLEET_KEY_FILE"]))
        build(f.engine, [Spec("node-2", state=state)])
        with f.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE servers SET primary_ip='127.0.0.1'")
        f.set_credential("deploy", "ssh", peer.client_key_text, username=peer.target().username,
                         options={"port": peer.port})
        f.assign_credential("deploy", "node-2")
        result = asyncio.run(f.facts("node-2"))
        asyncio.run(f.aclose())
        assert "pinned" in result.errors["node-2"].lower() and result.pinned == []
        f.close()
