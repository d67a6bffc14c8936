"""The dataset manifest: the one record of which part files make up a committed dataset.

A dataset is a directory of part files plus a manifest. Parts are staged under a hidden name and only
the manifest's atomic replacement commits them, so a failed job leaves nothing that looks like a
result, and an append keeps every older part readable. For encrypted datasets the manifest is itself a
``.ppml`` container (schema and column names can be sensitive), and it pins each part by the file id in
its authenticated header (or, for Parquet modular encryption, by its AAD prefix or the SHA-256 of its
encrypted footer), so a dropped, added, swapped or replayed part is an error, not a silently wrong answer.
"""

from __future__ import annotations

import base64
import io
import json
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

from ppml import files
from ppml.data.objectstore import atomic_output, fresh_fs, storage_errors
from ppml.errors import InputError, InvalidCiphertext
from ppml.fileformat import EncryptingWriter, decrypt_stream
from ppml.kms import KeyRing

PLAIN_NAME = "_ppml_dataset.json"
ENCRYPTED_NAME = "_ppml_dataset.json.ppml"
FORMAT = "ppml-dataset"
VERSION = 1


@dataclass(frozen=True, slots=True)
class Part:
    """One committed part file and what pins it."""

    name: str
    rows: int
    size: int
    file_id: str = ""  # hex file id of a .ppml part (authenticated in its header)
    footer_sha256: str = ""  # SHA-256 of a PME part's encrypted footer
    aad_prefix: str = ""  # the AAD prefix a PME part was written with (never stored in the file)
    wrapped_key: str = ""  # base64 wrapped DEK of a PME part written with an AAD prefix
    key_uri: str = ""
    row_groups: int = 1  # Parquet parts: how many row groups, so readers can split without opening it


@dataclass(frozen=True, slots=True)
class Manifest:
    """Which parts form the dataset, in what format and mode, under which key."""

    dataset_id: str
    file_format: str
    mode: str
    key_uri: str | None
    schema_b64: str
    options: Mapping[str, Any] = field(default_factory=dict)
    parts: tuple[Part, ...] = ()
    commits: tuple[Mapping[str, Any], ...] = ()

    @property
    def schema(self) -> pa.Schema:
        """The Arrow schema every part conforms to."""
        return decode_schema(self.schema_b64)

    @property
    def rows(self) -> int:
        """Total rows across parts."""
        return sum(part.rows for part in self.parts)

    @staticmethod
    def new(file_format: str, mode: str, key_uri: str | None, schema: pa.Schema,
            options: Mapping[str, Any] | None = None, *, dataset_id: str | None = None) -> Manifest:
        """An empty manifest for a new dataset."""
        return Manifest(dataset_id=dataset_id or secrets.token_hex(16), file_format=file_format, mode=mode,
                        key_uri=key_uri, schema_b64=encode_schema(schema), options=dict(options or {}))

    def with_parts(self, parts: list[Part], *, write_id: str, write_mode: str) -> Manifest:
        """The manifest after a commit: ``append`` keeps existing parts, ``overwrite`` replaces them."""
        kept = self.parts if write_mode == "append" else ()
        record = {"write_id": write_id, "mode": write_mode, "parts": len(parts),
                  "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        return replace(self, parts=(*kept, *parts), commits=(*self.commits, record))

    def to_json(self) -> bytes:
        """Canonical JSON bytes."""
        document = {"format": FORMAT, "version": VERSION, **asdict(self)}
        return json.dumps(document, sort_keys=True, indent=1).encode("utf-8")

    @staticmethod
    def from_json(data: bytes, where: str) -> Manifest:
        """Parse and validate manifest JSON."""
        try:
            document = json.loads(data)
            if document.pop("format") != FORMAT or document.pop("version") != VERSION:
                raise ValueError("not a ppml dataset manifest of a supported version")
            parts = tuple(Part(**part) for part in document.pop("parts"))
            commits = tuple(document.pop("commits"))
            return Manifest(**document, parts=parts, commits=commits)
        except (ValueError, KeyError, TypeError) as error:
            raise InputError(f"{where}: the dataset manifest is corrupt: {error}") from None


def encode_schema(schema: pa.Schema) -> str:
    """An Arrow schema as base64 IPC bytes (exact types, metadata included)."""
    return base64.b64encode(schema.serialize().to_pybytes()).decode("ascii")


def decode_schema(text: str) -> pa.Schema:
    """The inverse of ``encode_schema``."""
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


def manifest_urls(dataset: str) -> tuple[str, str]:
    """The plain and encrypted manifest URLs of a dataset directory."""
    base = dataset.rstrip("/")
    return f"{base}/{PLAIN_NAME}", f"{base}/{ENCRYPTED_NAME}"


def read_manifest(dataset: str, keyring: KeyRing) -> Manifest | None:
    """The committed manifest of ``dataset``, or None if the directory holds no ppml dataset."""
    plain, encrypted = manifest_urls(dataset)
    for url, is_encrypted in ((encrypted, True), (plain, False)):
        with storage_errors(url):
            fs, path = fresh_fs(url)
            if not fs.exists(path):
                continue
            data = fs.cat_file(path)
        if is_encrypted:
            sink = io.BytesIO()
            try:
                decrypt_stream(data, sink, files.key_resolver(keyring, url), name=url)
            except InvalidCiphertext as error:
                raise type(error)(f"dataset manifest: {error}") from error
            data = sink.getvalue()
        return Manifest.from_json(data, url)
    return None


def write_manifest(dataset: str, manifest: Manifest, keyring: KeyRing) -> None:
    """Commit ``manifest`` atomically: the single step that makes staged parts part of the dataset (on blob
    storage, one blob replaced in one request: readers see the old manifest or the new one)."""
    plain, encrypted = manifest_urls(dataset)
    data = manifest.to_json()
    if manifest.key_uri is None:
        with atomic_output(plain, overwrite=True) as sink:
            sink.write(data)
        return
    backend, key_name = keyring.resolve(manifest.key_uri)
    data_key, wrapped = backend.generate_data_key(key_name)
    with atomic_output(encrypted, overwrite=True) as sink, \
            EncryptingWriter(sink, data_key=data_key, key_uri=backend.key_uri(key_name), wrapped_key=wrapped,
                             metadata={"kind": "ppml-dataset-manifest", "dataset_id": manifest.dataset_id}) as out:
        out.write(data)
