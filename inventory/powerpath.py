"""The power path, in one place: which servers a UPS, PDU or feed carries, and each server's path.

Every question about "what hangs below what" is answered here, in SQL, by two recursive CTEs over the
same relation of hops (``power_edges``), so a `fleet ups status`, a remediation plan, a budgeted
power-on, `fleet show` and the TUI cannot disagree about it. Pure SQL, no device I/O: it runs on
SQLite and PostgreSQL alike.

The hops the schema records (``inventory/models.py``):

- an outlet (``outlets``) of a PDU or of a UPS feeds one server PSU (a UPS's outlet 0 is its whole
  output: a per-server UPS, or a server plugged straight into a rack UPS);
- a PDU hangs on a UPS (``pdus.ups_id``) and/or a feed (``pdus.feed_id``);
- a UPS hangs on a feed (``ups.feed_id``).

A server with no outlet on record hangs on its rack's feeds (the rack is all we know), so a rack feed
carries those servers too, and they count against it in a power budget.

Elements are ``(kind, id)`` with ``kind`` one of ``ups``, ``pdu``, ``feed``. The walks are bounded
by :data:`MAX_DEPTH` hops, so a loop in bad data ends (each element is reported once, at its nearest
depth) instead of running for ever.

Usage::

    carried(conn, {"ups": None})                 # every UPS -> the ids of the servers it carries
    carried_hostnames(conn, {"ups": [3], "pdu": [7]})
    server_paths(conn, [42, 43])                 # server id -> [OutletPath(psu, outlet, hops...)]
    server_elements(conn, [42])                  # server id -> every element above it (rack feeds if no outlet)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    CTE,
    ColumnElement,
    Select,
    and_,
    case,
    exists,
    func,
    literal_column,
    or_,
    select,
    union,
    union_all,
)

from .models import Outlet, Pdu, PowerFeed, Server, Ups

__all__ = [
    "KINDS",
    "MAX_DEPTH",
    "Hop",
    "OutletPath",
    "carried",
    "carried_hostnames",
    "carried_stmt",
    "kind_of",
    "server_elements",
    "server_paths",
    "upses_on_path_stmt",
]

#: Element kinds, and the small integer each has inside the queries (integers keep the recursive
#: CTE's column types identical on PostgreSQL, which compares them strictly).
KINDS: tuple[str, ...] = ("ups", "pdu", "feed")
_CODE: dict[str, int] = {"ups": 1, "pdu": 2, "feed": 3}
_KIND: dict[int, str] = {v: k for k, v in _CODE.items()}
#: The longest chain walked. Real rooms have 3 or 4 hops (outlet, PDU, UPS, room UPS, feed).
MAX_DEPTH = 16
_CHUNK = 500

_O, _P, _U, _F, _S = Outlet.__table__, Pdu.__table__, Ups.__table__, PowerFeed.__table__, Server.__table__


def kind_of(code: int) -> str:
    """The element kind of a query's integer kind code."""
    return _KIND[int(code)]


def _code(kind: str) -> ColumnElement[Any]:
    return literal_column(str(_CODE[kind]))


def _hops() -> list[Select[Any]]:
    """One query per kind of hop the schema records: (child_kind, child_id, parent_kind, parent_id).

    A new hop in the schema (a PDU fed from another PDU, a rack UPS from a room UPS) is one more line."""
    def hop(child: str, child_id: Any, parent: str, parent_id: Any) -> Select[Any]:
        return select(_code(child).label("child_kind"), child_id.label("child_id"),
                      _code(parent).label("parent_kind"), parent_id.label("parent_id")).where(parent_id.is_not(None))

    return [
        hop("pdu", _P.c.id, "ups", _P.c.ups_id),
        hop("pdu", _P.c.id, "feed", _P.c.feed_id),
        hop("ups", _U.c.id, "feed", _U.c.feed_id),
    ]


def _edges() -> CTE:
    """Every hop between elements, as one relation the walks join."""
    return union_all(*_hops()).cte("power_edges")


def _roots(elements: Mapping[str, Iterable[int] | None]) -> tuple[CTE, ColumnElement[bool]]:
    """Every element as (kind, id), and the condition picking the asked-for ones."""
    all_elements = union_all(*(select(_code(k).label("kind"), t.c.id.label("id"))
                               for k, t in (("ups", _U), ("pdu", _P), ("feed", _F)))).cte("power_elements")
    picks = []
    for kind, ids in elements.items():
        if kind not in _CODE:
            raise ValueError(f"unknown power element kind {kind!r}; kinds: {', '.join(KINDS)}")
        cond = all_elements.c.kind == _CODE[kind]
        picks.append(cond if ids is None else and_(cond, all_elements.c.id.in_(list(ids))))
    return all_elements, or_(*picks) if picks else literal_column("1") == 0


