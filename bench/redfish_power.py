"""Redfish power state at fleet scale: Rackfleet's driver side by side with sushy and redfishtool.

    .venv/bin/python bench/redfish_power.py [--quick] [--rounds R] [--only a,b] [--json FILE]

Needs root (the BMCs listen on their own loopback addresses and this process raises its descriptor
limit), ``sushy`` and DMTF's ``redfishtool`` (both in the ``test`` extra); a missing one skips what
needs it. Everything runs on loopback, on this machine's cores, the lab included.

Target sets (each started, read and stopped in turn), served by the lab's own Redfish responder
(``fleet.lab.redfish``, one ``fleet.lab.bmcserver --redfish-port`` process, Redfish-only lab servers
with the default profile: SessionService on, one system per address):

- (a) N = 1,000 lab BMCs, every client;
- (b) M = 10,000 lab BMCs, ours only (not in ``--quick``).

Per set, ``PowerState`` of every system, with:

- **ours**: ``RedfishDriver().gather("power_status", targets)`` with the driver's defaults (256
  connections in total, 4 per BMC), a 10 s deadline per BMC, TLS pinned by the lab certificate's
  SHA-256 fingerprint (the certificate lists at most 256 addresses, so a CA bundle with host name
  checks cannot serve 1,000). *cold* = a fresh driver: TLS handshake, service root, session login
  (``SessionService``), ``Systems``, the system; *warm* = a second pass on the same driver: kept
  connections, session and links, one GET of the system. Client CPU = this process.
- **sushy** (Ironic's library) in a thread pool of 32: one ``sushy.Sushy`` per BMC with
  ``SessionAuth``, its requests session pinned to the same fingerprint (urllib3's
  ``assert_fingerprint``, the chain checked against the lab certificate). *cold* = ``Sushy(...)``,
  ``get_system()`` and its ``power_state``; *warm* = ``system.refresh()`` on the kept objects.
  Client CPU = this process.
- **redfishtool** (DMTF): one ``redfishtool Systems -1 get -P PowerState`` process per BMC (HTTP
  Basic, its default; it sends every request with ``verify=False``, it has no way to check a
  certificate), 16 at a time, on the first 100 BMCs of set (a) (250 in the full run); its wall time
  is extrapolated to the whole set, marked as such. Client CPU = ``RUSAGE_CHILDREN`` over the run.
  A process per BMC has no warm state: its one figure stands for both.

Ours runs R rounds (default 3; a fresh driver each, medians reported); sushy and redfishtool run
once. Prints the figures, the ratios and whether the goals of issue 14 are met; asserts nothing.

Goals (issue 14, this 2-core machine): 1,000 BMCs warm <= 2 s and cold <= 10 s, >= 10x faster than
one process per BMC; 10,000 BMCs warm <= 15 s; client CPU per warm read quoted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _common import (  # first: it puts the repository on sys.path
    fmt_ms,
    fmt_ratio,
    fmt_seconds,
    machine_summary,
    median,
    proc_cpu,
    run_many,
    self_cpu,
    table,
    time_children,
    tool_version,
)

from fleet.drivers.base import Target
from fleet.drivers.redfish import RedfishDriver
from fleet.lab import bmcserver
from fleet.lab.redfish.lab import read_state
from inventory.secrets import Secret

USER = "admin"
PASSWORD = "rf-bench-pw"
DEADLINE_S = 10.0  # per BMC, every client
SUSHY_THREADS = 32
REDFISHTOOL_PARALLEL = 16
PORT = 8443  # the lab's Redfish port on every BMC address

# ---------------------------------------------------------------------------------------------
# What to run, and the figures
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Plan:
    quick: bool
    small: int  # BMCs in set (a)
    large: int  # BMCs in set (b)
    rounds: int  # of ours
    sample: int  # BMCs redfishtool reads on set (a)
    only: frozenset[str]


def make_plan(args: argparse.Namespace) -> Plan:
    only = frozenset(args.only.split(",")) if args.only else frozenset("a" if args.quick else "ab")
    return Plan(quick=args.quick, small=1000, large=10_000, rounds=args.rounds,
                sample=100 if args.quick else 250, only=only)


@dataclasses.dataclass
class TargetSet:
    """Lab BMCs on loopback, and how to reach them."""

    key: str
    title: str
    endpoints: list[tuple[str, int]]  # (host, port) per BMC
    fingerprint: str  # "sha256:..." of the lab certificate
    ca_file: str
    server_pid: int

    @property
    def n(self) -> int:
        return len(self.endpoints)

    def server_cpu(self) -> float:
        return proc_cpu([self.server_pid])

    def targets(self) -> list[Target]:
        secret = Secret(PASSWORD)
        return [Target(name=f"{self.key}{i}", host=h, port=p, username=USER, password=secret, timeout=DEADLINE_S,
                       options={"credential_kind": "redfish", "tls_fingerprint": self.fingerprint})
                for i, (h, p) in enumerate(self.endpoints)]


@dataclasses.dataclass
class Run:
    """One pass: wall and client CPU seconds, the lab's CPU, BMCs that answered on or off."""

    wall: float
    cpu: float
    server_cpu: float
    ok: int
    failures: list[str]  # a few, as examples


