"""Any ppml KMS backend as a pyarrow ``KmsClient``, for Parquet modular encryption.

Master key identifiers are ppml key URIs (``local:sales``), so Parquet key material names the same keys
as ``.ppml`` headers do, and one ``KeyRing`` serves both. Parquet's key lists use ``:``, ``,`` and ``;`` as
separators, so identifiers are percent-encoded (``local%3Asales``) on the way in and decoded here.
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import quote, unquote

import pyarrow.parquet.encryption as pe

from ppml._secrets import SecretKey
from ppml.errors import KeyProviderError
from ppml.kms._registry import KeyRing


def master_key_id(key_uri: str) -> str:
    """A key URI as a Parquet master key identifier (no separator characters)."""
    return quote(key_uri, safe="")


class KeyRingKmsClient(pe.KmsClient):  # type: ignore[misc]
    """Wraps and unwraps Parquet data keys (or key-encryption keys) with the KMS a key URI names."""

    def __init__(self, keyring: KeyRing) -> None:
        super().__init__()
        self._keyring = keyring

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        backend, name = self._keyring.resolve(unquote(master_key_identifier))
        return base64.b64encode(backend.wrap_key(SecretKey(bytes(key_bytes)), name)).decode("ascii")

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        backend, name = self._keyring.resolve(unquote(master_key_identifier))
        try:
            wrapped = base64.b64decode(wrapped_key, validate=True)
        except (binascii.Error, ValueError):
            raise KeyProviderError(f"Parquet key material for {master_key_identifier} is not base64") from None
        return backend.unwrap_key(wrapped, name).insecure_bytes()


def crypto_factory(keyring: KeyRing) -> pe.CryptoFactory:
    """A pyarrow ``CryptoFactory`` whose KMS client is ``keyring``."""

    def factory(config: pe.KmsConnectionConfig) -> pe.KmsClient:
        return KeyRingKmsClient(keyring)

    return pe.CryptoFactory(factory)
