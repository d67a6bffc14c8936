"""A simulated TEE for development and CI: Ed25519-signed, SGX-shaped reports that PROVE NOTHING.

Anyone holding the simulator key can sign any measurement, so a policy must list ``simulated`` explicitly to
accept these claims, and every collection logs a warning. The claims have SGX's shape (``mr_enclave``,
``mr_signer``, ``isv_prod_id``, ``isv_svn``) so that the same reference values can be exercised end to end.

Report layout (version 1)::

    "PPMLSIM" (7 bytes) || version (u8 = 1) || payload length (u32 big-endian, at most 4096)
    || payload: canonical JSON (sorted keys, no spaces, ASCII), UTF-8
    || signature: Ed25519 (64 bytes) over every byte before it

    payload = {"debug": bool, "isv_prod_id": u16, "isv_svn": u16, "issued_at": int (Unix seconds),
               "mr_enclave": hex(32 bytes), "mr_signer": hex(32 bytes), "public_key": hex(raw Ed25519, 32 bytes),
               "report_data": hex(64 bytes)}

``public_key`` only selects which trusted key to check; a key that is not in the verifier's list is rejected.
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

import ppml
from ppml.attestation.claims import Claims
from ppml.attestation.collectors._common import check_report_data
from ppml.attestation.evidence import REPORT_DATA_SIZE, Evidence
from ppml.errors import ConfigError, EvidenceInvalid

__all__ = ["SimulatedAttester", "code_measurement", "verify_simulated"]

log = logging.getLogger(__name__)

MAGIC = b"PPMLSIM"
VERSION = 1
MAX_PAYLOAD = 4096
SIGNATURE_SIZE = 64
_HEADER = struct.Struct(">7sBI")
_MEASUREMENT_SIZE = 32
_U16_MAX = 0xFFFF
_FIELDS = frozenset({"debug", "isv_prod_id", "isv_svn", "issued_at", "mr_enclave", "mr_signer", "public_key",
                     "report_data"})


class SimulatedAttester:
    """Signs simulated SGX-shaped reports with ``signing_key``; logs a warning on every collection.

    ``mr_signer`` defaults to SHA-256 of the raw public key, as SGX's MRSIGNER is the hash of the signer's key.
    ``clock`` returns Unix seconds and is injectable for tests.

    Raises:
        ConfigError: a measurement is not 32 bytes, or an SVN is not an integer between 0 and 65535.
    """

    tee = "simulated"

    def __init__(self, signing_key: Ed25519PrivateKey, *, mr_enclave: bytes, mr_signer: bytes | None = None,
                 isv_prod_id: int = 0, isv_svn: int = 0, debug: bool = False,
                 clock: Callable[[], float] = time.time) -> None:
        if not isinstance(signing_key, Ed25519PrivateKey):
            raise ConfigError("the simulator signing key must be an Ed25519 private key")
        self._key = signing_key
        self._public_raw = _raw(signing_key.public_key())
        self.mr_enclave = _measurement("mr_enclave", mr_enclave)
        self.mr_signer = _measurement("mr_signer", hashlib.sha256(self._public_raw).digest()
                                      if mr_signer is None else mr_signer)
        self.isv_prod_id = _u16("isv_prod_id", isv_prod_id)
        self.isv_svn = _u16("isv_svn", isv_svn)
        self.debug = bool(debug)
        self._clock = clock

    def __repr__(self) -> str:
        return f"SimulatedAttester(mr_enclave={self.mr_enclave.hex()[:16]}…, public_key={self._public_raw.hex()})"

    @property
    def public_key(self) -> Ed25519PublicKey:
        """The key a verifier must trust (``verify_simulated(..., trusted_keys=[attester.public_key])``)."""
        return self._key.public_key()

    def collect(self, report_data: bytes) -> Evidence:
        """A signed simulated report binding ``report_data`` (64 bytes). It proves nothing about the code that runs.

        Raises:
            ValueError: ``report_data`` is not 64 bytes.
        """
        check_report_data(report_data)
        log.warning("collecting evidence from a SIMULATED TEE: it proves nothing about the code that runs; "
                    "never release real keys to it")
        payload = _canonical({
            "debug": self.debug, "isv_prod_id": self.isv_prod_id, "isv_svn": self.isv_svn,
            "issued_at": int(self._clock()), "mr_enclave": self.mr_enclave.hex(), "mr_signer": self.mr_signer.hex(),
            "public_key": self._public_raw.hex(), "report_data": report_data.hex(),
        })
        signed = _HEADER.pack(MAGIC, VERSION, len(payload)) + payload
        return Evidence(tee=self.tee, quote=signed + self._key.sign(signed))


def verify_simulated(evidence: Evidence, *, trusted_keys: Sequence[Ed25519PublicKey]) -> Claims:
    """Check a simulated report's structure and signature and return SGX-shaped ``Claims`` (tee ``simulated``).

    The caller still compares ``claims.report_data`` with the value it expects, as for real TEEs.

    Raises:
        ConfigError: ``trusted_keys`` is empty.
        EvidenceInvalid: the report is malformed, of another version, signed by an untrusted key, or its
            signature does not verify.
    """
    if not trusted_keys:
        raise ConfigError("no trusted simulator keys: pass the public key of the simulator that signs the evidence")
    if evidence.tee != "simulated":
        raise EvidenceInvalid(f"expected simulated evidence, got {evidence.tee!r}", reason="tee_type")
    signed, signature, doc = _split(evidence.quote)
    public_raw = _hex_field(doc, "public_key", 32)
    key = next((k for k in trusted_keys if _raw(k) == public_raw), None)
    if key is None:
        raise EvidenceInvalid(f"simulated evidence is signed by untrusted key {public_raw.hex()}",
                              reason="untrusted_key")
    try:
        key.verify(signature, signed)
    except InvalidSignature:
        raise EvidenceInvalid("simulated evidence signature does not verify", reason="signature") from None
    return Claims(
        tee="simulated",
        measurements={"mr_enclave": _hex_field(doc, "mr_enclave", 32).hex(),
                      "mr_signer": _hex_field(doc, "mr_signer", 32).hex()},
        svns={"isv_prod_id": _int_field(doc, "isv_prod_id"), "isv_svn": _int_field(doc, "isv_svn")},
        debug=_bool_field(doc, "debug"),
        report_data=_hex_field(doc, "report_data", REPORT_DATA_SIZE),
        quote_version=VERSION,
    )


def code_measurement(root: str | Path | None = None) -> bytes:
    """SHA-256 over the ``*.py`` files of the installed ``ppml`` package: the simulated MRENCLAVE of this code.

    Files are taken in sorted order of their ``/``-separated paths relative to ``root`` (default: the ``ppml``
    package directory), each hashed as ``len(path) || path || len(content) || content`` with 8-byte big-endian
    lengths, after a domain-separation prefix, so the value is stable across runs and machines and changes
    when any file is added, removed, renamed or edited.
    """
    base = Path(ppml.__file__).parent if root is None else Path(root)
    digest = hashlib.sha256(b"ppml-code-measurement-v1\0")
    files = sorted((path.relative_to(base).as_posix(), path) for path in base.rglob("*.py") if path.is_file())
    for relative, path in files:
        for part in (relative.encode("utf-8"), path.read_bytes()):
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
    return digest.digest()


def _split(quote: bytes) -> tuple[bytes, bytes, dict[str, Any]]:
    if len(quote) < _HEADER.size + SIGNATURE_SIZE:
        raise EvidenceInvalid(f"simulated evidence is truncated ({len(quote)} bytes)", reason="malformed")
    magic, version, length = _HEADER.unpack_from(quote)
    if magic != MAGIC:
        raise EvidenceInvalid("simulated evidence does not start with the PPMLSIM magic", reason="malformed")
    if version != VERSION:
        raise EvidenceInvalid(f"simulated evidence version {version} is not supported (expected {VERSION})",
                              reason="malformed")
    if length > MAX_PAYLOAD or len(quote) != _HEADER.size + length + SIGNATURE_SIZE:
        raise EvidenceInvalid(f"simulated evidence length {len(quote)} does not match its payload length {length}",
                              reason="malformed")
    signed, signature = quote[:-SIGNATURE_SIZE], quote[-SIGNATURE_SIZE:]
    payload = signed[_HEADER.size :]
    try:
        doc = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise EvidenceInvalid("simulated evidence payload is not valid JSON", reason="malformed") from None
    if not isinstance(doc, dict) or set(doc) != _FIELDS:
        raise EvidenceInvalid(f"simulated evidence payload must have exactly the fields {sorted(_FIELDS)}",
                              reason="malformed")
    if _canonical(doc) != payload:
        raise EvidenceInvalid("simulated evidence payload is not canonical JSON", reason="malformed")
    _int_field(doc, "issued_at", maximum=2**63 - 1)
    return signed, signature, doc


def _hex_field(doc: dict[str, Any], name: str, size: int) -> bytes:
    value = doc[name]
    if not isinstance(value, str) or len(value) != 2 * size:
        raise EvidenceInvalid(f"simulated evidence field {name!r} must be {size} bytes of hex", reason="malformed")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise EvidenceInvalid(f"simulated evidence field {name!r} is not hex", reason="malformed") from None


def _int_field(doc: dict[str, Any], name: str, maximum: int = _U16_MAX) -> int:
    value = doc[name]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise EvidenceInvalid(f"simulated evidence field {name!r} must be an integer from 0 to {maximum}",
                              reason="malformed")
    return value


def _bool_field(doc: dict[str, Any], name: str) -> bool:
    value = doc[name]
    if not isinstance(value, bool):
        raise EvidenceInvalid(f"simulated evidence field {name!r} must be true or false", reason="malformed")
    return value


def _canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _measurement(name: str, value: bytes) -> bytes:
    if not isinstance(value, bytes) or len(value) != _MEASUREMENT_SIZE:
        raise ConfigError(f"{name} must be {_MEASUREMENT_SIZE} bytes")
    return value


def _u16(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _U16_MAX:
        raise ConfigError(f"{name} must be an integer from 0 to {_U16_MAX}, got {value!r}")
    return value
