"""One primary key's versions, and how a version wraps data keys: shared by ``local:`` and ``kbs:``.

An entry is JSON: ``{"created", "primary", "versions": {"1": {"created", "enabled", "material"}}}``. Wrapped data
keys (16, 24 or 32 bytes) are ``0x01 || key version (u32 BE) || nonce (12) || AES-256-GCM(DEK)`` with the key name as
associated data, so a wrapped key moved to another key name does not unwrap. Because ``kbs:`` keys use the very
same entry and wrapping, a key imported from a local keystore into the broker unwraps the same data keys.
"""

from __future__ import annotations

import base64
import os
import struct
from datetime import datetime, timezone
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ppml._secrets import SecretKey
from ppml.errors import KeyDisabled, KeyNotFound, KeyProviderError
from ppml.kms._base import DATA_KEY_SIZE, KeyInfo, KeyVersion

_WRAP_VERSION = 1
_WRAP_HEADER = struct.Struct(">BI")
_WRAP_SIZES = {_WRAP_HEADER.size + 12 + size + 16 for size in (16, 24, DATA_KEY_SIZE)}  # Parquet KEKs are 128-bit
_WRAP_AAD = b"ppml/local-wrap/v1\x00"  # the historical label of the local keystore; frozen for compatibility


def now_text() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_entry() -> dict[str, Any]:
    """A fresh primary key with one random 256-bit version."""
    return {"created": now_text(), "primary": 1, "versions": {"1": _new_version()}}


def rotate(entry: dict[str, Any]) -> None:
    """Add a version and make it primary, in place."""
    version = max(int(v) for v in entry["versions"]) + 1
    entry["versions"][str(version)] = _new_version()
    entry["primary"] = version


def disable(entry: dict[str, Any], uri: str, version: int | None) -> None:
    """Disable one version (all when ``version`` is None), in place."""
    targets = list(entry["versions"]) if version is None else [str(version)]
    for target in targets:
        if target not in entry["versions"]:
            raise KeyNotFound(f"key {uri} has no version {target}")
        entry["versions"][target]["enabled"] = False


def info(uri: str, entry: dict[str, Any]) -> KeyInfo:
    """What may be said about a key without its material."""
    versions = tuple(
        KeyVersion(version=int(v), created=r["created"], enabled=bool(r["enabled"]))
        for v, r in sorted(entry["versions"].items(), key=lambda item: int(item[0])))
    return KeyInfo(uri=uri, primary_version=int(entry["primary"]), versions=versions)


def wrap(entry: dict[str, Any], uri: str, name: str, data_key: SecretKey) -> bytes:
    """Wrap ``data_key`` under the primary version of ``entry``."""
    version = int(entry["primary"])
    material = _material(entry, uri, version)
    nonce = os.urandom(12)
    sealed = AESGCM(material).encrypt(nonce, data_key.insecure_bytes(), _WRAP_AAD + name.encode("utf-8"))
    return _WRAP_HEADER.pack(_WRAP_VERSION, version) + nonce + sealed


def unwrap(entry: dict[str, Any], uri: str, name: str, wrapped: bytes) -> SecretKey:
    """Unwrap a data key wrapped by any enabled version of ``entry``."""
    if len(wrapped) not in _WRAP_SIZES or wrapped[0] != _WRAP_VERSION:
        raise KeyProviderError(f"the wrapped data key is not a {uri} wrapping (corrupt header?)")
    _, version = _WRAP_HEADER.unpack_from(wrapped)
    material = _material(entry, uri, version)
    nonce, sealed = wrapped[_WRAP_HEADER.size : _WRAP_HEADER.size + 12], wrapped[_WRAP_HEADER.size + 12 :]
    try:
        return SecretKey(AESGCM(material).decrypt(nonce, sealed, _WRAP_AAD + name.encode("utf-8")))
    except InvalidTag:
        raise KeyProviderError(
            f"cannot unwrap the data key with {uri} version {version}: the wrapped key is "
            "corrupt, or was wrapped by another key or keystore") from None


def check_entry(entry: object, uri: str) -> dict[str, Any]:
    """Validate an entry that came from outside (a broker resource); raise ``KeyProviderError`` if malformed."""
    try:
        assert isinstance(entry, dict)
        primary = entry["primary"]
        versions = entry["versions"]
        assert isinstance(primary, int) and isinstance(versions, dict) and str(primary) in versions
        for record in versions.values():
            assert isinstance(record["enabled"], bool) and len(_unb64(record["material"])) == 32
    except (AssertionError, KeyError, TypeError, ValueError):
        raise KeyProviderError(f"the key table of {uri} is malformed") from None
    return entry


def _material(entry: dict[str, Any], uri: str, version: int) -> bytes:
    record = entry["versions"].get(str(version))
    if record is None:
        raise KeyNotFound(f"key {uri} has no version {version}")
    if not record["enabled"]:
        raise KeyDisabled(f"key {uri} version {version} is disabled")
    return _unb64(record["material"])


def _new_version() -> dict[str, Any]:
    return {"created": now_text(), "enabled": True, "material": base64.b64encode(os.urandom(32)).decode("ascii")}


def _unb64(text: Any) -> bytes:  # noqa: ANN401 - JSON value
    if not isinstance(text, str):
        raise ValueError("expected a base64 string")
    return base64.b64decode(text, validate=True)
