"""``fleet bmc trust``: the certificate a Redfish BMC presents is shown, and recorded only when accepted.

The BMC is a loopback TLS server this test starts, with certificates it makes (``cryptography``);
a changed certificate is kept out until it is re-trusted on request (``replace``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import io
import json
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from fleet import Fleet
from fleet.core.targets import bmc_targets
from fleet.errors import InputError
from inventory.models import Audit

from .test_import import write


def make_certificate(tmp_path: Path, name: str) -> tuple[Path, Path, str]:
    """A self-signed certificate for 127.0.0.1: (cert PEM, key PEM, its sha256: fingerprint)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    der = cert.public_bytes(serialization.Encoding.DER)
    return cert_path, key_path, "sha256:" + hashlib.sha256(der).hexdigest()


class TlsBmc:
    """A loopback TLS listener that completes handshakes with the certificate it is told to present."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.present(cert, key)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def present(self, cert: Path, key: Path) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.context = context

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            conn.settimeout(2)
            try:
                with self.context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)  # until the client closes
            except (OSError, ssl.SSLError):
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, tuple[Path, Path, str]]:
    return {name: make_certificate(tmp_path, name) for name in ("first", "second")}


@pytest.fixture
def bmc(certs: dict[str, tuple[Path, Path, str]]) -> Any:
    server = TlsBmc(*certs["first"][:2])
    yield server
    server.close()


@pytest.fixture
def silent_port() -> Any:
    """A port that accepts connections and never answers a TLS handshake (a hung BMC)."""
    sock = socket.create_server(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _servers_yaml(tmp_path: Path, ports: dict[str, int]) -> Path:
    lines = ["sites: [{code: par1}]", "racks: [{site: par1, name: R1}]", "servers:"]
    for i, (host, port) in enumerate(sorted(ports.items())):
        lines.append(f"  - {{hostname: {host}, site: par1, rack: R1, position: {i + 1}, "
                     f"redfish: '127.0.0.1:{port}', redfish_credential: rf-admin}}")
    return write(tmp_path, "servers.yaml", "\n".join(lines) + "\n")


@pytest.fixture
def trusting(sqlite_engine: Any, keyring: Any) -> Fleet:
    fleet = Fleet(sqlite_engine, keyring=keyring, actor="tester", device_timeout=0.5)
    fleet.set_credential("rf-admin", "redfish", "pw", username="root")
    return fleet


def _trust(fleet: Fleet, selector: str, answer: bool = True, replace: bool = False) -> tuple[Any, list[Any]]:
    asked: list[Any] = []

    def confirm(presented: list[Any]) -> bool:
        asked.append(presented)
        return answer

    return asyncio.run(fleet.bmc_trust(selector, confirm=confirm, replace=replace)), asked


def _recorded(fleet: Fleet, host: str) -> str | None:
    [(_, [target], _)] = bmc_targets(fleet.ctx, f"host={host}")[0]
    return target.options["tls_fingerprint"]


def _audits(fleet: Fleet) -> list[Any]:
    with fleet.ctx.read() as s:
        return list(s.execute(select(Audit).where(Audit.action == "bmc.trust").order_by(Audit.id)).scalars())


def test_trust_shows_and_records_the_presented_fingerprint_and_audits_it(
        trusting: Fleet, bmc: TlsBmc, certs: Any, tmp_path: Path) -> None:
    trusting.import_files([_servers_yaml(tmp_path, {"rf-1": bmc.port})])
    fp = certs["first"][2]
    result, asked = _trust(trusting, "host=rf-1")
    [[shown]] = asked
    assert (shown.hostname, shown.host, shown.port, shown.fingerprint, shown.status) == (
        "rf-1", "127.0.0.1", bmc.port, fp, "new")
    assert result.recorded == ["rf-1"] and result.ok
    assert _recorded(trusting, "rf-1") == fp  # what the driver will verify against
    [audit] = _audits(trusting)
    assert (audit.actor, audit.targets, audit.detail["fingerprints"]) == ("tester", ["rf-1"], {"rf-1": fp})
    again, asked = _trust(trusting, "host=rf-1")  # the same certificate: nothing to ask, nothing written
    assert asked == [] and again.recorded == [] and again.ok and again.presented[0].status == "same"
    assert len(_audits(trusting)) == 1


def test_declined_trust_records_nothing(trusting: Fleet, bmc: TlsBmc, tmp_path: Path) -> None:
    trusting.import_files([_servers_yaml(tmp_path, {"rf-1": bmc.port})])
    result, asked = _trust(trusting, "host=rf-1", answer=False)
    assert len(asked) == 1 and result.declined and not result.ok
    assert _recorded(trusting, "rf-1") is None and _audits(trusting) == []


def test_a_changed_certificate_is_kept_out_until_re_trusted_on_request(
        trusting: Fleet, bmc: TlsBmc, certs: Any, tmp_path: Path) -> None:
    trusting.import_files([_servers_yaml(tmp_path, {"rf-1": bmc.port})])
    first, second = certs["first"][2], certs["second"][2]
    _trust(trusting, "host=rf-1")
    bmc.present(*certs["second"][:2])
    result, asked = _trust(trusting, "host=rf-1")
    [p] = result.presented
    assert (p.status, p.recorded, p.fingerprint) == ("changed", first, second)
    assert asked == [] and result.recorded == [] and not result.ok
    assert _recorded(trusting, "rf-1") == first
    result, asked = _trust(trusting, "host=rf-1", replace=True)
    assert len(asked) == 1 and result.recorded == ["rf-1"] and result.ok
    assert _recorded(trusting, "rf-1") == second
    last = _audits(trusting)[-1]
    assert last.detail["fingerprints"] == {"rf-1": second} and last.detail["replaced"] == {"rf-1": first}


def test_unreachable_and_hung_bmcs_fail_within_the_deadline_and_the_rest_is_recorded(
        trusting: Fleet, bmc: TlsBmc, silent_port: int, tmp_path: Path) -> None:
    trusting.import_files([_servers_yaml(tmp_path, {"rf-1": bmc.port, "rf-hung": silent_port,
                                                    "rf-gone": _closed_port()})])
    trusting.import_files([write(tmp_path, "ipmi.yaml", """
        servers: [{hostname: ipmi-1, site: par1, rack: R1, position: 9, bmc: 127.0.0.1}]
        """)])
    started = time.monotonic()
    result, _ = _trust(trusting, "rack=R1")
    assert time.monotonic() - started < 3  # one deadline (0.5 s), not one per server
    by_host = {p.hostname: p for p in result.presented}
    assert result.recorded == ["rf-1"] and not result.ok
    assert "within 0.5s" in by_host["rf-hung"].error
    assert by_host["rf-gone"].status == "error" and by_host["rf-gone"].error
    assert "no Redfish endpoint" in by_host["ipmi-1"].error


def test_a_ca_file_replaces_fingerprints_and_must_be_a_readable_bundle(
        trusting: Fleet, bmc: TlsBmc, certs: Any, tmp_path: Path) -> None:
    trusting.import_files([_servers_yaml(tmp_path, {"rf-1": bmc.port})])
    _trust(trusting, "host=rf-1")
    ca = certs["second"][0]
    assert trusting.bmc_trust_ca_file("host=rf-1", ca) == ["rf-1"]
    [(_, [target], _)] = bmc_targets(trusting.ctx, "host=rf-1")[0]
    assert (target.options["ca_file"], target.options["tls_fingerprint"]) == (str(ca.resolve()), None)
    assert _audits(trusting)[-1].detail["replaced"] == {"rf-1": certs["first"][2]}
    not_pem = write(tmp_path, "not.pem", "hello\n")
    with pytest.raises(InputError, match="not a readable CA bundle"):
        trusting.bmc_trust_ca_file("host=rf-1", not_pem)
    # Trusted through a CA file: a fingerprint run leaves it unless asked to replace it.
    result, asked = _trust(trusting, "host=rf-1")
    assert result.presented[0].status == "changed" and asked == []


def test_cli_enrols_a_redfish_bmc_and_trusts_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture, bmc: TlsBmc, certs: Any) -> None:
    from fleet.cli import main

    monkeypatch.setenv("FLEET_DB", str(tmp_path / "fleet.db"))
    monkeypatch.setenv("FLEET_KEY_FILE", str(tmp_path / "key"))
    monkeypatch.setenv("FLEET_ACTOR", "tech")

    def cli(*argv: str, stdin: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))  # not a terminal
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    assert cli("init")[0] == 0
    assert cli("add", "site", "par1")[0] == 0
    assert cli("add", "rack", "R1", "--site", "par1")[0] == 0
    assert cli("credentials", "set", "rf-admin", "--kind", "redfish", "--user", "root", "--password-stdin",
               stdin="secret\n")[0] == 0
    code, _, err = cli("add", "server", "rf-1", "--rack", "R1", "--position", "1", "--redfish",
                       f"127.0.0.1:{bmc.port}", "--redfish-credential", "rf-admin")
    assert code == 0, err
    code, out, err = cli("bmc", "trust", "host=rf-1")  # no terminal, no --yes: shown, nothing recorded
    assert code == 2 and "--yes" in err and certs["first"][2] in out
    code, out, err = cli("bmc", "trust", "host=rf-1", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["recorded"] == ["rf-1"] and report["servers"][0]["fingerprint"] == certs["first"][2]
    code, out, _ = cli("show", "rf-1")
    assert f"127.0.0.1:{bmc.port}" in out and certs["first"][2] in out and "secret" not in out
    bmc.present(*certs["second"][:2])
    code, _, err = cli("bmc", "trust", "host=rf-1", "--yes")
    assert code == 1 and "--replace" in err
    code, _, err = cli("bmc", "trust", "host=rf-1", "--yes", "--replace")
    assert code == 0, err
    [ep] = json.loads(cli("show", "rf-1", "--json")[1])["bmc_endpoints"]
    assert ep["tls_fingerprint"] == certs["second"][2]
    assert cli("set", "rf-1", "--redfish", "127.0.0.1:9443")[0] == 0
    [ep] = json.loads(cli("show", "rf-1", "--json")[1])["bmc_endpoints"]
    assert ep["endpoint"] == "127.0.0.1:9443"
