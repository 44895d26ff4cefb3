"""Power and BMC commands: power, bootdev, sensors, sel, fru, bmc-reset."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

from fleet.errors import InputError
from fleet.ops.power import DISRUPTIVE, BlastRadius
from fleet.service.facade import Fleet

from .output import Out, run_async


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("power", parents=[common], help="power status/on/off/cycle/reset/soft through the BMCs",
                       description="Query first, act, then confirm by query. Servers whose state cannot be "
                       "read are reported and left alone.")
    p.add_argument("action", nargs="?", choices=("status", "on", "off", "cycle", "reset", "soft"))
    p.add_argument("selector", nargs="*", help="which servers, e.g. rack=R12 or web-1")
    p.add_argument("--resume", type=int, metavar="JOB",
                   help="continue an interrupted power job: confirm what it sent, act on what it never sent")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask before a disruptive action")
    p.add_argument("--force", action="store_true", help="go past the blast-radius limits")
    p.add_argument("--wave", type=int, default=0, metavar="N", help="act on N servers at a time")
    p.add_argument("--stagger", type=float, default=0.0, metavar="SECONDS", help="pause between waves")
    p.add_argument("--concurrency", type=int, default=64, metavar="N", help="BMC requests in flight")
    p.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                   help="how long to wait for each server to reach its state")
    p.add_argument("--budget", action="store_true",
                   help="on: switch on in waves that keep every feed, UPS and PDU under its capacity")
    p.add_argument("--plan", action="store_true", help="with --budget: print the plan, switch nothing")
    p.add_argument("--max-servers", type=int, default=BlastRadius.max_servers,
                   help="blast radius: at most this many servers without --force")
    p.add_argument("--max-rack-fraction", type=float, default=BlastRadius.max_rack_fraction,
                   help="blast radius: at most this share of a rack without --force")
    p.set_defaults(func=cmd_power)

    p = sub.add_parser("bootdev", parents=[common], help="set the next boot device, and read it back")
    p.add_argument("device", choices=("pxe", "disk", "bios", "cdrom", "none"))
    p.add_argument("selector", nargs="+")
    p.add_argument("--persistent", action="store_true", help="every boot, not only the next one")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--uefi", action="store_const", const=True, dest="uefi", default=None,
                      help="ask for a UEFI boot (the EFI bit), whatever the inventory and profile say")
    mode.add_argument("--legacy", action="store_const", const=False, dest="uefi",
                      help="ask for a legacy BIOS boot (default: each server's firmware, recorded or by profile)")
    p.set_defaults(func=cmd_bootdev)

    p = sub.add_parser("sensors", parents=[common], help="a server's BMC sensors")
    p.add_argument("host")
    p.set_defaults(func=cmd_sensors)

    p = sub.add_parser("sel", parents=[common], help="a server's BMC system event log")
    p.add_argument("host")
    p.add_argument("--clear", action="store_true", help="clear it after reading (audited)")
    p.set_defaults(func=cmd_sel)

    p = sub.add_parser("fru", parents=[common], help="a server's FRU inventory as its BMC reports it")
    p.add_argument("host")
    p.set_defaults(func=cmd_fru)

    p = sub.add_parser("bmc-reset", parents=[common], help="cold-reset a server's BMC (not the server)")
    p.add_argument("host")
    p.add_argument("--yes", "-y", action="store_true")
    p.set_defaults(func=cmd_bmc_reset)


def _confirm(out: Out, question: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise InputError(f"{question}: refusing without --yes (standard input is not a terminal)")
    out.err.print(f"{question} [y/N] ", end="")
    if sys.stdin.readline().strip().lower() not in ("y", "yes"):
        raise InputError("not confirmed; nothing was done")


async def _power(fleet: Fleet, args: argparse.Namespace, out: Out) -> list[Any]:
    limits = BlastRadius(args.max_servers, args.max_rack_fraction)
    progress = None
    bar = None
    if not args.json and sys.stderr.isatty():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(TextColumn(f"power {args.action}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       console=out.err, transient=True)
        task = bar.add_task("power", total=fleet.count(args.selector) if args.selector else None)
        bar.start()

        def progress(_result: Any) -> None:
            bar.advance(task)
    stop = asyncio.Event()  # SIGTERM: send nothing more, record what was sent, exit non-zero
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        return await fleet.power(args.action, args.selector, force=args.force, concurrency=args.concurrency,
                                 wave_size=args.wave, stagger_s=args.stagger, confirm_timeout_s=args.timeout,
                                 limits=limits, progress=progress, budget=args.budget, resume=args.resume,
                                 stop=stop)
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        if bar is not None:
            bar.stop()
        await fleet.aclose()


def cmd_power(args: argparse.Namespace, out: Out) -> int:
    fleet = Fleet.open(args.db)
    if args.plan and not args.budget:
        raise InputError("--plan goes with --budget")
    if args.resume is not None:
        if args.budget or args.selector:
            raise InputError("--resume JOB takes the job's action and servers: give no selector or --budget")
        job = fleet.job(args.resume)
        _confirm(out, f"resume power job {args.resume} ({job.params.get('action', '?')} {job.selector})?", args.yes)
    elif args.action is None or not args.selector:
        raise InputError("name an action and the servers (fleet power cycle rack=R12), or --resume JOB")
    if args.budget and args.plan:
        return _show_plan(fleet, args, out)
    if args.resume is None and args.action in DISRUPTIVE:
        hosts = fleet.hostnames(args.selector)
        if not hosts:
            raise InputError(f"no servers match {' '.join(args.selector)!r}")
        shown = ", ".join(hosts[:8]) + (f" and {len(hosts) - 8} more" if len(hosts) > 8 else "")
        _confirm(out, f"power {args.action} {len(hosts)} server(s): {shown}?", args.yes)
    results = asyncio.run(_power(fleet, args, out))
    if args.json:
        out.json([r.to_json() for r in results])
    else:
        out.table(["HOST", "BEFORE", "AFTER", "RESULT", "SECONDS", "ERROR"],
                  [(r.hostname, r.before, r.after, r.outcome, f"{r.elapsed_s:.1f}", r.error) for r in results])
    failed = [r for r in results if not r.ok]
    job_id = getattr(results, "job_id", None)
    if getattr(results, "stopped", False):
        out.error(f"stopped (SIGTERM): {sum(r.outcome == 'not-sent' for r in results)} server(s) not acted on; "
                  f"what was sent is recorded in job {job_id}: fleet power --resume {job_id}")
        return 143
    if failed and not args.json:
        out.error(f"{len(failed)} of {len(results)} server(s) did not reach the goal"
                  + (f" (job {job_id})" if job_id else ""))
    return 1 if failed else 0


def _show_plan(fleet: Fleet, args: argparse.Namespace, out: Out) -> int:
    plan, warnings = run_async(fleet, lambda: fleet.power_on_plan(args.selector, max_wave=args.wave))
    data = plan.to_json()
    if args.json:
        out.json({**data, "warnings": warnings})
        return 0
    for w in warnings:
        out.warn(w)
    out.table(["WAVE", "START", "SERVERS"],
              [(i + 1, f"+{w['start_s']:.0f}s", " ".join(w["servers"])) for i, w in enumerate(data["waves"])])
    out.table(["ELEMENT", "PEAK W", "CAPACITY W", "USE"],
              [(p["element"], p["peak_w"], p["capacity_w"], f"{p['peak_w'] / p['capacity_w']:.0%}")
               for p in data["peak_loads"]])
    for u in data["unplannable"]:
        out.error(f"{u['hostname']}: not switched on: {u['reason']}")
    return 0


def cmd_bootdev(args: argparse.Namespace, out: Out) -> int:
    fleet = Fleet.open(args.db)
    modes = fleet.boot_modes(args.selector, uefi=args.uefi)  # what set_boot asks each BMC for, and why
    results = run_async(fleet, lambda: fleet.set_boot(args.selector, args.device, persistent=args.persistent,
                                                      uefi=args.uefi))
    if args.json:
        out.json([{"hostname": h, "ok": not e, "device": v.device if v else None,
                   "persistent": v.persistent if v else None, "uefi": v.uefi if v else None,
                   "mode": modes[h].mode if h in modes else None,
                   "mode_source": modes[h].source if h in modes else None, "error": e}
                  for h, v, e in results])
    else:
        out.table(["HOST", "NEXT BOOT", "PERSISTENT", "UEFI", "MODE", "WHY", "ERROR"],
                  [(h, v.device if v else "", v.persistent if v else "", v.uefi if v else "",
                    modes[h].mode if h in modes else "", modes[h].source if h in modes else "", e)
                   for h, v, e in results])
    return 1 if any(e for _, _, e in results) else 0


def cmd_sensors(args: argparse.Namespace, out: Out) -> int:
    fleet = Fleet.open(args.db)
    readings = run_async(fleet, lambda: fleet.sensors(args.host))
    if args.json:
        out.json([{"name": r.name, "kind": r.kind, "value": r.value, "unit": r.unit, "state": r.state,
                   "thresholds": r.thresholds} for r in readings])
    else:
        out.table(["SENSOR", "KIND", "VALUE", "UNIT", "STATE", "THRESHOLDS"],
                  [(r.name, r.kind, "" if r.value is None else f"{r.value:g}", r.unit, r.state,
                    " ".join(f"{k}={v:g}" for k, v in sorted(r.thresholds.items()))) for r in readings])
    return 0


def cmd_sel(args: argparse.Namespace, out: Out) -> int:
    fleet = Fleet.open(args.db)
    entries = run_async(fleet, lambda: fleet.sel(args.host, clear=args.clear))
    if args.json:
        out.json([{"id": e.record_id, "ts": e.ts.isoformat() if e.ts else None, "sensor": e.sensor,
                   "event": e.event, "severity": e.severity} for e in entries])
    else:
        out.table(["ID", "WHEN", "SENSOR", "EVENT", "SEVERITY"],
                  [(e.record_id, e.ts.isoformat(timespec="seconds") if e.ts else "", e.sensor, e.event, e.severity)
                   for e in entries])
        if args.clear:
            out.info(f"{args.host}: SEL cleared ({len(entries)} entries read first)")
    return 0


def cmd_fru(args: argparse.Namespace, out: Out) -> int:
    import dataclasses

    fleet = Fleet.open(args.db)
    fru = run_async(fleet, lambda: fleet.fru(args.host))
    data = dataclasses.asdict(fru)
    if args.json:
        out.json(data)
    else:
        extra = data.pop("extra", {})
        out.kv([(k.replace("_", " "), v) for k, v in data.items()] + sorted(extra.items()))
    return 0


def cmd_bmc_reset(args: argparse.Namespace, out: Out) -> int:
    fleet = Fleet.open(args.db)
    _confirm(out, f"cold-reset the BMC of {args.host}?", args.yes)
    run_async(fleet, lambda: fleet.bmc_reset(args.host))
    if args.json:
        out.json({"hostname": args.host, "bmc_reset": True})
    else:
        out.info(f"{args.host}: BMC cold reset sent")
    return 0
