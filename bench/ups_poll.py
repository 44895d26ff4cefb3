"""UPS polling at fleet scale: Rackfleet's SNMP and NUT clients side by side with ``snmpget`` and ``upsc``.

    .venv/bin/python bench/ups_poll.py [--quick] [--rounds R]

Needs root (the snmpd fleet listens on port 161 of thousands of loopback addresses), net-snmp
(``snmpd``, ``snmpget``), snmpsim with snmpsim-data, and NUT (``/lib/nut/upsd``, ``dummy-ups``,
``upsc``). Everything runs on loopback, on this machine's cores, agents included.

A *poll* reads one UPS: for SNMP, one GET of the same 7 RFC 1628 objects (charge, runtime, battery
status, output source, battery temperature, input voltage, load) and their conversion; for NUT, the
whole UPS (``LIST VAR``, what ``upsc NAME@HOST`` prints). Target sets, each started, polled and
stopped in turn:

- (a) N UPSes on one snmpsim agent (``fleet.lab.snmplab.start_snmpsim``, RFC 1628 recordings of a
  Phoenixtec and an Eaton 93E through our per-device variation module); community = device name;
- (b) M UPSes on one net-snmp ``snmpd`` listening on M loopback addresses
  (``start_snmpd_fleet``), community ``public``;
- (c) K per-server UPSes on a NUT lab (``fleet.lab.nutlab``: one ``dummy-ups`` process per UPS behind
  one ``upsd``).

N, M, K = 1,000, 10,000, 1,000 (``--quick``: 300, 3,000, 300). Clients:

- **ours**: ``SnmpDriver(max_inflight=64 | 128).gather("battery", targets)`` with a profile of the 7
  objects (``generic-ups-mib`` cut down to them), 1 s per attempt, 1 retry. *cold* = the first sweep
  of a fresh driver (no sockets, no per-target state), *warm* = later sweeps of the same driver
  (median of R, default 3; quick 2). On (a) an untimed-for-goals *agent-cold* sweep comes first:
  snmpsim opens every device's files on its first request, which is the agent's cost, not the client's.
  On (c), ``NutDriver().battery()`` for every UPS at once (2 pipelined connections).
- **snmpget**: one ``snmpget -v2c -t 1 -r 1 -On -Oq`` process per UPS asking the same 7 OIDs, 64 and 128
  processes at once. On (b) it polls an evenly spread sample (1,000; quick 500) and its wall time is
  extrapolated to all M, marked ``*``.
- **upsc**: one ``upsc NAME@127.0.0.1:PORT`` process per UPS, 64 and 128 at once.

Client CPU: ours = this process's CPU (``RUSAGE_SELF``) over the sweep; snmpget/upsc = ``RUSAGE_CHILDREN``
over their run (the CPU this process spends starting them is shown apart, as *spawn CPU*, and left
out of the ratios). Agent CPU = the snmpsim / snmpd / upsd process over the same window.

Memory: what NUT needs to serve per-server UPSes, one driver process per UPS (``nut_memory()`` on the
lab: RSS, PSS and private memory per ``dummy-ups``, and ``upsd``), extrapolated to 10,000 UPSes,
against the resident memory of this one process after polling set (b).

Goals (issue 4, this 2-core machine): client CPU <= 4 ms per poll; 10,000 UPSes polled within 60 s
using at most one core (CPU seconds / wall <= 1.0); at least 2x less client CPU than snmpget. Prints
the figures, the ratios and whether the goals are met; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import Any

from _common import (  # first: it puts the repository on sys.path
    ProcResult,
    children_cpu,
    fmt_ms,
    fmt_ratio,
    fmt_seconds,
    machine_summary,
    median,
    proc_cpu,
    run_many,
    self_cpu,
    table,
    tool_version,
)

from fleet.drivers.base import BatteryStatus, Target
from fleet.drivers.nut import NutDriver
from fleet.drivers.snmp import SnmpDriver
from fleet.lab import nutlab, snmplab
from fleet.profiles import Profile, load_profiles
from inventory.secrets import Secret

T0 = time.monotonic()
INFLIGHT = (64, 128)
#: The 7 RFC 1628 readings of a poll, in the generic-ups-mib profile's names.
POLL_METRICS = ("battery_charge", "battery_runtime", "battery_status", "output_source", "battery_temperature",
                "input_voltage", "output_load")
SNMPSIM_MODELS = ("ietf-ups", "eaton-93e")  # both answer the RFC 1628 objects
SNMP_TIMEOUT_S = 1.0
SNMP_RETRIES = 1
NUT_TIMEOUT_S = 30.0
FLEET = 10_000  # the fleet size of the goals and of the memory extrapolation
GOAL_CPU_MS = 4.0
GOAL_WALL_S = 60.0
GOAL_CORES = 1.0
GOAL_VS_SNMPGET = 2.0


def progress(text: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {text}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# What to run
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Plan:
    quick: bool
    snmpsim: int  # UPSes on snmpsim, set (a)
    snmpd: int  # UPSes on the snmpd fleet, set (b)
    snmpget_sample: int  # of set (b)
    nut: int  # UPSes in the NUT lab, set (c)
    rounds: int  # warm sweeps of ours per driver


def make_plan(args: argparse.Namespace) -> Plan:
    quick = args.quick
    return Plan(quick=quick, snmpsim=300 if quick else 1000, snmpd=3000 if quick else FLEET,
                snmpget_sample=500 if quick else 1000, nut=300 if quick else 1000,
                rounds=args.rounds if args.rounds is not None else (2 if quick else 3))


def poll_profile() -> Profile:
    """``generic-ups-mib`` cut down to the 7 objects of a poll (the same ones snmpget asks for)."""
    base = load_profiles().get("generic-ups-mib")
    assert base.snmp is not None
    metrics = {m: base.snmp.metrics[m] for m in POLL_METRICS}
    return dataclasses.replace(base, name="generic-ups-mib-7",
                               snmp=dataclasses.replace(base.snmp, metrics=MappingProxyType(metrics)))


PROFILE = poll_profile()
assert PROFILE.snmp is not None
POLL_OIDS = tuple(PROFILE.snmp.metrics[m].oid for m in POLL_METRICS)
CHARGE_OID = PROFILE.snmp.metrics["battery_charge"].oid
VOLTAGE_OID = PROFILE.snmp.metrics["input_voltage"].oid


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    """One sweep: wall and client CPU seconds, the agent's CPU, UPSes that answered."""

    wall: float
    cpu: float
    agent_cpu: float
    ok: int
    failures: list[str]
    spawn_cpu: float = 0.0


