"""Any ppml KMS backend as a pyarrow ``KmsClient``, for Parquet modular encryption.

Master key identifiers are ppml key URIs (``local:sales``), so Parquet key material names the same keys
as ``.ppml`` headers do, and one ``KeyRing`` serves both.
"""

from __future__ import annotations

import base64
import binascii

import pyarrow.parquet.encryption as pe

from ppml._secrets import SecretKey
from ppml.errors import KeyProviderError
from ppml.kms._registry import KeyRing


class KeyRingKmsClient(pe.KmsClient):  # type: ignore[misc]
    """Wraps and unwraps Parquet data keys (or key-encryption keys) with the KMS a key URI names."""

    def __init__(self, keyring: KeyRing) -> None:
        super().__init__()
        self._keyring = keyring

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        backend, name = self._keyring.resolve(master_key_identifier)
        return base64.b64encode(backend.wrap_key(SecretKey(bytes(key_bytes)), name)).decode("ascii")

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        backend, name = self._keyring.resolve(master_key_identifier)
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
