"""`make demo HEADLESS=1` on a machine without Debian's peers: NUT, net-snmp, OpenSSH and ipmitool hidden.

The demo runs (``python -m fleet.demo`` as the Makefile runs it) in a private mount namespace where an
empty tmpfs covers NUT's libexec folders and an empty, non-executable file covers every peer program, so
no lookup (PATH, /usr/sbin, /lib/nut) can find one. It must complete with UPS readings (the lab's NUT
stand-in), say in one line that there are no SSH hosts, and leave no process behind.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from .peers import missing_peer

HIDDEN = ("sshd", "ssh", "ssh-keygen", "ipmitool", "ipmi-power", "ipmi-sensors", "ipmi-sel", "ipmi-chassis",
          "bmc-info", "ipmi_sim", "snmpget", "snmpwalk", "snmpbulkwalk", "snmpset", "snmpd", "upsc", "upsd",
          "upscmd", "upsrw", "upsmon", "upsdrvctl", "dummy-ups")
BIN_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
NUT_DIRS = ("/lib/nut", "/usr/lib/nut")


def _hiding_script(empty: Path) -> str:
    """Shell lines run inside the namespace: tmpfs over NUT's folders, the empty file over each program."""
    lines = ["set -e", "mount --make-rprivate /"]
    for d in sorted({os.path.realpath(d) for d in NUT_DIRS if os.path.isdir(d)}):
        lines.append(f"mount -t tmpfs -o mode=0755 tmpfs {shlex.quote(d)}")
    seen = set()
    for d in BIN_DIRS:
        for name in HIDDEN:
            path = os.path.realpath(os.path.join(d, name))
            if os.path.exists(path) and path not in seen:
                seen.add(path)
                lines.append(f"mount --bind {shlex.quote(str(empty))} {shlex.quote(path)}")
    return "\n".join(lines)


def _ours(demo: Path) -> list[str]:
    """Processes whose command line or environment names the demo's folder."""
    found = []
    marker = str(demo).encode()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            blob = Path(f"/proc/{pid}/cmdline").read_bytes() + Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if marker in blob and int(pid) != os.getpid():
            found.append(f"{pid}: {Path(f'/proc/{pid}/cmdline').read_bytes()[:200]!r}")
    return found


def test_the_headless_demo_completes_with_nut_snmp_ssh_and_ipmitool_hidden(tmp_path: Path) -> None:
    if os.geteuid() != 0 or not Path("/usr/bin/unshare").exists():
        missing_peer("hiding the peers needs root and util-linux's unshare (a private mount namespace)")
    demo = tmp_path / "demo"
    demo.mkdir()
    empty = tmp_path / "empty"
    empty.write_text("")
    empty.chmod(0o644)
    check = ("import shutil, os, sys; from fleet.lab.programs import find_program, nut_dirs, SBIN_DIRS; "
             f"names = {HIDDEN!r}; "
             "found = {n: find_program(n, extra_dirs=nut_dirs() + SBIN_DIRS) for n in names}; "
             "found = {n: p for n, p in found.items() if p}; "
             "assert not found, found; assert not any(os.listdir(d) for d in ('/lib/nut', '/usr/lib/nut') "
             "if os.path.isdir(d)); print('peers hidden')")
    script = "\n".join([_hiding_script(empty), f"{shlex.quote(sys.executable)} -c {shlex.quote(check)}",
                        f"exec {shlex.quote(sys.executable)} -m fleet.demo"])
    env = {**os.environ, "FLEET_DB": str(demo / "fleet.db"), "FLEET_KEY_FILE": str(demo / "secret.key"),
           "DEMO_DIR": str(demo), "HEADLESS": "1", "DEMO_PORT": "16637", "COLUMNS": "250"}
    for name in ("FLEET_SECRET_KEY", "FLEET_LAB_NUT", "FLEET_NUT_LIBEXEC"):
        env.pop(name, None)
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script], env=env,
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    try:
        out = done.stdout + done.stderr
        (tmp_path / "demo.out").write_text(out)  # kept for a failure's post-mortem
        assert done.returncode == 0, out[-3000:]
        assert "peers hidden" in out
        assert "240 servers in 6 racks, 2 site(s)" in out
        assert "per-server UPSes: the lab's NUT stand-in" in out
        notices = [line for line in out.splitlines() if "no SSH hosts" in line]
        assert len(notices) == 1 and "OpenSSH" in notices[0], notices  # one line, and the demo went on
        # UPS readings: the per-server UPS put on battery and the rack UPS asking for a battery were read.
        assert "ups-on-battery ups-lab1-r05-s02" in out and "ups-battery-failing lab-ups-003" in out
        assert "internal error" not in out
        assert "plan (dry run" in out and "lab stopped" in out
        assert not (demo / "lab" / "lab.json").exists()
        assert _ours(demo) == []  # nothing of the lab runs on
    finally:
        if (demo / "lab" / "lab.json").exists():
            subprocess.run([str(Path(sys.executable).with_name("fleet")), "lab", "stop", "--dir", str(demo / "lab")],
                           env=env, timeout=120)


@pytest.mark.parametrize("name", ["upsd", "sshd"])
def test_the_hiding_script_covers_installed_peers(tmp_path: Path, name: str) -> None:
    """The namespace hides what is installed here (else the demo test would prove nothing)."""
    paths = [os.path.realpath(os.path.join(d, name)) for d in (*BIN_DIRS, *NUT_DIRS)
             if os.path.exists(os.path.join(d, name))]
    if not paths:
        missing_peer(f"{name} is not installed")
    script = _hiding_script(tmp_path / "empty")
    assert any(p in script for p in paths) or any(d in script for d in NUT_DIRS)
