"""Processes the lab starts: is one still ours, and stop it by PID (never by name).

A PID file can outlive its process and the PID be reused by a stranger, so every stop first checks
that the process is one of ours (a marker in its command line or environment), then sends SIGTERM,
waits, and sends SIGKILL to one that lingers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["cmdline_has", "environ_has", "pid_alive", "read_start_error", "terminate", "write_start_error"]


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            return False
    return True


def cmdline_has(pid: int, marker: bytes) -> bool:
    try:
        return marker in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def environ_has(pid: int, entry: bytes) -> bool:
    """Whether ``entry`` (``NAME=value``) is one of the process's environment variables."""
    try:
        return entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def terminate(pid: int, is_ours: Callable[[int], bool], *, timeout: float = 10.0, poll: float = 0.05) -> bool:
    """SIGTERM ``pid`` if it runs and ``is_ours(pid)``; SIGKILL after ``timeout``. False if nothing ran."""
    if not pid_alive(pid) or not is_ours(pid):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        if not pid_alive(pid):
            return True
        time.sleep(poll)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    return True


# A background process that cannot start for an expected reason (a port taken, no root) says which
# in a small JSON file, so the process that started it raises the same FleetError class, not a log tail.
_EXPECTED = ("PortInUse", "NeedsRoot", "MissingDependency")


def write_start_error(path: Path, exc: BaseException) -> None:
    """Record why this process could not start: its error class (if an expected one), message and remedy."""
    import json

    name = type(exc).__name__
    kind = next((c.__name__ for c in type(exc).__mro__ if c.__name__ in _EXPECTED), name)
    doc = {"class": kind, "message": getattr(exc, "message", str(exc)), "remedy": getattr(exc, "remedy", "")}
    with contextlib.suppress(OSError):
        path.write_text(json.dumps(doc))


def read_start_error(path: Path) -> Exception | None:
    """The error :func:`write_start_error` recorded at ``path`` (removed), as its class; None if none
    or not an expected condition."""
    import json

    from fleet import errors

    try:
        doc = json.loads(path.read_text())
        path.unlink()
    except (OSError, ValueError):
        return None
    if doc.get("class") not in _EXPECTED:
        return None
    cls = getattr(errors, doc["class"])
    return cls(str(doc.get("message", "")), remedy=str(doc.get("remedy", "")))
