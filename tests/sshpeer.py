"""OpenSSH's own ``sshd`` on loopback, for real-peer tests of the SSH driver.

One :class:`SshPeer` is one ``/usr/sbin/sshd -D -e -f CONFIG -p PORT`` listening on 127.0.0.1 on a free
port, with its own Ed25519 host key (``ssh-keygen`` into a temporary directory), ``UsePAM no``,
``StrictModes no`` and an ``AuthorizedKeysFile`` in that directory holding a client key made for the
test. It logs in as the user running the tests (root: sshd needs privilege to switch users; as
non-root the peer is skipped, or fails under FLEET_REQUIRE_PEERS=1). Nothing under ``/root/.ssh`` or
``/etc`` is touched; the only system change is creating sshd's privilege-separation directory
``/run/sshd`` when it is missing (left in place: another sshd, a lab's or a parallel test's, may need it).

``SetEnv PATH=<tmp>/bin:...`` puts stub ``lsblk``, ``smartctl`` and ``dmidecode`` scripts first on the
session's PATH, so facts see canned disks: ``sda`` (serial ``S1HEALTHY``, SMART PASSED) and ``sdb``
(serial ``S2FAILING``, SMART FAILED), and DMI serial :data:`STUB_SERIAL` (unless the kernel's own
``/sys/class/dmi/id/product_serial`` is readable, which the facts script prefers).

``PasswordAuthentication yes`` is on, but no password is set anywhere: a password login is always
refused, which is what the tests check of the password path.

:meth:`SshPeer.restart` (``new_host_key=True``) restarts sshd on the same port with a new host key: a
reinstalled server. Every process is ours and stopped by its PID; the directory is removed on exit.

Use::

    with ssh_peer() as peer:
        peer.target()             # a Target logging in with the client key
        peer.host_key_line        # "ssh-ed25519 AAAA..."
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet.drivers.base import Target
from inventory.secrets import Secret

from .peers import missing_peer

__all__ = ["SSHD", "STUB_DISKS", "STUB_SERIAL", "SshPeer", "free_port", "ssh_peer", "sshd_available"]

SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = Path("/run/sshd")
STUB_SERIAL = "RF-STUB-0001"
#: (name, serial, model, size, SMART passed)
STUB_DISKS = (
    ("sda", "S1HEALTHY", "Stub SSD 480", 480103981056, True),
    ("sdb", "S2FAILING", "Stub HDD 4T", 4000787030016, False),
)


def sshd_available() -> bool:
    return os.access(SSHD, os.X_OK) and shutil.which("ssh-keygen") is not None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _lsblk_stub() -> str:
    import json

    devices: list[dict[str, Any]] = []
    for name, serial, model, size, _ in STUB_DISKS:
        devices.append({"name": name, "serial": serial, "model": model, "size": size, "type": "disk",
                        "children": [{"name": f"{name}1", "serial": None, "model": None, "size": size - 1048576,
                                      "type": "part"}]})
    devices.append({"name": "loop0", "serial": None, "model": None, "size": 4096, "type": "loop"})
    blob = json.dumps({"blockdevices": devices}, indent=3)
    plain = "\n".join(f"{d[0]} disk" for d in STUB_DISKS) + "\nloop0 loop"
    return f"""#!/bin/sh
case " $* " in
  *" -J "*) cat <<'EOF'
{blob}
EOF
  ;;
  *) cat <<'EOF'
{plain}
EOF
  ;;
esac
"""


def _smartctl_stub() -> str:
    import json

    cases = []
    for name, serial, model, _, passed in STUB_DISKS:
        doc = {"json_format_version": [1, 0], "smartctl": {"version": [7, 3], "exit_status": 0 if passed else 8},
               "device": {"name": f"/dev/{name}", "type": "sat", "protocol": "ATA"},
               "model_name": model, "serial_number": serial, "smart_status": {"passed": passed}}
        code = 0 if passed else 8
        cases.append(f"  /dev/{name}) cat <<'EOF'\n{json.dumps(doc)}\nEOF\n  exit {code};;")
    body = "\n".join(cases)
    return f"""#!/bin/sh
for last; do :; done
case "$last" in
{body}
  *) echo '{{"smartctl": {{"exit_status": 2, "messages": [{{"string": "no such device", "severity": "error"}}]}}}}'
     exit 2;;
