"""The explicit driver registry: driver names mapped to the classes that implement them.

Entries are ``"module:Class"`` paths imported on first use, so that listing or validating
drivers (as the hardware-profile loader does) never imports pyghmi, pysnmp or paramiko.
Registering a name twice is refused, as in MAAS's registry: a name always means one driver.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from fleet.errors import ProfileError, Unsupported

__all__ = ["CAPABILITIES", "DriverRegistry", "registry"]

#: Capabilities a driver may implement; each is one small protocol in ``fleet.drivers.base``.
CAPABILITIES: frozenset[str] = frozenset(
    {"power", "boot", "sensors", "sel", "fru", "bmc", "outlets", "battery", "shell"}
)


@dataclass(frozen=True)
class _Entry:
    name: str
    target: str
    capabilities: frozenset[str]
    summary: str
    credential_kinds: frozenset[str] = frozenset()


class DriverRegistry:
    """Names to driver classes. Refuses duplicates and unknown capabilities."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def register(self, name: str, target: str, capabilities: set[str] | frozenset[str], summary: str, *,
                 credential_kinds: set[str] | frozenset[str] = frozenset()) -> None:
        """Register driver ``name`` (``"module:Class"``); ``credential_kinds`` are the inventory credential
        kinds it can use (empty: any), which the driver chain filters on."""
        if name in self._entries:
            raise ValueError(f"driver {name!r} is already registered ({self._entries[name].target})")
        unknown = set(capabilities) - CAPABILITIES
        if unknown:
            raise ValueError(f"driver {name!r} declares unknown capabilities: {sorted(unknown)}")
        self._entries[name] = _Entry(name, target, frozenset(capabilities), summary, frozenset(credential_kinds))

    def unregister(self, name: str) -> None:
        """Forget driver ``name`` (tests that register a driver of their own clean up with this)."""
        self._get(name)
        del self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def capabilities(self, name: str) -> frozenset[str]:
        return self._get(name).capabilities

    def credential_kinds(self, name: str) -> frozenset[str]:
        return self._get(name).credential_kinds

    def summary(self, name: str) -> str:
        return self._get(name).summary

    def load(self, name: str) -> type:
        """Import and return the driver class for ``name``."""
        entry = self._get(name)
        module_name, _, attr = entry.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                raise Unsupported(f"driver {name!r} is not installed in this build ({entry.target})",
                                  operation="load driver") from exc
            raise
        return getattr(module, attr)

    def _get(self, name: str) -> _Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise ProfileError(f"unknown driver {name!r}; known drivers: {', '.join(self.names())}") from None


registry = DriverRegistry()
registry.register("ipmi", "fleet.drivers.ipmi:IpmiDriver",
                  {"power", "boot", "sensors", "sel", "fru"}, "IPMI 2.0 over LAN (RMCP+) via pyghmi",
                  credential_kinds={"ipmi"})
registry.register("redfish", "fleet.drivers.redfish:RedfishDriver",
                  {"power", "boot", "sensors", "sel", "fru", "bmc"}, "Redfish over HTTPS (DMTF) via aiohttp",
                  credential_kinds={"redfish"})
registry.register("snmp", "fleet.drivers.snmp:SnmpDriver",
                  {"outlets", "battery", "sensors"}, "SNMP v2c/v3 UPS and PDU agents via pysnmp",
                  credential_kinds={"snmp-v2c", "snmp-v3"})
registry.register("nut", "fleet.drivers.nut:NutDriver",
                  {"battery", "outlets", "power"}, "Network UPS Tools upsd protocol (TCP 3493)",
                  credential_kinds={"nut"})
registry.register("ssh", "fleet.drivers.ssh:SshDriver",
                  {"shell", "power"}, "OpenSSH hosts via paramiko", credential_kinds={"ssh"})
