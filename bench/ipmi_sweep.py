"""IPMI sweeps at fleet scale: Rackfleet's driver side by side with FreeIPMI and ipmitool.

    .venv/bin/python bench/ipmi_sweep.py [--quick] [--rounds R] [--only a,b,c] [--json FILE]

Needs root (the BMCs listen on port 623 of their own loopback addresses), OpenIPMI ``ipmi_sim``,
``ipmitool`` and FreeIPMI (``ipmi-power``, ``ipmi-sensors``); a missing tool skips what needs it.
Everything runs on loopback, on this machine's cores, simulators included.

Target sets (each started, swept and stopped in turn):

- (a) N OpenIPMI ``ipmi_sim`` instances (``tests/ipmisim.py``), one per loopback address, suite 3;
- (b) N lab BMCs (``fleet.lab.bmcserver``, one process), suite 17;
- (c) M lab BMCs of which 2% are dead (lab fault ``dead``: they never answer), suite 17.

N = 500, M = 10,000 (``--quick``: 100 and 1,000). Per set, power status and sensors, with:

- **ours**: ``IpmiDriver().gather(method, targets)`` with the driver's defaults and a 5 s deadline
  per BMC. *cold* = a fresh driver (new sessions, empty SDR cache; the worker processes are started
  before the clock starts and their start-up is reported apart), *warm* = a second sweep on the same
  driver (persistent sessions, SDRs cached). Client CPU = the driver's worker processes + this one.
  On set (c) ours also runs with a 2 s deadline, FreeIPMI's bound on a dead BMC here, for a
  like-for-like comparison; the goals are judged on the default 5 s.
- **FreeIPMI** fan-out: ``ipmi-power --stat`` / ``ipmi-sensors`` with ``-h host1,host2,...``
  ``-F 32``, at most 1,000 hosts per run (it runs out of descriptors beyond), runs one after the
  other; dead BMCs bounded by ``--session-timeout=2000 --retransmission-timeout=250``.
  ``ipmi-sensors`` *cold* = empty ``--sdr-cache-directory``, *warm* = the cache the cold run filled.
- **ipmitool**: one ``ipmitool -I lanplus -N 1 -R 1`` process per BMC, 64 at a time
  (``chassis power status``, ``sdr``). On set (c) it runs on a 500-BMC sample (2% of it dead) and
  its wall time is extrapolated to the whole set, marked as such.

External clients' CPU = ``RUSAGE_CHILDREN`` over the run. Sets (a) and (b) run R rounds (default 3),
ours and FreeIPMI interleaved, medians reported; ipmitool and set (c) run once. Prints the figures,
the ratios and whether the goals of issue 3 are met; asserts nothing.

Goals (issue 3, this 2-core machine): 500 BMCs cold no slower than FreeIPMI's fan-out and >= 10x
faster than ipmitool; 10,000 BMCs' power state <= 60 s cold and <= 15 s warm with 2% dead BMCs;
sensors of 10,000 <= 3 min.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from _common import (  # first: it puts the repository on sys.path
    Timed,
    cpu_delta,
    fmt_ms,
    fmt_ratio,
    fmt_seconds,
    machine_summary,
    median,
    proc_cpu,
    proc_cpu_by_pid,
    run_many,
    run_one,
    self_cpu,
    table,
    time_children,
    tool_version,
)

from fleet.drivers.base import SensorReading, Target
from fleet.drivers.ipmi import IpmiDriver
from fleet.drivers.ipmi.pool import default_workers
from fleet.lab import bmcserver
from inventory.secrets import Secret

USER = "admin"
PASSWORD = "password"  # the lab's default and tests/ipmisim.py's
METHODS = {"power": "power_status", "sensors": "sensors"}
#: FreeIPMI's bound on a dead BMC here (``--session-timeout``), seconds.
FREEIPMI_SESSION_TIMEOUT_S = 2.0

# ---------------------------------------------------------------------------------------------
# What to run
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Plan:
    quick: bool
    small: int  # BMCs in sets (a) and (b)
    large: int  # BMCs in set (c)
    dead_fraction: float  # of set (c)
    rounds: int  # of ours and FreeIPMI on sets (a) and (b)
    ipmitool_sample: int  # BMCs ipmitool sweeps on set (c)
    parallel: int  # ipmitool processes at a time
    fanout: int  # FreeIPMI -F
    batch: int  # FreeIPMI hosts per run
    deadline: float  # ours: seconds per BMC operation
    only: frozenset[str]


def make_plan(args: argparse.Namespace) -> Plan:
    quick = args.quick
    return Plan(
        quick=quick,
        small=100 if quick else 500,
        large=1000 if quick else 10_000,
        dead_fraction=0.02,
        rounds=args.rounds,
        ipmitool_sample=100 if quick else 500,
        parallel=64,
        fanout=32,
        batch=1000,
        deadline=5.0,
        only=frozenset(args.only.split(",")) if args.only else frozenset("abc"),
    )


@dataclasses.dataclass
class TargetSet:
    """BMCs running somewhere on loopback, and how to reach them."""

    key: str  # a, b, c
    title: str
    hosts: list[str]
    suite: int  # the cipher suite every client uses
    dead: frozenset[int]  # indices into hosts
    server_pids: list[int]  # the simulator processes (their CPU is reported)
    rounds: int
    port: int = 623

    @property
    def n(self) -> int:
        return len(self.hosts)

    @property
    def live(self) -> int:
        return self.n - len(self.dead)

    def server_cpu(self) -> float:
        return proc_cpu(self.server_pids)

    def targets(self, deadline: float) -> list[Target]:
        suites = (3,) if self.suite == 3 else (17, 3)
        secret = Secret(PASSWORD)
        return [Target(name=f"{self.key}{i}", host=h, port=self.port, username=USER, password=secret,
                       timeout=deadline, options={"cipher_suites": suites}) for i, h in enumerate(self.hosts)]


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    """One sweep: wall and client CPU seconds, simulator CPU, answers from live BMCs."""

    wall: float
    cpu: float
    server_cpu: float
    ok: int
    failures: list[str]  # live BMCs that failed (a few, as examples)
    failed: int  # live BMCs that failed (all)


@dataclasses.dataclass
class Row:
    """The runs of one (target set, method, client, mode)."""

    set_key: str
    method: str  # power | sensors
    client: str  # ours | freeipmi | ipmitool
    label: str
    mode: str  # cold | warm
    n: int  # BMCs in the set
    expected: int  # live BMCs swept per run
    swept: int  # BMCs swept per run (the sample, for an extrapolated row)
    runs: list[Run] = dataclasses.field(default_factory=list)
    extrapolated: bool = False
    note: str = ""

    @property
    def wall(self) -> float:
        """Median wall seconds, extrapolated to the whole set for a sampled row."""
        return median([r.wall for r in self.runs]) * (self.n / self.swept if self.extrapolated else 1)

    @property
    def cpu_per_bmc(self) -> float:
        return median([r.cpu for r in self.runs]) / self.swept

    @property
    def server_cpu(self) -> float:
        return median([r.server_cpu for r in self.runs]) * (self.n / self.swept if self.extrapolated else 1)

    @property
    def ok(self) -> int:
        return min(r.ok for r in self.runs)  # the worst run

    @property
    def all_answered(self) -> bool:
        return all(r.failed == 0 and r.ok == self.expected for r in self.runs)

    def spread(self) -> str:
        if len(self.runs) < 2:
            return ""
        walls = [r.wall for r in self.runs]
        digits = 2 if min(walls) >= 1 else 3
        return f"{min(walls):.{digits}f}-{max(walls):.{digits}f}"

    def as_dict(self) -> dict[str, object]:
        return {**{k: v for k, v in dataclasses.asdict(self).items() if k != "runs"},
                "runs": [dataclasses.asdict(r) for r in self.runs], "wall_s": self.wall,
                "cpu_per_bmc_s": self.cpu_per_bmc, "ok_worst": self.ok}


class Results:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str, str, str], Row] = {}
        self.sets: dict[str, TargetSet] = {}
        self.notes: dict[str, list[str]] = {}
        self.startups: list[float] = []  # ours: seconds for the worker processes to start

    def row(self, ts: TargetSet, method: str, client: str, label: str, mode: str, *,
            swept: int | None = None, expected: int | None = None) -> Row:
        key = (ts.key, method, client, mode)
        if key not in self.rows:
            self.rows[key] = Row(ts.key, method, client, label, mode, ts.n,
                                 expected if expected is not None else ts.live, swept or ts.n,
                                 extrapolated=swept is not None and swept < ts.n)
        return self.rows[key]

    def get(self, set_key: str, method: str, client: str, mode: str) -> Row | None:
        row = self.rows.get((set_key, method, client, mode))
        return row if row is not None and row.runs else None

    def note(self, set_key: str, text: str) -> None:
        self.notes.setdefault(set_key, []).append(text)


T0 = time.monotonic()


def progress(text: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {text}", file=sys.stderr, flush=True)


def _record(row: Row, run: Run) -> None:
    row.runs.append(run)
    progress(f"({row.set_key}) {row.method:7s} {row.label:32s} {row.mode:10s} {run.wall:8.2f} s  "
             f"cpu {fmt_ms(run.cpu / row.swept)}/BMC  ok {run.ok}/{row.expected}"
             + (f"  e.g. {run.failures[0][:100]}" if run.failures else ""))


# ---------------------------------------------------------------------------------------------
# Ours: IpmiDriver
# ---------------------------------------------------------------------------------------------


def _answer_ok(method: str, result: object) -> bool:
    if method == "power":
        return result in ("on", "off")
    return isinstance(result, list) and bool(result) and all(isinstance(s, SensorReading) for s in result)


def _judge(ts: TargetSet, method: str, results: Sequence[object]) -> tuple[int, int, list[str]]:
    ok = failed = 0
    examples: list[str] = []
    for i, result in enumerate(results):
        if i in ts.dead:
            continue
        if _answer_ok(method, result):
            ok += 1
        else:
            failed += 1
            if len(examples) < 3:
                what = f"{type(result).__name__}: {result}" if isinstance(result, BaseException) else repr(result)
                examples.append(f"{ts.hosts[i]}: {what}"[:200])
    return ok, failed, examples


async def _ours_round(ts: TargetSet, method: str, plan: Plan, results: Results, deadline: float,
                      client: str) -> None:
    targets = ts.targets(deadline)
    driver = IpmiDriver()
    try:
        t0 = time.perf_counter()
        await driver.start()
        results.startups.append(time.perf_counter() - t0)
        for mode in ("cold", "warm"):
            restarts0 = driver.stats()["restarts"]
            server0 = ts.server_cpu()
            workers0 = proc_cpu_by_pid(driver.pool.pids())
            self0 = self_cpu()
            t = time.perf_counter()
            answers = await driver.gather(METHODS[method], targets)
            wall = time.perf_counter() - t
            cpu = cpu_delta(workers0, proc_cpu_by_pid(driver.pool.pids())) + self_cpu() - self0
            server = ts.server_cpu() - server0
            ok, failed, examples = _judge(ts, method, answers)
            label = f"rackfleet IpmiDriver ({driver.pool.size} proc)"
            if deadline != plan.deadline:
                label += f", {deadline:g} s deadline"
            row = results.row(ts, method, client, label, mode)
            restarts = driver.stats()["restarts"] - restarts0
            if restarts:
                row.note = f"{restarts} worker restart(s): the CPU of a replaced worker is not counted"
            _record(row, Run(wall, cpu, server, ok, examples, failed))
    finally:
        await driver.aclose()


def ours_round(ts: TargetSet, method: str, plan: Plan, results: Results, *, deadline: float | None = None,
               client: str = "ours") -> None:
    """A fresh driver: a cold sweep, then a warm one on the same driver."""
    asyncio.run(_ours_round(ts, method, plan, results, deadline or plan.deadline, client))


# ---------------------------------------------------------------------------------------------
# FreeIPMI: one process fanning out over many hosts
# ---------------------------------------------------------------------------------------------

_HOST_LINE = re.compile(r"^(\d+\.\d+\.\d+\.\d+): (.*)$")
_SENSOR_ROW = re.compile(r"^\d+\s*\|")


def _freeipmi_common(ts: TargetSet, plan: Plan) -> list[str]:
    return ["-u", USER, "-p", PASSWORD, "-D", "LAN_2_0", "-W", "opensesspriv", "-I", str(ts.suite),
            "-l", "ADMIN", "-F", str(plan.fanout), f"--session-timeout={FREEIPMI_SESSION_TIMEOUT_S * 1000:.0f}",
            "--retransmission-timeout=250"]


def _batches(hosts: Sequence[str], size: int) -> list[list[str]]:
    return [list(hosts[i:i + size]) for i in range(0, len(hosts), size)]


def _freeipmi_run(ts: TargetSet, plan: Plan, tool: str, extra: Sequence[str],
                  answered: re.Pattern[str] | None) -> tuple[Timed, float, int, int, list[str]]:
    """Run ``tool`` over every host of ``ts`` in batches, one after the other.

    A host counts as answered when a ``host: ...`` line of its stdout matches ``answered`` (or,
    when that is None, ``host: on|off``).
    """
    cmds = [[tool, "-h", ",".join(batch), *_freeipmi_common(ts, plan), *extra]
            for batch in _batches(ts.hosts, plan.batch)]
    server0 = ts.server_cpu()
    timed, outs = time_children(lambda: [run_one(c, timeout=900) for c in cmds])
    server = ts.server_cpu() - server0
    good: set[str] = set()
    messages: dict[str, str] = {}
    for out in outs:
        for line in out.stdout.splitlines():
            m = _HOST_LINE.match(line)
            if not m:
                continue
            host, rest = m.groups()
            if (answered.match(rest) if answered else rest.strip() in ("on", "off")):
                good.add(host)
            else:
                messages.setdefault(host, rest.strip())
        for line in out.stderr.splitlines():
            m = _HOST_LINE.match(line)
            if m:
                messages.setdefault(m.group(1), m.group(2).strip())
        if out.returncode is None:
            messages.setdefault("*", out.stderr)
    live = [h for i, h in enumerate(ts.hosts) if i not in ts.dead]
    ok = sum(1 for h in live if h in good)
    missing = [h for h in live if h not in good]
    examples = [f"{h}: {messages.get(h, 'no answer line')}"[:200] for h in missing[:3]]
    return timed, server, ok, len(missing), examples


def freeipmi_power_round(ts: TargetSet, plan: Plan, results: Results) -> None:
    timed, server, ok, failed, examples = _freeipmi_run(ts, plan, "ipmi-power", ["--stat"], None)
    row = results.row(ts, "power", "freeipmi", f"FreeIPMI ipmi-power -F{plan.fanout}", "cold")
    _record(row, Run(timed.wall, timed.cpu, server, ok, examples, failed))


def freeipmi_sensors_round(ts: TargetSet, plan: Plan, results: Results) -> None:
    with tempfile.TemporaryDirectory(prefix="ipmi-sweep-sdr-") as cache:
        for mode in ("cold", "warm"):
            timed, server, ok, failed, examples = _freeipmi_run(
                ts, plan, "ipmi-sensors", ["--sdr-cache-directory", cache, "--quiet-cache"], _SENSOR_ROW)
            row = results.row(ts, "sensors", "freeipmi", f"FreeIPMI ipmi-sensors -F{plan.fanout}", mode)
            row.note = "cold = empty SDR cache, warm = filled SDR cache; new sessions both times"
            _record(row, Run(timed.wall, timed.cpu, server, ok, examples, failed))


# ---------------------------------------------------------------------------------------------
# ipmitool: one process per BMC
# ---------------------------------------------------------------------------------------------


def ipmitool_sample(ts: TargetSet, size: int, seed: int = 7) -> list[int]:
    """Indices of ``size`` BMCs of ``ts`` with the set's share of dead ones (all of them if it is small)."""
    if size >= ts.n:
        return list(range(ts.n))
    rng = random.Random(seed)
    dead = sorted(ts.dead)
    live = [i for i in range(ts.n) if i not in ts.dead]
    n_dead = round(size * len(dead) / ts.n)
    return sorted(rng.sample(dead, n_dead) + rng.sample(live, size - n_dead))


