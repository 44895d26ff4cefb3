"""``fleet image`` (PXE imaging in waves, on evidence) and ``fleet decommission`` (drain, wipe, certify)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from fleet.service.facade import Fleet

from .output import Out, run_async
from .power_cmds import _confirm


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("image", parents=[common], help="image servers over PXE in waves, canary first, on evidence",
                       description="Allocate addresses, render and serve the PXE tree, set next boot to PXE, "
                       "power-cycle in waves (canary first) and move each server deploying -> deployed on evidence "
                       "(DHCP lease, answer file fetched, late callback), or to failed with the reason. A job: "
                       "--resume JOB continues after a crash. See docs/imaging.md.")
    p.add_argument("selector", nargs="*")
    p.add_argument("--os", help="e.g. debian-12, ubuntu-24.04, rocky-9")
    p.add_argument("--root", type=Path, help="where the PXE tree is installed (default: $FLEET_PXE_ROOT or pxe-root)")
    p.add_argument("--manager-url", help="the HTTP server as the servers reach it, e.g. http://10.0.0.1:8080")
    p.add_argument("--interface", default="", help="the interface dnsmasq serves DHCP on (provisioning network)")
    p.add_argument("--listen", default="", metavar="HOST:PORT", help="HTTP listen address (default: the URL's)")
    p.add_argument("--canary", type=int, default=1, help="servers in the first wave (default 1)")
    p.add_argument("--wave", type=int, default=8, help="servers per later wave (default 8)")
    p.add_argument("--failure-budget", type=int, default=0, metavar="N",
                   help="failures tolerated before the next wave is held back (default 0)")
    p.add_argument("--dhcp-timeout", type=float, default=300.0, metavar="S")
    p.add_argument("--fetch-timeout", type=float, default=900.0, metavar="S")
    p.add_argument("--done-timeout", type=float, default=3600.0, metavar="S")
    p.add_argument("--overrides", default="",
                   help="PXE overrides file (per rack/server OS, disk, console, kernel arguments)")
    p.add_argument("--extra-image", action="append", default=[], metavar="REL=PATH",
                   help="an extra initrd to install under images/ (hosts' extra_initrds), e.g. firmware")
    p.add_argument("--dnsmasq-user", default="", help="the user dnsmasq runs as (it must read the tree)")
    p.add_argument("--reimage", action="store_true", help="allow servers that are deployed (their data is lost)")
    p.add_argument("--no-serve", action="store_true",
                   help="an outside `fleet pxe serve` serves the tree (restart it after the render)")
    p.add_argument("--resume", type=int, metavar="JOB", help="continue an interrupted image job")
    p.add_argument("--yes", "-y", action="store_true")
    p.set_defaults(func=cmd_image)

    p = sub.add_parser("decommission", parents=[common], help="drain, wipe every disk (certified), power off, retire",
                       description="Move the servers to decommissioning, wipe every disk over SSH with the strongest "
                       "method each supports (NVMe format, secure discard, ATA secure erase, else overwrite), verify, "
                       "record a wipe certificate per disk, power off and retire (or rma). A server with a disk not "
                       "wiped stays in decommissioning with the reason. See docs/decommission.md.")
    p.add_argument("selector", nargs="+")
    p.add_argument("--finish", choices=("retired", "rma"), default="retired")
    p.add_argument("--method", choices=("auto", "overwrite"), default="auto",
                   help="auto: the strongest each disk supports; overwrite: zeros on every disk")
    p.add_argument("--device", action="append", default=[], metavar="NAME",
                   help="wipe only these block devices (e.g. sdb); default: every whole disk")
    p.add_argument("--no-power-off", action="store_true")
    p.add_argument("--yes", "-y", action="store_true")
    p.set_defaults(func=cmd_decommission)

    p = sub.add_parser("wipe-certificates", parents=[common], help="per-disk wipe certificates (--csv for auditors)")
    p.add_argument("selector", nargs="*")
    p.add_argument("--csv", action="store_true")
    p.set_defaults(func=cmd_wipe_certificates)


def cmd_image(args: argparse.Namespace, out: Out) -> int:
    fleet = Fleet.open(args.db)
    if args.resume is None:
        hosts = fleet.hostnames(args.selector) if args.selector else []
        shown = ", ".join(hosts[:8]) + (f" and {len(hosts) - 8} more" if len(hosts) > 8 else "")
        _confirm(out, f"image {len(hosts)} server(s) with {args.os} (their disks are overwritten): {shown}?",
                 args.yes)
    else:
        _confirm(out, f"resume image job {args.resume}?", args.yes)
    root = args.root or Path(os.environ.get("FLEET_PXE_ROOT", "pxe-root"))

    def show(host: str, entry: dict[str, Any]) -> None:
        if not args.json:
            out.info(f"{host}: {entry['step']}" + (f" ({entry['reason']})" if entry.get("reason") else ""))

    result = run_async(fleet, lambda: fleet.image(
        args.selector, os=args.os or "", root=root, manager_url=args.manager_url or "", resume=args.resume,
        progress=show, **({} if args.resume is not None else {
            "interface": args.interface, "listen": args.listen, "canary": args.canary, "wave": args.wave,
            "failure_budget": args.failure_budget, "dhcp_timeout_s": args.dhcp_timeout,
            "fetch_timeout_s": args.fetch_timeout, "done_timeout_s": args.done_timeout, "reimage": args.reimage,
            "serve": not args.no_serve, "overrides": args.overrides, "extra_images": tuple(args.extra_image),
            "dnsmasq_user": args.dnsmasq_user})))
    if args.json:
        out.json(result)
    else:
        out.table(["HOST", "WAVE", "STEP", "REASON / EVIDENCE"],
                  [(h, s["wave"], s["step"], s.get("reason") or "; ".join(f"{k}: {v}" for k, v in
                                                                           s["evidence"].items()))
                   for h, s in sorted(result.servers.items(), key=lambda kv: (kv[1]["wave"], kv[0]))],
                  title=f"image job {result.job_id}: {result.status}")
        if result.stopped:
            out.warn(result.stopped)
    return 0 if not result.failed and not result.stopped else 1


def cmd_decommission(args: argparse.Namespace, out: Out) -> int:
    fleet = Fleet.open(args.db)
    hosts = fleet.hostnames(args.selector)
    shown = ", ".join(hosts[:8]) + (f" and {len(hosts) - 8} more" if len(hosts) > 8 else "")
    _confirm(out, f"decommission {len(hosts)} server(s), wiping every disk: {shown}?", args.yes)
    result = run_async(fleet, lambda: fleet.decommission(args.selector, finish=args.finish, method=args.method,
                                                         power_off=not args.no_power_off, only_devices=args.device))
    if args.json:
        out.json(result)
    else:
        out.table(["HOST", "STATE", "DISKS", "REASON"],
                  [(h, s["state"], ", ".join(f"{d.get('device')}:{d.get('method')}:{d.get('result')}"
                                             for d in s["disks"]), s["reason"])
                   for h, s in sorted(result.servers.items())], title=f"decommission job {result.job_id}")
    return 0 if not result.held else 1


CERT_COLUMNS = ["id", "hostname", "server_serial", "disk_slot", "disk_serial", "disk_model", "device", "size_bytes",
                "method", "result", "verified", "started_at", "finished_at", "actor", "job_id", "digest", "intact"]


def cmd_wipe_certificates(args: argparse.Namespace, out: Out) -> int:
    rows = Fleet.open(args.db).wipe_certificates(args.selector or None)
    if args.csv:
        import csv
        import sys

        w = csv.DictWriter(sys.stdout, fieldnames=CERT_COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    elif args.json:
        out.json(rows)
    else:
        out.table(["HOST", "DISK", "SERIAL", "METHOD", "RESULT", "VERIFIED", "FINISHED", "INTACT"],
                  [(r["hostname"], r["device"], r["disk_serial"], r["method"], r["result"], r["verified"],
                    r["finished_at"], r["intact"]) for r in rows])
    return 0
