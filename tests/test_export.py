"""Export: deterministic, secret-free, and importing an export into an empty inventory gives it back."""

from __future__ import annotations

from pathlib import Path

import yaml
from sqlalchemy import Engine

from fleet import Fleet
from inventory.secrets import KeyRing

from .test_import import EXAMPLE, with_credentials


def _fleet(engine: Engine, keyring: KeyRing) -> Fleet:
    return with_credentials(Fleet(engine, keyring=keyring, actor="tester"))


def _example_fleet(sqlite_engine: Engine, keyring: KeyRing) -> Fleet:
    fleet = _fleet(sqlite_engine, keyring)
    fleet.import_files([EXAMPLE])
    return fleet


def _empty_fleet(keyring: KeyRing) -> Fleet:
    from inventory.db import make_engine, upgrade

    engine = make_engine("sqlite://")
    upgrade(engine)
    return _fleet(engine, keyring)


def test_yaml_export_imported_into_an_empty_inventory_exports_the_same(sqlite_engine: Engine, keyring: KeyRing,
                                                                       tmp_path: Path) -> None:
    first = _example_fleet(sqlite_engine, keyring).export("yaml")
    path = tmp_path / "export.yaml"
    path.write_text(first)
    other = _empty_fleet(keyring)
    result = other.import_files([path])
    assert result.created["server"] == 24 and not result.warnings
    assert other.export("yaml") == first


def test_csv_export_imported_into_an_empty_inventory_exports_the_same(sqlite_engine: Engine, keyring: KeyRing,
                                                                      tmp_path: Path) -> None:
    original = _example_fleet(sqlite_engine, keyring)
    first = original.export("csv")
    assert sorted(first) == sorted(["sites.csv", "pods.csv", "racks.csv", "feeds.csv", "servers.csv", "nics.csv",
                                    "disks.csv", "ups.csv", "pdus.csv", "outlets.csv", "pools.csv"])
    for name, text in first.items():
        (tmp_path / name).write_text(text)
    other = _empty_fleet(keyring)
    assert other.import_files([tmp_path]).created["server"] == 24
    assert other.export("csv") == first
    assert other.export("yaml") == original.export("yaml")  # CSV carries everything YAML does


def test_export_is_deterministic_and_in_natural_key_order(sqlite_engine: Engine, keyring: KeyRing) -> None:
    fleet = _example_fleet(sqlite_engine, keyring)
    text = fleet.export("yaml")
    assert fleet.export("yaml") == text
    doc = yaml.safe_load(text)
    hosts = [s["hostname"] for s in doc["servers"]]
    assert hosts == sorted(hosts) and len(hosts) == 24
    assert [s["code"] for s in doc["sites"]] == ["lon1", "par1"]


def test_export_holds_no_secret_and_names_credentials_only(sqlite_engine: Engine, keyring: KeyRing) -> None:
    fleet = _fleet(sqlite_engine, keyring)
    fleet.set_credential("ipmi-default", "ipmi", "Sup3r-s3cret", username="admin")
    fleet.import_files([EXAMPLE])
    text = fleet.export("yaml")
    doc = yaml.safe_load(text)
    assert "credentials" not in doc
    assert doc["servers"][0]["bmc_credential"] == "ipmi-default"
    everything = text + "".join(fleet.export("csv").values())
    assert "Sup3r-s3cret" not in everything and "gAAAAA" not in everything  # neither plain nor Fernet token


def test_export_writes_outlets_under_their_ups_and_pdu(sqlite_engine: Engine, keyring: KeyRing) -> None:
    doc = yaml.safe_load(_example_fleet(sqlite_engine, keyring).export("yaml"))
    ups = {u["name"]: u for u in doc["ups"]}
    assert ups["ups-edge01"]["outlets"] == [{"number": 0, "server": "edge01.lon1.example.net", "psu": 1}]
    assert "port" not in ups["ups-edge01"]  # the NUT default port is implied
    pdu = doc["pdus"][0]
    assert len(pdu["outlets"]) == 12 and pdu["outlets"][1] == {
        "number": 2, "name": "gpu01-b", "server": "gpu01.par1.example.net", "psu": 2}


def test_exported_macs_stay_strings_in_yaml(sqlite_engine: Engine, keyring: KeyRing, tmp_path: Path) -> None:
    """An all-digit MAC such as 10:20:30:40:50:59 is a base-60 integer to YAML 1.1 unless quoted."""
    fleet = _fleet(sqlite_engine, keyring)
    path = tmp_path / "f.yaml"
    path.write_text('servers:\n  - {hostname: a1, mac: "10:20:30:40:50:58"}\n')
    fleet.import_files([path])
    text = fleet.export("yaml")
    assert yaml.safe_load(text)["servers"][0]["nics"][0]["mac"] == "10:20:30:40:50:58"
    path.write_text(text)
    assert not _fleet(sqlite_engine, keyring).import_files([path]).updated
