"""A server's BMC endpoints: IPMI and Redfish side by side, in import, export, edits and the driver chain.

The IPMI endpoint is the server's ``bmc``; the Redfish one its ``redfish`` row of ``bmc_endpoints``,
with its own credential (kind ``redfish``) and TLS trust (a certificate fingerprint or a CA file).
The chain tests use in-memory drivers: what is under test is which endpoint each driver is given.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import yaml

from fleet import Fleet
from fleet.core.targets import bmc_targets
from fleet.drivers.base import Target
from fleet.drivers.registry import registry
from fleet.errors import DeviceUnreachable, ImportFailed, InputError, ValidationError
from fleet.profiles import ProfileSet, load_profiles

from .test_import import write

FP = "sha256:" + "ab" * 32

SERVERS = f"""
sites: [{{code: par1}}]
racks: [{{site: par1, name: R1}}]
servers:
  - {{hostname: both-1, site: par1, rack: R1, position: 1, bmc: 10.0.0.1, bmc_credential: ipmi-admin,
     redfish: "10.0.0.1:8443", redfish_credential: rf-admin, redfish_tls_fingerprint: "{FP}"}}
  - {{hostname: rf-only-1, site: par1, rack: R1, position: 2, redfish: 10.0.0.2, redfish_credential: rf-admin,
     redfish_ca_file: /etc/rackfleet/bmc-ca.pem}}
  - {{hostname: ipmi-1, site: par1, rack: R1, position: 3, bmc: 10.0.0.3, bmc_credential: ipmi-admin}}
