"""Read-side queries for browsing a large fleet (the TUI's data): windows, elevations, history, power tree.

Every method reads a bounded amount: a keyset-paged window of servers with the match count, one rack,
one server's readings, the first few hundred power elements. Nothing here holds the whole fleet, and
nothing touches hardware. Mixed into :class:`fleet.Fleet` (``self.engine``, ``self.profiles``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import String, cast, func, select
from sqlmodel import Session

from fleet.errors import NotFound
from fleet.model.views import AuditRow
from inventory.models import (
    Audit,
    Event,
    Pdu,
    Pod,
    PowerFeed,
    Rack,
    Reading,
    Server,
    ServerState,
    Site,
    Ups,
    UpsState,
)
from inventory.powerpath import carried_stmt, kind_of, server_paths
from inventory.selectors import Selector, glob_to_like, parse_selector

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from fleet.profiles import ProfileSet

__all__ = ["BrowseMixin", "BrowseRow", "Elevation", "Overview", "PowerElement", "RackUnit", "ServerWindow",
           "UpsBrief"]

_SEVERITIES = ("critical", "warning", "info")


@dataclass(frozen=True, slots=True)
class BrowseRow:
    """One server as a list shows it (no NICs or tags: a window stays cheap)."""

    hostname: str
    site: str | None
    pod: str | None
    rack: str | None
    position: int | None
    height: int
    state: str
    profile: str
    primary_ip: str | None
    power: str
    health: str


@dataclass(frozen=True)
class ServerWindow:
    """A window of servers by host name, with how many the selector matches in all."""

    rows: tuple[BrowseRow, ...]
    total: int
    more_after: bool
    more_before: bool

    @property
    def first(self) -> str | None:
        return self.rows[0].hostname if self.rows else None

    @property
    def last(self) -> str | None:
        return self.rows[-1].hostname if self.rows else None


@dataclass(frozen=True)
class UpsBrief:
    name: str
    kind: str
    site: str | None
    rack: str | None
    status: str
    charge_pct: float | None
    runtime_s: float | None
    load_pct: float | None


@dataclass(frozen=True)
class Overview:
    """The fleet at a glance."""

    servers: int
    by_state: dict[str, int]
    by_health: dict[str, int]
    by_power: dict[str, int]
    events_by_severity: dict[str, int]
    last_sweep_at: datetime | None
    ups_total: int
    ups_on_battery: tuple[UpsBrief, ...]


@dataclass(frozen=True)
class RackUnit:
    """A server in a rack elevation, with the state of the UPS that feeds it."""

    position: int | None
    height: int
    hostname: str
    state: str
    health: str
    power: str
    ups: str | None = None
    ups_status: str | None = None


@dataclass(frozen=True)
class Elevation:
    site: str
    pod: str | None
    rack: str
    units: int
    servers: tuple[RackUnit, ...]
    devices: tuple[UpsBrief, ...] = ()


@dataclass(frozen=True)
class PowerElement:
    """A feed, UPS or PDU: its capacity, its measured load (UPS), and the servers' peak draw on it."""

    kind: str
    name: str
    site: str | None
    rack: str | None
    capacity_w: float | None
    measured_w: float | None
    estimate_w: float | None
    status: str = ""
    charge_pct: float | None = None
    runtime_s: float | None = None
    upstream: str | None = None
    servers: int = 0

    @property
    def load_fraction(self) -> float | None:
        watts = self.measured_w if self.measured_w is not None else self.estimate_w
        if watts is None or not self.capacity_w:
            return None
        return watts / self.capacity_w


