"""Reading hardware profiles: one TOML file into a :class:`~fleet.profiles.model.Profile`, a directory into a
:class:`~fleet.profiles.matching.ProfileSet`.

Each model is one TOML file under ``hardware-profiles/`` (``servers/``, ``ups/``, ``pdu/``); the format
is described in ``docs/profiles.md``. Validation is strict and never touches hardware: unknown keys,
wrong types, unregistered drivers, drivers that do not implement the capability they are listed for,
quirks without a ``why`` (or unknown to :mod:`fleet.profiles.quirks`), unordered thresholds and
malformed OIDs are refused with a :class:`~fleet.errors.ProfileError` that names the file and the key
path (:mod:`fleet.profiles.tables`). Loads of the default registry are cached per directory.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from fleet.drivers.registry import CAPABILITIES, DriverRegistry
from fleet.drivers.registry import registry as default_registry
from fleet.errors import ProfileError
from fleet.profiles.matching import ProfileSet
from fleet.profiles.model import (
    ENUM_VOCABULARY,
    KINDS,
    METRICS,
    NUT_ONLY_METRICS,
    OUTLET_ACTIONS,
    OUTLET_STATES,
    SENSOR_UNITS,
    UPS_ACTIONS,
    IpmiSpec,
    MatchRules,
    NutSpec,
    OidSpec,
    OutletTable,
    PowerSpec,
    Profile,
    Quirk,
    SensorSpec,
    SetCommand,
    SnmpSpec,
)
from fleet.profiles.quirks import KNOWN_QUIRKS, bmc_quirks, boot_quirks, check_quirk, outlet_quirks
from fleet.profiles.tables import Table, check_oid, display, fail, hint

__all__ = ["clear_cache", "default_profiles_dir", "load_profile", "load_profiles"]

#: The folder each kind of profile lives in.
_FOLDER_KIND = {"servers": "server", "ups": "ups", "pdu": "pdu"}

_NAME_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*\Z")
_NUT_VAR_RE = re.compile(r"^[a-z0-9]+(?:\.[a-z0-9_]+)+\Z")
_TOML_POS_RE = re.compile(r"at line (\d+), column (\d+)")

# --------------------------------------------------------------------------------------------
# The sections of one file
# --------------------------------------------------------------------------------------------


def _read_match(t: Table | None) -> MatchRules:
    if t is None:
        return MatchRules()
    ipmi = t.get_table("ipmi")
    snmp = t.get_table("snmp")
    netbox = t.get_table("netbox")
    preferred = t.get_bool("preferred")
    t.done()
    mfr = None
    products: tuple[int, ...] = ()
    if ipmi is not None:
        mfr = ipmi.get_int("manufacturer_id", lo=0, hi=0xFFFFF)  # IANA enterprise numbers are 20 bits in IPMI
        products = ipmi.get_int_list("product_ids", lo=0, hi=0xFFFF)
        ipmi.done()
    oids: tuple[str, ...] = ()
    if snmp is not None:
        oids = snmp.get_str_list("sys_object_ids", required=True, nonempty=True)
        for i, oid in enumerate(oids):
            check_oid(snmp.file, f"{snmp.key('sys_object_ids')}[{i}]", oid)
        snmp.done()
    manufacturers: tuple[str, ...] = ()
    device_types: tuple[str, ...] = ()
    if netbox is not None:
        manufacturers = netbox.get_str_list("manufacturers", required=True, nonempty=True)
        device_types = netbox.get_str_list("device_types")
        netbox.done()
    return MatchRules(mfr, products, oids, manufacturers, device_types, preferred)


def _read_drivers(t: Table | None, registry: DriverRegistry) -> Mapping[str, tuple[str, ...]]:
    if t is None:
        return MappingProxyType({})
    known = set(registry.names())
    out: dict[str, tuple[str, ...]] = {}
    for capability in sorted(t.data):
        if capability not in CAPABILITIES:
            t.fail(capability, "unknown capability" + hint(capability, CAPABILITIES, "capabilities"))
        names = t.get_str_list(capability, required=True, nonempty=True)
        for i, driver in enumerate(names):
            key = f"{t.key(capability)}[{i}]"
            if driver not in known:
                fail(t.file, key, f"unknown driver {driver!r}" + hint(driver, known, "registered drivers"))
            if capability not in registry.capabilities(driver):
                fail(t.file, key, f"driver {driver!r} does not implement {capability!r} "
                      f"(it implements: {', '.join(sorted(registry.capabilities(driver)))})")
        out[capability] = names
    t.done()
    return MappingProxyType(out)


def _read_power(t: Table, kind: str) -> PowerSpec:
    idle = t.get_num("idle_w", positive=True)
    peak = t.get_num("peak_w", positive=True)
    assert idle is not None and peak is not None
    if idle > peak:
        t.fail("idle_w", f"must not exceed peak_w ({idle:g} > {peak:g})")
    capacity_w = t.get_num("capacity_w", required=False, positive=True)
    capacity_va = t.get_num("capacity_va", required=False, positive=True)
    if kind == "server" and (capacity_w is not None or capacity_va is not None):
        t.fail("capacity_w" if capacity_w is not None else "capacity_va",
               "applies only to UPS and PDU profiles")
    if capacity_w is not None and capacity_va is not None and capacity_w > capacity_va:
        t.fail("capacity_w", f"must not exceed capacity_va ({capacity_w:g} > {capacity_va:g})")
    inrush = t.get_num("inrush_factor", required=False)
    if inrush is not None and inrush < 1:
        t.fail("inrush_factor", f"must be at least 1 (a multiple of peak_w), got {inrush:g}")
    window = t.get_num("inrush_window_s", required=False, positive=True)
    if (inrush is None) != (window is None):
        t.fail("inrush_factor" if inrush is None else "inrush_window_s",
               "inrush_factor and inrush_window_s go together")
    t.done()
    return PowerSpec(idle, peak, capacity_w, capacity_va, inrush, window)


def _read_sensor(t: Table) -> SensorSpec:
    name = t.get_str("name")
    kind = t.get_str("kind")
    assert name is not None and kind is not None
    if kind not in SENSOR_UNITS:
        t.fail("kind", f"must be one of {', '.join(sorted(SENSOR_UNITS))} (got {kind!r})")
    unit = t.get_str("unit")
    assert unit is not None
    if unit not in SENSOR_UNITS[kind]:
        units = " or ".join(sorted(SENSOR_UNITS[kind]))
        t.fail("unit", f"a {kind} sensor is reported in {units}, not {unit!r}")
    order = ("critical_low", "warning_low", "warning_high", "critical_high")
    values = {k: t.get_num(k, required=False) for k in order}
    t.done()
    present = [(k, v) for k, v in values.items() if v is not None]
    if not present:
        t.fail("critical_high", "a sensor needs at least one threshold")
    for (k1, v1), (k2, v2) in itertools.pairwise(present):
        crossing = k1.endswith("_low") and k2.endswith("_high")
        if (v1 >= v2) if crossing else (v1 > v2):
            t.fail(k1, f"must be {'below' if crossing else 'at most'} {k2} ({v1:g} vs {v2:g}); "
                   "thresholds go critical_low <= warning_low < warning_high <= critical_high")
    return SensorSpec(name, kind, unit, **values)


def _read_quirk(t: Table, ids: set[str]) -> Quirk:
    qid = t.get_str("id")
    assert qid is not None
    if not _NAME_RE.match(qid):
        t.fail("id", f"must be lowercase words joined by '-' (got {qid!r})")
    if qid in ids:
        t.fail("id", f"duplicate quirk id {qid!r}")
    ids.add(qid)
    applies_to = t.get_str("applies_to")
    if applies_to not in CAPABILITIES:
        t.fail("applies_to", f"must be a capability: {', '.join(sorted(CAPABILITIES))} (got {applies_to!r})")
    value = t.get_any("value")
    if isinstance(value, dict):
        t.fail("value", "must be a boolean, number, string or array, not a table")
    if isinstance(value, list):
        value = tuple(value)
    why = t.get_str("why", required=False, nonempty=False)
    if why is None or not why.strip():
        t.fail("why", "every quirk needs a non-empty 'why' line saying what goes wrong without it")
    assert applies_to is not None
    misfit = check_quirk(qid, applies_to, value)  # a quirk the code acts on: its capability and value type
    if misfit is not None:
        t.fail(*misfit)
    t.done()
    return Quirk(qid, applies_to, value, why.strip())


def _read_ipmi(t: Table) -> IpmiSpec:
    suites = t.get_int_list("cipher_suites", lo=0, hi=19)
    if not suites:
        t.fail("cipher_suites", "must list at least one cipher suite")
    privilege = t.get_str("privilege", required=False) or "administrator"
    if privilege not in ("user", "operator", "administrator"):
        t.fail("privilege", f"must be user, operator or administrator (got {privilege!r})")
    port = t.get_int("port", required=False, lo=1, hi=65535) or 623
    t.done()
    return IpmiSpec(suites, privilege, port)


def _read_value_map(t: Table, vocabulary: frozenset[str]) -> Mapping[int, str]:
    out: dict[int, str] = {}
    for raw in t.data:
        t.used.add(raw)
        if not re.fullmatch(r"-?[0-9]+", raw):
            t.fail(raw, "keys of a value map are the raw integers, quoted (e.g. \"1\" = \"on\")")
        state = t.data[raw]
        if state not in vocabulary:
            t.fail(raw, f"must be one of {', '.join(sorted(vocabulary))} (got {state!r})")
        out[int(raw)] = state
    if not out:
        fail(t.file, t.path, "must map at least one raw value")
    return MappingProxyType(out)


def _read_oid_spec(t: Table, metric: str) -> OidSpec:
    oid = t.get_oid("oid")
    unit = t.get_str("unit")
    assert oid is not None and unit is not None
    if unit not in METRICS[metric]:
        t.fail("unit", f"{metric} is read in {', '.join(sorted(METRICS[metric]))} (got {unit!r})")
    scale = t.get_num("scale", required=False, positive=True)
    unknown = t.get_int_list("unknown")
    values_t = t.get_table("values")
    values: Mapping[int, str] = MappingProxyType({})
    if unit == "enum":
        if values_t is None:
            t.fail("values", "an enum reading needs a value map")
        values = _read_value_map(values_t, ENUM_VOCABULARY[metric])
    elif values_t is not None:
        t.fail("values", "only enum readings have a value map")
    fallback = t.get_oid("fallback_oid", required=False)
    fallback_scale = t.get_num("fallback_scale", required=False, positive=True)
    if fallback_scale is not None and fallback is None:
        t.fail("fallback_scale", "needs fallback_oid")
    t.done()
    return OidSpec(oid, unit, scale or 1.0, unknown, values, fallback, fallback_scale or 1.0)


def _read_commands(t: Table | None, actions: frozenset[str]) -> Mapping[str, SetCommand]:
    if t is None:
        return MappingProxyType({})
    out: dict[str, SetCommand] = {}
    for action in sorted(t.data):
        if action not in actions:
            t.fail(action, f"unknown action; actions are: {', '.join(sorted(actions))}")
        c = t.get_table(action, required=True)
        assert c is not None
        oid = c.get_oid("oid")
        value = c.get_int("value")
        c.done()
        assert oid is not None and value is not None
        out[action] = SetCommand(oid, value)
    t.done()
    return MappingProxyType(out)


def _read_snmp(t: Table) -> SnmpSpec:
    mib = t.get_str("mib")
    model_oid = t.get_oid("model_oid", required=False)
    metrics_t = t.get_table("metrics", required=True)
    assert metrics_t is not None and mib is not None
    metrics: dict[str, OidSpec] = {}
    for metric in sorted(metrics_t.data):
        if metric not in METRICS:
            metrics_t.fail(metric, "unknown metric" + hint(metric, METRICS, "metrics"))
        m = metrics_t.get_table(metric, required=True)
        assert m is not None
        metrics[metric] = _read_oid_spec(m, metric)
    metrics_t.done()
    commands = _read_commands(t.get_table("commands"), UPS_ACTIONS)
    outlets_t = t.get_table("outlets")
    outlets = None
    if outlets_t is not None:
        state_oid = outlets_t.get_oid("state_oid")
        states_t = outlets_t.get_table("states", required=True)
        assert states_t is not None and state_oid is not None
        states = _read_value_map(states_t, OUTLET_STATES)
        outlet_commands = _read_commands(outlets_t.get_table("commands"), OUTLET_ACTIONS)
        name_oid = outlets_t.get_oid("name_oid", required=False)
        count_oid = outlets_t.get_oid("count_oid", required=False)
        outlets_t.done()
        outlets = OutletTable(state_oid, states, outlet_commands, name_oid, count_oid)
    t.done()
    return SnmpSpec(mib, MappingProxyType(metrics), commands, outlets, model_oid)


def _read_nut(t: Table) -> NutSpec:
    driver = t.get_str("driver")
    variables_t = t.get_table("variables", required=True)
    assert variables_t is not None and driver is not None
    allowed = set(METRICS) | NUT_ONLY_METRICS
    variables: dict[str, str] = {}
    for metric in sorted(variables_t.data):
        if metric not in allowed:
            variables_t.fail(metric, "unknown metric" + hint(metric, allowed, "metrics"))
        var = variables_t.get_str(metric)
        assert var is not None
        if not _NUT_VAR_RE.match(var):
            variables_t.fail(metric, f"must be a NUT variable name like battery.charge (got {var!r})")
        variables[metric] = var
    variables_t.done()
    commands_t = t.get_table("commands")
    commands: dict[str, str] = {}
    if commands_t is not None:
        for action in sorted(commands_t.data):
            if action not in UPS_ACTIONS:
                commands_t.fail(action, f"unknown action; actions are: {', '.join(sorted(UPS_ACTIONS))}")
            cmd = commands_t.get_str(action)
            assert cmd is not None
            if not _NUT_VAR_RE.match(cmd):
                commands_t.fail(action, f"must be a NUT instant command like load.off (got {cmd!r})")
            commands[action] = cmd
        commands_t.done()
    t.done()
    return NutSpec(driver, MappingProxyType(variables), MappingProxyType(commands))



def load_profile(path: str | os.PathLike[str], *, base: str | os.PathLike[str] | None = None,
                 registry: DriverRegistry | None = None) -> Profile:
    """Read and validate one profile file.

    ``base`` is the directory that error messages show paths relative to (the current
    directory when omitted). ``registry`` defaults to the fleet's driver registry.
    """
    p = Path(path)
    file = display(p, Path(base) if base is not None else None)
    reg = registry or default_registry
    try:
        raw = p.read_bytes()
    except OSError as exc:
        fail(file, None, f"cannot read: {exc.strerror or exc}")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        fail(file, None, f"not UTF-8 text: {exc}")
    except tomllib.TOMLDecodeError as exc:
        pos = _TOML_POS_RE.search(str(exc))
        where = f"{file}:{pos.group(1)}:{pos.group(2)}" if pos else file
        err = ProfileError(f"{where}: invalid TOML: {exc}")
        err.file = file  # type: ignore[attr-defined]
        err.key = None  # type: ignore[attr-defined]
        err.line = int(pos.group(1)) if pos else None  # type: ignore[attr-defined]
        raise err from None

    t = Table(file, data, "")
    name = t.get_str("name")
    assert name is not None
    if not _NAME_RE.match(name):
        t.fail("name", f"must be lowercase letters, digits and '-' (got {name!r})")
    if name != p.stem:
        t.fail("name", f"must equal the file name without .toml ({p.stem!r}), got {name!r}")
    kind = t.get_str("kind")
    if kind not in KINDS:
        t.fail("kind", f"must be one of {', '.join(KINDS)} (got {kind!r})")
    assert kind is not None
    folder_kind = _FOLDER_KIND.get(p.parent.name)
    if folder_kind is not None and folder_kind != kind:
        t.fail("kind", f"is {kind!r} but the file is in {p.parent.name}/, which holds {folder_kind} profiles")
    vendor = t.get_str("vendor")
    model = t.get_str("model")
    description = t.get_str("description")
    sources = t.get_str_list("sources", required=True, nonempty=True)
    match = _read_match(t.get_table("match"))
    # An empty [drivers] table is allowed: a passive device (an unmanaged PDU) that Rackfleet
    # tracks for topology and power budgets only.
    drivers = _read_drivers(t.get_table("drivers", required=True), reg)
    power_t = t.get_table("power", required=True)
    assert power_t is not None
    power = _read_power(power_t, kind)
    sensors = tuple(_read_sensor(s) for s in t.get_tables("sensors"))
    seen: set[str] = set()
    for i, s in enumerate(sensors):
        if s.name in seen:
            fail(file, f"sensors[{i}].name", f"duplicate sensor name {s.name!r}")
        seen.add(s.name)
    ipmi_t = t.get_table("ipmi")
    ipmi = _read_ipmi(ipmi_t) if ipmi_t is not None else None
    snmp_t = t.get_table("snmp")
    snmp = _read_snmp(snmp_t) if snmp_t is not None else None
    nut_t = t.get_table("nut")
    nut = _read_nut(nut_t) if nut_t is not None else None
    ids: set[str] = set()
    quirks = tuple(_read_quirk(q, ids) for q in t.get_tables("quirks"))
    t.done()

    # Cross-checks: a driver named for a capability needs its settings section.
    used = {d for names in drivers.values() for d in names}
    for driver, section, present in (("ipmi", "ipmi", ipmi), ("snmp", "snmp", snmp), ("nut", "nut", nut)):
        if driver in used and present is None:
            fail(file, section, f"is required: driver {driver!r} is listed in [drivers]")
    snmp_outlets = "snmp" in drivers.get("outlets", ())
    if snmp is not None and snmp_outlets and snmp.outlets is None and not snmp.commands:
        fail(file, "snmp.outlets", "is required: [drivers] lists snmp for outlets")
    if match.ipmi_product_ids and match.ipmi_manufacturer_id is None:
        fail(file, "match.ipmi.product_ids", "needs match.ipmi.manufacturer_id")

    profile = Profile(
        name=name, kind=kind, vendor=vendor or "", model=model or "", description=description or "",
        sources=sources, match=match, drivers=drivers, power=power, sensors=sensors, ipmi=ipmi,
        snmp=snmp, nut=nut, quirks=quirks, boot=boot_quirks(quirks), bmc=bmc_quirks(quirks),
        outlet=outlet_quirks(quirks), path=p,
    )
    # A quirk other fields honour (a unit, an OID map, a missing command) must agree with them.
    for i, q in enumerate(quirks):
        check = KNOWN_QUIRKS[q.id].check
        misfit = check(profile, q.value) if check is not None else None
        if misfit is not None:
            key, message = misfit
            fail(file, key, f"{message} (quirks[{i}] {q.id})")
    return profile

# --------------------------------------------------------------------------------------------
# Loading a directory
# --------------------------------------------------------------------------------------------


def default_profiles_dir() -> Path:
    """Where the fleet's profiles live: ``$FLEET_PROFILES``, else the repository's
    ``hardware-profiles/`` (editable installs), else the installed ``<data>/share/rackfleet/hardware-profiles``
    (:mod:`fleet.datafiles`)."""
    env = os.environ.get("FLEET_PROFILES")
    if env:
        return Path(env)
    from fleet.datafiles import data_candidates

    candidates = data_candidates("hardware-profiles")
    for c in candidates:
        if c.is_dir():
            return c
    raise ProfileError("no hardware-profiles directory found; looked in "
                       + ", ".join(str(c) for c in candidates) + " (set FLEET_PROFILES to choose one)")


def _load_dir(directory: Path, registry: DriverRegistry) -> ProfileSet:
    if not directory.is_dir():
        raise ProfileError(f"{directory}: not a directory of hardware profiles")
    files = sorted(f for f in directory.rglob("*.toml") if not any(part.startswith(".") for part in f.parts))
    if not files:
        raise ProfileError(f"{directory}: no hardware profiles (*.toml) found")
    base = directory.resolve().parent
    return ProfileSet(load_profile(f, base=base, registry=registry) for f in files)


@functools.lru_cache(maxsize=8)
def _load_cached(directory: Path) -> ProfileSet:
    return _load_dir(directory, default_registry)


def load_profiles(directory: str | os.PathLike[str] | None = None, *,
                  registry: DriverRegistry | None = None) -> ProfileSet:
    """Load every ``*.toml`` under ``directory`` (default: :func:`default_profiles_dir`).

    Loads of the default registry are cached per directory; :func:`clear_cache` forgets them.
    """
    path = Path(directory) if directory is not None else default_profiles_dir()
    if registry is not None and registry is not default_registry:
        return _load_dir(path, registry)
    return _load_cached(path.resolve())


def clear_cache() -> None:
    """Forget cached loads (after editing profile files in a long-running process)."""
    _load_cached.cache_clear()
