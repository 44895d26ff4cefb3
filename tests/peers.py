"""Real peers: skip when one is missing, unless FLEET_REQUIRE_PEERS=1 makes that a failure."""

from __future__ import annotations

import os

import pytest

REQUIRE_PEERS = os.environ.get("FLEET_REQUIRE_PEERS") == "1"
POSTGRES_URL = os.environ.get("FLEET_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def missing_peer(reason: str) -> None:
    """Skip the test for a missing peer; under FLEET_REQUIRE_PEERS=1, fail it instead."""
    if REQUIRE_PEERS:
        pytest.fail(f"required peer missing (FLEET_REQUIRE_PEERS=1): {reason}", pytrace=False)
    pytest.skip(reason)
