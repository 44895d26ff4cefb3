"""PXE errors, in Rackfleet's one tree (see :mod:`fleet.errors`).

    FleetError
    ├── InputError (ValueError)
    │   ├── ValidationError               a value that would reach config text is refused (field, value)
    │   └── MissingBootFile (FileNotFoundError)   a boot loader or OS image to install is not on disk
    └── PxeError
        ├── TemplateError                 a template is missing or failed to render (never half-written)
        ├── InstallError (OSError)        the tree could not be written; the old tree is intact
        └── ServeError                    dnsmasq or the HTTP server could not start or stopped
"""

from __future__ import annotations

from fleet.errors import FleetError, InputError, ValidationError

__all__ = ["InstallError", "MissingBootFile", "PxeError", "ServeError", "TemplateError", "ValidationError"]


class PxeError(FleetError):
    """Base of the PXE package's own failures (not bad input)."""


class TemplateError(PxeError):
    """A template is missing or raised while rendering. Nothing is written when this is raised."""


class InstallError(PxeError, OSError):
    """Installing the tree failed; the previously installed tree is left as it was."""


class ServeError(PxeError):
    """dnsmasq or the HTTP server could not be started, or stopped unexpectedly."""


class MissingBootFile(InputError, FileNotFoundError):
    """A boot loader or an OS kernel/initrd the tree needs is not on disk (``path`` says where we looked)."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        super().__init__(message)
