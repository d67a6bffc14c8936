"""Ed25519 key files (broker token and admin keys, simulated-TEE keys): one loader, one permission rule.

A private key file that its group or other users can access is refused rather than used: it may have leaked.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ppml._atomic import atomic_write_bytes
from ppml.errors import ConfigError


def load_or_create_ed25519_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Load the Ed25519 key at ``path`` (PEM PKCS#8), or create one there with mode 0600.

    A key file that its group or other users can access is refused rather than used: it may have leaked.
    Two processes creating the same missing key at once would each keep their own; start one first.
    """
    file = Path(path)
    if not file.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write_bytes(file, pem, mode=0o600)
        return key
    return load_ed25519_private_key(file)


def load_ed25519_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Load the Ed25519 private key at ``path`` (PEM PKCS#8) that must exist, refusing a leaky file mode."""
    file = Path(path)
    try:
        mode = file.stat().st_mode
    except OSError as error:
        raise ConfigError(f"cannot read key file {file}: {error.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"private key file {file} is accessible by group or others (mode {stat.S_IMODE(mode):o}); "
                          f"run 'chmod 600 {file}' if it has not leaked, else replace it")
    try:
        key = serialization.load_pem_private_key(_read(file), password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"private key file {file} is not an unencrypted PEM PKCS#8 private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"private key file {file} is a {type(key).__name__}, not an Ed25519 key")
    return key


def load_ed25519_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """Load an Ed25519 public key from a PEM SubjectPublicKeyInfo file."""
    file = Path(path)
    try:
        key = serialization.load_pem_public_key(_read(file))
    except ValueError:
        raise ConfigError(f"public key {file} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"public key {file} is a {type(key).__name__}, not an Ed25519 key")
    return key


def write_public_key(path: str | os.PathLike[str], key: Ed25519PublicKey | Ed25519PrivateKey) -> None:
    """Write the public half of ``key`` as PEM SubjectPublicKeyInfo (mode 0644), replacing the file atomically."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    atomic_write_bytes(Path(path), pem, mode=0o644)


def _read(file: Path) -> bytes:
    try:
        return file.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read key file {file}: {error.strerror}") from None
