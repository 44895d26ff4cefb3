"""UPS and PDU commands: ups status, ups batteries, outlet on|off|cycle."""

from __future__ import annotations

import argparse

from fleet.service.facade import Fleet

from .output import Out, run_async
from .power_cmds import _confirm


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    ups = sub.add_parser("ups", parents=[common], help="UPS status and battery health")
    ups_sub = ups.add_subparsers(dest="ups_command", metavar="ACTION", required=True)
    p = ups_sub.add_parser("status", parents=[common], help="read the UPSes now (and record what they say)",
                           description="UPS selector: names (globs), site=, rack=, kind=server|rack|room, "
                           "protocol=snmp|nut, profile=, server=HOST (the UPSes feeding it).")
    p.add_argument("selector", nargs="*")
    p.set_defaults(func=cmd_status)
    p = ups_sub.add_parser("batteries", parents=[common], help="battery replacement forecast (age and runtime trend)")
    p.add_argument("selector", nargs="*")
    p.add_argument("--min-runtime", type=float, default=300.0, metavar="SECONDS",
                   help="a battery is due when its runtime at today's load falls below this")
    p.set_defaults(func=cmd_batteries)

    p = sub.add_parser("outlet", parents=[common], help="switch a PDU or UPS outlet, confirmed by read-back",
                       description="TARGET: DEVICE:OUTLET (e.g. pdu-r01:7) or a server's host name (every "
                       "outlet feeding it).")
    p.add_argument("action", choices=("on", "off", "cycle"))
    p.add_argument("target")
    p.add_argument("--yes", "-y", action="store_true")
    p.set_defaults(func=cmd_outlet)


def _fmt(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def cmd_status(args: argparse.Namespace, out: Out) -> int:
    fleet = Fleet.open(args.db)
    readings = run_async(fleet, lambda: fleet.ups_status(args.selector))
    if args.json:
        out.json([r.to_json() for r in readings])
    else:
        out.table(["UPS", "SITE", "RACK", "KIND", "STATUS", "CHARGE %", "RUNTIME", "LOAD %", "INPUT V", "BATT C",
                   "BATT AGE", "ERROR"],
                  [(r.name, r.site, r.rack, r.kind, r.battery.status if r.battery else "unknown",
                    _fmt(r.battery and r.battery.charge_pct, ".0f"),
                    "" if not r.battery or r.battery.runtime_s is None else f"{r.battery.runtime_s / 60:.0f} min",
                    _fmt(r.battery and r.battery.load_pct, ".0f"), _fmt(r.battery and r.battery.input_v, ".1f"),
                    _fmt(r.battery and r.battery.battery_temp_c, ".0f"),
                    "" if r.battery_age_days is None else f"{r.battery_age_days / 365.25:.1f} y", r.error)
                   for r in readings])
    return 1 if any(r.error for r in readings) else 0


def cmd_batteries(args: argparse.Namespace, out: Out) -> int:
    rows = Fleet.open(args.db).battery_forecast(args.selector, min_runtime_s=args.min_runtime)
    if args.json:
        out.json([r.to_json() for r in rows])
    else:
        out.table(["UPS", "INSTALLED", "AGE", "DUE (AGE)", "RUNTIME TREND", "DUE (TREND)", "REPLACE NOW", "WHY"],
                  [(r.name, r.installed, "" if r.age_days is None else f"{r.age_days / 365.25:.1f} y", r.due_by_age,
                    "" if r.runtime_trend_s_per_30d is None else f"{r.runtime_trend_s_per_30d:+.0f} s/30d",
                    r.due_by_trend, "yes" if r.replace_now else "", "; ".join(r.reasons)) for r in rows])
    return 0


def cmd_outlet(args: argparse.Namespace, out: Out) -> int:
    fleet = Fleet.open(args.db)
    if args.action in ("off", "cycle"):
        _confirm(out, f"outlet {args.action} {args.target}?", args.yes)
    results = run_async(fleet, lambda: fleet.outlet(args.target, args.action))
    if args.json:
        out.json([r.to_json() for r in results])
    else:
        out.table(["DEVICE", "OUTLET", "SERVER", "BEFORE", "AFTER", "OK", "ERROR"],
                  [(r.device, r.outlet, r.server, r.before, r.after, "yes" if r.ok else "no", r.error)
                   for r in results])
    return 0 if all(r.ok for r in results) else 1
