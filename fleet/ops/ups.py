"""UPS and PDU operations: status, outlets, battery health, model recognition.

The functions here take a :class:`~fleet.core.context.Context` and do the fleet-level work (which devices, which
driver, what to record); the drivers (``snmp``, ``nut``) do the talking. A UPS selector is a list
of terms: plain words are UPS names (``ups-*``), and ``site=``, ``rack=``, ``kind=server|rack|room``,
``protocol=snmp|nut``, ``profile=`` and ``server=HOST`` (every UPS on the server's power path, through
its PDUs) narrow it. A UPS's ``feeds`` are the servers it carries through any number of hops
(:mod:`inventory.powerpath`).
"""

from __future__ import annotations

import asyncio
import json
import math
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, and_, func, insert, select
from sqlmodel import Session

from fleet.drivers.base import BatteryStatus, Target
from fleet.errors import DriverError, InputError, NotFound, SelectorError, ValidationError
from fleet.profiles.quirks import refuse_outlet_switching
from inventory.db import write_connection
from inventory.models import Credential, Outlet, Pdu, Rack, Reading, Server, Site, Ups, UpsState, utcnow
from inventory.powerpath import carried_hostnames, upses_on_path_stmt
from inventory.secrets import Secret
from inventory.selectors import glob_to_like

if TYPE_CHECKING:
    from fleet.core.context import Context

__all__ = [
    "BatteryForecast",
    "OutletResult",
    "UpsReading",
    "battery_forecast",
    "credential_json",
    "detect_profile",
    "device_target",
    "outlet_action",
    "parse_ups_selector",
    "reveal_v3",
    "ups_status",
]

_UPS_KEYS = ("name", "site", "rack", "kind", "protocol", "profile", "server")
#: Typical service life of a UPS's VRLA battery when a profile says nothing (years).
DEFAULT_BATTERY_LIFE_Y = 4.0
_METRICS = (("charge_pct", "battery.charge", "%"), ("runtime_s", "battery.runtime", "s"),
            ("load_pct", "ups.load", "%"), ("input_v", "input.voltage", "V"),
            ("battery_temp_c", "battery.temperature", "C"))


def parse_ups_selector(terms: str | Sequence[str] | None) -> ColumnElement[bool] | None:
    """A SQL condition on ``ups`` for the UPS selector ``terms`` (None: every UPS)."""
    words = shlex.split(terms) if isinstance(terms, str) else [w for t in (terms or []) for w in t.split()]
    groups: dict[str, list[str]] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep:
            key, value = "name", word
        if key not in _UPS_KEYS or not value:
            raise SelectorError(f"cannot read UPS selector term {word!r}; keys: {', '.join(_UPS_KEYS)}")
        if any(c in value for c in "'\"`$;{}<>\\|"):
            raise SelectorError(f"value {value!r} in {word!r} has characters a selector does not allow")
        groups.setdefault(key, []).extend(value.split(","))
    clauses: list[ColumnElement[bool]] = []
    for key, values in groups.items():
        if key == "name":
            clauses.append(_any_like(Ups.name, values))
        elif key in ("kind", "protocol", "profile"):
            clauses.append(getattr(Ups, key).in_(values))
        elif key == "site":
            lowered = [v.lower() for v in values]
            clauses.append(Ups.site_id.in_(select(Site.id).where(func.lower(Site.code).in_(lowered))))
        elif key == "rack":
            lowered = [v.lower() for v in values]
            clauses.append(Ups.rack_id.in_(select(Rack.id).where(func.lower(Rack.name).in_(lowered))))
        elif key == "server":  # every UPS on the server's power path, through PDUs and any hops
            clauses.append(Ups.id.in_(upses_on_path_stmt(
                select(Server.id).where(_any_like(Server.hostname, [v.lower() for v in values])))))
    return and_(*clauses) if clauses else None


def _any_like(column: Any, values: list[str]) -> ColumnElement[bool]:
    from sqlalchemy import or_

    return or_(*(column.like(glob_to_like(v), escape="\\") for v in values))


