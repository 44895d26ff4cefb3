"""``make demo HEADLESS=1``'s program: the lab comes up, is imported, swept with faults, and stopped."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fleet.lab.sshlab import ssh_lab_available


def test_the_headless_demo_builds_the_lab_inventory_sweeps_its_faults_and_stops_the_lab(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    demo.mkdir()
    env = {**os.environ, "FLEET_DB": str(demo / "fleet.db"), "FLEET_KEY_FILE": str(demo / "secret.key"),
           "DEMO_DIR": str(demo), "HEADLESS": "1", "DEMO_PORT": "16636", "COLUMNS": "250"}
    env.pop("FLEET_SECRET_KEY", None)
    done = subprocess.run([sys.executable, "-m", "fleet.demo"], env=env, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)
    try:
        assert done.returncode == 0, done.stderr[-2000:]
        out = done.stdout + done.stderr
        assert "240 servers in 6 racks, 2 site(s)" in out
        for event in ("bmc-unreachable lab1-r01-s05", "sel-ecc-uncorrectable lab2-r02-s07",
                      "sensor-critical lab1-r03-s11", "ups-on-battery ups-lab1-r05-s02",
                      "ups-battery-failing lab-ups-003"):
            assert event in out, event
        if ssh_lab_available() is None:
            assert "lab2-r04-s09: disk LABD000129B at /dev/sdb in slot 1 fails its SMART health check" in out
        assert "plan (dry run" in out and "lab stopped" in out
        assert not (demo / "lab" / "lab.json").exists()  # stopped: nothing of the lab runs on
    finally:
        if (demo / "lab" / "lab.json").exists():
            subprocess.run([str(Path(sys.executable).with_name("fleet")), "lab", "stop", "--dir", str(demo / "lab")],
                           env=env, timeout=120)
