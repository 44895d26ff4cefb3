"""The fleet's latest state as Prometheus metrics (text exposition format, via ``prometheus_client``).

:class:`FleetCollector` answers each scrape with a handful of grouped SQL queries over the latest-state
tables (``server_state``, ``ups_state``, open ``events``): counts per site, rack, lifecycle state,
health and power by default, so the series count follows the number of racks, not of servers.
Per-server series (and per-UPS series of per-server UPSes) are opt-in (``per_server=True``): at
100,000 servers they are hundreds of thousands of series.

Three ways out: :func:`render` (the text, e.g. for stdout), :func:`write_textfile` (atomic, for
node_exporter's textfile collector) and :func:`serve` (an HTTP endpoint until told to stop: the bounded
listener of :mod:`fleet.service.metrics_http`).
Metric names follow Prometheus conventions: a ``rackfleet_`` prefix, base units (``_seconds``,
``_volts``, ``_celsius``, ``_ratio`` for 0-1), ``_total`` only for counters (there are none: every
figure here is a gauge of the latest state). See docs/metrics.md for the list.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest, write_to_textfile
from prometheus_client.core import GaugeMetricFamily, Metric, SummaryMetricFamily
from sqlalchemy import Engine, case, func, literal, select, union_all
from sqlalchemy.sql import ColumnElement

from fleet.service.metrics_http import Limits, serve_blocking
from inventory.models import Event, Rack, Server, ServerState, Site, Ups, UpsState

__all__ = ["FleetCollector", "make_registry", "render", "serve", "write_textfile"]

PREFIX = "rackfleet_"


def _epoch(column: Any, dialect: str) -> ColumnElement:
    """Seconds since 1970 of a stored UTC timestamp, computed by the database."""
    if dialect == "sqlite":  # stored as ISO text; julianday() reads it, offset suffix included
        return (func.julianday(column) - 2440587.5) * 86400.0
    return func.extract("epoch", column)


def _flag(status: str, word: str) -> float | None:
    """1/0 for a UPS status word (``on-battery``...); None when the status says nothing."""
    words = status.split()
    if not words or words == ["unknown"]:
        return None
    if word == "on-battery" and "online" not in words and "on-battery" not in words:
        return None  # neither on line nor on battery: unknown, so absent
    return 1.0 if word in words else 0.0


class FleetCollector:
    """A custom collector: every ``collect()`` queries the inventory afresh."""

    def __init__(self, engine: Engine, *, per_server: bool = False, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.per_server = per_server
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        dialect = self.engine.dialect.name
        with self.engine.connect() as conn:
            yield from self._servers(conn)
            yield from self._staleness(conn, now, dialect)
            yield from self._events(conn)
            yield from self._ups(conn)
            if self.per_server:
                yield from self._per_server(conn)

    # -- servers -------------------------------------------------------------------------------------------

    def _servers(self, conn: Any) -> Iterator[Metric]:
        site = func.coalesce(Site.code, "")
        rack = func.coalesce(Rack.name, "")
        health = func.coalesce(ServerState.health, "unknown")
        power = func.coalesce(ServerState.power, "unknown")
        unreachable = func.sum(case((ServerState.bmc_reachable.is_(False), 1), else_=0))
        stmt = (select(site, rack, Server.state, health, power, func.count(), unreachable)
                .select_from(Server)
                .outerjoin(Rack, Rack.id == Server.rack_id)
                .outerjoin(Site, Site.id == Rack.site_id)
                .outerjoin(ServerState, ServerState.server_id == Server.id)
                .group_by(site, rack, Server.state, health, power))
        servers = GaugeMetricFamily(
            PREFIX + "servers", "Servers by site, rack, lifecycle state, health and power state (latest sweep).",
            labels=["site", "rack", "state", "health", "power"])
        bmc: dict[tuple[str, str], float] = defaultdict(float)
        for s, r, st, hl, pw, n, unreach in conn.execute(stmt):
            servers.add_metric([s, r, st, hl, pw], n)
            bmc[(s, r)] += unreach or 0
        yield servers
        down = GaugeMetricFamily(PREFIX + "servers_bmc_unreachable",
                                 "Servers whose BMC could not be reached at the latest sweep, per rack.",
                                 labels=["site", "rack"])
        for (s, r), n in sorted(bmc.items()):
            down.add_metric([s, r], n)
        yield down

    def _staleness(self, conn: Any, now: float, dialect: str) -> Iterator[Metric]:
        parts = [select(literal(kind).label("target"), func.count().label("n"),
                        func.sum(_epoch(table.updated_at, dialect)).label("total"),
                        func.min(_epoch(table.updated_at, dialect)).label("oldest"),
                        func.max(_epoch(table.updated_at, dialect)).label("newest"))
                 for kind, table in (("server", ServerState), ("ups", UpsState))]
        rows = {r.target: r for r in conn.execute(union_all(*parts))}
        last = GaugeMetricFamily(PREFIX + "last_sweep_timestamp_seconds",
                                 "Unix time of the newest latest-state update, per target kind.", labels=["target"])
        for kind in ("server", "ups"):
            if rows[kind].newest is not None:
                last.add_metric([kind], float(rows[kind].newest))
        yield last
        srv = rows["server"]
        n = int(srv.n or 0)
        age = SummaryMetricFamily(PREFIX + "server_state_age_seconds",
                                  "Age of each swept server's latest state at scrape time (count and sum).",
                                  count_value=n, sum_value=max(0.0, n * now - float(srv.total or 0.0)))
        yield age
        oldest = GaugeMetricFamily(PREFIX + "server_state_max_age_seconds",
                                   "Age of the oldest swept server's latest state at scrape time.")
        if srv.oldest is not None:
            oldest.add_metric([], max(0.0, now - float(srv.oldest)))
        yield oldest

    # -- events --------------------------------------------------------------------------------------------

    def _events(self, conn: Any) -> Iterator[Metric]:
        stmt = (select(Event.severity, Event.kind, func.count()).where(Event.status != "resolved")
                .group_by(Event.severity, Event.kind))
        events = GaugeMetricFamily(PREFIX + "events_open", "Open (unresolved, acked included) events.",
                                   labels=["severity", "kind"])
        for sev, kind, n in conn.execute(stmt):
            events.add_metric([sev, kind], n)
        yield events

    # -- UPS -----------------------------------------------------------------------------------------------

    def _ups(self, conn: Any) -> Iterator[Metric]:
        site = func.coalesce(Site.code, "")
        status = func.coalesce(UpsState.status, "unknown")
        counts = (select(site, Ups.kind, status, func.count()).select_from(Ups)
                  .outerjoin(Site, Site.id == Ups.site_id)
                  .outerjoin(UpsState, UpsState.ups_id == Ups.id)
                  .group_by(site, Ups.kind, status))
        units = GaugeMetricFamily(PREFIX + "ups_units", "UPS units by site, kind and latest status.",
                                  labels=["site", "kind", "status"])
        for s, kind, st, n in conn.execute(counts):
            units.add_metric([s, kind, st], n)
        yield units

        stmt = (select(Ups.name, site, func.coalesce(Rack.name, ""), Ups.kind, status, UpsState.charge_pct,
                       UpsState.runtime_s, UpsState.load_pct, UpsState.input_v, UpsState.battery_temp_c,
                       UpsState.reachable)
                .select_from(Ups)
                .join(UpsState, UpsState.ups_id == Ups.id)
                .outerjoin(Site, Site.id == Ups.site_id)
                .outerjoin(Rack, Rack.id == Ups.rack_id)
                .order_by(Ups.name))
        if not self.per_server:
            stmt = stmt.where(Ups.kind != "server")
        labels = ["ups", "site", "rack", "kind"]

        def gauge(name: str, doc: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(PREFIX + name, doc, labels=labels)

        fams = {
            "up": gauge("ups_up", "1 when the UPS answered at the latest read, 0 when it did not."),
            "charge": gauge("ups_battery_charge_ratio", "Battery charge, 0-1."),
            "runtime": gauge("ups_battery_runtime_seconds", "Estimated runtime on battery at the present load."),
            "load": gauge("ups_load_ratio", "Output load as a fraction of capacity, 0-1."),
            "input": gauge("ups_input_volts", "Input voltage."),
            "temp": gauge("ups_battery_temperature_celsius", "Battery temperature."),
            "on_battery": gauge("ups_on_battery", "1 when the UPS runs on battery, 0 when on line."),
            "low_battery": gauge("ups_low_battery", "1 when the UPS reports a low battery."),
            "replace_battery": gauge("ups_replace_battery", "1 when the UPS asks for its battery to be replaced."),
        }
        for name, s, r, kind, st, charge, runtime, load, volts, temp, reachable in conn.execute(stmt):
            lv = [name, s, r, kind]
            values = {"up": None if reachable is None else float(bool(reachable)),
                      "charge": None if charge is None else charge / 100.0,
                      "runtime": runtime, "load": None if load is None else load / 100.0,
                      "input": volts, "temp": temp,
                      "on_battery": _flag(st, "on-battery"), "low_battery": _flag(st, "low-battery"),
                      "replace_battery": _flag(st, "replace-battery")}
            for key, value in values.items():
                if value is not None:
                    fams[key].add_metric(lv, float(value))
        yield from fams.values()

    # -- per server (opt-in) -------------------------------------------------------------------------------

    def _per_server(self, conn: Any) -> Iterator[Metric]:
        stmt = (select(Server.hostname, func.coalesce(Site.code, ""), func.coalesce(Rack.name, ""),
                       ServerState.power, ServerState.bmc_reachable)
                .select_from(Server)
                .join(ServerState, ServerState.server_id == Server.id)
                .outerjoin(Rack, Rack.id == Server.rack_id)
                .outerjoin(Site, Site.id == Rack.site_id)
                .order_by(Server.hostname))
        labels = ["host", "site", "rack"]
        up = GaugeMetricFamily(PREFIX + "server_up", "1 when the server is powered on, 0 when off (absent: unknown).",
                               labels=labels)
        bmc = GaugeMetricFamily(PREFIX + "server_bmc_up", "1 when the server's BMC answered at the latest sweep.",
                                labels=labels)
        on_off = {"on": 1.0, "off": 0.0}
        for host, s, r, power, reachable in conn.execute(stmt):
            value = on_off.get(power)
            if value is not None:
                up.add_metric([host, s, r], value)
            if reachable is not None:
                bmc.add_metric([host, s, r], float(bool(reachable)))
        yield up
        yield bmc


def make_registry(engine: Engine, *, per_server: bool = False) -> CollectorRegistry:
    """A registry holding only the fleet's collector (no process/platform metrics of this program)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(engine, per_server=per_server))
    return registry


def render(engine: Engine, *, per_server: bool = False) -> bytes:
    """The metrics, now, in Prometheus text exposition format."""
    return generate_latest(make_registry(engine, per_server=per_server))


def write_textfile(engine: Engine, path: str | Path, *, per_server: bool = False) -> None:
    """Write the metrics to ``path`` atomically (a temporary file in the same directory, then a rename)."""
    write_to_textfile(str(path), make_registry(engine, per_server=per_server))


def serve(engine: Engine, host: str, port: int, *, per_server: bool = False,
          stop: threading.Event | None = None, ready: Callable[[str, int], None] | None = None,
          limits: Limits | None = None) -> None:
    """Serve ``/metrics`` on ``host:port`` until ``stop`` is set (each scrape queries afresh).

    The listener is :class:`fleet.service.metrics_http.MetricsListener`: one event loop and a small render pool,
    a read deadline per connection and a cap on open connections (``limits``)."""
    registry = make_registry(engine, per_server=per_server)
    serve_blocking(lambda: generate_latest(registry), host, port, limits=limits or Limits(), stop=stop, ready=ready)
