"""Rackfleet: bare-metal provisioning and commodity-hardware fleet management.

The library's entry point is :class:`Fleet`; the CLI (``fleet``) and the TUI are thin layers over it.
"""

from .errors import (
    AuthFailed,
    ConflictError,
    DeviceTimeout,
    DeviceUnreachable,
    DriverError,
    FatalError,
    FleetError,
    IllegalTransition,
    ImportFailed,
    InputError,
    NotFound,
    ProfileError,
    RetryableError,
    SecretError,
    SelectorError,
    Unsupported,
    ValidationError,
)

# The service and its result types load SQLAlchemy; they are imported on first use, so that light
# users of the package (the lab BMC server, the driver worker processes) do not pay for them.
_LAZY = {
    "Fleet": "service.facade", "current_actor": "service.facade", "AuditRow": "model.views",
    "CredentialRow": "model.views",
    "ImportResult": "model.views", "NicRow": "model.views", "RackRow": "model.views",
    "ServerDetail": "model.views",
    "ServerRow": "model.views", "SiteRow": "model.views", "BlastRadius": "ops.power", "DISRUPTIVE": "ops.power",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__version__ = "0.1.0"

__all__ = [
    "DISRUPTIVE",
    "AuditRow",
    "AuthFailed",
    "BlastRadius",
    "ConflictError",
    "CredentialRow",
    "DeviceTimeout",
    "DeviceUnreachable",
    "DriverError",
    "FatalError",
    "Fleet",
    "FleetError",
    "IllegalTransition",
    "ImportFailed",
    "ImportResult",
    "InputError",
    "NicRow",
    "NotFound",
    "ProfileError",
    "RackRow",
    "RetryableError",
    "SecretError",
    "SelectorError",
    "ServerDetail",
    "ServerRow",
    "SiteRow",
    "Unsupported",
    "ValidationError",
    "current_actor",
]