@dataclasses.dataclass
class Row:
    """The sweeps of one client at one concurrency and mode on one target set."""

    set_key: str
    client: str  # ours | snmpget | upsc
    label: str
    conc: str  # "64", "128", "all"
    mode: str  # agent-cold | cold | warm | -
    polled: int  # UPSes each sweep polls
    total: int  # UPSes in the set
    runs: list[Run] = dataclasses.field(default_factory=list)

    @property
    def extrapolated(self) -> bool:
        return self.polled < self.total

    @property
    def wall(self) -> float:
        """Median wall time of a sweep over what was polled."""
        return median([r.wall for r in self.runs])

    @property
    def wall_all(self) -> float:
        """Wall time for the whole set (extrapolated from the sample when only a sample was polled)."""
        return self.wall * self.total / self.polled

    @property
    def cpu_per_poll(self) -> float:
        return median([r.cpu / self.polled for r in self.runs])

    @property
    def spawn_per_poll(self) -> float:
        return median([r.spawn_cpu / self.polled for r in self.runs])

    @property
    def polls_per_s(self) -> float:
        return self.polled / self.wall

    @property
    def cores(self) -> float:
        """Client CPU seconds per wall second (median over runs)."""
        return median([r.cpu / r.wall for r in self.runs])

    @property
    def ok(self) -> int:
        return min(r.ok for r in self.runs)

    @property
    def agent_cpu(self) -> float:
        return median([r.agent_cpu for r in self.runs])

    def spread(self) -> str:
        if len(self.runs) < 2:
            return ""
        return f"{fmt_seconds(min(r.wall for r in self.runs))}-{fmt_seconds(max(r.wall for r in self.runs))}"


@dataclasses.dataclass
class SetInfo:
    key: str
    title: str
    n: int
    agent: str


@dataclasses.dataclass
class Results:
    sets: dict[str, SetInfo] = dataclasses.field(default_factory=dict)
    rows: dict[tuple[str, str, str, str], Row] = dataclasses.field(default_factory=dict)
    notes: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    memory: dict[str, Any] = dataclasses.field(default_factory=dict)

    def row(self, key: str, client: str, label: str, conc: str, mode: str, polled: int) -> Row:
        k = (key, client, conc, mode)
        if k not in self.rows:
            self.rows[k] = Row(key, client, label, conc, mode, polled, self.sets[key].n)
        return self.rows[k]

    def get(self, key: str, client: str, conc: str, mode: str) -> Row | None:
        return self.rows.get((key, client, conc, mode))

    def note(self, key: str, text: str) -> None:
        self.notes.setdefault(key, []).append(text)
        progress(f"({key}) {text}")


