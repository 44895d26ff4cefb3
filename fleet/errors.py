"""Rackfleet's errors, one tree for the library, the CLI and the TUI.

    FleetError
    ├── InputError (ValueError)            bad input from a person or a file: exit code 2
    │   ├── ValidationError                one field's value is refused (field, value, location)
    │   │   └── ImportFailed               an import was aborted; nothing was written
    │   ├── SelectorError                  a selector term cannot be parsed
    │   ├── ProfileError                   a hardware profile file is malformed or unknown
    │   ├── ConflictError                  a unique name, MAC, IP or rack unit is already taken
    │   └── IllegalTransition              a lifecycle move the state machine refuses
    ├── NotFound (LookupError)             no such server, rack, credential...: exit code 2
    ├── SecretError                        the encryption key is missing or does not fit: exit code 1
    ├── Unavailable                        this machine lacks what the command needs; says the remedy
    │   ├── MissingDependency              an optional program or Python package is not installed
    │   ├── PortInUse (OSError)            an address and port we must listen on is taken
    │   └── NeedsRoot (PermissionError)    the command needs root (or a capability) it does not have
    ├── Busy                               another writer holds the inventory; retry: exit code 75
    └── DriverError                        talking to a device failed (target, operation): exit code 1
        ├── RetryableError                 worth another try later
        │   ├── DeviceTimeout (TimeoutError)
        │   └── DeviceUnreachable (ConnectionError)
        └── FatalError                     retrying will not help
            ├── AuthFailed (PermissionError)
            └── Unsupported (NotImplementedError)

Every error carries enough context to be read alone: the target and operation for device
errors, the file:line and field for input errors.
"""

from __future__ import annotations

__all__ = [
    "AuthFailed",
    "Busy",
    "ConflictError",
    "DeviceTimeout",
    "DeviceUnreachable",
    "DriverError",
    "FatalError",
    "FleetError",
    "IllegalTransition",
    "ImportFailed",
    "InputError",
    "MissingDependency",
    "NeedsRoot",
    "NotFound",
    "PortInUse",
    "ProfileError",
    "RetryableError",
    "SecretError",
    "SelectorError",
    "Unavailable",
    "Unsupported",
    "ValidationError",
]


class FleetError(Exception):
    """Base of every error Rackfleet raises on purpose."""

    exit_code = 1


class InputError(FleetError, ValueError):
    """Bad input: a value, a file, a selector. Nothing was changed."""

    exit_code = 2


class ValidationError(InputError):
    """A field's value is refused.

    ``location`` is ``file:line`` (or a description of where the value came from) when known.
    """

    def __init__(self, message: str, *, field: str | None = None, value: object = None,
                 location: str | None = None) -> None:
        self.message = message
        self.field = field
        self.value = value
        self.location = location
        super().__init__(self._render())

    def _render(self) -> str:
        parts = []
        if self.location:
            parts.append(f"{self.location}:")
        if self.field:
            parts.append(f"{self.field}:")
        parts.append(self.message)
        return " ".join(parts)

    def at(self, location: str) -> ValidationError:
        """The same error, placed at ``location`` (kept if already placed)."""
        if self.location is None:
            self.location = location
            self.args = (self._render(),)
        return self


class ImportFailed(ValidationError):
    """An import was refused as a whole; the database is as it was before."""


class SelectorError(InputError):
    """A selector term cannot be parsed or names an unknown key."""


class ProfileError(InputError):
    """A hardware profile is malformed, or a name refers to no profile."""


class ConflictError(ValidationError):
    """A name, address or rack position is already taken (``field`` and ``location`` say which, where)."""


class IllegalTransition(InputError):
    """The lifecycle state machine refuses this move."""

    def __init__(self, hostname: str, from_state: str, to_state: str, allowed: list[str]) -> None:
        self.hostname = hostname
        self.from_state = from_state
        self.to_state = to_state
        self.allowed = allowed
        choices = ", ".join(allowed) if allowed else "none"
        super().__init__(
            f"{hostname}: cannot move from {from_state} to {to_state} (allowed from {from_state}: {choices})"
        )


class NotFound(FleetError, LookupError):
    """A named thing does not exist in the inventory."""

    exit_code = 2


class SecretError(FleetError):
    """The secret key is missing, unreadable, or does not decrypt this inventory's credentials."""


class Unavailable(FleetError):
    """This machine lacks something the command needs (a program, a package, a free port, root).

    An expected condition, not a bug: the message says what is missing and ``remedy`` how to get it,
    on one line (``"snmpsim is not installed: pip install 'rackfleet[lab]'"``).
    """

    def __init__(self, message: str, *, remedy: str = "") -> None:
        self.message = message
        self.remedy = remedy
        super().__init__(f"{message}: {remedy}" if remedy else message)


class MissingDependency(Unavailable):
    """An optional program or Python package is not installed."""


class PortInUse(Unavailable, OSError):
    """An address and port this command must listen on is taken by another process."""


class NeedsRoot(Unavailable, PermissionError):
    """The command needs root (or a capability such as binding port 623) that this process lacks."""


class Busy(FleetError):
    """Another writer held the inventory longer than we wait (the message says how long): retry later."""

    exit_code = 75  # EX_TEMPFAIL, as a sweep that finds another sweep running


class DriverError(FleetError):
    """Talking to a device failed. ``target`` is the device, ``operation`` what was asked of it."""

    def __init__(self, message: str, *, target: str | None = None, operation: str | None = None) -> None:
        self.target = target
        self.operation = operation
        prefix = " ".join(p for p in (target, operation) if p)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class RetryableError(DriverError):
    """A failure that may pass: a timeout, a lost packet, a busy device."""


class FatalError(DriverError):
    """A failure that retrying will not fix: bad credentials, an unsupported command."""


class DeviceTimeout(RetryableError, TimeoutError):
    """The device did not answer within its deadline."""


class DeviceUnreachable(RetryableError, ConnectionError):
    """The device refused the connection or the network has no route to it."""


class AuthFailed(FatalError, PermissionError):
    """The device refused our credentials."""


class Unsupported(FatalError, NotImplementedError):
    """The device or its driver cannot do what was asked."""
