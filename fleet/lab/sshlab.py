"""SSH hosts for the lab: real OpenSSH ``sshd`` answering on every lab server's primary IP.

Each lab server gets a primary IP on loopback (``127.20.x.y``) where ``sshd`` (OpenSSH's own, run with
``-D -f CONFIG``) answers on the lab's port number (TCP; the lab's BMCs use that number on UDP at their
own addresses), with a host key made for the lab and an authorized client key whose private half goes
into the lab's ``secrets.yaml`` (credential ``lab-ssh``). OpenSSH listens on at most 16 sockets per
daemon, so there is one ``sshd`` per 16 servers (about 4 MiB each). Their ``ForceCommand`` is
:data:`HOST_SCRIPT`, a small program that plays the server's operating system: it finds which server was
reached from ``$SSH_CONNECTION`` (the address the client connected to) and answers Rackfleet's facts
script (:data:`fleet.model.facts.FACTS_SCRIPT`) with that server's host name, kernel, DMI serial, disks
(``lsblk -J`` shape), SMART health (``smartctl --json`` shape) and NICs, and a few plain commands
(``hostname``, ``true``).

Decommissioning's wipe script (:data:`fleet.workflows.decommission.WIPE_SCRIPT`) is answered as a server would:
SSDs by a discard, hard disks by an overwrite, each verified.

Faults (``fleet lab fault HOST disk-failing|serial-changed|wipe-fails``) are kept in ``faults.json``,
written atomically, and read on every login: a failing disk answers SMART FAILED; a changed serial
answers another DMI serial (a swapped board); a failing wipe reports a write error on the last disk. The
SSH transport, authentication and host-key checks are the real sshd's; only the commands' output is
simulated. It needs root (sshd switches users and binds one address per server); without root,
:func:`start_ssh_lab` raises and the lab runs without SSH.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fleet.errors import FleetError, InputError, MissingDependency, NeedsRoot, PortInUse, Unavailable

from ._proc import cmdline_has, terminate
from .programs import SBIN_DIRS, find_program

__all__ = [
    "HOST_FAULTS",
    "SSHD",
    "SSH_PORT",
    "disks_of",
    "ssh_fault",
    "ssh_lab_available",
    "ssh_lab_problem",
    "start_ssh_lab",
    "stop_ssh_lab",
]

SSHD = "sshd"  # found with fleet.lab.programs.find_program: PATH, then the sbin folders
SSH_PORT = 2222
_LISTEN_PER_SSHD = 16
HOST_FAULTS = ("disk-failing", "serial-changed", "wipe-fails")
_PRIVSEP = Path("/run/sshd")

#: The "operating system" of a lab server: Python, run by sshd as the ForceCommand.
HOST_SCRIPT = r'''
import json, os, sys
here = os.path.dirname(os.path.abspath(__file__))
conn = os.environ.get("SSH_CONNECTION", "").split()
addr = conn[2] if len(conn) >= 3 else ""
with open(os.path.join(here, "hosts.json")) as fh:
    host = json.load(fh).get(addr)
if host is None:
    sys.stderr.write("no lab server at %s\n" % addr)
    sys.exit(255)
try:
    with open(os.path.join(here, "faults.json")) as fh:
        faults = json.load(fh).get(host["hostname"], {})
except (OSError, ValueError):
    faults = {}
cmd = os.environ.get("SSH_ORIGINAL_COMMAND", "")
serial = host["serial"] + ("-SWAPPED" if faults.get("serial-changed") else "")
M = "@@rackfleet"
if M + "-wipe" in cmd:  # decommissioning: SSDs take a discard, disks an overwrite; both read back as zeros
    import time
    overwrite = "WIPE_METHOD=overwrite" in cmd
    for i, d in enumerate(host["disks"]):
        fails = faults.get("wipe-fails") and i == len(host["disks"]) - 1
        method = "overwrite" if overwrite or d.get("kind") != "ssd" else "blkdiscard"
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        print(M + "-wipe " + json.dumps({
            "device": d["name"], "serial": d["serial"], "model": d["model"], "size": d["size"], "method": method,
            "result": "failed" if fails else "ok", "verified": not fails, "started": now, "finished": now,
            "error": "write error at sector 81920" if fails else ""}))
    print(M + "-wipe end")
elif M in cmd:
    out = [M + " hostname", host["hostname"], M + " kernel", "6.1.0-rackfleet-lab", M + " serial", serial]
    devices = [{"name": d["name"], "serial": d["serial"], "model": d["model"], "size": d["size"], "type": "disk"}
               for d in host["disks"]]
    out += [M + " lsblk", json.dumps({"blockdevices": devices})]
    for i, d in enumerate(host["disks"]):
        ok = not (faults.get("disk-failing") and i == len(host["disks"]) - 1)
        doc = {"json_format_version": [1, 0], "smartctl": {"version": [7, 3], "exit_status": 0 if ok else 8},
               "device": {"name": "/dev/" + d["name"], "type": "sat", "protocol": "ATA"},
               "model_name": d["model"], "serial_number": d["serial"], "smart_status": {"passed": ok}}
        out += [M + " smart " + d["name"], json.dumps(doc)]
    out += [M + " nics"] + ["%s %s physical" % (n["name"], n["mac"]) for n in host["nics"]]
    out += [M + " end"]
    print("\n".join(out))
elif cmd.strip() in ("hostname", "uname -n"):
    print(host["hostname"])
elif cmd.strip() in ("true", ""):
    pass
else:
    sys.stderr.write("lab server %s: command not simulated: %s\n" % (host["hostname"], cmd[:80]))
    sys.exit(127)
'''


def ssh_lab_problem() -> Unavailable | None:
    """Why SSH hosts cannot run here (:class:`~fleet.errors.NeedsRoot` or
    :class:`~fleet.errors.MissingDependency`, with the remedy), or None when they can."""
    if os.geteuid() != 0:
        return NeedsRoot("SSH hosts in the lab need root (sshd binds one address per server and switches users)",
                         remedy="run as root, or --no-ssh")
    if _sshd() is None or shutil.which("ssh-keygen") is None:
        return MissingDependency("SSH hosts in the lab need OpenSSH's sshd and ssh-keygen",
                                 remedy="install OpenSSH (Debian: apt install openssh-server), or --no-ssh")
    return None


def ssh_lab_available() -> str | None:
    """Why SSH hosts cannot run here, in one line with the remedy, or None when they can."""
    problem = ssh_lab_problem()
    return str(problem) if problem is not None else None


def _sshd() -> str | None:
    return find_program(SSHD, extra_dirs=SBIN_DIRS)


def disks_of(index: int) -> list[dict[str, Any]]:
    """The two disks of lab server number ``index`` (0-based): an SSD for the OS and an HDD for data."""
    return [
        {"slot": "0", "name": "sda", "kind": "ssd", "model": "LabSSD 480", "serial": f"LABD{index + 1:06d}A",
         "size": 480103981056},
        {"slot": "1", "name": "sdb", "kind": "hdd", "model": "LabHDD 4T", "serial": f"LABD{index + 1:06d}B",
         "size": 4000787030016},
    ]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "rackfleet-lab", "-f", str(path)],
                   check=True, timeout=30, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def start_ssh_lab(state: Path, hosts: list[dict[str, Any]], *, port: int = SSH_PORT) -> dict[str, str]:
    """Start one sshd for ``hosts`` (dicts: hostname, ip, serial, disks, nics); return the client key
    (``private_key``) and the host key line (``host_key``) for the inventory and secrets."""
    problem = ssh_lab_problem()
    if problem is not None:
        raise problem
    sshd = _sshd()
    assert sshd is not None
    state = state.resolve()  # sshd runs from / and re-reads its files for every connection
    state.mkdir(parents=True, exist_ok=True)
    os.chmod(state, 0o755)
    host_key, client_key = state / "ssh_host_ed25519_key", state / "client_ed25519"
    for key in (host_key, client_key):
        if not key.exists():
            _keygen(key)
    (state / "authorized_keys").write_text(client_key.with_suffix(".pub").read_text())
    os.chmod(state / "authorized_keys", 0o600)
    script = state / "labhost"
    script.write_text(f"#!{sys.executable} -I\n{HOST_SCRIPT}")
    os.chmod(script, 0o755)
    _write_json(state / "hosts.json", {h["ip"]: h for h in hosts})
    if not (state / "faults.json").exists():
        _write_json(state / "faults.json", {})
    # sshd's privilege-separation directory, as Debian's sshd service makes it. Left in place on stop: a
    # system directory every sshd on the machine (another lab's, a test's) needs while it runs.
    _PRIVSEP.mkdir(mode=0o755, exist_ok=True)
    # OpenSSH listens on at most 16 sockets per sshd (MAX_LISTEN_SOCKS): one sshd per 16 servers.
    groups = [hosts[i:i + _LISTEN_PER_SSHD] for i in range(0, len(hosts), _LISTEN_PER_SSHD)]
    procs = []
    try:
        for n, group in enumerate(groups):
            listen = "".join(f"ListenAddress {h['ip']}:{port}\n" for h in group)
            config = state / f"sshd_config.{n}"
            config.write_text(
                f"# Rackfleet lab: sshd {n} of {len(groups)}, for {len(group)} lab servers' primary IPs.\n{listen}"
                f"HostKey {host_key}\nPidFile none\nAuthorizedKeysFile {state / 'authorized_keys'}\n"
                "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
                "UsePAM no\nStrictModes no\nPrintMotd no\nLogLevel ERROR\nMaxStartups 100:30:200\n"
                f"ForceCommand {script}\nSubsystem sftp internal-sftp\n")
            with open(state / "sshd.log", "ab") as log:
                proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL,
                                        stdout=log, stderr=log, start_new_session=True)
            procs.append(proc)
            (state / f"sshd.{n}.pid").write_text(str(proc.pid))
        _wait_listening(state, procs, [g[-1]["ip"] for g in groups], port)
        failed = [line for line in (state / "sshd.log").read_text(errors="replace").splitlines()
                  if "Bind to port" in line or "Cannot bind" in line]
        if failed:  # sshd goes on when some of its addresses are taken: we do not
            raise PortInUse(f"lab sshd could not listen on every server's address ({len(failed)} failed: "
                            f"{failed[0].strip()})", remedy=f"another lab uses port {port}? stop it, or --no-ssh")
    except BaseException:
        stop_ssh_lab(state)
        raise
    return {"private_key": client_key.read_text(),
            "host_key": " ".join(host_key.with_suffix(".pub").read_text().split()[:2])}


def _wait_listening(state: Path, procs: list[subprocess.Popen], probes: list[str], port: int) -> None:
    import socket

    deadline = time.monotonic() + 20
    pending = list(zip(procs, probes, strict=True))
    while pending and time.monotonic() < deadline:
        proc, ip = pending[0]
        if proc.poll() is not None:
            raise FleetError(f"lab sshd exited: {(state / 'sshd.log').read_text()[-500:]}")
        with socket.socket() as s:  # listening is not enough: it must greet (its host key loads per connection)
            s.settimeout(2.0)
            with contextlib.suppress(OSError):
                if s.connect_ex((ip, port)) == 0 and s.recv(8).startswith(b"SSH-2.0"):
                    pending.pop(0)
                    continue
        time.sleep(0.05)
    if pending:
        raise FleetError(f"{len(pending)} lab sshd(s) did not start listening within 20 s")


def stop_ssh_lab(state: Path) -> bool:
    """Stop the lab's sshds (by PID, if they are ours)."""
    state = state.resolve()
    stopped = False
    for pid_file in sorted(state.glob("sshd.*.pid")):
        config = state / f"sshd_config.{pid_file.name.split('.')[1]}"
        with contextlib.suppress(ValueError, OSError):
            pid = int(pid_file.read_text().strip())
            stopped = terminate(pid, lambda p, c=config: cmdline_has(p, str(c).encode())) or stopped
        pid_file.unlink(missing_ok=True)
    return stopped


def ssh_fault(state: Path, hostname: str, kind: str, *, clear: bool = False) -> dict[str, bool]:
    """Set or clear a host fault (``disk-failing``, ``serial-changed``); returns the host's faults."""
    state = state.resolve()
    if kind not in HOST_FAULTS:
        raise InputError(f"unknown host fault {kind!r}; host faults: {', '.join(HOST_FAULTS)}")
    hosts = json.loads((state / "hosts.json").read_text())
    if hostname not in {h["hostname"] for h in hosts.values()}:
        raise InputError(f"no lab server {hostname!r} with SSH")
    faults = json.loads((state / "faults.json").read_text())
    mine = faults.setdefault(hostname, {})
    if clear:
        mine.pop(kind, None)
    else:
        mine[kind] = True
    if not mine:
        faults.pop(hostname)
    _write_json(state / "faults.json", faults)
    return dict(mine)