def ipmitool_sweep(ts: TargetSet, method: str, plan: Plan, results: Results) -> None:
    indices = ipmitool_sample(ts, plan.ipmitool_sample)
    args = ["chassis", "power", "status"] if method == "power" else ["sdr"]
    cmds = [["ipmitool", "-I", "lanplus", "-C", str(ts.suite), "-H", ts.hosts[i], "-p", str(ts.port),
             "-U", USER, "-E", "-N", "1", "-R", "1", *args] for i in indices]
    env = {**os.environ, "IPMI_PASSWORD": PASSWORD}
    server0 = ts.server_cpu()
    timed, outs = time_children(lambda: run_many(cmds, parallel=plan.parallel, env=env, timeout=60))
    server = ts.server_cpu() - server0
    ok = failed = 0
    examples: list[str] = []
    for i, out in zip(indices, outs, strict=True):
        if i in ts.dead:
            continue
        good = out.returncode == 0 and (re.search(r"Chassis Power is (on|off)", out.stdout) if method == "power"
                                        else "|" in out.stdout)
        if good:
            ok += 1
        else:
            failed += 1
            if len(examples) < 3:
                examples.append(f"{ts.hosts[i]}: rc {out.returncode}: {out.stderr.strip()[:150]}")
    label = f"ipmitool x{plan.parallel} " + ("power status" if method == "power" else "sdr")
    expected = sum(1 for i in indices if i not in ts.dead)
    row = results.row(ts, method, "ipmitool", label, "cold", swept=len(indices), expected=expected)
    if row.extrapolated:
        row.note = (f"wall extrapolated x{ts.n / len(indices):g} from a {len(indices)}-BMC sample "
                    f"({len(indices) - expected} dead)")
    _record(row, Run(timed.wall, timed.cpu, server, ok, examples, failed))


