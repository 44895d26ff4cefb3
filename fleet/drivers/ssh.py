"""OpenSSH hosts through paramiko: run a command, collect facts, soft power actions.

paramiko blocks, so every call runs in a thread of a bounded pool (``workers``, default 16): at most
that many SSH sessions are open at once, whatever the number of callers. Each call opens one SSH
connection, runs one command and closes it.

Deadlines (seconds): TCP connect, SSH banner, key exchange and authentication each finish within
``Target.timeout``; the command within ``timeout=`` (default ``options["command_timeout"]``, else 30).
A call therefore ends within about 4 x ``Target.timeout`` + the command's deadline, whatever the peer does.

Host keys (``Target.options``):

- ``known_host_key`` (``"ssh-ed25519 AAAA..."``): enforced. Only that key type is negotiated and the
  key must match, else :class:`HostKeyMismatch` naming both SHA256 fingerprints. No credential is sent
  to a server whose key does not match.
- absent, with ``pin_on_first_contact`` true (commissioning): any key is accepted and returned
  (:meth:`SshDriver.facts` result ``host_key``, :meth:`SshDriver.host_key`) for the caller to pin.
- absent otherwise: refused with :class:`HostKeyNotPinned` before authenticating. Never AutoAddPolicy.

Authentication: ``options["private_key"]`` (a :class:`~inventory.secrets.Secret` or a string holding a
PEM/OpenSSH private key text, or a path to a key file; ``options["private_key_passphrase"]`` for an
encrypted one), else ``Target.password``. Secrets never reach logs or error messages.

Errors, mapped here (:func:`_map_errors`) and nowhere else: refused/no route ->
:class:`~fleet.errors.DeviceUnreachable`; connect/banner/command timeouts ->
:class:`~fleet.errors.DeviceTimeout`; ``AuthenticationException`` -> :class:`~fleet.errors.AuthFailed`;
host key mismatch -> :class:`HostKeyMismatch`; other SSH protocol failures ->
:class:`~fleet.errors.RetryableError`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import logging
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import paramiko

from fleet.drivers.base import CommandResult, PowerControl, PowerState, RemoteShell, Setting, Target
from fleet.drivers.sshfacts import FACTS_SCRIPT, Facts, parse_facts
from fleet.errors import (
    AuthFailed,
    DeviceTimeout,
    DeviceUnreachable,
    DriverError,
    FatalError,
    RetryableError,
    Unsupported,
)
from inventory.secrets import Secret

__all__ = ["HostKeyMismatch", "HostKeyNotPinned", "SshDriver", "fingerprint"]

log = logging.getLogger(__name__)

DEFAULT_COMMAND_TIMEOUT = 30.0
_POLL = 0.005


class HostKeyMismatch(FatalError):
    """The server's host key is not the pinned one: a reinstalled host, or someone in between."""

    def __init__(self, message: str, *, expected: str, seen: str, target: str | None = None,
                 operation: str | None = None) -> None:
        self.expected = expected
        self.seen = seen
        super().__init__(message, target=target, operation=operation)


class HostKeyNotPinned(FatalError):
    """No host key is pinned for this server and pinning on first contact was not asked for."""


def fingerprint(key_line: str) -> str:
    """``SHA256:...`` (as ``ssh-keygen -l`` prints it) of an ``"<type> <base64>"`` key line."""
    try:
        blob = base64.b64decode(key_line.split()[1])
    except (IndexError, ValueError):
        return "SHA256:(unreadable key)"
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _key_line(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.get_base64()}"


_RSA_ALGORITHMS = ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"]


def _host_key_algorithms(key_type: str) -> list[str]:
    return _RSA_ALGORITHMS if key_type == "ssh-rsa" else [key_type]


@contextlib.contextmanager
def _map_errors(target: Target, operation: str) -> Iterator[None]:
    """paramiko's and the socket layer's errors -> fleet.errors, with target and operation."""
    name = target.name
    try:
        yield
    except DriverError:
        raise
    except paramiko.AuthenticationException as exc:  # includes BadAuthenticationType
        raise AuthFailed(f"SSH authentication refused for user {target.username!r} ({type(exc).__name__})",
                         target=name, operation=operation) from None
    except ConnectionRefusedError:
        raise DeviceUnreachable(f"connection refused by {target.address}", target=name,
                                operation=operation) from None
    except TimeoutError:
        raise DeviceTimeout(f"no answer from {target.address} within {target.timeout:g} s", target=name,
                            operation=operation) from None
    except paramiko.SSHException as exc:
        text = str(exc)
        if "banner" in text.lower() or "timeout" in text.lower() or "timed out" in text.lower():
            raise DeviceTimeout(f"no SSH banner/handshake from {target.address} within {target.timeout:g} s "
                                f"({text})", target=name, operation=operation) from None
        if "host key" in text.lower():
            pinned = str(target.options.get("known_host_key") or "")
            raise HostKeyMismatch(f"server at {target.address} does not offer the pinned host key type "
                                  f"{pinned.split()[0] if pinned else '?'} ({fingerprint(pinned)}): {text}",
                                  expected=fingerprint(pinned), seen="", target=name, operation=operation) from None
        raise RetryableError(f"SSH failure with {target.address}: {text}", target=name,
                             operation=operation) from None
    except EOFError:
        raise RetryableError(f"{target.address} closed the SSH connection", target=name,
                             operation=operation) from None
    except OSError as exc:
        raise DeviceUnreachable(f"cannot reach {target.address}: {exc.strerror or exc}", target=name,
                                operation=operation) from None


