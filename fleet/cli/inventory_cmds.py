"""Inventory commands: init, import, export, list, show, state, add, set, remove, credentials,
audit, profiles, sites, racks."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

from fleet.errors import InputError, ValidationError
from fleet.service.facade import CREDENTIAL_KINDS, Fleet
from inventory.validate import check_endpoint

from . import backup_cmds
from .output import Out

_STATES_HELP = ("new, commissioning, ready, deploying, deployed, maintenance, failed, quarantined, "
                "decommissioning, retired, rma")


def _open(args: argparse.Namespace) -> Fleet:
    return Fleet.open(args.db)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    def cmd(name: str, func: Any, help_text: str, **kw: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text, **kw)
        p.set_defaults(func=func)
        return p

    p = cmd("init", cmd_init, "create or upgrade the inventory and its secret key")
    p.add_argument("--key-file", type=Path, help="secret key file (default: $FLEET_KEY_FILE or "
                   "~/.config/rackfleet/secret.key)")

    p = cmd("import", cmd_import, "import YAML/CSV files or a NetBox export, as one transaction")
    p.add_argument("files", nargs="*", type=Path, help="YAML or CSV files, or directories of them")
    p.add_argument("--netbox", type=Path, metavar="DEVICES.json", help="NetBox /api/dcim/devices/ response")
    p.add_argument("--interfaces", type=Path, metavar="INTERFACES.json",
                   help="NetBox /api/dcim/interfaces/ response (with --netbox)")
    p.add_argument("--secrets", type=Path, action="append", default=[], metavar="FILE",
                   help="credentials with their secrets (repeatable): the encrypted file of 'fleet export "
                   "--secrets', or a YAML credentials: file; sealed on the way in")
    p.add_argument("--dry-run", action="store_true", help="check everything, write nothing")
    backup_cmds.add_import_options(p)

    p = cmd("export", cmd_export, "export the inventory (never secrets; --secrets FILE writes them apart, encrypted)")
    p.add_argument("--format", choices=("yaml", "csv"), default="yaml")
    p.add_argument("--out", type=Path, help="file (yaml) or directory (csv); default: stdout "
                   "(csv to stdout prints servers.csv only)")
    backup_cmds.add_export_options(p)

    p = cmd("list", cmd_list, "list servers matching a selector")
    p.add_argument("selector", nargs="*", help="e.g. rack=R12 state=deployed host=web-* tag=gpu site=par1")
    p.add_argument("--limit", type=int, help="at most N servers")
    p.add_argument("--after", metavar="HOST", help="start after this host name (paging)")
    p.add_argument("--count", action="store_true", help="print only how many match")

    p = cmd("show", cmd_show, "everything the inventory knows about one server")
    p.add_argument("host")

    p = cmd("state", cmd_state, f"move a server through its lifecycle ({_STATES_HELP})")
    p.add_argument("host")
    p.add_argument("state")
    p.add_argument("--reason", required=True, help="why (recorded with who and when)")

    cred = sub.add_parser("credentials", parents=[common], help="BMC/SNMP/SSH/NUT credentials (encrypted)")
    cred_sub = cred.add_subparsers(dest="cred_command", metavar="ACTION", required=True)
    p = cred_sub.add_parser("set", parents=[common], help="create or replace a credential")
    p.add_argument("name")
    p.add_argument("--kind", required=True, choices=CREDENTIAL_KINDS)
    p.add_argument("--user", default="", help="user name (not for snmp-v2c, whose secret is the community)")
    p.add_argument("--password-stdin", action="store_true",
                   help="read the secret from the first line of standard input (snmp-v3: the auth passphrase, "
                   "then the priv passphrase on a second line; ssh: a password, or a whole PEM private key)")
    p.add_argument("--auth-proto", choices=("SHA", "SHA256", "MD5"), help="snmp-v3 authentication protocol")
    p.add_argument("--priv-proto", choices=("AES", "AES256", "DES"), help="snmp-v3 privacy protocol")
    p.set_defaults(func=cmd_cred_set)
    p = cred_sub.add_parser("list", parents=[common], help="list credentials (never their secrets)")
    p.set_defaults(func=cmd_cred_list)
    p = cred_sub.add_parser("assign", parents=[common],
                            help="assign to servers (ipmi/ssh: a selector) or UPS/PDUs (snmp/nut: names)")
    p.add_argument("name")
    p.add_argument("targets", nargs="+")
    p.set_defaults(func=cmd_cred_assign)
    p = cred_sub.add_parser("remove", parents=[common], help="remove an unused credential")
    p.add_argument("name")
    p.set_defaults(func=cmd_cred_remove)

    p = cmd("audit", cmd_audit, "the audit log, newest first")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--action")
    p.add_argument("--actor")
    p.add_argument("--target", metavar="NAME")

    prof = sub.add_parser("profiles", parents=[common], help="hardware profiles")
    prof_sub = prof.add_subparsers(dest="prof_command", metavar="ACTION", required=True)
    p = prof_sub.add_parser("list", parents=[common], help="list hardware profiles")
    p.add_argument("--kind", choices=("server", "ups", "pdu"))
    p.set_defaults(func=cmd_profiles_list)
    p = prof_sub.add_parser("show", parents=[common], help="one profile in full")
    p.add_argument("name")
    p.set_defaults(func=cmd_profiles_show)

    cmd("sites", cmd_sites, "list sites")
    p = cmd("racks", cmd_racks, "list racks with occupancy and feeds")
    p.add_argument("--site")

    add = sub.add_parser("add", parents=[common], help="add one site, pod, rack, feed, server, UPS, PDU or pool")
    add_sub = add.add_subparsers(dest="add_command", metavar="KIND", required=True)
    _register_add(add_sub, common)

    p = cmd("set", cmd_set, "change fields of a server, UPS or PDU: fleet set NAME key=value...")
    p.add_argument("name")
    p.add_argument("changes", nargs="*", metavar="key=value")
    p.add_argument("--redfish", metavar="ADDR[:PORT]", help="the server's Redfish endpoint (port 443 by default)")
    p.add_argument("--redfish-credential", metavar="NAME", help="its credential (kind redfish)")

    p = cmd("remove", cmd_remove, "remove a server (new/retired/rma), an empty rack, a UPS or a PDU")
    p.add_argument("name")
    p.add_argument("--force", action="store_true", help="remove a server whatever its state")


def _register_add(add_sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    def add(kind: str, help_text: str) -> argparse.ArgumentParser:
        p = add_sub.add_parser(kind, parents=[common], help=help_text, description=help_text)
        p.set_defaults(func=cmd_add, add_kind=kind)
        return p

    p = add("site", "a site (its code is what site=CODE selects)")
    p.add_argument("code")
    p.add_argument("--name", default="")
    p.add_argument("--description", default="")

    p = add("pod", "a room or pre-assembled container within a site")
    p.add_argument("code")
    p.add_argument("--site", required=True)
    p.add_argument("--kind", choices=("room", "container"), default="room", dest="pod_kind")
    p.add_argument("--name", default="")

    p = add("rack", "a rack")
    p.add_argument("name")
    p.add_argument("--site", required=True)
    p.add_argument("--pod")
    p.add_argument("--units", type=int, default=42)
    p.add_argument("--feed", action="append", default=[], metavar="NAME:WATTS",
                   help="a power feed of this rack and its capacity (repeatable)")

    p = add("feed", "a power feed (circuit) and its capacity")
    p.add_argument("name")
    p.add_argument("--site", required=True)
    p.add_argument("--rack")
    p.add_argument("--capacity", type=int, required=True, metavar="WATTS")

    p = add("server", "a server racked by a technician")
    p.add_argument("hostname")
    p.add_argument("--rack", required=True)
    p.add_argument("--site", help="needed when the rack name exists in several sites")
    p.add_argument("--position", type=int, required=True, metavar="U", help="lowest rack unit it occupies")
    p.add_argument("--height", type=int, default=1, metavar="U")
    p.add_argument("--bmc", metavar="ADDR[:PORT]")
    p.add_argument("--bmc-credential", metavar="NAME")
    p.add_argument("--redfish", metavar="ADDR[:PORT]", help="Redfish endpoint (port 443 by default)")
    p.add_argument("--redfish-credential", metavar="NAME", help="its credential (kind redfish)")
    p.add_argument("--mac", action="append", default=[], help="NIC MAC (repeatable; the first is eth0)")
    p.add_argument("--ip", help="primary IP address")
    p.add_argument("--profile", help="hardware profile (default: generic-ipmi)")
    p.add_argument("--serial", default="")
    p.add_argument("--asset-tag", default="")
    p.add_argument("--tag", action="append", default=[])
    p.add_argument("--priority", type=int, default=100, help="lower shuts down later on battery")

    p = add("ups", "a UPS on SNMP or NUT")
    p.add_argument("name")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--snmp", metavar="ADDR[:PORT]")
    where.add_argument("--nut", metavar="UPS@ADDR[:PORT]")
    p.add_argument("--credential", required=True)
    p.add_argument("--profile")
    p.add_argument("--site")
    p.add_argument("--rack")
    p.add_argument("--kind", choices=("server", "rack", "room"), dest="ups_kind")
    p.add_argument("--feeds", metavar="SELECTOR", help="the servers this UPS feeds, e.g. host=web-1")
    p.add_argument("--feed", dest="upstream_feed", metavar="FEED", help="the power feed this UPS hangs on")
    p.add_argument("--battery-installed", metavar="YYYY-MM-DD")

    p = add("pdu", "a switched or metered PDU on SNMP")
    p.add_argument("name")
    p.add_argument("--snmp", required=True, metavar="ADDR[:PORT]")
    p.add_argument("--credential", required=True)
    p.add_argument("--profile")
    p.add_argument("--site")
    p.add_argument("--rack")
    p.add_argument("--feed", dest="upstream_feed", metavar="FEED")
    p.add_argument("--ups", help="the UPS feeding this PDU")
    p.add_argument("--outlet", action="append", default=[], metavar="N=HOST[/PSU]",
                   help="outlet N feeds HOST's PSU (repeatable)")

    p = add("pool", "an IP pool")
    p.add_argument("name")
    p.add_argument("--cidr", required=True)
    p.add_argument("--site")
    p.add_argument("--rack")
    p.add_argument("--purpose", default="provisioning")
    p.add_argument("--gateway")
    p.add_argument("--first")
    p.add_argument("--last")
    p.add_argument("--dns", default="")


# -- handlers ------------------------------------------------------------------------------------------------

def cmd_init(args: argparse.Namespace, out: Out) -> int:
    from inventory.db import current_revision
    from inventory.secrets import default_key_path

    fleet = Fleet.init(args.db, key_path=args.key_file)
    info = {"db": fleet.url, "schema": current_revision(fleet.engine),
            "key": "FLEET_SECRET_KEY" if _env_key() else str(args.key_file or default_key_path())}
    if args.json:
        out.json(info)
    else:
        out.kv([("inventory", info["db"]), ("schema", info["schema"]), ("secret key", info["key"])])
    return 0


def _env_key() -> bool:
    import os

    return bool(os.environ.get("FLEET_SECRET_KEY"))


def cmd_import(args: argparse.Namespace, out: Out) -> int:
    if not args.files and not args.netbox and not args.secrets:
        raise InputError("name files to import, or --netbox DEVICES.json")
    if args.interfaces and not args.netbox:
        raise InputError("--interfaces goes with --netbox")
    fleet = _open(args)
    result = fleet.import_files(args.files, netbox_devices=args.netbox, netbox_interfaces=args.interfaces,
                                secrets=args.secrets, dry_run=args.dry_run,
                                passphrase=backup_cmds.passphrase_reader(args, "the secrets file"),
                                without_credentials=args.without_credentials)
    if args.json:
        out.json(result)
        return 0
    for w in result.warnings:
        out.warn(w)
    backup_cmds.report_without_credentials(result, out)
    kinds = sorted(set(result.created) | set(result.updated) | set(result.unchanged))
    out.table(["kind", "created", "updated", "unchanged"],
              [(k, result.created.get(k, 0), result.updated.get(k, 0), result.unchanged.get(k, 0)) for k in kinds],
              title="dry run: nothing written" if result.dry_run else None)
    return 0


def cmd_export(args: argparse.Namespace, out: Out) -> int:
    fleet = _open(args)
    if args.secrets:
        backup_cmds.export_secrets(args, out, fleet)
    data = fleet.export(args.format)
    if isinstance(data, str):
        if args.out:
            _write_atomic(args.out, data)
            out.info(f"wrote {args.out}")
        else:
            sys.stdout.write(data)
        return 0
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        for name, text in data.items():
            _write_atomic(args.out / name, text)
        out.info(f"wrote {len(data)} files to {args.out}")
    else:
        sys.stdout.write(data["servers.csv"])
    return 0


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def cmd_list(args: argparse.Namespace, out: Out) -> int:
    fleet = _open(args)
    if args.count:
        n = fleet.count(args.selector)
        out.json({"count": n}) if args.json else out.console.print(n)
        return 0
    rows = fleet.servers(args.selector, limit=args.limit, after=args.after)
    if args.json:
        out.json([r.to_json() for r in rows])
        return 0
    out.table(["HOST", "SITE", "POD", "RACK", "U", "STATE", "POWER", "HEALTH", "PROFILE", "BMC", "MAC"],
              [(r.hostname, r.site, r.pod, r.rack, r.position, r.state, r.power, r.health, r.profile, r.bmc,
                r.macs[0] if r.macs else "") for r in rows])
    if not rows:
        out.info("no servers match")
    return 0


def cmd_show(args: argparse.Namespace, out: Out) -> int:
    detail = _open(args).server(args.host)
    if args.json:
        out.json(detail)
        return 0
    r = detail.row
    out.kv([
        ("hostname", r.hostname), ("location", f"{r.site or '-'} / {r.pod or '-'} / {r.rack or '-'} "
                                               f"U{r.position}" + (f"-{r.position + r.height - 1}"
                                                                   if r.position and r.height > 1 else "")),
        ("state", f"{r.state} ({detail.state_reason})" if detail.state_reason else r.state),
        ("power / health", f"{r.power} / {r.health}"), ("profile", r.profile), ("serial", r.serial),
        ("asset tag", r.asset_tag), ("ssh credential", detail.ssh_credential), ("primary ip", r.primary_ip),
        ("tags", " ".join(r.tags)), ("priority", r.priority), ("description", detail.description),
    ])
    if detail.bmc_endpoints:
        out.table(["BMC", "ENDPOINT", "CREDENTIAL", "TLS TRUST"],
                  [(e["protocol"], e["endpoint"], e["credential"] or "-", e.get("tls_fingerprint") or e.get("ca_file")
                    or ("-" if e["protocol"] == "ipmi" else "none: fleet bmc trust")) for e in detail.bmc_endpoints])
    if detail.nics:
        out.table(["NIC", "MAC", "IP", "SWITCH", "PORT", "PXE"],
                  [(n.name, n.mac, n.ip, n.switch, n.switch_port, "yes" if n.pxe else "") for n in detail.nics])
    if detail.disks:
        out.table(["DISK", "KIND", "MODEL", "SERIAL", "GB"],
                  [(d["slot"], d["kind"], d["model"], d["serial"], d["size_gb"]) for d in detail.disks])
    if detail.power_feeds:
        out.table(["PSU", "OUTLET", "PDU", "UPS", "FEED"],
                  [(p["psu"], p["outlet"], p["pdu"], p["ups"], p["feed"]) for p in detail.power_feeds])
    if detail.history:
        out.table(["WHEN", "FROM", "TO", "WHO", "WHY"],
                  [(h.ts.isoformat(timespec="seconds"), h.from_state, h.to_state, h.actor, h.reason)
                   for h in detail.history])
    return 0


def cmd_state(args: argparse.Namespace, out: Out) -> int:
    row = _open(args).set_state(args.host, args.state, reason=args.reason)
    if args.json:
        out.json(row)
    else:
        out.info(f"{row.hostname} is now {row.state}")
    return 0


def _read_secret(args: argparse.Namespace) -> str:
    """The secret from standard input (first line) or a prompt. SNMPv3: auth, then priv (a second line)."""
    v3 = args.kind == "snmp-v3"
    if args.password_stdin:
        first = sys.stdin.readline().rstrip("\r\n")
        if args.kind == "ssh" and first.startswith("-----BEGIN"):  # a private key: read all of it
            return first + "\n" + sys.stdin.read()
        second = sys.stdin.readline().rstrip("\r\n") if v3 else ""
    elif not sys.stdin.isatty():
        raise InputError("give the secret with --password-stdin (it is never taken as an argument)")
    else:
        first = getpass.getpass(f"{'auth passphrase' if v3 else 'secret'} for {args.name}: ")
        second = getpass.getpass(f"priv passphrase for {args.name} (empty: the same): ") if v3 else ""
    if v3:
        from fleet.ops.ups import credential_json

        return credential_json(first, second or None)
    return first


def cmd_cred_set(args: argparse.Namespace, out: Out) -> int:
    options = {k: v for k, v in (("auth_proto", args.auth_proto), ("priv_proto", args.priv_proto)) if v}
    if options and args.kind != "snmp-v3":
        raise InputError("--auth-proto/--priv-proto are for snmp-v3 credentials")
    if args.kind == "snmp-v2c" and args.user:
        raise InputError("snmp-v2c has no user: the secret is the community")
    row = _open(args).set_credential(args.name, args.kind, _read_secret(args), username=args.user,
                                     options=options)
    if args.json:
        out.json(row)
    else:
        out.info(f"credential {row.name} ({row.kind}) stored encrypted")
    return 0


def cmd_cred_list(args: argparse.Namespace, out: Out) -> int:
    rows = _open(args).credentials()
    if args.json:
        out.json([r.to_json() for r in rows])
    else:
        out.table(["NAME", "KIND", "USER", "USED BY", "UPDATED"],
                  [(r.name, r.kind, r.username, r.used_by, r.updated_at.isoformat(timespec="seconds"))
                   for r in rows])
    return 0


def cmd_cred_assign(args: argparse.Namespace, out: Out) -> int:
    names = _open(args).assign_credential(args.name, args.targets)
    if args.json:
        out.json({"credential": args.name, "assigned": names})
    else:
        out.info(f"credential {args.name} assigned to {len(names)}: {', '.join(names[:10])}"
                 + (" ..." if len(names) > 10 else ""))
    return 0


def cmd_cred_remove(args: argparse.Namespace, out: Out) -> int:
    _open(args).remove_credential(args.name)
    if args.json:
        out.json({"removed": args.name})
    else:
        out.info(f"credential {args.name} removed")
    return 0


def cmd_audit(args: argparse.Namespace, out: Out) -> int:
    rows = _open(args).audit(limit=args.limit, action=args.action, actor=args.actor, target=args.target)
    if args.json:
        out.json([r.to_json() for r in rows])
        return 0
    out.table(["ID", "WHEN", "WHO", "ACTION", "TARGETS", "RESULT"],
              [(r.id, r.ts.isoformat(timespec="seconds"), r.actor, r.action,
                ", ".join(r.targets[:5]) + (f" (+{r.target_count - 5})" if r.target_count > 5 else ""), r.result)
               for r in rows])
    return 0


def cmd_profiles_list(args: argparse.Namespace, out: Out) -> int:
    profiles = Fleet.hardware_profiles()
    items = [p for p in profiles if not args.kind or p.kind == args.kind]
    if args.json:
        out.json([{"name": p.name, "kind": p.kind, "vendor": p.vendor, "model": p.model} for p in items])
    else:
        out.table(["NAME", "KIND", "VENDOR", "MODEL"], [(p.name, p.kind, p.vendor, p.model) for p in items])
    return 0


def cmd_profiles_show(args: argparse.Namespace, out: Out) -> int:
    profile = Fleet.hardware_profiles().get(args.name)
    data = _plain(profile)
    if args.json:
        out.json(data)
    else:
        import yaml

        sys.stdout.write(yaml.safe_dump(_plain(data), sort_keys=False, width=100))
    return 0


def _plain(value: Any) -> Any:
    """Dataclasses, mappings (including read-only ones) and sequences as plain JSON/YAML data."""
    import dataclasses
    from collections.abc import Mapping

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | frozenset | set):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def cmd_sites(args: argparse.Namespace, out: Out) -> int:
    rows = _open(args).sites()
    if args.json:
        out.json([r.to_json() for r in rows])
    else:
        out.table(["SITE", "NAME", "PODS", "RACKS", "SERVERS"],
                  [(r.code, r.name, r.pods, r.racks, r.servers) for r in rows])
    return 0


def cmd_racks(args: argparse.Namespace, out: Out) -> int:
    rows = _open(args).racks(site=args.site)
    if args.json:
        out.json([r.to_json() for r in rows])
    else:
        out.table(["SITE", "POD", "RACK", "SERVERS", "UNITS USED", "FEEDS"],
                  [(r.site, r.pod, r.name, r.servers, f"{r.used_units}/{r.units}",
                    " ".join(f"{f['name']}:{f['capacity_w']}W" for f in r.feeds)) for r in rows])
    return 0


def _add_raw(args: argparse.Namespace) -> dict[str, Any]:
    """The record an ``add`` command describes, in the import file's field names."""
    kind = args.add_kind
    if kind == "site":
        return {"code": args.code, "name": args.name, "description": args.description}
    if kind == "pod":
        return {"site": args.site, "code": args.code, "kind": args.pod_kind, "name": args.name}
    if kind == "rack":
        feeds = []
        for spec in args.feed:
            name, sep, watts = spec.partition(":")
            if not sep:
                raise ValidationError(f"{spec!r} is not NAME:WATTS", field="--feed")
            feeds.append({"name": name, "capacity_w": watts})
        raw: dict[str, Any] = {"site": args.site, "name": args.name, "units": args.units}
        if args.pod:
            raw["pod"] = args.pod
        if feeds:
            raw["feeds"] = feeds
        return raw
    if kind == "feed":
        return _drop_none({"site": args.site, "name": args.name, "rack": args.rack, "capacity_w": args.capacity})
    if kind == "server":
        nics = [{"name": f"eth{i}", "mac": mac} for i, mac in enumerate(args.mac)]
        return _drop_none({
            "hostname": args.hostname, "site": args.site, "rack": args.rack, "position": args.position,
            "height": args.height, "bmc": args.bmc, "bmc_credential": args.bmc_credential, "redfish": args.redfish,
            "redfish_credential": args.redfish_credential,
            "profile": args.profile or "generic-ipmi", "serial": args.serial, "asset_tag": args.asset_tag,
            "tags": args.tag, "nics": nics, "primary_ip": args.ip, "priority": args.priority,
        })
    if kind == "ups":
        raw = {"name": args.name, "credential": args.credential, "profile": args.profile, "site": args.site,
               "rack": args.rack, "kind": args.ups_kind, "feed": args.upstream_feed,
               "battery_installed": args.battery_installed}
        if args.snmp:
            host, port = check_endpoint(args.snmp, field="--snmp", default_port=161)
            raw.update(protocol="snmp", host=host, port=port)
        else:
            ups_name, sep, address = args.nut.partition("@")
            if not sep:
                raise ValidationError(f"{args.nut!r} is not UPS@ADDR[:PORT]", field="--nut")
            host, port = check_endpoint(address, field="--nut", default_port=3493)
            raw.update(protocol="nut", nut_name=ups_name, host=host, port=port)
        return _drop_none(raw)
    if kind == "pdu":
        outlets = []
        for spec in args.outlet:
            number, sep, target = spec.partition("=")
            host, _, psu = target.partition("/")
            if not sep or not host:
                raise ValidationError(f"{spec!r} is not N=HOST[/PSU]", field="--outlet")
            outlets.append(_drop_none({"number": number, "server": host, "psu": psu or None}))
        host, port = check_endpoint(args.snmp, field="--snmp", default_port=161)
        return _drop_none({"name": args.name, "host": host, "port": port, "credential": args.credential,
                           "profile": args.profile, "site": args.site, "rack": args.rack,
                           "feed": args.upstream_feed, "ups": args.ups, "outlets": outlets or None})
    if kind == "pool":
        return _drop_none({"name": args.name, "cidr": args.cidr, "site": args.site, "rack": args.rack,
                           "purpose": args.purpose, "gateway": args.gateway, "first": args.first,
                           "last": args.last, "dns": args.dns or None})
    raise InputError(f"unknown kind {kind}")  # pragma: no cover