def device_target(ctx: Context, *, name: str, host: str, port: int, protocol: str, profile: str,
                  credential: Credential | None, nut_name: str = "") -> Target:
    """A driver target for a UPS or PDU, with its credential opened (the secret stays a Secret)."""
    if credential is None:
        raise InputError(f"{name}: no credential assigned (fleet credentials assign NAME {name})")
    secret = ctx.open_secret(credential.secret, f"credential {credential.name}")
    options: dict[str, Any] = {"profile": ctx.profiles.get(profile) if profile else None}
    if protocol == "nut":
        if credential.kind != "nut":
            raise InputError(f"{name}: a NUT UPS needs a nut credential, not {credential.kind}")
        options["nut_name"] = nut_name
    elif credential.kind == "snmp-v2c":
        options["snmp_version"] = "2c"
    elif credential.kind == "snmp-v3":
        options.update(snmp_version="3", auth_proto=credential.options.get("auth_proto", "SHA"),
                       priv_proto=credential.options.get("priv_proto", "AES"))
    else:
        raise InputError(f"{name}: an SNMP device needs an snmp-v2c or snmp-v3 credential, not {credential.kind}")
    # SNMP's timeout is per attempt (the driver retries once): 1 s keeps a dead agent at about 2 s.
    timeout = ctx.device_timeout if protocol == "nut" else min(ctx.device_timeout, 1.0)
    return Target(name=name, host=host, port=port, username=credential.username, password=secret,
                  timeout=timeout, options=options)


@dataclass(frozen=True)
class UpsReading:
    """One UPS's status as just read, or why it could not be read."""

    name: str
    site: str
    rack: str | None
    kind: str
    protocol: str
    profile: str
    battery: BatteryStatus | None
    error: str
    battery_installed: date | None
    feeds: tuple[str, ...] = ()

    @property
    def battery_age_days(self) -> int | None:
        return (datetime.now(UTC).date() - self.battery_installed).days if self.battery_installed else None

    def to_json(self) -> dict[str, Any]:
        b = self.battery
        return {
            "name": self.name, "site": self.site, "rack": self.rack, "kind": self.kind, "protocol": self.protocol,
            "profile": self.profile, "ok": b is not None, "error": self.error,
            "status": b.status if b else "unknown", "charge_pct": b.charge_pct if b else None,
            "runtime_s": b.runtime_s if b else None, "load_pct": b.load_pct if b else None,
            "input_v": b.input_v if b else None, "battery_temp_c": b.battery_temp_c if b else None,
            "battery_installed": self.battery_installed.isoformat() if self.battery_installed else None,
            "battery_age_days": self.battery_age_days, "feeds": list(self.feeds),
        }


def ups_rows(ctx: Context, selector: str | Sequence[str] | None, *, feeds: bool = True) -> list[Any]:
    cond = parse_ups_selector(selector)
    stmt = (select(Ups, Site.code, Rack.name, Credential)
            .join(Site, Site.id == Ups.site_id).outerjoin(Rack, Rack.id == Ups.rack_id)
            .outerjoin(Credential, Credential.id == Ups.credential_id).order_by(Ups.name))
    if cond is not None:
        stmt = stmt.where(cond)
    with Session(ctx.engine) as s:
        rows = s.execute(stmt).all()
        # The servers each UPS carries, through its PDUs and any number of hops.
        carries = carried_hostnames(s, {"ups": None if cond is None else [r[0].id for r in rows]}) \
            if rows and feeds else {}
    return [(ups, site, rack, cred, carries.get(("ups", ups.id), ())) for ups, site, rack, cred in rows]


async def ups_status(ctx: Context, selector: str | Sequence[str] | None = None, *, concurrency: int = 64,
                     record: bool = True) -> list[UpsReading]:
    """Read every selected UPS; record the latest state (and readings) unless ``record`` is False."""
    rows = ups_rows(ctx, selector)
    if not rows and selector:
        raise NotFound(f"no UPS matches {selector!r}")
    sem = asyncio.Semaphore(concurrency)

    async def one(ups: Ups, site: str, rack: str | None, cred: Credential | None, feeds: tuple[str, ...]
                  ) -> UpsReading:
        battery, error = None, ""
        try:
            target = device_target(ctx, name=ups.name, host=ups.host, port=ups.port, protocol=ups.protocol,
                                   profile=ups.profile, credential=cred, nut_name=ups.nut_name)
            async with sem:
                battery = await ctx.driver(ups.protocol).battery(target)
        except (DriverError, InputError) as exc:
            error = str(exc)
        return UpsReading(ups.name, site, rack, ups.kind, ups.protocol, ups.profile, battery, error,
                          ups.battery_installed, feeds)

    readings = list(await asyncio.gather(*(one(*r) for r in rows)))
    if record and readings:
        _record(ctx, {r[0].name: r[0].id for r in rows}, readings)
    return readings