def carried_stmt(elements: Mapping[str, Iterable[int] | None]) -> Select[Any]:
    """A query of distinct ``(kind, element_id, server_id)``: the servers each element carries, any hops down.

    ``elements`` maps a kind to the ids asked for (``None``: every element of that kind). ``kind``
    comes out as the integer code (:func:`kind_of` names it).
    """
    edges = _edges()
    all_elements, pick = _roots(elements)
    down = (select(all_elements.c.kind.label("root_kind"), all_elements.c.id.label("root_id"),
                   all_elements.c.kind.label("kind"), all_elements.c.id.label("id"),
                   literal_column("0").label("depth"))
            .where(pick).cte("power_down", recursive=True))
    down = down.union_all(
        select(down.c.root_kind, down.c.root_id, edges.c.child_kind, edges.c.child_id, down.c.depth + 1)
        .join(edges, and_(edges.c.parent_kind == down.c.kind, edges.c.parent_id == down.c.id))
        .where(down.c.depth < MAX_DEPTH))
    via_ups = (select(down.c.root_kind.label("kind"), down.c.root_id.label("element_id"),
                      _O.c.server_id.label("server_id"))
               .join(_O, and_(down.c.kind == _CODE["ups"], _O.c.ups_id == down.c.id))
               .where(_O.c.server_id.is_not(None)))
    via_pdu = (select(down.c.root_kind, down.c.root_id, _O.c.server_id)
               .join(_O, and_(down.c.kind == _CODE["pdu"], _O.c.pdu_id == down.c.id))
               .where(_O.c.server_id.is_not(None)))
    # A server with no outlet on record hangs on its rack's feeds.
    via_rack = (select(down.c.root_kind, down.c.root_id, _S.c.id)
                .join(_F, and_(down.c.kind == _CODE["feed"], _F.c.id == down.c.id))
                .join(_S, _S.c.rack_id == _F.c.rack_id)
                .where(~exists(select(_O.c.id).where(_O.c.server_id == _S.c.id))))
    both = union(via_ups, via_pdu, via_rack).subquery("power_carried")
    return select(both.c.kind, both.c.element_id, both.c.server_id)


def _chunks(elements: Mapping[str, Iterable[int] | None]) -> Iterable[dict[str, list[int] | None]]:
    """The request in pieces of at most _CHUNK ids (bound parameters are limited on both engines)."""
    whole = {k: None for k, v in elements.items() if v is None}
    if whole:
        yield whole
    for kind, ids in elements.items():
        if ids is not None:
            ids = sorted(set(ids))
            for i in range(0, len(ids), _CHUNK):
                yield {kind: ids[i:i + _CHUNK]}


def carried(conn: Any, elements: Mapping[str, Iterable[int] | None]) -> dict[tuple[str, int], set[int]]:
    """``(kind, id)`` -> the ids of the servers it carries, through any number of hops.

    ``conn`` is a Connection or Session. Elements that carry nothing are absent."""
    out: dict[tuple[str, int], set[int]] = defaultdict(set)
    for part in _chunks(elements):
        for kind, element_id, server_id in conn.execute(carried_stmt(part)):
            out[(kind_of(kind), element_id)].add(server_id)
    return dict(out)


def carried_hostnames(conn: Any, elements: Mapping[str, Iterable[int] | None]
                      ) -> dict[tuple[str, int], tuple[str, ...]]:
    """``(kind, id)`` -> the host names of the servers it carries, sorted."""
    out: dict[tuple[str, int], list[str]] = defaultdict(list)
    for part in _chunks(elements):
        sub = carried_stmt(part).subquery()
        for kind, element_id, host in conn.execute(select(sub.c.kind, sub.c.element_id, _S.c.hostname)
                                                   .join(_S, _S.c.id == sub.c.server_id)):
            out[(kind_of(kind), element_id)].append(host)
    return {k: tuple(sorted(v)) for k, v in out.items()}


@dataclass(frozen=True)
class Hop:
    """One element on a path: ``depth`` 0 is the PDU or UPS whose outlet feeds the PSU."""

    kind: str
    id: int
    name: str
    depth: int
    ups_kind: str | None = None  # server, rack or room, for a UPS

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "depth": self.depth}


@dataclass(frozen=True)
class OutletPath:
    """One PSU's outlet and every element above it, nearest first (the whole chain up to the feeds)."""

    server_id: int
    psu: int
    outlet: int
    hops: tuple[Hop, ...]

    def nearest(self, kind: str) -> Hop | None:
        """The element of ``kind`` nearest the server on this path, if any."""
        return next((h for h in self.hops if h.kind == kind), None)

    def of_kind(self, kind: str) -> tuple[Hop, ...]:
        return tuple(h for h in self.hops if h.kind == kind)

    def to_row(self) -> dict[str, Any]:
        """`fleet show`'s ``power_feeds`` row: the PDU, UPS and feed nearest the PSU on this path."""
        pdu, ups, feed = self.nearest("pdu"), self.nearest("ups"), self.nearest("feed")
        return {"psu": self.psu, "outlet": self.outlet, "pdu": pdu.name if pdu else None,
                "ups": ups.name if ups else None, "ups_kind": ups.ups_kind if ups else None,
                "feed": feed.name if feed else None}


