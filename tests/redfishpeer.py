"""OpenStack's sushy-tools emulator (``sushy-emulator --fake``) as the tests' Redfish peer, with TLS and Basic auth.

One :class:`SushyPeer` is one emulator process on 127.0.0.1 and a free port, serving ``count`` fake
systems (``SUSHY_EMULATOR_FAKE_SYSTEMS``; each with one NIC of MAC ``52:54:00:00:00:NN``), over HTTPS
with a certificate made here with ``cryptography`` (:func:`make_cert`) and HTTP Basic auth from an
htpasswd file of bcrypt hashes (``SUSHY_EMULATOR_AUTH_FILE``). Its state (``SUSHY_EMULATOR_STATE_DIR``)
and files live in a temporary directory, removed on exit; the process is started by us and stopped by
its PID.

The fake driver applies a power change 1-11 s after accepting it (``random.randint(1, 11)``); to keep
the tests short the emulator is started through a few lines that narrow that draw to
:data:`POWER_DELAY` seconds (still later than the request: an accepted request is not a done one).
Nothing else of sushy-tools is changed.

Use::

    peer = sushy_peer_fixture(count=2)      # in a test module: a module-scoped fixture named ``sushy``
    target = sushy.target("fake0")          # a Target for system fake0, the certificate pinned
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fleet.drivers.base import Target
from inventory.secrets import Secret

from .peers import missing_peer

__all__ = ["PASSWORD", "POWER_DELAY", "USER", "SushyPeer", "free_port", "make_cert", "sushy_peer",
           "sushy_peer_fixture"]

USER, PASSWORD = "admin", "s3cret-pw"
#: The fake driver's delay before a power change shows, narrowed from 1-11 s (see the module docstring).
POWER_DELAY = (1, 2)

_LAUNCH = """
import random, sys
from sushy_tools.emulator.resources.systems import fakedriver
low, high = {low}, {high}
class _Narrow(random.Random):
    def randint(self, a, b):
        return super().randint(low, high)
fakedriver.random = _Narrow()
from sushy_tools.emulator.main import main
sys.argv = ["sushy-emulator", "--config", {config!r}, "--fake"]
main()
"""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def make_cert(directory: Path, name: str = "bmc", host: str = "127.0.0.1") -> tuple[Path, Path, bytes]:
    """A self-signed certificate for ``host`` (IP SAN) and its key: (cert path, key path, DER bytes)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} {host}")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path, cert.public_bytes(serialization.Encoding.DER)


def sushy_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("sushy_tools") is not None


@dataclass
class SushyPeer:
    workdir: Path
    count: int
    host: str = "127.0.0.1"
    port: int = 0
    der: bytes = b""
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def fingerprint(self) -> str:
        import hashlib

        return "sha256:" + hashlib.sha256(self.der).hexdigest()

    @property
    def cert_file(self) -> Path:
        return self.workdir / "bmc.crt"

    def systems(self) -> list[dict[str, Any]]:
        return [{"uuid": f"00000000-0000-4000-8000-{i:012d}", "name": f"fake{i}", "power_state": "Off",
                 "nics": [{"mac": f"52:54:00:00:00:{i:02x}", "ip": f"10.0.0.{i + 10}"}]} for i in range(self.count)]

    def target(self, system: str = "fake0", *, timeout: float = 5.0, password: str = PASSWORD,
               **options: Any) -> Target:
        opts: dict[str, Any] = {"credential_kind": "redfish", "tls_fingerprint": self.fingerprint,
                                "system": system, "confirm_timeout_s": 20.0, "poll_interval_s": 0.2}
        opts.update(options)
        return Target(f"sushy-{system}", self.host, self.port, USER, Secret(password), timeout, opts)

    def start(self) -> None:
        import bcrypt

        _, _, self.der = make_cert(self.workdir)
        auth = self.workdir / "htpasswd"
        auth.write_text(f"{USER}:{bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()}\n")
        self.port = free_port(self.host)
        config = self.workdir / "emulator.conf"
        config.write_text("\n".join(f"{k} = {v!r}" for k, v in {
            "SUSHY_EMULATOR_LISTEN_IP": self.host, "SUSHY_EMULATOR_LISTEN_PORT": self.port,
            "SUSHY_EMULATOR_SSL_CERT": str(self.workdir / "bmc.crt"),
            "SUSHY_EMULATOR_SSL_KEY": str(self.workdir / "bmc.key"),
            "SUSHY_EMULATOR_AUTH_FILE": str(auth), "SUSHY_EMULATOR_FAKE_DRIVER": True,
            "SUSHY_EMULATOR_FEATURE_SET": "full", "SUSHY_EMULATOR_STATE_DIR": str(self.workdir / "state"),
            "SUSHY_EMULATOR_FAKE_SYSTEMS": self.systems(),
        }.items()) + "\n")
        code = _LAUNCH.format(low=POWER_DELAY[0], high=POWER_DELAY[1], config=str(config))
        log = open(self.workdir / "emulator.log", "wb")  # noqa: SIM115 - the process owns it
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT,
                                     cwd=self.workdir, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                     start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sushy-emulator exited: {(self.workdir / 'emulator.log').read_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=0.5):
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("sushy-emulator did not listen within 30 s")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)


@contextlib.contextmanager
def sushy_peer(count: int = 2) -> Iterator[SushyPeer]:
    """A running emulator (skips, or fails under FLEET_REQUIRE_PEERS=1, without sushy-tools)."""
    if not sushy_available():
        missing_peer("sushy-tools is not installed (pip install sushy-tools)")
    workdir = Path(tempfile.mkdtemp(prefix="sushy-"))
    peer = SushyPeer(workdir, count)
    try:
        peer.start()
        yield peer
    finally:
        peer.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def sushy_peer_fixture(count: int = 2) -> Any:
    @pytest.fixture(scope="module")
    def sushy() -> Iterator[SushyPeer]:
        with sushy_peer(count) as peer:
            yield peer

    return sushy
