"""TPM 2.0 quotes from an Azure confidential VM's vTPM: parse, and check them against the HCL attestation key.

A quote is a ``TPMS_ATTEST`` of type ``TPM_ST_ATTEST_QUOTE`` (TPM 2.0 Part 2 §10.12, big-endian)::

    magic 0xFF544347 | type 0x8018 | qualifiedSigner TPM2B_NAME | extraData TPM2B_DATA (the nonce)
    | clockInfo (clock u64, resetCount u32, restartCount u32, safe u8) | firmwareVersion u64
    | TPML_PCR_SELECTION (count u32, then {hash u16, sizeofSelect u8, bitmap}) | pcrDigest TPM2B_DIGEST

The vTPM signs it with its attestation key (RSASSA-PKCS1-v1_5, SHA-256), whose public half the hardware report
vouches for through the HCL runtime data (:meth:`ppml.azure.hcl.HclReport.ak_pub`). ``pcrDigest`` is the hash of the
selected PCR values concatenated in index order. Checking both before sending a request to MAA turns an opaque
service-side rejection into an error that says which part is wrong.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ppml.errors import EvidenceInvalid

__all__ = ["TpmQuote", "parse_tpm_quote", "verify_tpm_quote"]

TPM_GENERATED = 0xFF544347
TPM_ST_ATTEST_QUOTE = 0x8018
TPM_ALG_SHA256 = 0x000B


def _malformed(message: str) -> EvidenceInvalid:
    return EvidenceInvalid(f"TPM quote: {message}", reason="malformed")


@dataclass(frozen=True)
class TpmQuote:
    """A parsed ``TPMS_ATTEST`` quote; nothing in it is trusted until :func:`verify_tpm_quote` passed."""

    qualified_signer: bytes
    extra_data: bytes
    clock: int
    reset_count: int
    restart_count: int
    firmware_version: int
    pcr_selection: tuple[tuple[int, tuple[int, ...]], ...]  # (hash algorithm id, selected PCR indices)
    pcr_digest: bytes
    raw: bytes


class _Cursor:
    """A bounds-checked big-endian reader (TPM structures are big-endian, unlike the TEE reports)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int, field: str) -> bytes:
        if self.pos + n > len(self.data):
            raise _malformed(f"truncated at {field} (offset {self.pos}, {len(self.data)} bytes)")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def uint(self, size: int, field: str) -> int:
        return int.from_bytes(self.take(size, field), "big")

    def tpm2b(self, field: str) -> bytes:
        return self.take(self.uint(2, field), field)


def parse_tpm_quote(data: bytes) -> TpmQuote:
    """Parse a ``TPMS_ATTEST`` quote exactly (no trailing bytes); raise ``EvidenceInvalid`` naming the bad field."""
    data = bytes(data)
    r = _Cursor(data)
    if r.uint(4, "magic") != TPM_GENERATED:
        raise _malformed("magic is not TPM_GENERATED_VALUE (0xff544347)")
    if (kind := r.uint(2, "type")) != TPM_ST_ATTEST_QUOTE:
        raise _malformed(f"type is {kind:#06x}, not TPM_ST_ATTEST_QUOTE (0x8018)")
    signer, extra = r.tpm2b("qualifiedSigner"), r.tpm2b("extraData")
    clock, reset, restart = r.uint(8, "clock"), r.uint(4, "resetCount"), r.uint(4, "restartCount")
    r.take(1, "safe")
    firmware = r.uint(8, "firmwareVersion")
    count = r.uint(4, "pcrSelect.count")
    if count > 16:
        raise _malformed(f"{count} PCR banks selected")
    selection = []
    for bank in range(count):
        alg, size = r.uint(2, f"pcrSelect[{bank}].hash"), r.uint(1, f"pcrSelect[{bank}].sizeofSelect")
        bitmap = r.take(size, f"pcrSelect[{bank}].pcrSelect")
        indices = tuple(8 * i + bit for i, byte in enumerate(bitmap) for bit in range(8) if byte >> bit & 1)
        selection.append((alg, indices))
    digest = r.tpm2b("pcrDigest")
    if r.pos != len(data):
        raise _malformed(f"{len(data) - r.pos} bytes after the quote")
    return TpmQuote(qualified_signer=signer, extra_data=extra, clock=clock, reset_count=reset, restart_count=restart,
                    firmware_version=firmware, pcr_selection=tuple(selection), pcr_digest=digest, raw=data)


def verify_tpm_quote(quote: bytes, signature: bytes, *, ak_pub: rsa.RSAPublicKey, pcrs: Mapping[int, bytes],
                     nonce: bytes | None = None) -> TpmQuote:
    """Check that ``ak_pub`` signed ``quote``, that ``pcrs`` (SHA-256 bank) are exactly the quoted PCRs and hash to
    its digest, and (when given) that ``nonce`` is its ``extraData``.

    Raises:
        EvidenceInvalid: ``reason`` ``malformed``, ``tpm_quote_signature``, ``pcr_digest`` or ``nonce``.
    """
    parsed = parse_tpm_quote(quote)
    try:
        ak_pub.verify(signature, parsed.raw, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise EvidenceInvalid("TPM quote: the signature does not verify with the HCL attestation key (HCLAkPub)",
                              reason="tpm_quote_signature") from None
    if len(parsed.pcr_selection) != 1 or parsed.pcr_selection[0][0] != TPM_ALG_SHA256:
        raise EvidenceInvalid("TPM quote: expected exactly one selected PCR bank, SHA-256", reason="pcr_digest")
    selected = parsed.pcr_selection[0][1]
    if sorted(pcrs) != list(selected):
        raise EvidenceInvalid(f"TPM quote: PCRs given {sorted(pcrs)} are not the PCRs quoted {list(selected)}",
                              reason="pcr_digest")
    if any(not isinstance(pcrs[i], bytes) or len(pcrs[i]) != 32 for i in selected):
        raise EvidenceInvalid("TPM quote: every SHA-256 PCR value must be 32 bytes", reason="pcr_digest")
    if not hmac.compare_digest(hashlib.sha256(b"".join(pcrs[i] for i in selected)).digest(), parsed.pcr_digest):
        raise EvidenceInvalid("TPM quote: the PCR values do not hash to the quoted PCR digest", reason="pcr_digest")
    if nonce is not None and not hmac.compare_digest(parsed.extra_data, nonce):
        raise EvidenceInvalid("TPM quote: extraData is not the expected nonce", reason="nonce")
    return parsed
