"""Credentials: sealed at rest, never shown, checked against the key that made them."""

from __future__ import annotations

import os
import stat

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from fleet import Fleet
from fleet.errors import NotFound, SecretError, ValidationError
from inventory.models import Credential
from inventory.secrets import KeyRing, Secret, load_or_create_key

from .factory import Spec, build

SECRET = "s3cret-Pa55"


def test_secrets_are_encrypted_at_rest_and_open_with_the_key(fleet: Fleet) -> None:
    fleet.set_credential("bmc", "ipmi", SECRET, username="admin")
    with fleet.engine.connect() as conn:
        stored = conn.execute(select(Credential.secret)).scalar_one()
    assert SECRET.encode() not in bytes(stored)
    user, secret = fleet.secret("bmc")
    assert (user, secret.reveal()) == ("admin", SECRET)


def test_a_secret_never_shows_in_repr_listings_or_json(fleet: Fleet) -> None:
    row = fleet.set_credential("bmc", "ipmi", SECRET, username="admin")
    _, secret = fleet.secret("bmc")
    for text in (repr(secret), str(secret), repr(row), str(row.to_json()), str(fleet.credentials())):
        assert SECRET not in text
    with fleet.engine.connect() as conn:
        cred = conn.execute(select(Credential)).first()
    assert SECRET not in repr(cred)
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(Secret(SECRET))


def test_the_audit_records_credential_changes_without_the_secret(fleet: Fleet) -> None:
    fleet.set_credential("bmc", "ipmi", SECRET, username="admin")
    fleet.set_credential("bmc", "ipmi", SECRET + "2", username="admin")
    actions = [a.action for a in fleet.audit()]
    assert actions == ["credentials.replace", "credentials.set"]
    assert all(SECRET not in str(a.to_json()) for a in fleet.audit())


def test_assign_sets_bmc_credentials_by_selector(fleet: Fleet) -> None:
    build(fleet.engine, [Spec("web-1", rack="R1"), Spec("web-2", rack="R2", position=3)])
    fleet.set_credential("bmc", "ipmi", SECRET, username="admin")
    assert fleet.assign_credential("bmc", "rack=R1") == ["web-1"]
    assert fleet.server("web-1").bmc_credential == "bmc"
    assert fleet.server("web-2").bmc_credential is None
    assert [c.used_by for c in fleet.credentials()] == [1]
    with pytest.raises(NotFound):
        fleet.assign_credential("bmc", "rack=R404")


@pytest.mark.parametrize(("kind", "user", "secret", "message"), [
    ("ipmi", "", SECRET, "needs --user"),
    ("ipmi", "admin", "x" * 21, "at most 20 bytes"),
    ("ipmi", "admin", "", "empty"),
    ("telnet", "admin", SECRET, "unknown kind"),
    ("ssh", "root", "two\nlines", "line break"),
])
def test_bad_credentials_are_refused(fleet: Fleet, kind: str, user: str, secret: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        fleet.set_credential("c", kind, secret, username=user)
    assert fleet.credentials() == []


def test_a_wrong_key_is_reported_as_a_wrong_key(tmp_path) -> None:
    db = f"sqlite:///{tmp_path / 'f.db'}"
    key_a = tmp_path / "a.key"
    with Fleet.init(db, key_path=key_a) as fleet:
        fleet.set_credential("bmc", "ipmi", SECRET, username="admin")
    key_b = tmp_path / "b.key"
    load_or_create_key(key_b, create=True)
    with Fleet.open(db, key_path=key_b) as fleet, pytest.raises(SecretError, match="not the one"):
        fleet.secret("bmc")
    with Fleet.open(db, key_path=key_a) as fleet:
        assert fleet.secret("bmc")[1].reveal() == SECRET


def test_init_creates_a_private_key_file_and_refuses_a_readable_one(tmp_path) -> None:
    key = tmp_path / "k" / "secret.key"
    Fleet.init(f"sqlite:///{tmp_path / 'f.db'}", key_path=key).close()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    os.chmod(key, 0o644)
    with pytest.raises(SecretError, match="readable by others"):
        load_or_create_key(key)


def test_key_from_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    key = Fernet.generate_key()
    monkeypatch.setenv("FLEET_SECRET_KEY", key.decode())
    assert load_or_create_key() == key
    monkeypatch.setenv("FLEET_SECRET_KEY", "not-a-key")
    with pytest.raises(SecretError, match="FLEET_SECRET_KEY"):
        load_or_create_key()


def test_keyring_refuses_tokens_from_another_key() -> None:
    a, b = KeyRing(Fernet.generate_key()), KeyRing(Fernet.generate_key())
    with pytest.raises(SecretError, match="cannot decrypt"):
        b.open(a.seal("x"), name="credential c")
