"""Fleet's PXE methods: inventory → contexts (NIC, pool, overrides, tags), render + install, evidence recorded."""

from __future__ import annotations

import json
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from fleet import Fleet
from fleet.errors import InputError, NotFound, ValidationError
from fleet.ops.pxe import PxeOverrides
from pxe import callback_token
from pxe.evidence import DNSMASQ_LOG, HTTP_LOG

from .test_pxe_install import fake_sources

INVENTORY = """\
sites:
  - code: lab1
    pools:
      - {name: lab1-site, cidr: 10.0.0.0/16, gateway: 10.0.0.1, dns: [10.0.0.53]}
    racks:
      - name: R01
        pools:
          - {name: r01-prov, cidr: 10.77.0.0/24, gateway: 10.77.0.1, dns: [10.77.0.1, 10.77.0.2]}
        servers:
          - {hostname: vm1.lab.example.net, position: 1, mac: "52:54:00:77:00:01", ip: 10.77.0.11}
          - {hostname: vm2.lab.example.net, position: 2, mac: "52:54:00:77:00:02", ip: 10.77.0.12,
             tags: [pxe-loader:pxelinux, pxe-tag:slow-disk]}
          - hostname: vm3.lab.example.net
            position: 3
            tags: [pxe-loader:grub, pxe-os:ubuntu-24.04, pxe-layout:lvm]
            nics:
              - {name: eth0, mac: "52:54:00:77:00:30", ip: 10.77.0.30}
              - {name: eth1, mac: "52:54:00:77:00:03", ip: 10.77.0.13, pxe: true}
      - name: R02
        servers:
          - {hostname: far.lab.example.net, position: 1, mac: "52:54:00:78:00:01", ip: 10.0.5.1}
          - {hostname: noip.lab.example.net, position: 2, mac: "52:54:00:78:00:02"}
"""
MANAGER = "http://10.77.0.1:8080"


@pytest.fixture
def fleet(sqlite_fleet: Fleet, tmp_path: Path) -> Fleet:
    path = tmp_path / "inv.yaml"
    path.write_text(INVENTORY)
    sqlite_fleet.import_files([path])
    return sqlite_fleet


def test_contexts_from_the_inventory(fleet: Fleet, tmp_path: Path) -> None:
    tree = fleet.pxe_contexts("rack=R01", root=tmp_path / "pxe", manager_url=MANAGER, interface="br0")
    assert tree.root == str(tmp_path / "pxe") and tree.server_ip == "10.77.0.1" and tree.interface == "br0"
    assert tree.network.cidr == "10.77.0.0/24"  # the rack's pool, not the site's
    assert tree.network.gateway == "10.77.0.1" and tree.network.dns == ("10.77.0.1", "10.77.0.2")
    by = {h.short_name: h for h in tree.hosts}
    assert (by["vm1"].mac, by["vm1"].ip, by["vm1"].loader, by["vm1"].os) == (
        "52:54:00:77:00:01", "10.77.0.11", "ipxe", "debian-12")
    assert by["vm2"].loader == "pxelinux" and by["vm2"].tags == ("slow-disk",)
    assert (by["vm3"].mac, by["vm3"].ip) == ("52:54:00:77:00:03", "10.77.0.13")  # the PXE NIC
    assert (by["vm3"].loader, by["vm3"].os, by["vm3"].disk_layout) == ("grub", "ubuntu-24.04", "lvm")
    assert by["vm1"].console == "ttyS0,115200"
    key = fleet.pxe_callback_key()
    assert by["vm1"].token not in (callback_token(key, "vm1.lab.example.net", "x"), by["vm2"].token)
    assert by["vm1"].token_expires == ""  # no time limit unless asked for
    again = fleet.pxe_contexts("rack=R01", root=tmp_path / "pxe", manager_url=MANAGER, interface="br0",
                               nonce="job-7", token_ttl_s=600)
    vm1 = next(h for h in again.hosts if h.short_name == "vm1")
    assert vm1.token == callback_token(key, "vm1.lab.example.net", "job-7") != by["vm1"].token  # one per render
    assert 590 < (datetime.fromisoformat(vm1.token_expires) - datetime.now(UTC)).total_seconds() <= 600


def test_callback_key_is_kept_in_the_inventory(fleet: Fleet) -> None:
    key = fleet.pxe_callback_key()
    assert len(key) == 32 and key == fleet.pxe_callback_key()
    assert Fleet(fleet.engine, actor="other").pxe_callback_key() == key


