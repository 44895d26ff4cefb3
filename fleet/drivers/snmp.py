"""SNMP v2c and v3 (authPriv) for UPSes and PDUs: battery readings, outlet switching, identification.

:class:`SnmpDriver` implements :class:`~fleet.drivers.base.BatteryMonitor`,
:class:`~fleet.drivers.base.OutletControl` and :class:`~fleet.drivers.base.SensorReader` for many
devices at once, on pysnmp 7's asyncio API. Every OID and every conversion comes from the device's
hardware profile (``Target.options["profile"]``: ``Profile.snmp``); nothing is compiled from MIB
files at run time and no MIB is looked up.

Execution model (figures in ``docs/snmp.md``):

- **v1/v2c** requests go through one pysnmp ``v1arch`` ``SnmpDispatcher`` (one UDP socket): the
  message is built from the community and the PDU, with no per-target configuration tables. That
  costs ~0.8 ms of CPU per 7-OID poll; pysnmp's ``v3arch`` command generator costs twice that, and
  configuring one v3arch target takes ~3.6 ms (10,000 targets: 36 s), so v2c does not use it.
- **v3** (USM, authPriv) needs pysnmp's ``SnmpEngine``: one per driver, created on the first v3
  request. Each agent's engine ID is discovered once (a plain discovery Report), and the user is
  added *for that engine ID*, so agents may share a user name with different keys.
- At most ``max_inflight`` requests are on the wire at once (default 64, at most 128: at 256 the
  default UDP receive buffer overflowed here), for every target together.
- A request is sent, then resent ``retries`` times (default 1), each time waiting
  ``Target.timeout`` seconds: a dead agent costs ``timeout x (retries + 1)``. pysnmp's own defaults
  (1 s x 6 tries) would make it 6 s. ``Target.options["snmp_retries"]`` overrides ``retries``.
- A battery poll reads all of a device's metric OIDs in one GET; objects the agent lacks
  (noSuchObject/noSuchInstance) are read again from the profile's ``fallback_oid``; an agent that
  answers tooBig gets the GET in halves, one that answers noSuchName or genErr for the whole PDU
  (SNMPv1-style) gets one GET per OID.

Errors are translated at one edge (:meth:`SnmpDriver._exchange`): pysnmp's (errorIndication,
errorStatus, errorIndex, varBinds) never leave this module. Timeouts are
:class:`~fleet.errors.DeviceTimeout` (with v2c a wrong community looks exactly the same: agents do
not answer it), v3 authentication and privacy failures :class:`~fleet.errors.AuthFailed`, a required
object the agent lacks :class:`~fleet.errors.Unsupported`, a SET the agent answers but does not apply
:class:`SetNotApplied` (an ``Unsupported``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from fleet.errors import (
    AuthFailed,
    DeviceTimeout,
    DeviceUnreachable,
    DriverError,
    FatalError,
    RetryableError,
    Unsupported,
)

from .base import (
    BatteryMonitor,
    BatteryStatus,
    OutletControl,
    OutletStatus,
    PowerState,
    SensorReader,
    SensorReading,
    Setting,
    Target,
)

__all__ = [
    "BATTERY_METRICS",
    "MIB_FAMILIES",
    "SetNotApplied",
    "SnmpDriver",
    "choose_profile",
    "convert_metric",
    "profile_families",
]

#: MIB families :meth:`SnmpDriver.probe_mibs` looks for: name -> subtree answered by the agent.
MIB_FAMILIES: Mapping[str, str] = {
    "ietf-ups": "1.3.6.1.2.1.33.1",            # RFC 1628 UPS-MIB
    "apc-ups": "1.3.6.1.4.1.318.1.1.1",        # PowerNet-MIB ups
    "eaton-xups": "1.3.6.1.4.1.534.1",         # XUPS-MIB
    "cyberpower-ups": "1.3.6.1.4.1.3808.1.1.1",  # CPS-MIB ups
    "apc-rpdu": "1.3.6.1.4.1.318.1.1.12",      # PowerNet-MIB rPDU
    "apc-rpdu2": "1.3.6.1.4.1.318.1.1.26",     # PowerNet-MIB rPDU2
}

#: Metrics a battery poll reads (the profile's others go to ``BatteryStatus.extra`` too).
BATTERY_METRICS: tuple[str, ...] = (
    "battery_charge", "battery_runtime", "battery_status", "battery_replace", "battery_temperature",
    "seconds_on_battery", "output_source", "output_load", "input_voltage",
)

SYS_DESCR = "1.3.6.1.2.1.1.1.0"
SYS_OBJECT_ID = "1.3.6.1.2.1.1.2.0"
SYS_NAME = "1.3.6.1.2.1.1.5.0"

DEFAULT_TIMEOUT = 1.0
DEFAULT_RETRIES = 1
DEFAULT_MAX_INFLIGHT = 64
MAX_INFLIGHT_LIMIT = 128
#: Varbinds per GETBULK answer when walking outlet tables.
BULK_REPETITIONS = 24

# Plausible ranges after conversion: a reading outside is a vendor sentinel the profile does not
# list (e.g. -1 for "no estimate"), reported as unknown rather than stored as if real.
_RANGES: Mapping[str, tuple[float, float]] = {
    "percent": (0.0, 1000.0),
    "battery_charge": (0.0, 100.0),
    "seconds": (0.0, 7 * 86400.0),
    "celsius": (-40.0, 150.0),
    "volts": (0.0, 1000.0),
    "amps": (0.0, 10000.0),
    "watts": (0.0, 10_000_000.0),
}
_CANONICAL_UNIT = {"percent": "percent", "seconds": "seconds", "minutes": "seconds", "timeticks": "seconds",
                   "celsius": "celsius", "volts": "volts", "amps": "amps", "watts": "watts", "enum": "enum"}

# SNMP errorStatus values (RFC 3416).
_TOO_BIG, _NO_SUCH_NAME, _BAD_VALUE, _READ_ONLY, _GEN_ERR, _NO_ACCESS = 1, 2, 3, 4, 5, 6
_ERROR_STATUS = {
    0: "noError", 1: "tooBig", 2: "noSuchName", 3: "badValue", 4: "readOnly", 5: "genErr", 6: "noAccess",
    7: "wrongType", 8: "wrongLength", 9: "wrongEncoding", 10: "wrongValue", 11: "noCreation",
    12: "inconsistentValue", 13: "resourceUnavailable", 14: "commitFailed", 15: "undoFailed",
    16: "authorizationError", 17: "notWritable", 18: "inconsistentName",
}

_AUTH_PROTOCOLS = ("MD5", "SHA", "SHA224", "SHA256", "SHA384", "SHA512")
#: AES192/AES256 use the Blumenthal key extension, as net-snmp's AES-192/AES-256 do; the "C"
#: variants use Reeder's (Cisco-style, net-snmp's AES-256-C).
_PRIV_PROTOCOLS = ("DES", "3DES", "AES", "AES128", "AES192", "AES256", "AES192C", "AES256C")


class SetNotApplied(Unsupported):
    """The agent answered a SET without applying it (an exception value, or a different value, came back)."""


class _Missing:
    """An object the agent does not have (noSuchObject, noSuchInstance, endOfMibView, noSuchName)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"<missing: {self.reason}>"


