"""Development certificates: a private CA with server and client certificates it signed.

``python -m devtools.certs var/tls`` (``make certs``) writes into the directory:

- ``ca.crt`` / ``ca.key``: the development CA. Give ``ca.crt`` to clients that must trust the
  bridge (``ari.ca_file`` for the app's ARI connection, a test SIP peer, a browser);
- ``server.crt`` / ``server.key``: the certificate Asterisk presents for SIP over TLS and for
  ARI over HTTPS, valid for ``127.0.0.1``, ``::1`` and ``localhost`` by default;
- ``client.crt`` / ``client.key``: a client certificate (clientAuth) for a test peer that
  must present one (a bot or carrier over mutual TLS).

Everything is made in-process with ``cryptography`` (``ari_app/asterisk/certs.py``); no
external program is needed. Running it again changes nothing while the files exist,
belong together and stay valid for more than ``RENEW_BEFORE_DAYS``; otherwise only what is
missing or stale is made again (a new CA always brings new server and client certificates).
Private keys are written with mode 0600.

These are for development and tests only. In production point ``sip.tls_cert_file`` and
``sip.tls_key_file`` (and, for HTTPS ARI, ``ari.tls_cert_file`` / ``ari.tls_key_file``) at
certificates from a real CA.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from ari_app.asterisk.certs import issue, make_ca, write_pair

CA_VALIDITY_DAYS = 3650
# 825 days is the longest validity that every current TLS client accepts for a server cert
SERVER_VALIDITY_DAYS = 825
CLIENT_VALIDITY_DAYS = 825
# a certificate that expires sooner than this is made again
RENEW_BEFORE_DAYS = 30
DEFAULT_NAMES = ("127.0.0.1", "::1", "localhost")
CA_COMMON_NAME = "botbridge development CA"
CLIENT_COMMON_NAME = "botbridge development client"

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SERVER_CERT = "server.crt"
SERVER_KEY = "server.key"
CLIENT_CERT = "client.crt"
CLIENT_KEY = "client.key"


class CertError(RuntimeError):
    """A certificate file could not be read or written; the message names it."""


@dataclass(frozen=True)
class DevCerts:
    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / CA_CERT

    @property
    def ca_key(self) -> Path:
        return self.directory / CA_KEY

    @property
    def server_cert(self) -> Path:
        return self.directory / SERVER_CERT

    @property
    def server_key(self) -> Path:
        return self.directory / SERVER_KEY

    @property
    def client_cert(self) -> Path:
        return self.directory / CLIENT_CERT

    @property
    def client_key(self) -> Path:
        return self.directory / CLIENT_KEY


def ensure_dev_certs(
    directory: Path, names: Sequence[str] = DEFAULT_NAMES
) -> tuple[DevCerts, bool]:
    """Create whatever is missing or stale; return the files and whether anything changed."""
    certs = DevCerts(Path(directory))
    names = tuple(names or DEFAULT_NAMES)
    try:
        certs.directory.mkdir(parents=True, exist_ok=True)
        changed = False
        if not _usable(certs.ca_cert, certs.ca_key, None):
            write_pair(*make_ca(CA_COMMON_NAME, CA_VALIDITY_DAYS), certs.ca_cert, certs.ca_key)
            changed = True
        ca = _load_pair(certs.ca_cert, certs.ca_key)
        if changed or not _usable(certs.server_cert, certs.server_key, ca[0], names):
            server = issue(names, SERVER_VALIDITY_DAYS, issuer=ca)
            write_pair(*server, certs.server_cert, certs.server_key)
            changed = True
        if changed or not _usable(certs.client_cert, certs.client_key, ca[0]):
            client = issue([CLIENT_COMMON_NAME], CLIENT_VALIDITY_DAYS, issuer=ca, server=False)
            write_pair(*client, certs.client_cert, certs.client_key)
            changed = True
    except (OSError, ValueError) as exc:
        raise CertError(f"development certificates in {certs.directory}: {exc}") from exc
    return certs, changed


def names_in(cert_path: Path) -> set[str]:
    """The subjectAltName entries of a certificate, normalised as :func:`_normalised` does."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    values = [str(v) for v in san.get_values_for_type(x509.IPAddress)]
    return _normalised([*values, *san.get_values_for_type(x509.DNSName)])


def _usable(
    cert_path: Path,
    key_path: Path,
    issuer: x509.Certificate | None,
    names: Sequence[str] = (),
) -> bool:
    """Both files there, the key matches, valid for RENEW_BEFORE_DAYS more, signed by
    ``issuer`` (when given) and covering ``names``."""
    if not (cert_path.exists() and key_path.exists()):
        return False
    try:
        cert, key = _load_pair(cert_path, key_path)
    except (ValueError, TypeError):
        return False
    if cert.public_key() != key.public_key():
        return False
    if cert.not_valid_after_utc < datetime.now(UTC) + timedelta(days=RENEW_BEFORE_DAYS):
        return False
    if issuer is not None:
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            return False
    return _normalised(names) <= names_in(cert_path)


def _load_pair(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, Any]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    return cert, key


def _normalised(names: Sequence[str]) -> set[str]:
    """Names as comparable strings: addresses in canonical form, host names lower case."""
    result = set()
    for name in names:
        try:
            result.add(str(ipaddress.ip_address(name)))
        except ValueError:
            result.add(name.lower())
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.certs",
        description="Create (once) a development CA and server and client certificates "
        "signed by it.",
    )
    parser.add_argument("directory", help="where to write ca.crt, ca.key, server.crt, server.key")
    parser.add_argument(
        "--name",
        action="append",
        dest="names",
        help="address or host name the server certificate is for (repeatable; default: "
        + ", ".join(DEFAULT_NAMES)
        + ")",
    )
    args = parser.parse_args(argv)
    try:
        certs, changed = ensure_dev_certs(Path(args.directory), tuple(args.names or DEFAULT_NAMES))
    except CertError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    state = "created" if changed else "up to date"
    print(f"development certificates {state} in {certs.directory}:")
    print(f"  CA (give to clients):  {certs.ca_cert}")
    print(f"  server certificate:    {certs.server_cert}")
    print(f"  server private key:    {certs.server_key}")
    print(f"  client certificate:    {certs.client_cert}")
    print(f"  client private key:    {certs.client_key}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
