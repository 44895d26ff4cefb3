"""What the SNMP session and its USM layer share: one agent's connection settings and a PDU's error.

A :class:`_Conn` is cached per (target, credentials, timing) by :class:`~.session.SnmpSession`; for
v1/v2c it carries pysnmp's v1arch community and transport target, for v3 the user, keys and the
engine ID and target address :class:`~.v3.Usm` configured. :class:`_PduError` is an errorStatus
answered for a whole PDU (RFC 3416), which the caller turns into a split, a retry per OID, or a
fleet error.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

# SNMP errorStatus values (RFC 3416).
_TOO_BIG, _NO_SUCH_NAME, _BAD_VALUE, _READ_ONLY, _GEN_ERR, _NO_ACCESS = 1, 2, 3, 4, 5, 6
_ERROR_STATUS = {
    0: "noError", 1: "tooBig", 2: "noSuchName", 3: "badValue", 4: "readOnly", 5: "genErr", 6: "noAccess",
    7: "wrongType", 8: "wrongLength", 9: "wrongEncoding", 10: "wrongValue", 11: "noCreation",
    12: "inconsistentValue", 13: "resourceUnavailable", 14: "commitFailed", 15: "undoFailed",
    16: "authorizationError", 17: "notWritable", 18: "inconsistentName",
}


class _PduError(Exception):
    """An errorStatus for the whole PDU; the caller decides what it means (split, per OID, or fail)."""

    def __init__(self, status: int, index: int) -> None:
        super().__init__(_ERROR_STATUS.get(status, str(status)))
        self.status = status
        self.index = index


@dataclass
class _Conn:
    key: tuple[Any, ...]
    version: str                 # "1" | "2c" | "3"
    host: str
    port: int
    timeout: float
    retries: int
    community: str = ""
    user: str = ""
    auth_proto: str = "SHA"
    priv_proto: str = "AES"
    auth_key: str = field(default="", repr=False)
    priv_key: str = field(default="", repr=False)
    v1_auth: Any = None          # v1arch CommunityData
    v1_target: Any = None        # v1arch UdpTransportTarget
    addr_name: str | None = None  # v3arch target address name
    engine_id: bytes | None = None
    lock: asyncio.Lock | None = None

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def budget(self) -> float:
        return self.timeout * (self.retries + 1)
