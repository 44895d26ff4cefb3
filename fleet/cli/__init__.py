"""The ``fleet`` command: a thin layer over :class:`fleet.Fleet`.

Exit codes: 0 ok; 1 the operation failed; 2 bad usage or bad input (nothing was changed).
Every listing takes ``--json``. Global options (``--db``, ``--json``) may stand before or after
the command.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from fleet.errors import FleetError

from . import (
    bmc_cmds,
    image_cmds,
    inventory_cmds,
    lab_cmds,
    metrics_cmds,
    power_cmds,
    pxe_cmds,
    sweep_cmds,
    tui_cmds,
    ups_cmds,
)
from .backup_cmds import register as register_backup
from .output import Out

__all__ = ["build_parser", "main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own exit code for usage errors is 2 as well
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", default=argparse.SUPPRESS,
                        help="inventory: a file path or URL (default: $FLEET_DB, else ./fleet.db)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="machine-readable output on stdout")
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = _Parser(prog="fleet", parents=[common],
                     description="Rackfleet: bare-metal provisioning and fleet management.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    inventory_cmds.register(sub, common)
    register_backup(sub, common)
    power_cmds.register(sub, common)
    bmc_cmds.register(sub, common)
    ups_cmds.register(sub, common)
    sweep_cmds.register(sub, common)
    sweep_cmds.register_remediation(sub, common)
    lab_cmds.register(sub, common)
    image_cmds.register(sub, common)
    metrics_cmds.register(sub, common)
    pxe_cmds.register(sub, common)
    tui_cmds.register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        if not getattr(args, "json", False) and tui_cmds.wants_tui():  # a person at a terminal
            args = parser.parse_args(["tui", *(["--db", args.db] if getattr(args, "db", None) else [])])
        else:
            parser.print_help()
            return EXIT_USAGE
    json_mode = bool(getattr(args, "json", False))
    args.json = json_mode
    args.db = getattr(args, "db", None)
    out = Out(json_mode)
    try:
        return int(args.func(args, out) or EXIT_OK)
    except FleetError as exc:
        out.error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        out.error("interrupted")
        return 130
    except BrokenPipeError:  # e.g. `fleet list | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:  # a bug: say so plainly, with the traceback on request
        if os.environ.get("FLEET_DEBUG"):
            raise
        out.error(f"internal error: {exc.__class__.__name__}: {exc} (run again with FLEET_DEBUG=1 for the "
                  "traceback, and please report it)")
        return EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
