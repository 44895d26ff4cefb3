"""inventory.records: what build() accepts and refuses, and what apply() writes or refuses."""

from __future__ import annotations

import string
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select
from sqlmodel import Session

from fleet.errors import ConflictError, ValidationError
from fleet.profiles import load_profiles
from inventory import records
from inventory.models import Credential, Nic, Outlet, Server, ServerTag, StateChange, Ups
from inventory.records import SourceMap, apply, build, convert
from inventory.secrets import KeyRing
from inventory.validate import check_hostname, check_ip, check_mac

PROFILES = load_profiles()
UNSAFE = set(string.whitespace) | set("\"'`$;{}<>\\|")


# -- build ---------------------------------------------------------------------------------------------


def test_build_normalises_names_and_addresses() -> None:
    rec = build("server", {
        "hostname": "Web01.Example.NET", "site": "par1", "rack": "r01", "position": "4",
        "bmc": "127.0.0.5:6230", "primary_ip": "127.0.1.5", "tags": "web; prod web",
        "nics": [{"name": "eno1", "mac": "02-00-5E-00-00-01", "ip": "127.0.1.5", "pxe": "yes"}],
    })
    assert rec.hostname == "web01.example.net"
    assert (rec.position, rec.bmc_host, rec.bmc_port) == (4, "127.0.0.5", 6230)
    assert rec.tags == ("prod", "web")
    assert rec.nics[0].mac == "02:00:5e:00:00:01" and rec.nics[0].pxe is True


def test_absent_fields_stay_none_so_apply_keeps_stored_values() -> None:
    rec = build("server", {"hostname": "a1"})
    assert rec.profile is None and rec.nics is None and rec.tags is None and rec.state is None


def test_mac_and_ip_shorthand_make_one_pxe_nic() -> None:
    rec = build("server", {"hostname": "a1", "mac": "02:00:5e:00:00:01", "ip": "127.0.1.1"})
    assert rec.nics == (records.NicRecord(name="eth0", mac="02:00:5e:00:00:01", ip="127.0.1.1", pxe=True),)


def test_unknown_key_is_refused_by_name_with_a_suggestion() -> None:
    with pytest.raises(ValidationError) as exc:
        build("server", {"hostname": "a1", "hostnmae": "x"}, loc="f.yaml:3")
    assert exc.value.field == "hostnmae" and exc.value.location == "f.yaml:3"
    assert "did you mean 'hostname'" in str(exc.value)


def test_error_is_placed_on_the_line_of_its_key() -> None:
    raw = SourceMap.of({"hostname": "a1", "bmc": "127.0.0.1", "priority": "high"}, file="f.yaml", line=10,
                       key_lines=[10, 11, 12])
    with pytest.raises(ValidationError) as exc:
        build("server", raw)
    assert exc.value.location == "f.yaml:12" and exc.value.field == "priority"


def test_nested_nic_error_names_the_nic_and_its_own_line() -> None:
    nic = SourceMap.of({"name": "eth1", "mac": "zz:00:00:00:00:01"}, file="f.yaml", line=7)
    raw = SourceMap.of({"hostname": "a1", "nics": [{"mac": "02:00:5e:00:00:01"}, nic]}, file="f.yaml", line=3)
    with pytest.raises(ValidationError) as exc:
        build("server", raw)
    assert exc.value.field == "nics[1].mac" and exc.value.location == "f.yaml:7"


@pytest.mark.parametrize("hostname", ["web01\nx", "web${x}", "web;rm", "web'01", 'web"01', "web 01", "web{1}",
                                      "-web", "web_01", "a" * 64, "10.0.0.1"])
def test_hostnames_that_could_inject_or_mislead_are_refused(hostname: str) -> None:
    with pytest.raises(ValidationError) as exc:
        build("server", {"hostname": hostname}, loc="f.csv:2")
    assert exc.value.field == "hostname" and exc.value.location == "f.csv:2"


