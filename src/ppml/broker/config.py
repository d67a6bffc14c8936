"""The broker's configuration file (JSON) and the objects built from it.

Paths in the file are relative to the file's directory. No secret is ever in the file or on the command line:
the storage keystore's passphrase comes from a file (mode 0600) or ``PPML_PASSPHRASE``, and private keys are
PEM files the broker refuses to read when other users can.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ppml.errors import ConfigError

_KEYS = frozenset({
    "database", "storage", "tls", "token_key", "admin_public_keys", "simulator_public_keys", "session_ttl_seconds",
    "collateral", "token_issuers", "listen",
})


@dataclass(frozen=True)
class BrokerConfig:
    """Everything ``ppml broker serve`` needs; see ``docs/broker.md`` for each key."""

    base: Path
    database: Path
    storage_key_uri: str
    storage_kms: Mapping[str, Mapping[str, Any]]
    token_key: Path
    admin_public_keys: tuple[Path, ...]
    tls_certificate: Path | None = None
    tls_private_key: Path | None = None
    simulator_public_keys: tuple[Path, ...] = ()
    session_ttl_seconds: float = 300.0
    collateral: Mapping[str, Any] = field(default_factory=dict)
    token_issuers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    listen: str = "127.0.0.1:8443"

    @classmethod
    def load(cls, path: str | Path) -> BrokerConfig:
        """Read and validate a configuration file; ``ConfigError`` names the file and the bad key."""
        path = Path(path)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"broker configuration {path} does not exist (create one with: ppml broker init)") \
                from None
        except (OSError, ValueError) as error:
            raise ConfigError(f"cannot read broker configuration {path}: {error}") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"broker configuration {path} must be a JSON object")
        unknown = sorted(set(doc) - _KEYS)
        if unknown:
            raise ConfigError(f"broker configuration {path}: unknown key {unknown[0]!r}")
        base = path.parent.resolve()

        def resolve(value: object, key: str) -> Path:
            if not isinstance(value, str) or not value:
                raise ConfigError(f"broker configuration {path}: {key} must be a path")
            return (base / value).resolve()

        def paths(key: str) -> tuple[Path, ...]:
            value = doc.get(key, [])
            if not isinstance(value, list):
                raise ConfigError(f"broker configuration {path}: {key} must be a list of paths")
            return tuple(resolve(v, key) for v in value)

        storage = doc.get("storage")
        if not isinstance(storage, dict) or not isinstance(storage.get("key_uri"), str):
            raise ConfigError(f"broker configuration {path}: storage.key_uri is required")
        kms = storage.get("kms", {})
        if not isinstance(kms, dict):
            raise ConfigError(f"broker configuration {path}: storage.kms must map schemes to options")
        kms = {scheme: _resolve_option_paths(options, base) for scheme, options in kms.items()}
        tls = doc.get("tls")
        if tls is not None and (not isinstance(tls, dict) or set(tls) != {"certificate", "private_key"}):
            raise ConfigError(f"broker configuration {path}: tls needs exactly certificate and private_key")
        if "admin_public_keys" not in doc:
            raise ConfigError(f"broker configuration {path}: admin_public_keys is required")
        ttl = doc.get("session_ttl_seconds", 300)
        if not isinstance(ttl, int | float) or ttl <= 0:
            raise ConfigError(f"broker configuration {path}: session_ttl_seconds must be positive")
        return cls(
            base=base,
            database=resolve(doc.get("database", "broker.db"), "database"),
            storage_key_uri=storage["key_uri"],
            storage_kms=kms,
            token_key=resolve(doc.get("token_key", "token-key.pem"), "token_key"),
            admin_public_keys=paths("admin_public_keys"),
            tls_certificate=resolve(tls["certificate"], "tls.certificate") if tls else None,
            tls_private_key=resolve(tls["private_key"], "tls.private_key") if tls else None,
            simulator_public_keys=paths("simulator_public_keys"),
            session_ttl_seconds=float(ttl),
            collateral=_resolve_option_paths(doc.get("collateral", {}), base),
            token_issuers={issuer: _resolve_option_paths(options, base)
                           for issuer, options in _object(doc.get("token_issuers", {}), "token_issuers").items()},
            listen=str(doc.get("listen", "127.0.0.1:8443")),
        )


_PATH_OPTIONS = {"path", "passphrase_file", "offline_bundle", "cache_dir", "ca_file", "jwks_file"}


def _object(value: object, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"broker configuration: {key} must be an object")
    return value


def _resolve_option_paths(options: object, base: Path) -> dict[str, Any]:
    if not isinstance(options, dict):
        raise ConfigError("broker configuration: expected an object of options")
    return {k: str((base / v).resolve()) if k in _PATH_OPTIONS and isinstance(v, str) else v
            for k, v in options.items()}
