"""Azure confidential VM HCL reports: the hardware report, and the runtime data it binds.

On an Azure CVM the paravisor (HCL) owns the SEV-SNP or TDX guest interface. It writes an *HCL report* into the vTPM
NV index ``0x01400001``: the hardware report, whose REPORTDATA starts with a hash of a JSON *runtime data* document
that holds the vTPM's attestation key (``HCLAkPub``), its endorsement key, the VM configuration and 64 bytes of
``user-data`` the guest chose. That hash is what lets MAA (or anyone) trust the vTPM key, and through it the TPM quote.

Layout (little-endian; from Azure's guest attestation library and ``az-cvm-vtpm``, checked on real SNP and TDX
reports)::

    0x000  header     "HCLA" signature, version (1, 2), report_size, request_type, status, reserved[3]  (0x20 bytes)
    0x020  hardware   SEV-SNP ATTESTATION_REPORT (0x4A0 bytes) or TDX TDREPORT (0x400 bytes), in a 0x4A0 slot
    0x4C0  IGVM data  data_size, version, report_type (2 SNP, 4 TDX), hash_type (1 SHA-256, 2 SHA-384, 3 SHA-512),
                      variable_data_size                                                           (0x14 bytes)
    0x4D4  runtime data (variable_data_size bytes of JSON); report_size = 0x4C0 + data_size, data_size = 0x14 + size

Binding: REPORTDATA = hash(runtime data) || zero padding to 64 bytes. REPORTDATA sits at 0x50 in an SNP report and
at 0x80 in a TDREPORT. Parsing checks the binding; it does not check the hardware signature (the SNP report's VCEK
signature: :func:`ppml.attestation.snp.verify_snp_report`; a TDREPORT is only MAC'd, so TDX needs the TD quote the
host's quoting enclave makes from it).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from ppml._b64 import unb64url
from ppml._json import strict_loads
from ppml.attestation.snp import REPORT_SIZE as SNP_REPORT_SIZE
from ppml.attestation.snp import parse_snp_report
from ppml.errors import EvidenceInvalid

__all__ = ["AK_KID", "HclReport", "parse_hcl_report"]

SIGNATURE = b"HCLA"
HEADER_SIZE = 0x20
HW_REPORT_OFFSET = 0x20
IGVM_OFFSET = 0x4C0
IGVM_HEADER_SIZE = 0x14
TD_REPORT_SIZE = 0x400
TD_REPORT_DATA_OFFSET = 0x80
TD_REPORT_TYPE_TDX = 0x81
SNP_REPORT_DATA_OFFSET = 0x50
AK_KID = "HCLAkPub"
MAX_RUNTIME_DATA = 1 << 16  # the NV index holds a few KiB; anything larger is not an HCL report
_REPORT_TYPES = MappingProxyType({2: "snp", 4: "tdx"})
_HASHES = MappingProxyType({1: hashlib.sha256, 2: hashlib.sha384, 3: hashlib.sha512})


def _malformed(message: str) -> EvidenceInvalid:
    return EvidenceInvalid(f"HCL report: {message}", reason="malformed")


@dataclass(frozen=True)
class HclReport:
    """A parsed HCL report whose hardware REPORTDATA is bound to ``runtime_data`` (checked when parsed).

    ``hardware_report`` is the SEV-SNP report (0x4A0 bytes) or the TDREPORT (0x400 bytes) that MAA's ``AzureGuest``
    and ``SevSnpVm`` requests carry; ``runtime_data`` is the exact JSON bytes whose hash the hardware signed.
    """

    tee: str
    hardware_report: bytes
    runtime_data: bytes
    report_data: bytes
    hash_name: str

    @property
    def runtime_json(self) -> Mapping[str, Any]:
        """The runtime data document (``keys``, ``vm-configuration``, ``user-data``), parsed strictly."""
        value = strict_loads(self.runtime_data)
        return MappingProxyType(value)

    @property
    def user_data(self) -> bytes:
        """The 64 bytes the guest asked the HCL to include (``user-data``, hex in the JSON); empty when absent."""
        text = self.runtime_json.get("user-data")
        if text is None:
            return b""
        if isinstance(text, str):
            try:
                return bytes.fromhex(text)
            except ValueError:
                pass
        raise _malformed("runtime data user-data is not a hex string")

    def ak_pub(self) -> rsa.RSAPublicKey:
        """The vTPM attestation key (``HCLAkPub``) that signs TPM quotes; trusted because the hardware signed it."""
        keys = self.runtime_json.get("keys")
        found = [k for k in keys if isinstance(k, Mapping) and k.get("kid") == AK_KID] if isinstance(keys, list) else []
        if len(found) != 1 or found[0].get("kty") != "RSA":
            raise _malformed(f"runtime data has no single RSA key {AK_KID!r}")
        try:
            numbers = rsa.RSAPublicNumbers(int.from_bytes(unb64url(found[0].get("e")), "big"),
                                           int.from_bytes(unb64url(found[0].get("n")), "big"))
            return numbers.public_key()
        except ValueError as exc:
            raise _malformed(f"{AK_KID} is not a valid RSA public key: {exc}") from None


def parse_hcl_report(data: bytes) -> HclReport:
    """Parse an HCL report (the vTPM NV index content) and check that its hardware report binds its runtime data.

    Raises:
        EvidenceInvalid: malformed (``reason="malformed"``), unsupported report type (``"unsupported"``), or the
            REPORTDATA is not the hash of the runtime data (``"report_data"``).
    """
    data = bytes(data)
    if len(data) < IGVM_OFFSET + IGVM_HEADER_SIZE:
        raise _malformed(f"{len(data)} bytes, shorter than its fixed part ({IGVM_OFFSET + IGVM_HEADER_SIZE} bytes)")
    signature, version, report_size = data[:4], *struct.unpack_from("<II", data, 4)
    if signature != SIGNATURE:
        raise _malformed(f"signature is {signature!r}, expected {SIGNATURE!r}")
    if version not in (1, 2):
        raise EvidenceInvalid(f"HCL report: unsupported version {version}", reason="unsupported")
    data_size, _igvm_version, report_type, hash_type, runtime_size = struct.unpack_from("<5I", data, IGVM_OFFSET)
    if runtime_size > MAX_RUNTIME_DATA or data_size != IGVM_HEADER_SIZE + runtime_size:
        raise _malformed(f"IGVM data size {data_size} does not match its runtime data size {runtime_size} + 0x14")
    if report_size != IGVM_OFFSET + data_size or report_size > len(data):
        raise _malformed(f"report size {report_size} does not match its IGVM data ({data_size} bytes at 0x4c0) "
                         f"within the {len(data)} bytes given")
    tee = _REPORT_TYPES.get(report_type)
    if tee is None:
        raise EvidenceInvalid(f"HCL report: report type {report_type} holds no SEV-SNP or TDX report "
                              "(3 is a Trusted Launch VM without hardware isolation)", reason="unsupported")
    hash_fn = _HASHES.get(hash_type)
    if hash_fn is None:
        raise _malformed(f"unknown report data hash type {hash_type}")
    runtime_data = data[IGVM_OFFSET + IGVM_HEADER_SIZE:report_size]
    hardware, report_data = _hardware_report(data, tee)
    digest = hash_fn(runtime_data).digest()
    if not hmac.compare_digest(report_data, digest + bytes(64 - len(digest))):
        raise EvidenceInvalid(f"HCL report: the {tee.upper()} report data is not {hash_fn().name.upper()} of the "
                              "runtime data; the report was altered or the runtime data belongs to another report",
                              reason="report_data")
    try:
        document = strict_loads(runtime_data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _malformed(f"runtime data is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise _malformed("runtime data is not a JSON object")
    return HclReport(tee=tee, hardware_report=hardware, runtime_data=runtime_data, report_data=report_data,
                     hash_name=hash_fn().name)


def _hardware_report(data: bytes, tee: str) -> tuple[bytes, bytes]:
    """The hardware report bytes and their REPORTDATA; the SNP report is parsed to reject a malformed one."""
    if tee == "snp":
        report = data[HW_REPORT_OFFSET:HW_REPORT_OFFSET + SNP_REPORT_SIZE]
        return report, parse_snp_report(report).report_data
    report = data[HW_REPORT_OFFSET:HW_REPORT_OFFSET + TD_REPORT_SIZE]
    if report[0] != TD_REPORT_TYPE_TDX:
        raise _malformed(f"TDREPORT type is {report[0]:#x}, expected {TD_REPORT_TYPE_TDX:#x} (TDX)")
    return report, report[TD_REPORT_DATA_OFFSET:TD_REPORT_DATA_OFFSET + 64]
