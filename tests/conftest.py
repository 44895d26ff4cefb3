"""Shared fixtures: migrated in-memory SQLite, a private PostgreSQL schema, a Fleet on either."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from fleet import Fleet
from inventory.db import make_engine, upgrade
from inventory.secrets import KeyRing

from .peers import POSTGRES_URL, missing_peer

REPO = Path(__file__).resolve().parent.parent

# CI explores the same examples every run (a found bug fails every time, not by luck); developers'
# runs keep exploring new ones. Failures print the reproducing blob either way.
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
_hypothesis_settings.register_profile("dev", print_blob=True)
_hypothesis_settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(autouse=True)
def _isolated_keys(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the user's real key file or database."""
    keydir = tmp_path_factory.mktemp("keys")
    monkeypatch.setenv("FLEET_KEY_FILE", str(keydir / "secret.key"))
    monkeypatch.delenv("FLEET_SECRET_KEY", raising=False)
    monkeypatch.delenv("FLEET_DB", raising=False)
    monkeypatch.setenv("FLEET_ACTOR", "tester")


@pytest.fixture
def sqlite_engine() -> Iterator[Engine]:
    engine = make_engine("sqlite://")
    upgrade(engine)
    yield engine
    engine.dispose()


def _pg_admin() -> Engine:
    admin = create_engine(POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://", 1),
                          isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        admin.dispose()
        missing_peer(f"PostgreSQL not reachable at {POSTGRES_URL}: {exc.__class__.__name__}")
    return admin


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A private, empty PostgreSQL schema, dropped afterwards."""
    admin = _pg_admin()
    schema = f"fleet_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield schema
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def pg_engine(pg_schema: str) -> Iterator[Engine]:
    engine = make_engine(POSTGRES_URL, pg_schema=pg_schema)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def any_engine(request: pytest.FixtureRequest) -> Engine:
    """The same test on in-memory SQLite and on real PostgreSQL."""
    return request.getfixturevalue("sqlite_engine" if request.param == "sqlite" else "pg_engine")


@pytest.fixture
def keyring() -> KeyRing:
    from cryptography.fernet import Fernet

    return KeyRing(Fernet.generate_key())


@pytest.fixture
def fleet(any_engine: Engine, keyring: KeyRing) -> Fleet:
    """A Fleet on an empty, migrated inventory (SQLite and PostgreSQL)."""
    return Fleet(any_engine, keyring=keyring, actor="tester")


@pytest.fixture
def sqlite_fleet(sqlite_engine: Engine, keyring: KeyRing) -> Fleet:
    return Fleet(sqlite_engine, keyring=keyring, actor="tester")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An environment for the `fleet` command with its own empty inventory and key (see tests/clihelp.py)."""
    from .clihelp import fresh_env

    return fresh_env(tmp_path)
