"""The kind writers' common part: the state of one apply, references, and the simple kinds.

:class:`Writer` holds what one :func:`inventory.records.apply` has preloaded and written so far
(ids by natural key), turns a record's names (site, rack, feed, credential, profile) into ids or
refuses them at the ``file:line`` of the key, and creates or updates the kinds that need nothing
more (:meth:`Writer._simple`): sites, pods, racks, feeds, credentials and IP pools.
"""

from __future__ import annotations

import difflib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Connection, Table, select

from ..models import (
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
    StateChange,
    Ups,
)
from .bulk import BulkWriter
from .source import _at, _conflict, _refused
from .types import CredentialRecord, FeedRecord, PodRecord, PoolRecord, RackRecord, SiteRecord

if TYPE_CHECKING:
    from ..secrets import KeyRing

__all__ = ["ApplyReport", "ProfileNames", "Writer"]


class ProfileNames(Protocol):
    """What :func:`apply` needs of ``fleet.profiles.ProfileSet``: membership and the names."""

    def __contains__(self, name: object) -> bool: ...

    def names(self) -> Iterable[str]: ...


@dataclass
class ApplyReport:
    """What :func:`apply` did, per record kind, and what it thought worth saying."""

    created: Counter[str] = field(default_factory=Counter)
    updated: Counter[str] = field(default_factory=Counter)
    unchanged: Counter[str] = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(sum(self.created.values()) or sum(self.updated.values()))


def _table(model: Any) -> Table:
    return model.__table__


_T_SITE, _T_POD, _T_RACK, _T_FEED = _table(Site), _table(Pod), _table(Rack), _table(PowerFeed)
_T_CRED, _T_SERVER, _T_TAG, _T_NIC = _table(Credential), _table(Server), _table(ServerTag), _table(Nic)
_T_DISK, _T_UPS, _T_PDU, _T_OUTLET = _table(Disk), _table(Ups), _table(Pdu), _table(Outlet)
_T_POOL, _T_CHANGE, _T_BMC_EP = _table(IpPool), _table(StateChange), _table(BmcEndpoint)


