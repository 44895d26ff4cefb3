"""BMC enrolment commands: ``fleet bmc trust`` (record the Redfish BMCs' TLS certificates, or a CA bundle)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fleet.errors import InputError
from fleet.service.facade import Fleet

from .output import Out, run_async

__all__ = ["register"]

_STATUS = {"new": "new", "same": "trusted already", "changed": "CHANGED", "error": "error"}


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    bmc = sub.add_parser("bmc", parents=[common], help="BMC enrolment: trust Redfish BMC certificates")
    bmc_sub = bmc.add_subparsers(dest="bmc_command", metavar="COMMAND", required=True)
    p = bmc_sub.add_parser("trust", parents=[common], help="record the TLS certificate each Redfish BMC presents",
                           description="Connect to each selected server's Redfish endpoint (TLS handshake only, "
                           "nothing sent), show host, port and the certificate's SHA-256 fingerprint, and record "
                           "them once confirmed. A certificate that differs from the one on record is only "
                           "replaced with --replace. --ca-file trusts a site CA bundle instead.")
    p.add_argument("selector", nargs="+", help="which servers, e.g. rack=R12 or host=web-1")
    p.add_argument("--yes", "-y", action="store_true", help="record without asking")
    p.add_argument("--replace", action="store_true",
                   help="also re-trust endpoints whose certificate changed (or that were trusted through a CA file)")
    p.add_argument("--ca-file", metavar="PATH", help="trust these servers through this CA bundle (PEM) instead")
    p.set_defaults(func=cmd_trust)


def cmd_trust(args: argparse.Namespace, out: Out) -> int:
    fleet = Fleet.open(args.db)
    if args.ca_file:
        hosts = fleet.bmc_trust_ca_file(args.selector, args.ca_file)
        if args.json:
            out.json({"recorded": hosts, "ca_file": args.ca_file})
        else:
            out.info(f"{len(hosts)} server(s) trust their Redfish BMC through {args.ca_file}")
        return 0

    def confirm(presented: list[Any]) -> bool:
        if args.json or args.yes:  # automation: --json records as --yes does
            return True
        _show(out, presented, args.replace)
        if not sys.stdin.isatty():
            raise InputError("refusing to record certificates without --yes (standard input is not a terminal)")
        out.err.print("record these fingerprints? [y/N] ", end="")
        return sys.stdin.readline().strip().lower() in ("y", "yes")

    result = run_async(fleet, lambda: fleet.bmc_trust(args.selector, confirm=confirm, replace=args.replace))
    if args.json:
        out.json(result)
        return 0 if result.ok else 1
    if args.yes or not result.recorded:
        _show(out, result.presented, args.replace)
    for p in result.presented:
        if p.status == "changed" and p.hostname not in result.recorded:
            was = p.recorded or f"the CA file {p.ca_file}"
            out.warn(f"{p.hostname}: the certificate changed (on record: {was}; presented: {p.fingerprint}); "
                     "kept what is on record: check the BMC, then re-trust it with --replace")
    if result.declined:
        out.info("not confirmed; nothing was recorded")
    elif result.recorded:
        out.info(f"recorded the certificates of {len(result.recorded)} server(s)")
    return 0 if result.ok else 1


def _show(out: Out, presented: list[Any], replace: bool) -> None:
    def what(p: Any) -> str:
        if p.status == "changed":
            return "CHANGED: " + ("will replace" if replace else "kept (--replace to re-trust)")
        return _STATUS[p.status]

    out.table(["SERVER", "HOST", "PORT", "FINGERPRINT", "STATUS"],
              [(p.hostname, p.host or "-", p.port or "-", p.fingerprint or p.error, what(p)) for p in presented])
