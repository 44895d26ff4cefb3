"""IPMI over LAN on the wire: RMCP, ASF ping/pong, IPMI 1.5 and 2.0 (RMCP+) session packets, keys.

Pure functions and small value types, no I/O: the lab BMC's session layer (``fleet.lab.rmcpsession``)
uses them as a responder, the tests as a console. The RMCP+ login messages (Open Session, RAKP 1-4)
are in :mod:`fleet.lab.rakp`, the IPMI numbers in :mod:`fleet.drivers.ipmi.codes`. References are to
the IPMI v2.0 specification, rev. 1.1:

- RMCP header (section 13.1.3) and the ASF presence ping/pong (13.2.3, DMTF ASF 2.0 3.2.4);
- the IPMI 1.5 session header (table 13-8), used here only sessionless (authentication type none);
- the RMCP+ session header and trailer (table 13-8, 13.28): payload type byte with the encrypted and
  authenticated bits, integrity pad to a multiple of four, pad length, next header ``0x07``, AuthCode;
- the RMCP+ and RAKP status codes (13-15);
- the session keys (13.32): K1/K2 = HMAC_SIK(20 x 0x01|0x02);
- integrity HMAC-SHA1-96 and HMAC-SHA256-128 (13.28.4), confidentiality AES-CBC-128 (13.29);
- the IPMI message inside a session (13.8: rsAddr, netFn/LUN, checksum, rqAddr, rqSeq/LUN, cmd, data).

Only cipher suites 3 (RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128) and 17 (RAKP-HMAC-SHA256,
HMAC-SHA256-128, AES-CBC-128) are defined: RAKP-none and unauthenticated suites are not offered.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import struct
from collections.abc import Callable
from enum import IntEnum

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = [
    "ASF_IANA",
    "AUTHTYPE_NONE",
    "AUTHTYPE_RMCPP",
    "CIPHER_SUITES",
    "CLASS_ASF",
    "CLASS_IPMI",
    "CipherSuite",
    "IpmiRequest",
    "IpmiResponse",
    "Packet",
    "PayloadType",
    "ProtocolError",
    "RmcppStatus",
    "SessionKeys",
    "build_asf_ping",
    "build_asf_pong",
    "build_ipmi_request",
    "build_ipmi_response",
    "build_v15",
    "build_v20",
    "checksum",
    "find_cipher_suite",
    "parse_asf",
    "parse_datagram",
    "parse_ipmi_request",
    "parse_ipmi_response",
]

RMCP_VERSION = 0x06
RMCP_NO_ACK = 0xFF
CLASS_ASF = 0x06
CLASS_IPMI = 0x07
#: The ASF IANA enterprise number (Alerting Standards Forum) carried in presence ping/pong.
ASF_IANA = 4542
ASF_PING = 0x80
ASF_PONG = 0x40

AUTHTYPE_NONE = 0x00
AUTHTYPE_RMCPP = 0x06  # "format = RMCP+" in the auth type byte

_RMCP_IPMI = bytes([RMCP_VERSION, 0x00, RMCP_NO_ACK, CLASS_IPMI])
_RMCP_ASF = bytes([RMCP_VERSION, 0x00, RMCP_NO_ACK, CLASS_ASF])

# Algorithm numbers (tables 13-17, 13-18, 13-19).
AUTH_RAKP_HMAC_SHA1 = 0x01
AUTH_RAKP_HMAC_SHA256 = 0x03
INTEGRITY_HMAC_SHA1_96 = 0x01
INTEGRITY_HMAC_SHA256_128 = 0x04
CONF_AES_CBC_128 = 0x01

#: The 20-byte constants of section 13.32, for SHA-1 and SHA-256 suites alike.
_CONST_1 = b"\x01" * 20
_CONST_2 = b"\x02" * 20


class ProtocolError(ValueError):
    """A datagram or message that does not parse; the responder drops it (real BMCs stay silent)."""


class PayloadType(IntEnum):
    """RMCP+ payload types (table 13-16), the low six bits of the payload type byte."""

    IPMI = 0x00
    SOL = 0x01
    OEM = 0x02
    OPEN_SESSION_REQUEST = 0x10
    OPEN_SESSION_RESPONSE = 0x11
    RAKP1 = 0x12
    RAKP2 = 0x13
    RAKP3 = 0x14
    RAKP4 = 0x15


class RmcppStatus(IntEnum):
    """RMCP+ and RAKP message status codes (table 13-15)."""

    OK = 0x00
    INSUFFICIENT_RESOURCES = 0x01
    INVALID_SESSION_ID = 0x02
    INVALID_PAYLOAD_TYPE = 0x03
    INVALID_AUTH_ALGORITHM = 0x04
    INVALID_INTEGRITY_ALGORITHM = 0x05
    NO_MATCHING_AUTH_PAYLOAD = 0x06
    NO_MATCHING_INTEGRITY_PAYLOAD = 0x07
    INACTIVE_SESSION_ID = 0x08
    INVALID_ROLE = 0x09
    UNAUTHORIZED_ROLE = 0x0A
    INSUFFICIENT_RESOURCES_FOR_ROLE = 0x0B
    INVALID_NAME_LENGTH = 0x0C
    UNAUTHORIZED_NAME = 0x0D
    UNAUTHORIZED_GUID = 0x0E
    INVALID_INTEGRITY_CHECK_VALUE = 0x0F
    INVALID_CONFIDENTIALITY_ALGORITHM = 0x10
    NO_CIPHER_SUITE_MATCH = 0x11
    ILLEGAL_PARAMETER = 0x12


# ---------------------------------------------------------------------------------------------
# Cipher suites and keys
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class CipherSuite:
    """One cipher suite (table 22-20): the algorithms and the lengths their codes take."""

    id: int
    auth: int
    integrity: int
    confidentiality: int
    digest: Callable[..., hashlib._Hash]
    #: Length of the RAKP 4 integrity check value (HMAC-SHA1-96 / HMAC-SHA256-128).
    icv_len: int
    #: Length of the AuthCode that closes every authenticated session packet.
    integrity_len: int

    def hmac(self, key: bytes, data: bytes) -> bytes:
        return hmac.new(key, data, self.digest).digest()


CIPHER_SUITES: dict[int, CipherSuite] = {
    3: CipherSuite(3, AUTH_RAKP_HMAC_SHA1, INTEGRITY_HMAC_SHA1_96, CONF_AES_CBC_128, hashlib.sha1, 12, 12),
    17: CipherSuite(17, AUTH_RAKP_HMAC_SHA256, INTEGRITY_HMAC_SHA256_128, CONF_AES_CBC_128, hashlib.sha256, 16, 16),
}


def find_cipher_suite(auth: int, integrity: int, confidentiality: int) -> CipherSuite | None:
    """The supported suite with exactly these algorithms, or None."""
    for suite in CIPHER_SUITES.values():
        if (suite.auth, suite.integrity, suite.confidentiality) == (auth, integrity, confidentiality):
            return suite
    return None


class SessionKeys:
    """The keys of an active session: K1 signs packets, the first 16 bytes of K2 encrypt them."""

    __slots__ = ("_aes", "k1", "suite")

    def __init__(self, suite: CipherSuite, sik: bytes) -> None:
        self.suite = suite
        self.k1 = suite.hmac(sik, _CONST_1)
        self._aes = algorithms.AES(suite.hmac(sik, _CONST_2)[:16])

    def auth_code(self, signed: bytes) -> bytes:
        return self.suite.hmac(self.k1, signed)[:self.suite.integrity_len]

    def encrypt(self, payload: bytes, iv: bytes | None = None) -> bytes:
        """IV + AES-CBC-128(payload + pad 1,2,3.. + pad length) (table 13-20)."""
        pad = (-(len(payload) + 1)) % 16
        plain = payload + bytes(range(1, pad + 1)) + bytes([pad])
        iv = iv if iv is not None else os.urandom(16)
        enc = Cipher(self._aes, modes.CBC(iv)).encryptor()
        return iv + enc.update(plain) + enc.finalize()

    def decrypt(self, data: bytes) -> bytes:
        if len(data) < 32 or len(data) % 16:
            raise ProtocolError(f"encrypted payload of {len(data)} bytes is not IV + whole AES blocks")
        dec = Cipher(self._aes, modes.CBC(data[:16])).decryptor()
        plain = dec.update(data[16:]) + dec.finalize()
        pad = plain[-1]
        if pad + 1 > len(plain):
            raise ProtocolError("confidentiality pad longer than the payload")
        return plain[:-(pad + 1)]


# ---------------------------------------------------------------------------------------------
# Datagrams: RMCP, ASF, session wrappers
# ---------------------------------------------------------------------------------------------


def build_asf_ping(tag: int = 0) -> bytes:
    """An ASF Presence Ping (message type 0x80)."""
    return _RMCP_ASF + struct.pack(">IBBBB", ASF_IANA, ASF_PING, tag & 0xFF, 0, 0)


def build_asf_pong(tag: int) -> bytes:
    """An ASF Presence Pong announcing IPMI support (supported entities 0x81)."""
    data = struct.pack(">II", ASF_IANA, 0) + bytes([0x81, 0x00]) + bytes(6)
    return _RMCP_ASF + struct.pack(">IBBBB", ASF_IANA, ASF_PONG, tag & 0xFF, 0, len(data)) + data


def parse_asf(body: bytes) -> tuple[int, int]:
    """``(message type, message tag)`` of an ASF message body (after the RMCP header)."""
    if len(body) < 8:
        raise ProtocolError("short ASF message")
    iana, mtype, tag = struct.unpack_from(">IBB", body)
    if iana != ASF_IANA:
        raise ProtocolError(f"ASF message with IANA {iana}")
    return mtype, tag


@dataclasses.dataclass(slots=True)
class Packet:
    """One IPMI datagram, unwrapped but not yet verified or decrypted.

    ``payload`` is still encrypted (IV + blocks) when ``encrypted``; ``signed`` is the span the
    AuthCode covers (from the auth type byte to the next header) and ``auth_code`` the tail after it,
    both empty unless ``authenticated``.
    """

    auth_type: int
    payload_type: int
    session_id: int
    sequence: int
    payload: bytes
    encrypted: bool = False
    authenticated: bool = False
    signed: bytes = b""
    auth_code: bytes = b""

    @property
    def v2(self) -> bool:
        return self.auth_type == AUTHTYPE_RMCPP


def parse_datagram(data: bytes) -> tuple[int, bytes]:
    """``(RMCP class, body)`` of a datagram; raises :class:`ProtocolError` unless it is RMCP."""
    if len(data) < 4 or data[0] != RMCP_VERSION:
        raise ProtocolError("not an RMCP datagram")
    return data[3] & 0x1F, data[4:]


def parse_session(body: bytes, integrity_len: Callable[[int], int] | None = None) -> Packet:
    """Unwrap an IPMI 1.5 or 2.0 session header (the body after the RMCP header).

    ``integrity_len(session_id)`` tells how long the AuthCode of an authenticated 2.0 packet is
    (it depends on the session's cipher suite); without it the whole trailer after the payload
    is taken as pad/next-header/AuthCode and left to the caller.
    """
    if not body:
        raise ProtocolError("empty IPMI session header")
    auth_type = body[0]
    if auth_type != AUTHTYPE_RMCPP:
        # IPMI 1.5: auth type, sequence, session id, [16-byte auth code], length, payload.
        offset = 9 + (16 if auth_type != AUTHTYPE_NONE else 0)
        if len(body) < offset + 1:
            raise ProtocolError("short IPMI 1.5 session header")
        seq, sid = struct.unpack_from("<II", body, 1)
        length = body[offset]
        payload = body[offset + 1:offset + 1 + length]
        if len(payload) != length:
            raise ProtocolError("IPMI 1.5 payload shorter than its length field")
        return Packet(auth_type, PayloadType.IPMI, sid, seq, payload)
    if len(body) < 12:
        raise ProtocolError("short RMCP+ session header")
    ptype_byte = body[1]
    ptype = ptype_byte & 0x3F
    offset = 2
    if ptype == PayloadType.OEM:
        offset += 6  # OEM IANA (4) + OEM payload id (2)
    if len(body) < offset + 10:
        raise ProtocolError("short RMCP+ session header")
    sid, seq, length = struct.unpack_from("<IIH", body, offset)
    start = offset + 10
    payload = body[start:start + length]
    if len(payload) != length:
        raise ProtocolError("RMCP+ payload shorter than its length field")
    packet = Packet(auth_type, ptype, sid, seq, payload, encrypted=bool(ptype_byte & 0x80),
                    authenticated=bool(ptype_byte & 0x40))
    if packet.authenticated:
        trailer = body[start + length:]
        n = integrity_len(sid) if integrity_len is not None else 0
        if n:
            if len(trailer) < n + 2:
                raise ProtocolError("RMCP+ trailer shorter than its AuthCode")
            packet.signed = body[:len(body) - n]
            packet.auth_code = body[len(body) - n:]
            if packet.signed[-1] != 0x07 or len(trailer) != n + 2 + packet.signed[-2]:
                raise ProtocolError("RMCP+ session trailer is malformed")
        else:
            packet.signed = body
    return packet


def build_v15(payload: bytes, session_id: int = 0, sequence: int = 0) -> bytes:
    """An RMCP datagram with an IPMI 1.5 session header of authentication type none."""
    return _RMCP_IPMI + struct.pack("<BIIB", AUTHTYPE_NONE, sequence, session_id, len(payload)) + payload


def build_v20(payload_type: int, payload: bytes, session_id: int = 0, sequence: int = 0,
              keys: SessionKeys | None = None, *, encrypt: bool = True) -> bytes:
    """An RMCP datagram with an RMCP+ session header; signed (and encrypted) with ``keys``."""
    ptype = payload_type
    if keys is not None:
        ptype |= 0x40
        if encrypt:
            ptype |= 0x80
            payload = keys.encrypt(payload)
    body = struct.pack("<BBIIH", AUTHTYPE_RMCPP, ptype, session_id, sequence, len(payload)) + payload
    if keys is None:
        return _RMCP_IPMI + body
    pad = (-(len(body) + 2)) % 4
    body += b"\xff" * pad + bytes([pad, 0x07])
    return _RMCP_IPMI + body + keys.auth_code(body)


# ---------------------------------------------------------------------------------------------
# IPMI messages
# ---------------------------------------------------------------------------------------------


def checksum(data: bytes) -> int:
    """The two's complement checksum of IPMB messages: the bytes plus it sum to zero."""
    return -sum(data) & 0xFF


@dataclasses.dataclass(frozen=True, slots=True)
class IpmiRequest:
    netfn: int
    cmd: int
    data: bytes
    rq_seq: int = 0
    rs_addr: int = 0x20
    rs_lun: int = 0
    rq_addr: int = 0x81
    rq_lun: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class IpmiResponse:
    netfn: int
    cmd: int
    completion_code: int
    data: bytes
    rq_seq: int = 0


def parse_ipmi_request(msg: bytes) -> IpmiRequest:
    """An IPMI request message (table 13-4); checksums are verified."""
    if len(msg) < 7:
        raise ProtocolError("short IPMI message")
    if checksum(msg[:2]) != msg[2] or checksum(msg[3:-1]) != msg[-1]:
        raise ProtocolError("IPMI message checksum mismatch")
    return IpmiRequest(netfn=msg[1] >> 2, cmd=msg[5], data=bytes(msg[6:-1]), rq_seq=msg[4] >> 2,
                       rs_addr=msg[0], rs_lun=msg[1] & 3, rq_addr=msg[3], rq_lun=msg[4] & 3)


def build_ipmi_response(req: IpmiRequest, completion_code: int, data: bytes = b"") -> bytes:
    """The response to ``req``: netFn + 1, addresses swapped, rqSeq echoed."""
    head = bytes([req.rq_addr, ((req.netfn | 1) << 2) | req.rq_lun])
    body = bytes([req.rs_addr, (req.rq_seq << 2) | req.rs_lun, req.cmd, completion_code]) + data
    return head + bytes([checksum(head)]) + body + bytes([checksum(body)])


def build_ipmi_request(netfn: int, cmd: int, data: bytes = b"", rq_seq: int = 0, *, rs_addr: int = 0x20,
                       rq_addr: int = 0x81) -> bytes:
    """A request message as a console sends it (LUN 0)."""
    head = bytes([rs_addr, netfn << 2])
    body = bytes([rq_addr, (rq_seq & 0x3F) << 2, cmd]) + data
    return head + bytes([checksum(head)]) + body + bytes([checksum(body)])


def parse_ipmi_response(msg: bytes) -> IpmiResponse:
    """A response message as a console receives it; checksums are verified."""
    if len(msg) < 8:
        raise ProtocolError("short IPMI response")
    if checksum(msg[:2]) != msg[2] or checksum(msg[3:-1]) != msg[-1]:
        raise ProtocolError("IPMI response checksum mismatch")
    return IpmiResponse(netfn=msg[1] >> 2, cmd=msg[5], completion_code=msg[6], data=bytes(msg[7:-1]),
                        rq_seq=msg[4] >> 2)