def _up(server_ids: Sequence[int] | Select[Any] | None) -> CTE:
    """Recursive walk upwards from the outlets of the given servers: (server_id, outlet_id, kind, id, depth)."""
    edges = _edges()
    anchor = select(_O.c.server_id.label("server_id"), _O.c.id.label("outlet_id"),
                    case((_O.c.pdu_id.is_not(None), _CODE["pdu"]), else_=_CODE["ups"]).label("kind"),
                    func.coalesce(_O.c.pdu_id, _O.c.ups_id).label("id"), literal_column("0").label("depth"))
    anchor = anchor.where(_O.c.server_id.is_not(None)) if server_ids is None else \
        anchor.where(_O.c.server_id.in_(server_ids if isinstance(server_ids, Select) else list(server_ids)))
    up = anchor.cte("power_up", recursive=True)
    return up.union_all(
        select(up.c.server_id, up.c.outlet_id, edges.c.parent_kind, edges.c.parent_id, up.c.depth + 1)
        .join(edges, and_(edges.c.child_kind == up.c.kind, edges.c.child_id == up.c.id))
        .where(up.c.depth < MAX_DEPTH))


def upses_on_path_stmt(server_ids: Select[Any]) -> Select[Any]:
    """A query of the ids of every UPS on the power path of the servers ``server_ids`` selects."""
    up = _up(server_ids)
    return select(up.c.id).where(up.c.kind == _CODE["ups"]).distinct()


def server_paths(conn: Any, server_ids: Iterable[int] | None) -> dict[int, list[OutletPath]]:
    """Server id -> one :class:`OutletPath` per outlet feeding it (ordered by PSU, outlet number).

    ``None`` asks for every server. Servers with no outlet on record are absent (see
    :func:`server_elements` for the rack-feed fallback)."""
    out: dict[int, list[OutletPath]] = {}
    ids = None if server_ids is None else sorted(set(server_ids))
    parts: list[list[int] | None] = [None] if ids is None else [ids[i:i + _CHUNK] for i in range(0, len(ids), _CHUNK)]
    for part in parts:
        up = _up(part)
        nearest = (select(up.c.server_id, up.c.outlet_id, up.c.kind, up.c.id, func.min(up.c.depth).label("depth"))
                   .group_by(up.c.server_id, up.c.outlet_id, up.c.kind, up.c.id).subquery("power_nearest"))
        stmt = (select(nearest.c.server_id, _O.c.psu, _O.c.number, nearest.c.outlet_id, nearest.c.kind, nearest.c.id,
                       nearest.c.depth, func.coalesce(_U.c.name, _P.c.name, _F.c.name), _U.c.kind)
                .join(_O, _O.c.id == nearest.c.outlet_id)
                .outerjoin(_U, and_(nearest.c.kind == _CODE["ups"], _U.c.id == nearest.c.id))
                .outerjoin(_P, and_(nearest.c.kind == _CODE["pdu"], _P.c.id == nearest.c.id))
                .outerjoin(_F, and_(nearest.c.kind == _CODE["feed"], _F.c.id == nearest.c.id))
                .order_by(nearest.c.server_id, _O.c.psu, _O.c.number, nearest.c.depth, nearest.c.kind,
                          nearest.c.id))
        hops: dict[tuple[int, int, int, int], list[Hop]] = {}
        for sid, psu, number, outlet_id, kind, eid, depth, name, ups_kind in conn.execute(stmt):
            hops.setdefault((sid, psu, number, outlet_id), []).append(
                Hop(kind_of(kind), eid, name, depth, ups_kind if kind == _CODE["ups"] else None))
        for (sid, psu, number, _oid), chain in hops.items():
            out.setdefault(sid, []).append(OutletPath(sid, psu, number, tuple(chain)))
    return out


def server_elements(conn: Any, server_ids: Iterable[int]) -> dict[int, tuple[Hop, ...]]:
    """Server id -> every distinct element above it on any PSU's path; a server with no outlet on
    record gets its rack's feeds. The elements whose capacity the server's draw counts against."""
    ids = sorted(set(server_ids))
    paths = server_paths(conn, ids)
    out: dict[int, tuple[Hop, ...]] = {}
    for sid, outlet_paths in paths.items():
        seen: dict[tuple[str, int], Hop] = {}
        for p in outlet_paths:
            for h in p.hops:
                seen.setdefault((h.kind, h.id), h)
        out[sid] = tuple(seen.values())
    bare = [i for i in ids if i not in paths]
    for i in range(0, len(bare), _CHUNK):
        for sid, fid, name in conn.execute(select(_S.c.id, _F.c.id, _F.c.name)
                                           .join(_F, _F.c.rack_id == _S.c.rack_id)
                                           .where(_S.c.id.in_(bare[i:i + _CHUNK])).order_by(_S.c.id, _F.c.name)):
            out[sid] = (*out.get(sid, ()), Hop("feed", fid, name, 0))
    return out
