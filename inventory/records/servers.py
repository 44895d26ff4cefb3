"""The servers of a batch: the hot path of a bulk import, and the checks that span many servers.

:class:`ServerWriter` writes servers with their NICs, disks and tags (a given list replaces the
stored one), records the state change "imported" of each new server, and refuses what two servers
cannot share: a MAC, an IP, a rack unit (:meth:`~ServerWriter._check_rack_units`), in the batch or
against the database (:meth:`~ServerWriter._check_addresses_in_db`). A server's Redfish endpoint
(``redfish``, ``redfish_credential``, ``redfish_tls_fingerprint``, ``redfish_ca_file``) is its row of
``bmc_endpoints`` (:meth:`~ServerWriter._endpoint_values`). A server's ``ups: NAME`` is only noted
here (``ups_refs``); :class:`~inventory.records.power.PowerWriter` wires it.
"""

from __future__ import annotations

from collections import defaultdict
from operator import attrgetter
from typing import Any

from sqlalchemy import delete, select, update

from .bulk import _chunks
from .source import _at, _conflict, _refused
from .types import ServerRecord
from .writer import _T_BMC_EP, _T_CHANGE, _T_CRED, _T_DISK, _T_NIC, _T_SERVER, _T_TAG, Writer

__all__ = ["ServerWriter"]

DEFAULT_SERVER_PROFILE = "generic-ipmi"

# Server columns whose record attribute has the column's name and value.
_PLAIN_COLUMNS = ("position", "height", "profile", "serial", "asset_tag", "bmc_host", "bmc_port", "primary_ip",
                  "ssh_host_key", "priority", "description")
# Server columns an import may set, and their values when a new server does not give them.
_SERVER_DEFAULTS: dict[str, Any] = {
    "rack_id": None, "position": None, "height": 1, "profile": DEFAULT_SERVER_PROFILE, "serial": "",
    "asset_tag": "", "bmc_host": None, "bmc_port": 623, "bmc_credential_id": None, "ssh_credential_id": None,
    "primary_ip": None, "ssh_host_key": None, "priority": 100, "description": "",
}


