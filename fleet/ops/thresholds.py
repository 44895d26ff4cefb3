"""Sensor threshold overrides per rack or server: set (audited) and resolved for a sweep.

A sensor's thresholds come from the BMC, else the server's hardware profile; an operator may override
them for a whole rack (``rack=NAME`` or ``site/rack``) or one server, and a server's own override beats
its rack's. :func:`threshold_overrides` gives a sweep the merged overrides of the servers it reads.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from fleet.core.targets import CHUNK, server_record
from fleet.errors import NotFound, ValidationError
from inventory.models import Rack, Server, Site, ThresholdOverride
from inventory.validate import check_text

if TYPE_CHECKING:
    from fleet.core.context import Context

__all__ = ["THRESHOLDS", "set_threshold", "threshold_overrides"]

THRESHOLDS = ("critical_low", "warning_low", "warning_high", "critical_high")


def set_threshold(ctx: Context, scope: str, sensor: str, values: dict[str, float | None]) -> dict[str, Any]:
    """Override a sensor's thresholds for a rack (``rack=NAME`` or ``site/rack``) or a server (its name).

    ``None`` clears a threshold; a server's override beats its rack's, which beats the profile. Audited.
    """
    sensor = check_text(sensor, "sensor", 64)
    if not sensor:
        raise ValidationError("name the sensor", field="sensor")
    unknown = set(values) - set(THRESHOLDS)
    if unknown:
        raise ValidationError(f"unknown threshold(s) {', '.join(sorted(unknown))}; thresholds: "
                              f"{', '.join(THRESHOLDS)}", field="threshold")
    with ctx.write() as s:
        if scope.startswith("rack="):
            rack_name = scope.removeprefix("rack=")
            site, _, rack_name = rack_name.rpartition("/") if "/" in rack_name else ("", "", rack_name)
            stmt = select(Rack.id).where(func.lower(Rack.name) == rack_name.lower())
            if site:
                stmt = stmt.join(Site, Site.id == Rack.site_id).where(func.lower(Site.code) == site.lower())
            ids = s.execute(stmt).scalars().all()
            if len(ids) != 1:
                raise NotFound(f"{scope!r} names {len(ids)} racks: give site/rack") if ids else \
                    NotFound(f"no rack {rack_name!r}")
            key = {"rack_id": ids[0], "server_id": None}
        else:
            key = {"rack_id": None, "server_id": server_record(s, scope).id}
        row = s.execute(select(ThresholdOverride).where(
            ThresholdOverride.rack_id.is_(key["rack_id"]) if key["rack_id"] is None
            else ThresholdOverride.rack_id == key["rack_id"],
            ThresholdOverride.server_id.is_(key["server_id"]) if key["server_id"] is None
            else ThresholdOverride.server_id == key["server_id"],
            ThresholdOverride.sensor == sensor)).scalar_one_or_none()
        if row is None:
            row = ThresholdOverride(sensor=sensor, **key)
            s.add(row)
        for k, v in values.items():
            setattr(row, k, v)
        merged = {k: getattr(row, k) for k in THRESHOLDS}
        lows = [merged[k] for k in ("critical_low", "warning_low", "warning_high", "critical_high")
                if merged[k] is not None]
        if lows != sorted(lows):
            raise ValidationError("thresholds must rise: critical_low <= warning_low < warning_high <= "
                                  "critical_high", field="threshold")
        ctx.audit(s, "threshold.set", [scope], sensor=sensor, **{k: v for k, v in merged.items()})
    return {"scope": scope, "sensor": sensor, **merged}


def threshold_overrides(ctx: Context, hostnames: Sequence[str]) -> dict[str, dict[str, dict[str, float]]]:
    """host → sensor → the thresholds set for it (its rack's, then its own over them)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    with ctx.read() as s:
        hosts = {}
        for i in range(0, len(hostnames), CHUNK):
            hosts.update({sid: (h, rid) for sid, h, rid in s.execute(
                select(Server.id, Server.hostname, Server.rack_id).where(
                    Server.hostname.in_(hostnames[i:i + CHUNK])))})
        rows = s.execute(select(ThresholdOverride)).scalars().all()
    by_rack: dict[int, list[Any]] = defaultdict(list)
    by_server: dict[int, list[Any]] = defaultdict(list)
    for r in rows:
        (by_rack[r.rack_id] if r.rack_id is not None else by_server[r.server_id]).append(r)
    for sid, (host, rid) in hosts.items():
        for r in by_rack.get(rid, []) + by_server.get(sid, []):  # the server's own come last and win
            slot = out.setdefault(host, {}).setdefault(r.sensor, {})
            slot.update({k: getattr(r, k) for k in THRESHOLDS if getattr(r, k) is not None})
    return out
