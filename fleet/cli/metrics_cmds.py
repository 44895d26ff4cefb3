"""``fleet metrics``: the latest state in Prometheus text format (stdout, a textfile, or an HTTP endpoint)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from fleet.errors import FleetError, InputError
from fleet.service.facade import Fleet

from .output import Out

DEFAULT_LISTEN = "127.0.0.1:9464"


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("metrics", parents=[common],
                       help="the latest state as Prometheus metrics: stdout, --textfile or --listen",
                       description="Print the fleet's latest state in Prometheus text format, write it atomically "
                       "for node_exporter's textfile collector (--textfile), or serve it over HTTP (--listen) "
                       "until SIGTERM. See docs/metrics.md.")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--textfile", type=Path, metavar="FILE",
                       help="write once, atomically, and exit (e.g. /var/lib/node_exporter/textfile/rackfleet.prom)")
    where.add_argument("--listen", nargs="?", const=DEFAULT_LISTEN, metavar="[HOST:]PORT",
                       help=f"serve /metrics until SIGTERM (default address {DEFAULT_LISTEN})")
    p.add_argument("--max-connections", type=int, default=64, metavar="N",
                   help="with --listen: connections open at once (over it, the oldest idle one is closed; default 64)")
    p.add_argument("--read-timeout", type=float, default=5.0, metavar="SECONDS",
                   help="with --listen: time a client has to send its request (default 5)")
    p.add_argument("--per-server", action="store_true",
                   help="add per-server series (and per-UPS series of per-server UPSes): large at scale")
    p.set_defaults(func=cmd_metrics)


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT`` or ``PORT`` (on 127.0.0.1)."""
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", value
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 <= number <= 65535:
        raise InputError(f"--listen {value!r}: expected HOST:PORT with a port 0-65535")
    return host, number


def cmd_metrics(args: argparse.Namespace, out: Out) -> int:
    from fleet.service.metrics import render, serve, write_textfile
    from fleet.service.metrics_http import Limits

    fleet = Fleet.open(args.db)
    try:
        if args.textfile:
            try:
                write_textfile(fleet.engine, args.textfile, per_server=args.per_server)
            except OSError as exc:
                raise FleetError(f"cannot write {args.textfile}: {exc.strerror or exc}") from exc
            return 0
        if args.listen:
            host, port = parse_listen(args.listen)
            if args.max_connections < 1 or args.read_timeout <= 0:
                raise InputError("--max-connections must be at least 1 and --read-timeout above 0")
            limits = Limits(max_connections=args.max_connections, read_timeout_s=args.read_timeout)
            stop = threading.Event()

            def on_signal(_signo: int, _frame: Any) -> None:
                stop.set()

            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
            try:
                serve(fleet.engine, host, port, per_server=args.per_server, stop=stop, limits=limits,
                      ready=lambda h, p: out.info(f"serving metrics on http://{h}:{p}/metrics until SIGTERM"))
            except OSError as exc:
                raise FleetError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
            return 0
        sys.stdout.write(render(fleet.engine, per_server=args.per_server).decode())
        sys.stdout.flush()
        return 0
    finally:
        fleet.close()