@pytest.mark.parametrize(("kind", "raw", "field"), [
    ("server", {"hostname": "a1", "rack": "r1"}, "site"),
    ("server", {"hostname": "a1", "position": 3}, "position"),
    ("server", {"hostname": "a1", "mac": "02:00:5e:00:00:01", "nics": []}, "mac"),
    ("server", {"hostname": "a1", "state": "on-fire"}, "state"),
    ("server", {"hostname": "a1", "description": "rm -rf $HOME"}, "description"),
    ("server", {"hostname": "a1", "nics": [{"mac": "01:00:5e:00:00:01"}]}, "nics[0].mac"),
    ("ups", {"name": "u1", "site": "s", "host": "127.0.0.1", "protocol": "nut"}, "nut_name"),
    ("ups", {"name": "u1", "site": "s", "host": "127.0.0.1:161", "port": 162}, "port"),
    ("pool", {"name": "p", "cidr": "127.0.1.0/24", "gateway": "127.0.2.1"}, "gateway"),
    ("pool", {"name": "p", "cidr": "127.0.1.0/24", "first": "127.0.1.9", "last": "127.0.1.2"}, "last"),
    ("feed", {"site": "s", "name": "f", "phases": 2}, "phases"),
    ("rack", {"site": "s"}, "name"),
])
def test_invalid_records_are_refused_naming_the_field(kind: str, raw: dict, field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        build(kind, raw)
    assert exc.value.field == field


def test_a_credential_secret_is_never_echoed_in_errors_or_repr() -> None:
    with pytest.raises(ValidationError) as exc:
        build("credential", {"name": "c", "kind": "ipmi", "secret": "hunter2\nhunter3"})
    assert "hunter" not in str(exc.value)
    assert "s3cret" not in repr(build("credential", {"name": "c", "kind": "ipmi", "secret": "s3cret"}))


# -- hypothesis: the validators the importer relies on ----------------------------------------------------


@given(st.text(alphabet=string.printable + "é$;{}", max_size=80))
def test_any_accepted_hostname_is_safe_in_config_text(text: str) -> None:
    try:
        name = check_hostname(text)
    except ValidationError:
        return
    assert not (set(name) & UNSAFE) and name == name.lower() and name
    assert convert._hostname(text, "hostname") == name


@given(st.binary(min_size=6, max_size=6), st.sampled_from([":", "-", ""]), st.booleans())
def test_mac_normalisation_is_idempotent_and_the_fast_path_agrees(raw: bytes, sep: str, upper: bool) -> None:
    text = sep.join(f"{b:02x}" for b in raw)
    text = text.upper() if upper else text
    try:
        mac = check_mac(text)
    except ValidationError:
        with pytest.raises(ValidationError):
            convert._mac(text, "mac")
        return
    assert check_mac(mac) == mac and convert._mac(text, "mac") == mac and convert._mac(mac, "mac") == mac


@given(st.one_of(st.ip_addresses().map(str), st.text(alphabet="0123456789.:abcdef", max_size=20)))
def test_ip_fast_path_returns_what_check_ip_returns(text: str) -> None:
    try:
        expected = check_ip(text)
    except ValidationError:
        with pytest.raises(ValidationError):
            convert._ip(text, "ip")
        return
    assert convert._ip(text, "ip") == expected


# -- apply ------------------------------------------------------------------------------------------------


@pytest.fixture
def engine(sqlite_engine: Engine, keyring: KeyRing) -> Engine:
    with Session(sqlite_engine) as s:
        for name, kind in (("ipmi-a", "ipmi"), ("ssh-a", "ssh"), ("snmp-a", "snmp-v2c")):
            s.add(Credential(name=name, kind=kind, username="u", secret=keyring.seal("pw")))
        s.commit()
    return sqlite_engine


def _base() -> list[Any]:
    return [
        build("site", {"code": "s1", "name": "Site 1"}),
        build("pod", {"site": "s1", "code": "p1", "kind": "container"}),
        build("rack", {"site": "s1", "name": "r1", "pod": "p1", "units": 10}),
        build("feed", {"site": "s1", "name": "f1", "rack": "r1", "capacity_w": 5000}),
    ]


def _server(host: str, pos: int, mac: str, **extra: Any) -> Any:
    return build("server", {"hostname": host, "site": "s1", "rack": "r1", "position": pos,
                            "nics": [{"name": "eth0", "mac": mac}], **extra}, loc=f"t.yaml:{pos}")


def _apply(engine: Engine, recs: list, **kw: Any) -> records.ApplyReport:
    """Apply in one transaction, committed on success and rolled back on error (as the caller does)."""
    with Session(engine) as s:
        try:
            report = apply(s, recs, profiles=PROFILES, actor="tester", **kw)
            s.commit()
        except BaseException:
            s.rollback()
            raise
    return report


def _count(engine: Engine, model: Any) -> int:
    with Session(engine) as s:
        return s.execute(select(func.count()).select_from(model)).scalar_one()


def test_apply_creates_then_reapplying_changes_nothing(engine: Engine) -> None:
    recs = [*_base(), _server("a1", 1, "02:00:5e:00:00:01", tags=["x"]), _server("a2", 2, "02:00:5e:00:00:02")]
    first = _apply(engine, recs)
    assert first.created == {"site": 1, "pod": 1, "rack": 1, "feed": 1, "server": 2}
    second = _apply(engine, recs)
    assert not second.created and not second.updated
    assert second.unchanged == {"site": 1, "pod": 1, "rack": 1, "feed": 1, "server": 2}


def test_new_servers_take_the_given_state_and_record_it_as_imported(engine: Engine) -> None:
    _apply(engine, [*_base(), _server("a1", 1, "02:00:5e:00:00:01", state="deployed")])
    with Session(engine) as s:
        server = s.execute(select(Server)).scalar_one()
        change = s.execute(select(StateChange)).scalar_one()
    assert server.state == "deployed"
    assert (change.server_id, change.to_state, change.reason, change.actor) == (server.id, "deployed", "imported",
                                                                                "tester")


def test_existing_servers_keep_their_state_with_a_warning(engine: Engine) -> None:
    _apply(engine, [*_base(), _server("a1", 1, "02:00:5e:00:00:01", state="new")])
    report = _apply(engine, [_server("a1", 1, "02:00:5e:00:00:01", state="deployed")])
    with Session(engine) as s:
        assert s.execute(select(Server.state)).scalar_one() == "new"
    assert any("fleet state" in w and "a1" in w for w in report.warnings)


def test_upsert_updates_given_fields_and_keeps_absent_ones(engine: Engine) -> None:
    _apply(engine, [*_base(), _server("a1", 1, "02:00:5e:00:00:01", serial="S1", tags=["x"])])
    report = _apply(engine, [build("server", {"hostname": "a1", "serial": "S2"})])
    assert report.updated == {"server": 1}
    with Session(engine) as s:
        server = s.execute(select(Server)).scalar_one()
        assert (server.serial, server.position) == ("S2", 1)
        assert s.execute(select(ServerTag.tag)).scalars().all() == ["x"]
        assert s.execute(select(Nic.mac)).scalars().all() == ["02:00:5e:00:00:01"]


def test_given_nics_replace_the_stored_ones(engine: Engine) -> None:
    _apply(engine, [*_base(), _server("a1", 1, "02:00:5e:00:00:01")])
    _apply(engine, [_server("a1", 1, "02:00:5e:00:00:09")])
    with Session(engine) as s:
        assert s.execute(select(Nic.mac)).scalars().all() == ["02:00:5e:00:00:09"]


def test_a_mac_may_move_between_two_servers_of_the_same_batch(engine: Engine) -> None:
    _apply(engine, [*_base(), _server("a1", 1, "02:00:5e:00:00:01"), _server("a2", 2, "02:00:5e:00:00:02")])
    _apply(engine, [_server("a1", 1, "02:00:5e:00:00:02"), _server("a2", 2, "02:00:5e:00:00:01")])
    with Session(engine) as s:
        pairs = dict(s.execute(select(Server.hostname, Nic.mac).join(Nic, Nic.server_id == Server.id)).all())
    assert pairs == {"a1": "02:00:5e:00:00:02", "a2": "02:00:5e:00:00:01"}


def test_create_mode_refuses_an_existing_hostname(engine: Engine) -> None:
    _apply(engine, [*_base(), _server("a1", 1, "02:00:5e:00:00:01")])
    with pytest.raises(ConflictError, match=r"a1.*already exists"):
        _apply(engine, [_server("a1", 2, "02:00:5e:00:00:02")], mode="create")


@pytest.mark.parametrize(("second", "field", "message"), [
    (lambda: _server("b1", 5, "02:00:5e:00:00:01"), "mac", "already belongs to a1"),
    (lambda: _server("b1", 5, "02:00:5e:00:00:05", primary_ip="127.0.1.1"), "primary_ip", "primary IP of a1"),
    (lambda: _server("b1", 1, "02:00:5e:00:00:05"), "position", "overlaps a1"),
    (lambda: _server("b1", 10, "02:00:5e:00:00:05", height=2), "position", "does not fit"),
])
def test_conflicts_with_stored_servers_are_refused_naming_line_and_field(engine: Engine, second: Any, field: str,
                                                                           message: str) -> None:
    _apply(engine, [*_base(), _server("a1", 1, "02:00:5e:00:00:01", primary_ip="127.0.1.1")])
    rec = second()
    with pytest.raises(ConflictError, match=message) as exc:
        _apply(engine, [rec])
    assert exc.value.field == field and exc.value.location == rec.loc  # type: ignore[attr-defined]
    assert _count(engine, Server) == 1


@pytest.mark.parametrize(("recs", "field", "message"), [
    (lambda: [_server("a1", 1, "02:00:5e:00:00:01"), _server("a1", 2, "02:00:5e:00:00:02")], "hostname",
     "appears twice"),
    (lambda: [_server("a1", 1, "02:00:5e:00:00:01"), _server("a2", 2, "02:00:5e:00:00:01")], "mac",
     "given twice"),
    (lambda: [_server("a1", 1, "02:00:5e:00:00:01", height=2), _server("a2", 2, "02:00:5e:00:00:02")],
     "position", "overlaps a1"),
])
def test_duplicates_within_one_batch_are_refused(engine: Engine, recs: Any, field: str, message: str) -> None:
    with pytest.raises(ConflictError, match=message) as exc:
        _apply(engine, [*_base(), *recs()])
    assert exc.value.field == field  # type: ignore[attr-defined]
    assert _count(engine, Server) == 0


@pytest.mark.parametrize(("extra", "field", "message"), [
    ({"rack": "r9"}, "rack", "unknown rack 'r9'"),
    ({"site": "s9"}, "site", "unknown site 's9'"),
    ({"profile": "dell-r64O"}, "profile", "did you mean dell-r640"),
    ({"bmc_credential": "nope"}, "bmc_credential", "unknown credential"),
    ({"pod": "p9"}, "pod", "is in pod 'p1'"),
])
def test_unknown_references_are_refused(engine: Engine, extra: dict, field: str, message: str) -> None:
    rec = _server("a1", 1, "02:00:5e:00:00:01", **extra)
    with pytest.raises(ValidationError, match=message) as exc:
        _apply(engine, [*_base(), rec])
    assert exc.value.field == field and exc.value.location == "t.yaml:1"


def test_ups_outlets_and_per_server_ups_reference(engine: Engine) -> None:
    recs = [*_base(), _server("a1", 1, "02:00:5e:00:00:01", ups="ups-a1"), _server("a2", 2, "02:00:5e:00:00:02"),
            build("ups", {"name": "ups-a1", "site": "s1", "rack": "r1", "kind": "server", "protocol": "nut",
                          "host": "127.0.0.1", "nut_name": "a1", "profile": "apc-back-ups-nut"}),
            build("ups", {"name": "ups-r1", "site": "s1", "rack": "r1", "host": "127.0.0.2", "feed": "f1",
                          "credential": "snmp-a", "outlets": [{"number": 1, "server": "a2"}]})]
    _apply(engine, recs)
    with Session(engine) as s:
        rows = s.execute(select(Ups.name, Ups.port, Outlet.number, Server.hostname)
                         .join(Outlet, Outlet.ups_id == Ups.id).join(Server, Server.id == Outlet.server_id)
                         .order_by(Ups.name)).all()
    assert [tuple(r) for r in rows] == [("ups-a1", 3493, 0, "a1"), ("ups-r1", 161, 1, "a2")]
    assert not _apply(engine, recs).updated


def test_a_server_naming_a_stored_ups_takes_its_outlet_0_once(engine: Engine) -> None:
    ups = build("ups", {"name": "ups-a1", "site": "s1", "host": "127.0.0.1", "protocol": "nut", "nut_name": "a1",
                        "profile": "apc-back-ups-nut", "kind": "server"})
    _apply(engine, [*_base(), ups, _server("a2", 2, "02:00:5e:00:00:02")])
    assert _apply(engine, [_server("a1", 1, "02:00:5e:00:00:01", ups="ups-a1")]).updated == {"ups": 1}
    assert not _apply(engine, [_server("a1", 1, "02:00:5e:00:00:01", ups="ups-a1")]).updated
    with pytest.raises(ConflictError, match="already feeds another server"):
        _apply(engine, [_server("a2", 2, "02:00:5e:00:00:02", ups="ups-a1")])
    with Session(engine) as s:
        assert s.execute(select(Outlet.number, Server.hostname).join(Server, Server.id == Outlet.server_id)
                         ).all() == [(0, "a1")]


@pytest.mark.parametrize(("outlets", "message"), [
    ([{"number": 1, "server": "a1"}, {"number": 1, "server": "a2"}], "outlet 1 of pdu1 is given twice"),
    ([{"number": 1, "server": "a1"}, {"number": 2, "server": "a1"}], "PSU 1 of a1 is fed by"),
    ([{"number": 1, "server": "zz"}], "unknown server 'zz'"),
])
def test_outlet_mistakes_are_refused(engine: Engine, outlets: list, message: str) -> None:
    pdu = build("pdu", {"name": "pdu1", "site": "s1", "host": "127.0.0.3", "outlets": outlets})
    with pytest.raises((ConflictError, ValidationError), match=message):
        _apply(engine, [*_base(), _server("a1", 1, "02:00:5e:00:00:01"), _server("a2", 2, "02:00:5e:00:00:02"),
                        pdu])
    assert _count(engine, Server) == 0


def test_unknown_ups_profile_is_refused(engine: Engine) -> None:
    ups = build("ups", {"name": "u", "site": "s1", "host": "127.0.0.2", "profile": "apc-smart-upz"}, loc="u.yaml:4")
    with pytest.raises(ValidationError, match="apc-smart-ups") as exc:
        _apply(engine, [*_base(), ups])
    assert exc.value.location == "u.yaml:4"


@pytest.mark.parametrize(("rec", "message"), [
    (lambda: build("ups", {"name": "u", "site": "s1", "host": "127.0.0.2", "profile": "dell-r640"}),
     "'dell-r640' is for a server, not a ups"),
    (lambda: build("ups", {"name": "u", "site": "s1", "host": "127.0.0.1", "protocol": "nut", "nut_name": "u"}),
     "NUT profiles: .*apc-back-ups-nut"),
    (lambda: _server("a1", 1, "02:00:5e:00:00:01", profile="apc-rpdu"), "is for a pdu, not a server"),
])
def test_a_profile_must_exist_and_fit_the_device(engine: Engine, rec: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as exc:
        _apply(engine, [*_base(), rec()])
    assert exc.value.field == "profile"


def test_credentials_are_sealed_and_reimport_is_unchanged(sqlite_engine: Engine, keyring: KeyRing) -> None:
    cred = build("credential", {"name": "ipmi-x", "kind": "ipmi", "username": "admin", "secret": "pw-1"})
    assert _apply(sqlite_engine, [cred], keyring=keyring).created == {"credential": 1}
    with Session(sqlite_engine) as s:
        sealed = s.execute(select(Credential.secret)).scalar_one()
    assert b"pw-1" not in sealed and keyring.open(sealed).reveal() == "pw-1"
    assert _apply(sqlite_engine, [cred], keyring=keyring).unchanged == {"credential": 1}
    with pytest.raises(ValidationError, match="secret key"):
        _apply(sqlite_engine, [cred])


# -- hypothesis: a random bad value is refused and nothing is half-written ---------------------------------


_FIELDS = st.sampled_from(["hostname", "position", "bmc", "primary_ip", "mac", "tags", "serial", "priority"])


@pytest.fixture
def fresh_engine(sqlite_engine: Engine) -> Iterator[Engine]:
    _apply(sqlite_engine, _base())
    yield sqlite_engine


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=_FIELDS, value=st.one_of(st.text(max_size=20), st.integers(-5, 500), st.none()),
       index=st.integers(0, 4))
def test_a_random_bad_value_is_refused_and_nothing_is_half_written(fresh_engine: Engine, field: str, value: Any,
                                                                     index: int) -> None:
    raws = [{"hostname": f"h{i}", "site": "s1", "rack": "r1", "position": i + 1, "bmc": f"127.0.0.{i + 10}",
             "primary_ip": f"127.0.1.{i + 10}", "mac": f"02:00:5e:00:01:{i:02x}", "tags": ["t"], "serial": f"S{i}",
             "priority": 100} for i in range(5)]
    raws[index][field] = value
    before = _count(fresh_engine, Server)
    try:
        recs = [build("server", r, loc=f"gen.yaml:{i + 1}") for i, r in enumerate(raws)]
        _apply(fresh_engine, recs)
    except (ValidationError, ConflictError) as exc:
        assert getattr(exc, "location", None) and getattr(exc, "field", None)
        assert _count(fresh_engine, Server) == before
        return
    assert before == 0 and _count(fresh_engine, Server) == 5
    with Session(fresh_engine) as s:  # leave the engine as the next example expects it
        for server_id in s.execute(select(Server.id)).scalars():
            s.execute(Server.__table__.delete().where(Server.id == server_id))
        s.commit()


@pytest.mark.parametrize(("kind", "raw"), [
    ("server", {"hostname": "web-1", "nics": [{"name": "eth0\n", "mac": "02:00:00:00:00:01"}]}),
    ("pool", {"name": "p1", "cidr": "127.9.0.0/24", "purpose": "bmc\n"}),
    ("server", {"hostname": "web-1\n"}),
    ("site", {"code": "par1\n"}),
    ("server", {"hostname": "web-1", "tags": ["gpu\n"]}),
])
def test_a_trailing_newline_is_refused_wherever_a_name_may_reach_a_config_file(kind: str, raw: dict) -> None:
    from inventory.records import build

    try:
        record = build(kind, raw, "x:1")
    except ValidationError:
        return
    text = repr(record)
    assert "\\n" not in text, f"{kind} kept a newline: {text}"


def test_a_mac_written_with_decimal_digits_only_is_still_a_mac() -> None:
    """001122334455 is a real MAC in bare form; the fast path once refused all-digit strings."""
    assert convert._mac("001122334455", "mac") == check_mac("001122334455") == "00:11:22:33:44:55"