"""


def _fleet(fleet: Fleet) -> Fleet:
    fleet.set_credential("ipmi-admin", "ipmi", "pw", username="admin")
    fleet.set_credential("rf-admin", "redfish", "a-long-redfish-password-over-20-bytes", username="root")
    return fleet


@pytest.fixture
def rf_fleet(sqlite_fleet: Fleet, tmp_path: Path) -> Fleet:
    fleet = _fleet(sqlite_fleet)
    fleet.import_files([write(tmp_path, "servers.yaml", SERVERS)])
    return fleet


# -- import, export, show ---------------------------------------------------------------------------------


def test_import_gives_each_server_its_endpoints_and_show_lists_them_without_secrets(rf_fleet: Fleet) -> None:
    both = rf_fleet.server("both-1").to_json()
    assert both["bmc_endpoints"] == [
        {"protocol": "ipmi", "endpoint": "10.0.0.1:623", "credential": "ipmi-admin"},
        {"protocol": "redfish", "endpoint": "10.0.0.1:8443", "credential": "rf-admin", "tls_fingerprint": FP}]
    rf_only = rf_fleet.server("rf-only-1").to_json()
    assert rf_only["bmc"] is None
    assert rf_only["bmc_endpoints"] == [{"protocol": "redfish", "endpoint": "10.0.0.2:443", "credential": "rf-admin",
                                         "ca_file": "/etc/rackfleet/bmc-ca.pem"}]
    assert rf_fleet.server("ipmi-1").to_json()["bmc_endpoints"] == [
        {"protocol": "ipmi", "endpoint": "10.0.0.3:623", "credential": "ipmi-admin"}]
    assert "redfish-password" not in repr(both) + repr(rf_only)
    used = {c.name: c.used_by for c in rf_fleet.credentials()}
    assert used == {"ipmi-admin": 2, "rf-admin": 2}


def test_export_round_trips_the_redfish_endpoint_in_yaml_and_csv(rf_fleet: Fleet, sqlite_engine: Any,
                                                                    keyring: Any, tmp_path: Path) -> None:
    from inventory.db import make_engine, upgrade

    text = rf_fleet.export("yaml")
    doc = yaml.safe_load(text)
    both = next(s for s in doc["servers"] if s["hostname"] == "both-1")
    assert (both["redfish"], both["redfish_credential"], both["redfish_tls_fingerprint"]) == (
        "10.0.0.1:8443", "rf-admin", FP)
    rf_only = next(s for s in doc["servers"] if s["hostname"] == "rf-only-1")
    assert rf_only["redfish"] == "10.0.0.2"  # the default port is not written
    csv_files = rf_fleet.export("csv")
    assert "redfish_tls_fingerprint" in csv_files["servers.csv"].splitlines()[0]
    for fmt in ("yaml", "csv"):
        engine = make_engine("sqlite://")
        upgrade(engine)
        other = _fleet(Fleet(engine, keyring=keyring, actor="tester"))
        folder = tmp_path / fmt
        folder.mkdir()
        if fmt == "yaml":
            (folder / "export.yaml").write_text(text)
        else:
            for name, body in csv_files.items():
                (folder / name).write_text(body)
        assert other.import_files([folder]).created["server"] == 3
        assert other.export("yaml") == text
        again = other.import_files([folder])  # importing the same again changes nothing
        assert not again.updated and again.unchanged["server"] == 3
        engine.dispose()


def test_set_changes_the_redfish_endpoint_and_trust_is_one_or_the_other(rf_fleet: Fleet) -> None:
    rf_fleet.set("ipmi-1", {"redfish": "10.0.0.3", "redfish_credential": "rf-admin"})
    rf_fleet.set("both-1", {"redfish_ca_file": "/etc/ca.pem"})
    eps = {e["protocol"]: e for e in rf_fleet.server("both-1").to_json()["bmc_endpoints"]}
    assert eps["redfish"].get("ca_file") == "/etc/ca.pem" and "tls_fingerprint" not in eps["redfish"]
    assert [e["protocol"] for e in rf_fleet.server("ipmi-1").to_json()["bmc_endpoints"]] == ["ipmi", "redfish"]
    with pytest.raises(ValidationError, match="not both"):
        rf_fleet.set("both-1", {"redfish_ca_file": "/etc/ca.pem", "redfish_tls_fingerprint": FP})


@pytest.mark.parametrize(("fields", "message"), [
    ({"redfish": "10.0.0.9", "redfish_credential": "ipmi-admin"}, "is of kind ipmi"),
    ({"redfish_credential": "rf-admin"}, "no Redfish endpoint yet"),
    ({"redfish": "10.0.0.9", "redfish_tls_fingerprint": "sha1:abcd"}, "not a SHA-256 fingerprint"),
    ({"redfish": "10.0.0.9", "redfish_tls_fingerprint": "sha256:abcd"}, "64 hex digits"),
    ({"redfish": "10.0.0.9", "redfish_credential": "nobody"}, "unknown credential 'nobody'"),
])
def test_import_refuses_a_bad_redfish_endpoint_by_field(rf_fleet: Fleet, tmp_path: Path, fields: dict[str, str],
                                                         message: str) -> None:
    server = {"hostname": "new-1", "site": "par1", "rack": "R1", "position": 9, **fields}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"servers": [server]}))
    with pytest.raises(ImportFailed, match=message):
        rf_fleet.import_files([path])
    assert "new-1" not in [r.hostname for r in rf_fleet.servers()]


def test_fingerprints_are_normalised_from_openssl_form(rf_fleet: Fleet) -> None:
    openssl = "SHA256:" + ":".join(["AB"] * 32)
    rf_fleet.set("rf-only-1", {"redfish_tls_fingerprint": openssl})
    [ep] = rf_fleet.server("rf-only-1").to_json()["bmc_endpoints"]
    assert ep["tls_fingerprint"] == FP and "ca_file" not in ep


def test_a_redfish_credential_is_assigned_to_redfish_endpoints_only(rf_fleet: Fleet) -> None:
    rf_fleet.set_credential("rf-other", "redfish", "pw2", username="ops")
    with pytest.raises(InputError, match=r"no Redfish endpoint \(ipmi-1\)"):
        rf_fleet.assign_credential("rf-other", "host=ipmi-1,both-1")
    assert rf_fleet.assign_credential("rf-other", "host=both-1,rf-only-1") == ["both-1", "rf-only-1"]
    eps = {e["protocol"]: e["credential"] for e in rf_fleet.server("both-1").to_json()["bmc_endpoints"]}
    assert eps == {"ipmi": "ipmi-admin", "redfish": "rf-other"}
    with pytest.raises(ValidationError, match="needs --user"):
        rf_fleet.set_credential("rf-x", "redfish", "pw")


def test_removing_a_server_removes_its_endpoints(rf_fleet: Fleet) -> None:
    rf_fleet.remove("both-1")
    assert {c.name: c.used_by for c in rf_fleet.credentials()} == {"ipmi-admin": 1, "rf-admin": 1}


# -- BMC targets and the chain -------------------------------------------------------------------------------


def test_bmc_targets_give_every_endpoint_with_its_credential_and_trust(rf_fleet: Fleet) -> None:
    targets, problems = bmc_targets(rf_fleet.ctx, None)
    assert problems == []
    by_host = {h: ts for h, ts, _ in targets}
    ipmi, rf = by_host["both-1"]
    assert (ipmi.host, ipmi.port, ipmi.username, ipmi.options["credential_kind"]) == ("10.0.0.1", 623, "admin", "ipmi")
    assert (rf.name, rf.host, rf.port, rf.username) == ("both-1", "10.0.0.1", 8443, "root")
    assert rf.password.reveal() == "a-long-redfish-password-over-20-bytes"
    assert {k: rf.options[k] for k in ("credential_kind", "tls_fingerprint", "ca_file", "profile")} == {
        "credential_kind": "redfish", "tls_fingerprint": FP, "ca_file": None, "profile": "generic-ipmi"}
    assert isinstance(rf.options["quirks"], dict)
    [only] = by_host["rf-only-1"]
    assert (only.port, only.options["ca_file"], only.options["tls_fingerprint"]) == (
        443, "/etc/rackfleet/bmc-ca.pem", None)
    [plain] = by_host["ipmi-1"]
    assert plain.options["credential_kind"] == "ipmi" and "tls_fingerprint" not in plain.options


def test_a_redfish_endpoint_without_credential_is_a_problem_unless_ipmi_serves(rf_fleet: Fleet,
                                                                               tmp_path: Path) -> None:
    rf_fleet.import_files([write(tmp_path, "more.yaml", """
        servers:
          - {hostname: rf-bare, site: par1, rack: R1, position: 5, redfish: 10.0.0.5}
          - {hostname: mixed-bare, site: par1, rack: R1, position: 6, bmc: 10.0.0.6, bmc_credential: ipmi-admin,
             redfish: 10.0.0.6}
        """)])
    targets, problems = bmc_targets(rf_fleet.ctx, "host=rf-bare,mixed-bare")
    assert problems == ["rf-bare: no Redfish credential assigned (fleet credentials assign NAME rf-bare)"]
    [(host, [ipmi], _)] = targets
    assert (host, ipmi.options["credential_kind"]) == ("mixed-bare", "ipmi")


class _Fake:
    """A power driver that records the endpoint it was given; ``fail`` makes it unreachable."""

    def __init__(self, name: str, fail: bool = False) -> None:
        self.name, self.fail = name, fail
        self.seen: list[tuple[str, str, int]] = []

    async def power_status(self, target: Target) -> str:
        self.seen.append((target.name, target.host, target.port))
        if self.fail:
            raise DeviceUnreachable("no route", target=target.name, operation="power status")
        return "on"


@pytest.fixture
def rftest_driver() -> Any:
    registry.register("rftest", f"{__name__}:_Fake", {"power", "sensors", "sel"}, "test only: a Redfish stand-in",
                      credential_kinds={"redfish"})
    try:
        yield
    finally:
        registry.unregister("rftest")


def _chain_fleet(engine: Any, keyring: Any, tmp_path: Path, power: tuple[str, ...], *, rf_fails: bool = False
                 ) -> tuple[Fleet, _Fake, _Fake]:
    base = load_profiles().get("generic-ipmi")
    profile = dataclasses.replace(base, name="rftest-profile",
                                  drivers=MappingProxyType({**base.drivers, "power": power}))
    rf, ipmi = _Fake("rftest", fail=rf_fails), _Fake("ipmi")
    fleet = _fleet(Fleet(engine, keyring=keyring, actor="tester", profiles=ProfileSet([profile]),
                         drivers={"rftest": rf, "ipmi": ipmi}))
    fleet.import_files([write(tmp_path, "servers.yaml", SERVERS.replace(
        "position: 1,", "position: 1, profile: rftest-profile,").replace(
        "position: 2,", "position: 2, profile: rftest-profile,").replace(
        "position: 3,", "position: 3, profile: rftest-profile,"))])
    return fleet, rf, ipmi


def _status(fleet: Fleet) -> dict[str, Any]:
    async def go() -> Any:
        try:
            return await fleet.power("status", None)
        finally:
            await fleet.aclose()
    return {r.hostname: r for r in asyncio.run(go())}


def test_the_chain_gives_each_driver_the_endpoint_whose_credential_it_speaks(
        rftest_driver: None, sqlite_engine: Any, keyring: Any, tmp_path: Path) -> None:
    fleet, rf, ipmi = _chain_fleet(sqlite_engine, keyring, tmp_path, ("rftest", "ipmi"))
    results = _status(fleet)
    assert {h: (r.ok, r.driver) for h, r in results.items()} == {
        "both-1": (True, "rftest"), "rf-only-1": (True, "rftest"), "ipmi-1": (True, "ipmi")}
    assert sorted(rf.seen) == [("both-1", "10.0.0.1", 8443), ("rf-only-1", "10.0.0.2", 443)]
    assert ipmi.seen == [("ipmi-1", "10.0.0.3", 623)]  # an IPMI-only server: as before


def test_an_unreachable_redfish_endpoint_falls_back_to_ipmi_where_there_is_one(
        rftest_driver: None, sqlite_engine: Any, keyring: Any, tmp_path: Path) -> None:
    fleet, _, ipmi = _chain_fleet(sqlite_engine, keyring, tmp_path, ("rftest", "ipmi"), rf_fails=True)
    results = _status(fleet)
    assert (results["both-1"].ok, results["both-1"].driver) == (True, "ipmi")
    assert ("both-1", "10.0.0.1", 623) in ipmi.seen
    assert not results["rf-only-1"].ok and "no route" in results["rf-only-1"].error


def test_a_redfish_only_server_under_an_ipmi_only_profile_says_no_driver_serves_it(
        rftest_driver: None, sqlite_engine: Any, keyring: Any, tmp_path: Path) -> None:
    fleet, rf, ipmi = _chain_fleet(sqlite_engine, keyring, tmp_path, ("ipmi",))
    results = _status(fleet)
    assert not results["rf-only-1"].ok and "no driver can serve power" in results["rf-only-1"].error
    assert rf.seen == [] and ("both-1", "10.0.0.1", 623) in ipmi.seen
