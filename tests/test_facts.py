"""fleet.model.facts: parsing the facts script's output and reconciling it with the inventory (no I/O)."""

from __future__ import annotations

import json

from fleet.drivers.sshfacts import Disk, Facts, Nic, SmartHealth, parse_facts
from fleet.model.facts import InventoryDisk, InventoryNic, ServerInventoryView, reconcile

LSBLK = {"blockdevices": [
    {"name": "sda", "serial": "S1", "model": "SSD A", "size": "480103981056", "type": "disk",
     "children": [{"name": "sda1", "serial": None, "model": None, "size": 1000, "type": "part"}]},
    {"name": "sdb", "serial": "S2", "model": "HDD B", "size": 4000787030016, "type": "disk"},
    {"name": "sr0", "serial": "CD", "model": "DVD", "size": 1073741312, "type": "rom"},
]}


def _output(serial: str = "ABC123", smart_b: str | None = None) -> str:
    smart_a = json.dumps({"model_name": "SSD A", "serial_number": "S1", "smart_status": {"passed": True}})
    smart_b = smart_b if smart_b is not None else json.dumps(
        {"serial_number": "S2", "smart_status": {"passed": False},
         "smartctl": {"messages": [{"string": "SMART overall-health FAILED"}]}})
    return "\n".join([
        "@@rackfleet hostname", "web-01", "@@rackfleet kernel", "6.1.0-18-amd64",
        "@@rackfleet serial", serial, "@@rackfleet lsblk", json.dumps(LSBLK, indent=2),
        "@@rackfleet smart sda", smart_a, "@@rackfleet smart sdb", smart_b,
        "@@rackfleet nics", "eno1 AA:BB:CC:00:00:01 physical", "eno2 aa:bb:cc:00:00:02 physical",
        "docker0 02:42:00:00:00:09 virtual", "@@rackfleet end", ""])


def test_parse_facts_reads_every_section():
    f = parse_facts(_output(), host_key="ssh-ed25519 AAAA")
    assert (f.hostname, f.kernel, f.serial, f.host_key) == ("web-01", "6.1.0-18-amd64", "ABC123", "ssh-ed25519 AAAA")
    assert [d.name for d in f.disks] == ["sda", "sdb"]  # partitions and the DVD are not disks
    assert f.disks[0].size_bytes == 480103981056 and f.disks[1].size_bytes == 4000787030016
    assert f.disks[0].smart == SmartHealth(True, "SSD A", "S1", "")
    assert f.disks[1].smart.passed is False and "FAILED" in f.disks[1].smart.message
    assert f.macs == {"eno1": "aa:bb:cc:00:00:01", "eno2": "aa:bb:cc:00:00:02", "docker0": "02:42:00:00:00:09"}
    assert [n.physical for n in f.nics] == [True, True, False]
    assert f.problems == ()
    assert f.as_dict()["disks"][1]["smart"]["passed"] is False


def test_parse_facts_tolerates_missing_and_broken_sections():
    f = parse_facts(_output(serial="To Be Filled By O.E.M.", smart_b="not json"))
    assert f.serial == ""
    assert f.disks[1].smart.passed is None
    assert f.problems and "smart sdb" in f.problems[0]
    empty = parse_facts("")
    assert empty == Facts()


def _inventory(**kw) -> ServerInventoryView:
    base = dict(hostname="web-01", serial="ABC123",
                disks=(InventoryDisk("0", "S1", "SSD A"), InventoryDisk("1", "S2", "HDD B")),
                nics=(InventoryNic("eno1", "aa:bb:cc:00:00:01"), InventoryNic("eno2", "AA:BB:CC:00:00:02")))
    base.update(kw)
    return ServerInventoryView(**base)


def test_reconcile_matching_server_only_reports_the_failing_disk():
    drifts = reconcile(parse_facts(_output()), _inventory())
    assert [(d.kind, d.subject) for d in drifts] == [("disk-failing", "S2")]
    assert "slot 1" in drifts[0].message and "web-01" in drifts[0].message


def test_reconcile_finds_every_kind():
    facts = Facts(hostname="web-01", serial="XYZ999",
                  disks=(Disk("sda", "S1", smart=SmartHealth(True)), Disk("sdc", "S9", "New HDD")),
                  nics=(Nic("eno2", "aa:bb:cc:00:00:01"), Nic("eno3", "aa:bb:cc:00:00:07"),
                        Nic("veth1", "02:00:00:00:00:01", physical=False)))
    drifts = {(d.kind, d.subject): d for d in reconcile(facts, _inventory())}
    assert set(drifts) == {
        ("serial-changed", "ABC123"), ("disk-missing", "S2"), ("disk-added", "S9"),
        ("mac-moved", "aa:bb:cc:00:00:01"), ("mac-missing", "aa:bb:cc:00:00:02"), ("mac-unknown", "aa:bb:cc:00:00:07"),
    }
    assert drifts[("serial-changed", "ABC123")].seen == "XYZ999"
    assert drifts[("disk-missing", "S2")].details == {"slot": "1"}
    assert drifts[("mac-moved", "aa:bb:cc:00:00:01")].message == \
        "web-01: MAC aa:bb:cc:00:00:01 is on eno2, inventory says eno1"
    assert all(d.message for d in drifts.values())


def test_reconcile_treats_unknowns_as_no_drift():
    facts = Facts(hostname="web-01", serial="", disks=(Disk("sda", "", smart=SmartHealth(None)),),
                  nics=(Nic("eno1", "aa:bb:cc:00:00:01"), Nic("eno2", "aa:bb:cc:00:00:02")))
    assert reconcile(facts, _inventory(disks=())) == []
    assert reconcile(facts, _inventory(serial="", disks=())) == []
