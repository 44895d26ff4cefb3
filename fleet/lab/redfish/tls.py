"""The lab's TLS certificate for its Redfish responder: self-signed, made with ``cryptography``.

A real BMC ships a self-signed certificate; enrolment pins its SHA-256 fingerprint (trust on first
use). The lab makes one such certificate per responder (an EC P-256 key: fast to make, small to
hold), with every lab BMC address as an IP subject alternative name while there are few enough to
list (:data:`MAX_SAN_HOSTS`), so a client may also verify it as a CA bundle with host name checks.
:func:`fingerprint` is the form the inventory and the driver use: ``"sha256:"`` and 64 lowercase hex
digits of the DER certificate.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import os
import ssl
from collections.abc import Sequence
from pathlib import Path

from fleet.drivers.redfish.tls import fingerprint_of

__all__ = ["MAX_SAN_HOSTS", "LabCertificate", "make_certificate", "server_context"]

#: At most this many addresses are listed as subject alternative names (the rest verify by fingerprint):
#: every handshake carries the certificate, and 1,000 SANs make it ~20 kB (a third more CPU per cold
#: handshake on loopback).
MAX_SAN_HOSTS = 256


@dataclasses.dataclass(frozen=True)
class LabCertificate:
    """A certificate and key on disk (PEM) and the certificate's fingerprint."""

    cert_file: Path
    key_file: Path
    fingerprint: str


def make_certificate(directory: str | os.PathLike[str], hosts: Sequence[str] = (), *,
                     common_name: str = "Rackfleet lab BMC", days: int = 825, name: str = "redfish") -> LabCertificate:
    """Write ``NAME.crt`` and ``NAME.key`` (0600) into ``directory``: a self-signed certificate for ``hosts``.

    An existing pair is reused when it still covers ``hosts`` (a restarted lab keeps its fingerprint,
    as a real BMC keeps its certificate across reboots).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = root / f"{name}.crt", root / f"{name}.key"
    listed = sorted({"127.0.0.1", *hosts}, key=lambda h: ipaddress.IPv4Address(h))[:MAX_SAN_HOSTS]
    if cert_file.exists() and key_file.exists():
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            have = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
        except x509.ExtensionNotFound:
            have = set()
        if set(listed) <= have and cert.not_valid_after_utc > datetime.datetime.now(datetime.UTC):
            return LabCertificate(cert_file, key_file, fingerprint_of(cert.public_bytes(serialization.Encoding.DER)))
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Rackfleet lab")])
    now = datetime.datetime.now(datetime.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost")] + [x509.IPAddress(ipaddress.IPv4Address(h)) for h in listed]), critical=False)
        # A self-signed certificate that is its own trust anchor: usable as a CA bundle (OpenSSL's
        # strict checks want the CA bit, the key identifiers and the usages of an anchor).
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    tmp = key_file.with_name(f".{key_file.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    tmp.replace(key_file)
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return LabCertificate(cert_file, key_file, fingerprint_of(cert.public_bytes(serialization.Encoding.DER)))


def server_context(cert: LabCertificate) -> ssl.SSLContext:
    """A TLS 1.2+ server context holding the lab certificate."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert.cert_file, cert.key_file)
    return ctx