def _record(ctx: Context, ids: dict[str, int], readings: list[UpsReading]) -> None:
    """Latest state per UPS (upsert) and one reading per metric: the history battery trends need."""
    now = utcnow()
    rows, states = [], []
    for r in readings:
        b = r.battery
        states.append({"ups_id": ids[r.name], "updated_at": now, "status": b.status if b else "unknown",
                       "charge_pct": b.charge_pct if b else None, "runtime_s": b.runtime_s if b else None,
                       "load_pct": b.load_pct if b else None, "input_v": b.input_v if b else None,
                       "battery_temp_c": b.battery_temp_c if b else None, "reachable": b is not None,
                       "last_error": r.error[:256]})
        if b is not None:
            for attr, metric, unit in _METRICS:
                value = getattr(b, attr)
                if value is not None and math.isfinite(value):
                    rows.append({"ts": now, "target_kind": "ups", "target_id": ids[r.name], "metric": metric,
                                 "value": float(value), "unit": unit})
    with write_connection(ctx.engine) as conn:
        conn.execute(UpsState.__table__.delete().where(UpsState.ups_id.in_([s["ups_id"] for s in states])))
        conn.execute(insert(UpsState), states)
        if rows:
            conn.execute(insert(Reading), rows)


@dataclass(frozen=True)
class OutletResult:
    device: str
    outlet: int
    server: str | None
    action: str
    ok: bool
    before: str = "unknown"
    after: str = "unknown"
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"device": self.device, "outlet": self.outlet, "server": self.server, "action": self.action,
                "ok": self.ok, "before": self.before, "after": self.after, "error": self.error}


def _outlet_targets(ctx: Context, spec: str) -> list[tuple[str, str, int, str | None, Target]]:
    """``DEVICE:N`` (a PDU's or UPS's outlet) or a server's host name (every outlet feeding it)."""
    with Session(ctx.engine) as s:
        if ":" in spec:
            device, _, number = spec.rpartition(":")
            if not number.isdigit():
                raise ValidationError(f"{spec!r} is not DEVICE:OUTLET or a host name", field="target")
            wanted = [(device, int(number))]
        else:
            server = s.execute(select(Server.id).where(Server.hostname == spec.strip().lower())).scalar_one_or_none()
            if server is None:
                raise NotFound(f"no server, and no DEVICE:OUTLET, named {spec!r}")
            wanted = [(p or u, n) for p, u, n in s.execute(
                select(Pdu.name, Ups.name, Outlet.number).outerjoin(Pdu, Pdu.id == Outlet.pdu_id)
                .outerjoin(Ups, Ups.id == Outlet.ups_id).where(Outlet.server_id == server).order_by(Outlet.psu))]
            if not wanted:
                raise NotFound(f"no outlet on record feeds {spec} (add it: fleet add pdu ... --outlet N={spec})")
        out = []
        for device, number in wanted:
            hit = None
            for model, kind in ((Pdu, "pdu"), (Ups, "ups")):
                obj = s.execute(select(model).where(model.name == device)).scalar_one_or_none()
                if obj is not None:
                    hit = (obj, kind)
                    break
            if hit is None:
                raise NotFound(f"no PDU or UPS named {device!r}")
            obj, kind = hit
            parent = Outlet.pdu_id if kind == "pdu" else Outlet.ups_id
            server_name = s.execute(select(Server.hostname).join(Outlet, Outlet.server_id == Server.id)
                                    .where(parent == obj.id, Outlet.number == number)).scalar_one_or_none()
            refuse_outlet_switching(ctx.profiles.get(obj.profile) if obj.profile in ctx.profiles else None,
                                    obj.name, number)  # before credentials: a passive PDU has none
            cred = s.get(Credential, obj.credential_id) if obj.credential_id else None
            protocol = obj.protocol if kind == "ups" else "snmp"
            target = device_target(ctx, name=obj.name, host=obj.host, port=obj.port, protocol=protocol,
                                   profile=obj.profile, credential=cred, nut_name=getattr(obj, "nut_name", ""))
            out.append((obj.name, protocol, number, server_name, target))
    return out


