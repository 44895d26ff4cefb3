"""``fleet pxe``: render and install a PXE tree, serve it (dnsmasq + HTTP), read the evidence back.

    fleet pxe render SELECTOR... --out DIR --manager-url http://10.77.0.1:8080 [--interface br0]
    fleet pxe serve --root DIR [--interface IF] [--listen IP:PORT]      # until SIGTERM
    fleet pxe evidence --root DIR [--json] [--since ISO] [--no-record]
    fleet pxe check --root DIR                                           # dnsmasq --test

See docs/pxe.md.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from dataclasses import fields
from datetime import datetime
from pathlib import Path
from typing import Any

from fleet.errors import InputError
from fleet.service.facade import Fleet

from .output import Out

_LOADER_KEYS = ("undionly", "snponly", "ipxe_efi", "pxelinux", "ldlinux", "grub_dir")


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("pxe", parents=[common], help="PXE: render a boot tree, serve it, read the evidence",
                       description="Render boot configs and answer files for servers, install them atomically, "
                       "serve them with dnsmasq and an HTTP server, and read leases, fetches and callbacks "
                       "back. See docs/pxe.md.")
    pxe_sub = p.add_subparsers(dest="pxe_command", metavar="SUBCOMMAND", required=True)

    r = pxe_sub.add_parser("render", parents=[common], help="render and install the tree for a selection",
                           description="Render dnsmasq.conf, iPXE/PXELINUX/GRUB configs and answer files for the "
                           "selected servers, copy boot loaders and OS images in, and install the whole tree at "
                           "--out atomically (the old tree stays until the new one is complete).")
    r.add_argument("selector", nargs="+", help="which servers, e.g. rack=R01")
    r.add_argument("--out", required=True, type=Path, metavar="DIR", help="where the tree is installed")
    r.add_argument("--manager-url", required=True, metavar="URL",
                   help="how installers reach our HTTP server, e.g. http://10.77.0.1:8080")
    r.add_argument("--server-ip", metavar="IP", help="our address on the provisioning network "
                   "(default: the manager URL's host)")
    r.add_argument("--interface", default="", metavar="IF", help="the interface dnsmasq serves (written into "
                   "dnsmasq.conf; else give it to 'fleet pxe serve')")
    r.add_argument("--os", metavar="OS", help="install this OS on every selected server (e.g. debian-12), "
                   "over overrides and tags")
    r.add_argument("--overrides", type=Path, metavar="FILE", help="per-rack/per-host settings (TOML)")
    r.add_argument("--templates", type=Path, action="append", default=[], metavar="DIR",
                   help="a directory of templates searched before the built-in ones (repeatable)")
    r.add_argument("--images", type=Path, metavar="DIR", help="OS images as DIR/OS/{vmlinuz,initrd}")
    r.add_argument("--image", action="append", default=[], metavar="OS=DIR",
                   help="one OS's image directory (repeatable)")
    r.add_argument("--extra-image", action="append", default=[], metavar="REL=PATH",
                   help="a file to install as images/REL, for hosts' extra_initrds (repeatable)")
    r.add_argument("--loader", action="append", default=[], metavar="NAME=PATH",
                   help=f"a boot loader's path ({', '.join(_LOADER_KEYS)}; repeatable)")
    r.add_argument("--lease-time", default="1h", help="DHCP lease time (default 1h)")
    r.add_argument("--no-ra", action="store_true", help="no IPv6 router advertisements (iPXE then waits ~13 s)")
    r.add_argument("--dnsmasq-user", default="", metavar="USER", help="the user dnsmasq drops to")
    r.add_argument("--dry-run", action="store_true", help="render in memory and report; write nothing")
    r.set_defaults(func=cmd_render)

    s = pxe_sub.add_parser("serve", parents=[common], help="run dnsmasq and the HTTP server until SIGTERM",
                           description="Run the real dnsmasq with the tree's config (DHCP needs root) and an "
                           "HTTP server for scripts, answer files, images and installer callbacks, in the "
                           "foreground until SIGTERM or Ctrl-C.")
    s.add_argument("--root", required=True, type=Path, metavar="DIR", help="an installed tree")
    s.add_argument("--interface", metavar="IF", help="the interface dnsmasq serves (if dnsmasq.conf names none)")
    s.add_argument("--listen", metavar="IP:PORT", help="HTTP address (default: the manager URL's)")
    s.add_argument("--no-dhcp", action="store_true", help="HTTP only: do not start dnsmasq")
    s.add_argument("--dnsmasq-user", metavar="USER", help="the user dnsmasq drops to (it must read ROOT/tftp)")
    s.set_defaults(func=cmd_serve)

    e = pxe_sub.add_parser("evidence", parents=[common], help="leases, TFTP, fetches and callbacks from the logs",
                           description="Read the served tree's dnsmasq and HTTP logs back as evidence records "
                           "and record what is new in the audit log (pxe.lease, pxe.fetch, pxe.callback...).")
    e.add_argument("--root", required=True, type=Path, metavar="DIR")
    e.add_argument("--since", metavar="ISO", help="only evidence from this time on (ISO 8601)")
    e.add_argument("--host", metavar="HOSTNAME", help="only this host's evidence")
    e.add_argument("--no-record", action="store_true", help="read only; record nothing in the inventory")
    e.set_defaults(func=cmd_evidence)

    c = pxe_sub.add_parser("check", parents=[common], help="dnsmasq --test on an installed tree's config")
    c.add_argument("--root", required=True, type=Path, metavar="DIR")
    c.set_defaults(func=cmd_check)


def _pairs(values: list[str], what: str) -> dict[str, str]:
    out = {}
    for v in values:
        key, sep, val = v.partition("=")
        if not sep or not key or not val:
            raise InputError(f"{what} {v!r}: expected NAME=PATH")
        out[key.strip()] = val.strip()
    return out


def _sources(args: argparse.Namespace) -> Any:
    from pxe.install import BootSources

    loaders = _pairs(args.loader, "--loader")
    unknown = set(loaders) - set(_LOADER_KEYS)
    if unknown:
        raise InputError(f"--loader: unknown name(s) {', '.join(sorted(unknown))} (known: {', '.join(_LOADER_KEYS)})")
    default = BootSources()
    images = dict(default.images)
    images.update({k: Path(v) for k, v in _pairs(args.image, "--image").items()})
    kwargs: dict[str, Any] = {f.name: getattr(default, f.name) for f in fields(default)}
    kwargs.update({k: Path(v) for k, v in loaders.items()})
    kwargs["images"] = images
    kwargs["image_dir"] = args.images
    kwargs["extra_images"] = {k: Path(v) for k, v in _pairs(args.extra_image, "--extra-image").items()}
    return BootSources(**kwargs)


def cmd_render(args: argparse.Namespace, out: Out) -> int:
    from fleet.ops.pxe import PxeOverrides

    overrides = PxeOverrides.load(args.overrides) if args.overrides else None
    with Fleet.open(args.db) as fleet:
        result = fleet.pxe_render(
            args.selector, out=args.out, manager_url=args.manager_url, server_ip=args.server_ip,
            interface=args.interface, os=args.os, overrides=overrides, sources=_sources(args),
            template_dirs=args.templates, lease_time=args.lease_time, ra_prefix="" if args.no_ra else "fd77::",
            dnsmasq_user=args.dnsmasq_user, dry_run=args.dry_run)
    if args.json:
        out.json(result.to_json())
        return 0
    if result.report is None:
        out.info(f"dry run: {len(result.hosts)} hosts, {result.files} files rendered; nothing written")
    else:
        rep = result.report
        out.info(f"installed {result.root} ({rep.mode}): {len(result.hosts)} hosts; files: {rep.written} written, "
                 f"{rep.kept} kept, {rep.reused + rep.linked} linked, {rep.copied} copied, {rep.removed} removed; "
                 f"in {rep.seconds:.2f} s")
    return 0


def _parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InputError(f"--listen {value!r}: expected IP:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def cmd_serve(args: argparse.Namespace, out: Out) -> int:
    from pxe.serve import PxeServer

    server = PxeServer(args.root, interface=args.interface,
                       listen=_parse_listen(args.listen) if args.listen else None,
                       dnsmasq=not args.no_dhcp, dnsmasq_user=args.dnsmasq_user)

    class _Say(logging.Handler):  # the server's notes (a restart for a new dnsmasq.conf) on stderr
        def emit(self, record: logging.LogRecord) -> None:
            out.info(record.getMessage())

    logger = logging.getLogger("pxe.serve")
    logger.addHandler(_Say())
    logger.setLevel(logging.INFO)

    async def run() -> int | None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signo in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signo, stop.set)
        async with server:
            dhcp = f", dnsmasq PID {server.pid}" if server.pid else " (HTTP only)"
            out.info(f"serving {args.root} on {server.url}{dhcp} until SIGTERM")
            waiter = asyncio.ensure_future(server.wait())
            stopper = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if waiter in done:
                why = server.error or f"dnsmasq exited with code {waiter.result()}"
                out.error(f"{why}; see {args.root}/var/dnsmasq.log")
                return 1
            waiter.cancel()
        return 0

    return asyncio.run(run()) or 0


def cmd_evidence(args: argparse.Namespace, out: Out) -> int:
    since = None
    if args.since:
        try:
            since = datetime.fromisoformat(args.since)
        except ValueError:
            raise InputError(f"--since {args.since!r} is not an ISO 8601 time") from None
        if since.tzinfo is None:
            since = since.astimezone()
    with Fleet.open(args.db) as fleet:
        if not args.no_record:
            recorded = fleet.pxe_record_evidence(args.root)
            out.info(f"recorded {len(recorded)} new evidence records in the audit log")
        evidence = fleet.pxe_evidence(args.root, since=since)
    if args.host:
        evidence = [e for e in evidence if e.hostname == args.host.lower()]
    if args.json:
        out.json([e.to_json() for e in evidence])
        return 0
    out.table(("time", "kind", "host", "mac", "ip", "what", "ok"),
              ((e.ts.isoformat(timespec="seconds"), e.kind, e.hostname or "", e.mac or "", e.ip or "",
                e.phase or e.path or "", "yes" if e.ok else "NO") for e in evidence))
    return 0


def cmd_check(args: argparse.Namespace, out: Out) -> int:
    from pxe.serve import check_config

    message = check_config(args.root / "dnsmasq.conf")
    if args.json:
        out.json({"conf": str(args.root / "dnsmasq.conf"), "ok": True, "message": message})
    else:
        out.info(message)
    return 0
