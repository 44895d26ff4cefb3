"""``fleet lab start|stop|status|fault``: the virtual datacenter."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .output import Out

_DEFAULT_DIR = os.environ.get("FLEET_LAB_DIR", ".lab")


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    lab = sub.add_parser("lab", parents=[common], help="the virtual datacenter (simulated BMCs on loopback)")
    lab_sub = lab.add_subparsers(dest="lab_command", metavar="ACTION", required=True)

    p = lab_sub.add_parser("start", parents=[common], help="start a lab in the background and write its inventory")
    p.add_argument("--dir", type=Path, default=Path(_DEFAULT_DIR), help="lab folder (default: $FLEET_LAB_DIR or .lab)")
    p.add_argument("--racks", type=int, default=2)
    p.add_argument("--servers-per-rack", type=int, default=8)
    p.add_argument("--sites", type=int, default=1)
    p.add_argument("--port", type=int, help="BMC port (default 623 as root, else 6623)")
    p.add_argument("--no-ups", action="store_true",
                   help="no per-server UPSes (NUT upsd + one dummy-ups each, or the lab's own NUT server: "
                   "FLEET_LAB_NUT=auto|upsd|builtin)")
    p.add_argument("--no-rack-power", action="store_true",
                   help="no rack UPS and switched PDU per rack (snmpsim serving real APC recordings)")
    ssh = p.add_mutually_exclusive_group()
    ssh.add_argument("--ssh", dest="ssh", action="store_true", default=None,
                     help="servers answer SSH on their primary IPs (default: when root and sshd are there)")
    ssh.add_argument("--no-ssh", dest="ssh", action="store_false")
    p.add_argument("--redfish", action="store_true",
                   help="a mixed lab: most BMCs answer Redfish too, some only Redfish, some only IPMI (HTTPS on "
                   "their addresses; 443 as root, else the BMC port); the inventory carries the endpoints")
    p.set_defaults(func=cmd_start)

    p = lab_sub.add_parser("stop", parents=[common], help="stop everything the lab started")
    p.add_argument("--dir", type=Path, default=Path(_DEFAULT_DIR))
    p.set_defaults(func=cmd_stop)

    p = lab_sub.add_parser("status", parents=[common], help="what the lab runs")
    p.add_argument("--dir", type=Path, default=Path(_DEFAULT_DIR))
    p.set_defaults(func=cmd_status)

    p = lab_sub.add_parser("fault", parents=[common], help="inject or clear a fault on a lab device")
    p.add_argument("host", help="the server (its BMC) or UPS, by name")
    p.add_argument("kind", help="BMC: dead, slow, wrong-password, stuck-power, sensor-critical, ecc, redfish-dead; "
                   "UPS: on-battery, low-battery, replace-battery; host (over SSH): disk-failing, serial-changed")
    p.add_argument("--clear", action="store_true")
    p.add_argument("--value", help="e.g. milliseconds for slow, a sensor name for sensor-critical")
    p.add_argument("--dir", type=Path, default=Path(_DEFAULT_DIR))
    p.set_defaults(func=cmd_fault)


def cmd_start(args: argparse.Namespace, out: Out) -> int:
    from fleet.lab.datacenter import start_lab

    info = start_lab(args.dir, racks=args.racks, servers_per_rack=args.servers_per_rack, sites=args.sites,
                     port=args.port, server_ups=not args.no_ups, rack_power=not args.no_rack_power, ssh=args.ssh,
                     redfish=args.redfish)
    if args.json:
        out.json(info)
    else:
        out.info(f"lab: {info.servers} servers in {info.racks} racks, {info.sites} site(s), {info.ups} UPS(es), "
                 f"{info.pdus} PDU(s), {info.ssh_hosts} SSH host(s); "
                 f"BMC server pid {info.bmc_pid}, port {info.port}")
        if info.nut_server:
            out.info("per-server UPSes: " + ("NUT's upsd + dummy-ups" if info.nut_server == "upsd" else
                                             "the lab's NUT stand-in (NUT not installed, or FLEET_LAB_NUT=builtin)"))
        if info.redfish:
            out.info(f"Redfish: {info.redfish['servers']} server(s) ({info.redfish.get('redfish_only', 0)} Redfish "
                     f"only), port {info.redfish['port']}, certificate {info.redfish['tls_fingerprint']}")
        for note in info.notes:
            out.info(f"note: {note}")
        out.info(f"import it: fleet import {args.dir / 'inventory.yaml'} --secrets {args.dir / 'secrets.yaml'}")
    return 0


def cmd_stop(args: argparse.Namespace, out: Out) -> int:
    from fleet.lab.datacenter import stop_lab

    stopped = stop_lab(args.dir)
    if args.json:
        out.json({"stopped": stopped})
    else:
        out.info("lab stopped" if stopped else "the lab was not running")
    return 0


def cmd_status(args: argparse.Namespace, out: Out) -> int:
    from fleet.lab.datacenter import lab_status

    info = lab_status(args.dir)
    if args.json:
        out.json(info)
    else:
        pairs = [(k, v) for k, v in info.items() if k != "bmc_server"]
        pairs += [(f"bmc {k}", v) for k, v in info.get("bmc_server", {}).items()]
        out.kv(pairs)
    return 0


def cmd_fault(args: argparse.Namespace, out: Out) -> int:
    from fleet.lab.datacenter import lab_fault

    value: object = args.value
    if value is not None and str(value).isdigit():
        value = int(str(value))
    state = lab_fault(args.dir, args.host, args.kind, clear=args.clear, value=value)
    if args.json:
        out.json(state)
    else:
        out.info(f"{args.host}: faults now {state.get('faults') or 'none'}")
    return 0