def record(row: Row, run: Run) -> None:
    row.runs.append(run)
    progress(f"({row.set_key}) {row.label:22s} {row.conc:>4s} {row.mode:10s} {row.polled:6d} UPSes "
             f"{run.wall:7.2f} s  CPU/poll {fmt_ms(run.cpu / row.polled):>8s}  ok {run.ok}/{row.polled}"
             + (f"  e.g. {run.failures[0]}" if run.failures else ""))


def memory_kib(pid: int | str = "self") -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, KiB."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0][2:].lower()] = int(line.split()[1])
    return out


def left_running(pids: Sequence[int]) -> list[int]:
    """Those of ``pids`` still running (zombies excluded)."""
    out = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            out.append(pid)
    return out


def stopped(results: Results, key: str, pids: Sequence[int]) -> None:
    """Note any of the processes we started and stopped that still runs."""
    if left := left_running(pids):
        results.note(key, f"WARNING: {len(left)} process(es) still running after the stop: {left[:5]}")


def fmt_kib(kib: float) -> str:
    if kib >= 1024 * 1024:
        return f"{kib / 1024 / 1024:.2f} GiB"
    if kib >= 1024:
        return f"{kib / 1024:.1f} MiB"
    return f"{kib:.0f} KiB"


# ---------------------------------------------------------------------------------------------
# Ours
# ---------------------------------------------------------------------------------------------


async def _sweep(poll: Callable[[], Any], agent_pids: Sequence[int],
                 check: Callable[[Any], str | None]) -> tuple[Run, list[Any]]:
    gc.collect()
    a0 = proc_cpu(agent_pids)
    c0 = self_cpu()
    t0 = time.perf_counter()
    results = await poll()
    wall = time.perf_counter() - t0
    cpu = self_cpu() - c0
    agent = proc_cpu(agent_pids) - a0
    failures = [why for why in map(check, results) if why is not None]
    return Run(wall, cpu, agent, len(results) - len(failures), failures[:3]), results


def _check_battery(res: Any) -> str | None:
    if not isinstance(res, BatteryStatus):
        return f"{type(res).__name__}: {res}"
    if res.charge_pct is None:
        return f"charge unknown ({res.extra.get('unknown')})"
    return None


def snmp_targets(devices: Sequence[snmplab.LabDevice]) -> list[Target]:
    return [Target(name=d.name, host=d.host, port=d.port, password=Secret(d.community), timeout=SNMP_TIMEOUT_S,
                   options={"profile": PROFILE}) for d in devices]


def ours_snmp(results: Results, key: str, targets: list[Target], inflight: int, rounds: int, agent_pid: int,
              *, agent_cold: bool = False) -> dict[str, BatteryStatus]:
    """A fresh driver: (agent-cold sweep,) cold sweep, ``rounds`` warm sweeps; the last readings by name."""
    last: list[Any] = []

    async def series() -> None:
        nonlocal last
        driver = SnmpDriver(max_inflight=inflight, retries=SNMP_RETRIES)
        try:
            modes = (["agent-cold"] if agent_cold else []) + ["cold"] + ["warm"] * rounds
            for i, mode in enumerate(modes):
                if mode == "cold" and i > 0:  # the agent is warm now: a fresh driver for the cold sweep
                    await driver.aclose()
                    driver = SnmpDriver(max_inflight=inflight, retries=SNMP_RETRIES)
                before = driver.stats()
                run, last = await _sweep(partial(driver.gather, "battery", targets), [agent_pid], _check_battery)
                after = driver.stats()
                row = results.row(key, "ours", "ours (SnmpDriver)", str(inflight), mode, len(targets))
                record(row, run)
                timeouts = after["timeouts"] - before["timeouts"]
                extra = after["requests"] - before["requests"] - len(targets)
                if timeouts or extra:
                    results.note(key, f"ours {inflight} in flight, {mode}: {timeouts} attempt(s) timed out, "
                                      f"{extra} request(s) beyond one per UPS")
            if key == "b":
                results.memory.setdefault("ours", []).append(
                    {"inflight": inflight, "targets": len(targets), **memory_kib(),
                     "max_inflight_seen": driver.stats()["max_inflight_seen"]})
        finally:
            await driver.aclose()

    asyncio.run(series())
    return {t.name: r for t, r in zip(targets, last, strict=True) if isinstance(r, BatteryStatus)}