class _PduError(Exception):
    """An errorStatus for the whole PDU; the caller decides what it means (split, per OID, or fail)."""

    def __init__(self, status: int, index: int) -> None:
        super().__init__(_ERROR_STATUS.get(status, str(status)))
        self.status = status
        self.index = index


# ---------------------------------------------------------------------------------------------
# Pure conversions (profile rules), tested without a network
# ---------------------------------------------------------------------------------------------


def _raw_number(value: Any) -> float | None:
    from pyasn1.type import univ

    if isinstance(value, univ.Integer):
        return int(value)
    if isinstance(value, univ.OctetString):
        try:
            return float(bytes(value).decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            return None
    return None


def _is_timeticks(value: Any) -> bool:
    from pysnmp.proto import rfc1902

    return isinstance(value, rfc1902.TimeTicks)


def convert_metric(name: str, spec: Any, value: Any) -> tuple[Any, str | None]:
    """``(value, why_unknown)`` for one reading of metric ``name`` under its profile ``OidSpec``.

    Numbers come back in canonical units (percent, seconds, celsius, volts, amps, watts), enums as
    their vocabulary word. ``value`` is None (with the reason) for a raw value listed in
    ``spec.unknown``, an enum value the profile does not map, a runtime whose ASN.1 type contradicts
    the profile's unit (TimeTicks where minutes or seconds are expected, or the reverse), and a
    reading outside the plausible range of its unit (negative volts, a charge of 255%).
    """
    if isinstance(value, _Missing):
        return None, value.reason
    raw = _raw_number(value)
    if raw is None:
        return None, f"not a number ({value.__class__.__name__} {value!s:.40})"
    if spec.unit == "enum":
        word = spec.values.get(int(raw))
        if word is None:
            return None, f"raw value {int(raw)} is not in the profile's map"
        return word, None
    if raw in spec.unknown:
        return None, f"raw value {int(raw) if raw == int(raw) else raw} means unknown"
    if name == "battery_runtime" or spec.unit == "timeticks":
        ticks = _is_timeticks(value)
        if spec.unit == "timeticks" and not ticks:
            return None, f"the profile expects TimeTicks but the agent sent {value.__class__.__name__} {int(raw)}"
        if spec.unit in ("minutes", "seconds") and ticks:
            return None, f"the profile expects {spec.unit} but the agent sent TimeTicks {int(raw)}"
    number = raw * spec.scale
    if spec.unit == "minutes":
        number *= 60.0
    elif spec.unit == "timeticks":
        number /= 100.0
    unit = _CANONICAL_UNIT.get(spec.unit, spec.unit)
    lo, hi = _RANGES.get(name, _RANGES.get(unit, (-math.inf, math.inf)))
    if not lo <= number <= hi:
        return None, f"{number:g} {unit} is outside {lo:g}..{hi:g}"
    return round(number, 6), None


def battery_status_word(readings: Mapping[str, Any]) -> str:
    """The ``BatteryStatus.status`` string from converted readings (see :class:`BatteryStatus`).

    ``online`` or ``on-battery`` from the output source (bypass, boost and trim are on line; off,
    other and unknown say neither), else from seconds on battery; then ``low-battery`` (battery
    status low or depleted) and ``replace-battery``; ``unknown`` when nothing applies.
    """
    words: list[str] = []
    source = readings.get("output_source")
    if source == "on_battery":
        words.append("on-battery")
    elif source in ("online", "bypass", "boost", "trim"):
        words.append("online")
    elif source is None and readings.get("seconds_on_battery") is not None:
        words.append("on-battery" if readings["seconds_on_battery"] > 0 else "online")
    if readings.get("battery_status") in ("low", "depleted"):
        words.append("low-battery")
    if readings.get("battery_replace") == "replace":
        words.append("replace-battery")
    return " ".join(words) or "unknown"


def profile_families(profile: Any) -> set[str]:
    """The :data:`MIB_FAMILIES` a profile's SNMP objects live in."""
    snmp = getattr(profile, "snmp", None)
    if snmp is None:
        return set()
    oids = [m.oid for m in snmp.metrics.values()]
    if snmp.outlets is not None:
        oids.append(snmp.outlets.state_oid)
    out = set()
    for oid in oids:
        for fam, root in MIB_FAMILIES.items():
            if oid == root or oid.startswith(root + "."):
                out.add(fam)
    return out


def choose_profile(profiles: Iterable[Any], sys_object_id: str | None, mibs: set[str], *,
                   kind: str | None = None) -> tuple[Any | None, str]:
    """Pick a profile for an agent from its sysObjectID and the MIB families it answers.

    ``profiles`` is a :class:`~fleet.profiles.ProfileSet`. The sysObjectID match wins when the agent
    answers that profile's MIB family; otherwise the profiles whose objects all lie in answered
    families are candidates (the preferred one, or the only one, wins). Returns ``(profile, why)``;
    ``profile`` is None when nothing fits.
    """
    pool = [p for p in profiles if p.snmp is not None and (kind is None or p.kind == kind)]
    if sys_object_id and hasattr(profiles, "match_sys_object_id"):
        matched = profiles.match_sys_object_id(sys_object_id)
        if matched is not None and matched in pool:
            fams = profile_families(matched)
            if fams and fams <= mibs:
                return matched, (f"sysObjectID {sys_object_id} matches {matched.name} and the agent answers "
                                 f"{', '.join(sorted(fams))}")
    candidates = [p for p in pool if profile_families(p) and profile_families(p) <= mibs]
    if not candidates:
        return None, f"no profile's MIB families are all answered (agent answers: {', '.join(sorted(mibs)) or 'none'})"
    # the most specific family first: vendor MIBs beat the generic UPS-MIB
    vendor = [p for p in candidates if profile_families(p) - {"ietf-ups"}]
    pool2 = vendor or candidates
    if len(pool2) == 1:
        chosen = pool2[0]
    else:
        preferred = [p for p in pool2 if p.match.preferred]
        if len(preferred) != 1:
            return None, f"several profiles fit ({', '.join(p.name for p in pool2)}) and none is preferred"
        chosen = preferred[0]
    return chosen, f"the agent answers {', '.join(sorted(profile_families(chosen)))} ({chosen.name})"


# ---------------------------------------------------------------------------------------------
# Connections: one per (target, credentials, timing), cached
# ---------------------------------------------------------------------------------------------


@dataclass
class _Conn:
    key: tuple[Any, ...]
    version: str                 # "1" | "2c" | "3"
    host: str
    port: int
    timeout: float
    retries: int
    community: str = ""
    user: str = ""
    auth_proto: str = "SHA"
    priv_proto: str = "AES"
    auth_key: str = field(default="", repr=False)
    priv_key: str = field(default="", repr=False)
    v1_auth: Any = None          # v1arch CommunityData
    v1_target: Any = None        # v1arch UdpTransportTarget
    addr_name: str | None = None  # v3arch target address name
    engine_id: bytes | None = None
    lock: asyncio.Lock | None = None

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def budget(self) -> float:
        return self.timeout * (self.retries + 1)


def _v3_secrets(target: Target) -> tuple[str, str]:
    if target.password is None:
        raise AuthFailed("no SNMPv3 keys: the credential must be a JSON object {\"auth\": ..., \"priv\": ...}",
                         target=target.name, operation="configure SNMPv3")
    try:
        doc = json.loads(target.password.reveal())
        auth, priv = doc["auth"], doc["priv"]
    except (ValueError, TypeError, KeyError):
        raise AuthFailed("the SNMPv3 credential must be a JSON object {\"auth\": ..., \"priv\": ...}",
                         target=target.name, operation="configure SNMPv3") from None
    if not isinstance(auth, str) or not isinstance(priv, str) or len(auth) < 8 or len(priv) < 8:
        raise AuthFailed("SNMPv3 auth and priv passphrases must be strings of at least 8 characters",
                         target=target.name, operation="configure SNMPv3")
    return auth, priv


# ---------------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------------


class SnmpDriver(BatteryMonitor, OutletControl, SensorReader):
    """SNMP v1/v2c/v3 UPS and PDU agents, many at once, on pysnmp 7 asyncio.

    ``SnmpDriver()`` opens nothing until the first request. One driver per process (the
    :class:`fleet.Fleet` holds it) owns the process's SNMP sockets and, once a v3 target appears,
    its ``SnmpEngine``. Settings: ``max_inflight`` requests on the wire at once (default 64, at most
    128), ``retries`` per request (default 1), ``confirm_timeout`` seconds for an outlet to read back
    its new state (default 15; ``Target.options["confirm_timeout"]`` overrides), ``poll_interval``
    between read-backs (0.25 s), ``profiles`` (a ProfileSet; default: the fleet's profiles).

    ``Target.options``: ``profile`` (a profile name, or a :class:`~fleet.profiles.Profile`),
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
        if not 1 <= max_inflight <= MAX_INFLIGHT_LIMIT:
            raise ValueError(f"max_inflight must be 1..{MAX_INFLIGHT_LIMIT} (got {max_inflight})")
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.max_inflight = max_inflight
        self.retries = retries
        self.confirm_timeout = confirm_timeout
        self.poll_interval = poll_interval
        self._profiles = profiles
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sem: asyncio.Semaphore | None = None
        self._dispatcher: Any = None
        self._engine: Any = None
        self._conns: dict[tuple[Any, ...], _Conn] = {}
        self._v3_users: dict[tuple[bytes, str], tuple[str, ...]] = {}
        self._v3_params: set[str] = set()
        self._names = 0
        self._plans: dict[str, Any] = {}
        self._stats = {"requests": 0, "timeouts": 0, "inflight": 0, "max_inflight_seen": 0}
        self._closed = False

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> SnmpDriver:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def close(self) -> None:
        """Close the sockets (and the v3 engine). Idempotent; a later call opens them again."""
        dispatcher, engine = self._dispatcher, self._engine
        self._dispatcher = self._engine = None
        self._conns.clear()
        self._v3_users.clear()
        self._v3_params.clear()
        self._sem = None
        self._loop = None
        if dispatcher is not None:
            with contextlib.suppress(Exception):
                dispatcher.close()
        if engine is not None:
            with contextlib.suppress(Exception):
                engine.close_dispatcher()

    async def aclose(self) -> None:
        self.close()

    def stats(self) -> dict[str, Any]:
        """Requests sent, timeouts, requests in flight now and the most seen at once."""
        return dict(self._stats, connections=len(self._conns), v3_engine=self._engine is not None)

    def _bind_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._loop is not None:
                self.close()
            self._loop = loop
            self._sem = asyncio.Semaphore(self.max_inflight)

    # -- profiles ------------------------------------------------------------------------------

    def _profile(self, target: Target, operation: str) -> Any:
        ref = target.options.get("profile")
        if ref is None:
            raise Unsupported("no hardware profile given (Target.options['profile'])",
                              target=target.name, operation=operation)
        if not isinstance(ref, str):
            profile = ref
        else:
            if self._profiles is None:
                from fleet.profiles import load_profiles

                self._profiles = load_profiles()
            profile = self._profiles.get(ref)
        if profile.snmp is None:
            raise Unsupported(f"profile {profile.name} has no [snmp] section", target=target.name,
                              operation=operation)
        return profile

    # -- connections ---------------------------------------------------------------------------

    async def _conn(self, target: Target, operation: str) -> _Conn:
        self._bind_loop()
        version = str(target.options.get("snmp_version", "2c")).lower().lstrip("v")
        if version not in ("1", "2c", "3"):
            raise Unsupported(f"SNMP version {version!r} is not supported (1, 2c, 3)", target=target.name,
                              operation=operation)
        timeout = float(target.timeout)
        if not timeout > 0:
            raise Unsupported(f"timeout must be > 0 (got {target.timeout})", target=target.name, operation=operation)
        retries = int(target.options.get("snmp_retries", self.retries))
        if version == "3":
            auth, priv = _v3_secrets(target)
            auth_proto = str(target.options.get("auth_proto", "SHA")).upper().replace("-", "")
            priv_proto = str(target.options.get("priv_proto", "AES")).upper().replace("-", "")
            if auth_proto not in _AUTH_PROTOCOLS:
                raise Unsupported(f"SNMPv3 auth protocol {auth_proto!r} is not one of {', '.join(_AUTH_PROTOCOLS)}",
                                  target=target.name, operation=operation)
            if priv_proto not in _PRIV_PROTOCOLS:
                raise Unsupported(f"SNMPv3 privacy protocol {priv_proto!r} is not one of {', '.join(_PRIV_PROTOCOLS)}",
                                  target=target.name, operation=operation)
            if not target.username:
                raise AuthFailed("no SNMPv3 user name (Target.username)", target=target.name, operation=operation)
            secret_key: tuple[Any, ...] = (target.username, auth_proto, priv_proto, auth, priv)
        else:
            if target.password is None:
                raise AuthFailed("no SNMP community (the credential's secret)", target=target.name,
                                 operation=operation)
            secret_key = (target.password.reveal(),)
        key = (target.host, target.port, version, timeout, retries, *secret_key)
        conn = self._conns.get(key)
        if conn is not None:
            return conn
        conn = _Conn(key, version, target.host, target.port, timeout, retries)
        if version == "3":
            conn.user, conn.auth_proto, conn.priv_proto, conn.auth_key, conn.priv_key = secret_key
            conn.lock = asyncio.Lock()
        else:
            from pysnmp.hlapi.v1arch.asyncio import CommunityData, UdpTransportTarget

            conn.community = secret_key[0]
            conn.v1_auth = CommunityData(conn.community, mpModel=0 if version == "1" else 1)
            if _is_ipv4(target.host):  # no resolver round trip (a thread each) for 10,000 addresses
                conn.v1_target = UdpTransportTarget.__new__(UdpTransportTarget)
                conn.v1_target.transport_address = (target.host, target.port)
                conn.v1_target.__init__(timeout=timeout, retries=retries)
            else:
                try:
                    conn.v1_target = await UdpTransportTarget.create((target.host, target.port), timeout=timeout,
                                                                     retries=retries)
                except Exception as exc:
                    raise DeviceUnreachable(f"cannot resolve {target.address}: {exc}", target=target.name,
                                            operation=operation) from None
        self._conns[key] = conn
        return conn

    # -- the edge: one request/response exchange -----------------------------------------------

    async def _exchange(self, target: Target, conn: _Conn, operation: str, kind: str,
                        varbinds: Sequence[tuple[Any, Any]], *, max_repetitions: int = 0) -> list[tuple[Any, Any]]:
        """Send one PDU (``get``, ``next``, ``bulk``, ``set``); return the answer's varbinds.

        Raises :class:`_PduError` for a non-zero errorStatus and a DriverError for everything else
        that went wrong (timeouts, v3 security, transport). This is the only place pysnmp's error
        4-tuples are looked at.
        """
        assert self._sem is not None
        if conn.version == "3":
            await self._v3_ready(target, conn, operation)
        async with self._sem:
            self._stats["requests"] += 1
            self._stats["inflight"] += 1
            self._stats["max_inflight_seen"] = max(self._stats["max_inflight_seen"], self._stats["inflight"])
            try:
                if conn.version == "3":
                    ei, status, index, answer = await self._send_v3(conn, kind, varbinds, max_repetitions)
                else:
                    ei, status, index, answer = await self._send_v1(conn, kind, varbinds, max_repetitions)
            finally:
                self._stats["inflight"] -= 1
        if ei is not None:
            raise self._indication_error(target, conn, operation, ei)
        if status:
            raise _PduError(int(status), int(index))
        return list(answer)

    def _indication_error(self, target: Target, conn: _Conn, operation: str, ei: Any) -> DriverError:
        from pysnmp.proto import errind

        name = target.name
        if isinstance(ei, errind.RequestTimedOut) or ei == "timeout":
            self._stats["timeouts"] += 1
            tries = conn.retries + 1
            if conn.version != "3":
                hint = ("; SNMP v1/v2c agents do not answer a wrong community, so a wrong community looks "
                        "exactly like this")
            else:
                hint = ("; the agent answered engine discovery, and a wrong SNMPv3 privacy key looks exactly "
                        "like this (net-snmp drops what it cannot decrypt, without a report)")
            return DeviceTimeout(f"no answer from {conn.where} in {conn.budget:g} s ({conn.timeout:g} s x "
                                 f"{tries} attempt{'s' if tries > 1 else ''}){hint}", target=name, operation=operation)
        if isinstance(ei, errind.WrongDigest | errind.AuthenticationFailure | errind.AuthenticationError):
            return AuthFailed(f"{conn.where} refused the SNMPv3 authentication key of user {conn.user!r} "
                              f"({conn.auth_proto}): {ei}", target=name, operation=operation)
        if isinstance(ei, errind.DecryptionError):
            return AuthFailed(f"{conn.where} could not decrypt with the SNMPv3 privacy key of user {conn.user!r} "
                              f"({conn.priv_proto}): {ei}", target=name, operation=operation)
        if isinstance(ei, errind.UnknownUserName | errind.UnknownSecurityName):
            return AuthFailed(f"{conn.where} does not know SNMPv3 user {conn.user!r}", target=name,
                              operation=operation)
        if isinstance(ei, errind.UnsupportedSecurityLevel):
            return AuthFailed(f"{conn.where} does not allow authPriv for user {conn.user!r}: {ei}", target=name,
                              operation=operation)
        if isinstance(ei, errind.NotInTimeWindow | errind.UnknownEngineID):
            return RetryableError(f"{conn.where}: SNMPv3 engine discovery did not settle: {ei}", target=name,
                                  operation=operation)
        if isinstance(ei, errind.UnsupportedAuthProtocol | errind.UnsupportedPrivProtocol | errind.NoEncryption):
            return Unsupported(f"this host cannot use {conn.auth_proto}/{conn.priv_proto}: {ei}", target=name,
                               operation=operation)
        if isinstance(ei, BaseException) and not isinstance(ei, errind.ErrorIndication):
            return DeviceUnreachable(f"cannot send to {conn.where}: {ei}", target=name, operation=operation)
        return RetryableError(f"{conn.where}: {ei}", target=name, operation=operation)

    def _pdu(self, module: Any, kind: str, varbinds: Sequence[tuple[Any, Any]], max_repetitions: int) -> Any:
        if kind == "get":
            pdu = module.GetRequestPDU()
        elif kind == "next":
            pdu = module.GetNextRequestPDU()
        elif kind == "set":
            pdu = module.SetRequestPDU()
        elif kind == "bulk":
            pdu = module.GetBulkRequestPDU()
        else:  # pragma: no cover
            raise ValueError(kind)
        if kind == "bulk":
            module.apiBulkPDU.set_defaults(pdu)
            module.apiBulkPDU.set_non_repeaters(pdu, 0)
            module.apiBulkPDU.set_max_repetitions(pdu, max_repetitions)
            module.apiBulkPDU.set_varbinds(pdu, varbinds)
        else:
            module.apiPDU.set_defaults(pdu)
            module.apiPDU.set_varbinds(pdu, varbinds)
        return pdu

    async def _send_v1(self, conn: _Conn, kind: str, varbinds: Sequence[tuple[Any, Any]],
                       max_repetitions: int) -> tuple[Any, int, int, Sequence[tuple[Any, Any]]]:
        from pysnmp.proto import api

        if self._dispatcher is None:
            from pysnmp.hlapi.v1arch.asyncio import SnmpDispatcher

            self._dispatcher = SnmpDispatcher()
        module = api.PROTOCOL_MODULES[conn.v1_auth.mpModel]
        pdu = self._pdu(module, kind, varbinds, max_repetitions)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def done(dispatcher: Any, request_id: Any, error_indication: Any, rsp: Any, fut: asyncio.Future[Any]) -> None:
            if not fut.done():
                fut.set_result((error_indication, rsp))

        try:
            self._dispatcher.send_pdu(conn.v1_auth, conn.v1_target, pdu, cbFun=done, cbCtx=future)
        except Exception as exc:  # socket errors surface here
            return exc, 0, 0, ()
        try:
            ei, rsp = await asyncio.wait_for(future, conn.budget + 1.0)
        except TimeoutError:
            return "timeout", 0, 0, ()
        if ei is not None:
            return ei, 0, 0, ()
        return (None, module.apiPDU.get_error_status(rsp), module.apiPDU.get_error_index(rsp, muteErrors=True),
                module.apiPDU.get_varbinds(rsp))

    # -- SNMPv3 --------------------------------------------------------------------------------

    async def _v3_ready(self, target: Target, conn: _Conn, operation: str) -> None:
        secrets = (conn.auth_proto, conn.priv_proto, conn.auth_key, conn.priv_key)
        if conn.addr_name is not None:
            assert conn.engine_id is not None
            if self._v3_users.get((conn.engine_id, conn.user)) != secrets:
                # another Target gave this agent's user other keys since: only one set can be right
                self._add_v3_user(conn, conn.engine_id, secrets)
            return
        assert conn.lock is not None
        async with conn.lock:
            if conn.addr_name is not None:
                return
            from pysnmp.carrier.asyncio.dgram import udp
            from pysnmp.entity import config

            if self._engine is None:
                from pysnmp.entity.engine import SnmpEngine

                self._engine = SnmpEngine()
                config.add_transport(self._engine, udp.DOMAIN_NAME, udp.UdpAsyncioTransport().open_client_mode())
            loop = asyncio.get_running_loop()
            try:
                infos = await loop.getaddrinfo(conn.host, conn.port, family=0, type=2)  # SOCK_DGRAM
                address = infos[0][4][:2]
            except OSError as exc:
                raise DeviceUnreachable(f"cannot resolve {target.address}: {exc}", target=target.name,
                                        operation=operation) from None
            engine_id = await self._discover(target, conn, address, operation)
            if self._v3_users.get((engine_id, conn.user)) != secrets:
                self._add_v3_user(conn, engine_id, secrets)
            params = f"p-{conn.user}"
            if params not in self._v3_params:
                config.add_target_parameters(self._engine, params, conn.user, "authPriv", 3)
                self._v3_params.add(params)
            self._names += 1
            addr_name = f"a{self._names}"
            config.add_target_address(self._engine, addr_name, udp.DOMAIN_NAME, address, params,
                                      timeout=round(conn.timeout * 100), retryCount=conn.retries)
            conn.engine_id = engine_id
            conn.addr_name = addr_name

    def _add_v3_user(self, conn: _Conn, engine_id: bytes, secrets: tuple[str, ...]) -> None:
        """The user's keys, localized for this agent's engine ID (pysnmp keeps one row per engine and user)."""
        from pysnmp.entity import config
        from pysnmp.proto import rfc1902

        config.add_v3_user(self._engine, conn.user, _auth_protocol(conn.auth_proto), conn.auth_key,
                           _priv_protocol(conn.priv_proto), conn.priv_key,
                           securityEngineId=rfc1902.OctetString(engine_id))
        self._v3_users[(engine_id, conn.user)] = secrets

    async def _discover(self, target: Target, conn: _Conn, address: tuple[str, int], operation: str) -> bytes:
        """The agent's snmpEngineID, from the Report a request without one provokes (RFC 3414 4)."""
        from pyasn1.codec.ber import decoder, encoder
        from pysnmp.proto.api import v2c
        from pysnmp.proto.mpmod.rfc3412 import ScopedPDU, SNMPv3Message
        from pysnmp.proto.secmod.rfc3414.service import UsmSecurityParameters

        msg_id = random.randrange(1, 2**31 - 1)
        pdu = v2c.GetRequestPDU()
        v2c.apiPDU.set_defaults(pdu)
        v2c.apiPDU.set_varbinds(pdu, [])
        scoped = ScopedPDU()
        scoped["contextEngineId"] = b""
        scoped["contextName"] = b""
        scoped["data"].setComponentByType(pdu.tagSet, pdu)
        usm = UsmSecurityParameters()
        for name, value in (("msgAuthoritativeEngineId", b""), ("msgAuthoritativeEngineBoots", 0),
                            ("msgAuthoritativeEngineTime", 0), ("msgUserName", b""),
                            ("msgAuthenticationParameters", b""), ("msgPrivacyParameters", b"")):
            usm[name] = value
        msg = SNMPv3Message()
        msg["msgVersion"] = 3
        header = msg["msgGlobalData"]
        header["msgID"] = msg_id
        header["msgMaxSize"] = 65507
        header["msgFlags"] = b"\x04"  # reportable, noAuthNoPriv
        header["msgSecurityModel"] = 3
        msg["msgSecurityParameters"] = encoder.encode(usm)
        msg["msgData"]["plaintext"] = scoped
        wire = encoder.encode(msg)

        loop = asyncio.get_running_loop()
        answer: asyncio.Queue[bytes] = asyncio.Queue()

        class _Proto(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                answer.put_nowait(data)

        assert self._sem is not None
        async with self._sem:
            try:
                transport, _ = await loop.create_datagram_endpoint(_Proto, remote_addr=address)
            except OSError as exc:
                raise DeviceUnreachable(f"cannot reach {conn.where}: {exc}", target=target.name,
                                        operation=operation) from None
            try:
                for _ in range(conn.retries + 1):
                    self._stats["requests"] += 1
                    transport.sendto(wire)
                    deadline = loop.time() + conn.timeout
                    while (left := deadline - loop.time()) > 0:
                        try:
                            data = await asyncio.wait_for(answer.get(), left)
                        except TimeoutError:
                            break
                        try:
                            rsp, _ = decoder.decode(data, asn1Spec=SNMPv3Message())
                            if int(rsp["msgGlobalData"]["msgID"]) != msg_id:
                                continue
                            params, _ = decoder.decode(bytes(rsp["msgSecurityParameters"]),
                                                       asn1Spec=UsmSecurityParameters())
                        except Exception:
                            continue
                        engine_id = bytes(params["msgAuthoritativeEngineId"])
                        if engine_id:
                            return engine_id
            finally:
                transport.close()
        self._stats["timeouts"] += 1
        raise DeviceTimeout(f"no SNMPv3 engine discovery answer from {conn.where} in {conn.budget:g} s "
                            f"({conn.timeout:g} s x {conn.retries + 1}); the agent may not speak SNMPv3",
                            target=target.name, operation=operation)

    async def _send_v3(self, conn: _Conn, kind: str, varbinds: Sequence[tuple[Any, Any]],
                       max_repetitions: int) -> tuple[Any, int, int, Sequence[tuple[Any, Any]]]:
        from pysnmp.entity.rfc3413 import cmdgen

        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def done(engine: Any, handle: Any, ei: Any, status: Any, index: Any, answer: Any, fut: Any) -> None:
            if not fut.done():
                fut.set_result((ei, status, index, answer))

        try:
            if kind == "get":
                cmdgen.GetCommandGenerator().send_varbinds(self._engine, conn.addr_name, None, "", list(varbinds),
                                                           done, future)
            elif kind == "next":
                cmdgen.NextCommandGeneratorSingleRun().send_varbinds(self._engine, conn.addr_name, None, "",
                                                                     list(varbinds), done, future)
            elif kind == "set":
                cmdgen.SetCommandGenerator().send_varbinds(self._engine, conn.addr_name, None, "", list(varbinds),
                                                           done, future)
            else:
                cmdgen.BulkCommandGeneratorSingleRun().send_varbinds(self._engine, conn.addr_name, None, "", 0,
                                                                     max_repetitions, list(varbinds), done, future)
        except Exception as exc:  # pysnmp raises StatusInformation for local failures
            indication = getattr(exc, "get", lambda *_: None)("errorIndication") if hasattr(exc, "get") else None
            return indication or exc, 0, 0, ()
        try:
            ei, status, index, answer = await asyncio.wait_for(future, conn.budget + 1.0)
        except TimeoutError:
            return "timeout", 0, 0, ()
        return ei, status or 0, index or 0, answer or ()

    # -- GET, SET, walk ------------------------------------------------------------------------

    async def _get(self, target: Target, conn: _Conn, oids: Sequence[str], operation: str) -> dict[str, Any]:
        """GET ``oids`` (one PDU if the agent allows): OID -> value or :class:`_Missing`."""
        from pysnmp.proto import rfc1902
        from pysnmp.proto.api import v2c

        if not oids:
            return {}
        varbinds = [(rfc1902.ObjectName(o), v2c.null) for o in oids]
        try:
            answer = await self._exchange(target, conn, operation, "get", varbinds)
        except _PduError as exc:
            if exc.status == _TOO_BIG and len(oids) > 1:
                half = len(oids) // 2
                first = await self._get(target, conn, oids[:half], operation)
                first.update(await self._get(target, conn, oids[half:], operation))
                return first
            if exc.status in (_NO_SUCH_NAME, _GEN_ERR, _BAD_VALUE) and len(oids) > 1:
                out: dict[str, Any] = {}
                for oid in oids:
                    out.update(await self._get(target, conn, [oid], operation))
                return out
            if exc.status == _NO_SUCH_NAME:
                return {oids[0]: _Missing("noSuchName")}
            raise self._status_error(target, operation, exc, oids) from None
        out = {}
        for oid, (name, value) in zip(oids, answer, strict=False):
            out[oid] = _missing_or(value)
            if str(name) != oid and not isinstance(out[oid], _Missing):
                out[oid] = _Missing(f"the agent answered {name} instead")
        for oid in oids[len(answer):]:
            out[oid] = _Missing("absent from the answer")
        return out

    def _status_error(self, target: Target, operation: str, exc: _PduError, oids: Sequence[str]) -> DriverError:
        oid = oids[exc.index - 1] if 0 < exc.index <= len(oids) else None
        where = f" (at {oid})" if oid else ""
        name = _ERROR_STATUS.get(exc.status, str(exc.status))
        if exc.status in (16, _NO_ACCESS):
            return AuthFailed(f"the agent refused access: {name}{where}; the community or user may be read-only",
                              target=target.name, operation=operation)
        if exc.status in (17, _READ_ONLY, 11, 18):
            return Unsupported(f"the agent will not write this object: {name}{where}", target=target.name,
                               operation=operation)
        if exc.status in (_GEN_ERR, 13, 14, 15):
            return RetryableError(f"the agent failed the request: {name}{where}", target=target.name,
                                  operation=operation)
        return FatalError(f"the agent refused the request: {name}{where}", target=target.name, operation=operation)

    async def _walk(self, target: Target, conn: _Conn, columns: Sequence[str],
                    operation: str) -> dict[str, dict[str, Any]]:
        """Every instance of each column: column -> {index suffix: value}."""
        from pysnmp.proto import rfc1902
        from pysnmp.proto.api import v2c

        out: dict[str, dict[str, Any]] = {c: {} for c in columns}
        cursor = {c: c for c in columns}
        active = list(columns)
        for _ in range(1000):  # a table of 24,000 rows at most
            if not active:
                break
            varbinds = [(rfc1902.ObjectName(cursor[c]), v2c.null) for c in active]
            try:
                if conn.version == "1":
                    answer = await self._exchange(target, conn, operation, "next", varbinds)
                else:
                    answer = await self._exchange(target, conn, operation, "bulk", varbinds,
                                                  max_repetitions=max(1, BULK_REPETITIONS // len(active)))
            except _PduError as exc:
                if exc.status == _NO_SUCH_NAME:  # SNMPv1: end of the MIB
                    break
                raise self._status_error(target, operation, exc, [cursor[c] for c in active]) from None
            finished: set[str] = set()
            width = len(active)
            for i, (name, value) in enumerate(answer):
                col = active[i % width]
                if col in finished:
                    continue
                oid = str(name)
                if isinstance(_missing_or(value), _Missing) or not oid.startswith(col + "."):
                    finished.add(col)
                    continue
                if _oid_tuple(oid) <= _oid_tuple(cursor[col]):
                    finished.add(col)  # not increasing: a broken agent
                    continue
                out[col][oid[len(col) + 1:]] = value
                cursor[col] = oid
            if not answer:
                break
            active = [c for c in active if c not in finished]
        return out

    async def _set(self, target: Target, conn: _Conn, oid: str, value: int, operation: str) -> None:
        """SET INTEGER ``value`` on ``oid``; raise :class:`SetNotApplied` unless the answer echoes it."""
        from pysnmp.proto import rfc1902

        try:
            answer = await self._exchange(target, conn, operation, "set",
                                          [(rfc1902.ObjectName(oid), rfc1902.Integer32(value))])
        except _PduError as exc:
            raise self._status_error(target, operation, exc, [oid]) from None
        if not answer:
            raise SetNotApplied(f"the agent answered the SET of {oid} with no variable", target=target.name,
                                operation=operation)
        name, echoed = answer[0]
        missing = _missing_or(echoed)
        if isinstance(missing, _Missing):
            raise SetNotApplied(f"the agent answered the SET of {oid} = {value} with {missing.reason} and "
                                "errorStatus 0: it did not apply it (a read-only or simulated object)",
                                target=target.name, operation=operation)
        if str(name) != oid or _raw_number(echoed) != value:
            raise SetNotApplied(f"the agent answered the SET of {oid} = {value} with {name} = {echoed!s:.40}: "
                                "not what was written", target=target.name, operation=operation)

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


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _FallbackSpec:
    """An OidSpec read through its fallback OID: the fallback's scale, the same unit and rules."""

    base: Any

    def __getattr__(self, name: str) -> Any:
        if name == "scale":
            return self.base.fallback_scale
        return getattr(self.base, name)


def _missing_or(value: Any) -> Any:
    from pysnmp.proto import rfc1905

    if isinstance(value, rfc1905.NoSuchObject):
        return _Missing("noSuchObject")
    if isinstance(value, rfc1905.NoSuchInstance):
        return _Missing("noSuchInstance")
    if isinstance(value, rfc1905.EndOfMibView):
        return _Missing("endOfMibView")
    from pyasn1.type import univ

    if isinstance(value, univ.Null):
        return _Missing("null")
    return value


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, _Missing):
        return None
    from pyasn1.type import univ

    if isinstance(value, univ.OctetString):
        raw = bytes(value)
        try:
            return raw.decode("utf-8").rstrip("\x00").strip()
        except UnicodeDecodeError:
            return raw.decode("latin-1").strip()
    return str(value)


def _is_ipv4(host: str) -> bool:
    parts = host.split(".")
    return len(parts) == 4 and all(p.isdigit() and int(p) < 256 for p in parts)


def _oid_tuple(oid: str) -> tuple[int, ...]:
    return tuple(int(x) for x in oid.strip(".").split(".") if x)


def _power_state(table: Any, value: Any) -> PowerState:
    raw = _raw_number(_missing_or(value)) if not isinstance(value, _Missing) else None
    word = table.states.get(int(raw), "unknown") if raw is not None else "unknown"
    # A pending change has not happened yet: pending_off is still on, pending_on still off.
    return {"on": "on", "off": "off", "pending_off": "on", "pending_on": "off"}.get(word, "unknown")  # type: ignore[return-value]


def _auth_protocol(name: str) -> Any:
    from pysnmp.entity import config

    return {
        "MD5": config.USM_AUTH_HMAC96_MD5, "SHA": config.USM_AUTH_HMAC96_SHA,
        "SHA224": config.USM_AUTH_HMAC128_SHA224, "SHA256": config.USM_AUTH_HMAC192_SHA256,
        "SHA384": config.USM_AUTH_HMAC256_SHA384, "SHA512": config.USM_AUTH_HMAC384_SHA512,
    }[name]


def _priv_protocol(name: str) -> Any:
    from pysnmp.entity import config

    return {
        "DES": config.USM_PRIV_CBC56_DES, "3DES": config.USM_PRIV_CBC168_3DES,
        "AES": config.USM_PRIV_CFB128_AES, "AES128": config.USM_PRIV_CFB128_AES,
        "AES192": config.USM_PRIV_CFB192_AES_BLUMENTHAL, "AES256": config.USM_PRIV_CFB256_AES_BLUMENTHAL,
        "AES192C": config.USM_PRIV_CFB192_AES, "AES256C": config.USM_PRIV_CFB256_AES,
    }[name]
