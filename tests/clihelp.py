"""Running the installed `fleet` console script as a person or a cron job would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

FLEET = str(Path(sys.executable).with_name("fleet"))


def fleet(env: dict[str, str], *argv: str, stdin: str | None = None, timeout: float = 120
          ) -> subprocess.CompletedProcess:
    """``fleet ARGV...`` in ``env``; output captured as text; never raises on a non-zero exit."""
    return subprocess.run([FLEET, *argv], env=env, input=stdin, capture_output=True, text=True, timeout=timeout,
                          check=False)


def fresh_env(tmp_path: Path) -> dict[str, str]:
    """An environment with its own empty inventory and key, acting as "tech"."""
    env = dict(os.environ, FLEET_DB=str(tmp_path / "fleet.db"), FLEET_KEY_FILE=str(tmp_path / "key"),
               FLEET_ACTOR="tech")
    done = fleet(env, "init")
    assert done.returncode == 0, done.stderr
    return env
