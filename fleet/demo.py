"""``make demo``: a fresh inventory from the bundled example fleet, shown with ``fleet list``.

Runs the real CLI (``fleet.cli.main``) step by step, printing each command as a person would type
it, so the demo is also a tour. ``FLEET_DB`` and ``FLEET_KEY_FILE`` point into the demo folder
(the Makefile sets them); ``HEADLESS=1`` is accepted now and will skip the TUI once it exists.
"""

from __future__ import annotations

import io
import os
import shlex
import sys
from pathlib import Path

from fleet.cli import main as fleet_main

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "example-fleet.yaml"
# The example fleet's BMCs and UPSes are simulated on loopback; these are their lab credentials.
DEMO_CREDENTIALS = [
    ("ipmi-default", "ipmi", "admin", "password"),
    ("ssh-deploy", "ssh", "deploy", "deploy-password"),
    ("snmp-ro", "snmp-v2c", "", "public"),
    ("nut-monitor", "nut", "monitor", "secret"),
]


def _run(*argv: str, stdin: str | None = None) -> None:
    print(f"\n$ fleet {' '.join(shlex.quote(a) for a in argv)}", flush=True)
    saved = sys.stdin
    if stdin is not None:
        sys.stdin = io.StringIO(stdin + "\n")
    try:
        code = fleet_main(list(argv))
    finally:
        sys.stdin = saved
    if code != 0:
        raise SystemExit(f"demo step failed (exit {code}): fleet {' '.join(argv)}")


def main() -> int:
    if not os.environ.get("FLEET_DB"):
        print("the demo expects FLEET_DB (make demo sets it)", file=sys.stderr)
        return 2
    _run("init")
    for name, kind, user, secret in DEMO_CREDENTIALS:
        args = ["credentials", "set", name, "--kind", kind, "--password-stdin"]
        if user:
            args += ["--user", user]
        _run(*args, stdin=secret)
    _run("import", str(EXAMPLE.relative_to(REPO)) if Path.cwd() == REPO else str(EXAMPLE))
    _run("sites")
    _run("racks")
    _run("list")
    _run("list", "site=par1", "state=deployed", "tag=db")
    _run("credentials", "list")
    db = os.environ["FLEET_DB"]
    print(f"\nThe demo inventory is {db}. Try, for example:\n"
          f"  export FLEET_DB={db} FLEET_KEY_FILE={os.environ.get('FLEET_KEY_FILE', '')}\n"
          "  .venv/bin/fleet list tag=web --json\n"
          "  .venv/bin/fleet show <host>\n"
          "  .venv/bin/fleet audit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
