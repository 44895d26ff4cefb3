"""Health sweeps: read every server's BMC and every UPS, record what was seen, open and close events.

One sweep, per server: power state, sensors (states from the hardware profile's thresholds where it
has the sensor, else the BMC's), and the SEL entries that are new since the last sweep; per UPS:
battery, load and status (through :func:`fleet.ops.ups.ups_status`). Results are written in batches
(SQLAlchemy Core): readings (append-only), the latest state of each server, and events.

Events are deduplicated: one open event per target and kind (``events.dedup_key`` is unique while
open). A condition seen again updates the open event (count, message); a condition that is no longer
seen on a target that was read resolves it. A server whose BMC did not answer is not judged on its
sensors (its sensor events stay as they were): only ``bmc-unreachable`` is opened for it.

A dead BMC costs its deadline once; then it is probed less often: after N consecutive failures the
next probe waits ``min(2**N, 32)`` sweep intervals' worth of seconds with ±20% jitter (a circuit
breaker), and a BMC is never queried more often than ``min_interval_s``. Both are kept in the
server's latest state (``summary``), so they survive restarts and work across processes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import OperationalError

from fleet.core.targets import bmc_targets
from fleet.drivers.chain import build_chain, call_chain
from fleet.errors import AuthFailed, Busy, DriverError
from fleet.model.events import (
    BMC_AUTH_FAILED,
    BMC_UNREACHABLE,
    SEL_ECC_UNCORRECTABLE,
    SENSOR_CRITICAL,
    SENSOR_WARNING,
    UPS_BATTERY_FAILING,
    UPS_LOW_RUNTIME,
    UPS_ON_BATTERY,
    UPS_UNREACHABLE,
)
from fleet.ops.events import Finding, record_events
from fleet.ops.facts import collect
from fleet.ops.thresholds import threshold_overrides
from fleet.profiles import SensorSpec
from inventory.db import write_connection
from inventory.models import Reading, Server, ServerState, utcnow
from inventory.selectors import parse_selector

if TYPE_CHECKING:
    from fleet.core.context import Context

__all__ = ["SweepResult", "run_sweep", "sweep"]

_BREAKER_BASE_S = 60.0
#: On battery with less runtime than this (or the UPS's own low-battery flag): an ups-low-runtime event.
LOW_RUNTIME_S = 900.0
_BREAKER_MAX_S = 3600.0


@dataclass
class SweepResult:
    started_at: datetime
    duration_s: float = 0.0
    servers: int = 0
    servers_read: int = 0
    servers_skipped: int = 0
    ups: int = 0
    ups_read: int = 0
    readings: int = 0
    opened: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    write_s: float = 0.0
    facts_read: int | None = None  # servers whose SSH facts were read (None: facts not asked for)
    #: capability → driver → servers it answered for (power, sensors, sel), from the driver chains
    drivers: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"started_at": self.started_at.isoformat(timespec="seconds"), "duration_s": round(self.duration_s, 3),
                "servers": self.servers, "servers_read": self.servers_read, "servers_skipped": self.servers_skipped,
                "ups": self.ups, "ups_read": self.ups_read, "readings": self.readings, "events_opened": self.opened,
                "events_updated": self.updated, "events_resolved": self.resolved, "errors": self.errors,
                "write_s": round(self.write_s, 3), "facts_read": self.facts_read, "drivers": self.drivers}


def _is_ecc(text: str) -> bool:
    low = text.lower()
    return "ecc" in low and "uncorrectable" in low and "correctable ecc" not in low.replace("uncorrectable", "")


async def _read_server(ctx: Context, endpoints: list[Any], profile: Any, last_sel: int, sem: asyncio.Semaphore,
                       progress: Any = None) -> dict[str, Any]:
    """Power, sensors and SEL, each through its own capability's chain (:mod:`fleet.drivers.chain`) over the
    server's BMC endpoints."""
    out: dict[str, Any] = {"power": None, "sensors": [], "sel": [], "error": "", "drivers": {}}

    async def read(capability: str, method: str) -> Any:
        answer = await call_chain(build_chain(capability, profile, endpoints), ctx.driver,
                                  lambda d, t: getattr(d, method)(t), capability=capability,
                                  target=endpoints[0].name)
        if answer.error is not None:
            raise answer.error
        out["drivers"][capability] = answer.driver
        return answer.value

    async with sem:
        try:
            out["power"] = await read("power", "power_status")
            out["sensors"] = await read("sensors", "sensors")
            entries = await read("sel", "sel")
            newest = max((e.record_id for e in entries), default=0)
            out["sel_last"] = newest
            # A SEL cleared since the last sweep starts over (its ids restart).
            out["sel"] = [e for e in entries if e.record_id > last_sel] if newest >= last_sel else entries
        except AuthFailed as exc:
            out["error"], out["auth"] = str(exc), True
        except DriverError as exc:
            out["error"] = str(exc)
    if progress is not None:
        progress(1)
    return out