def _drop_none(raw: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in raw.items() if v is not None and v != [] and v != ""}


def cmd_add(args: argparse.Namespace, out: Out) -> int:
    fleet = _open(args)
    raw = _add_raw(args)
    if args.add_kind in ("ups", "pdu") and not args.profile:
        raw["profile"] = _detect(fleet, raw, out, args.add_kind)
    feeds_selector = getattr(args, "feeds", None) if args.add_kind == "ups" else None
    result = fleet.add(args.add_kind, raw, feeds=feeds_selector)
    if args.json:
        out.json(result)
    else:
        for w in result.warnings:
            out.warn(w)
        out.info(f"added {args.add_kind} {raw.get('hostname') or raw.get('code') or raw.get('name')}")
    return 0


def _detect(fleet: Fleet, raw: dict[str, Any], out: Out, kind: str) -> str:
    """Recognise a UPS/PDU model from the device itself (sysObjectID, the MIBs it answers, NUT's driver)."""
    from .output import run_async

    name, why = run_async(fleet, lambda: fleet.detect_profile(
        host=raw["host"], port=raw["port"], protocol=raw.get("protocol", "snmp"),
        credential=raw["credential"], nut_name=raw.get("nut_name", ""), kind=kind))
    out.info(f"recognised {raw['name']} as profile {name} ({why})")
    return name


def cmd_set(args: argparse.Namespace, out: Out) -> int:
    changes: dict[str, str] = {}
    for item in args.changes:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValidationError(f"{item!r} is not key=value", field="changes")
        changes[key.strip()] = value
    changes.update(_drop_none({"redfish": args.redfish, "redfish_credential": args.redfish_credential}))
    result = _open(args).set(args.name, changes)
    if args.json:
        out.json(result)
    else:
        out.info(f"{args.name}: " + (", ".join(f"{k}={v}" for k, v in changes.items())))
    return 0


def cmd_remove(args: argparse.Namespace, out: Out) -> int:
    kind = _open(args).remove(args.name, force=args.force)
    if args.json:
        out.json({"removed": args.name, "kind": kind})
    else:
        out.info(f"removed {kind} {args.name}")
    return 0
