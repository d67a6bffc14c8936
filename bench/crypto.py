"""Throughput on one core of raw AES-256-GCM, the .ppml container, and BigDL's CBC+HMAC format.

Every figure comes from the same run on the same data, so the ratios are what matter:
    .venv/bin/python bench/crypto.py [--size-mib 256] [--repeat 3]
Target (issue 2): .ppml reaches at least 60% of raw AES-GCM in both directions.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ppml import files
from ppml._secrets import SecretKey
from ppml.fileformat import DecryptingReader, EncryptingWriter, decrypt_stream
from ppml.fileformat.bigdl import (
    BigDLDataKey,
    InsecureFormatWarning,
    decrypt_bigdl_stream,
    encrypt_bigdl_stream,
)
from ppml.kms import KeyRing
from ppml.kms.local import KdfParams, LocalKeystore

MIB = 1024 * 1024


class NullSink:
    """Discards output, so a memory benchmark measures crypto and framing, not buffer growth."""

    def write(self, data: bytes | memoryview) -> int:
        return len(data)


def best_of(repeat: int, run: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def raw_gcm(plaintext: bytes) -> dict[str, Callable[[], object]]:
    """AES-256-GCM over 1 MiB chunks: the allocating API and the into-buffer API (the machine's limit)."""
    aead, nonce = AESGCM(os.urandom(32)), os.urandom(12)
    view = memoryview(plaintext)
    chunks = [aead.encrypt(nonce, view[i : i + MIB], None) for i in range(0, len(view), MIB)]
    out = bytearray(MIB + 16)

    def encrypt_into() -> None:
        for i in range(0, len(view), MIB):
            piece = view[i : i + MIB]
            aead.encrypt_into(nonce, piece, None, memoryview(out)[: len(piece) + 16])

    def decrypt_into() -> None:
        for chunk in chunks:
            aead.decrypt_into(nonce, chunk, None, memoryview(out)[: len(chunk) - 16])

    return {
        "raw AES-GCM encrypt (bytes API)": lambda: [aead.encrypt(nonce, view[i : i + MIB], None)
                                                    for i in range(0, len(view), MIB)],
        "raw AES-GCM decrypt (bytes API)": lambda: [aead.decrypt(nonce, c, None) for c in chunks],
        "raw AES-GCM encrypt_into": encrypt_into,
        "raw AES-GCM decrypt_into": decrypt_into,
    }


def ppml_memory(plaintext: bytes) -> dict[str, Callable[[], object]]:
    data_key = SecretKey(os.urandom(32))

    def encrypt(sink: object) -> None:
        with EncryptingWriter(sink, data_key=data_key, key_uri="local:bench", wrapped_key=b"w") as writer:  # type: ignore[arg-type]
            writer.write(plaintext)

    encrypted = io.BytesIO()
    encrypt(encrypted)
    ciphertext = encrypted.getvalue()

    def random_access() -> None:
        reader = DecryptingReader(io.BytesIO(ciphertext), lambda header: data_key, name="bench")
        buffer = bytearray(4 * MIB)
        while reader.readinto(buffer):
            pass

    return {
        ".ppml encrypt, memory": lambda: encrypt(NullSink()),
        ".ppml decrypt, memory": lambda: decrypt_stream(ciphertext, NullSink(),  # type: ignore[arg-type]
                                                        lambda header: data_key, name="bench"),
        ".ppml decrypt, random-access reader": random_access,
    }


def ppml_files(plaintext: bytes, work: Path) -> dict[str, Callable[[], object]]:
    keystore = LocalKeystore(work / "ks.json", passphrase="benchmark passphrase",
                             kdf=KdfParams(memory_kib=1024, iterations=1, lanes=1))
    keystore.create_key("bench")
    keyring = KeyRing(backends=(keystore,))
    source, encrypted, decrypted = work / "plain.bin", work / "plain.bin.ppml", work / "back.bin"
    source.write_bytes(plaintext)
    files.encrypt_file(str(source), str(encrypted), "local:bench", keyring=keyring, overwrite=True)
    copy_target = work / "copy.bin"
    return {
        "plain file copy (I/O baseline)": lambda: copy_target.write_bytes(source.read_bytes()),
        ".ppml encrypt, file to file": lambda: files.encrypt_file(str(source), str(encrypted), "local:bench",
                                                                  keyring=keyring, overwrite=True),
        ".ppml decrypt, file to file": lambda: files.decrypt_file(str(encrypted), str(decrypted),
                                                                  keyring=keyring, overwrite=True),
    }


def bigdl(plaintext: bytes) -> dict[str, Callable[[], object]]:
    data_key = BigDLDataKey("MDEyMzQ1Njc4OWFiY2RlZg==")
    warnings.simplefilter("ignore", InsecureFormatWarning)
    sink = io.BytesIO()
    encrypt_bigdl_stream(io.BytesIO(plaintext), sink, data_key, "edk", insecure_bigdl_format=True, name="bench")
    ciphertext = sink.getvalue()
    return {
        "BigDL CBC+HMAC encrypt, memory": lambda: encrypt_bigdl_stream(
            io.BytesIO(plaintext), NullSink(), data_key, "edk", insecure_bigdl_format=True, name="bench"),  # type: ignore[arg-type]
        "BigDL CBC+HMAC decrypt, memory": lambda: decrypt_bigdl_stream(
            io.BytesIO(ciphertext), NullSink(), data_key, name="bench"),  # type: ignore[arg-type]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as the issue asks
    plaintext = os.urandom(args.size_mib * MIB)
    size = len(plaintext)
    with tempfile.TemporaryDirectory(prefix="ppml-bench-") as work:
        cases = {**raw_gcm(plaintext), **ppml_memory(plaintext), **ppml_files(plaintext, Path(work)),
                 **bigdl(plaintext)}
        rates = {name: size / best_of(args.repeat, run) / 1e9 for name, run in cases.items()}
    best_raw_enc, best_raw_dec = rates["raw AES-GCM encrypt_into"], rates["raw AES-GCM decrypt_into"]
    print(f"{args.size_mib} MiB, best of {args.repeat}, one core\n")
    print(f"{'case':42} {'GB/s':>7} {'vs raw GCM':>11}")
    for name, rate in rates.items():
        raw = best_raw_dec if "decrypt" in name else best_raw_enc
        print(f"{name:42} {rate:7.2f} {rate / raw:10.0%}")
    print(f"\n.ppml / raw AES-GCM (into-buffer API): encrypt {rates['.ppml encrypt, memory'] / best_raw_enc:.0%}, "
          f"decrypt {rates['.ppml decrypt, memory'] / best_raw_dec:.0%} (target >= 60%)")
    versus_bigdl = [rates[f".ppml {d}crypt, memory"] / rates[f"BigDL CBC+HMAC {d}crypt, memory"] for d in ("en", "de")]
    print(f".ppml / BigDL CBC+HMAC: encrypt {versus_bigdl[0]:.1f}x, decrypt {versus_bigdl[1]:.1f}x")


if __name__ == "__main__":
    main()
