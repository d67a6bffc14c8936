"""The ``local:`` backend: named primary keys in one file, sealed under a passphrase.

The file is JSON. Its ``kdf`` block holds Argon2id parameters and salt; the passphrase-derived key
seals the key table with AES-256-GCM, the public fields bound as associated data. A separate check value
tells a wrong passphrase apart from a corrupt file. Writers take an exclusive lock on ``<file>.lock``,
reload, change, and atomically replace the file, so concurrent processes lose no key.

Each key's versions and the wrapping of data keys are in :mod:`ppml.kms._key_table`, shared with ``kbs:``.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hmac
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ppml._atomic import atomic_write_bytes
from ppml._secrets import SecretKey
from ppml.errors import KeyNotFound, KeyProviderError, KeystoreError, WrongPassphrase
from ppml.kms import _key_table
from ppml.kms._base import KeyInfo, KeyManagementService
from ppml.kms.passphrase import PassphraseSource, check_new_passphrase, from_environment_or_prompt

FORMAT = "ppml-keystore"
FORMAT_VERSION = 1
KEYSTORE_ENV = "PPML_KEYSTORE"


def default_keystore_path() -> Path:
    """``$PPML_KEYSTORE``, else ``$XDG_CONFIG_HOME/ppml/keystore.json`` (``~/.config`` by default)."""
    if os.environ.get(KEYSTORE_ENV):
        return Path(os.environ[KEYSTORE_ENV])
    config = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config) / "ppml" / "keystore.json"


@dataclass(frozen=True, slots=True)
class KdfParams:
    """Argon2id cost. The default is RFC 9106's second recommendation (64 MiB, 3 passes, 4 lanes)."""

    memory_kib: int = 65536
    iterations: int = 3
    lanes: int = 4

    def derive(self, passphrase: str, salt: bytes) -> bytes:
        """Stretch ``passphrase`` into a 32-byte key."""
        return Argon2id(salt=salt, length=32, iterations=self.iterations, lanes=self.lanes,
                        memory_cost=self.memory_kib).derive(passphrase.encode("utf-8"))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any) -> bytes:  # noqa: ANN401 - untrusted JSON value
    if not isinstance(text, str):
        raise ValueError("expected a base64 string")
    return base64.b64decode(text, validate=True)