@dataclasses.dataclass
class Row:
    """The runs of one (target set, client, mode)."""

    set_key: str
    client: str  # ours | sushy | redfishtool
    label: str
    mode: str  # cold | warm
    n: int  # BMCs in the set
    swept: int  # BMCs read per run (the sample, for an extrapolated row)
    runs: list[Run] = dataclasses.field(default_factory=list)
    note: str = ""

    @property
    def extrapolated(self) -> bool:
        return self.swept < self.n

    @property
    def scale(self) -> float:
        return self.n / self.swept

    @property
    def wall(self) -> float:
        """Median wall seconds, extrapolated to the whole set for a sampled row."""
        return median([r.wall for r in self.runs]) * self.scale

    @property
    def cpu_per_bmc(self) -> float:
        return median([r.cpu for r in self.runs]) / self.swept

    @property
    def server_cpu_per_bmc(self) -> float:
        return median([r.server_cpu for r in self.runs]) / self.swept

    @property
    def ok(self) -> int:
        return min(r.ok for r in self.runs)  # the worst run

    @property
    def all_answered(self) -> bool:
        return all(r.ok == self.swept for r in self.runs)

    def spread(self) -> str:
        if len(self.runs) < 2:
            return ""
        walls = [r.wall for r in self.runs]
        digits = 2 if min(walls) >= 1 else 3
        return f"{min(walls):.{digits}f}-{max(walls):.{digits}f}"

    def as_dict(self) -> dict[str, object]:
        return {**{k: v for k, v in dataclasses.asdict(self).items() if k != "runs"},
                "runs": [dataclasses.asdict(r) for r in self.runs], "wall_s": self.wall,
                "cpu_per_bmc_s": self.cpu_per_bmc, "ok_worst": self.ok, "extrapolated": self.extrapolated}


class Results:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str, str], Row] = {}
        self.sets: dict[str, TargetSet] = {}
        self.notes: dict[str, list[str]] = {}

    def row(self, ts: TargetSet, client: str, label: str, mode: str, *, swept: int | None = None) -> Row:
        key = (ts.key, client, mode)
        if key not in self.rows:
            self.rows[key] = Row(ts.key, client, label, mode, ts.n, swept or ts.n)
        return self.rows[key]

    def get(self, set_key: str, client: str, mode: str) -> Row | None:
        row = self.rows.get((set_key, client, mode))
        return row if row is not None and row.runs else None

    def note(self, set_key: str, text: str) -> None:
        self.notes.setdefault(set_key, []).append(text)


T0 = time.monotonic()