@dataclass(frozen=True)
class SensorSeries:
    """One sensor's recent values, oldest first."""

    metric: str
    unit: str
    values: tuple[float, ...]
    last_ts: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class BrowseMixin:
    """Bounded reads for browsing (see the module docstring)."""

    engine: Engine

    if TYPE_CHECKING:
        @property
        def profiles(self) -> ProfileSet: ...

    # -- servers ------------------------------------------------------------------------------------------

    def server_window(self, selector: str | Sequence[str] | Selector | None = None, *, after: str | None = None,
                      before: str | None = None, limit: int = 200, count: bool = True) -> ServerWindow:
        """At most ``limit`` servers by host name, after ``after`` (or just before ``before``), and the count.

        Keyset paging on the host name index: every window costs the same, wherever it is in the fleet.
        """
        sel = parse_selector(selector)
        stmt = sel.apply(
            select(Server.hostname, Site.code, Pod.code, Rack.name, Server.position, Server.height, Server.state,
                   Server.profile, Server.primary_ip, ServerState.power, ServerState.health)
            .outerjoin(Rack, Rack.id == Server.rack_id)
            .outerjoin(Site, Site.id == Rack.site_id)
            .outerjoin(Pod, Pod.id == Rack.pod_id)
            .outerjoin(ServerState, ServerState.server_id == Server.id))
        backwards = before is not None and after is None
        if backwards:
            stmt = stmt.where(Server.hostname < before).order_by(Server.hostname.desc())
        else:
            if after is not None:
                stmt = stmt.where(Server.hostname > after)
            stmt = stmt.order_by(Server.hostname)
        with self.engine.connect() as conn:
            raw = conn.execute(stmt.limit(limit + 1)).all()
            total = conn.execute(sel.apply(select(func.count()).select_from(Server))).scalar_one() if count else -1
        more = len(raw) > limit
        raw = raw[:limit]
        if backwards:
            raw.reverse()
        rows = tuple(BrowseRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9] or "unknown",
                               r[10] or "unknown") for r in raw)
        if backwards:
            return ServerWindow(rows, total, more_after=True, more_before=more)
        return ServerWindow(rows, total, more_after=more, more_before=after is not None)

    def overview(self, selector: str | Sequence[str] | Selector | None = None) -> Overview:
        """Servers by lifecycle state, health and power; open events by severity; last sweep; UPSes on battery."""
        sel = parse_selector(selector)
        with self.engine.connect() as conn:
            by_state = dict(conn.execute(sel.apply(select(Server.state, func.count()).select_from(Server)
                                                   .group_by(Server.state))).all())
            total = sum(by_state.values())
            by_health: dict[str, int] = {}
            by_power: dict[str, int] = {}
            for column, out in ((ServerState.health, by_health), (ServerState.power, by_power)):
                stmt = select(column, func.count()).select_from(ServerState).group_by(column)
                if not sel.is_empty:
                    stmt = stmt.where(ServerState.server_id.in_(sel.ids()))
                out.update(conn.execute(stmt).all())
                known = sum(out.values())
                if total - known > 0:
                    out["unknown"] = out.get("unknown", 0) + total - known
            events = dict(conn.execute(select(Event.severity, func.count()).where(Event.status != "resolved")
                                       .group_by(Event.severity)).all())
            last_sweep = conn.execute(select(Audit.ts).where(Audit.action == "sweep").order_by(Audit.id.desc())
                                      .limit(1)).scalar_one_or_none()
            ups_total = conn.execute(select(func.count()).select_from(Ups)).scalar_one()
            on_battery = self._ups_briefs(conn, UpsState.status.like("%on-battery%"), limit=50)
        return Overview(total, by_state, by_health, by_power, events, _aware(last_sweep), ups_total,
                        tuple(on_battery))

    @staticmethod
    def _ups_briefs(conn: Any, where: Any, *, limit: int) -> list[UpsBrief]:
        stmt = (select(Ups.name, Ups.kind, Site.code, Rack.name, UpsState.status, UpsState.charge_pct,
                       UpsState.runtime_s, UpsState.load_pct)
                .join(UpsState, UpsState.ups_id == Ups.id)
                .outerjoin(Site, Site.id == Ups.site_id).outerjoin(Rack, Rack.id == Ups.rack_id)
                .where(where).order_by(UpsState.runtime_s, Ups.name).limit(limit))
        return [UpsBrief(*r) for r in conn.execute(stmt)]

    # -- racks --------------------------------------------------------------------------------------------

    def rack_elevation(self, rack: str, site: str | None = None) -> Elevation:
        """One rack, unit by unit: its servers (health, power) and the state of the UPS feeding each."""
        stmt = (select(Rack.id, Site.code, Pod.code, Rack.name, Rack.units).join(Site, Site.id == Rack.site_id)
                .outerjoin(Pod, Pod.id == Rack.pod_id).where(func.lower(Rack.name) == rack.lower()))
        if site:
            stmt = stmt.where(func.lower(Site.code) == site.lower())
        with self.engine.connect() as conn:
            found = conn.execute(stmt.order_by(Site.code)).all()
            if not found:
                raise NotFound(f"no rack named {rack!r}" + (f" in site {site}" if site else ""))
            rid, site_code, pod, name, units = found[0]
            servers = conn.execute(
                select(Server.id, Server.position, Server.height, Server.hostname, Server.state, ServerState.health,
                       ServerState.power)
                .outerjoin(ServerState, ServerState.server_id == Server.id)
                .where(Server.rack_id == rid).order_by(Server.position.desc(), Server.hostname)).all()
            ups_of: dict[int, tuple[str, str]] = {}
            paths = server_paths(conn, [s[0] for s in servers]) if servers else {}
            status_of = _ups_statuses(conn, paths)
            for sid, outlet_paths in paths.items():
                for hop in (h for p in outlet_paths for h in p.of_kind("ups")):
                    # The first UPS on the path (PSU 1's first); a UPS anywhere on the path that is not
                    # online (on battery, low) is shown instead.
                    status = status_of.get(hop.id) or "unknown"
                    if sid not in ups_of or (ups_of[sid][1] in ("online", "unknown")
                                             and status not in ("online", "unknown")):
                        ups_of[sid] = (hop.name, status)
            devices = self._ups_briefs(conn, Ups.rack_id == rid, limit=50)
            # Rack UPSes never read have no ups_state row: list them anyway.
            have = {d.name for d in devices}
            for uname, kind in conn.execute(select(Ups.name, Ups.kind).where(Ups.rack_id == rid, Ups.kind != "server")
                                            .order_by(Ups.name)):
                if uname not in have:
                    devices.append(UpsBrief(uname, kind, site_code, name, "unknown", None, None, None))
        units_out = tuple(RackUnit(pos, height, host, state, health or "unknown", power or "unknown",
                                   *ups_of.get(sid, (None, None)))
                          for sid, pos, height, host, state, health, power in servers)
        return Elevation(site_code, pod, name, units, units_out,
                         tuple(d for d in devices if d.kind != "server"))

    # -- one server ---------------------------------------------------------------------------------------

    def server_status(self, hostname: str) -> dict[str, Any]:
        """The latest state a sweep left for one server, and the UPSes on its power path."""
        host = hostname.strip().lower()
        with self.engine.connect() as conn:
            row = conn.execute(select(Server.id, ServerState.power, ServerState.health, ServerState.bmc_reachable,
                                      ServerState.last_seen, ServerState.updated_at, ServerState.last_error)
                               .outerjoin(ServerState, ServerState.server_id == Server.id)
                               .where(Server.hostname == host)).first()
            if row is None:
                raise NotFound(f"no server named {hostname!r}")
            outlet_paths = server_paths(conn, [row[0]]).get(row[0], [])
            states = {st.ups_id: st for st in conn.execute(select(UpsState).where(UpsState.ups_id.in_(
                {h.id for p in outlet_paths for h in p.of_kind("ups")})))}
            ups = [{"name": h.name, "kind": h.ups_kind, "outlet": f"{p.hops[0].name}:{p.outlet}", "psu": p.psu,
                    "status": (st.status if st else None) or "unknown", "charge_pct": st.charge_pct if st else None,
                    "runtime_s": st.runtime_s if st else None, "load_pct": st.load_pct if st else None}
                   for p in outlet_paths for h in p.of_kind("ups") for st in (states.get(h.id),)]
        return {"power": row[1] or "unknown", "health": row[2] or "unknown", "bmc_reachable": row[3],
                "last_seen": _aware(row[4]), "updated_at": _aware(row[5]), "last_error": row[6] or "", "ups": ups}

    def sensor_history(self, hostname: str, *, points: int = 24) -> list[SensorSeries]:
        """Each sensor's last ``points`` readings of one server (oldest first), by sensor name."""
        host = hostname.strip().lower()
        with self.engine.connect() as conn:
            sid = conn.execute(select(Server.id).where(Server.hostname == host)).scalar_one_or_none()
            if sid is None:
                raise NotFound(f"no server named {hostname!r}")
            metrics = list(conn.execute(select(Reading.metric).where(Reading.target_kind == "server",
                                                                     Reading.target_id == sid)
                                        .group_by(Reading.metric).order_by(Reading.metric)).scalars())
            out = []
            for metric in metrics[:64]:
                rows = conn.execute(select(Reading.ts, Reading.value, Reading.unit)
                                    .where(Reading.target_kind == "server", Reading.target_id == sid,
                                           Reading.metric == metric)
                                    .order_by(Reading.ts.desc()).limit(points)).all()
                rows.reverse()
                out.append(SensorSeries(metric, rows[-1][2] if rows else "", tuple(r[1] for r in rows),
                                        _aware(rows[-1][0]) if rows else None))
        return out

    def audit_for(self, target: str, *, limit: int = 20) -> list[AuditRow]:
        """The newest audit entries naming ``target`` (a host name, UPS, rack...), newest first."""
        needle = f'%"{glob_to_like(target.strip())}"%'
        stmt = (select(Audit).where(cast(Audit.targets, String).like(needle, escape="\\"))
                .order_by(Audit.id.desc()).limit(limit))
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [AuditRow(a.id, _aware(a.ts), a.actor, a.action, tuple(a.targets), a.target_count, a.result,
                         a.detail or {}) for a in rows]

    # -- events -------------------------------------------------------------------------------------------

    def event_window(self, *, status: str | None = "open", severity: str | None = None, kind: str | None = None,
                     target: str | None = None, limit: int = 300) -> tuple[list[dict[str, Any]], int]:
        """Events newest first, filtered (``target`` may hold ``*`` and ``?``), and how many match in all."""
        conds: list[Any] = []
        if status == "open":
            conds.append(Event.status != "resolved")
        elif status and status != "all":
            conds.append(Event.status == status)
        if severity:
            conds.append(Event.severity == severity)
        if kind:
            conds.append(Event.kind.like(glob_to_like(kind), escape="\\"))
        if target:
            conds.append(Event.target_name.like(glob_to_like(target), escape="\\"))
        with self.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(Event).where(*conds)).scalar_one()
            rows = conn.execute(select(Event).where(*conds).order_by(Event.id.desc()).limit(limit)).all()
        return [{"id": e.id, "opened_at": _aware(e.opened_at), "updated_at": _aware(e.updated_at),
                 "target_kind": e.target_kind, "target": e.target_name, "kind": e.kind, "severity": e.severity,
                 "status": e.status, "count": e.count, "message": e.message, "acked_by": e.acked_by}
                for e in rows], total

    # -- power --------------------------------------------------------------------------------------------

    def power_tree(self, *, site: str | None = None, on_battery_only: bool = False, limit: int = 300
                   ) -> tuple[list[PowerElement], int]:
        """Feeds, rack/room UPSes and PDUs with capacity, measured load (UPS) and the servers' peak draw.

        UPSes on battery come first, then the most loaded. The estimate is the sum of the profiles' peak
        watts of the servers each element carries, through any number of hops (a server with no outlet
        on record counts on its rack's feeds), each server once: the budget's view of the path.
        Per-server UPSes are left out (the server screen shows them). Returns the first ``limit`` and the total.
        """
        profiles = self.profiles
        peak: dict[str, float] = {}

        def peak_of(profile: str) -> float:
            if profile not in peak:
                power = profiles.get(profile).power if profile in profiles else None
                peak[profile] = float(getattr(power, "peak_w", 0) or 500.0)
            return peak[profile]

        def cap_of(capacity: int | None, profile: str) -> float | None:
            if capacity:
                return float(capacity)
            power = profiles.get(profile).power if profile in profiles else None
            return float(power.capacity_w) if power is not None and power.capacity_w else None

        site_id = None
        with Session(self.engine) as conn:
            if site:
                site_id = conn.execute(select(Site.id).where(func.lower(Site.code) == site.lower())).scalar()
                if site_id is None:
                    raise NotFound(f"no site {site!r}")
            codes = dict(conn.execute(select(Site.id, Site.code)).all())
            racks = dict(conn.execute(select(Rack.id, Rack.name)).all())
            # Each element's servers, through any number of hops (inventory.powerpath), by profile.
            draw: dict[tuple[str, int], float] = defaultdict(float)
            count: dict[tuple[str, int], int] = defaultdict(int)
            carry = carried_stmt({"ups": None, "pdu": None, "feed": None}).subquery()
            for kind, element_id, profile, n in conn.execute(
                    select(carry.c.kind, carry.c.element_id, Server.profile, func.count())
                    .join(Server, Server.id == carry.c.server_id)
                    .group_by(carry.c.kind, carry.c.element_id, Server.profile)):
                draw[(kind_of(kind), element_id)] += n * peak_of(profile)
                count[(kind_of(kind), element_id)] += n
            ups_stmt = (select(Ups, UpsState).outerjoin(UpsState, UpsState.ups_id == Ups.id)
                        .where(Ups.kind != "server"))
            pdu_stmt = select(Pdu)
            feed_stmt = select(PowerFeed)
            if site_id is not None:
                ups_stmt = ups_stmt.where(Ups.site_id == site_id)
                pdu_stmt = pdu_stmt.where(Pdu.site_id == site_id)
                feed_stmt = feed_stmt.where(PowerFeed.site_id == site_id)
            upses = conn.execute(ups_stmt).all()
            pdus = conn.execute(pdu_stmt).all() if not on_battery_only else []
            feeds = conn.execute(feed_stmt).all() if not on_battery_only else []
            ups_names = dict(conn.execute(select(Ups.id, Ups.name)).all())
            feed_names = dict(conn.execute(select(PowerFeed.id, PowerFeed.name)).all())
        elements: list[PowerElement] = []
        for row in upses:
            u, st = row[0], row[1]
            if on_battery_only and (st is None or "on-battery" not in st.status):
                continue
            cap = cap_of(u.capacity_w, u.profile)
            measured = cap * st.load_pct / 100 if cap and st is not None and st.load_pct is not None else None
            elements.append(PowerElement("ups", u.name, codes.get(u.site_id), racks.get(u.rack_id), cap, measured,
                                         draw.get(("ups", u.id)) or None, st.status if st is not None else "unknown",
                                         st.charge_pct if st is not None else None,
                                         st.runtime_s if st is not None else None,
                                         feed_names.get(u.feed_id), count.get(("ups", u.id), 0)))
        for row in pdus:
            p = row[0]
            elements.append(PowerElement("pdu", p.name, codes.get(p.site_id), racks.get(p.rack_id),
                                         cap_of(p.capacity_w, p.profile), None, draw.get(("pdu", p.id)) or None, "",
                                         upstream=ups_names.get(p.ups_id) or feed_names.get(p.feed_id),
                                         servers=count.get(("pdu", p.id), 0)))
        for row in feeds:
            f = row[0]
            elements.append(PowerElement("feed", f.name, codes.get(f.site_id), racks.get(f.rack_id),
                                         float(f.capacity_w) if f.capacity_w else None, None,
                                         draw.get(("feed", f.id)) or None, servers=count.get(("feed", f.id), 0)))

        def order(e: PowerElement) -> tuple[int, float, str, str]:
            on_batt = 0 if "on-battery" in e.status else 1
            return on_batt, -(e.load_fraction or 0.0), e.kind, e.name

        elements.sort(key=order)
        return elements[:limit], len(elements)


def _ups_statuses(conn: Any, paths: dict[int, list[Any]]) -> dict[int, str]:
    """The latest status of every UPS on these paths."""
    ids = {h.id for outlet_paths in paths.values() for p in outlet_paths for h in p.of_kind("ups")}
    return dict(conn.execute(select(UpsState.ups_id, UpsState.status).where(UpsState.ups_id.in_(ids))).all()) \
        if ids else {}


def _aware(value: Any) -> Any:
    from datetime import UTC

    if value is None or not isinstance(value, datetime):
        return value
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value

