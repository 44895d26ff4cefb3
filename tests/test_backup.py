"""Backup and restore: export + an encrypted secrets file, imported into a fresh inventory (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, select
from sqlmodel import Session

from fleet import Fleet
from fleet.errors import FleetError, ImportFailed, InputError, SecretError
from fleet.ops.ups import credential_json
from inventory import backup
from inventory.db import make_engine, upgrade
from inventory.models import Credential, Server
from inventory.secrets import KeyRing

from .clihelp import fleet as run
from .test_import import EXAMPLE, REPO, dump

PASSPHRASE = "correct horse battery staple"
PEM = Ed25519PrivateKey.generate().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                                 serialization.NoEncryption()).decode()
#: One credential of every kind, with the secrets a real room has (two SNMPv3 passphrases, a PEM key).
SECRETS = {
    "ipmi-default": ("ipmi", "admin", "ipmi-pw-1", {}),
    "ssh-deploy": ("ssh", "deploy", PEM, {}),
    "ssh-password": ("ssh", "root", "a password with spaces", {}),
    "snmp-ro": ("snmp-v2c", "", "public-community", {}),
    "snmp-v3-lab": ("snmp-v3", "monitor", credential_json("auth-passphrase-1", "priv-passphrase-2"),
                    {"auth_proto": "SHA", "priv_proto": "AES"}),
    "nut-monitor": ("nut", "monitor", "nut-secret", {}),
}


def _source(tmp_path: Path) -> Fleet:
    """An inventory with the example fleet, every kind of credential, and the references to them."""
    engine = make_engine("sqlite://")
    upgrade(engine)
    fleet = Fleet(engine, keyring=KeyRing(Fernet.generate_key()), actor="tester")
    for name, (kind, user, secret, options) in SECRETS.items():
        fleet.set_credential(name, kind, secret, username=user, options=options)
    fleet.import_files([EXAMPLE])
    fleet.assign_credential("snmp-v3-lab", ["ups-par1-r01"])
    return fleet


def _backup(fleet: Fleet, tmp_path: Path) -> tuple[Path, Path]:
    export = tmp_path / "backup.yaml"
    export.write_text(fleet.export("yaml"))
    secrets = tmp_path / "backup.secrets"
    fleet.export_secrets(secrets, PASSPHRASE)
    return export, secrets


def test_export_with_secrets_round_trips_into_a_fresh_inventory(any_engine: Engine, tmp_path: Path) -> None:
    source = _source(tmp_path)
    export, secrets = _backup(source, tmp_path)
    target = Fleet(any_engine, keyring=KeyRing(Fernet.generate_key()), actor="tester")  # another key ring

    result = target.import_files([export], secrets=[secrets], passphrase=PASSPHRASE)

    assert result.created["credential"] == len(SECRETS) and result.created["server"] == 24
    for name, (_kind, user, secret, _options) in SECRETS.items():
        assert target.secret(name) == source.secret(name)
        got_user, got = target.secret(name)
        assert (got_user, got.reveal()) == (user, secret)
    assert {c.name: (c.kind, c.used_by) for c in target.credentials()} == \
        {c.name: (c.kind, c.used_by) for c in source.credentials()}
    with Session(any_engine) as s:  # re-sealed with the target's key: the source's key cannot open it
        sealed = s.execute(select(Credential.secret).where(Credential.name == "ssh-deploy")).scalar_one()
        assert s.execute(select(Server.bmc_credential_id).where(Server.bmc_credential_id.is_(None))).first() is None
    with pytest.raises(SecretError):
        source.keyring.open(sealed)
    assert target.export("yaml") == source.export("yaml")  # the servers, UPS units and PDUs name them again


def test_the_secrets_file_is_private_encrypted_and_the_export_holds_no_secret(tmp_path: Path) -> None:
    source = _source(tmp_path)
    export, secrets = _backup(source, tmp_path)
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    data = secrets.read_bytes()
    header = json.loads(data.splitlines()[1])
    assert data.startswith(b"rackfleet-secrets 1\n")
    assert header["kdf"]["name"] == "scrypt" and header["kdf"]["n"] >= 2**15 and header["kdf"]["r"] == 8
    assert len(backup._unb64(header["kdf"]["salt"], "salt")) == 16
    other = tmp_path / "again.secrets"
    source.export_secrets(other, PASSPHRASE)
    assert json.loads(other.read_bytes().splitlines()[1])["kdf"]["salt"] != header["kdf"]["salt"]  # salt per file
    for _kind, _user, secret, _options in SECRETS.values():
        for line in secret.splitlines():
            assert line.encode() not in data and line not in export.read_text()
    audit = next(a for a in source.audit(limit=5) if a.action == "export.secrets")
    assert sorted(audit.targets) == sorted(SECRETS) and audit.actor == "tester"
    assert not any(secret in json.dumps(audit.to_json()) for _k, _u, secret, _o in SECRETS.values())


def test_a_wrong_passphrase_is_one_line_and_writes_nothing(sqlite_fleet: Fleet, tmp_path: Path) -> None:
    export, secrets = _backup(_source(tmp_path), tmp_path)
    before = dump(sqlite_fleet.engine)
    with pytest.raises(SecretError) as err:
        sqlite_fleet.import_files([export], secrets=[secrets], passphrase="not the passphrase")
    assert "wrong passphrase" in str(err.value) and "\n" not in str(err.value)
    assert dump(sqlite_fleet.engine) == before


@pytest.mark.parametrize("where", ["magic", "kdf-n", "salt", "nonce", "ciphertext", "tag"])
def test_a_tampered_secrets_file_is_refused_and_writes_nothing(sqlite_fleet: Fleet, tmp_path: Path,
                                                                where: str) -> None:
    export, secrets = _backup(_source(tmp_path), tmp_path)
    data = bytearray(secrets.read_bytes())
    header_at = data.index(b"\n") + 1
    body_at = data.index(b"\n", header_at) + 1
    at = {"magic": 3, "kdf-n": data.index(b'"n": ') + 5, "salt": data.index(b'"salt": "') + 10,
          "nonce": data.index(b'"nonce": "') + 11, "ciphertext": (body_at + len(data)) // 2,
          "tag": len(data) - 3}[where]
    data[at] ^= 0x01  # one bit of one byte
    secrets.write_bytes(bytes(data))
    before = dump(sqlite_fleet.engine)
    with pytest.raises(FleetError) as err:
        sqlite_fleet.import_files([export], secrets=[secrets], passphrase=PASSPHRASE)
    assert "\n" not in str(err.value) and str(secrets) in str(err.value)
    assert dump(sqlite_fleet.engine) == before


def test_unresolved_credentials_name_the_options_that_fix_them(sqlite_fleet: Fleet, tmp_path: Path) -> None:
    export, _secrets = _backup(_source(tmp_path), tmp_path)
    with pytest.raises(ImportFailed) as err:
        sqlite_fleet.import_files([export])
    message = str(err.value)
    assert "unknown credential 'ipmi-default'" in message
    assert "--secrets FILE" in message and "fleet credentials set ipmi-default" in message
    assert "--without-credentials" in message and "credential add" not in message


def test_no_text_names_the_command_that_does_not_exist() -> None:
    offenders = [str(p.relative_to(REPO)) for base in ("fleet", "inventory", "tui", "docs", "examples")
                 for p in (REPO / base).rglob("*") if p.is_file() and p.suffix in (".py", ".md", ".yaml", ".tcss")
                 and "credential add" in p.read_text(errors="replace")]
    assert offenders == [] and "credential add" not in (REPO / "README.md").read_text()


def test_without_credentials_imports_the_rest_and_lists_what_it_left(sqlite_fleet: Fleet, tmp_path: Path) -> None:
    export, _secrets = _backup(_source(tmp_path), tmp_path)
    sqlite_fleet.set_credential("nut-monitor", "nut", "nut-secret", username="monitor")  # this one is there

    result = sqlite_fleet.import_files([export], without_credentials=True)

    assert result.created["server"] == 24
    left = {(u.kind, u.name, u.field, u.credential) for u in result.without_credentials}
    assert ("server", "db01.par1.example.net", "bmc_credential", "ipmi-default") in left
    assert ("server", "db01.par1.example.net", "ssh_credential", "ssh-deploy") in left
    assert ("ups", "ups-par1-r01", "credential", "snmp-v3-lab") in left
    assert ("pdu", "pdu-par1-c01-r1", "credential", "snmp-ro") in left
    assert not any(u[3] == "nut-monitor" for u in left)  # resolved references stay
    assert len(left) == 24 * 2 + 2 + 1
    assert {c.name: c.used_by for c in sqlite_fleet.credentials()} == {"nut-monitor": 6}
    with Session(sqlite_fleet.engine) as s:
        assert s.execute(select(Server.id).where(Server.bmc_credential_id.is_not(None))).first() is None
    assert result.to_json()["without_credentials"][0] == {"kind": "pdu", "name": "pdu-par1-c01-r1",
                                                          "field": "credential", "credential": "snmp-ro"}


def test_an_encrypted_file_needs_its_passphrase(sqlite_fleet: Fleet, tmp_path: Path) -> None:
    export, secrets = _backup(_source(tmp_path), tmp_path)
    with pytest.raises(InputError, match="passphrase"):
        sqlite_fleet.import_files([export], secrets=[secrets])


def test_cli_backup_and_restore(tmp_path: Path) -> None:
    """As an operator would: export with --secrets (passphrase piped), then import into a new inventory."""
    from .clihelp import fresh_env

    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    src = fresh_env(tmp_path / "src")
    with Fleet.open(src["FLEET_DB"], key_path=Path(src["FLEET_KEY_FILE"])) as setup:  # not what is tested here
        for name, (kind, user, secret, options) in SECRETS.items():
            setup.set_credential(name, kind, secret, username=user, options=options)
        setup.import_files([EXAMPLE])
    secrets = tmp_path / "creds.enc"
    done = run(src, "export", "--secrets", str(secrets), stdin=PASSPHRASE + "\n")
    assert done.returncode == 0, done.stderr
    export = tmp_path / "backup.yaml"
    export.write_text(done.stdout)
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600

    dst = fresh_env(tmp_path / "dst")
    refused = run(dst, "import", str(export))
    assert refused.returncode == 2 and "--secrets FILE" in refused.stderr and "--without-credentials" in refused.stderr
    wrong = run(dst, "import", str(export), "--secrets", str(secrets), stdin="wrong passphrase\n")
    assert wrong.returncode != 0 and wrong.stderr.count("\n") == 1 and "wrong passphrase" in wrong.stderr
    left = run(dst, "import", str(export), "--without-credentials", "--dry-run", "--json")
    assert left.returncode == 0, left.stderr
    assert len(json.loads(left.stdout)["without_credentials"]) == 24 * 2 + 1 + 6 + 2  # +6 NUT: none exists here
    text = run(dst, "import", str(export), "--without-credentials", "--dry-run")
    assert "web01.par1.example.net" in text.stdout and "imported without their credential" in text.stderr
    phrase = tmp_path / "phrase"
    phrase.write_text(PASSPHRASE + "\n")
    done = run(dst, "import", str(export), "--secrets", str(secrets), "--passphrase-file", str(phrase), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["created"]["credential"] == len(SECRETS)
    assert run(dst, "export").stdout == export.read_text()
    with Fleet.open(dst["FLEET_DB"], key_path=Path(dst["FLEET_KEY_FILE"])) as restored:
        assert [restored.secret(name)[1].reveal() for name in SECRETS] == [v[2] for v in SECRETS.values()]