async def sweep(ctx: Context, selector: str | Sequence[str] | None = None, *, ups: bool = True,
                concurrency: int = 256, min_interval_s: float = 0.0, probe_all: bool = False,
                now: datetime | None = None, progress: Any = None) -> SweepResult:
    """Run one sweep over the selected servers (and every UPS when ``ups``); see the module docstring.

    ``probe_all`` reads every BMC now, whatever its circuit breaker and minimum interval say.
    ``progress(advance, total=None, phase=None)`` is called once with the number of servers due
    (``advance`` 0, phase ``reading``), then as each server's reads finish (``advance`` 1), and at each
    later phase (``ups``, ``writing``) so the job's row says where the sweep is.
    """
    now = now or utcnow()
    started = time.monotonic()
    result = SweepResult(started_at=now)
    targets, problems = bmc_targets(ctx, selector)
    result.servers = len(targets) + len(problems)
    for p in problems:
        host, _, why = p.partition(": ")
        result.errors[host] = why
    with ctx.engine.connect() as conn:
        ids = dict(conn.execute(select(Server.hostname, Server.id).where(
            Server.hostname.in_([h for h, _, _ in targets]))).all()) if targets else {}
        prior = {sid: summary or {} for sid, summary in conn.execute(
            select(ServerState.server_id, ServerState.summary).where(ServerState.server_id.in_(list(ids.values()))))}
    sem = asyncio.Semaphore(concurrency)
    due, skipped = [], []
    for host, target, profile in targets:
        summary = prior.get(ids[host], {})
        next_probe = summary.get("next_probe_at")
        last_read = summary.get("last_read_at")
        naive_now = now.replace(tzinfo=None)
        breaker_open = bool(next_probe) and datetime.fromisoformat(next_probe) > naive_now
        too_soon = bool(min_interval_s and last_read) and \
            (naive_now - datetime.fromisoformat(last_read)).total_seconds() < min_interval_s
        (skipped if (breaker_open or too_soon) and not probe_all else due).append((host, target, profile))
    result.servers_skipped = len(skipped)
    if progress is not None:
        progress(0, len(due), phase="reading")
    reads = await asyncio.gather(*(_read_server(ctx, t, p, int(prior.get(ids[h], {}).get("sel_last", 0)), sem,
                                                progress) for h, t, p in due))
    overrides = threshold_overrides(ctx, [h for h, _, _ in due]) if due else {}
    findings: list[Finding] = []
    judged: dict[tuple[str, int], set[str]] = {}  # target → kinds this sweep could judge
    readings: list[dict[str, Any]] = []
    states: list[dict[str, Any]] = []
    for (host, _target, profile), got in zip(due, reads, strict=True):
        sid = ids[host]
        summary = dict(prior.get(sid, {}))
        if got["error"]:
            result.errors[host] = got["error"]
            fails = int(summary.get("failures", 0)) + 1
            delay = min(_BREAKER_BASE_S * 2 ** (fails - 1), _BREAKER_MAX_S) * random.uniform(0.8, 1.2)
            summary.update(failures=fails, next_probe_at=(now.replace(tzinfo=None)
                                                          + timedelta(seconds=delay)).isoformat())
            kind = BMC_AUTH_FAILED if got.get("auth") else BMC_UNREACHABLE
            findings.append(Finding("server", sid, host, kind, "critical", got["error"][:500]))
            judged[("server", sid)] = {BMC_UNREACHABLE, BMC_AUTH_FAILED}
            states.append({"server_id": sid, "updated_at": now, "power": "unknown", "power_at": None,
                           "power_source": "sweep", "health": "critical",
                           "bmc_reachable": False, "last_seen": _parse(summary.get("last_seen")),
                           "last_error": got["error"][:256], "summary": summary})
            continue
        result.servers_read += 1
        for capability, name in got["drivers"].items():
            counts = result.drivers.setdefault(capability, {})
            counts[name] = counts.get(name, 0) + 1
        judged[("server", sid)] = {BMC_UNREACHABLE, BMC_AUTH_FAILED, SENSOR_CRITICAL, SENSOR_WARNING,
                                   SEL_ECC_UNCORRECTABLE}
        readings.append({"ts": now, "target_kind": "server", "target_id": sid, "metric": "power.on",
                         "value": 1.0 if got["power"] == "on" else 0.0, "unit": ""})
        worst = "ok"
        crit, warn, ecc = [], [], []
        mine = overrides.get(host, {})
        for r in got["sensors"]:
            spec = profile.sensor(r.name) if profile is not None else None
            if r.name in mine:  # a rack's or the server's own thresholds over the profile's
                spec = dataclasses.replace(spec, **mine[r.name]) if spec is not None else \
                    SensorSpec(r.name, r.kind, r.unit, **mine[r.name])
            state = spec.state(r.value) if spec is not None and r.value is not None else r.state
            if r.value is not None:
                readings.append({"ts": now, "target_kind": "server", "target_id": sid, "metric": r.name[:64],
                                 "value": float(r.value), "unit": r.unit[:16]})
            if (r.kind == "memory" or "ecc" in r.name.lower()) and state == "critical":
                ecc.append(f"{r.name} asserts an uncorrectable error")
            elif state == "critical":
                crit.append(f"{r.name} {r.value:g} {r.unit}" if r.value is not None else r.name)
            elif state == "warning":
                warn.append(f"{r.name} {r.value:g} {r.unit}" if r.value is not None else r.name)
        for e in got["sel"]:
            if _is_ecc(f"{e.sensor} {e.event}"):
                ecc.append(f"SEL {e.record_id}: {e.sensor}: {e.event}")
        if crit:
            findings.append(Finding("server", sid, host, SENSOR_CRITICAL, "critical", "; ".join(crit)[:500]))
            worst = "critical"
        if warn:
            findings.append(Finding("server", sid, host, SENSOR_WARNING, "warning", "; ".join(warn)[:500]))
            worst = "warning" if worst == "ok" else worst
        if ecc:
            findings.append(Finding("server", sid, host, SEL_ECC_UNCORRECTABLE, "critical", "; ".join(ecc)[:500]))
            worst = "critical"
        summary.update(failures=0, next_probe_at=None, last_read_at=now.replace(tzinfo=None).isoformat(),
                       sel_last=got.get("sel_last", summary.get("sel_last", 0)), last_seen=now.isoformat(),
                       drivers=got["drivers"])
        states.append({"server_id": sid, "updated_at": now, "power": got["power"], "power_at": now,
                       "power_source": "sweep", "health": worst,
                       "bmc_reachable": True, "last_seen": now, "last_error": "", "summary": summary})
    if ups:
        from fleet.ops.ups import ups_rows, ups_status

        if progress is not None:
            progress(0, phase="ups")
        ups_ids = {u.name: u.id for u, *_ in ups_rows(ctx, None, feeds=False)}
        ups_reads = await ups_status(ctx, None, record=True)
        result.ups = len(ups_reads)
        for r in ups_reads:
            uid = ups_ids[r.name]
            judged[("ups", uid)] = {UPS_UNREACHABLE, UPS_ON_BATTERY, UPS_LOW_RUNTIME, UPS_BATTERY_FAILING}
            if r.battery is None:
                result.errors[r.name] = r.error
                findings.append(Finding("ups", uid, r.name, UPS_UNREACHABLE, "warning", r.error[:500]))
                continue
            result.ups_read += 1
            status = r.battery.status
            runtime = f", {r.battery.runtime_s / 60:.0f} min left" if r.battery.runtime_s is not None else ""
            on_battery = "on-battery" in status
            short = r.battery.runtime_s is not None and r.battery.runtime_s < LOW_RUNTIME_S
            if on_battery:
                findings.append(Finding("ups", uid, r.name, UPS_ON_BATTERY, "warning", f"{status}{runtime}"))
            if on_battery and ("low-battery" in status or short):  # the policies decide what to shut down
                findings.append(Finding("ups", uid, r.name, UPS_LOW_RUNTIME, "critical", f"{status}{runtime}"))
            if "replace-battery" in status:
                findings.append(Finding("ups", uid, r.name, UPS_BATTERY_FAILING, "warning", status))
    if progress is not None:
        progress(0, phase="writing")
    t0 = time.monotonic()
    result.readings = len(readings)
    for attempt in range(5):  # a database locked for longer than its busy timeout: wait and write again
        try:
            _write(ctx, now, readings, states, findings, judged, result)
            break
        except (OperationalError, Busy) as exc:
            if (not isinstance(exc, Busy) and "locked" not in str(exc).lower()) or attempt == 4:
                raise
            for done in (result.opened, result.updated, result.resolved):  # that transaction was rolled back
                done.clear()
            await asyncio.sleep(1.0 * (attempt + 1))
    result.write_s = time.monotonic() - t0
    result.duration_s = time.monotonic() - started
    return result


