"""``ppml broker init``: a ready-to-serve broker directory with its own TLS CA, keys and storage keystore.

The TLS CA's private key signs the server certificate and is then thrown away: nobody, including whoever reads
this directory later, can issue another certificate that clients of this broker would trust.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from ppml._atomic import atomic_write_bytes
from ppml._tls import issue_server_certificate
from ppml.broker import jws
from ppml.errors import InputError
from ppml.kms.local import KdfParams, LocalKeystore

STORAGE_KEY = "kbs-storage"
CERT_LIFETIME = timedelta(days=365)


@dataclass(frozen=True)
class BrokerDirectory:
    """Where ``init`` put things; the admin key and CA certificate are what clients need."""

    config: Path
    ca_certificate: Path
    admin_key: Path
    url: str


def init_broker(directory: str | os.PathLike[str], *, listen: str = "127.0.0.1:8443",
                hostnames: Sequence[str] = ("localhost", "127.0.0.1"), simulator_public_key: Path | None = None,
                kdf: KdfParams | None = None) -> BrokerDirectory:
    """Create a broker directory; refuse to touch one that already has a configuration."""
    root = Path(directory)
    config_path = root / "broker.json"
    if config_path.exists():
        raise InputError(f"{config_path} already exists: refusing to overwrite a broker's configuration")
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    (root / "tls").mkdir(exist_ok=True, mode=0o700)
    (root / "admin").mkdir(exist_ok=True, mode=0o700)

    passphrase_file = root / "storage.passphrase"
    atomic_write_bytes(passphrase_file, secrets.token_urlsafe(32).encode("ascii"))
    LocalKeystore(root / "storage-keystore.json", passphrase_file=str(passphrase_file), kdf=kdf).create_key(
        STORAGE_KEY)
    jws.load_or_create_ed25519_key(root / "token-key.pem")
    admin_key = jws.load_or_create_ed25519_key(root / "admin" / "admin-key.pem")
    jws.write_public_key(root / "admin.pub", admin_key.public_key())
    _write_tls(root / "tls", hostnames)

    simulators = []
    if simulator_public_key is not None:
        simulators.append(os.path.relpath(simulator_public_key, root))
    document = {
        "listen": listen,
        "database": "broker.db",
        "storage": {"key_uri": f"local:{STORAGE_KEY}",
                    "kms": {"local": {"path": "storage-keystore.json", "passphrase_file": "storage.passphrase"}}},
        "tls": {"certificate": "tls/server.pem", "private_key": "tls/server-key.pem"},
        "token_key": "token-key.pem",
        "admin_public_keys": ["admin.pub"],
        "simulator_public_keys": simulators,
        "session_ttl_seconds": 300,
    }
    atomic_write_bytes(config_path, json.dumps(document, indent=2).encode("utf-8") + b"\n")
    return BrokerDirectory(config=config_path, ca_certificate=root / "tls" / "ca.pem",
                           admin_key=root / "admin" / "admin-key.pem", url=f"https://{listen}")


def _write_tls(directory: Path, hostnames: Sequence[str]) -> None:
    issue_server_certificate(directory, hostnames, ca_name="ppml broker CA", lifetime=CERT_LIFETIME)
