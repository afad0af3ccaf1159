"""X.509 certificates made in-process with ``cryptography``: self-signed pairs, a private CA,
and server or client certificates issued by it.

The renderer uses :func:`write_self_signed` when no TLS pair is configured (each instance
gets its own); ``devtools/certs.py`` (``make certs``) builds a development CA with server and
client pairs from the same functions. Private keys are written PEM, unencrypted, mode 0600.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

RSA_KEY_BITS = 2048
RSA_PUBLIC_EXPONENT = 65537
PRIVATE_KEY_MODE = 0o600
# a certificate starts being valid this long before it is made (clocks that lag a little)
BACKDATE = timedelta(minutes=5)
ORGANIZATION = "botbridge development"

Key = rsa.RSAPrivateKey


def new_key() -> Key:
    return rsa.generate_private_key(public_exponent=RSA_PUBLIC_EXPONENT, key_size=RSA_KEY_BITS)


def alt_names(names: Sequence[str]) -> list[x509.GeneralName]:
    """subjectAltName entries: addresses as IP entries, anything else as DNS names."""
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return entries


def make_ca(common_name: str, days: int) -> tuple[x509.Certificate, Key]:
    """A CA that signs end-entity certificates only (pathlen 0)."""
    key = new_key()
    subject = _name(common_name)
    builder = (
        _builder(subject, subject, key, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    return builder.sign(key, hashes.SHA256()), key


def issue(
    names: Sequence[str],
    days: int,
    *,
    issuer: tuple[x509.Certificate, Key] | None = None,
    server: bool = True,
    client: bool = True,
) -> tuple[x509.Certificate, Key]:
    """An end-entity certificate for ``names`` (the first is the CN), signed by ``issuer``
    (``None``: self-signed). ``server``/``client`` set the extended key usages."""
    key = new_key()
    subject = _name(names[0])
    issuer_cert, issuer_key = issuer if issuer else (None, key)
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] * server + [ExtendedKeyUsageOID.CLIENT_AUTH] * client
    builder = (
        _builder(subject, issuer_cert.subject if issuer_cert else subject, key, days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(alt_names(names)), critical=False)
    )
    if issuer_cert is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256()), key


def write_pair(cert: x509.Certificate, key: Key, cert_path: Path, key_path: Path) -> None:
    """The certificate (0644) and its private key (0600, never readable by others)."""
    write_key(key, key_path)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def write_key(key: Key, path: Path) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_KEY_MODE)
    with os.fdopen(fd, "wb") as fh:
        fh.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


def write_self_signed(cert: Path, key: Path, common_name: str, days: int) -> None:
    """A self-signed pair for ``common_name`` (also its subjectAltName), unless both exist."""
    if cert.exists() and key.exists():
        return
    certificate, private_key = issue([common_name], days)
    write_pair(certificate, private_key, cert, key)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _builder(subject: x509.Name, issuer: x509.Name, key: Key, days: int) -> x509.CertificateBuilder:
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