def test_overrides_precedence(fleet: Fleet, tmp_path: Path) -> None:
    path = tmp_path / "pxe.toml"
    path.write_text(textwrap.dedent("""\
        [defaults]
        console = "ttyS1,115200"
        kernel_args = ["quiet"]
        os = "debian-11"

        [profile.generic-ipmi]
        console = "ttyS2,9600"
        disk_layout = "atomic"

        [rack.R01]
        disk_layout = "lvm"
        loader = "grub"

        [host."vm2.lab.example.net"]
        loader = "ipxe"
        disk = "/dev/sdb"
        ssh_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOverride ops@x"]
        """))
    ov = PxeOverrides.load(path)
    tree = fleet.pxe_contexts("rack=R01", root=tmp_path / "pxe", manager_url=MANAGER, overrides=ov)
    by = {h.short_name: h for h in tree.hosts}
    assert (by["vm1"].console, by["vm1"].kernel_args, by["vm1"].os) == ("ttyS2,9600", ("quiet",), "debian-11")
    assert (by["vm1"].loader, by["vm1"].disk_layout) == ("grub", "lvm")  # rack over profile over defaults
    assert by["vm2"].loader == "ipxe" and by["vm2"].disk == "/dev/sdb"  # host over tag over rack
    assert by["vm3"].os == "ubuntu-24.04"  # tag over defaults
    forced = fleet.pxe_contexts("rack=R01", root=tmp_path / "pxe", manager_url=MANAGER, overrides=ov, os="debian-12")
    assert {h.os for h in forced.hosts} == {"debian-12"}  # the call's os wins over all