def _parse(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def _write(ctx: Context, now: datetime, readings: list[dict[str, Any]], states: list[dict[str, Any]],
           findings: list[Finding], judged: dict[tuple[str, int], set[str]], result: SweepResult) -> None:
    """One transaction: readings, latest states, events opened/updated/resolved."""
    with write_connection(ctx.engine) as conn:
        for i in range(0, len(readings), 5000):
            conn.execute(insert(Reading), readings[i:i + 5000])
        if states:
            sids = [s["server_id"] for s in states]
            for i in range(0, len(sids), 500):
                conn.execute(delete(ServerState).where(ServerState.server_id.in_(sids[i:i + 500])))
            conn.execute(insert(ServerState), states)
        opened, updated, resolved = record_events(conn, now, findings, judged)
        result.opened += opened
        result.updated += updated
        result.resolved += resolved


async def run_sweep(ctx: Context, selector: str | Sequence[str] | None = None, *, ups: bool = True,
                    concurrency: int = 256, min_interval_s: float = 0.0, probe_all: bool = False,
                    facts: bool = False, facts_concurrency: int = 16) -> SweepResult:
    """:func:`sweep` as a job (``kind="sweep"``, live progress) and an audit row; with ``facts``, SSH facts
    of the selected servers that have an SSH credential too (drift events)."""
    with ctx.job("sweep", str(parse_selector(selector)), params={"ups": ups}) as job:
        result = await sweep(ctx, selector, ups=ups, concurrency=concurrency, min_interval_s=min_interval_s,
                             probe_all=probe_all, progress=lambda n, total=None, phase=None: job.progress(
                                 advance=n, total=total, force=total is not None or phase is not None,
                                 **({"phase": phase} if phase else {})))
        job.failed = len(result.errors)
        job.done = max(0, result.servers - result.servers_skipped - job.failed)
        job.total = max(job.total, result.servers - result.servers_skipped)
        if facts:
            got = await collect(ctx, selector, concurrency=facts_concurrency, configured_only=True)
            result.facts_read = len(got.facts)
            result.opened += got.opened
            result.resolved += got.resolved
            result.errors.update({h: f"ssh: {e}" for h, e in got.errors.items() if h not in result.errors})
        job.result.update(servers=result.servers, read=result.servers_read, skipped=result.servers_skipped,
                          opened=len(result.opened), resolved=len(result.resolved))
    with ctx.write() as s:
        ctx.audit(s, "sweep", [str(parse_selector(selector)) or "all"],
                  "ok" if not result.errors else "partial", servers=result.servers,
                  read=result.servers_read, opened=len(result.opened), resolved=len(result.resolved))
    return result
