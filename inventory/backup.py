"""The encrypted credentials file of a backup (``fleet export --secrets FILE``), and the import helpers.

An inventory export never holds a secret. Its credentials travel apart, in a file sealed to a
passphrase, so that ``fleet import backup.yaml --secrets FILE`` restores a whole inventory into a
new one (whose own key ring re-seals every secret on the way in).

The file, ``rackfleet-secrets`` version 1, is three lines of ASCII::

    rackfleet-secrets 1
    {"kdf": {"name": "scrypt", "n": 32768, "r": 8, "p": 1, "salt": "..."}, "cipher": {...}, ...}
    BASE64(AES-256-GCM(ciphertext || tag))

The key is scrypt(passphrase, salt, n, r, p) with a salt per file; the nonce is random per file.
The first two lines (magic and header, bytes as written) are the AEAD's associated data, so any
change to them, to the ciphertext or to the tag fails the open as a wrong passphrase does. The
plaintext is JSON: ``{"credentials": [{"name", "kind", "username", "secret", "options"}...]}``.
Primitives are ``cryptography``'s (``Scrypt``, ``AESGCM``); nothing here is home-made but the framing.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from sqlalchemy import select

from fleet.errors import InputError, SecretError, ValidationError

from .models import Credential
from .records import CredentialRecord, build

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from .secrets import KeyRing

__all__ = [
    "MAGIC",
    "SCRYPT_N",
    "Unresolved",
    "credentials_plain",
    "drop_unresolved_credentials",
    "is_secrets_file",
    "open_secrets",
    "read_sealed",
    "read_secrets_file",
    "seal_secrets",
    "write_secrets_file",
]

MAGIC = b"rackfleet-secrets 1\n"
FORMAT_VERSION = 1
#: scrypt cost: 2**15 x r=8 is 32 MiB and ~0.1 s here; a file may ask for more, within the bounds below.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
_N_RANGE = (2**14, 2**20)  # what a file may ask for: below is too weak, above would exhaust memory
_R_RANGE, _P_RANGE = (1, 32), (1, 16)
_MAX_FILE = 64 * 1024 * 1024
MIN_PASSPHRASE = 8


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise binascii.Error(what)
    data = base64.b64decode(text.encode("ascii"), validate=True)
    if base64.b64encode(data).decode("ascii") != text:  # non-canonical (e.g. altered padding bits): not ours
        raise binascii.Error(what)
    return data


def _derive(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))


def seal_secrets(credentials: Sequence[Mapping[str, Any]], passphrase: str, *, n: int = SCRYPT_N) -> bytes:
    """The file's bytes for ``credentials`` (plain mappings: name, kind, username, secret, options)."""
    if len(passphrase) < MIN_PASSPHRASE:
        raise InputError(f"the passphrase must be at least {MIN_PASSPHRASE} characters")
    salt, nonce = os.urandom(16), os.urandom(12)
    header = json.dumps({
        "kdf": {"name": "scrypt", "n": n, "r": SCRYPT_R, "p": SCRYPT_P, "salt": _b64(salt)},
        "cipher": {"name": "aes-256-gcm", "nonce": _b64(nonce)},
        "count": len(credentials),
    }, sort_keys=True).encode("ascii") + b"\n"
    plain = json.dumps({"credentials": list(credentials)}, sort_keys=True).encode("utf-8")
    sealed = AESGCM(_derive(passphrase, salt, n, SCRYPT_R, SCRYPT_P)).encrypt(nonce, plain, MAGIC + header)
    return MAGIC + header + _b64(sealed).encode("ascii") + b"\n"


def open_secrets(data: bytes, passphrase: str, *, where: str = "secrets file") -> list[dict[str, Any]]:
    """The credentials sealed in ``data``; a one-line :class:`SecretError` for a wrong passphrase or an altered file."""
    if not data.startswith(MAGIC):
        raise InputError(f"{where}: not a Rackfleet secrets file (made by 'fleet export --secrets FILE')")
    altered = SecretError(f"{where}: cannot open it: wrong passphrase, or the file was altered")
    lines = data[len(MAGIC):].split(b"\n")
    if len(lines) != 3 or lines[2] != b"":
        raise altered
    header_line, body = lines[0] + b"\n", lines[1]
    try:
        header = json.loads(header_line)
        kdf, cipher = header["kdf"], header["cipher"]
        n, r, p = kdf["n"], kdf["r"], kdf["p"]
        if kdf["name"] != "scrypt" or cipher["name"] != "aes-256-gcm":
            raise ValueError("unknown algorithm")
        if not all(type(v) is int for v in (n, r, p)) or n & (n - 1) or not _N_RANGE[0] <= n <= _N_RANGE[1] \
                or not _R_RANGE[0] <= r <= _R_RANGE[1] or not _P_RANGE[0] <= p <= _P_RANGE[1]:
            raise ValueError("KDF parameters out of bounds")
        salt, nonce = _unb64(kdf["salt"], "salt"), _unb64(cipher["nonce"], "nonce")
        sealed = _unb64(body.decode("ascii"), "body")
        if len(salt) < 16 or len(nonce) != 12:
            raise ValueError("short salt or nonce")
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        raise altered from None
    try:
        plain = AESGCM(_derive(passphrase, salt, n, r, p)).decrypt(nonce, sealed, MAGIC + header_line)
    except InvalidTag:
        raise altered from None
    try:
        creds = json.loads(plain)["credentials"]
        if not isinstance(creds, list) or not all(isinstance(c, dict) for c in creds):
            raise ValueError
    except (ValueError, KeyError, TypeError):  # authentic but not ours: a bug or another version
        raise InputError(f"{where}: the decrypted content is not a list of credentials") from None
    return creds