def progress(text: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {text}", file=sys.stderr, flush=True)


def _record(row: Row, run: Run) -> None:
    row.runs.append(run)
    progress(f"({row.set_key}) {row.label:40s} {row.mode:5s} {run.wall:8.2f} s  "
             f"cpu {fmt_ms(run.cpu / row.swept)}/BMC  ok {run.ok}/{row.swept}"
             + (f"  e.g. {run.failures[0][:100]}" if run.failures else ""))


def _judge(ts: TargetSet, answers: Sequence[object]) -> tuple[int, list[str]]:
    """BMCs whose answer is a power state ("on"/"off"), and a few examples of the others."""
    ok = 0
    examples: list[str] = []
    for (host, port), answer in zip(ts.endpoints, answers, strict=False):
        if answer in ("on", "off"):
            ok += 1
        elif len(examples) < 3:
            what = f"{type(answer).__name__}: {answer}" if isinstance(answer, BaseException) else repr(answer)
            examples.append(f"{host}:{port}: {what}"[:200])
    return ok, examples


def _begin(ts: TargetSet) -> tuple[float, float, float]:
    return ts.server_cpu(), self_cpu(), time.perf_counter()


def _finish(ts: TargetSet, begun: tuple[float, float, float], answers: Sequence[object]) -> Run:
    """The pass begun at ``begun`` (:func:`_begin`): wall, this process's CPU, the lab's CPU, answers judged."""
    wall = time.perf_counter() - begun[2]
    cpu, server = self_cpu() - begun[1], ts.server_cpu() - begun[0]
    return Run(wall, cpu, server, *_judge(ts, answers))


# ---------------------------------------------------------------------------------------------
# Ours: RedfishDriver, every BMC on one event loop
# ---------------------------------------------------------------------------------------------


async def _ours_round(ts: TargetSet, results: Results) -> None:
    targets = ts.targets()
    driver = RedfishDriver()
    label = f"rackfleet RedfishDriver (1 loop, {driver._http.limit} conns)"
    try:
        for mode in ("cold", "warm"):
            begun = _begin(ts)
            answers = await driver.gather("power_status", targets)
            _record(results.row(ts, "ours", label, mode), _finish(ts, begun, answers))
    finally:
        t = time.perf_counter()
        await driver.aclose()  # deletes the sessions: not in the figures
        progress(f"({ts.key}) ours: sessions deleted, connections closed in {time.perf_counter() - t:.2f} s")


def ours_round(ts: TargetSet, results: Results) -> None:
    """A fresh driver: a cold pass, then a warm one on the same driver."""
    asyncio.run(_ours_round(ts, results))


# ---------------------------------------------------------------------------------------------
# sushy in a thread pool
# ---------------------------------------------------------------------------------------------


def _sushy_pinned(url: str, ts: TargetSet) -> Any:
    """A ``sushy.Sushy`` for ``url``, session auth, its TLS pinned by ``ts.fingerprint``."""
    import sushy
    from requests.adapters import HTTPAdapter
    from sushy import auth as sushy_auth
    from sushy.connector import Connector

    digest = ts.fingerprint.removeprefix("sha256:")

    class Pinned(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            kwargs["assert_fingerprint"] = digest  # urllib3 then checks the pin, not the host name
            super().init_poolmanager(*args, **kwargs)

    conn = Connector(url, verify=ts.ca_file, default_request_timeout=DEADLINE_S)
    conn._session.mount("https://", Pinned())
    return sushy.Sushy(url + "/redfish/v1/", auth=sushy_auth.SessionAuth(USER, PASSWORD), connector=conn,
                       verify=ts.ca_file, server_side_retries=0, read_timeout=DEADLINE_S)


def _state_text(state: object) -> str:
    """sushy's PowerState (an enum of "On"/"Off"...) in ours' form: "on", "off"."""
    return str(getattr(state, "value", state)).lower()


def sushy_sweep(ts: TargetSet, results: Results) -> None:
    from importlib.metadata import version

    label = f"sushy {version('sushy')} ({SUSHY_THREADS} threads)"
    kept: list[Any] = [None] * ts.n  # (root, system) per BMC

    def cold(i: int) -> object:
        host, port = ts.endpoints[i]
        try:
            root = _sushy_pinned(f"https://{host}:{port}", ts)
            system = root.get_system()
            kept[i] = (root, system)
            return _state_text(system.power_state)
        except Exception as exc:  # reported per BMC, as the others' failures are
            return exc

    def warm(i: int) -> object:
        if kept[i] is None:
            return RuntimeError("no cold read")
        try:
            system = kept[i][1]
            system.refresh(force=True)
            return _state_text(system.power_state)
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(max_workers=SUSHY_THREADS) as pool:
        for mode, fn in (("cold", cold), ("warm", warm)):
            begun = _begin(ts)
            answers = list(pool.map(fn, range(ts.n)))
            _record(results.row(ts, "sushy", label, mode), _finish(ts, begun, answers))

        def close(i: int) -> None:
            if kept[i] is not None:
                with contextlib.suppress(Exception):
                    kept[i][0].close()  # deletes its session

        list(pool.map(close, range(ts.n)))


# ---------------------------------------------------------------------------------------------
# redfishtool: one process per BMC
# ---------------------------------------------------------------------------------------------


def redfishtool_sweep(ts: TargetSet, sample: int, results: Results) -> None:
    tool = shutil.which("redfishtool") or str(Path(sys.executable).with_name("redfishtool"))
    chosen = ts.endpoints[:sample]
    cmds = [[tool, "-r", f"{host}:{port}", "-u", USER, "-p", PASSWORD, "-S", "Always", "-T", f"{DEADLINE_S:g}",
             "Systems", "-1", "get", "-P", "PowerState"] for host, port in chosen]
    server0 = ts.server_cpu()
    timed, outs = time_children(lambda: run_many(cmds, parallel=REDFISHTOOL_PARALLEL, timeout=60))
    server = ts.server_cpu() - server0
    ok = 0
    examples: list[str] = []
    for (host, port), out in zip(chosen, outs, strict=True):
        try:
            state = str(json.loads(out.stdout)["PowerState"]).lower()
        except (ValueError, KeyError, TypeError):
            state = ""
        if out.returncode == 0 and state in ("on", "off"):
            ok += 1
        elif len(examples) < 3:
            examples.append(f"{host}:{port}: rc {out.returncode}: {(out.stderr or out.stdout).strip()[:150]}")
    label = f"redfishtool ({REDFISHTOOL_PARALLEL} processes at a time)"
    row = results.row(ts, "redfishtool", label, "cold", swept=len(chosen))
    row.note = (f"one process per BMC, run on the first {len(chosen)} BMCs; wall extrapolated "
                f"x{row.scale:g} to {ts.n:,}")
    _record(row, Run(timed.wall, timed.cpu, server, ok, examples))


# ---------------------------------------------------------------------------------------------
# The lab
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def lab_set(key: str, n: int) -> Iterator[TargetSet]:
    """``n`` Redfish-only lab BMCs in one lab server process, one loopback address each."""
    root = Path(tempfile.mkdtemp(prefix="rf-bench-lab-"))
    state = root / "st"
    pid: int | None = None
    try:
        rng = random.Random(1)
        for attempt in range(3):  # another lab may hold these addresses: move elsewhere
            second = 210 + (ord(key) - ord("a")) if attempt == 0 else rng.randrange(100, 250)
            hosts = bmcserver.loopback_hosts(n, f"127.{second}.0.1")
            spec = root / "spec.json"
            spec.write_text(json.dumps({
                "defaults": {"username": USER, "password": PASSWORD},
                "bmcs": [{"name": f"{key}{i}", "host": h, "ipmi": False, "redfish": {}} for i, h in enumerate(hosts)],
            }))
            try:
                t = time.monotonic()
                pid = bmcserver.start(spec, state, extra_args=["--redfish-port", str(PORT)], timeout=300)
                break
            except bmcserver.LabStartError as exc:
                if attempt == 2:
                    raise
                progress(f"({key}) lab start failed on 127.{second}.x ({str(exc).splitlines()[0]}); moving")
        assert pid is not None
        rf = read_state(state)
        if rf is None:
            raise bmcserver.LabStartError(f"the lab in {state} wrote no redfish.json")
        by_name = {ep["name"]: (ep["host"], int(ep["port"])) for ep in rf["endpoints"]}
        endpoints = [by_name[f"{key}{i}"] for i in range(n)]
        progress(f"({key}) lab of {n:,} Redfish BMCs ready in {time.monotonic() - t:.1f} s (pid {pid})")
        yield TargetSet(key, f"{n:,} Redfish lab BMCs (fleet.lab.redfish, one process, one address each)",
                        endpoints, rf["tls_fingerprint"], rf["ca_file"], pid)
    finally:
        if pid is not None:
            bmcserver.stop(state, pid=pid)
        shutil.rmtree(root, ignore_errors=True)


def sweep(ts: TargetSet, plan: Plan, results: Results, tools: dict[str, bool]) -> None:
    results.sets[ts.key] = ts
    everyone = ts.key == "a"
    rounds = plan.rounds if everyone else 1
    progress(f"({ts.key}) {ts.title}: {rounds} round(s) of ours" + ("" if everyone else ", ours only"))
    for _ in range(rounds):
        ours_round(ts, results)
    if not everyone:
        return
    if tools["sushy"]:
        sushy_sweep(ts, results)
    else:
        results.note(ts.key, "sushy not installed: not run")
    if tools["redfishtool"]:
        redfishtool_sweep(ts, plan.sample, results)
    else:
        results.note(ts.key, "redfishtool not installed (pip install redfishtool): not run")


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------

_ORDER = [("ours", "cold"), ("ours", "warm"), ("sushy", "cold"), ("sushy", "warm"), ("redfishtool", "cold")]


def _ratio_text(ours: Row, other: Row | None, name: str) -> str:
    if other is None:
        return f"vs {name}: not run"
    wall = other.wall / ours.wall
    cpu = other.cpu_per_bmc / ours.cpu_per_bmc
    return (f"vs {name}: wall {fmt_ratio(wall)} ({'ours faster' if wall >= 1 else 'ours SLOWER'}), "
            f"CPU/BMC {fmt_ratio(cpu)}{' (ours less)' if cpu >= 1 else ' (ours MORE)'}")


def report_set(ts: TargetSet, results: Results) -> str:
    ours = results.get(ts.key, "ours", "cold")
    rounds = len(ours.runs) if ours else 0
    lines = [f"({ts.key}) {ts.title}; ours: " + (f"median of {rounds} rounds" if rounds > 1 else "1 run")
             + ", the others 1 run"]
    rows = []
    notes: list[str] = []
    for client, mode in _ORDER:
        row = results.get(ts.key, client, mode)
        if row is None:
            continue
        mode_text = "cold (= warm)" if client == "redfishtool" else mode
        rows.append([row.label, mode_text, fmt_seconds(row.wall) + (" *" if row.extrapolated else ""), row.spread(),
                     fmt_ms(row.cpu_per_bmc), f"{row.ok}/{row.swept}", fmt_ms(row.server_cpu_per_bmc)])
        if row.note:
            notes.append(f"  {'*' if row.extrapolated else '-'} {row.label}: {row.note}")
        for run in row.runs:
            if run.failures:
                notes.append(f"  ! {row.label} {mode}: {row.swept - run.ok} BMC(s) failed, e.g. {run.failures[0]}")
                break
    lines.append(table(["client", "mode", "wall", "min-max", "CPU/read", "ok/read", "lab CPU/read"], rows,
                       right=(2, 3, 4, 5, 6)))
    lines += notes
    if ts.key == "a":  # set (b) is ours only
        lines.append("  ratios (other/ours; > 1 means ours is better):")
        for mode in ("cold", "warm"):
            row = results.get(ts.key, "ours", mode)
            if row is not None:
                lines.append(f"    ours {mode}: " + _ratio_text(row, results.get("a", "sushy", mode), f"sushy {mode}")
                             + "; " + _ratio_text(row, results.get("a", "redfishtool", "cold"), "redfishtool"))
    for text in results.notes.get(ts.key, []):
        lines.append(f"  note: {text}")
    return "\n".join(lines)


def goals(results: Results, plan: Plan) -> list[tuple[str, str, str]]:
    """(verdict, goal, evidence) per goal of issue 14."""
    out: list[tuple[str, str, str]] = []

    def verdict(met: bool | None) -> str:
        return "n/a" if met is None else "MET" if met else "NOT MET"

    def wall_goal(key: str, mode: str, limit: float) -> None:
        ts = results.sets.get(key)
        ours = results.get(key, "ours", mode)
        n = plan.small if key == "a" else plan.large
        goal = f"{n:,} BMCs {mode} <= {fmt_seconds(limit)}"
        if ts is None or ours is None:
            why = "not run in --quick" if plan.quick and key == "b" else "not run"
            out.append(("n/a", goal, why))
            return
        ev = (f"ours {fmt_seconds(ours.wall)}" + (f" [range {ours.spread()}]" if len(ours.runs) > 1 else "")
              + f", answered {ours.ok}/{ours.swept}, client CPU {fmt_ms(ours.cpu_per_bmc)}/read")
        out.append((verdict(ours.wall <= limit and ours.all_answered), goal, ev))

    wall_goal("a", "warm", 2.0)
    wall_goal("a", "cold", 10.0)
    ours = results.get("a", "ours", "cold")
    tool = results.get("a", "redfishtool", "cold")
    goal = f"{plan.small:,} BMCs: >= 10x faster than one process per BMC (redfishtool), ours cold"
    if ours is None or tool is None:
        out.append(("n/a", goal, "not run"))
    else:
        ev = (f"ours {fmt_seconds(ours.wall)} vs redfishtool {fmt_seconds(tool.wall)} (extrapolated from "
              f"{tool.swept}): {fmt_ratio(tool.wall / ours.wall)}")
        out.append((verdict(tool.wall >= 10 * ours.wall and ours.all_answered and tool.ok > 0), goal, ev))
    wall_goal("b", "warm", 15.0)
    for key in ("a", "b"):
        warm = results.get(key, "ours", "warm")
        if warm is not None:
            out.append(("quoted", f"{warm.n:,} BMCs: client CPU per warm read",
                        f"{fmt_ms(warm.cpu_per_bmc)} (the lab's own: {fmt_ms(warm.server_cpu_per_bmc)})"))
    return out


def report(results: Results, plan: Plan, header: list[str]) -> str:
    lines = ["", "=" * 100, *header, ""]
    lines.append("Columns: wall = median wall time of the pass (* = extrapolated from a sample); min-max over "
                 "rounds; CPU/read = client CPU per BMC read (ours and sushy: this process; redfishtool: its "
                 "processes); ok/read = BMCs that answered On/Off, worst round; lab CPU/read = the lab server "
                 "process's CPU per BMC read (it shares the 2 cores with the client).")
    for key in ("a", "b"):
        ts = results.sets.get(key)
        if ts is not None:
            lines += ["", report_set(ts, results)]
    lines += ["", "Goals (issue 14; the lab shares this machine's cores):"]
    if plan.quick:
        lines.append(f"  (quick run: {plan.small:,} BMCs only; 10,000 in the full run)")
    for v, goal, ev in goals(results, plan):
        lines.append(f"  [{v:7s}] {goal}: {ev}")
    lines.append(f"\nTotal bench time {time.monotonic() - T0:.0f} s; {machine_summary()} at the end.")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 BMCs only (~2 minutes)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of ours on set (a)")
    parser.add_argument("--only", default="", help="target sets to run, e.g. 'a' (default: a,b; --quick: a)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.only and not set(args.only.split(",")) <= set("ab"):
        parser.error("--only takes a comma-separated subset of a, b")
    plan = make_plan(args)

    if os.geteuid() != 0:
        print("redfish_power needs root: it raises its descriptor limit for 10,000 connections", file=sys.stderr)
        return 2
    try:  # a connection per BMC, and room
        bmcserver.ensure_fd_limit((plan.large if "b" in plan.only else plan.small) + 1024)
    except bmcserver.LabStartError as exc:
        print(f"redfish_power: {exc}", file=sys.stderr)
        return 2
    import importlib.util
    from importlib.metadata import version

    tools = {"sushy": importlib.util.find_spec("sushy") is not None,
             "redfishtool": bool(shutil.which("redfishtool") or Path(sys.executable).with_name("redfishtool").exists())}
    header = [
        f"Redfish power bench ({'quick' if plan.quick else 'full'}): {machine_summary()} at the start",
        f"ours: fleet.drivers.redfish.RedfishDriver, aiohttp {version('aiohttp')}, one event loop, "
        f"deadline {DEADLINE_S:g} s per BMC, TLS pinned by fingerprint, Redfish sessions",
        "sushy: " + (f"{version('sushy')}, {SUSHY_THREADS} threads, SessionAuth, TLS pinned by fingerprint"
                     if tools["sushy"] else "not installed"),
        "redfishtool: " + (f"{version('redfishtool')} ({tool_version([sys.executable, '--version'])}), one process "
                           f"per BMC, {REDFISHTOOL_PARALLEL} at a time, Basic auth, no TLS verification (it has none)"
                           if tools["redfishtool"] else "not installed"),
        f"lab: fleet.lab.bmcserver --redfish-port {PORT}, Redfish-only BMCs, default profile (sessions on)",
    ]
    for line in header:
        progress(line)

    results = Results()
    try:
        if "a" in plan.only:
            with lab_set("a", plan.small) as ts:
                sweep(ts, plan, results, tools)
        if "b" in plan.only:
            with lab_set("b", plan.large) as ts:
                sweep(ts, plan, results, tools)
    finally:
        print(report(results, plan, header), flush=True)
        if args.json:
            args.json.write_text(json.dumps({
                "plan": dataclasses.asdict(plan) | {"only": sorted(plan.only)},
                "rows": [r.as_dict() for r in results.rows.values()],
                "goals": [{"verdict": v, "goal": g, "evidence": e} for v, g, e in goals(results, plan)],
            }, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