def _load_private_key(value: Any, passphrase: str | None) -> paramiko.PKey:
    text = value.reveal() if isinstance(value, Secret) else value
    if isinstance(text, paramiko.PKey):
        return text
    if not isinstance(text, str) or not text.strip():
        raise FatalError("options['private_key'] must be key text or a path")
    if "-----BEGIN" not in text:
        path = Path(text).expanduser()
        try:
            text = path.read_text()
        except OSError as exc:
            raise FatalError(f"cannot read private key file {path}: {exc.strerror}") from None
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key(io.StringIO(text), password=passphrase)
        except paramiko.PasswordRequiredException:
            raise FatalError("the private key is encrypted and no passphrase was given") from None
        except (paramiko.SSHException, ValueError, TypeError):
            continue
    raise FatalError("options['private_key'] is not a readable Ed25519, ECDSA or RSA private key")


class SshDriver(RemoteShell, PowerControl):
    """Servers' own OpenSSH daemons. ``SshDriver(workers=16)`` opens nothing until called.

    Close with ``await driver.aclose()`` (``driver.close()`` from synchronous code, or
    ``async with SshDriver() as driver``).
    """

    name = "ssh"
    settings = (
        Setting("port", int, 22, help="sshd's TCP port"),
        Setting("username", str, "root", help="login user"),
        Setting("password", str, None, secret=True, help="password (when no private key is given)"),
        Setting("private_key", str, None, secret=True, help="private key text (PEM/OpenSSH) or a key file path"),
        Setting("known_host_key", str, None, help='pinned host key, "ssh-ed25519 AAAA..."'),
        Setting("pin_on_first_contact", bool, False, help="accept and return an unpinned host key (commissioning)"),
        Setting("timeout", float, 5.0, help="deadline of connect, banner, key exchange and auth, seconds"),
        Setting("command_timeout", float, DEFAULT_COMMAND_TIMEOUT, help="deadline of a command, seconds"),
    )

    def __init__(self, *, workers: int = 16) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.workers = workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fleet-ssh")
        self._lock = threading.Lock()
        self._in_flight = 0
        #: Most sessions open at once so far (for tests and benches).
        self.peak_in_flight = 0

    # -- plumbing ------------------------------------------------------------------------------

    async def _call(self, fn: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, fn, *args)

    def _session(self, target: Target, operation: str, command: str | None,
                 timeout: float | None) -> tuple[CommandResult | None, str]:
        """Connect, check the host key, authenticate, run ``command``; returns (result, seen host key)."""
        with self._lock:
            self._in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
        try:
            with _map_errors(target, operation):
                return self._session_inner(target, operation, command, timeout)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _session_inner(self, target: Target, operation: str, command: str | None,
                       timeout: float | None) -> tuple[CommandResult | None, str]:
        opts = target.options
        pinned = opts.get("known_host_key")
        pinned = str(pinned).strip() if pinned else None
        bound = target.timeout
        sock = socket.create_connection((target.host, target.port), timeout=bound)
        transport = None
        try:
            sock.settimeout(bound)
            transport = paramiko.Transport(sock)
            transport.banner_timeout = bound
            transport.handshake_timeout = bound
            transport.auth_timeout = bound
            if pinned:
                transport.get_security_options().key_types = _host_key_algorithms(pinned.split()[0])
            negotiated = threading.Event()
            transport.start_client(event=negotiated)
            negotiated.wait(bound)
            if not transport.is_active():
                raise transport.get_exception() or paramiko.SSHException("negotiation failed")
            if not negotiated.is_set():
                raise DeviceTimeout(f"SSH key exchange with {target.address} did not finish within {bound:g} s",
                                    target=target.name, operation=operation)
            seen = _key_line(transport.get_remote_server_key())
            if pinned:
                if pinned.split()[:2] != seen.split()[:2]:
                    raise HostKeyMismatch(
                        f"host key mismatch at {target.address}: pinned {fingerprint(pinned)}, "
                        f"server presented {fingerprint(seen)} ({seen.split()[0]})",
                        expected=fingerprint(pinned), seen=fingerprint(seen), target=target.name, operation=operation)
            elif not opts.get("pin_on_first_contact"):
                raise HostKeyNotPinned(
                    f"no pinned host key for {target.address} (server presented {fingerprint(seen)}); "
                    "pin it at commissioning (pin_on_first_contact) or set known_host_key",
                    target=target.name, operation=operation)
            if command is None:
                return None, seen
            self._authenticate(transport, target)
            return self._exec(transport, target, operation, command, timeout), seen
        finally:
            if transport is not None:
                transport.close()
            sock.close()

    @staticmethod
    def _authenticate(transport: paramiko.Transport, target: Target) -> None:
        opts = target.options
        user = target.username or "root"
        if opts.get("private_key"):
            passphrase = opts.get("private_key_passphrase")
            if isinstance(passphrase, Secret):
                passphrase = passphrase.reveal()
            key = _load_private_key(opts["private_key"], passphrase)
            transport.auth_publickey(user, key)
        elif target.password is not None:
            transport.auth_password(user, target.password.reveal())
        else:
            raise AuthFailed("no private key or password configured")
        if not transport.is_authenticated():
            raise paramiko.AuthenticationException("not authenticated")

    @staticmethod
    def _exec(transport: paramiko.Transport, target: Target, operation: str, command: str,
              timeout: float | None) -> CommandResult:
        limit = timeout if timeout is not None else float(target.options.get("command_timeout")
                                                          or DEFAULT_COMMAND_TIMEOUT)
        deadline = time.monotonic() + limit
        chan = transport.open_session(timeout=target.timeout)
        try:
            chan.settimeout(limit)
            chan.exec_command(command)
            out: list[bytes] = []
            err: list[bytes] = []
            while True:
                got = False
                while chan.recv_ready():
                    out.append(chan.recv(65536))
                    got = True
                while chan.recv_stderr_ready():
                    err.append(chan.recv_stderr(65536))
                    got = True
                if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                if time.monotonic() > deadline:
                    raise DeviceTimeout(f"command did not finish within {limit:g} s", target=target.name,
                                        operation=operation)
                if not got:
                    chan.status_event.wait(_POLL)
            status = chan.recv_exit_status()
        finally:
            chan.close()
        return CommandResult(status, b"".join(out).decode("utf-8", "replace"), b"".join(err).decode("utf-8", "replace"))

    # -- RemoteShell ---------------------------------------------------------------------------

    async def run(self, target: Target, command: str, *, timeout: float | None = None) -> CommandResult:
        """Run ``command`` through the login shell; its exit status is returned, not raised."""
        result, _ = await self._call(self._session, target, "run", command, timeout)
        return result

    async def host_key(self, target: Target) -> str:
        """The host key the server presents (``"ssh-ed25519 AAAA..."``), checked as usual, without logging in."""
        _, seen = await self._call(self._session, target, "host key", None, None)
        return seen

    async def collect_facts(self, target: Target, *, timeout: float | None = None) -> Facts:
        """One session running :data:`fleet.model.facts.FACTS_SCRIPT`, parsed; ``host_key`` is the key seen."""
        result, seen = await self._call(self._session, target, "facts", FACTS_SCRIPT, timeout)
        if result.exit_status != 0 and "@@rackfleet end" not in result.stdout:
            raise RetryableError(f"facts script failed (exit {result.exit_status}): {result.stderr.strip()[:200]}",
                                 target=target.name, operation="facts")
        return parse_facts(result.stdout, host_key=seen)

    async def facts(self, target: Target, *, timeout: float | None = None) -> dict[str, Any]:
        """:meth:`collect_facts` as a plain dict (hostname, kernel, serial, disks, nics, host_key, problems)."""
        return (await self.collect_facts(target, timeout=timeout)).as_dict()

    # -- PowerControl (soft only: the OS shuts itself down) -------------------------------------

    async def _soft(self, target: Target, command: str, operation: str) -> None:
        try:
            result = await self.run(target, command, timeout=target.timeout)
        except RetryableError:
            # The server may drop the session while going down: the caller confirms through the BMC.
            log.info("%s: %s: session ended while shutting down", target.name, operation)
            return
        if result.exit_status not in (0, -1):
            raise FatalError(f"{command!r} exited {result.exit_status}: {result.stderr.strip()[:200]}",
                             target=target.name, operation=operation)

    async def power_status(self, target: Target) -> PowerState:
        """``on`` when sshd answers; ``unknown`` otherwise (SSH cannot tell "off" from "unreachable")."""
        try:
            await self.host_key(target)
        except RetryableError:
            return "unknown"
        return "on"

    async def power_on(self, target: Target) -> None:
        raise Unsupported("a server cannot be powered on over SSH; use its BMC", target=target.name,
                          operation="power on")

    async def power_off(self, target: Target) -> None:
        await self._soft(target, "systemctl poweroff", "power off")

    async def power_soft(self, target: Target) -> None:
        await self._soft(target, "systemctl poweroff", "soft power off")

    async def power_cycle(self, target: Target) -> None:
        await self._soft(target, "systemctl reboot", "power cycle")

    async def power_reset(self, target: Target) -> None:
        await self._soft(target, "systemctl reboot", "power reset")

    # -- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    async def aclose(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    async def __aenter__(self) -> SshDriver:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
