"""Running the installed `fleet` console script as a person or a cron job would.

:func:`fleet` starts the script (a new interpreter: ~1 s of CPU for Python and SQLAlchemy's imports);
:func:`fleet_in_process` runs the same ``main()`` here, for the steps a test only needs done (start the
lab, import it, read the result back) while the commands a test is about still run as the script."""

from __future__ import annotations

import contextlib
import io
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
    done = fleet_in_process(env, "init")  # setup (the script's own `init`: tests/test_cli_inventory.py)
    assert done.returncode == 0, done.stderr
    return env


def fleet_in_process(env: dict[str, str], *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """``fleet ARGV...`` through :func:`fleet.cli.main` in this process, with ``env`` as the whole
    environment for the call (as :func:`fleet` gives it) and stdin/stdout/stderr captured as text: the same
    parser, command and exit code as the script, without starting an interpreter."""
    from fleet.cli import main

    saved, saved_stdin = dict(os.environ), sys.stdin
    out, err = io.StringIO(), io.StringIO()
    os.environ.clear()
    os.environ.update(env)
    sys.stdin = io.StringIO(stdin or "")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(argv))
            except SystemExit as exc:  # argparse: --help, usage errors
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    finally:
        sys.stdin = saved_stdin
        os.environ.clear()
        os.environ.update(saved)
    return subprocess.CompletedProcess([FLEET, *argv], code, out.getvalue(), err.getvalue())
