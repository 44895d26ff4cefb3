"""UPS units, PDUs and their outlets: which outlet feeds which PSU of which server.

:class:`PowerWriter` creates or updates UPS units and PDUs as the simple kinds are, then their
outlets (:meth:`~PowerWriter._parents`): a listed set replaces the stored one, and a server's
``ups: NAME`` adds outlet 0 (the whole output) of that UPS. A server's PSU is fed by one outlet.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sqlalchemy import Table, delete, select

from .bulk import _chunks
from .source import _at, _conflict, _refused
from .types import OutletRecord, PduRecord, UpsRecord
from .writer import _T_OUTLET, _T_PDU, _T_SERVER, _T_UPS, Writer

__all__ = ["PowerWriter"]

DEFAULT_PORTS = {"snmp": 161, "nut": 3493}
DEFAULT_UPS_PROFILE = "generic-ups-mib"
DEFAULT_PDU_PROFILE = "generic-pdu"


class PowerWriter(Writer):
    """UPS units and PDUs, each with its outlets; and the servers' ``ups: NAME`` (outlet 0 of the UPS)."""

    def _server_id(self, host: str, loc: str | None) -> int:
        sid = self.server_ids.get(host)
        if sid is None:
            sid = self.conn.execute(select(_T_SERVER.c.id).where(_T_SERVER.c.hostname == host)).scalar()
            if sid is None:
                raise _refused(f"unknown server {host!r}", field="server", loc=loc, value=host)
            self.server_ids[host] = sid
        return sid

    def _outlet_set(self, owner: str, outlets: Iterable[OutletRecord]) -> dict[int, tuple]:
        """number -> (name, server_id, psu), refusing a number, or a server's PSU, given twice."""
        out: dict[int, tuple] = {}
        for o in outlets:
            if o.number in out:
                raise _conflict(f"outlet {o.number} of {owner} is given twice", field="number", loc=o.loc)
            server_id = None if o.server is None else self._feed_psu(owner, o.number, o.server, o.psu, o.loc)
            out[o.number] = (o.name, server_id, o.psu)
        return out

    def _feed_psu(self, owner: str, number: int, server: str, psu: int, loc: str | None) -> int:
        """The id of ``server``, whose PSU ``psu`` outlet ``number`` of ``owner`` feeds; a PSU is fed once."""
        server_id = self._server_id(server, loc)
        first = self.outlet_psus.setdefault((server_id, psu), (owner, number, loc))
        if first[0] != owner or first[1] != number:
            where = f" (at {first[2]})" if first[2] else ""
            raise _conflict(f"PSU {psu} of {server} is fed by outlet {number} of {owner} and by "
                            f"outlet {first[1]} of {first[0]}{where}", field="server", loc=loc)
        return server_id

    def _parents(self, kind: str, table: Table, parent_col: str, recs: list, resolve: Callable[[Any], dict],
                 defaults: dict[str, Any], refs: Mapping[str, list] | None = None) -> dict[str, int]:
        """Create or update UPS units or PDUs, then their outlets. Returns name -> id.

        A record that lists its outlets replaces the stored ones. A server's ``ups: NAME`` adds
        outlet 0 (the whole output) of that UPS to what is listed or stored.
        """
        refs = refs or {}
        batch_names = {r.name for r in recs}
        names = [r.name for r in recs] + [n for n in refs if n not in batch_names]
        existing = {r["name"]: r for r in self._rows_by_keys(table, table.c.name, names)}
        resolved = {r.name: resolve(r) for r in recs}
        ids, unchanged = self._simple(kind, table, recs, existing, lambda r: r.name, ["name"],
                                      lambda r: resolved[r.name], defaults)
        for name, row in existing.items():
            ids.setdefault(name, row["id"])
        full: dict[str, dict[int, tuple]] = {}
        for rec in recs:
            if rec.outlets is not None:
                full[rec.name] = self._outlet_set(rec.name, rec.outlets)
        partial: dict[str, dict[int, tuple]] = {}
        for name, servers in refs.items():
            for host, psu, server_rec in servers:
                loc = _at(server_rec, "ups")
                if name not in ids:
                    raise _refused(f"unknown UPS {name!r}", field="ups", loc=loc, value=name)
                outlets = full.get(name)
                if outlets is None:
                    outlets = partial.setdefault(name, {})
                current = outlets.get(0)
                if current is None:  # outlet 0, unnamed, feeds the server's PSU
                    outlets[0] = ("", self._feed_psu(name, 0, host, psu, loc), psu)
                elif current[1] != self._server_id(host, loc):
                    raise _conflict(f"outlet 0 (the whole output) of UPS {name} is given to two servers",
                                    field="ups", loc=loc)
        if not full and not partial:
            return ids
        parent_ids = [ids[n] for n in (*full, *partial)]
        stored: dict[int, dict[int, tuple]] = defaultdict(dict)
        for r in self._rows_by_keys(_T_OUTLET, _T_OUTLET.c[parent_col], parent_ids):
            stored[r[parent_col]][r["number"]] = (r["name"], r["server_id"], r["psu"])
        for name, outlets in partial.items() if stored else ():
            have = stored.get(ids[name], {})
            merged = dict(have)
            for number, (oname, server_id, psu) in outlets.items():
                old = have.get(number)
                if old is not None and old[1] is not None and old[1] != server_id:
                    raise _conflict(f"outlet {number} of {name} already feeds another server", field="ups",
                                    loc=self.outlet_psus.get((server_id, psu), (None, None, None))[2])
                merged[number] = (old[0] if old is not None else oname, server_id, psu)
            full[name] = merged
        if not stored:  # nothing stored to merge with (a first import)
            full.update(partial)
        replace: list[int] = []  # parents whose stored outlets are replaced
        rows: list[tuple] = []
        for name, outlets in full.items():
            pid = ids[name]
            if outlets == stored.get(pid, {}):
                continue
            if pid in stored:
                replace.append(pid)
            rows.extend([(pid, n, *v) for n, v in sorted(outlets.items())])
            if name in unchanged:
                self.report.unchanged[kind] -= 1
                self.report.updated[kind] += 1
            elif name not in batch_names:
                self.report.updated[kind] += 1
        for chunk in _chunks(replace):
            self.conn.execute(delete(_T_OUTLET).where(_T_OUTLET.c[parent_col].in_(chunk)))
        self._insert(_T_OUTLET, rows, columns=(parent_col, "number", "name", "server_id", "psu"))
        return ids

    def _ups(self, recs: list[UpsRecord]) -> None:
        if not recs and not self.ups_refs:
            return
        unprofiled_nut = [r.name for r in recs if r.protocol == "nut" and r.profile is None]
        existing_names = {r["name"] for r in self._rows_by_keys(_T_UPS, _T_UPS.c.name, unprofiled_nut,
                                                                  [_T_UPS.c.name])}

        def resolve(rec: UpsRecord) -> dict[str, Any]:
            sid, rack_id = self._located(rec, rec.site)
            self._profile(rec.profile, rec, "ups")
            protocol = rec.protocol
            if protocol == "nut" and rec.profile is None and rec.name not in existing_names:
                # the default (generic-ups-mib) speaks SNMP: a NUT unit must say what it is
                raise _refused("a UPS read through NUT needs a profile; NUT profiles: "
                               + ", ".join(self._nut_profiles()), field="profile", loc=_at(rec, "protocol"))
            return {"name": rec.name, "site_id": sid, "rack_id": rack_id, "kind": rec.ups_kind,
                    "profile": rec.profile, "protocol": protocol, "host": rec.host,
                    "port": rec.port if rec.port is not None or protocol is None else DEFAULT_PORTS[protocol],
                    "nut_name": rec.nut_name,
                    "credential_id": None if rec.credential is None else self._cred_id(rec.credential, rec,
                                                                                        "credential"),
                    "feed_id": None if rec.feed is None else self._feed_id(sid, rec.site, rec.feed, rec),
                    "capacity_w": rec.capacity_w, "battery_installed": rec.battery_installed,
                    "description": rec.description}

        defaults = {"kind": "rack", "profile": DEFAULT_UPS_PROFILE, "protocol": "snmp", "port": 161,
                    "nut_name": "", "description": "", "rack_id": None, "credential_id": None, "feed_id": None,
                    "capacity_w": None, "battery_installed": None}
        self.ups_ids = self._parents("ups", _T_UPS, "ups_id", recs, resolve, defaults, self.ups_refs)

    def _pdus(self, recs: list[PduRecord]) -> None:
        if not recs:
            return
        ups_names = [r.ups for r in recs if r.ups is not None and r.ups not in self.ups_ids]
        for row in self._rows_by_keys(_T_UPS, _T_UPS.c.name, ups_names, [_T_UPS.c.name, _T_UPS.c.id]):
            self.ups_ids[row["name"]] = row["id"]

        def resolve(rec: PduRecord) -> dict[str, Any]:
            sid, rack_id = self._located(rec, rec.site)
            self._profile(rec.profile, rec, "pdu")
            ups_id = None
            if rec.ups is not None:
                ups_id = self.ups_ids.get(rec.ups)
                if ups_id is None:
                    raise _refused(f"unknown UPS {rec.ups!r}", field="ups", loc=_at(rec, "ups"), value=rec.ups)
            return {"name": rec.name, "site_id": sid, "rack_id": rack_id, "profile": rec.profile, "host": rec.host,
                    "port": rec.port,
                    "credential_id": None if rec.credential is None else self._cred_id(rec.credential, rec,
                                                                                        "credential"),
                    "feed_id": None if rec.feed is None else self._feed_id(sid, rec.site, rec.feed, rec),
                    "ups_id": ups_id, "capacity_w": rec.capacity_w, "description": rec.description}

        defaults = {"profile": DEFAULT_PDU_PROFILE, "port": 161, "description": "", "rack_id": None,
                    "credential_id": None, "feed_id": None, "ups_id": None, "capacity_w": None}
        self._parents("pdu", _T_PDU, "pdu_id", recs, resolve, defaults)