# ---------------------------------------------------------------------------------------------
# Sweeping one target set
# ---------------------------------------------------------------------------------------------


def sweep(ts: TargetSet, plan: Plan, results: Results, tools: dict[str, bool]) -> None:
    results.sets[ts.key] = ts
    progress(f"({ts.key}) {ts.title}: {ts.n} BMCs, {len(ts.dead)} dead, {ts.rounds} round(s)")
    for method in ("power", "sensors"):
        for _ in range(ts.rounds):
            ours_round(ts, method, plan, results)
            if tools["freeipmi"]:
                (freeipmi_power_round if method == "power" else freeipmi_sensors_round)(ts, plan, results)
        if ts.dead:
            # A dead BMC costs ours its deadline and FreeIPMI its 2 s session timeout: also run ours
            # with that bound, for a like-for-like comparison (the goals use the default deadline).
            ours_round(ts, method, plan, results, deadline=FREEIPMI_SESSION_TIMEOUT_S, client="ours-bound")
        if tools["ipmitool"]:
            ipmitool_sweep(ts, method, plan, results)


@contextlib.contextmanager
def sim_set(plan: Plan) -> Iterator[TargetSet]:
    """Set (a): ``plan.small`` ipmi_sim instances, stopped by PID and removed on exit (the harness does)."""
    from tests.ipmisim import ipmi_sim

    t = time.monotonic()
    with ipmi_sim(plan.small, start_timeout=180.0) as sims:
        progress(f"(a) {len(sims)} ipmi_sim instances ready in {time.monotonic() - t:.1f} s")
        yield TargetSet("a", f"{len(sims)} OpenIPMI ipmi_sim instances, cipher suite 3",
                        [s.host for s in sims], 3, frozenset(), [s.pid for s in sims], plan.rounds)