def ours_nut(results: Results, lab: nutlab.NutLab, rounds: int) -> dict[str, BatteryStatus]:
    profile = load_profiles().get(nutlab.PROFILE)
    targets = [Target(name=u.name, host=u.host, port=u.port, timeout=NUT_TIMEOUT_S,
                      options={"nut_name": u.nut_name, "profile": profile}) for u in lab.ups]
    last: list[Any] = []

    async def series() -> None:
        nonlocal last
        driver = NutDriver()
        try:
            for mode in ["cold"] + ["warm"] * rounds:
                run, last = await _sweep(
                    lambda: asyncio.gather(*(driver.battery(t) for t in targets), return_exceptions=True),
                    [lab.upsd_pid], _check_battery)
                record(results.row("c", "ours", "ours (NutDriver)", "all", mode, len(targets)), run)
            results.note("c", f"ours: {driver.connections_opened} TCP connection(s) to upsd for {len(targets)} UPSes "
                              f"(driver default: 2 connections, 32 requests pipelined on each)")
        finally:
            await driver.aclose()

    asyncio.run(series())
    return {t.options["nut_name"]: r for t, r in zip(targets, last, strict=True) if isinstance(r, BatteryStatus)}


# ---------------------------------------------------------------------------------------------
# External clients
# ---------------------------------------------------------------------------------------------


def external(cmds: Sequence[Sequence[str]], parallel: int, agent_pid: int, env: dict[str, str],
             check: Callable[[ProcResult], str | None]) -> tuple[Run, list[ProcResult]]:
    """One process per command, ``parallel`` at a time: wall, children's CPU, spawner CPU, agent CPU."""
    gc.collect()
    a0 = proc_cpu([agent_pid])
    k0 = children_cpu()
    s0 = self_cpu()
    t0 = time.perf_counter()
    out = run_many(cmds, parallel=parallel, env=env, timeout=30.0)
    wall = time.perf_counter() - t0
    spawn = self_cpu() - s0
    cpu = children_cpu() - k0
    agent = proc_cpu([agent_pid]) - a0
    failures = [why for why in map(check, out) if why is not None]
    return Run(wall, cpu, agent, len(out) - len(failures), failures[:3], spawn), out


def _parse_snmpget(res: ProcResult) -> dict[str, str]:
    values = {}
    for line in res.stdout.splitlines():
        oid, _, value = line.partition(" ")
        values[oid.lstrip(".")] = value.strip()
    return values


def _check_snmpget(res: ProcResult) -> str | None:
    if res.returncode != 0:
        return (res.stderr.strip().splitlines() or [f"exit status {res.returncode}"])[0]
    values = _parse_snmpget(res)
    if len(values) != len(POLL_OIDS) or any("No Such" in v for v in values.values()):
        return f"unexpected answer: {res.stdout.strip()[:120]!r}"
    return None


def snmpget_runs(results: Results, key: str, devices: Sequence[snmplab.LabDevice], parallel: int,
                 agent_pid: int) -> dict[str, dict[str, str]]:
    cmds = [["snmpget", "-v2c", "-c", d.community, "-t", str(int(SNMP_TIMEOUT_S)), "-r", str(SNMP_RETRIES),
             "-On", "-Oq", f"{d.host}:{d.port}", *POLL_OIDS] for d in devices]
    run, out = external(cmds, parallel, agent_pid, snmplab.snmpd_env(), _check_snmpget)
    label = "snmpget" if len(devices) == results.sets[key].n else f"snmpget ({len(devices):,} sample)"
    record(results.row(key, "snmpget", label, str(parallel), "-", len(devices)), run)
    return {d.name: _parse_snmpget(r) for d, r in zip(devices, out, strict=True) if _check_snmpget(r) is None}


def _check_upsc(res: ProcResult) -> str | None:
    if res.returncode != 0:
        return (res.stderr.strip().splitlines() or [f"exit status {res.returncode}"])[0]
    if "battery.charge:" not in res.stdout:
        return f"no battery.charge in {res.stdout.strip()[:120]!r}"
    return None


def upsc_runs(results: Results, lab: nutlab.NutLab, parallel: int) -> dict[str, dict[str, str]]:
    cmds = [["upsc", f"{u.nut_name}@{lab.host}:{lab.port}"] for u in lab.ups]
    run, out = external(cmds, parallel, lab.upsd_pid, dict(os.environ), _check_upsc)
    record(results.row("c", "upsc", "upsc", str(parallel), "-", len(cmds)), run)
    parsed = {}
    for u, r in zip(lab.ups, out, strict=True):
        if _check_upsc(r) is None:
            parsed[u.nut_name] = dict(line.split(": ", 1) for line in r.stdout.splitlines() if ": " in line)
    return parsed


