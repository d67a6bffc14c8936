"""BigDL PPML files in and out, so BigDL users can migrate: read always, write only when asked to.

BigDL keeps the data key wrapped in each file header (``common``) or uses the primary key itself
(``nativeaescbc``); the primary key comes from a file the user names, never from an argument.
Directories follow BigDL's layout: part files (``*.cbc``), a ``.meta`` file and ``_SUCCESS``.
Outputs are committed as ppml's own are (``ppml.data.objectstore``): locally by rename, on blob storage
in place, each file one blob committed whole, never copied and deleted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

import fsspec

from ppml.data.objectstore import atomic_output, atomic_tree, fresh_fs, redact, storage_errors
from ppml.errors import ConfigError, InputError
from ppml.fileformat.bigdl import (
    META_FILE_NAME,
    BigDLDataKey,
    decrypt_bigdl_native_stream,
    decrypt_bigdl_stream,
    encrypt_bigdl_native_stream,
    encrypt_bigdl_stream,
    format_bigdl_meta,
    read_bigdl_header,
)
from ppml.files import _open_input
from ppml.kms import bigdl as bigdl_keys

Variant = Literal["common", "native"]
KeyKind = Literal["plaintext", "simple"]
SKIPPED = {META_FILE_NAME, "_SUCCESS"}
SUFFIX = ".cbc"


@dataclass(frozen=True, slots=True)
class BigDLKeySource:
    """Where BigDL's primary key is: a file holding a plaintext primary key (base64, as in
    ``spark.bigdl.primaryKey.<n>.plainText``) or a SimpleKMS primary-key file."""

    kind: KeyKind
    primary_file: str

    def _material(self) -> str:
        try:
            with storage_errors(self.primary_file), fsspec.open(self.primary_file, "rb") as handle:
                content = handle.read()
        except FileNotFoundError:
            raise InputError(f"{redact(self.primary_file)}: no such BigDL primary key file") from None
        return bigdl_keys.read_simple_kms_primary_file(content).strip()

    def unwrap(self, encrypted_data_key: str) -> BigDLDataKey:
        """The data key a ``common`` file's header names."""
        if self.kind == "simple":
            return bigdl_keys.unwrap_simple_kms(self._material(), encrypted_data_key)
        return bigdl_keys.unwrap_plaintext_primary(self._material(), encrypted_data_key)

    def native_key(self) -> BigDLDataKey:
        """The ``nativeaescbc`` data key: BigDL uses the plaintext primary key itself."""
        if self.kind != "plaintext":
            raise ConfigError("the BigDL nativeaescbc variant needs a plaintext primary key file")
        return bigdl_keys.native_data_key_from_primary(self._material())

    def generate(self, *, insecure_bigdl_format: bool) -> tuple[BigDLDataKey, str]:
        """A new data key and its wrapped string, as BigDL's ``KeyLoader`` would make them."""
        if self.kind == "simple":
            return bigdl_keys.generate_simple_kms_data_key(self._material(),
                                                           insecure_bigdl_format=insecure_bigdl_format)
        return bigdl_keys.generate_plaintext_primary_data_key(self._material(),
                                                              insecure_bigdl_format=insecure_bigdl_format)


def decrypt_bigdl_file(src: str, dst: str, keys: BigDLKeySource, *, variant: Variant = "common",
                       overwrite: bool = False) -> int:
    """Decrypt one BigDL file, verifying its HMAC (``common``); nothing is left at ``dst`` on failure."""
    with _open_input(src) as source, atomic_output(dst, overwrite=overwrite) as sink:
        if variant == "native":
            return decrypt_bigdl_native_stream(source, sink, keys.native_key(), name=src)
        header = read_bigdl_header(source, name=src)
        source.seek(0)
        return decrypt_bigdl_stream(source, sink, keys.unwrap(header.encrypted_data_key), name=src,
                                    allow_empty=False)


def encrypt_bigdl_file(src: str, dst: str, keys: BigDLKeySource, *, variant: Variant = "common",
                       insecure_bigdl_format: bool = False, overwrite: bool = False,
                       data_key: tuple[BigDLDataKey, str] | None = None) -> str:
    """Write ``src`` in a BigDL format a BigDL cluster can read; returns the wrapped data key string."""
    with _open_input(src) as source, atomic_output(dst, overwrite=overwrite) as sink:
        if variant == "native":
            encrypt_bigdl_native_stream(source, sink, keys.native_key(),
                                        insecure_bigdl_format=insecure_bigdl_format, name=dst)
            return ""
        key, wrapped = data_key or keys.generate(insecure_bigdl_format=insecure_bigdl_format)
        encrypt_bigdl_stream(source, sink, key, wrapped, insecure_bigdl_format=insecure_bigdl_format, name=dst)
        return wrapped


def bigdl_tree_plan(src: str, dst: str, *, encrypting: bool) -> list[tuple[str, str]]:
    """Input and output URLs of every part file under a BigDL dataset directory (or a plain one)."""
    with storage_errors(src):
        fs, root = fresh_fs(src)
        root = root.rstrip("/")
        found = sorted(fs.find(root))
    pairs = []
    for path in found:
        relative = path[len(root) + 1 :]
        name = PurePosixPath(relative).name
        if name in SKIPPED or any(part.startswith(".") for part in relative.split("/")):
            continue
        target = relative + SUFFIX if encrypting else relative.removesuffix(SUFFIX)
        pairs.append((f"{src.rstrip('/')}/{relative}", f"{dst.rstrip('/')}/{target}"))
    if not pairs:
        raise InputError(f"{redact(src)}: no files to process")
    return pairs


def decrypt_bigdl_tree(src: str, dst: str, keys: BigDLKeySource, *, variant: Variant = "common",
                       overwrite: bool = False) -> int:
    """Decrypt a BigDL dataset directory. Each part's own header names its key, so datasets that
    BigDL appended to (where ``.meta`` names only the newest key) read correctly."""
    bigdl_tree_plan(src, dst, encrypting=False)
    with atomic_tree(dst, overwrite=overwrite) as staging:
        pairs = bigdl_tree_plan(src, staging, encrypting=False)
        for source, target in pairs:
            decrypt_bigdl_file(source, target, keys, variant=variant)
    return len(pairs)


def encrypt_bigdl_tree(src: str, dst: str, keys: BigDLKeySource, *, variant: Variant = "common",
                       insecure_bigdl_format: bool = False, overwrite: bool = False) -> int:
    """Encrypt a directory as BigDL writes a dataset: one data key per write, and a ``.meta`` file."""
    bigdl_tree_plan(src, dst, encrypting=True)
    with atomic_tree(dst, overwrite=overwrite) as staging:
        pairs = bigdl_tree_plan(src, staging, encrypting=True)
        data_key = None if variant == "native" else keys.generate(insecure_bigdl_format=insecure_bigdl_format)
        for source, target in pairs:
            encrypt_bigdl_file(source, target, keys, variant=variant, insecure_bigdl_format=insecure_bigdl_format,
                               data_key=data_key)
        if data_key is not None:
            with atomic_output(f"{staging}/{META_FILE_NAME}") as meta:
                meta.write(format_bigdl_meta(data_key[1]).encode("utf-8"))
    return len(pairs)


def looks_like_bigdl_file(url: str) -> bool:
    """Whether ``url`` starts like a BigDL ``common`` file (for a helpful error message)."""
    from ppml.fileformat.bigdl import looks_like_bigdl

    with _open_input(url) as source:
        return looks_like_bigdl(source.read(400))