@contextlib.contextmanager
def lab_set(key: str, n: int, dead_fraction: float, rounds: int) -> Iterator[TargetSet]:
    """Sets (b) and (c): ``n`` lab BMCs in one server process, ``dead_fraction`` of them dead."""
    root = Path(tempfile.mkdtemp(prefix="ipmi-sweep-lab-"))
    state = root / "st"
    pid: int | None = None
    try:
        rng = random.Random(1)
        for attempt in range(3):  # another lab may hold these addresses: move elsewhere
            second = 200 + (ord(key) - ord("a")) if attempt == 0 else rng.randrange(100, 250)
            hosts = bmcserver.loopback_hosts(n, f"127.{second}.0.1")
            spec = root / "spec.json"
            spec.write_text(json.dumps({"defaults": {"password": PASSWORD},
                                        "bmcs": [{"name": f"{key}{i}", "host": h} for i, h in enumerate(hosts)]}))
            try:
                t = time.monotonic()
                pid = bmcserver.start(spec, state)
                break
            except bmcserver.LabStartError as exc:
                if attempt == 2:
                    raise
                progress(f"({key}) lab start failed on 127.{second}.x ({str(exc).splitlines()[0]}); moving")
        assert pid is not None
        dead = frozenset(random.Random(2).sample(range(n), round(n * dead_fraction)))
        for i in sorted(dead):
            bmcserver.lab_control(state, {"op": "fault", "bmc": f"{key}{i}", "kind": "dead"})
        progress(f"({key}) lab of {n} BMCs ready in {time.monotonic() - t:.1f} s (pid {pid}, {len(dead)} dead)")
        dead_text = f", {len(dead)} dead ({dead_fraction:.0%}, lab fault 'dead')" if dead else ""
        yield TargetSet(key, f"{n:,} lab BMCs (fleet.lab, one process), cipher suite 17{dead_text}",
                        hosts, 17, dead, [pid], rounds)
    finally:
        if pid is not None:
            bmcserver.stop(state, pid=pid)
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------

