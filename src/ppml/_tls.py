"""Client TLS contexts: always verifying, against the system roots or one CA bundle; never switched off."""

from __future__ import annotations

import ipaddress
import os
import secrets
import ssl
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ppml.errors import ConfigError


def tls_context(ca_file: str | os.PathLike[str] | bool | None = None, *, what: str = "the server") -> ssl.SSLContext:
    """A context that verifies ``what``'s certificate and host name: against ``ca_file``, or the system roots."""
    if isinstance(ca_file, bool):
        if not ca_file:
            raise ConfigError(f"TLS verification of {what} cannot be turned off; pass a CA bundle instead")
        ca_file = None
    if ca_file is None:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=os.fspath(ca_file))
    except (OSError, ssl.SSLError) as error:
        raise ConfigError(f"CA bundle {os.fspath(ca_file)} for {what} cannot be loaded: {error}") from None


def issue_server_certificate(directory: str | os.PathLike[str], hostnames: Sequence[str], *, ca_name: str,
                             lifetime: timedelta) -> tuple[Path, Path, Path]:
    """A fresh CA signs one server certificate for ``hostnames``; the CA's private key is then forgotten.

    Writes ``ca.pem`` (what clients trust), ``server.pem`` and ``server-key.pem`` (0600) atomically and returns
    their paths. Nobody, including whoever reads ``directory`` later, can issue another certificate under this CA.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    from ppml._atomic import atomic_write_bytes

    now = datetime.now(timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{ca_name} {secrets.token_hex(4)}")])
    usage = x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False)
    ca = (x509.CertificateBuilder().subject_name(issuer).issuer_name(issuer).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
          .not_valid_after(now + lifetime)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(usage, critical=True)
          .sign(ca_key, hashes.SHA256()))
    server_key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hostnames:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])]))
              .issuer_name(issuer).public_key(server_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + lifetime)
              .add_extension(x509.SubjectAlternativeName(names), critical=False)
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
              .sign(ca_key, hashes.SHA256()))
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    paths = (root / "ca.pem", root / "server.pem", root / "server-key.pem")
    atomic_write_bytes(paths[0], ca.public_bytes(serialization.Encoding.PEM), mode=0o644)
    atomic_write_bytes(paths[1], server.public_bytes(serialization.Encoding.PEM), mode=0o644)
    atomic_write_bytes(paths[2], server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return paths