class ServerWriter(Writer):
    """Servers, with their NICs, disks and tags, and the checks that span the batch and the database."""

    def _servers(self, recs: list[ServerRecord]) -> None:
        if not recs:
            return
        conn = self.conn
        hostnames = [r.hostname for r in recs]
        any_servers = conn.execute(select(_T_SERVER.c.id).limit(1)).first() is not None
        existing = {r["hostname"]: r for r in self._rows_by_keys(_T_SERVER, _T_SERVER.c.hostname, hostnames)} \
            if any_servers else {}
        if existing and self.mode == "create":
            rec = next(r for r in recs if r.hostname in existing)
            raise _conflict(f"server {rec.hostname!r} already exists", field="hostname", loc=_at(rec, "hostname"))
        ids_in_batch = {row["id"]: h for h, row in existing.items()}
        stored_nics: dict[int, set] = defaultdict(set)
        stored_disks: dict[int, set] = defaultdict(set)
        stored_tags: dict[int, set] = defaultdict(set)
        if existing:
            id_list = list(ids_in_batch)
            for r in self._rows_by_keys(_T_NIC, _T_NIC.c.server_id, id_list):
                stored_nics[r["server_id"]].add((r["name"], r["mac"], r["ip"], r["switch"], r["switch_port"],
                                                 bool(r["pxe"])))
            for r in self._rows_by_keys(_T_DISK, _T_DISK.c.server_id, id_list):
                stored_disks[r["server_id"]].add((r["slot"], r["kind"], r["model"], r["serial"], r["size_gb"]))
            for r in self._rows_by_keys(_T_TAG, _T_TAG.c.server_id, id_list):
                stored_tags[r["server_id"]].add(r["tag"])

        with_redfish = [r for r in recs if r.redfish_host is not None or r.redfish_credential is not None
                        or r.redfish_tls_fingerprint is not None or r.redfish_ca_file is not None]
        stored_redfish: dict[int, Any] = {}
        redfish_kinds: dict[str, str] = {}
        if with_redfish:
            stored_redfish = {r["server_id"]: r for r in self._rows_by_keys(
                _T_BMC_EP, _T_BMC_EP.c.server_id, [existing[r.hostname]["id"] for r in with_redfish
                                                   if r.hostname in existing]) if r["protocol"] == "redfish"}
            redfish_kinds = self._credential_kinds({r.redfish_credential for r in with_redfish
                                                    if r.redfish_credential is not None})
        endpoint_inserts: list[tuple[ServerRecord, dict]] = []  # (server, row values) of new endpoint rows
        endpoint_changes: list[tuple[int, dict]] = []

        plain = attrgetter(*_PLAIN_COLUMNS)
        site_ids = self.sites
        racks = self.racks
        creds = self.creds
        inserts: list[dict] = []
        new_recs: list[ServerRecord] = []
        changes: list[tuple[int, dict]] = []
        rewrite_nics: list[ServerRecord] = []  # existing servers whose NICs are replaced
        rewrite_disks: list[ServerRecord] = []
        rewrite_tags: list[ServerRecord] = []
        placements: list[tuple] = []  # (rack, position, height, host, record, units)
        macs: dict[str, tuple[str, str | None]] = {}
        nic_ips: dict[str, tuple[str, str | None]] = {}
        ip_owner: dict[str, str] = {}
        state_ignored: list[str] = []
        replaced_nic_ids: set[int] = set()  # existing servers whose NICs the batch restates
        primary_restated: set[int] = set()

        pod_codes = self.pod_codes
        ups_refs = self.ups_refs
        profiles_ok: set[str] = set()  # server profiles already checked
        for rec in recs:
            host = rec.hostname
            row = existing.get(host)
            vals: dict[str, Any] = {c: v for c, v in zip(_PLAIN_COLUMNS, plain(rec), strict=True) if v is not None}
            rack_row = None
            site = rec.site
            if rec.rack is not None:
                sid = site_ids.get(site)  # type: ignore[arg-type]
                if sid is None:
                    raise _refused(f"unknown site {site!r}", field="site", loc=_at(rec, "site"), value=site)
                rack_row = racks.get((sid, rec.rack))
                if rack_row is None:
                    raise _refused(f"unknown rack {rec.rack!r} in site {site!r}", field="rack",
                                   loc=_at(rec, "rack"), value=rec.rack)
                vals["rack_id"] = rack_row["id"]
                if rec.pod is not None:
                    pod_code = pod_codes.get(rack_row["pod_id"])
                    if pod_code != rec.pod:
                        raise _refused(f"rack {rec.rack!r} is in pod {pod_code!r}, not {rec.pod!r}", field="pod",
                                       loc=_at(rec, "pod"), value=rec.pod)
            elif site is not None and site not in site_ids:
                raise _refused(f"unknown site {site!r}", field="site", loc=_at(rec, "site"), value=site)
            profile = rec.profile
            if profile is not None and profile not in profiles_ok:
                self._profile(profile, rec, "server")
                profiles_ok.add(profile)
            if rec.bmc_credential is not None:
                vals["bmc_credential_id"] = creds.get(rec.bmc_credential) or self._cred_id(
                    rec.bmc_credential, rec, "bmc_credential")
            if rec.ssh_credential is not None:
                vals["ssh_credential_id"] = creds.get(rec.ssh_credential) or self._cred_id(
                    rec.ssh_credential, rec, "ssh_credential")

            # Where the server will be, to check rack units below.
            if row is None:
                rack_id, pos, height = vals.get("rack_id"), vals.get("position"), vals.get("height", 1)
            else:
                rack_id = vals.get("rack_id", row["rack_id"])
                pos = vals.get("position", row["position"])
                height = vals.get("height", row["height"])
                if "rack_id" in vals and vals["rack_id"] != row["rack_id"] and "position" not in vals:
                    pos = None  # moved to another rack without a position: unplaced there
                    vals["position"] = None
            if rack_id is not None and pos is not None:
                units = rack_row["units"] if rack_row is not None else None
                placements.append((rack_id, pos, height, host, rec, units or 0))

            # Addresses: unique within the batch; checked against the database below.
            if rec.nics:
                seen_names: set[str] = set()
                for nic in rec.nics:
                    name, mac, ip, nic_loc = nic.name, nic.mac, nic.ip, nic.loc
                    if name in seen_names:
                        raise _conflict(f"{host} has two NICs named {name!r}", field="name", loc=nic_loc)
                    seen_names.add(name)
                    other = macs.get(mac)
                    if other is not None:
                        raise _conflict(f"MAC {mac} is given twice: {host} and {other[0]} (at {other[1]})",
                                        field="mac", loc=nic_loc)
                    macs[mac] = (host, nic_loc)
                    if ip is not None:
                        other = nic_ips.get(ip)
                        if other is not None:
                            raise _conflict(f"IP {ip} is given twice: {host} and {other[0]} (at {other[1]})",
                                            field="ip", loc=nic_loc)
                        nic_ips[ip] = (host, nic_loc)
                        owner = ip_owner.setdefault(ip, host)
                        if owner != host:
                            raise _conflict(f"IP {ip} is also the primary IP of {owner}", field="ip", loc=nic_loc)
            if rec.primary_ip is not None:
                owner = ip_owner.setdefault(rec.primary_ip, host)
                if owner != host:
                    raise _conflict(f"IP {rec.primary_ip} is already given to {owner} in this import",
                                    field="primary_ip", loc=_at(rec, "primary_ip"))
            if rec.ups is not None:
                ups_refs[rec.ups].append((host, 1, rec))

            endpoint = None
            if with_redfish and (rec.redfish_host is not None or rec.redfish_credential is not None
                                 or rec.redfish_tls_fingerprint is not None or rec.redfish_ca_file is not None):
                endpoint = self._endpoint_values(rec, redfish_kinds)

            if row is None:
                if endpoint is not None:
                    endpoint_inserts.append((rec, self._new_endpoint(rec, endpoint)))
                state = rec.state or "new"
                inserts.append({**_SERVER_DEFAULTS, **vals, "hostname": host, "state": state,
                                "state_reason": "imported"})
                new_recs.append(rec)
                continue
            sid_ = row["id"]
            if rec.nics is not None:
                replaced_nic_ids.add(sid_)
            if rec.primary_ip is not None:
                primary_restated.add(sid_)
            if rec.state is not None and rec.state != row["state"]:
                state_ignored.append(host)
            diff = {c: v for c, v in vals.items() if row[c] != v}
            touched = bool(diff)
            if endpoint is not None:
                stored_ep = stored_redfish.get(sid_)
                if stored_ep is None:
                    endpoint_inserts.append((rec, self._new_endpoint(rec, endpoint)))
                    touched = True
                else:
                    ep_diff = {c: v for c, v in endpoint.items() if stored_ep[c] != v}
                    if ep_diff:
                        endpoint_changes.append((stored_ep["id"], ep_diff))
                        touched = True
            if rec.nics is not None and {n.key() for n in rec.nics} != stored_nics.get(sid_, set()):
                rewrite_nics.append(rec)
                touched = True
            if rec.disks is not None and {d.key() for d in rec.disks} != stored_disks.get(sid_, set()):
                rewrite_disks.append(rec)
                touched = True
            if rec.tags is not None and set(rec.tags) != stored_tags.get(sid_, set()):
                rewrite_tags.append(rec)
                touched = True
            if touched:
                changes.append((sid_, diff))
                self.report.updated["server"] += 1
            else:
                self.report.unchanged["server"] += 1

        if state_ignored:
            sample = ", ".join(state_ignored[:5]) + (" ..." if len(state_ignored) > 5 else "")
            self.report.warnings.append(
                f"{len(state_ignored)} existing server(s) have another state in the import; states of existing "
                f"servers are changed only by lifecycle moves ('fleet state'), so they were kept: {sample}")

        self._check_rack_units(placements, set(existing) | {r.hostname for r in new_recs}, any_servers)
        if any_servers:
            self._check_addresses_in_db(macs, nic_ips, ip_owner, ids_in_batch, replaced_nic_ids,
                                        primary_restated, recs)

        # Writes: updates and deletions first, so a MAC or a rack unit can move between servers.
        self._update(_T_SERVER, [(i, d) for i, d in changes if d], stamps=("updated_at",))
        touched_only = [i for i, d in changes if not d]
        if touched_only:
            for chunk in _chunks(touched_only):
                conn.execute(update(_T_SERVER).where(_T_SERVER.c.id.in_(chunk)).values(updated_at=self.now_sql))
        for table, recs_ in ((_T_NIC, rewrite_nics), (_T_DISK, rewrite_disks), (_T_TAG, rewrite_tags)):
            ids = [existing[r.hostname]["id"] for r in recs_]
            for chunk in _chunks(ids):
                conn.execute(delete(table).where(table.c.server_id.in_(chunk)))

        new_ids = self._insert(_T_SERVER, inserts, stamps=("created_at", "updated_at", "state_changed_at"),
                               key=["hostname"])
        id_of = {h: row["id"] for h, row in existing.items()}
        id_of.update(new_ids)
        self.server_ids.update(id_of)
        if inserts:
            self.report.created["server"] += len(inserts)

        nic_rows: list[tuple] = []
        disk_rows: list[tuple] = []
        tag_rows: list[tuple] = []
        for rec in (*new_recs, *rewrite_nics):
            sid_ = id_of[rec.hostname]
            nic_rows.extend([(sid_, n.name, n.mac, n.ip, n.switch, n.switch_port, n.pxe) for n in rec.nics or ()])
        for rec in (*new_recs, *rewrite_disks):
            sid_ = id_of[rec.hostname]
            disk_rows.extend([(sid_, d.slot, d.disk_kind, d.model, d.serial, d.size_gb) for d in rec.disks or ()])
        for rec in (*new_recs, *rewrite_tags):
            sid_ = id_of[rec.hostname]
            tag_rows.extend([(sid_, t) for t in rec.tags or ()])
        self._insert(_T_NIC, nic_rows, columns=("server_id", "name", "mac", "ip", "switch", "switch_port", "pxe"))
        self._insert(_T_DISK, disk_rows, columns=("server_id", "slot", "kind", "model", "serial", "size_gb"))
        self._insert(_T_TAG, tag_rows, columns=("server_id", "tag"))
        self._update(_T_BMC_EP, endpoint_changes, stamps=("updated_at",))
        self._insert(_T_BMC_EP, [{**vals, "server_id": id_of[rec.hostname]} for rec, vals in endpoint_inserts],
                     stamps=("updated_at",))
        actor = self.actor
        self._insert(_T_CHANGE, [(id_of[r.hostname], "new", r.state or "new", actor, "imported") for r in new_recs],
                     columns=("server_id", "from_state", "to_state", "actor", "reason"), stamps=("ts",))

    def _credential_kinds(self, names: set[str]) -> dict[str, str]:
        """The kind of each named credential: of this batch (already written) or stored."""
        if not names:
            return {}
        return {r["name"]: r["kind"] for r in self._rows_by_keys(_T_CRED, _T_CRED.c.name, sorted(names),
                                                                  [_T_CRED.c.name, _T_CRED.c.kind])}

    def _endpoint_values(self, rec: ServerRecord, kinds: dict[str, str]) -> dict[str, Any]:
        """The ``bmc_endpoints`` columns a server record's Redfish fields set (trust: one of the two)."""
        vals: dict[str, Any] = {}
        if rec.redfish_host is not None:
            vals["host"], vals["port"] = rec.redfish_host, rec.redfish_port
        if rec.redfish_credential is not None:
            name = rec.redfish_credential
            cred_id = self.creds.get(name) or self._cred_id(name, rec, "redfish_credential")
            if kinds.get(name, "redfish") != "redfish":
                raise _refused(f"credential {name!r} is of kind {kinds[name]}: a Redfish endpoint needs a redfish "
                               "credential", field="redfish_credential", loc=_at(rec, "redfish_credential"),
                               value=name)
            vals["credential_id"] = cred_id
        if rec.redfish_tls_fingerprint is not None:
            vals["tls_fingerprint"], vals["ca_file"] = rec.redfish_tls_fingerprint, None
        if rec.redfish_ca_file is not None:
            vals["ca_file"], vals["tls_fingerprint"] = rec.redfish_ca_file, None
        return vals

    @staticmethod
    def _new_endpoint(rec: ServerRecord, vals: dict[str, Any]) -> dict[str, Any]:
        if "host" not in vals:
            fld = next(f for f in ("redfish_credential", "redfish_tls_fingerprint", "redfish_ca_file")
                       if getattr(rec, f) is not None)
            raise _refused(f"{rec.hostname} has no Redfish endpoint yet: give redfish: HOST[:PORT] with {fld}",
                           field=fld, loc=_at(rec, fld))
        return {"protocol": "redfish", "credential_id": None, "tls_fingerprint": None, "ca_file": None, **vals}

    def _check_rack_units(self, placements: list, batch_hosts: set[str], any_servers: bool) -> None:
        """Refuse servers that overlap in a rack or do not fit in it, counting servers already there."""
        rack_ids = {p[0] for p in placements} | getattr(self, "_shrunk_racks", set())
        if not rack_ids:
            return
        units_of = {row["id"]: row["units"] for row in self.racks.values()}
        occupied: dict[int, dict[int, tuple[str, Any]]] = defaultdict(dict)
        todo = list(placements)
        if any_servers:
            stored = []
            for chunk in _chunks(sorted(rack_ids)):
                stored.extend(self.conn.execute(
                    select(_T_SERVER.c.rack_id, _T_SERVER.c.position, _T_SERVER.c.height, _T_SERVER.c.hostname)
                    .where(_T_SERVER.c.rack_id.in_(chunk), _T_SERVER.c.position.is_not(None))).all())
            # Servers already in place come first, so the message names the newcomer.
            todo = [(r, p, h, host, None, 0) for r, p, h, host in stored if host not in batch_hosts] + todo

        def rack_name(rack_id: int) -> str:
            return next((name for (_s, name), row in self.racks.items() if row["id"] == rack_id), str(rack_id))

        for rack_id, pos, height, host, rec, _units in todo:
            units = units_of.get(rack_id, 0)
            top = pos + height - 1
            if top > units:
                msg = f"{host} at units {pos}-{top} does not fit in rack {rack_name(rack_id)} ({units} units)"
                if rec is None:
                    msg += " after this import"
                raise _conflict(msg, field="position", loc=rec and _at(rec, "position"))
            slots = occupied[rack_id]
            for unit in range(pos, top + 1):
                other = slots.get(unit)
                if other is not None:
                    first = _at(other[1], "position") if other[1] is not None else None
                    where = f" (at {first})" if first else ""
                    raise _conflict(f"{host} at units {pos}-{top} overlaps {other[0]}{where} at unit {unit} of "
                                    f"rack {rack_name(rack_id)}", field="position", loc=rec and _at(rec, "position"))
                slots[unit] = (host, rec)

    def _check_addresses_in_db(self, macs: dict, nic_ips: dict, ip_owner: dict, ids_in_batch: dict[int, str],
                               replaced_nic_ids: set[int], primary_restated: set[int], recs: list) -> None:
        """Refuse MACs and IPs stored for another server, unless this batch rewrites that server's."""
        conn = self.conn
        host_of: dict[int, str] = dict(ids_in_batch)

        def hostname(server_id: int) -> str:
            if server_id not in host_of:
                host_of[server_id] = conn.execute(
                    select(_T_SERVER.c.hostname).where(_T_SERVER.c.id == server_id)).scalar_one()
            return host_of[server_id]

        def where(ip: str) -> tuple[str, str | None]:
            if ip in nic_ips:
                return "ip", nic_ips[ip][1]
            return "primary_ip", next((r.loc for r in recs if r.hostname == ip_owner[ip]), None)

        for row in self._rows_by_keys(_T_NIC, _T_NIC.c.mac, list(macs), [_T_NIC.c.mac, _T_NIC.c.server_id]):
            if row["server_id"] not in replaced_nic_ids:
                raise _conflict(f"MAC {row['mac']} already belongs to {hostname(row['server_id'])}", field="mac",
                                loc=macs[row["mac"]][1])
        ips = list(ip_owner)
        for row in self._rows_by_keys(_T_NIC, _T_NIC.c.ip, ips, [_T_NIC.c.ip, _T_NIC.c.server_id]):
            if row["server_id"] in replaced_nic_ids:
                continue
            ip, owner = row["ip"], hostname(row["server_id"])
            if ip in nic_ips or owner != ip_owner[ip]:
                fld, loc = where(ip)
                raise _conflict(f"IP {ip} already belongs to a NIC of {owner}", field=fld, loc=loc)
        for row in self._rows_by_keys(_T_SERVER, _T_SERVER.c.primary_ip, ips,
                                      [_T_SERVER.c.primary_ip, _T_SERVER.c.id, _T_SERVER.c.hostname]):
            ip = row["primary_ip"]
            if row["id"] not in primary_restated and row["hostname"] != ip_owner[ip]:
                fld, loc = where(ip)
                raise _conflict(f"IP {ip} is already the primary IP of {row['hostname']}", field=fld, loc=loc)