class Writer(BulkWriter):
    """One apply: the preloaded keys, the lookups of references, and the kinds written by :meth:`_simple`.

    Sites, pods, racks, feeds, credentials and pools are written here; servers by
    :class:`~inventory.records.servers.ServerWriter`, UPS units and PDUs by
    :class:`~inventory.records.power.PowerWriter`, which build on this state: what each kind
    writes (``sites``, ``racks``, ``server_ids``, ``ups_refs``...) is what later kinds resolve against.
    """

    def __init__(self, conn: Connection, profiles: ProfileNames, keyring: KeyRing | None, actor: str,
                 mode: str) -> None:
        super().__init__(conn)
        self.profiles = profiles
        self.profile_names: set[str] | None = None
        self.profiles_ok: set[tuple[str, str]] = set()  # (profile, device kind) pairs already checked
        self.keyring = keyring
        self.actor = actor
        self.mode = mode
        self.report = ApplyReport()
        self.sites: dict[str, int] = {}
        self.pods: dict[tuple[int, str], int] = {}
        self.pod_codes: dict[int, str] = {}
        self.racks: dict[tuple[int, str], Any] = {}  # (site_id, name) -> row
        self.feeds: dict[tuple[int, str], int] = {}
        self.creds: dict[str, int] = {}
        self.server_ids: dict[str, int] = {}  # host names of the batch and of referenced servers
        self.ups_ids: dict[str, int] = {}
        self.ups_refs: dict[str, list[tuple[str, int, str | None]]] = defaultdict(list)  # ups -> servers
        self.outlet_psus: dict[tuple[str, int], str | None] = {}  # (host, psu) -> where, within the batch

    # -- references ---------------------------------------------------------------------------------------

    def _profile(self, name: str | None, rec: Any, kind: str, fld: str = "profile") -> None:
        """Refuse a profile that does not exist (suggesting close names) or is for another kind of device."""
        if name is None or (name, kind) in self.profiles_ok:
            return
        if self.profile_names is None:
            self.profile_names = set(self.profiles.names())
        if name not in self.profile_names:
            same_kind = [n for n in sorted(self.profile_names) if self._profile_kind(n) in (kind, None)]
            close = difflib.get_close_matches(name, same_kind, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise _refused(f"no hardware profile named {name!r}{hint}", field=fld, loc=_at(rec, fld), value=name)
        actual = self._profile_kind(name)
        if actual is not None and actual != kind:
            raise _refused(f"profile {name!r} is for a {actual}, not a {kind}", field=fld, loc=_at(rec, fld),
                           value=name)
        self.profiles_ok.add((name, kind))

    def _profile_kind(self, name: str) -> str | None:
        get = getattr(self.profiles, "get", None)
        return getattr(get(name), "kind", None) if get is not None else None

    def _nut_profiles(self) -> list[str]:
        return sorted(p.name for p in getattr(self.profiles, "of_kind", lambda _k: [])("ups")
                      if getattr(p, "nut", None) is not None)

    def _site_id(self, code: str, rec: Any, fld: str = "site") -> int:
        try:
            return self.sites[code]
        except KeyError:
            raise _refused(f"unknown site {code!r}", field=fld, loc=_at(rec, fld), value=code) from None

    def _rack_row(self, site_id: int, site: str, name: str, rec: Any, fld: str = "rack") -> Any:
        row = self.racks.get((site_id, name))
        if row is None:
            raise _refused(f"unknown rack {name!r} in site {site!r}", field=fld, loc=_at(rec, fld), value=name)
        return row

    def _feed_id(self, site_id: int, site: str, name: str, rec: Any) -> int:
        try:
            return self.feeds[(site_id, name)]
        except KeyError:
            raise _refused(f"unknown power feed {name!r} in site {site!r}", field="feed", loc=_at(rec, "feed"),
                           value=name) from None

    def _cred_id(self, name: str, rec: Any, fld: str) -> int:
        try:
            return self.creds[name]
        except KeyError:
            raise _refused(f"unknown credential {name!r}: import it with its secrets file (--secrets FILE, "
                           f"from 'fleet export --secrets FILE'), create it first ('fleet credentials set {name} "
                           "--kind ...'), or import without it (--without-credentials)", field=fld,
                           loc=_at(rec, fld), value=name) from None

    def _located(self, rec: Any, site: str) -> tuple[int, int | None]:
        sid = self._site_id(site, rec)
        rack_id = None if rec.rack is None else self._rack_row(sid, site, rec.rack, rec)["id"]
        return sid, rack_id

    def _simple(self, kind: str, table: Table, recs: list, existing: dict[Any, Any],
                key: Callable[[Any], Any], key_columns: Sequence[str], values: Callable[[Any], dict[str, Any]],
                defaults: dict[str, Any], compare: Callable[[Any, str, Any], bool] | None = None
                ) -> tuple[dict[Any, int], set[Any]]:
        """Create or update records; returns (natural key -> id for the batch, the keys left unchanged)."""
        inserts: list[dict] = []
        changes: list[tuple[int, dict]] = []
        ids: dict[Any, int] = {}
        unchanged: set[Any] = set()
        for rec in recs:
            k = key(rec)
            vals = values(rec)
            row = existing.get(k)
            if row is None:
                inserts.append({**defaults, **{c: v for c, v in vals.items() if v is not None}})
                continue
            if self.mode == "create":
                raise _conflict(f"{kind} {'/'.join(map(str, k)) if isinstance(k, tuple) else k!r} already exists",
                                field="name" if kind not in ("site", "pod") else "code", loc=_at(rec, "name"))
            ids[k] = row["id"]
            diff = {c: v for c, v in vals.items()
                    if v is not None and not (compare(row, c, v) if compare else row[c] == v)}
            if diff:
                changes.append((row["id"], diff))
                self.report.updated[kind] += 1
            else:
                unchanged.add(k)
                self.report.unchanged[kind] += 1
        self._update(table, changes)
        ids.update(self._insert(table, inserts, key=key_columns))
        if inserts:
            self.report.created[kind] += len(inserts)
        return ids, unchanged

    # -- sites, pods, racks, feeds -----------------------------------------------------------------------

    def _sites(self, recs: list[SiteRecord]) -> None:
        existing = {r["code"]: r for r in self.conn.execute(select(_T_SITE)).mappings()}
        self.sites = {code: r["id"] for code, r in existing.items()}
        ids, _ = self._simple("site", _T_SITE, recs, existing, lambda r: r.code, ["code"],
                           lambda r: {"code": r.code, "name": r.name, "description": r.description},
                           {"name": "", "description": ""})
        self.sites.update(ids)

    def _pods(self, recs: list[PodRecord]) -> None:
        existing = {(r["site_id"], r["code"]): r for r in self.conn.execute(select(_T_POD)).mappings()}
        self.pods = {k: r["id"] for k, r in existing.items()}
        keyed = [(rec, self._site_id(rec.site, rec)) for rec in recs]
        site_of = {id(rec): sid for rec, sid in keyed}
        ids, _ = self._simple("pod", _T_POD, recs, existing, lambda r: (site_of[id(r)], r.code),
                              ["site_id", "code"],
                           lambda r: {"site_id": site_of[id(r)], "code": r.code, "name": r.name,
                                      "kind": r.pod_kind},
                           {"name": "", "kind": "room"})
        self.pods.update(ids)
        self.pod_codes = {pid: code for (_sid, code), pid in self.pods.items()}

    def _pod_id(self, site_id: int, site: str, code: str, rec: Any) -> int:
        try:
            return self.pods[(site_id, code)]
        except KeyError:
            raise _refused(f"unknown pod {code!r} in site {site!r}", field="pod", loc=_at(rec, "pod"),
                           value=code) from None

    def _racks(self, recs: list[RackRecord]) -> None:
        existing = {(r["site_id"], r["name"]): r for r in self.conn.execute(select(_T_RACK)).mappings()}
        resolved: dict[int, dict[str, Any]] = {}
        for rec in recs:
            sid = self._site_id(rec.site, rec)
            resolved[id(rec)] = {"site_id": sid, "name": rec.name,
                                 "pod_id": None if rec.pod is None else self._pod_id(sid, rec.site, rec.pod, rec),
                                 "units": rec.units, "description": rec.description}
        self._shrunk_racks: set[int] = set()
        for rec in recs:
            row = existing.get((resolved[id(rec)]["site_id"], rec.name))
            if row is not None and rec.units is not None and rec.units < row["units"]:
                self._shrunk_racks.add(row["id"])
        self._simple("rack", _T_RACK, recs, existing, lambda r: (resolved[id(r)]["site_id"], r.name),
                     ["site_id", "name"], lambda r: resolved[id(r)], {"units": 42, "description": "", "pod_id": None})
        self.racks = {(r["site_id"], r["name"]): dict(r) for r in self.conn.execute(select(_T_RACK)).mappings()}

    def _feeds(self, recs: list[FeedRecord]) -> None:
        existing = {(r["site_id"], r["name"]): r for r in self.conn.execute(select(_T_FEED)).mappings()}
        self.feeds = {k: r["id"] for k, r in existing.items()}
        resolved: dict[int, dict[str, Any]] = {}
        for rec in recs:
            sid = self._site_id(rec.site, rec)
            rack_id = None if rec.rack is None else self._rack_row(sid, rec.site, rec.rack, rec)["id"]
            resolved[id(rec)] = {"site_id": sid, "name": rec.name, "rack_id": rack_id,
                                 "capacity_w": rec.capacity_w, "voltage": rec.voltage, "phases": rec.phases}
        ids, _ = self._simple("feed", _T_FEED, recs, existing, lambda r: (resolved[id(r)]["site_id"], r.name),
                              ["site_id", "name"], lambda r: resolved[id(r)],
                              {"capacity_w": 0, "phases": 1, "voltage": None, "rack_id": None})
        self.feeds.update(ids)

    # -- credentials -------------------------------------------------------------------------------------

    def _credentials(self, recs: list[CredentialRecord]) -> None:
        existing = {r["name"]: r for r in self.conn.execute(select(_T_CRED)).mappings()}
        self.creds = {name: r["id"] for name, r in existing.items()}
        if recs and self.keyring is None:
            raise _refused("credentials need the secret key to be sealed (run 'fleet init' first)",
                           field="secret", loc=recs[0].loc)
        keyring = self.keyring

        def values(rec: CredentialRecord) -> dict[str, Any]:
            row = existing.get(rec.name)
            vals: dict[str, Any] = {"name": rec.name, "kind": rec.cred_kind, "username": rec.username,
                                    "options": None if rec.options is None else dict(rec.options)}
            if rec.secret is not None and "\n" in rec.secret and rec.cred_kind != "ssh":
                raise _refused("only an ssh credential may hold a private key block", field="secret",
                               loc=_at(rec, "secret"))
            if rec.secret is not None:
                same = row is not None and keyring.open(row["secret"], name=f"credential {rec.name}").reveal() \
                    == rec.secret
                if not same:
                    vals["secret"] = keyring.seal(rec.secret)
            elif row is None:
                raise _refused("a new credential needs its secret", field="secret", loc=_at(rec, "secret"))
            if row is not None and any(v is not None and row[c] != v for c, v in vals.items()):
                vals["updated_at"] = self.now
            return vals

        ids, _ = self._simple("credential", _T_CRED, recs, existing, lambda r: r.name, ["name"], values,
                           {"username": "", "options": {}, "created_at": self.now, "updated_at": self.now})
        self.creds.update(ids)

    # -- pools ------------------------------------------------------------------------------------------

    def _pools(self, recs: list[PoolRecord]) -> None:
        if not recs:
            return
        existing = {r["name"]: r for r in self.conn.execute(select(_T_POOL)).mappings()}

        def resolve(rec: PoolRecord) -> dict[str, Any]:
            sid = rack_id = None
            if rec.site is not None:
                sid, rack_id = self._located(rec, rec.site)
            return {"name": rec.name, "site_id": sid, "rack_id": rack_id, "purpose": rec.purpose, "cidr": rec.cidr,
                    "gateway": rec.gateway, "first": rec.first, "last": rec.last, "dns": rec.dns, "vlan": rec.vlan}

        resolved = {r.name: resolve(r) for r in recs}
        self._simple("pool", _T_POOL, recs, existing, lambda r: r.name, ["name"], lambda r: resolved[r.name],
                     {"purpose": "provisioning", "dns": "", "site_id": None, "rack_id": None, "gateway": None,
                      "first": None, "last": None, "vlan": None})
