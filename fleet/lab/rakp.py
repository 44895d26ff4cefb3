"""RMCP+ session establishment on the wire: Open Session and RAKP messages 1-4, and their key codes.

Pure value types and functions over :mod:`fleet.lab.rmcp` (IPMI v2.0 rev. 1.1, 13.17-13.23 and
13.31-13.32): the lab BMC's session layer (:mod:`fleet.lab.rmcpsession`) parses requests and builds
answers with them, the tests use them as a console. ``auth_code``/``icv`` functions compute what
RAKP 2, RAKP 3 and RAKP 4 carry; :func:`session_integrity_key` gives the SIK from which
:class:`~fleet.lab.rmcp.SessionKeys` derives K1 and K2.
"""

from __future__ import annotations

import dataclasses
import struct

from .rmcp import CipherSuite, ProtocolError, RmcppStatus, find_cipher_suite

__all__ = [
    "OpenSessionRequest",
    "OpenSessionResponse",
    "Rakp1",
    "Rakp2",
    "Rakp3",
    "Rakp4",
    "rakp2_auth_code",
    "rakp3_auth_code",
    "rakp4_icv",
    "session_integrity_key",
]

# ---------------------------------------------------------------------------------------------
# Key exchange codes (13.31, 13.32)
# ---------------------------------------------------------------------------------------------


def rakp2_auth_code(suite: CipherSuite, kuid: bytes, console_sid: int, bmc_sid: int, console_random: bytes,
                    bmc_random: bytes, bmc_guid: bytes, role: int, username: bytes) -> bytes:
    """RAKP 2 Key Exchange Authentication Code: HMAC_Kuid(SIDm, SIDc, Rm, Rc, GUIDc, ROLEm, ULENm, UNAMEm)."""
    data = (struct.pack("<II", console_sid, bmc_sid) + console_random + bmc_random + bmc_guid
            + bytes([role, len(username)]) + username)
    return suite.hmac(kuid, data)


def rakp3_auth_code(suite: CipherSuite, kuid: bytes, bmc_random: bytes, console_sid: int, role: int,
                    username: bytes) -> bytes:
    """RAKP 3 Key Exchange Authentication Code: HMAC_Kuid(Rc, SIDm, ROLEm, ULENm, UNAMEm)."""
    data = bmc_random + struct.pack("<I", console_sid) + bytes([role, len(username)]) + username
    return suite.hmac(kuid, data)


def session_integrity_key(suite: CipherSuite, kg: bytes, console_random: bytes, bmc_random: bytes, role: int,
                          username: bytes) -> bytes:
    """SIK = HMAC_Kg(Rm, Rc, ROLEm, ULENm, UNAMEm); with no BMC key Kg is the user's password."""
    return suite.hmac(kg, console_random + bmc_random + bytes([role, len(username)]) + username)


def rakp4_icv(suite: CipherSuite, sik: bytes, console_random: bytes, bmc_sid: int, bmc_guid: bytes) -> bytes:
    """RAKP 4 Integrity Check Value: HMAC_SIK(Rm, SIDc, GUIDc), truncated to the suite's length."""
    return suite.hmac(sik, console_random + struct.pack("<I", bmc_sid) + bmc_guid)[:suite.icv_len]


# ---------------------------------------------------------------------------------------------
# RMCP+ session establishment
# ---------------------------------------------------------------------------------------------


def _algorithm_payload(kind: int, algorithm: int | None) -> bytes:
    """One 8-byte algorithm payload; ``None`` gives a null payload (length 0: "let the BMC choose")."""
    if algorithm is None:
        return bytes([kind, 0, 0, 0, 0, 0, 0, 0])
    return bytes([kind, 0, 0, 8, algorithm, 0, 0, 0])


@dataclasses.dataclass(frozen=True, slots=True)
class OpenSessionRequest:
    """RMCP+ Open Session Request (table 13-16a). An algorithm of None was proposed as "any"."""

    tag: int
    max_privilege: int
    console_sid: int
    auth: int | None
    integrity: int | None
    confidentiality: int | None

    @classmethod
    def parse(cls, data: bytes) -> OpenSessionRequest:
        """The three algorithm payloads sit at offsets 8, 16 and 24, 8 bytes each."""
        if len(data) < 32:
            raise ProtocolError("short Open Session Request")
        tag, priv = data[0], data[1] & 0x0F
        (console_sid,) = struct.unpack_from("<I", data, 4)
        algos: list[int | None] = []
        for kind in range(3):
            pos = 8 + 8 * kind
            if data[pos] != kind or data[pos + 3] not in (0, 8):
                raise ProtocolError(f"Open Session Request algorithm payload {kind} is malformed")
            algos.append(data[pos + 4] & 0x3F if data[pos + 3] else None)
        return cls(tag, priv, console_sid, algos[0], algos[1], algos[2])

    def build(self) -> bytes:
        head = bytes([self.tag, self.max_privilege, 0, 0]) + struct.pack("<I", self.console_sid)
        return (head + _algorithm_payload(0, self.auth) + _algorithm_payload(1, self.integrity)
                + _algorithm_payload(2, self.confidentiality))