async def outlet_action(ctx: Context, spec: str, action: str) -> list[OutletResult]:
    """Switch an outlet (or every outlet feeding a server) and confirm it by reading it back. Audited."""
    if action not in ("on", "off", "cycle"):
        raise InputError(f"unknown outlet action {action!r}: on, off or cycle")
    results = []
    for device, protocol, number, server, target in _outlet_targets(ctx, spec):
        driver = ctx.driver(protocol)
        before = after = "unknown"
        try:
            before = _state_of(await driver.outlets(target), number)
            await driver.set_outlet(target, number, action)
            after = _state_of(await driver.outlets(target), number)
            goal = "off" if action == "off" else "on"
            ok = after == goal
            error = "" if ok else f"outlet reads {after} after {action}"
        except DriverError as exc:
            ok, error = False, str(exc)
        results.append(OutletResult(device, number, server, action, ok, before, after, error))
    with ctx.write() as s:
        ctx.audit(s, f"outlet.{action}", [f"{r.device}:{r.outlet}" for r in results],
                     "ok" if all(r.ok for r in results) else ("failed" if not any(r.ok for r in results)
                                                              else "partial"),
                     servers=[r.server for r in results if r.server], errors={f"{r.device}:{r.outlet}": r.error
                                                                               for r in results if r.error})
    return results


def _state_of(outlets: Sequence[Any], number: int) -> str:
    for o in outlets:
        if o.number == number:
            return o.state
    raise DriverError(f"the device reports no outlet {number}", operation="outlet")


@dataclass(frozen=True)
class BatteryForecast:
    """When a UPS's battery should be replaced, from its age and its runtime-at-load trend."""

    name: str
    installed: date | None
    age_days: int | None
    life_years: float
    due_by_age: date | None
    runtime_trend_s_per_30d: float | None
    due_by_trend: date | None
    samples: int
    replace_now: bool
    reasons: tuple[str, ...] = field(default=())

    @property
    def due(self) -> date | None:
        dates = [d for d in (self.due_by_age, self.due_by_trend) if d]
        return min(dates) if dates else None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "installed": self.installed.isoformat() if self.installed else None,
                "age_days": self.age_days, "life_years": self.life_years,
                "due_by_age": self.due_by_age.isoformat() if self.due_by_age else None,
                "runtime_trend_s_per_30d": self.runtime_trend_s_per_30d,
                "due_by_trend": self.due_by_trend.isoformat() if self.due_by_trend else None,
                "due": self.due.isoformat() if self.due else None, "samples": self.samples,
                "replace_now": self.replace_now, "reasons": list(self.reasons)}


def battery_forecast(ctx: Context, selector: str | Sequence[str] | None = None, *, min_runtime_s: float = 300.0,
                     life_years: float | None = None) -> list[BatteryForecast]:
    """A replacement forecast per UPS.

    Age: installed date + service life (the profile's ``battery-life-years`` quirk, else 4 years).
    Trend: recorded runtime normalised to the load it was measured at (runtime x load %, so a quiet
    night does not look like a healthy battery), fitted by least squares against time; the date it
    reaches ``min_runtime_s`` at today's load is the trend's due date. A UPS that reports
    replace-battery is due now, whatever the figures say.
    """
    rows = ups_rows(ctx, selector, feeds=False)
    today = datetime.now(UTC).date()
    out = []
    with Session(ctx.engine) as s:
        states = {st.ups_id: st for st in s.execute(select(UpsState)).scalars()}
        for ups, *_ in rows:
            life = life_years or _profile_life(ctx, ups.profile)
            reasons: list[str] = []
            due_age = (ups.battery_installed + timedelta(days=round(life * 365.25))) if ups.battery_installed else None
            samples = _runtime_samples(s, ups.id)
            trend, due_trend = _trend(samples, min_runtime_s)
            state = states.get(ups.id)
            replace_now = bool(state and "replace-battery" in (state.status or ""))
            if replace_now:
                reasons.append("the UPS reports replace-battery")
            if due_age and due_age <= today:
                reasons.append(f"older than its {life:g}-year service life")
                replace_now = True
            if due_trend and due_trend <= today:
                reasons.append(f"runtime at load below {min_runtime_s:.0f} s")
                replace_now = True
            out.append(BatteryForecast(ups.name, ups.battery_installed,
                                       (today - ups.battery_installed).days if ups.battery_installed else None,
                                       life, due_age, trend, due_trend, len(samples), replace_now, tuple(reasons)))
    return out


