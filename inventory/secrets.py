"""Credentials encrypted at rest.

Secrets are sealed with Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``). The key comes
from ``FLEET_SECRET_KEY`` (the key itself), else from the key file at ``FLEET_KEY_FILE``, else
``$XDG_CONFIG_HOME/rackfleet/secret.key`` (``~/.config/...``), which ``fleet init`` creates with
mode 0600. A check value sealed with the key is kept in the ``meta`` table, so a wrong key is
reported as such instead of as a corrupt credential.

Plain secrets exist only inside :class:`Secret`, whose ``repr``/``str`` never show them.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from fleet.errors import SecretError

__all__ = ["KeyRing", "Secret", "default_key_path", "load_or_create_key"]

_CHECK_PLAIN = b"rackfleet-key-check-v1"
CHECK_META_KEY = "secret_key_check"


class Secret:
    """A plain secret that never prints itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself: hand it to a driver, never to a log or an output."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self):
        raise TypeError("a Secret is not picklable")


def default_key_path() -> Path:
    explicit = os.environ.get("FLEET_KEY_FILE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "rackfleet" / "secret.key"


def load_or_create_key(path: Path | None = None, *, create: bool = False) -> bytes:
    """The Fernet key: ``FLEET_SECRET_KEY``, else the key file (made 0600 when ``create``)."""
    env = os.environ.get("FLEET_SECRET_KEY")
    if env:
        key = env.strip().encode()
        _check_key_format(key, "FLEET_SECRET_KEY")
        return key
    path = path or default_key_path()
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise SecretError(f"key file {path} is readable by others (mode {mode:o}); run: chmod 600 {path}")
        key = path.read_bytes().strip()
        _check_key_format(key, str(path))
        return key
    if not create:
        raise SecretError(f"no secret key: set FLEET_SECRET_KEY or run 'fleet init' to create {path}")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Fernet.generate_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key + b"\n")
    return key


def _check_key_format(key: bytes, where: str) -> None:
    try:
        Fernet(key)
    except (ValueError, TypeError):
        raise SecretError(f"{where} does not hold a valid key (32 url-safe base64-encoded bytes)") from None


class KeyRing:
    """Seals and opens secrets with one key."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    def seal(self, plain: str) -> bytes:
        return self._fernet.encrypt(plain.encode())

    def open(self, token: bytes, *, name: str = "credential") -> Secret:
        try:
            return Secret(self._fernet.decrypt(bytes(token)).decode())
        except InvalidToken:
            raise SecretError(f"{name}: cannot decrypt with this key (was the inventory made with another key?)"
                              ) from None

    def check_value(self) -> str:
        return self._fernet.encrypt(_CHECK_PLAIN).decode()

    def verify(self, check_value: str) -> None:
        try:
            ok = self._fernet.decrypt(check_value.encode()) == _CHECK_PLAIN
        except InvalidToken:
            ok = False
        if not ok:
            raise SecretError("this secret key is not the one this inventory's credentials were sealed with")
