"""Development certificates: a private CA and a server certificate signed by it (openssl).

``python -m devtools.certs var/tls`` (``make certs``) writes into the directory:

- ``ca.crt`` / ``ca.key``: the development CA. Give ``ca.crt`` to clients that must trust the
  bridge (``ari.ca_file`` for the app's ARI connection, a test SIP peer, a browser);
- ``server.crt`` / ``server.key``: the certificate Asterisk presents for SIP over TLS and for
  ARI over HTTPS, valid for ``127.0.0.1``, ``::1`` and ``localhost`` by default.

Running it again changes nothing while the files exist, belong together and stay valid for
more than ``RENEW_BEFORE_DAYS``; otherwise only what is missing or stale is made again (a new
CA always brings a new server certificate). Private keys are written with mode 0600.

These are for development and tests only. In production point ``sip.tls_cert_file`` and
``sip.tls_key_file`` (and, for HTTPS ARI, ``ari.tls_cert_file`` / ``ari.tls_key_file``) at
certificates from a real CA.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

CA_VALIDITY_DAYS = 3650
# 825 days is the longest validity that every current TLS client accepts for a server cert
SERVER_VALIDITY_DAYS = 825
# a certificate that expires sooner than this is made again
RENEW_BEFORE_DAYS = 30
RSA_KEY_BITS = 2048
DEFAULT_NAMES = ("127.0.0.1", "::1", "localhost")
CA_SUBJECT = "/O=botbridge development/CN=botbridge development CA"
SERVER_SUBJECT_ORG = "/O=botbridge development"
PRIVATE_KEY_MODE = 0o600
OPENSSL_TIMEOUT_SECONDS = 60
_SECONDS_PER_DAY = 86400

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SERVER_CERT = "server.crt"
SERVER_KEY = "server.key"


class CertError(RuntimeError):
    """openssl failed; the message carries its output."""


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


def ensure_dev_certs(
    directory: Path, names: Sequence[str] = DEFAULT_NAMES
) -> tuple[DevCerts, bool]:
    """Create whatever is missing or stale; return the files and whether anything changed."""
    certs = DevCerts(Path(directory))
    certs.directory.mkdir(parents=True, exist_ok=True)
    changed = False
    if not _usable_ca(certs):
        _make_ca(certs)
        changed = True
    if changed or not _usable_server(certs, names):
        _make_server(certs, names)
        changed = True
    return certs, changed


def subject_alt_names(names: Sequence[str]) -> str:
    """``IP:127.0.0.1,DNS:localhost`` from plain names; addresses become IP entries."""
    entries = []
    for name in names:
        try:
            entries.append(f"IP:{ipaddress.ip_address(name)}")
        except ValueError:
            entries.append(f"DNS:{name}")
    return ",".join(entries)


def _usable_ca(certs: DevCerts) -> bool:
    return (
        certs.ca_cert.exists()
        and certs.ca_key.exists()
        and _valid_for(certs.ca_cert, RENEW_BEFORE_DAYS)
        and _key_matches(certs.ca_cert, certs.ca_key)
    )


def _usable_server(certs: DevCerts, names: Sequence[str]) -> bool:
    if not (certs.server_cert.exists() and certs.server_key.exists()):
        return False
    if not _valid_for(certs.server_cert, RENEW_BEFORE_DAYS):
        return False
    if not _key_matches(certs.server_cert, certs.server_key):
        return False
    verify = _openssl(
        ["verify", "-CAfile", str(certs.ca_cert), str(certs.server_cert)], check=False
    )
    if verify.returncode != 0:
        return False
    return _normalised(names) <= _names_in(certs.server_cert)


def _normalised(names: Sequence[str]) -> set[str]:
    """Names as comparable strings: addresses in canonical form, host names lower case."""
    result = set()
    for name in names:
        try:
            result.add(str(ipaddress.ip_address(name)))
        except ValueError:
            result.add(name.lower())
    return result


def _names_in(cert: Path) -> set[str]:
    text = _openssl(["x509", "-noout", "-ext", "subjectAltName", "-in", str(cert)]).stdout
    names = []
    for entry in text.replace("\n", ",").split(","):
        kind, _, value = entry.strip().partition(":")
        if kind in {"IP Address", "DNS"} and value:
            names.append(value.strip())
    return _normalised(names)


def _make_ca(certs: DevCerts) -> None:
    _new_key(certs.ca_key)
    _openssl(
        [
            "req",
            "-x509",
            "-new",
            "-key",
            str(certs.ca_key),
            "-sha256",
            "-days",
            str(CA_VALIDITY_DAYS),
            "-subj",
            CA_SUBJECT,
            "-addext",
            "basicConstraints=critical,CA:TRUE,pathlen:0",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-out",
            str(certs.ca_cert),
        ]
    )


def _make_server(certs: DevCerts, names: Sequence[str]) -> None:
    _new_key(certs.server_key)
    common_name = names[0] if names else DEFAULT_NAMES[0]
    extensions = "\n".join(
        [
            "basicConstraints=critical,CA:FALSE",
            "keyUsage=critical,digitalSignature,keyEncipherment",
            # clientAuth too: a SIP peer may present the same certificate when it connects
            "extendedKeyUsage=serverAuth,clientAuth",
            f"subjectAltName={subject_alt_names(names or DEFAULT_NAMES)}",
            "subjectKeyIdentifier=hash",
            "authorityKeyIdentifier=keyid,issuer",
        ]
    )
    with tempfile.TemporaryDirectory() as tmp:
        csr = Path(tmp) / "server.csr"
        ext = Path(tmp) / "server.ext"
        ext.write_text(extensions + "\n")
        _openssl(
            [
                "req",
                "-new",
                "-key",
                str(certs.server_key),
                "-subj",
                f"{SERVER_SUBJECT_ORG}/CN={common_name}",
                "-out",
                str(csr),
            ]
        )
        _openssl(
            [
                "x509",
                "-req",
                "-in",
                str(csr),
                "-CA",
                str(certs.ca_cert),
                "-CAkey",
                str(certs.ca_key),
                "-set_serial",
                str(int.from_bytes(os.urandom(8), "big")),
                "-sha256",
                "-days",
                str(SERVER_VALIDITY_DAYS),
                "-extfile",
                str(ext),
                "-out",
                str(certs.server_cert),
            ]
        )


def _new_key(path: Path) -> None:
    path.unlink(missing_ok=True)
    # create the file 0600 first so the key is never readable by others, even briefly
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_KEY_MODE))
    _openssl(
        [
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            f"rsa_keygen_bits:{RSA_KEY_BITS}",
            "-out",
            str(path),
        ]
    )
    path.chmod(PRIVATE_KEY_MODE)


def _valid_for(cert: Path, days: int) -> bool:
    seconds = str(days * _SECONDS_PER_DAY)
    result = _openssl(["x509", "-noout", "-checkend", seconds, "-in", str(cert)], check=False)
    return result.returncode == 0


def _key_matches(cert: Path, key: Path) -> bool:
    from_cert = _openssl(["x509", "-noout", "-pubkey", "-in", str(cert)], check=False)
    from_key = _openssl(["pkey", "-pubout", "-in", str(key)], check=False)
    return (
        from_cert.returncode == 0
        and from_key.returncode == 0
        and from_cert.stdout.strip() == from_key.stdout.strip()
    )


def _openssl(args: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(
            ["openssl", *args],
            capture_output=True,
            text=True,
            timeout=OPENSSL_TIMEOUT_SECONDS,
            check=False,
        )
    except FileNotFoundError as exc:
        raise CertError("openssl is not installed (apt-get install openssl)") from exc
    if check and result.returncode != 0:
        raise CertError(f"openssl {args[0]} failed: {result.stderr.strip()[-800:]}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.certs",
        description="Create (once) a development CA and a server certificate signed by it.",
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
