"""Who may call back: installer callbacks checked against the tree's hosts table, late tokens spent once.

An answer file holds its host's callback token, and answer files are served to whoever asks: the
token alone proves nothing. A callback ``/cb/HOST/PHASE?token=T`` counts only when

1. it comes from the host's address (``ip`` in ``hosts.json``: the address the host was given by
   DHCP, from the imaging allocation) — else ``wrong-address``;
2. ``T`` is the host's token of this render (``HMAC(key, host + boot nonce)``, :func:`pxe.context.
   callback_token`; the key never reaches the tree) — else ``bad-token`` (a token of an earlier
   render, i.e. an earlier boot, is just as bad);
3. the token's time has not passed (``token_expires``, when the render set one) — else
   ``expired-token``;
4. its ``late`` callback was not made already: the first accepted ``late`` spends the token, and any
   callback with it afterwards is a replay — ``spent-token``.

Refusals are 403 with the reason in the access log (``var/http.jsonl``: ``ok`` false, ``reason``), so
the evidence reader sees them and they never count. Spent tokens are kept (as SHA-256 digests, never
the token) in ``var/callbacks-spent.jsonl``, which survives a restart of the server and a new install.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import IPv6Address, ip_address
from pathlib import Path

from .context import PHASES, verify_token
from .evidence import HostIndex

__all__ = ["REFUSALS", "SPENT_LOG", "CallbackGate", "Verdict"]

SPENT_LOG = "var/callbacks-spent.jsonl"
#: Why a callback was refused (the ``reason`` of its log line).
REFUSALS = ("unknown-host", "unknown-phase", "wrong-address", "bad-token", "expired-token", "spent-token")
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Verdict:
    status: int
    ok: bool
    reason: str | None = None


def _same_address(client: str | None, allowed: str) -> bool:
    if not client:
        return False
    try:
        addr = ip_address(client.split("%", 1)[0])
        if isinstance(addr, IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return addr == ip_address(allowed)
    except ValueError:
        return False


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class CallbackGate:
    """The callback rules for one served tree (see the module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.path = Path(root) / SPENT_LOG
        self._spent: set[str] | None = None

    def _load(self) -> set[str]:
        if self._spent is None:
            spent: set[str] = set()
            try:
                for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
                    try:
                        spent.add(str(json.loads(line)["token_sha256"]))
                    except (ValueError, KeyError, TypeError):
                        continue
            except FileNotFoundError:
                pass
            self._spent = spent
        return self._spent

    def _spend(self, host: str, token: str, now: datetime) -> None:
        digest = _digest(token)
        self._load().add(digest)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"ts": now.isoformat(timespec="milliseconds"), "host": host,
                                     "token_sha256": digest}, sort_keys=True) + "\n")
        except OSError as exc:  # kept in memory still: a replay to this server is refused
            log.error("cannot record a spent callback token in %s: %s", self.path, exc)

    def check(self, index: HostIndex, host: str, phase: str, token: str, client: str | None,
              now: datetime | None = None) -> Verdict:
        """Judge one callback; an accepted ``late`` spends its token."""
        entry = index.by_name.get(host)
        if entry is None:
            return Verdict(404, False, "unknown-host")
        if phase not in PHASES:
            return Verdict(404, False, "unknown-phase")
        if not _same_address(client, str(entry.get("ip", ""))):
            return Verdict(403, False, "wrong-address")
        if not verify_token(str(entry.get("token", "")), token):
            return Verdict(403, False, "bad-token")
        now = now or datetime.now(UTC)
        expires = entry.get("token_expires")
        if expires:
            try:
                if now >= datetime.fromisoformat(str(expires)):
                    return Verdict(403, False, "expired-token")
            except (ValueError, TypeError):
                return Verdict(403, False, "expired-token")  # an unreadable time: refuse, do not guess
        if _digest(token) in self._load():
            return Verdict(403, False, "spent-token")
        if phase == "late":
            self._spend(host, token, now)
        return Verdict(200, True)
