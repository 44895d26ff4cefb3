"""Export the inventory as YAML (the flat form) or as CSV files, ready to import again.

The output is a pure function of the database: rows are ordered by their natural keys, so two
exports of the same inventory are byte-identical and a diff of two exports shows what changed.
Importing an export into an empty inventory (holding the same credentials) gives back the same
export: ``tests/test_export.py`` holds us to that.

Secrets never leave: credentials appear only as the names servers, UPS units and PDUs refer to,
and there is no ``credentials:`` section. Empty values (None, "", empty lists) are left out, which
the importer reads as "keep what is stored".
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import date
from typing import TYPE_CHECKING, Any

import yaml
from sqlalchemy import select

from .importer import CSV_COLUMNS
from .models import (
    BmcEndpoint,
    Credential,
    Disk,
    IpPool,
    Nic,
    Outlet,
    Pdu,
    Pod,
    PowerFeed,
    Rack,
    Server,
    ServerTag,
    Site,
    Ups,
)
from .validate import BMC_DEFAULT_PORT, REDFISH_DEFAULT_PORT

if TYPE_CHECKING:
    from sqlmodel import Session

__all__ = ["export_csv", "export_records", "export_yaml"]

_DEFAULT_PORTS = {"snmp": 161, "nut": 3493}


class _Flow(dict):
    """A mapping written on one line (NICs, disks, outlets, feeds): easier to read and to diff."""


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    pass


_Dumper.add_representer(_Flow, lambda dumper, data: dumper.represent_mapping(
    "tag:yaml.org,2002:map", data.items(), flow_style=True))


def _clean(mapping: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if v is not None and v != "" and v != [] and v != ()}


def _endpoint(host: str | None, port: int | None, default: int) -> str | None:
    if not host:
        return None
    if port is None or port == default:
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def export_records(session: Session) -> dict[str, list[dict[str, Any]]]:
    """The inventory as plain mappings per section, in export order (the common ground of both formats)."""
    conn = session.connection()

    def rows(model: Any, *order: Any) -> list:
        return list(conn.execute(select(model.__table__).order_by(*order)).mappings())

    sites = {r["id"]: r for r in rows(Site, Site.id)}
    pods = {r["id"]: r for r in rows(Pod, Pod.id)}
    racks = {r["id"]: r for r in rows(Rack, Rack.id)}
    feeds = {r["id"]: r for r in rows(PowerFeed, PowerFeed.id)}
    creds = dict(conn.execute(select(Credential.id, Credential.name)).all())  # names only, never secrets
    hosts = dict(conn.execute(select(Server.id, Server.hostname)).all())
    ups_names = dict(conn.execute(select(Ups.id, Ups.name)).all())

    def site_code(site_id: int | None) -> str | None:
        return sites[site_id]["code"] if site_id is not None else None

    def rack_name(rack_id: int | None) -> str | None:
        return racks[rack_id]["name"] if rack_id is not None else None

    out: dict[str, list[dict[str, Any]]] = {}
    out["sites"] = [_clean({"code": r["code"], "name": r["name"], "description": r["description"]})
                    for r in sorted(sites.values(), key=lambda r: r["code"])]
    out["pods"] = [_clean({"site": site_code(r["site_id"]), "code": r["code"], "name": r["name"], "kind": r["kind"]})
                   for r in sorted(pods.values(), key=lambda r: (site_code(r["site_id"]), r["code"]))]
    out["racks"] = [_clean({"site": site_code(r["site_id"]), "name": r["name"],
                            "pod": pods[r["pod_id"]]["code"] if r["pod_id"] is not None else None,
                            "units": r["units"], "description": r["description"]})
                    for r in sorted(racks.values(), key=lambda r: (site_code(r["site_id"]), r["name"]))]
    out["feeds"] = [_clean({"site": site_code(r["site_id"]), "name": r["name"], "rack": rack_name(r["rack_id"]),
                            "capacity_w": r["capacity_w"], "voltage": r["voltage"], "phases": r["phases"]})
                    for r in sorted(feeds.values(), key=lambda r: (site_code(r["site_id"]), r["name"]))]

    nics: dict[int, list] = defaultdict(list)
    for r in conn.execute(select(Nic.__table__).order_by(Nic.server_id, Nic.name)).mappings():
        nics[r["server_id"]].append(_clean({"name": r["name"], "mac": r["mac"], "ip": r["ip"], "switch": r["switch"],
                                            "switch_port": r["switch_port"], "pxe": True if r["pxe"] else None}))
    disks: dict[int, list] = defaultdict(list)
    for r in conn.execute(select(Disk.__table__).order_by(Disk.server_id, Disk.slot)).mappings():
        disks[r["server_id"]].append(_clean({"slot": r["slot"], "kind": r["kind"], "model": r["model"],
                                             "serial": r["serial"], "size_gb": r["size_gb"]}))
    tags: dict[int, list] = defaultdict(list)
    for server_id, tag in conn.execute(select(ServerTag.server_id, ServerTag.tag).order_by(ServerTag.server_id,
                                                                                          ServerTag.tag)):
        tags[server_id].append(tag)
    redfish = {r["server_id"]: r for r in conn.execute(select(BmcEndpoint.__table__).where(
        BmcEndpoint.protocol == "redfish")).mappings()}
    servers = []
    for r in conn.execute(select(Server.__table__).order_by(Server.hostname)).mappings():
        rack = racks.get(r["rack_id"])
        rf = redfish.get(r["id"])
        servers.append(_clean({
            "hostname": r["hostname"], "site": site_code(rack["site_id"]) if rack else None,
            "rack": rack["name"] if rack else None, "position": r["position"], "height": r["height"],
            "profile": r["profile"], "serial": r["serial"], "asset_tag": r["asset_tag"], "state": r["state"],
            "bmc": _endpoint(r["bmc_host"], r["bmc_port"], BMC_DEFAULT_PORT),
            "bmc_credential": creds.get(r["bmc_credential_id"]),
            "redfish": _endpoint(rf["host"], rf["port"], REDFISH_DEFAULT_PORT) if rf else None,
            "redfish_credential": creds.get(rf["credential_id"]) if rf else None,
            "redfish_tls_fingerprint": rf["tls_fingerprint"] if rf else None,
            "redfish_ca_file": rf["ca_file"] if rf else None,
            "ssh_credential": creds.get(r["ssh_credential_id"]),
            "primary_ip": r["primary_ip"], "ssh_host_key": r["ssh_host_key"], "priority": r["priority"],
            "description": r["description"], "tags": tags.get(r["id"]), "nics": nics.get(r["id"]),
            "disks": disks.get(r["id"]),
            "_pod": pods[rack["pod_id"]]["code"] if rack and rack["pod_id"] is not None else None,
        }))
    out["servers"] = servers

    outlets: dict[tuple[str, int], list] = defaultdict(list)
    for r in conn.execute(select(Outlet.__table__).order_by(Outlet.number)).mappings():
        parent = ("ups", r["ups_id"]) if r["ups_id"] is not None else ("pdu", r["pdu_id"])
        outlets[parent].append(_clean({"number": r["number"], "name": r["name"], "server": hosts.get(r["server_id"]),
                                       "psu": r["psu"]}))
    out["ups"] = [_clean({
        "name": r["name"], "site": site_code(r["site_id"]), "rack": rack_name(r["rack_id"]), "kind": r["kind"],
        "profile": r["profile"], "protocol": r["protocol"], "host": r["host"],
        "port": None if r["port"] == _DEFAULT_PORTS.get(r["protocol"]) else r["port"], "nut_name": r["nut_name"],
        "credential": creds.get(r["credential_id"]),
        "feed": feeds[r["feed_id"]]["name"] if r["feed_id"] is not None else None,
        "capacity_w": r["capacity_w"], "battery_installed": r["battery_installed"], "description": r["description"],
        "outlets": outlets.get(("ups", r["id"])),
    }) for r in rows(Ups, Ups.name)]
    out["pdus"] = [_clean({
        "name": r["name"], "site": site_code(r["site_id"]), "rack": rack_name(r["rack_id"]), "profile": r["profile"],
        "host": r["host"], "port": None if r["port"] == _DEFAULT_PORTS["snmp"] else r["port"],
        "credential": creds.get(r["credential_id"]),
        "feed": feeds[r["feed_id"]]["name"] if r["feed_id"] is not None else None,
        "ups": ups_names.get(r["ups_id"]), "capacity_w": r["capacity_w"], "description": r["description"],
        "outlets": outlets.get(("pdu", r["id"])),
    }) for r in rows(Pdu, Pdu.name)]
    out["pools"] = [_clean({
        "name": r["name"], "site": site_code(r["site_id"]), "rack": rack_name(r["rack_id"]), "cidr": r["cidr"],
        "purpose": r["purpose"], "gateway": r["gateway"], "first": r["first"], "last": r["last"],
        "dns": r["dns"].split(",") if r["dns"] else None, "vlan": r["vlan"],
    }) for r in rows(IpPool, IpPool.name)]
    return out


def export_yaml(session: Session) -> str:
    """The inventory in the flat YAML form: deterministic, secret-free, importable."""
    data = export_records(session)
    doc: dict[str, Any] = {"version": 1}
    for section, items in data.items():
        if not items:
            continue
        if section == "servers":
            items = [{k: v for k, v in s.items() if k != "_pod"} for s in items]
        doc[section] = [_flowed(section, item) for item in items]
    header = ("# Rackfleet inventory export (flat form; see docs/import-format.md).\n"
              "# Credentials are referenced by name only: no secret is ever exported.\n")
    return header + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True,
                              width=120)


def _flowed(section: str, item: dict[str, Any]) -> dict[str, Any]:
    if section == "feeds":
        return _Flow(item)
    out = dict(item)
    for key in ("nics", "disks", "outlets"):
        if key in out:
            out[key] = [_Flow(x) for x in out[key]]
    if "tags" in out:
        out["tags"] = _FlowList(out["tags"])
    if "dns" in out:
        out["dns"] = _FlowList(out["dns"])
    return out


class _FlowList(list):
    """A list written on one line ([a, b])."""


_Dumper.add_representer(_FlowList, lambda dumper, data: dumper.represent_sequence(
    "tag:yaml.org,2002:seq", data, flow_style=True))


def export_csv(session: Session) -> dict[str, str]:
    """The inventory as CSV texts by file name (sites.csv ... pools.csv); nics, disks, outlets apart."""
    data = export_records(session)
    tables: dict[str, tuple[str, list[dict[str, Any]]]] = {
        "sites.csv": ("site", data["sites"]),
        "pods.csv": ("pod", data["pods"]),
        "racks.csv": ("rack", data["racks"]),
        "feeds.csv": ("feed", data["feeds"]),
        "servers.csv": ("server", [{**{k: v for k, v in s.items() if k not in ("nics", "disks", "_pod")},
                                    "pod": s.get("_pod"), "tags": " ".join(s.get("tags", ()))}
                                   for s in data["servers"]]),
        "nics.csv": ("nic", [{"hostname": s["hostname"], **n} for s in data["servers"] for n in s.get("nics", ())]),
        "disks.csv": ("disk", [{"hostname": s["hostname"], **d} for s in data["servers"] for d in s.get("disks", ())]),
        "ups.csv": ("ups", [{k: v for k, v in u.items() if k != "outlets"} for u in data["ups"]]),
        "pdus.csv": ("pdu", [{k: v for k, v in p.items() if k != "outlets"} for p in data["pdus"]]),
        "outlets.csv": ("outlet", [{"ups": u["name"], **o} for u in data["ups"] for o in u.get("outlets", ())]
                        + [{"pdu": p["name"], **o} for p in data["pdus"] for o in p.get("outlets", ())]),
        "pools.csv": ("pool", [{**p, "dns": " ".join(p["dns"]) if p.get("dns") else None} for p in data["pools"]]),
    }
    # servers.csv carries no mac/ip columns: every NIC is in nics.csv.
    columns = {kind: [c for c in CSV_COLUMNS[kind] if not (kind == "server" and c in ("mac", "ip", "ups"))]
               for kind in CSV_COLUMNS}
    return {name: _csv_text(columns[kind], items) for name, (kind, items) in tables.items()}


def _csv_text(columns: list[str], items: Iterable[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for item in items:
        writer.writerow([_cell(item.get(c)) for c in columns])
    return buf.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, date):
        return value.isoformat()
    return str(value)
