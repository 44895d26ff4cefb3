"""``make demo``: the virtual datacenter, imported, swept with a few faults, then the TUI.

Runs the real CLI (``fleet.cli.main``) step by step, printing each command as a person would type it,
so the demo is also a tour:

1. ``fleet lab start --redfish``: 2 sites, 6 racks, 240 servers with simulated BMCs (a mixed fleet: of
   every four, two answer IPMI and Redfish, one IPMI only, one Redfish only), a NUT UPS per server, an
   APC Smart-UPS and switched PDU per rack, and (as root) SSH on every server;
2. ``fleet init`` and ``fleet import`` of the lab's inventory and secrets into an SQLite file;
3. a few faults (a dead BMC, an uncorrectable ECC error, a CPU over its critical threshold, a UPS on
   battery, a battery to replace, a failing disk), then ``fleet sweep`` and SSH facts of one rack;
4. ``fleet events`` and the remediation plan (dry run);
5. ``fleet tui`` with a background ``fleet sweep --every 30s`` so the screens move; quitting the TUI
   stops the sweeps and the lab.

``HEADLESS=1`` does all but the TUI, prints a summary and stops the lab (``KEEP_LAB=1`` leaves it
running for the CLI). ``FLEET_DB``, ``FLEET_KEY_FILE`` and ``DEMO_DIR`` come from the Makefile;
``DEMO_PORT`` puts the lab on another port than the default (623 as root, else 6623).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from fleet.cli import main as fleet_main

SITES, RACKS, PER_RACK = 2, 6, 40
FAULTS = [
    ("lab1-r01-s05", "dead", "a BMC that stopped answering"),
    ("lab2-r02-s07", "ecc", "an uncorrectable memory error in the SEL"),
    ("lab1-r03-s11", "sensor-critical", "a CPU over its critical threshold"),
    ("ups-lab1-r05-s02", "on-battery", "a server's UPS running on battery"),
    ("lab-ups-003", "replace-battery", "a rack UPS asking for a new battery"),
]
DISK_FAULT = ("lab2-r04-s09", "disk-failing", "a disk failing SMART (seen over SSH)")
FACTS_RACK = ("site=lab2", "rack=R04")


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "no", "false")


def _run(*argv: str, check: bool = True) -> int:
    print(f"\n$ fleet {' '.join(shlex.quote(a) for a in argv)}", flush=True)
    code = fleet_main(list(argv))
    if check and code not in (0,):
        raise SystemExit(f"demo step failed (exit {code}): fleet {' '.join(argv)}")
    return code


def _background_sweeps(demo: Path) -> subprocess.Popen:
    fleet_bin = str(Path(sys.executable).with_name("fleet"))
    log = open(demo / "sweeps.log", "ab")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen([fleet_bin, "sweep", "--every", "30s"], stdin=subprocess.DEVNULL, stdout=log,
                                stderr=log, start_new_session=True)
    finally:
        log.close()


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main() -> int:
    if not os.environ.get("FLEET_DB"):
        print("the demo expects FLEET_DB (make demo sets it)", file=sys.stderr)
        return 2
    demo = Path(os.environ.get("DEMO_DIR", ".demo"))
    lab = demo / "lab"
    headless = _truthy("HEADLESS") or not (sys.stdin.isatty() and sys.stdout.isatty())
    if not _truthy("HEADLESS") and headless:
        print("no terminal to show the TUI in: running headless", file=sys.stderr)
    started = time.monotonic()
    port = ["--port", os.environ["DEMO_PORT"]] if os.environ.get("DEMO_PORT") else []
    _run("lab", "start", "--dir", str(lab), "--sites", str(SITES), "--racks", str(RACKS),
         "--servers-per-rack", str(PER_RACK), "--redfish", *port)
    sweeps = None
    keep = False
    try:
        _run("init")
        _run("import", str(lab / "inventory.yaml"), "--secrets", str(lab / "secrets.yaml"))
        _run("racks")
        with_ssh = (lab / "ssh" / "hosts.json").exists()
        for target, kind, why in FAULTS + ([DISK_FAULT] if with_ssh else []):
            print(f"\n# {why}", flush=True)
            _run("lab", "fault", target, kind, "--dir", str(lab))
        time.sleep(2.5)  # the per-server UPSes' drivers reread their state every second
        _run("sweep", check=False)  # exit 1: the dead BMC could not be read, as it should
        if with_ssh:
            _run("facts", *FACTS_RACK, check=False)
        _run("events")
        _run("remediate")
        _run("list", "host=lab1-r01-s0*")
        took = time.monotonic() - started
        print(f"\nThe virtual datacenter is up ({SITES} sites, {RACKS} racks, {RACKS * PER_RACK} servers; "
              f"set up in {took:.0f} s). Inventory: {os.environ['FLEET_DB']}")
        if headless:
            keep = _truthy("KEEP_LAB")
            env = f"FLEET_DB={os.environ['FLEET_DB']} FLEET_KEY_FILE={os.environ.get('FLEET_KEY_FILE', '')}"
            print("Try, with\n"
                  f"  export {env}\n"
                  "  .venv/bin/fleet tui                       # the technician's screens\n"
                  "  .venv/bin/fleet power cycle lab1-r01-s03 --yes\n"
                  "  .venv/bin/fleet remediate --apply\n"
                  + (f"The lab keeps running: .venv/bin/fleet lab stop --dir {lab}" if keep else
                     "(KEEP_LAB=1 keeps the lab running after a headless demo.)"))
            return 0
        sweeps = _background_sweeps(demo)
        print("\nOpening the TUI (q quits and stops the lab; a sweep runs every 30 s meanwhile)...", flush=True)
        return _run("tui", check=False)
    finally:
        _stop(sweeps)
        if not keep:
            print(f"\n$ fleet lab stop --dir {lab}", flush=True)
            fleet_main(["lab", "stop", "--dir", str(lab)])


if __name__ == "__main__":
    sys.exit(main())
