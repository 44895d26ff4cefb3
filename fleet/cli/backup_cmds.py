"""Backup and migration: ``export --secrets``, ``import --secrets/--without-credentials``, ``migrate``.

``export`` and ``import`` themselves live in :mod:`fleet.cli.inventory_cmds`; this module gives them
their backup options and handles the passphrase. A passphrase is never an argument: it comes from
``--passphrase-file``, else the first line of standard input when that is not a terminal, else a
prompt (asked twice when it seals a file).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

from fleet.errors import InputError
from fleet.service.facade import Fleet

from .output import Out

__all__ = ["add_export_options", "add_import_options", "export_secrets", "passphrase_reader", "register",
           "report_without_credentials"]


def add_export_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--secrets", type=Path, metavar="FILE",
                   help="also write every credential, encrypted to a passphrase, to FILE (mode 0600): the other "
                   "half of a backup, read back by 'fleet import --secrets FILE'")
    p.add_argument("--passphrase-file", type=Path, metavar="FILE",
                   help="read the passphrase from the first line of FILE (else stdin when piped, else a prompt)")


def add_import_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--passphrase-file", type=Path, metavar="FILE",
                   help="the passphrase of an encrypted --secrets file (else stdin when piped, else a prompt)")
    p.add_argument("--without-credentials", action="store_true",
                   help="import devices whose credential is not found without one, and list them")


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    text = "copy this whole inventory into an empty database (e.g. SQLite to PostgreSQL)"
    p = sub.add_parser("migrate", parents=[common], help=text, description=text + ". The target's schema is "
                       "created first (as 'fleet init' does); credentials are copied as ciphertext, so the target "
                       "needs the same secret key.")
    p.add_argument("--to", required=True, metavar="URL", help="the target, e.g. postgresql+psycopg://user@host/db")
    p.set_defaults(func=cmd_migrate)


def _read_passphrase(args: argparse.Namespace, *, confirm: bool, what: str) -> str:
    path = getattr(args, "passphrase_file", None)
    if path is not None:
        try:
            phrase = Path(path).read_text(encoding="utf-8").splitlines()[0] if Path(path).stat().st_size else ""
        except OSError as exc:
            raise InputError(f"--passphrase-file {path}: {exc.strerror}") from None
    elif not sys.stdin.isatty():
        phrase = sys.stdin.readline().rstrip("\r\n")
    else:
        phrase = getpass.getpass(f"passphrase for {what}: ")
        if confirm and getpass.getpass("the same passphrase again: ") != phrase:
            raise InputError("the two passphrases differ")
    if not phrase:
        raise InputError("the passphrase is empty")
    return phrase


def passphrase_reader(args: argparse.Namespace, what: str) -> Any:
    """A callable giving the passphrase of an encrypted secrets file, asked only if one is given."""
    return lambda: _read_passphrase(args, confirm=False, what=what)


def export_secrets(args: argparse.Namespace, out: Out, fleet: Fleet) -> list[str]:
    phrase = _read_passphrase(args, confirm=True, what=str(args.secrets))
    names = fleet.export_secrets(args.secrets, phrase)
    out.info(f"wrote {len(names)} credential(s), encrypted, to {args.secrets}")
    return names


def report_without_credentials(result: Any, out: Out) -> None:
    """The devices an import left without their credential (text, on stderr)."""
    if not result.without_credentials:
        return
    out.warn(f"{len(result.without_credentials)} device reference(s) imported without their credential "
             "(assign one with 'fleet credentials assign NAME TARGETS'):")
    out.table(["KIND", "NAME", "FIELD", "CREDENTIAL"],
              [(u.kind, u.name, u.field, u.credential) for u in result.without_credentials])


def cmd_migrate(args: argparse.Namespace, out: Out) -> int:
    fleet = Fleet.open(args.db)
    last: dict[str, int] = {}

    def progress(table: str, done: int, total: int) -> None:
        if done == total or done - last.get(table, 0) >= 50_000:
            last[table] = done
            out.info(f"{table}: {done}/{total}")

    result = fleet.migrate(args.to, progress=progress)
    if args.json:
        out.json(result)
        return 0
    out.table(["TABLE", "ROWS"], sorted(result.counts.items()))
    out.info(f"copied {sum(result.counts.values())} rows from {result.source} to {result.target}; "
             "credentials were copied as ciphertext: open the target with the same secret key "
             "(FLEET_SECRET_KEY or the key file)")
    return 0