def write_secrets_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``, created 0600 (never readable by others, even for an instant); replaces atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def is_secrets_file(path: Path) -> bool:
    """Whether ``path`` is an encrypted secrets file (else it may be a plain YAML ``credentials:`` file)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def read_sealed(paths: Sequence[Path], passphrase: str | Callable[[], str] | None
                ) -> tuple[list[Path], list[CredentialRecord]]:
    """(the plain YAML secrets files among ``paths``, the credentials of the encrypted ones).

    A file is read as encrypted when it starts as one or is not named ``*.yaml``/``*.yml`` (so an
    encrypted file altered in its first line still says so). ``passphrase`` may be a callable,
    asked once and only when an encrypted file is given.
    """
    def encrypted(path: Path) -> bool:  # a YAML credentials: file is named *.yaml / *.yml
        return is_secrets_file(path) or path.suffix.lower() not in (".yaml", ".yml")

    plain = [Path(p) for p in paths if not encrypted(Path(p))]
    sealed = [Path(p) for p in paths if encrypted(Path(p))]
    if not sealed:
        return plain, []
    if passphrase is None:
        raise InputError(f"{sealed[0]} is encrypted: give its passphrase")
    phrase = passphrase() if callable(passphrase) else passphrase
    return plain, [rec for path in sealed for rec in read_secrets_file(path, phrase)]


def read_secrets_file(path: Path, passphrase: str) -> list[CredentialRecord]:
    """The credential records of an encrypted secrets file, validated as an import's, secrets verbatim."""
    path = Path(path)
    try:
        if path.stat().st_size > _MAX_FILE:
            raise InputError(f"{path}: too large for a secrets file")
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read it ({exc.strerror})") from None
    out = []
    for i, cred in enumerate(open_secrets(data, passphrase, where=str(path))):
        secret = cred.get("secret")
        if not isinstance(secret, str) or not secret:
            raise ValidationError("a credential without its secret", field="secret", location=f"{path}#{i + 1}")
        raw = {k: cred.get(k) for k in ("name", "kind", "username", "options")}
        rec = build("credential", {k: v for k, v in raw.items() if v not in (None, {}, "")},
                    loc=f"{path}#{i + 1}")
        # The secret as it was sealed, byte for byte (a PEM key keeps its exact line ends).
        out.append(replace(rec, secret=secret))
    return out


def credentials_plain(conn: Connection, keyring: KeyRing) -> list[dict[str, Any]]:
    """Every credential with its secret opened, by name: what a secrets file holds. Handle with care."""
    rows = conn.execute(select(Credential.__table__).order_by(Credential.name)).mappings()
    return [{"name": r["name"], "kind": r["kind"], "username": r["username"] or "",
             "secret": keyring.open(r["secret"], name=f"credential {r['name']}").reveal(),
             "options": dict(r["options"] or {})} for r in rows]


@dataclass(frozen=True)
class Unresolved:
    """A device imported without the credential its file named (``--without-credentials``)."""

    kind: str  # server, ups, pdu
    name: str
    field: str  # bmc_credential, redfish_credential, ssh_credential, credential
    credential: str

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "field": self.field, "credential": self.credential}


_CRED_FIELDS = {"server": ("bmc_credential", "redfish_credential", "ssh_credential"), "ups": ("credential",),
                "pdu": ("credential",)}


def drop_unresolved_credentials(conn: Connection, records: Iterable[Any]) -> tuple[list[Any], list[Unresolved]]:
    """The records with references to credentials neither in the batch nor stored taken out, and what was taken.

    A device whose reference is taken out is created without a credential (an existing one keeps
    what it has: an absent value means "keep" in an import).
    """
    records = list(records)
    known = {r.name for r in records if getattr(r, "kind", None) == "credential"}
    known.update(conn.execute(select(Credential.name)).scalars())
    out: list[Any] = []
    left: list[Unresolved] = []
    for rec in records:
        fields = _CRED_FIELDS.get(getattr(rec, "kind", ""), ())
        missing = {f: getattr(rec, f) for f in fields if getattr(rec, f) is not None and getattr(rec, f) not in known}
        if missing:
            name = rec.hostname if rec.kind == "server" else rec.name
            left.extend(Unresolved(rec.kind, name, f, c) for f, c in missing.items())
            rec = replace(rec, **dict.fromkeys(missing))
        out.append(rec)
    left.sort(key=lambda u: (u.kind, u.name, u.field))
    return out, left
