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

__all__ = ["cmdline_has", "environ_has", "pid_alive", "terminate"]


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