@pytest.mark.parametrize(("doc", "match"), [
    ({"defaults": {"colour": "red"}}, "unknown setting.*colour"),
    ({"racks": {}}, "unknown section.*racks"),
    ({"rack": {"R01": {"kernel_args": "quiet"}}}, "must be a list of strings"),
    ({"host": {"a": {"loader": 3}}}, "must be a string"),
    ({"rack": ["R01"]}, "must be a table"),
])
def test_overrides_are_strict(doc: dict, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        PxeOverrides.from_mapping(doc)


def test_hostile_override_is_refused_naming_the_server(fleet: Fleet, tmp_path: Path) -> None:
    for setting, value in (("kernel_args", ["console=ttyS0;reboot"]), ("console", "ttyS0\nx"),
                           ("tags", ["${evil}"]), ("disk", "/dev/sda'")):
        ov = {"host": {"vm1.lab.example.net": {setting: value}}}
        with pytest.raises(ValidationError) as err:
            fleet.pxe_render("rack=R01", out=tmp_path / "pxe", manager_url=MANAGER, overrides=ov,
                             sources=fake_sources(tmp_path / "src"))
        assert "server vm1.lab.example.net" in str(err.value) and err.value.field == setting
    assert not (tmp_path / "pxe").exists()
    refused = fleet.audit(action="pxe.render")
    assert len(refused) == 4 and {a.result for a in refused} == {"failed"} and refused[0].targets == ("rack=R01",)


@pytest.mark.parametrize(("column", "value", "field"), [
    ("hostname", "vm1\nevil.lab.example.net", "hostname"),
    ("hostname", "vm1;reboot", "hostname"),
    ("hostname", "vm1${x}", "hostname"),
    ("hostname", "vm1'x", "hostname"),
])
def test_hostile_value_stored_behind_our_back_is_refused(fleet: Fleet, tmp_path: Path, column: str, value: str,
                                                         field: str) -> None:
    with fleet.engine.begin() as conn:
        conn.execute(text(f"UPDATE servers SET {column} = :v WHERE hostname = 'vm1.lab.example.net'"), {"v": value})
    with pytest.raises(ValidationError) as err:
        fleet.pxe_render("rack=R01", out=tmp_path / "pxe", manager_url=MANAGER, sources=fake_sources(tmp_path / "s"))
    assert err.value.field == field
    assert not (tmp_path / "pxe").exists()


@pytest.mark.parametrize("tag", ["gpu\n", "gpu;reboot", "gpu${x}", 'gpu"', "GPU"])
def test_hostile_tag_stored_behind_our_back_is_refused(fleet: Fleet, tmp_path: Path, tag: str) -> None:
    with fleet.engine.begin() as conn:
        conn.execute(text("INSERT INTO server_tags (server_id, tag) SELECT id, :t FROM servers "
                          "WHERE hostname = 'vm1.lab.example.net'"), {"t": tag})
    with pytest.raises(ValidationError) as err:
        fleet.pxe_render("rack=R01", out=tmp_path / "pxe", manager_url=MANAGER, sources=fake_sources(tmp_path / "s"))
    assert err.value.field == "tags" and "server vm1.lab.example.net" in str(err.value)
    assert not (tmp_path / "pxe").exists()


def test_inventory_errors_are_clear(fleet: Fleet, tmp_path: Path) -> None:
    root = tmp_path / "pxe"
    with pytest.raises(ValidationError, match=r"server noip\.lab\.example\.net: ip: has no address"):
        fleet.pxe_contexts("host=noip.lab.example.net", root=root, manager_url=MANAGER)
    both = fleet.pxe_contexts("host=vm1.lab.example.net host=far.lab.example.net", root=root, manager_url=MANAGER)
    assert [n.cidr for n in both.networks] == ["10.0.0.0/16", "10.77.0.0/24"] and both.server_ip == "10.77.0.1"
    with pytest.raises(InputError, match="--server-ip"):
        fleet.pxe_contexts("host=far.lab.example.net", root=root, manager_url=MANAGER)
    tree = fleet.pxe_contexts("host=far.lab.example.net", root=root, manager_url=MANAGER, server_ip="10.0.0.1")
    assert tree.network.cidr == "10.0.0.0/16"  # the site's pool
    with pytest.raises(NotFound):
        fleet.pxe_contexts("rack=R99", root=root, manager_url=MANAGER)
    with fleet.engine.begin() as conn:
        conn.execute(text("DELETE FROM ip_pools"))
    with pytest.raises(ValidationError, match="lies in no IP pool"):
        fleet.pxe_contexts("rack=R01", root=root, manager_url=MANAGER)


def test_render_installs_and_audits(fleet: Fleet, tmp_path: Path) -> None:
    root = tmp_path / "pxe"
    dry = fleet.pxe_render("rack=R01", out=root, manager_url=MANAGER, sources=fake_sources(tmp_path / "src"),
                           dry_run=True)
    assert dry.report is None and dry.files > 0 and not root.exists()
    result = fleet.pxe_render("rack=R01", out=root, manager_url=MANAGER, interface="br0",
                              sources=fake_sources(tmp_path / "src"))
    assert result.hosts == ("vm1.lab.example.net", "vm2.lab.example.net", "vm3.lab.example.net")
    assert (root / "dnsmasq.conf").read_text().count("dhcp-host=") == 3
    assert (root / "tftp/pxelinux.cfg/01-52-54-00-77-00-02").exists()
    assert (root / "tftp/debian-installer/amd64/grub/hosts/52:54:00:77:00:03.cfg").exists()
    assert (root / "http/answers/vm3.lab.example.net/user-data").exists()
    assert result.to_json()["install"]["written"] == result.files
    audit = fleet.audit(action="pxe.render")
    assert len(audit) == 1 and tuple(audit[0].targets[:3]) == result.hosts


def test_evidence_is_recorded_once(fleet: Fleet, tmp_path: Path) -> None:
    root = tmp_path / "pxe"
    fleet.pxe_render("rack=R01", out=root, manager_url=MANAGER, sources=fake_sources(tmp_path / "src"))
    (root / DNSMASQ_LOG).write_text(
        "Nov 29 01:50:11 dnsmasq-dhcp[812]: 1 DHCPACK(br0) 10.77.0.11 52:54:00:77:00:01 vm1\n"
        "Nov 29 01:50:13 dnsmasq-dhcp[812]: 3 DHCPDISCOVER(br0) 52:54:00:77:00:ee ignored\n")
    (root / HTTP_LOG).write_text(json.dumps({
        "ts": "2026-11-29T01:50:22+00:00", "client": "10.77.0.11", "method": "GET",
        "path": "/cb/vm1.lab.example.net/late", "status": 200, "bytes": 3, "host": "vm1.lab.example.net",
        "phase": "late", "ok": True}) + "\n")
    first = fleet.pxe_record_evidence(root)
    assert [(e.kind, e.hostname or e.mac) for e in first] == [
        ("lease", "vm1.lab.example.net"), ("ignored", "52:54:00:77:00:ee"), ("callback", "vm1.lab.example.net")]
    assert fleet.pxe_record_evidence(root) == []
    with open(root / DNSMASQ_LOG, "a") as fh:
        fh.write("Nov 29 01:51:00 dnsmasq-tftp[812]: sent " + str(root) + "/tftp/pxelinux.0 to 10.77.0.12\n")
    assert [(e.kind, e.hostname) for e in fleet.pxe_record_evidence(root)] == [("tftp", "vm2.lab.example.net")]
    rows = fleet.audit(action="pxe.callback") + fleet.audit(action="pxe.ignored")
    assert {(r.action, r.result, r.targets[0]) for r in rows} == {
        ("pxe.callback", "ok", "vm1.lab.example.net"), ("pxe.ignored", "failed", "52:54:00:77:00:ee")}
    assert len(fleet.pxe_evidence(root)) == 4


def test_a_failing_render_leaves_the_installed_tree(fleet: Fleet, tmp_path: Path) -> None:
    root = tmp_path / "pxe"
    fleet.pxe_render("rack=R01", out=root, manager_url=MANAGER, sources=fake_sources(tmp_path / "src"))
    before = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    broken = tmp_path / "templates"
    broken.mkdir()
    (broken / "preseed.cfg.debian-12.j2").write_text("{{ host.no_such_field }}\n")
    from pxe import TemplateError

    with pytest.raises(TemplateError, match=r"preseed\.cfg\.debian-12\.j2 for vm1\.lab\.example\.net"):
        fleet.pxe_render("rack=R01", out=root, manager_url=MANAGER, sources=fake_sources(tmp_path / "src"),
                         template_dirs=[broken])
    after = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert after == before
    failed = [a for a in fleet.audit(action="pxe.render") if a.result == "failed"]
    assert len(failed) == 1 and "no_such_field" in failed[0].detail["error"]