def _profile_life(ctx: Context, profile: str) -> float:
    if profile in ctx.profiles:
        quirk = ctx.profiles.get(profile).quirk("battery-life-years")
        if quirk is not None and isinstance(quirk.value, int | float):
            return float(quirk.value)
    return DEFAULT_BATTERY_LIFE_Y


def _runtime_samples(s: Session, ups_id: int) -> list[tuple[datetime, float, float]]:
    """(time, runtime s, load %) pairs recorded together, oldest first."""
    rows = s.execute(select(Reading.ts, Reading.metric, Reading.value)
                     .where(Reading.target_kind == "ups", Reading.target_id == ups_id,
                            Reading.metric.in_(("battery.runtime", "ups.load")))
                     .order_by(Reading.ts)).all()
    by_ts: dict[datetime, dict[str, float]] = {}
    for ts, metric, value in rows:
        by_ts.setdefault(ts, {})[metric] = value
    return [(ts, v["battery.runtime"], v["ups.load"]) for ts, v in by_ts.items()
            if "battery.runtime" in v and v.get("ups.load")]


def _trend(samples: list[tuple[datetime, float, float]], min_runtime_s: float
           ) -> tuple[float | None, date | None]:
    if len(samples) < 3:
        return None, None
    t0 = samples[0][0]
    xs = [(ts - t0).total_seconds() / 86400 for ts, _, _ in samples]
    ys = [runtime * load for _, runtime, load in samples]  # runtime x load: roughly constant for a healthy battery
    if max(xs) - min(xs) < 1:  # less than a day of history says nothing about ageing
        return None, None
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    load_now = samples[-1][2]
    per_30d = slope * 30 / load_now
    if slope >= 0:
        return round(per_30d, 1), None
    intercept = my - slope * mx
    days = (min_runtime_s * load_now - intercept) / slope
    due = (t0 + timedelta(days=days)).date()
    return round(per_30d, 1), due


async def detect_profile(ctx: Context, *, host: str, port: int, protocol: str, credential: str,
                         nut_name: str = "", kind: str | None = None) -> tuple[str, str]:
    """Recognise a UPS or PDU (``kind``): (profile name, how it was chosen).

    SNMP: the profile whose sysObjectID matches and whose MIBs the agent answers, else the one
    profile (or the preferred one) whose MIB families the agent answers. NUT: by the driver upsd runs.
    """
    with Session(ctx.engine) as s:
        cred = s.execute(select(Credential).where(Credential.name == credential)).scalar_one_or_none()
    if cred is None:
        raise NotFound(f"no credential named {credential!r}")
    if protocol == "nut":
        target = device_target(ctx, name=f"{nut_name}@{host}", host=host, port=port, protocol="nut",
                               profile="", credential=cred, nut_name=nut_name)
        status = await ctx.driver("nut").battery(target)
        driver_name = str(status.extra.get("driver.name", "")) if status.extra else ""
        for p in ctx.profiles.of_kind("ups"):
            if p.nut is not None and driver_name and p.nut.driver == driver_name:
                return p.name, f"NUT driver {driver_name}"
        return "apc-back-ups-nut" if "usbhid" in driver_name else "nut-dummy", f"NUT driver {driver_name or 'unknown'}"
    from fleet.drivers.snmp import choose_profile

    target = device_target(ctx, name=host, host=host, port=port, protocol="snmp", profile="", credential=cred)
    driver = ctx.driver("snmp")
    ident = await driver.identify(target)
    oid = str(ident.get("sys_object_id") or "").lstrip(".")
    profile, why = choose_profile(ctx.profiles, oid or None, await driver.probe_mibs(target), kind=kind)
    if profile is None:
        raise NotFound(f"{host}: cannot tell the model ({why}); give --profile")
    return profile.name, why


def credential_json(auth: str, priv: str | None) -> str:
    """The sealed form of an SNMPv3 credential's two passphrases."""
    for label, value in (("auth", auth), ("priv", priv or auth)):
        if len(value) < 8:
            raise ValidationError(f"the SNMPv3 {label} passphrase must be at least 8 characters", field="secret")
    return json.dumps({"auth": auth, "priv": priv or auth})


def reveal_v3(secret: Secret) -> tuple[str, str]:
    data = json.loads(secret.reveal())
    return data["auth"], data["priv"]

