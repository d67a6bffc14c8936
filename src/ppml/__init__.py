"""ppml: privacy-preserving analytics on encrypted data.

The safe recipes live here; the container internals (segment crypto, nonces, raw data keys) stay in
private modules of ``ppml.fileformat``.
"""

from __future__ import annotations

from ppml.errors import (
    ConfigError,
    HeaderAuthenticationFailed,
    InputError,
    InvalidCiphertext,
    KeyDisabled,
    KeyNotFound,
    KeyProviderError,
    KeystoreError,
    MalformedHeader,
    NotEncrypted,
    PPMLError,
    SegmentAuthenticationFailed,
    TruncatedCiphertext,
    WrongKey,
    WrongPassphrase,
)
from ppml.files import (
    FileInfo,
    decrypt_file,
    decrypt_tree,
    encrypt_file,
    encrypt_tree,
    inspect_file,
    open_encrypted,
    rewrap_file,
)
from ppml.kms import KeyRing

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "FileInfo",
    "HeaderAuthenticationFailed",
    "InputError",
    "InvalidCiphertext",
    "KeyDisabled",
    "KeyNotFound",
    "KeyProviderError",
    "KeyRing",
    "KeystoreError",
    "MalformedHeader",
    "NotEncrypted",
    "PPMLError",
    "SegmentAuthenticationFailed",
    "TruncatedCiphertext",
    "WrongKey",
    "WrongPassphrase",
    "__version__",
    "decrypt_file",
    "decrypt_tree",
    "encrypt_file",
    "encrypt_tree",
    "inspect_file",
    "open_encrypted",
    "rewrap_file",
]
