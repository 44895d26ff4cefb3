"""A full health sweep at fleet scale: servers (power, sensors, SEL) and their UPSes, through Fleet.sweep.

    .venv/bin/python bench/sweep.py [--quick]

Builds a fresh SQLite inventory in a temporary folder, starts a lab of N servers (``fleet.lab``,
one lab BMC server process; no per-server NUT UPS, no rack power) and imports it, then starts one
net-snmp ``snmpd`` answering as N UPSes (``generic-ups-mib``, SNMP v2c, one loopback address each)
and imports them as per-server UPSes, outlet 0 of each feeding its server. N = 10,000 (250 racks
x 40; ``--quick``: 1,000 = 25 x 40). Everything runs on loopback, on this machine's cores,
simulators included.

Then two full sweeps, in this process, through ``Fleet.sweep`` (power, sensors, SEL, UPS):
*cold* = the first (new BMC sessions, empty SDR caches; the IPMI worker processes are started
before the clock starts and their start-up is reported apart), *warm* = the second (sessions and
SDRs kept). Per sweep: wall time; CPU of this process and of the IPMI driver's worker processes
(``/proc/PID/task/*/schedstat``, as bench/ipmi_sweep.py counts them) and of the simulators; readings
written; the DB write time (``SweepResult.write_s``). Memory: the peak RSS of this process
(``ru_maxrss``, whole run, inventory import included) and of each IPMI worker (``VmHWM``).

Goals (issue 5, simulators included): 10,000 servers + 10,000 UPSes in <= 120 s, peak memory
<= 1 GiB, writing one sweep's readings <= 3 s. Prints the figures and MET/NOT MET; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from _common import (  # first: it puts the repository on sys.path
    cpu_delta,
    fmt_ms,
    fmt_seconds,
    machine_summary,
    proc_cpu,
    proc_cpu_by_pid,
    proc_peak_rss_mib,
    self_cpu,
    self_peak_rss_mib,
    table,
)
from sqlalchemy import func, select

from fleet.lab.datacenter import start_lab, stop_lab
from fleet.lab.snmplab import start_snmpd_fleet, stop_snmpd_fleet
from fleet.service.facade import Fleet
from inventory.models import Reading

T0 = time.monotonic()
SERVERS_PER_RACK = 40
GOAL_WALL_S, GOAL_RSS_MIB, GOAL_WRITE_S = 120.0, 1024.0, 3.0


def progress(text: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f} s] {text}", file=sys.stderr, flush=True)


@dataclasses.dataclass
class Run:
    mode: str
    wall: float
    self_cpu: float
    worker_cpu: float
    bmc_sim_cpu: float
    snmpd_cpu: float
    servers: int
    servers_read: int
    ups: int
    ups_read: int
    readings: int  # SweepResult.readings: the server readings written in the timed write
    rows_added: int  # every row the sweep added to readings (UPS readings included)
    write_s: float
    events_opened: int
    errors: int
    error_example: str
    self_rss_mib: float  # ru_maxrss after the sweep
    worker_rss_mib: list[float]


def ups_yaml(devices: Sequence[Any], hostnames: Sequence[str], path: Path) -> None:
    """One UPS per server (its outlet 0 feeds the server), site lab1, credential lab-snmp."""
    entries = []
    for dev, host in zip(devices, hostnames, strict=True):
        e = dev.inventory_entry()
        entries.append({"name": e["name"], "site": "lab1", "kind": "server", "profile": e["profile"],
                        "protocol": "snmp", "host": e["host"], "port": e["port"], "credential": "lab-snmp",
                        "outlets": [{"number": 0, "server": host}]})
    path.write_text(yaml.safe_dump({"version": 1, "ups": entries}, sort_keys=False, width=120))


def count_readings(fleet: Fleet) -> int:
    with fleet.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Reading)).scalar_one())


async def sweeps(fleet: Fleet, bmc_pid: int, snmpd_pid: int) -> tuple[float, list[Run]]:
    driver = fleet.driver("ipmi")
    t = time.perf_counter()
    await driver.start()
    startup = time.perf_counter() - t
    runs: list[Run] = []
    try:
        for mode in ("cold", "warm"):
            rows0 = count_readings(fleet)
            pids = driver.pool.pids()
            workers0, bmc0, snmpd0, self0 = proc_cpu_by_pid(pids), proc_cpu([bmc_pid]), proc_cpu([snmpd_pid]), \
                self_cpu()
            t = time.perf_counter()
            result = await fleet.sweep(None, ups=True)
            wall = time.perf_counter() - t
            self1 = self_cpu()
            worker = cpu_delta(workers0, proc_cpu_by_pid(driver.pool.pids()))
            bmc, snmpd = proc_cpu([bmc_pid]) - bmc0, proc_cpu([snmpd_pid]) - snmpd0
            rss = [r for r in (proc_peak_rss_mib(p) for p in driver.pool.pids()) if r is not None]
            example = next(iter(result.errors.items()), None)
            run = Run(mode, wall, self1 - self0, worker, bmc, snmpd, result.servers, result.servers_read,
                      result.ups, result.ups_read, result.readings, count_readings(fleet) - rows0, result.write_s,
                      len(result.opened), len(result.errors),
                      f"{example[0]}: {example[1]}"[:160] if example else "", self_peak_rss_mib(), rss)
            runs.append(run)
            progress(f"{mode} sweep: {wall:.1f} s (sweep's own {result.duration_s:.1f} s), servers "
                     f"{result.servers_read}/{result.servers}, UPS {result.ups_read}/{result.ups}, "
                     f"{result.readings:,} readings written in {result.write_s:.2f} s, {len(result.errors)} errors")
    finally:
        await fleet.aclose()
    return startup, runs


def report(n: int, quick: bool, setup: list[tuple[str, float]], startup: float, runs: list[Run],
           setup_rss: float, header: str) -> str:
    lines = ["", "=" * 100, header, ""]
    lines.append("Setup (not in the sweep figures): " + "; ".join(f"{k} {fmt_seconds(v)}" for k, v in setup)
                 + f"; IPMI worker start-up {fmt_seconds(startup)}")
    rows = []
    for r in runs:
        rows.append([r.mode, fmt_seconds(r.wall), f"{r.servers_read:,}/{r.servers:,}", f"{r.ups_read:,}/{r.ups:,}",
                     fmt_seconds(r.self_cpu), fmt_seconds(r.worker_cpu), fmt_seconds(r.self_cpu + r.worker_cpu),
                     fmt_ms((r.self_cpu + r.worker_cpu) / max(1, r.servers + r.ups)),
                     fmt_seconds(r.bmc_sim_cpu), fmt_seconds(r.snmpd_cpu),
                     f"{r.readings:,}", f"{r.rows_added:,}", fmt_seconds(r.write_s), str(r.events_opened)])
    lines.append(table(["sweep", "wall", "servers ok", "UPS ok", "CPU self", "CPU workers", "CPU client",
                        "CPU/device", "BMC sim CPU", "snmpd CPU", "readings", "rows added", "DB write",
                        "events"], rows, right=range(1, 14)))
    lines.append("  CPU client = this process + the IPMI driver's worker processes; CPU/device = per server + UPS;")
    lines.append("  readings = SweepResult.readings (server readings, in the DB write); rows added = every readings "
                 "row the sweep added (UPS readings, written by fleet.ups, included)")
    for r in runs:
        if r.errors:
            lines.append(f"  ! {r.mode}: {r.errors} error(s), e.g. {r.error_example}")
    last = runs[-1] if runs else None
    peak_self = max((r.self_rss_mib for r in runs), default=self_peak_rss_mib())
    workers = max((r.worker_rss_mib for r in runs), key=sum, default=[])
    lines.append(f"Memory: this process peak RSS {peak_self:.0f} MiB (ru_maxrss, whole run; {setup_rss:.0f} MiB "
                 f"before the first sweep, i.e. after lab start and inventory import); IPMI workers peak RSS "
                 + (f"{len(workers)} x max {max(workers):.0f} MiB = {sum(workers):.0f} MiB" if workers else "n/a")
                 + (f"; this process + workers {peak_self + sum(workers):.0f} MiB" if workers else ""))
    lines += ["", "Goals (issue 5; the simulators share this machine's cores):"]
    if quick:
        lines.append(f"  (quick run: {n:,} servers + {n:,} UPSes instead of 10,000 + 10,000: indicative only)")
    if last is not None:
        for r in runs:
            complete = r.servers_read == r.servers and r.ups_read == r.ups
            met = r.wall <= GOAL_WALL_S and complete
            lines.append(f"  [{'MET' if met else 'NOT MET':7s}] {n:,} servers + {n:,} UPSes, {r.mode} sweep <= "
                         f"{GOAL_WALL_S:.0f} s: {fmt_seconds(r.wall)}, servers {r.servers_read:,}/{r.servers:,}, "
                         f"UPS {r.ups_read:,}/{r.ups:,} read")
        met = peak_self <= GOAL_RSS_MIB
        lines.append(f"  [{'MET' if met else 'NOT MET':7s}] peak memory of the sweeping process <= 1 GiB: "
                     f"{peak_self:.0f} MiB (ru_maxrss)"
                     + (f"; with its {len(workers)} IPMI workers {peak_self + sum(workers):.0f} MiB"
                        if workers else ""))
        worst = max(runs, key=lambda r: r.write_s)
        met = worst.write_s <= GOAL_WRITE_S
        lines.append(f"  [{'MET' if met else 'NOT MET':7s}] writing one sweep's readings <= {GOAL_WRITE_S:g} s: "
                     f"worst {fmt_seconds(worst.write_s)} ({worst.mode}, {worst.readings:,} readings + states + "
                     f"events in one transaction); "
                     + ", ".join(f"{r.mode} {fmt_seconds(r.write_s)}" for r in runs))
    else:
        lines.append("  no sweep ran")
    lines.append(f"\nTotal bench time {time.monotonic() - T0:.0f} s; {machine_summary()} at the end.")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 servers + 1,000 UPSes instead of 10,000")
    args = parser.parse_args(argv)
    racks = 25 if args.quick else 250
    n = racks * SERVERS_PER_RACK
    header = (f"Sweep bench ({'quick' if args.quick else 'full'}): {n:,} lab servers ({racks} racks x "
              f"{SERVERS_PER_RACK}) + {n:,} SNMP UPSes (one snmpd); SQLite; {machine_summary()} at the start")
    progress(header)
    root = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    lab_dir, snmpd_dir = root / "lab", root / "snmpd"
    lab_started = snmpd_started = False
    fleet: Fleet | None = None
    setup: list[tuple[str, float]] = []
    startup, runs, setup_rss = 0.0, [], 0.0
    try:
        t = time.monotonic()
        fleet = Fleet.init(str(root / "fleet.db"), key_path=root / "fleet.key")
        lab_started = True  # stop_lab is safe on a half-started lab (it raises NotFound without lab.json)
        info = start_lab(lab_dir, racks=racks, servers_per_rack=SERVERS_PER_RACK, server_ups=False, rack_power=False)
        setup.append(("lab start", time.monotonic() - t))
        progress(f"lab of {info.servers:,} BMCs running (pid {info.bmc_pid}, port {info.port})")
        t = time.monotonic()
        fleet.import_files([lab_dir / "inventory.yaml"], secrets=[lab_dir / "secrets.yaml"])
        setup.append(("lab import", time.monotonic() - t))
        progress(f"lab imported in {setup[-1][1]:.1f} s")
        t = time.monotonic()
        snmpd_started = True
        snmpd = start_snmpd_fleet(snmpd_dir, count=n, timeout=300.0)
        setup.append(("snmpd start", time.monotonic() - t))
        progress(f"snmpd answering as {len(snmpd.devices):,} UPSes (pid {snmpd.pid}, port {snmpd.port})")
        t = time.monotonic()
        fleet.set_credential("lab-snmp", "snmp-v2c", snmpd.community)
        inventory = yaml.safe_load((lab_dir / "inventory.yaml").read_text())
        hostnames = [s["hostname"] for site in inventory["sites"] for pod in site["pods"] for rack in pod["racks"]
                     for s in rack["servers"]]
        ups_file = root / "ups.yaml"
        ups_yaml(snmpd.devices, hostnames, ups_file)
        fleet.import_files([ups_file])
        setup.append(("UPS import", time.monotonic() - t))
        progress(f"{n:,} UPSes imported in {setup[-1][1]:.1f} s")
        setup_rss = self_peak_rss_mib()
        startup, runs = asyncio.run(sweeps(fleet, info.bmc_pid, snmpd.pid))
    finally:
        if fleet is not None:
            asyncio.run(fleet.aclose())  # idempotent: nothing left if sweeps() closed it
            fleet.close()
        if snmpd_started:
            stop_snmpd_fleet(snmpd_dir)
        if lab_started and (lab_dir / "lab.json").exists():
            stop_lab(lab_dir)
        shutil.rmtree(root, ignore_errors=True)
        print(report(n, args.quick, setup, startup, runs, setup_rss, header), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
