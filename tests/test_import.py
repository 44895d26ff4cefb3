"""Importing files: YAML (nested and flat), CSV, secrets; every error names file:line and field and
leaves the inventory exactly as it was (SQLite and PostgreSQL)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlmodel import Session, SQLModel

from fleet import Fleet
from fleet.errors import ConflictError, ValidationError
from fleet.profiles import load_profiles
from inventory import importer, records
from inventory.models import Nic, Outlet, Server, Ups
from inventory.secrets import KeyRing

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "example-fleet.yaml"
BAD_EXAMPLE = REPO / "examples" / "example-fleet-bad.yaml"
PROFILES = load_profiles()
EXAMPLE_CREDENTIALS = [("ipmi-default", "ipmi", "admin"), ("ssh-deploy", "ssh", "deploy"),
                       ("snmp-ro", "snmp-v2c", ""), ("nut-monitor", "nut", "monitor")]


def dump(engine: Engine) -> dict[str, list[tuple]]:
    """Every row of every table, in a stable order: 'exactly as before' made checkable."""
    out = {}
    with engine.connect() as conn:
        for table in SQLModel.metadata.sorted_tables:
            rows = conn.execute(select(table)).all()
            out[table.name] = sorted(tuple(map(repr, r)) for r in rows)
    return out


def with_credentials(fleet: Fleet) -> Fleet:
    for name, kind, user in EXAMPLE_CREDENTIALS:
        fleet.set_credential(name, kind, "pw", username=user)
    return fleet


@pytest.fixture
def fleet(sqlite_fleet: Fleet) -> Fleet:
    return with_credentials(sqlite_fleet)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


# -- the example files -------------------------------------------------------------------------------------


def test_example_fleet_imports_with_the_expected_counts(fleet: Fleet) -> None:
    result = fleet.import_files([EXAMPLE])
    assert result.created == {"site": 2, "pod": 3, "rack": 4, "feed": 5, "server": 24, "ups": 8, "pdu": 1,
                              "pool": 3}
    assert not result.warnings
    assert fleet.count("site=par1") == 18 and fleet.count("tag=gpu") == 6 and fleet.count("state=deployed") == 15
    with Session(fleet.engine) as s:
        assert s.execute(select(Nic).where(Nic.pxe)).all().__len__() == 24
        edge_ups = s.execute(select(Ups.protocol, Ups.port, Outlet.number, Server.hostname)
                             .join(Outlet, Outlet.ups_id == Ups.id).join(Server, Server.id == Outlet.server_id)
                             .where(Ups.name == "ups-edge01")).one()
    assert tuple(edge_ups) == ("nut", 3493, 0, "edge01.lon1.example.net")


def test_reimporting_the_example_changes_nothing(fleet: Fleet) -> None:
    fleet.import_files([EXAMPLE])
    before = dump(fleet.engine)
    again = fleet.import_files([EXAMPLE])
    assert not again.created and not again.updated and sum(again.unchanged.values()) == 50
    after = dump(fleet.engine)
    assert {k: v for k, v in after.items() if k != "audit"} == {k: v for k, v in before.items() if k != "audit"}


def test_the_bad_example_is_refused_at_its_bad_line_and_nothing_changes(fleet: Fleet) -> None:
    fleet.import_files([EXAMPLE])
    before = dump(fleet.engine)
    with pytest.raises(ValidationError) as exc:
        fleet.import_files([BAD_EXAMPLE])
    assert exc.value.location == f"{BAD_EXAMPLE}:24" and exc.value.field == "nics[0].mac"
    assert dump(fleet.engine) == before


# -- one bad line, many kinds ---------------------------------------------------------------------------------

GOOD = """
version: 1
sites:
  - code: tst1
    racks:
      - name: t01
        units: 42
        servers:
          - hostname: ok01.tst1.example.net
            position: 1
            profile: generic-ipmi
            nics:
              - {name: eth0, mac: "02:00:5e:60:00:01", ip: 127.0.6.1}
          - hostname: ok02.tst1.example.net
            position: 2
            profile: generic-ipmi
            nics:
              - {name: eth0, mac: "02:00:5e:60:00:02", ip: 127.0.6.2}
servers:
  - hostname: ok03.tst1.example.net
    site: tst1
    rack: t01
    position: 3
    mac: "02:00:5e:60:00:03"