_ORDER = [(method, client, mode) for method in ("power", "sensors")
          for client, mode in (("ours", "cold"), ("ours", "warm"), ("ours-bound", "cold"), ("ours-bound", "warm"),
                               ("freeipmi", "cold"), ("freeipmi", "warm"), ("ipmitool", "cold"))]


def _ratio_text(ours: Row, other: Row | None, name: str) -> str:
    if other is None:
        return f"vs {name}: not run"
    wall = other.wall / ours.wall
    cpu = other.cpu_per_bmc / ours.cpu_per_bmc
    return (f"vs {name}: wall {fmt_ratio(wall)} ({'ours faster' if wall >= 1 else 'ours SLOWER'}), "
            f"CPU/BMC {fmt_ratio(cpu)}{' (ours less)' if cpu >= 1 else ' (ours MORE)'}")


def report_set(ts: TargetSet, results: Results) -> str:
    lines = [f"({ts.key}) {ts.title}; "
             + (f"median of {ts.rounds} rounds (ipmitool: 1 run)" if ts.rounds > 1 else "1 run")]
    rows = []
    extra_notes: list[str] = []
    for method, client, mode in _ORDER:
        row = results.get(ts.key, method, client, mode)
        if row is None:
            continue
        mode_text = ("cold cache" if mode == "cold" else "warm cache") if client == "freeipmi" and method == "sensors" \
            else mode
        wall = fmt_seconds(row.wall) + (" *" if row.extrapolated else "")
        rows.append([method, row.label, mode_text, wall, row.spread(), fmt_ms(row.cpu_per_bmc),
                     f"{row.ok}/{row.expected}", fmt_seconds(row.server_cpu)])
        if row.note and client != "freeipmi":
            extra_notes.append(f"  {'*' if row.extrapolated else '-'} {method} {row.label}: {row.note}")
        for run in row.runs:
            for example in run.failures[:1]:
                extra_notes.append(f"  ! {method} {row.label} {mode}: {run.failed} live BMC(s) failed, e.g. {example}")
                break
    lines.append(table(["method", "client", "mode", "wall", "min-max", "CPU/BMC", "ok/live", "sim CPU"], rows,
                       right=(3, 4, 5, 6, 7)))
    lines += sorted(set(extra_notes), key=extra_notes.index)
    lines.append("  ratios (other/ours; > 1 means ours is better):")
    for client in ("ours", "ours-bound"):
        for method in ("power", "sensors"):
            for mode in ("cold", "warm"):
                ours = results.get(ts.key, method, client, mode)
                if ours is None:
                    continue
                fi_mode = mode if method == "sensors" else "cold"
                fi_name = "FreeIPMI" + ((" (empty SDR cache)" if mode == "cold" else " (filled SDR cache)")
                                        if method == "sensors" else "" if mode == "cold" else " (cold: no persistence)")
                parts = [_ratio_text(ours, results.get(ts.key, method, "freeipmi", fi_mode), fi_name)]
                if mode == "cold":
                    parts.append(_ratio_text(ours, results.get(ts.key, method, "ipmitool", "cold"), "ipmitool"))
                who = "" if client == "ours" else f" ({FREEIPMI_SESSION_TIMEOUT_S:g} s deadline)"
                lines.append(f"    {method:7s} {mode}{who}: " + "; ".join(parts))
    for text in results.notes.get(ts.key, []):
        lines.append(f"  note: {text}")
    return "\n".join(lines)


