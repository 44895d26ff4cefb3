"""Finding the programs and packages the lab runs, and saying in one line how to get one that is missing.

One lookup for every outside program (:func:`find_program`): the program's own folders first (for NUT
its libexec folders ``/lib/nut``, ``/usr/lib/nut``, where Debian puts ``upsd`` and the drivers), then
``PATH`` (``shutil.which``). ``FLEET_NUT_LIBEXEC`` replaces NUT's folders (``:``-separated; empty:
none), so a test or an operator can hide a NUT that is installed, or point at one built elsewhere.

:func:`require_program` and :func:`require_package` raise :class:`~fleet.errors.MissingDependency` with
the remedy (``error: the snmpsim-data package is not installed: pip install 'rackfleet[lab]'``).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from fleet.errors import MissingDependency

__all__ = ["LAB_EXTRA", "NUT_LIBEXEC_DIRS", "SBIN_DIRS", "find_program", "nut_dirs", "require_package",
           "require_program"]

#: Where NUT's own daemons and drivers live when they are not on PATH (Debian: /lib/nut; others /usr/lib/nut).
NUT_LIBEXEC_DIRS = ("/lib/nut", "/usr/lib/nut")
SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")
LAB_EXTRA = "pip install 'rackfleet[lab]'"


def nut_dirs() -> tuple[str, ...]:
    """NUT's libexec folders: ``$FLEET_NUT_LIBEXEC`` if set (``:``-separated), else :data:`NUT_LIBEXEC_DIRS`."""
    env = os.environ.get("FLEET_NUT_LIBEXEC")
    if env is None:
        return NUT_LIBEXEC_DIRS
    return tuple(d for d in env.split(":") if d)


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_program(name: str, *, extra_dirs: tuple[str, ...] = ()) -> str | None:
    """The path of program ``name``: in ``extra_dirs`` first, else on ``PATH``; None if absent.

    ``extra_dirs`` come first because NUT's ``/lib/nut/upsd`` is the daemon, while ``/usr/sbin/upsd`` on
    Debian is a wrapper that exits unless ``/etc/nut`` says otherwise: pass :func:`nut_dirs` for NUT, and
    ``SBIN_DIRS`` for daemons a user's PATH may lack (``sshd``).
    """
    for d in extra_dirs:
        if _executable(Path(d) / name):
            return str(Path(d) / name)
    return shutil.which(name)


def require_program(name: str, remedy: str, *, extra_dirs: tuple[str, ...] = ()) -> str:
    """:func:`find_program`, or :class:`MissingDependency` saying ``remedy`` (e.g. ``apt install nut-server``)."""
    found = find_program(name, extra_dirs=extra_dirs)
    if found is None:
        where = " or ".join(["PATH", *extra_dirs]) if extra_dirs else "PATH"
        raise MissingDependency(f"{name} is not installed (looked in {where})", remedy=remedy)
    return found


def require_package(module: str, distribution: str, remedy: str = LAB_EXTRA) -> None:
    """:class:`MissingDependency` unless Python module ``module`` (of ``distribution``) can be imported."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise MissingDependency(f"the {distribution} package is not installed", remedy=remedy)
