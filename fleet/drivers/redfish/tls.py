"""TLS for Redfish BMCs: a certificate pinned by its SHA-256 fingerprint, or a site CA bundle.

BMCs carry self-signed certificates, so enrolment records the fingerprint of the one a BMC presents
(trust on first use, made explicit by ``fleet bmc trust``, which calls :func:`fetch_fingerprint`).
Afterwards every connection checks it: a different certificate is a fatal error naming the expected
and the seen fingerprints. A site CA bundle (``ca_file``) is verified the ordinary way (chain and
host name). With neither, the driver refuses to connect; nothing here turns verification off.

A fingerprint is ``"sha256:"`` + 64 lowercase hex digits of the DER certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import ssl
from typing import Any

import aiohttp

from fleet.errors import DeviceTimeout, DeviceUnreachable, DriverError, FatalError

from ..base import Target

__all__ = ["fetch_fingerprint", "fingerprint_of", "normalize_fingerprint", "ssl_for"]

_FINGERPRINT = re.compile(r"^sha256:[0-9a-f]{64}$")


def fingerprint_of(der: bytes) -> str:
    """The fingerprint of a DER certificate: ``"sha256:<hex>"``."""
    return "sha256:" + hashlib.sha256(der).hexdigest()


def normalize_fingerprint(value: str) -> str:
    """``value`` as ``"sha256:<64 lowercase hex>"`` (colons and case as OpenSSL prints them are accepted)."""
    text = value.strip().lower()
    if text.startswith("sha256:"):
        text = text[len("sha256:"):]
    text = text.replace(":", "")
    out = "sha256:" + text
    if not _FINGERPRINT.match(out):
        raise FatalError(f"not a SHA-256 certificate fingerprint: {value!r} (expected sha256: and 64 hex digits)")
    return out


def ssl_for(target: Target, operation: str) -> Any:
    """What aiohttp's ``ssl=`` gets for ``target``: a pinned :class:`aiohttp.Fingerprint` or a CA context.

    Refuses (fatal) when the target has neither ``tls_fingerprint`` nor ``ca_file`` in its options.
    """
    pinned = target.options.get("tls_fingerprint")
    ca_file = target.options.get("ca_file")
    if pinned:
        digest = bytes.fromhex(normalize_fingerprint(str(pinned))[len("sha256:"):])
        return aiohttp.Fingerprint(digest)
    if ca_file:
        try:
            return ssl.create_default_context(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise FatalError(f"cannot load CA file {ca_file}: {exc}", target=target.name,
                             operation=operation) from None
    raise FatalError(f"no TLS trust for {target.address}: record its certificate with `fleet bmc trust "
                     f"{target.name}` (or give a CA file)", target=target.name, operation=operation)


def mismatch_error(target: Target, operation: str, seen: bytes) -> FatalError:
    """The fatal error of a certificate that is not the pinned one."""
    expected = normalize_fingerprint(str(target.options.get("tls_fingerprint")))
    return FatalError(f"TLS certificate changed: expected {expected}, seen sha256:{seen.hex()} (if it was "
                      f"replaced on purpose, check it and run `fleet bmc trust {target.name}` again)",
                      target=target.name, operation=operation)


async def fetch_fingerprint(host: str, port: int = 443, timeout: float = 5.0) -> str:
    """The fingerprint of the certificate ``host:port`` presents (for ``fleet bmc trust``).

    The one handshake that does not verify: it is how the certificate is read so that a person can
    compare and record it. Nothing is sent over the connection; it is closed at once.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # reading the certificate to show it, never to trust it
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    writer = None
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port, ssl=context)
            ssl_object = writer.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    except TimeoutError:
        raise DeviceTimeout(f"no TLS handshake within {timeout:g}s", target=where,
                            operation="fetch certificate") from None
    except (OSError, ssl.SSLError) as exc:
        raise DeviceUnreachable(f"TLS handshake failed: {exc}", target=where, operation="fetch certificate") from None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
    if not der:
        raise DriverError("the server presented no certificate", target=where, operation="fetch certificate")
    return fingerprint_of(der)