def _agree_snmp(ours: dict[str, BatteryStatus], theirs: dict[str, dict[str, str]]) -> tuple[int, int, str]:
    """UPSes whose charge and input voltage read the same through ours and snmpget (scale 1 in the profile)."""
    both = [n for n in theirs if n in ours]
    bad = [n for n in both if not (ours[n].charge_pct == float(theirs[n][CHARGE_OID])
                                   and ours[n].input_v == float(theirs[n][VOLTAGE_OID]))]
    example = (f"; e.g. {bad[0]}: ours {ours[bad[0]].charge_pct}/{ours[bad[0]].input_v}, snmpget "
               f"{theirs[bad[0]][CHARGE_OID]}/{theirs[bad[0]][VOLTAGE_OID]}") if bad else ""
    return len(both) - len(bad), len(both), example


# ---------------------------------------------------------------------------------------------
# The target sets
# ---------------------------------------------------------------------------------------------


def snmpsim_set(plan: Plan, results: Results, root: Path) -> None:
    key = "a"
    directory = root / "snmpsim"
    lab: snmplab.SnmpsimLab | None = None
    t = time.monotonic()
    try:
        lab = snmplab.start_snmpsim(directory, ups=plan.snmpsim, pdu=0, ups_models=SNMPSIM_MODELS, prefix="bench-")
        progress(f"(a) snmpsim serving {len(lab.devices)} UPSes ready in {time.monotonic() - t:.1f} s (pid {lab.pid})")
        results.sets[key] = SetInfo(key, f"{len(lab.devices):,} UPSes on one snmpsim agent (RFC 1628 recordings: "
                                    f"{', '.join(SNMPSIM_MODELS)}; fleetdev variation module)",
                                    len(lab.devices), "snmpsim")
        targets = snmp_targets(lab.devices)
        ours: dict[str, BatteryStatus] = {}
        theirs: dict[str, dict[str, str]] = {}
        for inflight in INFLIGHT:
            ours = ours_snmp(results, key, targets, inflight, plan.rounds, lab.pid, agent_cold=inflight == INFLIGHT[0])
            theirs = snmpget_runs(results, key, lab.devices, inflight, lab.pid)
        good, both, example = _agree_snmp(ours, theirs)
        results.note(key, f"values agree (charge, input voltage; ours vs snmpget, last sweeps): {good}/{both}{example}")
    finally:
        snmplab.stop_snmpsim(directory)
        if lab is not None:
            stopped(results, key, [lab.pid])


