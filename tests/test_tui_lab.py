"""The real ``fleet tui`` in a real terminal (tmux) on a lab inventory: type a filter, power-cycle a server
from the TUI, see it reach the lab BMC and show in the audit screen, quit cleanly.

tmux runs on a socket of its own (``-L``), so no other tmux server is touched; the test kills that server
and stops the lab whatever happens. BMC port 16641 (the TUI tests' range is 16640-16649).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from .clihelp import FLEET, fleet
from .peers import missing_peer

pytestmark = pytest.mark.peer
PORT = "16641"


class Tmux:
    """One tmux server on a private socket, one session running a command in a 160x50 terminal."""

    def __init__(self, name: str) -> None:
        self.socket = f"rackfleet-tui-{os.getpid()}-{name}"
        self.session = name

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=20,
                              check=False)

    def start(self, command: str) -> None:
        done = self.run("new-session", "-d", "-s", self.session, "-x", "160", "-y", "50", command)
        assert done.returncode == 0, done.stderr

    def keys(self, *keys: str) -> None:
        for key in keys:
            assert self.run("send-keys", "-t", self.session, key).returncode == 0
            time.sleep(0.15)

    def type(self, text: str) -> None:
        assert self.run("send-keys", "-t", self.session, "-l", text).returncode == 0

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", self.session).stdout

    def wait_for(self, *needles: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.screen()
            if all(n in text for n in needles):
                return text
            time.sleep(0.2)
        raise AssertionError(f"never saw {needles!r} on the screen:\n{text}")

    def alive(self) -> bool:
        return self.run("has-session", "-t", self.session).returncode == 0

    def kill(self) -> None:
        self.run("kill-server")
        # tmux leaves its socket file behind when the server exits.
        (Path(os.environ.get("TMUX_TMPDIR", "/tmp")) / f"tmux-{os.getuid()}" / self.socket).unlink(missing_ok=True)


def test_fleet_tui_in_tmux_filters_and_power_cycles_a_lab_server(env, tmp_path: Path) -> None:
    if shutil.which("tmux") is None:
        missing_peer("tmux is not installed")
    lab = tmp_path / "lab"
    started = fleet(env, "lab", "start", "--dir", str(lab), "--racks", "1", "--servers-per-rack", "4", "--port",
                    PORT, "--no-ups", "--no-rack-power", "--no-ssh")
    assert started.returncode == 0, started.stderr
    tmux = Tmux("tui")
    rc_file = tmp_path / "tui.rc"
    try:
        assert fleet(env, "import", str(lab / "inventory.yaml"), "--secrets", str(lab / "secrets.yaml")
                     ).returncode == 0
        assert fleet(env, "sweep", "--no-ups").returncode == 0
        exports = " ".join(f"{k}={v}" for k, v in env.items() if k.startswith("FLEET_"))
        # The pause lets tmux give the pane its 160x50 size before the TUI asks for it.
        tmux.start(f"sleep 0.5; env {exports} {FLEET} tui --db {env['FLEET_DB']} --refresh 1; echo $? > {rc_file}")
        text = tmux.wait_for("Servers by lifecycle state (4)", "Last sweep")
        assert "deployed" in text

        # Type a filter: the window narrows to what the selector matches.
        tmux.keys("2")
        tmux.wait_for("4 match")
        tmux.keys("/")
        tmux.type("host=*s02")
        text = tmux.wait_for("1 match")
        assert "lab1-r01-s02" in text and "lab1-r01-s01" not in text and "lab1-r01-s03" not in text

        # Power-cycle it: the confirmation names it, with the verdict and the dry run.
        tmux.keys("Escape", "C")
        text = tmux.wait_for("Power cycle", "Touches (1): lab1-r01-s02", "Blast radius: within the limits")
        assert "power off, then on" in text
        tmux.keys("y")
        tmux.wait_for("lab1-r01-s02: done", timeout=60)

        # It reached the BMC (the audit says done, the BMC says on) and shows in the audit screen.
        entry = json.loads(fleet(env, "audit", "--action", "power.cycle", "--json").stdout)[0]
        assert entry["targets"] == ["lab1-r01-s02"] and entry["actor"] == "tech" and entry["result"] == "ok"
        assert entry["detail"]["outcomes"] == {"done": 1}
        status = json.loads(fleet(env, "power", "status", "lab1-r01-s02", "--json").stdout)
        assert status[0]["after"] == "on"
        tmux.keys("7")
        text = tmux.wait_for("power.cycle")
        assert "lab1-r01-s02" in text and "tech" in text

        # Quitting returns cleanly.
        tmux.keys("q")
        deadline = time.monotonic() + 15
        while tmux.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not tmux.alive()
        assert rc_file.read_text().strip() == "0"
    finally:
        tmux.kill()
        assert fleet(env, "lab", "stop", "--dir", str(lab)).returncode == 0


def test_plain_fleet_on_a_terminal_opens_the_tui_and_quits_cleanly(env, tmp_path: Path) -> None:
    if shutil.which("tmux") is None:
        missing_peer("tmux is not installed")
    tmux = Tmux("plain")
    rc_file = tmp_path / "plain.rc"
    try:
        exports = " ".join(f"{k}={v}" for k, v in env.items() if k.startswith("FLEET_"))
        tmux.start(f"sleep 0.5; env {exports} {FLEET}; echo $? > {rc_file}")
        tmux.wait_for("Servers by lifecycle state (0)", "Last sweep", "never")
        tmux.keys("q")
        deadline = time.monotonic() + 15
        while tmux.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not tmux.alive() and rc_file.read_text().strip() == "0"
    finally:
        tmux.kill()


def test_plain_fleet_without_a_terminal_prints_help(env) -> None:
    done = subprocess.run([FLEET], env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60,
                          check=False)
    assert done.returncode == 2 and "usage: fleet" in done.stdout and "tui" in done.stdout
