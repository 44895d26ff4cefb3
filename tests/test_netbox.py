"""NetBox devices/interfaces exports: mapping, profile fallback, both MAC forms, and file:line errors."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from fleet import Fleet
from fleet.errors import ValidationError
from fleet.profiles import load_profiles
from inventory.netbox import read_netbox

from .test_import import REPO, dump

DEVICES = REPO / "examples" / "netbox" / "devices.json"
INTERFACES = REPO / "examples" / "netbox" / "interfaces.json"
PROFILES = load_profiles()


def _servers(recs: list) -> dict[str, Any]:
    return {r.hostname: r for r in recs if r.kind == "server"}


def _line_of(path: Path, needle: str) -> int:
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if needle in line:
            return number
    raise AssertionError(needle)


def test_devices_map_to_sites_pods_racks_and_servers() -> None:
    recs, _warnings = read_netbox(DEVICES, INTERFACES, profiles=PROFILES)
    kinds = [r.kind for r in recs]
    assert kinds.count("site") == 1 and kinds.count("pod") == 1 and kinds.count("rack") == 2
    servers = _servers(recs)
    web = servers["nb-web01.par1.example.net"]
    assert (web.site, web.rack, web.position, web.profile, web.state) == ("par1", "r01", 10, "dell-r640", "deployed")
    assert (web.primary_ip, web.bmc_host, web.serial, web.asset_tag) == ("192.0.2.21", "127.0.0.41", "9XKQ2F3",
                                                                         "PA-00121")
    assert web.tags == ("prod", "web")
    assert {s.hostname: s.state for s in servers.values()} == {
        "nb-web01.par1.example.net": "deployed", "nb-web02.par1.example.net": "ready",
        "nb-db01.par1.example.net": "maintenance", "nb-hpc01.par1.example.net": "new",
        "nb-spare01.par1.example.net": "new"}
    assert servers["nb-db01.par1.example.net"].profile == "supermicro-x11"
    spare = servers["nb-spare01.par1.example.net"]
    assert spare.rack is None and spare.position is None and spare.bmc_host is None


def test_a_device_type_without_profile_falls_back_with_a_warning_naming_it() -> None:
    recs, warnings = read_netbox(DEVICES, INTERFACES, profiles=PROFILES)
    assert _servers(recs)["nb-hpc01.par1.example.net"].profile == "generic-ipmi"
    assert any("R282-Z90" in w and "generic-ipmi" in w and "nb-hpc01" in w for w in warnings)
    assert any("'Rack 07'" in w and "'Rack-07'" in w for w in warnings)


def test_interfaces_give_nics_from_the_netbox_4_2_mac_form_skipping_bmc_ports() -> None:
    servers = _servers(read_netbox(DEVICES, INTERFACES, profiles=PROFILES)[0])
    nics = servers["nb-web01.par1.example.net"].nics
    assert [(n.name, n.mac) for n in nics] == [("eno1", "02:00:5e:50:01:01"), ("eno2", "02:00:5e:50:02:01")]
    assert servers["nb-spare01.par1.example.net"].nics == ()


def test_the_netbox_4_1_mac_address_form_is_read_too(tmp_path: Path) -> None:
    doc = json.loads(INTERFACES.read_text())
    for item in doc["results"]:
        mac = item.pop("primary_mac_address")
        item.pop("mac_addresses")
        item["mac_address"] = mac["mac_address"] if mac else None
    old = tmp_path / "interfaces-4.1.json"
    old.write_text(json.dumps(doc, indent=2))
    new_form = _servers(read_netbox(DEVICES, INTERFACES, profiles=PROFILES)[0])
    old_form = _servers(read_netbox(DEVICES, old, profiles=PROFILES)[0])
    assert old_form == new_form


def test_import_through_the_fleet_is_idempotent(sqlite_fleet: Fleet) -> None:
    result = sqlite_fleet.import_files([], netbox_devices=DEVICES, netbox_interfaces=INTERFACES)
    assert result.created == {"site": 1, "pod": 1, "rack": 2, "server": 5}
    assert sqlite_fleet.server("nb-web01.par1.example.net").nics
    again = sqlite_fleet.import_files([], netbox_devices=DEVICES, netbox_interfaces=INTERFACES)
    assert not again.created and not again.updated


def _edited(tmp_path: Path, source: Path, edit: Any) -> Path:
    doc = json.loads(source.read_text())
    edit(doc["results"])
    path = tmp_path / source.name
    path.write_text(json.dumps(doc, indent=4))
    return path


def test_a_bad_interface_mac_names_the_interface_line(sqlite_fleet: Fleet, tmp_path: Path) -> None:
    def edit(results: list) -> None:
        results[4]["primary_mac_address"]["mac_address"] = "02:00:5E:50:02:XX"
    path = _edited(tmp_path, INTERFACES, edit)
    before = dump(sqlite_fleet.engine)
    with pytest.raises(ValidationError) as exc:
        sqlite_fleet.import_files([], netbox_devices=DEVICES, netbox_interfaces=path)
    line = _line_of(path, '"id": 1004,') - 1  # the object's opening brace
    assert exc.value.location == f"{path}:{line}" and exc.value.field == "nics[1].mac"
    assert dump(sqlite_fleet.engine) == before


@pytest.mark.parametrize(("change", "field", "message"), [
    (lambda d: d.update(position=10.5), "position", "not a whole rack unit"),
    (lambda d: d.update(status={"value": "borrowed"}), "status", "unknown NetBox status"),
    (lambda d: d.update(name="web 01"), "hostname", "not a valid host name"),
    (lambda d: d.update(site=None), "site", "has no site"),
])
def test_a_bad_device_names_its_line_and_field(tmp_path: Path, change: Any, field: str, message: str) -> None:
    path = _edited(tmp_path, DEVICES, lambda results: change(results[2]))
    with pytest.raises(ValidationError, match=message) as exc:
        read_netbox(path, None, profiles=PROFILES)
    line = _line_of(path, '"id": 103,') - 1
    assert exc.value.location == f"{path}:{line}" and exc.value.field == field


def test_json_syntax_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "devices.json"
    path.write_text('{"count": 1, "next": null,\n "results": [\n  {"id": 1,, "name": "a"}\n ]}\n')
    with pytest.raises(ValidationError, match="JSON syntax") as exc:
        read_netbox(path, None, profiles=PROFILES)
    assert exc.value.location == f"{path}:3"


def test_one_page_of_several_is_imported_with_a_warning(tmp_path: Path) -> None:
    doc = json.loads(DEVICES.read_text())
    doc["count"], doc["next"] = 250, "https://netbox.example.net/api/dcim/devices/?limit=50&offset=50"
    path = tmp_path / "devices.json"
    path.write_text(json.dumps(doc))
    recs, warnings = read_netbox(path, None, profiles=PROFILES)
    assert len(_servers(recs)) == 5 and any("5 of 250" in w and "limit=0" in w for w in warnings)


def test_a_bare_list_of_devices_is_accepted_and_unnamed_devices_are_skipped(tmp_path: Path) -> None:
    devices = copy.deepcopy(json.loads(DEVICES.read_text())["results"])
    devices[0]["name"] = None
    path = tmp_path / "devices.json"
    path.write_text(json.dumps(devices))
    recs, warnings = read_netbox(path, None, profiles=PROFILES)
    assert len(_servers(recs)) == 4 and any("1 unnamed device" in w for w in warnings)
    assert all(s.nics is None for s in _servers(recs).values())  # no interfaces file: NICs are left as stored


@pytest.mark.parametrize(("value", "endpoint"), [
    (True, ("127.0.0.41", 443)), (":8443", ("127.0.0.41", 8443)), ("10.9.0.41:9443", ("10.9.0.41", 9443)),
    (False, (None, None)), (None, (None, None)),
])
def test_the_redfish_custom_field_gives_the_device_its_redfish_endpoint(tmp_path: Path, value: Any,
                                                                         endpoint: tuple) -> None:
    path = _edited(tmp_path, DEVICES, lambda results: results[0].update(custom_fields={"redfish": value}))
    web = _servers(read_netbox(path, None, profiles=PROFILES)[0])["nb-web01.par1.example.net"]
    assert (web.redfish_host, web.redfish_port) == endpoint and web.bmc_host == "127.0.0.41"


def test_a_redfish_custom_field_without_an_address_names_the_device(tmp_path: Path) -> None:
    def edit(results: list) -> None:
        results[2].update(custom_fields={"redfish": True}, oob_ip=None)
    with pytest.raises(ValidationError, match="no oob_ip") as exc:
        read_netbox(_edited(tmp_path, DEVICES, edit), None, profiles=PROFILES)
    assert exc.value.field == "redfish"