def snmpd_set(plan: Plan, results: Results, root: Path) -> None:
    key = "b"
    directory = root / "snmpd"
    fleet = None
    try:
        for attempt, second in enumerate((61, 62, 63)):  # another lab may hold these addresses: move elsewhere
            t = time.monotonic()
            try:
                fleet = snmplab.start_snmpd_fleet(directory, count=plan.snmpd, first_host=f"127.{second}.0.1",
                                                  prefix="bench-ups-")
                break
            except snmplab.SnmpLabError as exc:
                snmplab.stop_snmpd_fleet(directory)
                if attempt == 2:
                    raise
                progress(f"(b) snmpd could not start on 127.{second}.x ({str(exc).splitlines()[0]}); moving")
        assert fleet is not None
        progress(f"(b) snmpd on {len(fleet.devices):,} addresses ready in {time.monotonic() - t:.1f} s "
                 f"(pid {fleet.pid})")
        n = len(fleet.devices)
        results.sets[key] = SetInfo(key, f"{n:,} UPSes on one net-snmp snmpd, one loopback address each "
                                    f"({fleet.devices[0].host}...{fleet.devices[-1].host}:{fleet.port})", n, "snmpd")
        targets = snmp_targets(fleet.devices)
        step = max(1, n // plan.snmpget_sample)
        sample = fleet.devices[::step][: plan.snmpget_sample]
        ours: dict[str, BatteryStatus] = {}
        theirs: dict[str, dict[str, str]] = {}
        for inflight in INFLIGHT:
            ours = ours_snmp(results, key, targets, inflight, plan.rounds, fleet.pid)
            theirs = snmpget_runs(results, key, sample, inflight, fleet.pid)
        good, both, example = _agree_snmp(ours, theirs)
        results.note(key, f"values agree (charge, input voltage; ours vs snmpget, last sweeps): {good}/{both}{example}")
    finally:
        snmplab.stop_snmpd_fleet(directory)
        if fleet is not None:
            stopped(results, key, [fleet.pid])


def nut_set(plan: Plan, results: Results, root: Path) -> None:
    key = "c"
    directory = root / "nut"
    lab: nutlab.NutLab | None = None
    t = time.monotonic()
    try:
        lab = nutlab.start_nut_lab(directory, plan.nut, timeout=300.0)
        progress(f"(c) NUT lab of {len(lab.ups)} dummy-ups + upsd ready in {time.monotonic() - t:.1f} s "
                 f"(upsd pid {lab.upsd_pid})")
        results.sets[key] = SetInfo(key, f"{len(lab.ups):,} per-server UPSes on a NUT lab (one dummy-ups process "
                                    f"each, one upsd at {lab.host}:{lab.port})", len(lab.ups), "upsd")
        ours = ours_nut(results, lab, plan.rounds)
        theirs: dict[str, dict[str, str]] = {}
        for parallel in INFLIGHT:
            theirs = upsc_runs(results, lab, parallel)
        both = [n for n in theirs if n in ours]
        good = sum(1 for n in both if ours[n].charge_pct == float(theirs[n]["battery.charge"])
                   and ours[n].runtime_s == float(theirs[n]["battery.runtime"]))
        results.note(key, f"values agree (charge, runtime; ours vs upsc, last sweeps): {good}/{len(both)}")
        results.memory["nut"] = nutlab.nut_memory(directory)
    finally:
        nutlab.stop_nut_lab(directory)
        if lab is not None:
            stopped(results, key, [lab.upsd_pid, *lab.driver_pids.values()])


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------

_MODES = ("agent-cold", "cold", "warm", "-")


def report_set(info: SetInfo, results: Results) -> str:
    rows = sorted((r for r in results.rows.values() if r.set_key == info.key),
                  key=lambda r: (r.client != "ours", r.conc == "128", r.client, _MODES.index(r.mode)))
    lines = [f"({info.key}) {info.title}"]
    body = []
    for r in rows:
        wall_all = fmt_seconds(r.wall_all) + (" *" if r.extrapolated else "")
        spawn = fmt_ms(r.spawn_per_poll) if r.client != "ours" else ""
        body.append([r.label, r.conc, r.mode, f"{r.polled:,}", fmt_seconds(r.wall) + (" (" + r.spread() + ")"
                                                                                       if r.spread() else ""),
                     wall_all, f"{r.polls_per_s:,.0f}", fmt_ms(r.cpu_per_poll), f"{r.cores:.2f}", spawn,
                     f"{r.ok:,}/{r.polled:,}", fmt_seconds(r.agent_cpu)])
    lines.append(table(["client", "conc", "mode", "polled", "wall (min-max)", f"wall {info.n:,}", "polls/s",
                        "CPU/poll", "cores", "spawn CPU", "ok", f"{info.agent} CPU"], body,
                       right=(1, 3, 4, 5, 6, 7, 8, 9, 10, 11)))
    if any(r.extrapolated for r in rows):
        factor = info.n / min(r.polled for r in rows)
        lines.append(f"  * extrapolated from the sample's wall time to all {info.n:,} UPSes (x{factor:g})")
    for r in rows:
        for run in r.runs:
            if run.failures:
                lines.append(f"  ! {r.label} {r.conc} {r.mode}: {r.polled - run.ok} failed, e.g. {run.failures[0]}")
                break
    other = "upsc" if info.key == "c" else "snmpget"
    lines.append(f"  ratios ({other} / ours, same concurrency; > 1 means ours is better):")
    for conc in ("64", "128"):
        ext = results.get(info.key, other, conc, "-")
        if ext is None:
            continue
        for mode in ("cold", "warm"):
            ours = results.get(info.key, "ours", "all" if info.key == "c" else conc, mode)
            if ours is None:
                continue
            lines.append(f"    {other} {conc} at once vs ours {ours.conc} {mode}: wall "
                         f"{fmt_ratio(ext.wall_all / ours.wall_all)}, polls/s "
                         f"{fmt_ratio(ours.polls_per_s / ext.polls_per_s)}, client CPU/poll "
                         f"{fmt_ratio(ext.cpu_per_poll / ours.cpu_per_poll)} (with spawn CPU "
                         f"{fmt_ratio((ext.cpu_per_poll + ext.spawn_per_poll) / ours.cpu_per_poll)})")
    for text in results.notes.get(info.key, []):
        lines.append(f"  note: {text}")
    return "\n".join(lines)


def report_memory(results: Results) -> list[str]:
    lines = [f"Memory for {FLEET:,} per-server UPSes:"]
    nut = results.memory.get("nut")
    if nut and nut.get("drivers"):
        n = nut["drivers"]
        upsd = nut["upsd"]
        scale = FLEET / n
        rows = [["dummy-ups, each", fmt_kib(nut["driver_rss_avg"]), fmt_kib(nut["driver_pss_avg"]),
                 fmt_kib(nut["driver_uss_avg"])],
                [f"upsd with {n:,} UPSes", fmt_kib(upsd.get("rss", 0)), fmt_kib(upsd.get("pss", 0)),
                 fmt_kib(upsd.get("uss", 0))],
                [f"{FLEET:,} dummy-ups", fmt_kib(nut["driver_rss_avg"] * FLEET),
                 fmt_kib(nut["driver_pss_avg"] * FLEET), fmt_kib(nut["driver_uss_avg"] * FLEET)],
                [f"upsd, scaled x{scale:.3g} **", fmt_kib(upsd.get("rss", 0) * scale),
                 fmt_kib(upsd.get("pss", 0) * scale), fmt_kib(upsd.get("uss", 0) * scale)]]
        pss_total = nut["driver_pss_avg"] * FLEET + upsd.get("pss", 0) * scale
        rss_total = nut["driver_rss_avg"] * FLEET + upsd.get("rss", 0) * scale
        rows.append([f"NUT for {FLEET:,} UPSes", fmt_kib(rss_total), fmt_kib(pss_total),
                     fmt_kib(nut["driver_uss_avg"] * FLEET + upsd.get("uss", 0) * scale)])
        lines.append(table(["NUT (measured on the lab, extrapolated)", "RSS", "PSS", "private"], rows, right=(1, 2, 3)))
        lines.append(f"  measured with nut_memory() on the lab's {n:,} dummy-ups and its upsd; RSS counts shared "
                     "libraries once per process, PSS splits them (the real cost), private = pages no other process "
                     "shares. ** upsd scaled linearly with the UPS count: an upper bound (part of it is fixed).")
    else:
        pss_total = rss_total = float("nan")
        lines.append("  NUT lab not measured")
    ours = results.memory.get("ours")
    base = results.memory.get("baseline", {})
    if ours:
        last = ours[-1]
        lines.append(f"  ours: this one process after polling {last['targets']:,} UPSes over SNMP "
                     f"(driver open, {last['targets']:,} targets configured): RSS {fmt_kib(last['rss'])}, peak "
                     f"{fmt_kib(max(m['hwm'] for m in ours))}; {fmt_kib(base.get('rss', 0))} before any lab or "
                     "driver (Python, pysnmp and the fleet modules imported). The process also holds the bench's "
                     "own results: an upper bound.")
        if pss_total == pss_total:
            lines.append(f"  NUT's PSS for {FLEET:,} UPSes / ours RSS: {fmt_ratio(pss_total / last['rss'])}; "
                         f"summed RSS / ours RSS: {fmt_ratio(rss_total / last['rss'])}")
    return lines


def goals(results: Results, plan: Plan) -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []

    def verdict(met: bool | None) -> str:
        return "n/a" if met is None else "MET" if met else "NOT MET"

    for key in ("a", "b"):
        info = results.sets.get(key)
        if info is None:
            continue
        ours = [r for r in results.rows.values() if r.set_key == key and r.client == "ours"]
        judged = [r for r in ours if r.mode != "agent-cold"]
        if judged:
            worst = max(judged, key=lambda r: max(run.cpu for run in r.runs) / r.polled)
            worst_ms = max(run.cpu for run in worst.runs) / worst.polled * 1000
            ev = ", ".join(f"{r.conc} {r.mode} {fmt_ms(r.cpu_per_poll)}" for r in judged)
            out.append((verdict(worst_ms <= GOAL_CPU_MS), f"{info.n:,} on {info.agent}: client CPU <= "
                        f"{GOAL_CPU_MS:g} ms per poll", f"worst sweep {worst_ms:.2f} ms ({worst.conc} {worst.mode}); "
                        f"medians: {ev}"))
        for conc in ("64", "128"):
            ext = results.get(key, "snmpget", conc, "-")
            mine = [r for r in judged if r.conc == conc]
            if ext is None or not mine:
                continue
            worst_ours = max(r.cpu_per_poll for r in mine)
            ratio = ext.cpu_per_poll / worst_ours
            out.append((verdict(ratio >= GOAL_VS_SNMPGET), f"{info.n:,} on {info.agent}, {conc} at once: >= "
                        f"{GOAL_VS_SNMPGET:g}x less client CPU than snmpget",
                        f"snmpget {fmt_ms(ext.cpu_per_poll)} vs ours {fmt_ms(worst_ours)} (worse of cold/warm): "
                        f"{fmt_ratio(ratio)}"))
    info = results.sets.get("b")
    if info is not None:
        scale = FLEET / info.n
        for conc in ("64", "128"):
            for mode in ("cold", "warm"):
                r = results.get("b", "ours", conc, mode)
                if r is None:
                    continue
                worst_wall = max(run.wall for run in r.runs) * scale
                worst_cores = max(run.cpu / run.wall for run in r.runs)
                met = worst_wall <= GOAL_WALL_S and worst_cores <= GOAL_CORES and r.ok == r.polled
                proj = f" (x{scale:.3g} from {info.n:,}: quick run)" if scale != 1 else ""
                out.append((verdict(met), f"{FLEET:,} UPSes within {GOAL_WALL_S:g} s on <= {GOAL_CORES:g} core, "
                            f"ours {conc} in flight {mode}",
                            f"{'slowest ' if len(r.runs) > 1 else ''}{fmt_seconds(worst_wall)}{proj}, "
                            f"{'at most ' if len(r.runs) > 1 else ''}{worst_cores:.2f} cores, "
                            f"answered {r.ok:,}/{r.polled:,}"))
    return out


def report(results: Results, plan: Plan, header: list[str]) -> str:
    lines = ["", "=" * 110, *header, ""]
    lines.append("Columns: conc = requests in flight (ours) or processes at once (snmpget, upsc); wall = median "
                 "wall time of a sweep of the UPSes polled (min-max over rounds); wall N = for the whole set "
                 "(* = extrapolated from a sample); CPU/poll = client CPU per UPS (ours: this process; snmpget, "
                 "upsc: their processes); cores = client CPU / wall; spawn CPU = this process's CPU per UPS for "
                 "starting the external clients (not in the ratios); ok = UPSes that answered with a charge "
                 "(worst round); agent CPU = the simulated agent's CPU during the sweep.")
    for key in ("a", "b", "c"):
        info = results.sets.get(key)
        if info is not None:
            lines += ["", report_set(info, results)]
    lines += ["", *report_memory(results)]
    lines += ["", "Goals (issue 4; the agents share this machine's 2 cores):"]
    if plan.quick:
        lines.append(f"  (quick run: {plan.snmpsim:,} / {plan.snmpd:,} UPSes instead of 1,000 / 10,000: "
                     "indicative only)")
    for v, goal, ev in goals(results, plan):
        lines.append(f"  [{v:7s}] {goal}: {ev}")
    lines.append(f"\nTotal bench time {time.monotonic() - T0:.0f} s; {machine_summary()} at the end.")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="300 / 3,000 / 300 UPSes (~1 minute)")
    parser.add_argument("--rounds", type=int, default=None, help="warm sweeps of ours per driver (default 3; quick 2)")
    args = parser.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be at least 1")
    plan = make_plan(args)
    if os.geteuid() != 0:
        print("ups_poll needs root: the snmpd fleet listens on port 161 of its loopback addresses", file=sys.stderr)
        return 2
    missing = [p for p in ("snmpget", "upsc") if shutil.which(p) is None]
    missing += [p for p in (nutlab.UPSD, nutlab.DUMMY_UPS) if not os.access(p, os.X_OK)]
    if missing:
        print(f"ups_poll needs {', '.join(missing)} (Debian snmp, snmpd, nut-server, nut-client)", file=sys.stderr)
        return 2
    from importlib.metadata import version

    header = [
        f"UPS poll bench ({'quick' if plan.quick else 'full'}): {machine_summary()} at the start",
        f"ours: fleet.drivers.snmp.SnmpDriver (pysnmp {version('pysnmp')}), gather('battery'), {len(POLL_OIDS)} "
        f"RFC 1628 OIDs in one GET per UPS, timeout {SNMP_TIMEOUT_S:g} s x {SNMP_RETRIES + 1} attempts; "
        f"{plan.rounds} warm sweep(s) per driver; fleet.drivers.nut.NutDriver (LIST VAR per UPS)",
        f"snmpget: {tool_version(['snmpget', '--version'])}; -v2c -t {SNMP_TIMEOUT_S:g} -r {SNMP_RETRIES} -On -Oq, "
        "the same 7 OIDs, one process per UPS, no MIB files loaded",
        f"upsc: {tool_version(['upsc', '-V']).replace('upscmd', 'upsc')}; agents: snmpsim {version('snmpsim')}, "
        f"{tool_version(['snmpd', '-v'])} (snmpd), NUT upsd + dummy-ups",
    ]
    for line in header:
        progress(line)
    results = Results()
    results.memory["baseline"] = memory_kib()
    root = Path(tempfile.mkdtemp(prefix="ups-poll-"))
    try:
        snmpsim_set(plan, results, root)
        snmpd_set(plan, results, root)
        nut_set(plan, results, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        print(report(results, plan, header), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