"""
# case: (line of GOOD replaced, the replacement, the line the error must name, its field, its type)
BAD_LINES = {
    "bad MAC": (12, '              - {name: eth0, mac: "02:00:5e:60:00:0g", ip: 127.0.6.1}', 12, "nics[0].mac",
                ValidationError),
    "duplicate hostname": (13, "          - hostname: ok01.tst1.example.net", 13, "hostname", ConflictError),
    "duplicate MAC": (17, '              - {name: eth0, mac: "02:00:5e:60:00:01", ip: 127.0.6.2}', 17, "mac",
                      ConflictError),
    "overlapping rack units": (14, "            position: 1", 14, "position", ConflictError),
    "unknown rack": (21, "    rack: t99", 21, "rack", ValidationError),
    "unknown profile": (15, "            profile: generic-ipmy", 15, "profile", ValidationError),
    "hostname with newline": (13, '          - hostname: "ok02\\nx.tst1.example.net"', 13, "hostname",
                              ValidationError),
    "hostname with ${x}": (13, "          - hostname: ok${x}.tst1.example.net", 13, "hostname", ValidationError),
    "hostname with ;": (13, "          - hostname: ok02;reboot", 13, "hostname", ValidationError),
    "hostname with a quote": (13, "          - hostname: ok02'x", 13, "hostname", ValidationError),
    "unknown field": (15, "            profle: generic-ipmi", 15, "profle", ValidationError),
    "position beyond the rack": (6, "        units: 2", 22, "position", ConflictError),
    "host key with a newline": (15, '            ssh_host_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA\\nx"', 15,
                                "ssh_host_key", ValidationError),
    "host key of no known type": (15, "            ssh_host_key: ssh-dss AAAAB3NzaC1kc3MAAACBAP", 15, "ssh_host_key",
                                  ValidationError),
}


def test_a_pinned_host_key_imports_and_exports(fleet: Fleet, tmp_path: Path) -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB3mqGGpEo1kH2kx7d6yZ0oLZ2x4pvZ6s1XoQhMZkZ1x"
    path = write(tmp_path, "k.yaml", _with_line(15, f"            ssh_host_key: {key} root@old-name"))
    fleet.import_files([path])
    with Session(fleet.engine) as s:
        assert s.exec(select(Server.ssh_host_key).where(Server.hostname == "ok02.tst1.example.net")).one()[0] == key
    assert key in str(fleet.export("yaml"))


def _with_line(number: int, replacement: str) -> str:
    lines = textwrap.dedent(GOOD).lstrip("\n").splitlines()
    lines[number - 1] = replacement
    return "\n".join(lines) + "\n"


def test_the_good_template_imports(fleet: Fleet, tmp_path: Path) -> None:
    assert fleet.import_files([write(tmp_path, "good.yaml", GOOD)]).created["server"] == 3


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_one_bad_line_is_refused_naming_file_line_and_field_and_nothing_changes(fleet: Fleet, tmp_path: Path,
                                                                                  case: str) -> None:
    fleet.import_files([EXAMPLE])
    before = dump(fleet.engine)
    number, replacement, line, field, error = BAD_LINES[case]
    path = write(tmp_path, "bad.yaml", _with_line(number, replacement))
    with pytest.raises(error) as exc:
        fleet.import_files([path])
    assert getattr(exc.value, "location", None) == f"{path}:{line}", str(exc.value)
    assert getattr(exc.value, "field", None) == field
    assert f"{path}:{line}" in str(exc.value)
    assert dump(fleet.engine) == before


def test_yaml_syntax_errors_name_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.yaml", "sites:\n  - code: a\n    name: [unclosed\n  - code: b\n")
    with pytest.raises(ValidationError, match="YAML syntax") as exc:
        importer.read_files([path])
    assert exc.value.location.startswith(f"{path}:")  # type: ignore[union-attr]


def test_a_key_given_twice_in_one_mapping_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "dup.yaml", "sites:\n  - code: a\n    name: A\n    name: B\n")
    with pytest.raises(ValidationError, match="given twice") as exc:
        importer.read_files([path])
    assert exc.value.location == f"{path}:4"


def test_nested_children_inherit_and_may_not_contradict_their_parent(tmp_path: Path) -> None:
    recs = importer.read_yaml(write(tmp_path, "n.yaml", """
        sites:
          - code: s1
            pods:
              - code: p1
                racks:
                  - name: r1
                    servers:
                      - {hostname: a1, position: 1}
        """))
    server = next(r for r in recs if r.kind == "server")
    assert (server.site, server.pod, server.rack) == ("s1", "p1", "r1")
    with pytest.raises(ValidationError, match="differs from the enclosing rack") as exc:
        importer.read_yaml(write(tmp_path, "c.yaml", """
            sites:
              - code: s1
                racks:
                  - name: r1
                    servers:
                      - hostname: a1
                        rack: r2
            """))
    assert exc.value.field == "rack" and exc.value.location.endswith("c.yaml:7")  # type: ignore[union-attr]


def test_credentials_come_only_from_secrets_files(sqlite_engine: Engine, keyring: KeyRing, tmp_path: Path) -> None:
    text = "credentials:\n  - {name: ipmi-x, kind: ipmi, username: admin, secret: 'pa$$;word'}\n"
    plain = write(tmp_path, "fleet.yaml", text)
    with pytest.raises(ValidationError, match="secrets files") as exc:
        importer.read_files([plain])
    assert exc.value.location == f"{plain}:1"
    recs, _ = importer.read_files([], secrets=[write(tmp_path, "secrets.yaml", text)])
    with Session(sqlite_engine) as s:
        report = records.apply(s, recs, profiles=PROFILES, keyring=keyring, actor="t")
        s.commit()
    assert report.created == {"credential": 1}
    with pytest.raises(ValidationError, match="only credentials"):
        importer.read_files([], secrets=[EXAMPLE])


# -- CSV ---------------------------------------------------------------------------------------------------


def _csv_dir(tmp_path: Path) -> Path:
    d = tmp_path / "csv"
    d.mkdir(parents=True)
    write(d, "sites.csv", "code,name\ns1,Site one\n")
    write(d, "racks.csv", "site,name,units\ns1,r1,42\n")
    write(d, "servers.csv", """
        hostname,site,rack,position,profile,state,bmc,bmc_credential,primary_ip,tags,mac,ip,ups
        a1.example.net,s1,r1,1,dell-r640,deployed,127.0.0.5,ipmi-default,127.0.1.1,web;prod,02:00:5e:00:00:01,127.0.1.1,ups-a1
        a2.example.net,s1,r1,2,,,127.0.0.6:6230,,,,,,
        """)
    write(d, "nics.csv", "hostname,name,mac,switch_port\na1.example.net,eno2,02:00:5E:00:00:11,\"Ethernet1/1\"\n")
    write(d, "disks.csv", "hostname,slot,kind,size_gb\na2.example.net,nvme0,nvme,960\n")
    write(d, "ups.csv", """
        name,site,rack,kind,profile,protocol,host,nut_name
        ups-a1,s1,r1,server,apc-back-ups-nut,nut,127.0.0.1,a1
        ups-r1,s1,r1,rack,apc-smart-ups,snmp,127.0.0.2,
        """)
    write(d, "outlets.csv", "ups,pdu,number,server,psu\nups-r1,,1,a2.example.net,1\n")
    write(d, "README.txt", "not imported\n")
    return d


def test_a_csv_directory_imports_in_dependency_order(fleet: Fleet, tmp_path: Path) -> None:
    result = fleet.import_files([_csv_dir(tmp_path)])
    assert result.created == {"site": 1, "rack": 1, "server": 2, "ups": 2}
    assert any("README.txt" in w for w in result.warnings)
    a1 = fleet.server("a1.example.net")
    assert sorted(n.mac for n in a1.nics) == ["02:00:5e:00:00:01", "02:00:5e:00:00:11"]
    assert fleet.count("tag=prod") == 1 and fleet.count("state=deployed") == 1
    assert not fleet.import_files([_csv_dir(tmp_path / "again")]).updated


def test_a_bad_csv_cell_names_its_physical_line(fleet: Fleet, tmp_path: Path) -> None:
    d = _csv_dir(tmp_path)
    # a comment row whose quoted cell spans two lines comes first: lines are physical lines, not rows
    write(d, "servers.csv", """
        hostname,site,rack,position,description,mac
        "# retired, see ticket
        OPS-1234",,,,,
        a1.example.net,s1,r1,1,,02:00:5e:00:00:0z
        """)
    (d / "nics.csv").unlink()
    (d / "disks.csv").unlink()
    (d / "outlets.csv").unlink()
    before = dump(fleet.engine)
    with pytest.raises(ValidationError) as exc:
        fleet.import_files([d])
    assert exc.value.location == f"{d / 'servers.csv'}:4" and exc.value.field == "nics[0].mac"
    assert dump(fleet.engine) == before


@pytest.mark.parametrize(("name", "text", "line", "message"), [
    ("servers.csv", "hostname,colour\na1,red\n", 1, "unknown column 'colour'"),
    ("nics.csv", "hostname,name,mac\nzz,eth0,02:00:5e:00:00:01\n", 2, "not in the servers.csv"),
    ("inventory.csv", "hostname,mac\na1,02:00:5e:00:00:01\n", 1, "cannot tell what"),
    ("servers.csv", "hostname,position\na1\n", 2, "1 cells where the header has 2"),
])
def test_csv_structure_errors_name_file_and_line(tmp_path: Path, name: str, text: str, line: int,
                                                 message: str) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(ValidationError, match=message) as exc:
        importer.read_files([path])
    assert exc.value.location == f"{path}:{line}"


def test_a_csv_with_a_kind_column_holds_several_kinds(tmp_path: Path) -> None:
    path = write(tmp_path, "inventory.csv", """
        kind,code,site,name,units,hostname,rack,position,pod_kind
        site,s1,,Site one,,,,,
        pod,c1,s1,,,,,,container
        rack,,s1,r1,42,,,,
        server,,s1,,,a1.example.net,r1,7,
        """)
    recs = importer.read_csv([path])
    assert [r.kind for r in recs] == ["site", "pod", "rack", "server"]
    assert recs[1].pod_kind == "container" and recs[3].position == 7


# -- PostgreSQL: the same all-or-nothing guarantee on the team database ------------------------------------


@pytest.mark.postgres
def test_postgres_a_bad_line_leaves_the_inventory_exactly_as_before(pg_engine: Engine, keyring: KeyRing,
                                                                    tmp_path: Path) -> None:
    fleet = with_credentials(Fleet(pg_engine, keyring=keyring, actor="tester"))
    assert fleet.import_files([EXAMPLE]).created["server"] == 24
    before = dump(pg_engine)
    for case in ("duplicate MAC", "bad MAC", "unknown rack"):
        number, replacement, _line, field, error = BAD_LINES[case]
        path = write(tmp_path, f"{case.replace(' ', '-')}.yaml", _with_line(number, replacement))
        with pytest.raises(error) as exc:
            fleet.import_files([path])
        assert getattr(exc.value, "field", None) == field
        assert dump(pg_engine) == before
    assert not fleet.import_files([EXAMPLE]).created


def test_import_result_lists_read_warnings(fleet: Fleet) -> None:
    result: Any = fleet.import_files([], netbox_devices=REPO / "examples/netbox/devices.json")
    assert any("R282-Z90" in w for w in result.warnings)


def _bulk_csv(d: Path, n: int) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    write(d, "sites.csv", "code\ns1\n")
    write(d, "racks.csv", "site,name,units\n" + "".join(f"s1,r{r:03d},42\n" for r in range(n // 40 + 1)))
    write(d, "servers.csv", "hostname,site,rack,position,state,bmc,tags,mac,ip\n" + "".join(
        f"h{i:05d}.example.net,s1,r{i // 40:03d},{i % 40 + 1},ready,127.0.0.1:{2000 + i},bulk,"
        f"02:00:5e:01:{i >> 8:02x}:{i & 255:02x},127.0.{i >> 8}.{i & 255}\n" for i in range(n)))
    return d


@pytest.mark.postgres
def test_postgres_bulk_import_matches_sqlite(pg_engine: Engine, sqlite_engine: Engine, keyring: KeyRing,
                                             tmp_path: Path) -> None:
    """1,200 servers take PostgreSQL's COPY path; the result must equal SQLite's, field for field."""
    source = _bulk_csv(tmp_path / "bulk", 1200)
    on_pg = Fleet(pg_engine, keyring=keyring, actor="tester")
    on_sqlite = Fleet(sqlite_engine, keyring=keyring, actor="tester")
    assert on_pg.import_files([source]).created["server"] == 1200
    on_sqlite.import_files([source])
    assert on_pg.export("yaml") == on_sqlite.export("yaml")
    assert on_pg.server("h00007.example.net").nics[0].pxe is True
    assert len(on_pg.history("h00007.example.net")) == 1
    assert not on_pg.import_files([source]).updated