esac
"""


@dataclass
class SshPeer:
    """One sshd on 127.0.0.1: its port, host key, client key, and the directory it all lives in."""

    root: Path
    port: int
    proc: subprocess.Popen | None = None
    host_key_line: str = ""
    client_key_path: Path = field(default_factory=Path)
    stubs: bool = True  # stub lsblk/smartctl/dmidecode first on PATH (False: the system's own tools)

    # -- files ---------------------------------------------------------------------------------

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    @property
    def client_key_text(self) -> str:
        return self.client_key_path.read_text()

    def _keygen(self, path: Path) -> None:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "rackfleet-test", "-f", str(path)],
                       check=True, timeout=20, stdin=subprocess.DEVNULL)

    def new_host_key(self) -> None:
        key = self.root / "ssh_host_ed25519_key"
        for p in (key, key.with_suffix(".pub")):
            p.unlink(missing_ok=True)
        self._keygen(key)
        self.host_key_line = " ".join(key.with_suffix(".pub").read_text().split()[:2])

    def new_client_key(self, name: str) -> Path:
        """A fresh client key pair in the temp dir (not authorized unless :meth:`authorize` is called)."""
        path = self.root / name
        self._keygen(path)
        return path

    def authorize(self, key_path: Path) -> None:
        with open(self.root / "authorized_keys", "a") as f:
            f.write(key_path.with_suffix(".pub").read_text())

    def _write(self) -> None:
        self.bin_dir.mkdir(exist_ok=True)
        search_path = ":".join(([str(self.bin_dir)] if self.stubs else []) + [
            "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"])
        stubs = {"lsblk": _lsblk_stub(), "smartctl": _smartctl_stub(),
                 "dmidecode": f"#!/bin/sh\necho {STUB_SERIAL}\n"}
        for name, text in stubs.items():
            path = self.bin_dir / name
            path.write_text(text)
            path.chmod(0o755)
        (self.root / "sshd_config").write_text(
            f"""ListenAddress 127.0.0.1
Port {self.port}
HostKey {self.root / 'ssh_host_ed25519_key'}
PidFile {self.root / 'sshd.pid'}
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication yes
PermitEmptyPasswords no
KbdInteractiveAuthentication no
AuthorizedKeysFile {self.root / 'authorized_keys'}
SetEnv PATH={search_path}
MaxStartups 100:30:200
MaxSessions 100
LoginGraceTime 30
PrintMotd no
UseDNS no
LogLevel ERROR
Subsystem sftp internal-sftp
""")

    # -- process -------------------------------------------------------------------------------

    def start(self) -> None:
        self._write()
        with open(self.root / "sshd.log", "ab") as log:
            self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.root / "sshd_config"), "-p", str(self.port)],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                                         start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited {self.proc.returncode}: {(self.root / 'sshd.log').read_text()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.settimeout(2)
                if s.recv(64).startswith(b"SSH-"):
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("sshd did not start listening within 10 s")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):  # our own process group: the listener and its sessions
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def restart(self, *, new_host_key: bool = False) -> None:
        self.stop()
        if new_host_key:
            self.new_host_key()
        self.start()

    def target(self, *, name: str = "peer", timeout: float = 5.0, **options: Any) -> Target:
        """A Target logging in as the current user with the authorized client key, host key pinned."""
        opts: dict[str, Any] = {"private_key": Secret(self.client_key_text), "known_host_key": self.host_key_line}
        opts.update(options)
        opts = {k: v for k, v in opts.items() if v is not None}
        return Target(name=name, host="127.0.0.1", port=self.port, username=_user(), timeout=timeout, options=opts)


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


@contextlib.contextmanager
def ssh_peer(*, stubs: bool = True) -> Iterator[SshPeer]:
    """A running sshd; skips (fails under FLEET_REQUIRE_PEERS=1) without sshd or without root."""
    if not sshd_available():
        missing_peer(f"OpenSSH server not installed ({SSHD} and ssh-keygen needed)")
    if os.geteuid() != 0:
        missing_peer("sshd peer needs root (privilege separation, logging in as a user)")
    PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="fleet-sshd-"))
    root.chmod(0o755)
    peer = SshPeer(root=root, port=free_port(), stubs=stubs)
    try:
        peer.new_host_key()
        peer.client_key_path = peer.new_client_key("client_key")
        peer.authorize(peer.client_key_path)
        peer.start()
        yield peer
    finally:
        peer.stop()
        shutil.rmtree(root, ignore_errors=True)