def goals(results: Results) -> list[tuple[str, str, str]]:
    """(verdict, goal, evidence) per goal of issue 3."""
    out: list[tuple[str, str, str]] = []

    def verdict(met: bool | None) -> str:
        return "n/a" if met is None else "MET" if met else "NOT MET"

    for key in ("a", "b"):
        ts = results.sets.get(key)
        if ts is None:
            continue
        where = f"{ts.n} {'ipmi_sim' if key == 'a' else 'lab BMCs'}"
        for method in ("power", "sensors"):
            ours = results.get(key, method, "ours", "cold")
            if ours is None:
                continue
            fi = results.get(key, method, "freeipmi", "cold")
            tool = results.get(key, method, "ipmitool", "cold")
            answered = ours.all_answered
            met = None if fi is None else (ours.wall <= fi.wall and answered)
            ev = "FreeIPMI not run" if fi is None else (
                f"ours {fmt_seconds(ours.wall)} vs FreeIPMI {fmt_seconds(fi.wall)}"
                f" ({fmt_ratio(fi.wall / ours.wall)})"
                + (f" [ranges: ours {ours.spread()}, FreeIPMI {fi.spread()}]" if len(ours.runs) > 1 else "")
                + f"; ours ok {ours.ok}/{ours.expected}")
            out.append((verdict(met), f"{where}, {method} cold: no slower than FreeIPMI's fan-out", ev))
            met = None if tool is None else (tool.wall >= 10 * ours.wall and answered)
            ev = "ipmitool not run" if tool is None else (
                f"ours {fmt_seconds(ours.wall)} vs ipmitool {fmt_seconds(tool.wall)}: "
                f"{fmt_ratio(tool.wall / ours.wall)}")
            out.append((verdict(met), f"{where}, {method} cold: >= 10x faster than ipmitool", ev))
    ts = results.sets.get("c")
    if ts is not None:
        where = f"{ts.n:,} lab BMCs ({len(ts.dead)} dead)"
        for method, mode, limit in (("power", "cold", 60.0), ("power", "warm", 15.0),
                                    ("sensors", "cold", 180.0), ("sensors", "warm", 180.0)):
            ours = results.get("c", method, "ours", mode)
            if ours is None:
                continue
            met = ours.wall <= limit and ours.all_answered
            ev = (f"{fmt_seconds(ours.wall)}; live BMCs answered {ours.ok}/{ours.expected}, "
                  f"dead reported as errors")
            what = "power state" if method == "power" else "sensors"
            out.append((verdict(met), f"{where}, {what} {mode} <= {fmt_seconds(limit)}", ev))
    return out


