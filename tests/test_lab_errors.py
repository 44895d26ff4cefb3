"""`fleet lab start` on a machine that lacks something: one line naming it and the remedy, never
"internal error" (which stays for bugs)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from .clihelp import FLEET, fleet


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return dict(os.environ, FLEET_DB=str(tmp_path / "fleet.db"), FLEET_KEY_FILE=str(tmp_path / "k"), **extra)


def _one_error_line(done: subprocess.CompletedProcess, *parts: str) -> str:
    assert done.returncode == 1, (done.stdout, done.stderr)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    for part in parts:
        assert part in errors[0], errors[0]
    return errors[0]


def test_a_taken_bmc_port_is_port_in_use_with_a_remedy(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.10.0.1", 16731))  # the first lab BMC's address and port
        done = fleet(_env(tmp_path), "lab", "start", "--dir", str(tmp_path / "lab"), "--racks", "1",
                     "--servers-per-rack", "2", "--port", "16731", "--no-ups", "--no-rack-power", "--no-ssh")
    _one_error_line(done, "127.10.0.1:16731 is in use", "--port")
    assert not (tmp_path / "lab" / "lab.json").exists()


def test_a_missing_python_package_names_the_lab_extra(tmp_path: Path) -> None:
    """snmpsim-data blocked from import (as if not installed): the remedy is the lab extra."""
    code = ("import sys; sys.modules['snmpsim_data'] = None; from fleet.cli import main; "
            f"sys.exit(main(['lab', 'start', '--dir', {str(tmp_path / 'lab')!r}, '--racks', '1', "
            "'--servers-per-rack', '1', '--port', '16732', '--no-ups', '--no-ssh']))")
    done = subprocess.run([sys.executable, "-c", code], env=_env(tmp_path), capture_output=True, text=True,
                          timeout=120)
    line = _one_error_line(done)
    assert line == "error: the snmpsim-data package is not installed: pip install 'rackfleet[lab]'"


def test_a_missing_program_says_how_to_install_it(tmp_path: Path) -> None:
    """FLEET_LAB_NUT=upsd with NUT hidden (PATH and NUT's libexec folders): MissingDependency."""
    env = _env(tmp_path, FLEET_LAB_NUT="upsd", FLEET_NUT_LIBEXEC=str(tmp_path / "none"),
               PATH=str(Path(sys.executable).parent))
    done = fleet(env, "lab", "start", "--dir", str(tmp_path / "lab"), "--racks", "1", "--servers-per-rack", "1",
                 "--port", "16733", "--no-rack-power", "--no-ssh")
    _one_error_line(done, "upsd and dummy-ups not found", "apt install nut-server", "FLEET_LAB_NUT=builtin")
    done = fleet(_env(tmp_path, FLEET_LAB_NUT="sometimes"), "lab", "start", "--dir", str(tmp_path / "lab2"))
    assert done.returncode == 2 and "FLEET_LAB_NUT must be one of auto, upsd, builtin" in done.stderr


def test_without_root_port_623_and_ssh_hosts_say_they_need_root(tmp_path: Path) -> None:
    """Binding port 623 without CAP_NET_BIND_SERVICE (dropped with setpriv, as a non-root user lacks it)
    is NeedsRoot; SSH hosts asked for by a non-root user (euid simulated in a subprocess) too."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and util-linux's setpriv to drop the capability")
    cmd = ["setpriv", "--bounding-set", "-net_bind_service", "--inh-caps", "-net_bind_service", FLEET,
           "lab", "start", "--dir", str(tmp_path / "a"), "--racks", "1", "--servers-per-rack", "1",
           "--port", "623", "--no-ups", "--no-rack-power", "--no-ssh"]
    done = subprocess.run(cmd, env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    _one_error_line(done, "127.10.0.1:623 needs root", "run as root or give a port above 1023")
    code = ("import os, sys; os.geteuid = lambda: 1000; from fleet.cli import main; "
            f"sys.exit(main(['lab', 'start', '--dir', {str(tmp_path / 'b')!r}, '--racks', '1', "
            "'--servers-per-rack', '1', '--port', '16734', '--no-ups', '--no-rack-power', '--ssh']))")
    done = subprocess.run([sys.executable, "-c", code], env=_env(tmp_path), capture_output=True, text=True,
                          timeout=120)
    _one_error_line(done, "SSH hosts in the lab need root", "--no-ssh")
