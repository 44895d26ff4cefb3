"""The SNMP driver: UPS battery readings, sensors, PDU outlet switching and identification, by profile.

:class:`SnmpDriver` implements :class:`~fleet.drivers.base.BatteryMonitor`,
:class:`~fleet.drivers.base.OutletControl` and :class:`~fleet.drivers.base.SensorReader` for many
devices at once, over the :class:`~.session.SnmpSession` it extends. Every OID and every conversion
comes from the device's hardware profile (``Target.options["profile"]``: ``Profile.snmp``, loaded by
the caller: the driver imports no profile module); nothing is compiled from MIB files at run time
and no MIB is looked up.

- A battery poll reads all of a device's metric OIDs in one GET; objects the agent lacks
  (noSuchObject/noSuchInstance) are read again from the profile's ``fallback_oid``. A required
  object the agent lacks is :class:`~fleet.errors.Unsupported`.
- Outlets are walked by GETBULK (GETNEXT for v1) over the profile's outlet table; a switch is a SET
  of the profile's command, then read back until the outlet agrees (:meth:`SnmpDriver.set_outlet`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any, Literal

from fleet.errors import DeviceTimeout, FatalError, Unsupported

from ..base import (
    BatteryMonitor,
    BatteryStatus,
    OutletControl,
    OutletStatus,
    SensorReader,
    SensorReading,
    Setting,
    Target,
)
from .conn import _GEN_ERR, _NO_SUCH_NAME, _TOO_BIG, _Conn, _PduError
from .mibs import MIB_FAMILIES, SYS_DESCR, SYS_NAME, SYS_OBJECT_ID
from .session import DEFAULT_MAX_INFLIGHT, DEFAULT_RETRIES, DEFAULT_TIMEOUT, SnmpSession
from .values import (
    _CANONICAL_UNIT,
    _FallbackSpec,
    _Missing,
    _missing_or,
    _oid_tuple,
    _power_state,
    _raw_number,
    _text,
    battery_status_word,
    convert_metric,
)

#: Metrics a battery poll reads (the profile's others go to ``BatteryStatus.extra`` too).
BATTERY_METRICS: tuple[str, ...] = (
    "battery_charge", "battery_runtime", "battery_status", "battery_replace", "battery_temperature",
    "seconds_on_battery", "output_source", "output_load", "input_voltage",
)


class SnmpDriver(SnmpSession, BatteryMonitor, OutletControl, SensorReader):
    """SNMP v1/v2c/v3 UPS and PDU agents, many at once, on pysnmp 7 asyncio.

    ``SnmpDriver()`` opens nothing until the first request. One driver per process (the
    :class:`fleet.Fleet` holds it) owns the process's SNMP sockets and, once a v3 target appears,
    its ``SnmpEngine``. Settings: ``max_inflight`` requests on the wire at once (default 64, at most
    128), ``retries`` per request (default 1), ``confirm_timeout`` seconds for an outlet to read back
    its new state (default 15; ``Target.options["confirm_timeout"]`` overrides), ``poll_interval``
    between read-backs (0.25 s), ``profiles`` (a ProfileSet to look profile names up in; without
    one, ``Target.options["profile"]`` must be the Profile itself).

    ``Target.options``: ``profile`` (a :class:`~fleet.profiles.Profile`, or its name when the driver
    was given ``profiles``),
    ``snmp_version`` (``"2c"`` default, ``"3"``, ``"1"``), for v3 ``auth_proto`` (SHA, SHA256,
    MD5...) and ``priv_proto`` (AES, AES256, DES...); ``snmp_retries``. ``Target.username`` is the
    v3 user; ``Target.password`` reveals the community (v2c) or ``{"auth": ..., "priv": ...}`` (v3).
    ``Target.timeout`` is the wait per attempt (use 1.0).
    """

    name = "snmp"
    settings = (
        Setting("snmp_version", str, "2c", help="1, 2c or 3"),
        Setting("community", str, None, secret=True, help="v2c community (the credential's secret)"),
        Setting("username", str, "", help="SNMPv3 user"),
        Setting("v3_keys", str, None, secret=True, help='SNMPv3 keys as JSON {"auth": ..., "priv": ...}'),
        Setting("auth_proto", str, "SHA", help="SNMPv3 authentication: MD5, SHA, SHA224, SHA256, SHA384, SHA512"),
        Setting("priv_proto", str, "AES", help="SNMPv3 privacy: DES, 3DES, AES, AES192, AES256 (C: Reeder keys)"),
        Setting("timeout", float, DEFAULT_TIMEOUT,
                help="seconds per attempt; a dead agent costs timeout x (retries + 1)"),
        Setting("snmp_retries", int, DEFAULT_RETRIES, help="resends after the first attempt"),
    )

    def __init__(self, *, max_inflight: int = DEFAULT_MAX_INFLIGHT, retries: int = DEFAULT_RETRIES,
                 confirm_timeout: float = 15.0, poll_interval: float = 0.25, profiles: Any = None) -> None:
        super().__init__(max_inflight=max_inflight, retries=retries)
        self.confirm_timeout = confirm_timeout
        self.poll_interval = poll_interval
        self._profiles = profiles
        self._plans: dict[str, Any] = {}

    # -- profiles ------------------------------------------------------------------------------

    def _profile(self, target: Target, operation: str) -> Any:
        ref = target.options.get("profile")
        if ref is None:
            raise Unsupported("no hardware profile given (Target.options['profile'])",
                              target=target.name, operation=operation)
        if not isinstance(ref, str):
            profile = ref
        elif self._profiles is None:
            raise Unsupported(f"profile {ref!r} given by name, and this driver has no profile set to look it up in "
                              "(give Target.options['profile'] the Profile, or SnmpDriver(profiles=...))",
                              target=target.name, operation=operation)
        else:
            profile = self._profiles.get(ref)
        if profile.snmp is None:
            raise Unsupported(f"profile {profile.name} has no [snmp] section", target=target.name,
                              operation=operation)
        return profile

    # -- identification ------------------------------------------------------------------------

    async def identify(self, target: Target) -> dict[str, Any]:
        """``{"sys_object_id", "sys_descr", "sys_name"}`` (None where the agent lacks one); no profile needed."""
        operation = "identify"
        conn = await self._conn(target, operation)
        got = await self._get(target, conn, [SYS_OBJECT_ID, SYS_DESCR, SYS_NAME], operation)
        if all(isinstance(v, _Missing) for v in got.values()):
            raise Unsupported("the agent answers none of sysObjectID, sysDescr, sysName", target=target.name,
                              operation=operation)
        oid = got[SYS_OBJECT_ID]
        return {
            "sys_object_id": None if isinstance(oid, _Missing) else str(oid).lstrip("."),
            "sys_descr": _text(got[SYS_DESCR]),
            "sys_name": _text(got[SYS_NAME]),
        }

    async def probe_mibs(self, target: Target) -> set[str]:
        """Which :data:`MIB_FAMILIES` the agent answers (one GETNEXT per family root, in one PDU)."""
        from pysnmp.proto import rfc1902
        from pysnmp.proto.api import v2c

        operation = "probe MIBs"
        conn = await self._conn(target, operation)
        names = list(MIB_FAMILIES)
        roots = [MIB_FAMILIES[n] for n in names]

        async def next_of(batch: list[str]) -> list[tuple[Any, Any]]:
            return await self._exchange(target, conn, operation, "next",
                                        [(rfc1902.ObjectName(r), v2c.null) for r in batch])

        try:
            answer = await next_of(roots)
        except _PduError as exc:
            if exc.status not in (_NO_SUCH_NAME, _GEN_ERR, _TOO_BIG):
                raise self._status_error(target, operation, exc, roots) from None
            answer = []
            for root in roots:  # SNMPv1 agents fail the PDU at the end of their MIB
                try:
                    answer.extend(await next_of([root]))
                except _PduError:
                    answer.append((rfc1902.ObjectName(root), v2c.null))
        found = set()
        for fam, root, (name, value) in zip(names, roots, answer, strict=False):
            if not isinstance(_missing_or(value), _Missing) and str(name).startswith(root + "."):
                found.add(fam)
        return found

    # -- battery -------------------------------------------------------------------------------

    def _battery_plan(self, profile: Any) -> tuple[tuple[str, Any], ...]:
        plan = self._plans.get(profile.name)
        if plan is None or self._plans.get(profile.name + "#id") is not profile:
            metrics = profile.snmp.metrics
            order = [m for m in BATTERY_METRICS if m in metrics] + [m for m in metrics if m not in BATTERY_METRICS]
            plan = tuple((m, metrics[m]) for m in order)
            self._plans[profile.name] = plan
            self._plans[profile.name + "#id"] = profile
        return plan

    async def read_metrics(self, target: Target) -> tuple[dict[str, Any], dict[str, str], list[str]]:
        """Every metric of the target's profile: (readings, why-unknown per metric, metrics read from fallback)."""
        operation = "read metrics"
        profile = self._profile(target, operation)
        plan = self._battery_plan(profile)
        if not plan:
            raise Unsupported(f"profile {profile.name} maps no SNMP readings", target=target.name, operation=operation)
        conn = await self._conn(target, operation)
        primary = await self._get(target, conn, list(dict.fromkeys(spec.oid for _, spec in plan)), operation)
        values = {m: primary[spec.oid] for m, spec in plan}
        fallback = [(m, spec) for m, spec in plan if isinstance(values[m], _Missing) and spec.fallback_oid]
        used: list[str] = []
        if fallback:
            second = await self._get(target, conn, list(dict.fromkeys(s.fallback_oid for _, s in fallback)), operation)
            for m, spec in fallback:
                if not isinstance(second[spec.fallback_oid], _Missing):
                    values[m] = second[spec.fallback_oid]
                    used.append(m)
        readings: dict[str, Any] = {}
        unknown: dict[str, str] = {}
        answered = 0
        for m, spec in plan:
            value = values[m]
            if not isinstance(value, _Missing):
                answered += 1
            effective = spec
            if m in used:
                effective = _FallbackSpec(spec)
            converted, why = convert_metric(m, effective, value)
            readings[m] = converted
            if why is not None:
                unknown[m] = why
        if answered == 0:
            raise Unsupported(f"the agent answers none of the {len(plan)} objects profile {profile.name} reads "
                              f"({profile.snmp.mib}); is it the right profile?", target=target.name,
                              operation=operation)
        return readings, unknown, used

    async def battery(self, target: Target) -> BatteryStatus:
        readings, unknown, used = await self.read_metrics(target)
        profile = self._profile(target, "read battery")
        if not any(m in readings for m in ("battery_charge", "battery_runtime", "battery_status", "output_source")):
            raise Unsupported(f"profile {profile.name} maps no battery readings", target=target.name,
                              operation="read battery")
        extra: dict[str, Any] = {"profile": profile.name}
        for m in ("output_source", "battery_status", "battery_replace", "seconds_on_battery", "output_power",
                  "output_current", "nominal_power", "ambient_temperature"):
            if m in readings:
                extra[m] = readings[m]
        if unknown:
            extra["unknown"] = unknown
        if used:
            extra["fallback"] = used
        return BatteryStatus(
            status=battery_status_word(readings),
            charge_pct=readings.get("battery_charge"),
            runtime_s=readings.get("battery_runtime"),
            load_pct=readings.get("output_load"),
            input_v=readings.get("input_voltage"),
            battery_temp_c=readings.get("battery_temperature"),
            extra=extra,
        )

    async def sensors(self, target: Target) -> list[SensorReading]:
        """The profile's numeric readings as sensors (PDU metering, UPS temperatures...)."""
        readings, _, _ = await self.read_metrics(target)
        profile = self._profile(target, "read sensors")
        kinds = {"celsius": "temperature", "volts": "voltage", "amps": "current", "watts": "power",
                 "percent": "other", "seconds": "other"}
        out = []
        for m, spec in profile.snmp.metrics.items():
            unit = _CANONICAL_UNIT.get(spec.unit, spec.unit)
            if unit == "enum":
                continue
            value = readings.get(m)
            sensor = profile.sensor(m)
            if value is None:
                state = "unknown"
            elif sensor is not None:
                state = sensor.state(value)
            else:
                state = "ok"
            thresholds = {}
            if sensor is not None:
                thresholds = {k: v for k in ("critical_low", "warning_low", "warning_high", "critical_high")
                              if (v := getattr(sensor, k)) is not None}
            out.append(SensorReading(m, kinds.get(unit, "other"), value, unit, state, thresholds))
        return out

    # -- outlets -------------------------------------------------------------------------------

    def _table(self, target: Target, operation: str) -> tuple[Any, Any]:
        profile = self._profile(target, operation)
        table = profile.snmp.outlets
        if table is None:
            raise Unsupported(f"profile {profile.name} has no outlet table (its UPS-wide commands are not outlets)",
                              target=target.name, operation=operation)
        return profile, table

    async def outlets(self, target: Target) -> list[OutletStatus]:
        operation = "read outlets"
        _, table = self._table(target, operation)
        conn = await self._conn(target, operation)
        columns = [table.state_oid] + ([table.name_oid] if table.name_oid else [])
        walked = await self._walk(target, conn, columns, operation)
        states = walked[table.state_oid]
        if not states:
            raise Unsupported(f"the agent has no rows in the outlet state column {table.state_oid}",
                              target=target.name, operation=operation)
        names = walked.get(table.name_oid, {}) if table.name_oid else {}
        out = []
        for index, value in sorted(states.items(), key=lambda kv: _oid_tuple(kv[0])):
            if "." in index:
                continue
            out.append(OutletStatus(int(index), _text(names.get(index)) or "", _power_state(table, value)))
        return out

    async def _outlet_state(self, target: Target, conn: _Conn, table: Any, number: int, operation: str) -> str:
        oid = f"{table.state_oid}.{number}"
        value = (await self._get(target, conn, [oid], operation))[oid]
        if isinstance(value, _Missing):
            raise Unsupported(f"outlet {number} does not exist ({value.reason} for {oid})", target=target.name,
                              operation=operation)
        raw = _raw_number(value)
        return table.states.get(int(raw), "unknown") if raw is not None else "unknown"

    async def set_outlet(self, target: Target, number: int, action: Literal["on", "off", "cycle"]) -> None:
        """Switch outlet (group, receptacle) ``number``, then read it back until it agrees.

        ``cycle`` uses the profile's cycle command and waits to see the outlet off (or pending) and
        on again; without one it is off, confirm off, on, confirm on. Raises :class:`SetNotApplied`
        when the agent answers the SET without applying it, and DeviceTimeout when the state does
        not read back within ``confirm_timeout``.
        """
        if action not in ("on", "off", "cycle"):
            raise ValueError(f"action must be on, off or cycle (got {action!r})")
        operation = f"outlet {number} {action}"
        profile, table = self._table(target, operation)
        if not isinstance(number, int) or isinstance(number, bool) or number < 1:
            raise Unsupported(f"outlet numbers start at 1 (got {number!r})", target=target.name, operation=operation)
        conn = await self._conn(target, operation)
        before = await self._outlet_state(target, conn, table, number, operation)
        stuck = profile.quirk("outlet-state-unknown-needs-pdu-power-cycle")
        if before == "unknown" or (stuck is not None and action in table.commands):
            if stuck is not None and action in table.commands:
                cmd_oid = f"{table.commands[action].oid}.{number}"
                raw = _raw_number((await self._get(target, conn, [cmd_oid], operation))[cmd_oid])
                if raw is not None and int(raw) == stuck.value:
                    raise FatalError(f"outlet {number} reads {int(raw)} on {cmd_oid}: the PDU has lost track of its "
                                     f"relays ({stuck.why})", target=target.name, operation=operation)
            if before == "unknown":
                raise FatalError(f"outlet {number} reads an unknown state; not switching it", target=target.name,
                                 operation=operation)
        confirm_s = float(target.options.get("confirm_timeout", self.confirm_timeout))
        deadline = time.monotonic() + confirm_s
        if action in ("on", "off"):
            await self._command(target, conn, table, number, action, operation)
            await self._confirm(target, conn, table, number, action, deadline, operation, confirm_s=confirm_s)
            return
        if "cycle" in table.commands:
            await self._command(target, conn, table, number, "cycle", operation)
            await self._confirm(target, conn, table, number, "off", deadline, operation, also=("pending_on",),
                                confirm_s=confirm_s)
            await self._confirm(target, conn, table, number, "on", deadline, operation, confirm_s=confirm_s)
            return
        await self._command(target, conn, table, number, "off", operation)
        await self._confirm(target, conn, table, number, "off", deadline, operation, confirm_s=confirm_s)
        await self._command(target, conn, table, number, "on", operation)
        await self._confirm(target, conn, table, number, "on", deadline, operation, confirm_s=confirm_s)

    async def _command(self, target: Target, conn: _Conn, table: Any, number: int, action: str,
                       operation: str) -> None:
        cmd = table.commands.get(action)
        if cmd is None:
            raise Unsupported(f"the profile has no {action!r} command for outlets", target=target.name,
                              operation=operation)
        await self._set(target, conn, f"{cmd.oid}.{number}", cmd.value, operation)

    async def _confirm(self, target: Target, conn: _Conn, table: Any, number: int, wanted: str, deadline: float,
                       operation: str, also: tuple[str, ...] = (), confirm_s: float = 0.0) -> None:
        seen = "unread"
        delay = self.poll_interval
        while True:
            seen = await self._outlet_state(target, conn, table, number, operation)
            if seen == wanted or seen in also:
                return
            if time.monotonic() + delay > deadline:
                raise DeviceTimeout(f"outlet {number} still reads {seen!r}, not {wanted!r}, "
                                    f"{confirm_s:g} s after the command", target=target.name,
                                    operation=operation)
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    # -- many at once --------------------------------------------------------------------------

    async def gather(self, method: str, targets: Iterable[Target], *args: Any, **kwargs: Any) -> list[Any]:
        """``method`` on every target at once: results in order, a DriverError where one failed."""
        fn = getattr(self, method)
        return await asyncio.gather(*(fn(t, *args, **kwargs) for t in targets), return_exceptions=True)
