"""Helpers shared by the benches: CPU accounting, external client runs, medians, tables.

CPU is counted where it is spent:

- our own code in this process: :func:`self_cpu` (``RUSAGE_SELF``, every thread);
- processes we started and still run (driver workers, simulators): :func:`proc_cpu` sums the run
  time of their threads from ``/proc/PID/task/TID/schedstat`` (nanoseconds). ``/proc/PID/stat``
  counts in 10 ms ticks, and many identical processes doing the same small work in lockstep (500
  ipmi_sim instances) cross tick boundaries together, so summing their tick deltas is badly biased;
  for the same reason the CPU of the children a process reaped (``cutime``) is not offered;
- short-lived external clients (``ipmitool``, FreeIPMI): :func:`children_cpu`
  (``RUSAGE_CHILDREN``), which grows when a child is reaped. Measure it around a window in which
  only those clients finish.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parent.parent
# The repository goes first, ahead of bench/ (a script's own directory): else bench/inventory.py
# would shadow the inventory package.
while str(REPO) in sys.path:
    sys.path.remove(str(REPO))
sys.path.insert(0, str(REPO))

T = TypeVar("T")
_TICK = os.sysconf("SC_CLK_TCK")
_HAVE_SCHEDSTAT = os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/schedstat")


# ---------------------------------------------------------------------------------------------
# CPU and wall time
# ---------------------------------------------------------------------------------------------


def self_cpu() -> float:
    """User + system CPU seconds of this process (all threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def children_cpu() -> float:
    """User + system CPU seconds of the children this process has reaped so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _stat_cpu(pid: int) -> float:
    """utime + stime of ``pid`` from ``/proc/PID/stat`` (10 ms ticks): the fallback without schedstat."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # fields 14 and 15 of proc(5)


def _threads_cpu(pid: int) -> float:
    """Run time of the live threads of ``pid`` (user + system), from their schedstat, in seconds."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                total += int(fh.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread just ended
    return total / 1e9


def proc_cpu_by_pid(pids: Iterable[int]) -> dict[int, float]:
    """CPU seconds per live PID (the run time of its live threads). A PID that has gone is left out."""
    out: dict[int, float] = {}
    for pid in pids:
        try:
            out[pid] = _threads_cpu(pid) if _HAVE_SCHEDSTAT else _stat_cpu(pid)
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
    return out


def proc_cpu(pids: Iterable[int]) -> float:
    """Total CPU seconds of the live ``pids`` (see :func:`proc_cpu_by_pid`)."""
    return sum(proc_cpu_by_pid(pids).values())


def cpu_delta(before: Mapping[int, float], after: Mapping[int, float]) -> float:
    """CPU spent between two :func:`proc_cpu_by_pid` samples; a PID new in ``after`` counts whole."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


@dataclass
class Timed:
    """Wall and client CPU seconds of one measured run."""

    wall: float
    cpu: float


def time_children(fn: Callable[[], T]) -> tuple[Timed, T]:
    """Run ``fn``; its wall time and the CPU of the child processes reaped meanwhile, and its result."""
    c0 = children_cpu()
    t0 = time.perf_counter()
    result = fn()
    wall = time.perf_counter() - t0
    return Timed(wall, children_cpu() - c0), result


# ---------------------------------------------------------------------------------------------
# External clients
# ---------------------------------------------------------------------------------------------


@dataclass
class ProcResult:
    returncode: int | None  # None: killed at the timeout, or could not start
    stdout: str
    stderr: str


def run_one(cmd: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 60.0) -> ProcResult:
    """Run one command to completion (killed at ``timeout``); never raises for its failure."""
    try:
        res = subprocess.run(list(cmd), env=dict(env) if env is not None else None, capture_output=True,
                             text=True, errors="replace", timeout=timeout, stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return ProcResult(None, out, f"killed after {timeout:g} s")
    except OSError as exc:
        return ProcResult(None, "", f"cannot run {cmd[0]}: {exc}")
    return ProcResult(res.returncode, res.stdout, res.stderr)


def run_many(cmds: Sequence[Sequence[str]], *, parallel: int, env: Mapping[str, str] | None = None,
             timeout: float = 60.0) -> list[ProcResult]:
    """One process per command, at most ``parallel`` at a time; results in order.

    ``subprocess.run`` kills and reaps a process that outlives ``timeout``, so nothing is left behind;
    on an interrupt the commands not started yet are dropped.
    """
    pool = ThreadPoolExecutor(max_workers=max(1, parallel))
    try:
        return list(pool.map(lambda c: run_one(c, env=env, timeout=timeout), cmds))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def tool_version(cmd: Sequence[str]) -> str:
    """The first line a ``--version``-style command prints, or ``?``."""
    res = run_one(cmd, timeout=10)
    text = (res.stdout or res.stderr).strip().splitlines()
    return text[0].strip() if text else "?"


# ---------------------------------------------------------------------------------------------
# Figures and tables
# ---------------------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def machine_summary() -> str:
    """CPU count, load averages and Python version, for the heading of a report."""
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} CPUs, load average {load}, Python {platform.python_version()}"


def fmt_seconds(s: float) -> str:
    if s != s:  # NaN
        return "-"
    if s >= 100:
        return f"{s:.0f} s"
    if s >= 10:
        return f"{s:.1f} s"
    return f"{s:.2f} s" if s >= 1 else f"{s:.3f} s"


def fmt_ms(s: float) -> str:
    """Seconds as milliseconds with sensible precision."""
    if s != s:
        return "-"
    ms = s * 1000
    return f"{ms:.0f} ms" if ms >= 100 else f"{ms:.1f} ms" if ms >= 10 else f"{ms:.2f} ms"


def fmt_ratio(x: float) -> str:
    if x != x or x == float("inf"):
        return "-"
    return f"{x:.0f}x" if x >= 100 else f"{x:.1f}x" if x >= 10 else f"{x:.2f}x"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, right: Iterable[int] = ()) -> str:
    """A plain-text table; columns whose index is in ``right`` are right-aligned."""
    right = set(right)
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


# ---------------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------------


def self_peak_rss_mib() -> float:
    """Peak resident set size of this process so far (``ru_maxrss``, KiB on Linux), MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def proc_peak_rss_mib(pid: int) -> float | None:
    """Peak resident set size (``VmHWM``) of a live process, MiB; None if it has gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return None
    return None