def _subkey(master: bytes, label: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(master)


class LocalKeystore(KeyManagementService):
    """A passphrase-sealed keystore file: for a data owner's machine, development and CI."""

    scheme = "local"

    def __init__(self, path: str | os.PathLike[str] | None = None,
                 passphrase: PassphraseSource | str | None = None, kdf: KdfParams | None = None, *,
                 passphrase_file: str | None = None) -> None:
        self.path = Path(path) if path is not None else default_keystore_path()
        if isinstance(passphrase, str):
            fixed = passphrase
            self._passphrase: PassphraseSource = lambda new: fixed
        else:
            self._passphrase = passphrase or from_environment_or_prompt(passphrase_file)
        self._kdf = kdf or KdfParams()
        self._derived: dict[tuple[bytes, KdfParams], bytes] = {}

    def __repr__(self) -> str:
        return f"LocalKeystore({str(self.path)!r})"

    def __reduce__(self) -> None:  # type: ignore[override]
        raise TypeError("a LocalKeystore holds a passphrase-derived key and cannot be pickled")

    # -- key operations ---------------------------------------------------------------------------------

    def _create(self, name: str) -> KeyInfo:
        with self._transaction(create=True) as keys:
            if name in keys:
                raise KeyProviderError(f"key local:{name} already exists in {self.path}")
            keys[name] = _key_table.new_entry()
            return _key_table.info(self.key_uri(name), keys[name])

    def _rotate(self, name: str) -> KeyInfo:
        with self._transaction() as keys:
            entry = self._entry(keys, name)
            _key_table.rotate(entry)
            return _key_table.info(self.key_uri(name), entry)

    def _disable(self, name: str, version: int | None) -> KeyInfo:
        with self._transaction() as keys:
            entry = self._entry(keys, name)
            _key_table.disable(entry, f"{self.key_uri(name)} in {self.path}", version)
            return _key_table.info(self.key_uri(name), entry)

    def _list(self) -> list[KeyInfo]:
        if not self.path.exists():
            return []
        keys = self._load()
        return [_key_table.info(self.key_uri(name), keys[name]) for name in sorted(keys)]

    def _wrap(self, data_key: SecretKey, name: str) -> bytes:
        return _key_table.wrap(self._entry(self._load(), name), self.key_uri(name), name, data_key)

    def _unwrap(self, wrapped: bytes, name: str) -> SecretKey:
        return _key_table.unwrap(self._entry(self._load(), name), self.key_uri(name), name, wrapped)

    def export_entry(self, name: str) -> dict[str, Any]:
        """The key table of ``name`` (key material included): for importing it into a key broker only."""
        return self._entry(self._load(), name)

    def _entry(self, keys: dict[str, Any], name: str) -> dict[str, Any]:
        if name not in keys:
            raise KeyNotFound(f"no key named {name!r} in keystore {self.path}")
        entry: dict[str, Any] = keys[name]
        return entry

    # -- the sealed file --------------------------------------------------------------------------------

    @contextmanager
    def _transaction(self, *, create: bool = False) -> Iterator[dict[str, Any]]:
        """Lock, load (or start empty when creating), yield the key table, then seal and replace."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock():
            if self.path.exists():
                keys, envelope = self._load_with_envelope()
            elif create:
                keys, envelope = {}, self._new_envelope()
            else:
                raise self._missing()
            yield keys
            self._seal(keys, envelope)

    @contextmanager
    def _lock(self) -> Iterator[None]:
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            handle = open(lock_path, "a+")  # noqa: SIM115 - held for the whole block
        except OSError as error:
            raise KeystoreError(f"cannot lock keystore {self.path}: {error.strerror}") from None
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _missing(self) -> KeystoreError:
        return KeystoreError(f"keystore {self.path} does not exist; create a key first "
                             "(ppml keys create NAME), or point PPML_KEYSTORE / --keystore at your keystore")

    def _new_envelope(self) -> dict[str, Any]:
        passphrase = check_new_passphrase(self._passphrase(True))
        salt = os.urandom(16)
        master = self._derive(passphrase, salt, self._kdf)
        return {"format": FORMAT, "version": FORMAT_VERSION,
                "kdf": {"name": "argon2id", "salt": _b64(salt), **asdict(self._kdf)},
                "check": _b64(_subkey(master, b"ppml/keystore/check")[:16])}

    def _load(self) -> dict[str, Any]:
        return self._load_with_envelope()[0]

    def _load_with_envelope(self) -> tuple[dict[str, Any], dict[str, Any]]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            raise self._missing() from None
        except OSError as error:
            raise KeystoreError(f"cannot read keystore {self.path}: {error.strerror}") from None
        try:
            document = json.loads(raw)
            envelope = {k: document[k] for k in ("format", "version", "kdf", "check")}
            if envelope["format"] != FORMAT or envelope["version"] != FORMAT_VERSION:
                raise ValueError("not a ppml keystore, or an unsupported version")
            kdf = envelope["kdf"]
            params = KdfParams(int(kdf["memory_kib"]), int(kdf["iterations"]), int(kdf["lanes"]))
            salt, check = _unb64(kdf["salt"]), _unb64(envelope["check"])
            nonce, sealed = _unb64(document["nonce"]), _unb64(document["ciphertext"])
        except (ValueError, KeyError, TypeError, binascii.Error) as error:
            raise KeystoreError(f"keystore {self.path} is corrupt: {error}") from None
        master = self._derive(self._passphrase(False), salt, params)
        if not hmac.compare_digest(_subkey(master, b"ppml/keystore/check")[:16], check):
            raise WrongPassphrase(f"wrong passphrase for keystore {self.path}")
        try:
            plaintext = AESGCM(_subkey(master, b"ppml/keystore/seal")).decrypt(nonce, sealed, _aad(envelope))
            keys: dict[str, Any] = json.loads(plaintext)["keys"]
        except (InvalidTag, ValueError, KeyError):
            raise KeystoreError(f"keystore {self.path} is corrupt: its contents do not authenticate") from None
        return keys, envelope

    def _derive(self, passphrase: str, salt: bytes, params: KdfParams) -> bytes:
        cache_key = (salt, params)
        if cache_key not in self._derived:
            self._derived[cache_key] = params.derive(passphrase, salt)
        return self._derived[cache_key]

    def _seal(self, keys: dict[str, Any], envelope: dict[str, Any]) -> None:
        kdf = envelope["kdf"]
        params = KdfParams(int(kdf["memory_kib"]), int(kdf["iterations"]), int(kdf["lanes"]))
        master = self._derive(self._passphrase(False), _unb64(kdf["salt"]), params)
        nonce = os.urandom(12)
        plaintext = json.dumps({"keys": keys}, sort_keys=True).encode("utf-8")
        sealed = AESGCM(_subkey(master, b"ppml/keystore/seal")).encrypt(nonce, plaintext, _aad(envelope))
        document = {**envelope, "nonce": _b64(nonce), "ciphertext": _b64(sealed)}
        atomic_write_bytes(self.path, json.dumps(document, indent=2).encode("utf-8") + b"\n")


def _aad(envelope: dict[str, Any]) -> bytes:
    return json.dumps(envelope, sort_keys=True, separators=(",", ":")).encode("utf-8")