@dataclasses.dataclass(frozen=True, slots=True)
class OpenSessionResponse:
    """RMCP+ Open Session Response (table 13-17). Error responses stop after the console session id."""

    tag: int
    status: int
    console_sid: int
    max_privilege: int = 0
    bmc_sid: int = 0
    suite: CipherSuite | None = None

    def build(self) -> bytes:
        head = bytes([self.tag, self.status, self.max_privilege, 0]) + struct.pack("<I", self.console_sid)
        if self.status != RmcppStatus.OK or self.suite is None:
            return head
        return (head + struct.pack("<I", self.bmc_sid) + _algorithm_payload(0, self.suite.auth)
                + _algorithm_payload(1, self.suite.integrity) + _algorithm_payload(2, self.suite.confidentiality))

    @classmethod
    def parse(cls, data: bytes) -> OpenSessionResponse:
        if len(data) < 8:
            raise ProtocolError("short Open Session Response")
        tag, status, priv = data[0], data[1], data[2]
        (console_sid,) = struct.unpack_from("<I", data, 4)
        if status != RmcppStatus.OK:
            return cls(tag, status, console_sid)
        if len(data) < 36:
            raise ProtocolError("short Open Session Response")
        (bmc_sid,) = struct.unpack_from("<I", data, 8)
        suite = find_cipher_suite(data[16] & 0x3F, data[24] & 0x3F, data[32] & 0x3F)
        return cls(tag, status, console_sid, priv, bmc_sid, suite)


@dataclasses.dataclass(frozen=True, slots=True)
class Rakp1:
    """RAKP Message 1 (table 13-20): the console's random number, role and user name."""

    tag: int
    bmc_sid: int
    console_random: bytes
    role: int  # the whole byte: bit 4 set = name-only lookup, bits 3:0 the requested maximum privilege
    username: bytes

    @property
    def privilege(self) -> int:
        return self.role & 0x0F

    @property
    def name_only_lookup(self) -> bool:
        return bool(self.role & 0x10)

    @classmethod
    def parse(cls, data: bytes) -> Rakp1:
        if len(data) < 28:
            raise ProtocolError("short RAKP 1")
        (bmc_sid,) = struct.unpack_from("<I", data, 4)
        ulen = data[27]
        if ulen > 16 or len(data) < 28 + ulen:
            raise ProtocolError("RAKP 1 user name length is invalid")
        return cls(data[0], bmc_sid, bytes(data[8:24]), data[24], bytes(data[28:28 + ulen]))

    def build(self) -> bytes:
        return (bytes([self.tag, 0, 0, 0]) + struct.pack("<I", self.bmc_sid) + self.console_random
                + bytes([self.role, 0, 0, len(self.username)]) + self.username)


@dataclasses.dataclass(frozen=True, slots=True)
class Rakp2:
    """RAKP Message 2 (table 13-21). Error answers stop after the console session id."""

    tag: int
    status: int
    console_sid: int
    bmc_random: bytes = b""
    bmc_guid: bytes = b""
    auth_code: bytes = b""

    def build(self) -> bytes:
        head = bytes([self.tag, self.status, 0, 0]) + struct.pack("<I", self.console_sid)
        if self.status != RmcppStatus.OK:
            return head
        return head + self.bmc_random + self.bmc_guid + self.auth_code

    @classmethod
    def parse(cls, data: bytes) -> Rakp2:
        if len(data) < 8:
            raise ProtocolError("short RAKP 2")
        (console_sid,) = struct.unpack_from("<I", data, 4)
        if data[1] != RmcppStatus.OK:
            return cls(data[0], data[1], console_sid)
        if len(data) < 40:
            raise ProtocolError("short RAKP 2")
        return cls(data[0], data[1], console_sid, bytes(data[8:24]), bytes(data[24:40]), bytes(data[40:]))


@dataclasses.dataclass(frozen=True, slots=True)
class Rakp3:
    """RAKP Message 3 (table 13-22): the console proves it knows the password (or reports a failure)."""

    tag: int
    status: int
    bmc_sid: int
    auth_code: bytes = b""

    @classmethod
    def parse(cls, data: bytes) -> Rakp3:
        if len(data) < 8:
            raise ProtocolError("short RAKP 3")
        (bmc_sid,) = struct.unpack_from("<I", data, 4)
        return cls(data[0], data[1], bmc_sid, bytes(data[8:]))

    def build(self) -> bytes:
        return bytes([self.tag, self.status, 0, 0]) + struct.pack("<I", self.bmc_sid) + self.auth_code


@dataclasses.dataclass(frozen=True, slots=True)
class Rakp4:
    """RAKP Message 4 (table 13-23): the BMC's integrity check value, or an error status."""

    tag: int
    status: int
    console_sid: int
    icv: bytes = b""

    def build(self) -> bytes:
        head = bytes([self.tag, self.status, 0, 0]) + struct.pack("<I", self.console_sid)
        return head + (self.icv if self.status == RmcppStatus.OK else b"")

    @classmethod
    def parse(cls, data: bytes) -> Rakp4:
        if len(data) < 8:
            raise ProtocolError("short RAKP 4")
        (console_sid,) = struct.unpack_from("<I", data, 4)
        return cls(data[0], data[1], console_sid, bytes(data[8:]))
