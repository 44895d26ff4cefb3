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
from .service import Fleet, current_actor
from .views import AuditRow, CredentialRow, ImportResult, NicRow, RackRow, ServerDetail, ServerRow, SiteRow

__version__ = "0.1.0"

__all__ = [
    "AuditRow",
    "AuthFailed",
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