def report(results: Results, plan: Plan, header: list[str]) -> str:
    lines = ["", "=" * 100, *header, ""]
    lines.append("Columns: wall = median wall time of the sweep (* = extrapolated from a sample); min-max over "
                 "rounds; CPU/BMC = client CPU per BMC (ours: driver worker processes + this process; others: "
                 "their processes); ok/live = live BMCs that answered, worst round; sim CPU = the simulator processes' "
                 "own CPU during the sweep (for ipmi_sim without the chassis-control script it forks for "
                 "every power query, ~2-3 ms each, which makes ipmi_sim's power sweeps simulator-bound).")
    for key in ("a", "b", "c"):
        ts = results.sets.get(key)
        if ts is not None:
            lines += ["", report_set(ts, results)]
    lines += ["", "Goals (issue 3; the simulators share this machine's cores):"]
    if plan.quick:
        lines.append(f"  (quick run: {plan.small} / {plan.large:,} BMCs instead of 500 / 10,000: indicative only)")
    for v, goal, ev in goals(results):
        lines.append(f"  [{v:7s}] {goal}: {ev}")
    lines.append(f"\nTotal bench time {time.monotonic() - T0:.0f} s; {machine_summary()} at the end.")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 and 1,000 BMCs (~2 minutes)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of ours and FreeIPMI on the small sets")
    parser.add_argument("--only", default="", help="target sets to run, e.g. 'a,b' (default: a,b,c)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.only and not set(args.only.split(",")) <= set("abc"):
        parser.error("--only takes a comma-separated subset of a, b, c")
    plan = make_plan(args)

    if os.geteuid() != 0:
        print("ipmi_sweep needs root: the simulated BMCs listen on port 623 of their own loopback addresses",
              file=sys.stderr)
        return 2
    tools = {"ipmi_sim": shutil.which("ipmi_sim") is not None, "ipmitool": shutil.which("ipmitool") is not None,
             "freeipmi": shutil.which("ipmi-power") is not None and shutil.which("ipmi-sensors") is not None}
    from importlib.metadata import version

    header = [
        f"IPMI sweep bench ({'quick' if plan.quick else 'full'}): {machine_summary()} at the start",
        f"ours: fleet.drivers.ipmi.IpmiDriver, pyghmi {version('pyghmi')}, {default_workers()} worker processes, "
        f"128 in flight each, deadline {plan.deadline:g} s per BMC; suites [3] on ipmi_sim, [17, 3] on the lab",
        "FreeIPMI: " + (tool_version(["ipmi-power", "--version"]) if tools["freeipmi"] else "not installed")
        + f"; -D LAN_2_0 -W opensesspriv -l ADMIN -F {plan.fanout}, <= {plan.batch} hosts per run, "
          "--session-timeout=2000 --retransmission-timeout=250",
        "ipmitool: " + (tool_version(["ipmitool", "-V"]) if tools["ipmitool"] else "not installed")
        + f"; -I lanplus -N 1 -R 1, one process per BMC, {plan.parallel} at a time",
        "ipmi_sim: " + (tool_version(["ipmi_sim", "--version"]).replace("Unable to open", "").strip()
                        if tools["ipmi_sim"] else "not installed"),
    ]
    for line in header:
        progress(line)

    results = Results()
    try:
        if "a" in plan.only:
            if tools["ipmi_sim"]:
                with sim_set(plan) as ts:
                    sweep(ts, plan, results, tools)
            else:
                progress("(a) skipped: OpenIPMI ipmi_sim is not installed")
        if "b" in plan.only:
            with lab_set("b", plan.small, 0.0, plan.rounds) as ts:
                sweep(ts, plan, results, tools)
        if "c" in plan.only:
            with lab_set("c", plan.large, plan.dead_fraction, 1) as ts:
                sweep(ts, plan, results, tools)
    finally:
        if results.startups:
            header.append(f"ours: worker start-up before each cold sweep (not in the figures): median "
                          f"{fmt_seconds(median(results.startups))} (max {fmt_seconds(max(results.startups))})")
        print(report(results, plan, header), flush=True)
        if args.json:
            args.json.write_text(json.dumps({
                "plan": dataclasses.asdict(plan) | {"only": sorted(plan.only)},
                "rows": [r.as_dict() for r in results.rows.values()],
                "goals": [{"verdict": v, "goal": g, "evidence": e} for v, g, e in goals(results)],
            }, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
