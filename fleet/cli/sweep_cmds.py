"""``fleet sweep`` and ``fleet events``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from fleet.service.facade import Fleet

from .output import Out, run_async


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("sweep", parents=[common], help="one health sweep: BMCs (power, sensors, new SEL) and UPSes")
    p.add_argument("selector", nargs="*")
    p.add_argument("--no-ups", action="store_true", help="servers only")
    p.add_argument("--concurrency", type=int, default=256)
    p.add_argument("--min-interval", type=float, default=0.0, metavar="SECONDS",
                   help="skip a BMC read more recently than this")
    p.add_argument("--probe-all", action="store_true", help="read every BMC now, past circuit breakers")
    p.add_argument("--every", metavar="INTERVAL", help="run as a service: a sweep every 30s/5m/1h until SIGTERM")
    p.add_argument("--facts", action="store_true",
                   help="also collect SSH facts of the selected servers that have an SSH credential (drift events)")
    p.add_argument("--remediate", action="store_true",
                   help="after each sweep, apply the remediation policies (within their limits; audited)")
    p.add_argument("--policy", type=Path, help="policy file for --remediate (default: examples/policies/default.yaml)")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("schedule", parents=[common], help="print a systemd unit or a crontab line for sweeps")
    p.add_argument("kind", choices=("systemd", "cron"))
    p.add_argument("--every", default="5m")
    p.set_defaults(func=cmd_schedule)

    p = sub.add_parser("events", parents=[common], help="events (open by default), newest first")
    p.add_argument("--status", choices=("open", "acked", "resolved", "all"), default="open")
    p.add_argument("--kind")
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--ack", type=int, metavar="ID", help="acknowledge this event")
    p.set_defaults(func=cmd_events)


#: Exit status when another sweep holds the lock (EX_TEMPFAIL): nothing was wrong, nothing was done.
EXIT_SKIPPED = 75


def cmd_sweep(args: argparse.Namespace, out: Out) -> int:
    """Exit 0: every device read; 1: some could not be read (see errors); 75: another sweep was running."""
    from fleet.workflows.schedule import parse_interval, run_every, sweep_lock

    fleet = Fleet.open(args.db)
    if args.every:
        interval = parse_interval(args.every)
        out.info(f"sweeping every {args.every}; SIGTERM finishes the current sweep and stops")
        run_every(fleet.ctx, interval, selector=args.selector, ups=not args.no_ups, facts=args.facts,
                  remediate=args.remediate, policy=args.policy, on_result=lambda r: _show(r, args, out),
                  on_skip=out.warn, on_error=out.warn,
                  on_remediation=lambda run: out.info(f"remediation: {len(run.applied)} action(s) applied, "
                                                      f"{len(run.plan.held)} held by limits"))
        return 0
    with sweep_lock(fleet.ctx) as held:
        if not held:
            out.warn("another sweep holds the lock; nothing done")
            return EXIT_SKIPPED
        result = run_async(fleet, lambda: fleet.sweep(args.selector, ups=not args.no_ups,
                                                      concurrency=args.concurrency,
                                                      min_interval_s=args.min_interval, probe_all=args.probe_all,
                                                      facts=args.facts))
        run = run_async(fleet, lambda: fleet.remediate(args.selector, policy=args.policy, apply=True)) \
            if args.remediate else None
    _show(result, args, out)
    if run is not None and not args.json:
        out.info(f"remediation: {len(run.applied)} action(s) applied, {len(run.plan.held)} held by limits")
    return 1 if result.errors else 0


def _show(result: Any, args: argparse.Namespace, out: Out) -> None:
    if args.json:
        out.json(result)
    else:
        out.kv([("servers", f"{result.servers_read} read of {result.servers} ({result.servers_skipped} skipped: "
                            "circuit breaker or minimum interval)"),
                ("ups", f"{result.ups_read} read of {result.ups}"), ("readings", result.readings),
                *([("ssh facts", f"{result.facts_read} server(s)")] if result.facts_read is not None else []),
                ("events opened", _some(result.opened)), ("events resolved", _some(result.resolved)),
                ("took", f"{result.duration_s:.1f} s (writing {result.write_s:.2f} s)")])
        for name, err in sorted(result.errors.items()):
            out.warn(f"{name}: {err}")


def _some(names: list[str], shown: int = 12) -> str:
    if not names:
        return "none"
    more = f" and {len(names) - shown} more (fleet events)" if len(names) > shown else ""
    return f"{len(names)}: " + ", ".join(names[:shown]) + more


def cmd_schedule(args: argparse.Namespace, out: Out) -> int:
    import sys

    from fleet.workflows.schedule import crontab_text, systemd_units

    db = args.db or os.environ.get("FLEET_DB")
    db = str(Path(db).resolve()) if db and "://" not in db else db
    sys.stdout.write(systemd_units(every=args.every, db=db) if args.kind == "systemd"
                     else crontab_text(every=args.every, db=db))
    return 0


def cmd_events(args: argparse.Namespace, out: Out) -> int:
    fleet = Fleet.open(args.db)
    if args.ack:
        fleet.ack_event(args.ack)
    rows = fleet.events(status=None if args.status == "all" else args.status, kind=args.kind, limit=args.limit)
    if args.json:
        out.json(rows)
    else:
        out.table(["ID", "OPENED", "TARGET", "KIND", "SEVERITY", "STATUS", "COUNT", "MESSAGE"],
                  [(e["id"], e["opened_at"], e["target"], e["kind"], e["severity"], e["status"], e["count"],
                    e["message"][:80]) for e in rows])
    return 0


def register_remediation(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("facts", parents=[common], help="collect facts over SSH; drift (serial, disks, MACs) -> events")
    p.add_argument("selector", nargs="+")
    p.add_argument("--concurrency", type=int, default=16)
    p.set_defaults(func=cmd_facts)

    p = sub.add_parser("jobs", parents=[common], help="long operations and their progress")
    p.add_argument("job_id", nargs="?", type=int, help="show one job in full")
    p.add_argument("--kind", help="only this kind (sweep, remediate, power, image, decommission)")
    p.add_argument("--status", help="only this status (running, done, partial, failed, interrupted, cancelled)")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=cmd_jobs)

    p = sub.add_parser("remediate", parents=[common], help="plan (dry run) or --apply remediation of open events")
    p.add_argument("selector", nargs="*")
    p.add_argument("--policy", type=Path, help="policy file (default: examples/policies/default.yaml)")
    p.add_argument("--apply", action="store_true", help="carry the plan out (audited)")
    p.set_defaults(func=cmd_remediate)

    p = sub.add_parser("thresholds", parents=[common], help="sensor thresholds per rack or server, over the profile's")
    ts = p.add_subparsers(dest="thresholds_command", metavar="ACTION", required=True)
    q = ts.add_parser("set", parents=[common], help="e.g. fleet thresholds set rack=R12 'Inlet Temp' critical_high=32")
    q.add_argument("scope", help="rack=NAME (or rack=SITE/NAME), or a host name")
    q.add_argument("sensor")
    q.add_argument("values", nargs="+", metavar="name=value", help="critical_low, warning_low, warning_high, "
                   "critical_high; an empty value clears it")
    q.set_defaults(func=cmd_threshold_set)

    p = sub.add_parser("readings", parents=[common], help="retention of recorded readings")
    rs = p.add_subparsers(dest="readings_command", metavar="ACTION", required=True)
    q = rs.add_parser("prune", parents=[common], help="thin (or with --drop, delete) readings older than N days")
    q.add_argument("--older-than", required=True, metavar="DAYS", type=float)
    q.add_argument("--drop", action="store_true", help="delete them all instead of keeping one per hour")
    q.set_defaults(func=cmd_prune)

    p = sub.add_parser("work-orders", parents=[common], help="RMA and battery work orders (CSV with --csv)")
    p.add_argument("--status", choices=("open", "all"), default="open")
    p.add_argument("--csv", action="store_true")
    p.set_defaults(func=cmd_work_orders)


def cmd_facts(args: argparse.Namespace, out: Out) -> int:
    fleet = Fleet.open(args.db)
    result = run_async(fleet, lambda: fleet.facts(args.selector, concurrency=args.concurrency))
    if args.json:
        out.json(result)
    else:
        out.table(["HOST", "KERNEL", "SERIAL", "DISKS", "DRIFT"],
                  [(h, f.get("kernel"), f.get("serial"), len(f.get("disks", [])),
                    "; ".join(d["message"] for d in result.drift.get(h, [])) or "none")
                   for h, f in sorted(result.facts.items())])
        for h in result.pinned:
            out.info(f"{h}: host key pinned on first contact")
        for h, err in sorted(result.errors.items()):
            out.warn(f"{h}: {err}")
    return 1 if result.errors else 0


def cmd_remediate(args: argparse.Namespace, out: Out) -> int:
    fleet = Fleet.open(args.db)
    run = run_async(fleet, lambda: fleet.remediate(args.selector, policy=args.policy, apply=args.apply))
    if args.json:
        out.json(run)
        return 0 if all(a["ok"] for a in run.applied) else 1
    title = "applied" if args.apply else "plan (dry run: nothing done; --apply to act)"
    out.table(["TARGET", "ACTION", "RULE", "REASON"],
              [(a.target, a.action, a.rule, a.reason) for a in run.plan.planned], title=title)
    if run.plan.held:
        out.table(["TARGET", "ACTION", "RULE", "HELD BY", "DETAIL"],
                  [(a.target, a.action, a.rule, a.limit, a.detail) for a in run.plan.held], title="held back")
    for a in run.applied:
        (out.info if a["ok"] else out.error)(f"{a['target']}: {a['action']}: {'ok' if a['ok'] else 'FAILED'} "
                                            f"{a['note']}")
    return 0 if all(a["ok"] for a in run.applied) else 1


def cmd_threshold_set(args: argparse.Namespace, out: Out) -> int:
    from fleet.errors import ValidationError

    values: dict[str, float | None] = {}
    for item in args.values:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValidationError(f"{item!r} is not name=value", field="threshold")
        try:
            values[key] = float(raw) if raw.strip() else None
        except ValueError:
            raise ValidationError(f"{raw!r} is not a number", field=key) from None
    row = Fleet.open(args.db).set_threshold(args.scope, args.sensor, values)
    if args.json:
        out.json(row)
    else:
        out.info(f"{args.scope} {args.sensor}: " + ", ".join(f"{k}={v}" for k, v in row.items()
                                                             if k not in ("scope", "sensor") and v is not None))
    return 0


def cmd_prune(args: argparse.Namespace, out: Out) -> int:
    done = Fleet.open(args.db).prune_readings(older_than_days=args.older_than, keep_hourly=not args.drop)
    if args.json:
        out.json(done)
    else:
        out.info(f"{done['deleted']} reading(s) removed")
    return 0


def cmd_jobs(args: argparse.Namespace, out: Out) -> int:
    fleet = Fleet.open(args.db)
    rows = [fleet.job(args.job_id)] if args.job_id else fleet.jobs(kind=args.kind, status=args.status,
                                                                    limit=args.limit)
    if args.json:
        out.json([r.to_json() for r in rows] if not args.job_id else rows[0].to_json())
        return 0
    out.table(["ID", "KIND", "SELECTOR", "STATUS", "DONE", "FAILED", "TOTAL", "STARTED", "FINISHED", "ACTOR"],
              [(r.id, r.kind, r.selector[:40], r.status, r.done, r.failed, r.total,
                r.started_at.isoformat(timespec="seconds") if r.started_at else "",
                r.finished_at.isoformat(timespec="seconds") if r.finished_at else "", r.actor) for r in rows])
    if args.job_id and rows[0].steps:
        out.table(["TARGET", "STEP", "OUTCOME", "SENT", "ERROR"],
                  [(st.target, st.state, st.detail.get("outcome", ""),
                    st.sent_at.isoformat(timespec="seconds") if st.sent_at else "", st.detail.get("error", ""))
                   for st in rows[0].steps])
    if args.job_id and rows[0].result:
        import json

        out.info(json.dumps(rows[0].result, indent=2, sort_keys=True, default=str))
    return 0


def cmd_work_orders(args: argparse.Namespace, out: Out) -> int:
    rows = Fleet.open(args.db).work_orders(status=None if args.status == "all" else "open")
    if args.csv:
        import csv
        import sys

        keys = ["id", "kind", "target_kind", "target", "status", "reason", "created_at", "actor", "external_ref"]
        w = csv.DictWriter(sys.stdout, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    elif args.json:
        out.json(rows)
    else:
        out.table(["ID", "KIND", "TARGET", "STATUS", "CREATED", "REASON"],
                  [(r["id"], r["kind"], r["target"], r["status"], r["created_at"], r["reason"][:60]) for r in rows])
    return 0
