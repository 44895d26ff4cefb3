"""Hardware profiles: what Rackfleet knows about one model of server, UPS or PDU.

Each model is one TOML file under ``hardware-profiles/`` (``servers/``, ``ups/``, ``pdu/``); the format is
described in ``docs/profiles.md``. The package reads them into frozen dataclasses and answers the
questions the rest of the fleet asks of them:

- which profile is this BMC / SNMP agent / NetBox device type? (:class:`ProfileSet`)
- which driver serves a capability, in order of preference? (:meth:`Profile.drivers_for`)
- which OIDs, NUT variables, sensor thresholds, power figures and quirks apply?

Its modules:

- :mod:`fleet.profiles.model`: the vocabularies and the typed profile (:class:`Profile` and its parts);
- :mod:`fleet.profiles.tables`: strict TOML tables, whose refusals name the file and the key path;
- :mod:`fleet.profiles.loader`: one file into a profile, a directory into a set (:func:`load_profiles`);
- :mod:`fleet.profiles.matching`: the set and the rules that recognise a device (:class:`ProfileSet`);
- :mod:`fleet.profiles.quirks`: the quirks the code knows, their checks and typed records
  (``python -m fleet.profiles.quirks`` rewrites the table in docs/profiles.md).

Validation is strict and never touches hardware: a bad file is refused with a
:class:`~fleet.errors.ProfileError` such as
``hardware-profiles/servers/dell-r640.toml: sensors[2].critical_high: must be a number``.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fleet.profiles.loader import clear_cache, default_profiles_dir, load_profile, load_profiles
    from fleet.profiles.matching import ProfileSet
    from fleet.profiles.model import (
        ENUM_VOCABULARY,
        FALLBACK_PROFILES,
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

# The public names are imported on first use, so that ``python -m fleet.profiles.quirks`` runs that
# module once, as __main__, rather than after a package import already loaded it (as fleet.lab does).
_HOMES = {
    "fleet.profiles.loader": ("clear_cache", "default_profiles_dir", "load_profile", "load_profiles"),
    "fleet.profiles.matching": ("ProfileSet",),
    "fleet.profiles.model": (
        "ENUM_VOCABULARY", "FALLBACK_PROFILES", "KINDS", "METRICS", "NUT_ONLY_METRICS", "OUTLET_ACTIONS",
        "OUTLET_STATES", "SENSOR_UNITS", "UPS_ACTIONS", "IpmiSpec", "MatchRules", "NutSpec", "OidSpec",
        "OutletTable", "PowerSpec", "Profile", "Quirk", "SensorSpec", "SetCommand", "SnmpSpec",
    ),
}
_HOME = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "ENUM_VOCABULARY",
    "FALLBACK_PROFILES",
    "KINDS",
    "METRICS",
    "NUT_ONLY_METRICS",
    "OUTLET_ACTIONS",
    "OUTLET_STATES",
    "SENSOR_UNITS",
    "UPS_ACTIONS",
    "IpmiSpec",
    "MatchRules",
    "NutSpec",
    "OidSpec",
    "OutletTable",
    "PowerSpec",
    "Profile",
    "ProfileSet",
    "Quirk",
    "SensorSpec",
    "SetCommand",
    "SnmpSpec",
    "clear_cache",
    "default_profiles_dir",
    "load_profile",
    "load_profiles",
]
