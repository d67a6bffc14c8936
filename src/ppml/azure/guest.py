"""MAA ``attest/AzureGuest``: the vTPM-based attestation of an Azure confidential VM, assembled from its parts.

This is the request Azure's guest attestation library (``libazguestattestation``, and its Python port
``cvm-attestation-tools``) sends; MAA has no published REST reference for it. The caller collects the parts from the
vTPM (HCL report, attestation key certificate and public area, PCR quote and values, the ephemeral encryption key and
its certification) and from IMDS (the VCEK chain for SEV-SNP, the TD quote for TDX). Here they are checked against
each other and encoded::

    POST {endpoint}/attest/AzureGuest?api-version=2020-10-01
    {"AttestationInfo": b64url(JSON {
        "AttestationProtocolVersion": "2.0",
        "OSType": b64("Linux"), "OSDistro": b64(name), "OSVersionMajor": int, "OSVersionMinor": int,
        "OSBuild": b64(build), "TcgLogs": b64(event log), "ClientPayload": {name: b64(value)},
        "TpmInfo": {"AikCert", "AikPub", "PcrQuote", "PcrSignature", "EncKeyPub", "EncKeyCertifyInfo",
                    "EncKeyCertifyInfoSignature": b64(...), "PcrSet": [index...], "PCRs": [{"Index", "Digest"}...]},
        "IsolationInfo": {"Type": "SevSnp", "Evidence": {"Proof": b64(JSON {"SnpReport": b64url(SNP report),
                                                                              "VcekCertChain": b64(PEM chain)}),
                                                         "RunTimeData": b64(HCL runtime data)}}
                      or {"Type": "Tdx", "Evidence": {"Proof": b64(TD quote), "RunTimeData": b64(...)}}})}

    200 {"token": b64url(JSON {"EncryptedInnerKey": b64, "AuthenticationData": b64 (GCM tag), "Jwt": b64,
                               "EncryptionParams": {"Cipher": "AES", "BlockMode": "ChainingModeGCM",
                                                    "KeySizeInBits": n, "Iv": b64, ...}})}

(b64 is standard base64.) MAA encrypts the token to the vTPM's ephemeral key (``EncKeyPub``): only that TPM can
decrypt the inner AES key; the JWT is then AES-GCM with the associated data ``"Transport Key"``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ppml._b64 import b64url, unb64url
from ppml._json import strict_loads
from ppml.attestation._dcap import parse_quote
from ppml.azure.hcl import HclReport, parse_hcl_report
from ppml.azure.vtpm import verify_tpm_quote
from ppml.errors import AttestationError, EvidenceInvalid

__all__ = ["AzureGuestReply", "OsInfo", "PROTOCOL_VERSION", "TpmInfo", "azure_guest_request",
           "parse_azure_guest_response"]

PROTOCOL_VERSION = "2.0"
TRANSPORT_KEY_AAD = b"Transport Key"
_PEM_CERT = b"-----BEGIN CERTIFICATE-----"


@dataclass(frozen=True, kw_only=True)
class TpmInfo:
    """What the vTPM contributes, as the raw TPM structures (MAA parses them).

    ``aik_cert``: the AK certificate (DER, NV index ``0x01C101D0``); ``aik_pub``: the AK's ``TPM2B_PUBLIC``;
    ``pcr_quote`` / ``pcr_signature``: the ``TPMS_ATTEST`` quote and its raw RSA signature; ``pcrs``: PCR index to
    SHA-256 value, exactly the quoted PCRs; ``enc_key_*``: the ephemeral encryption key's ``TPM2B_PUBLIC``, its
    ``TPM2_Certify`` attestation and that attestation's signature by the AK.
    """

    aik_cert: bytes
    aik_pub: bytes
    pcr_quote: bytes
    pcr_signature: bytes
    pcrs: Mapping[int, bytes]
    enc_key_pub: bytes
    enc_key_certify_info: bytes
    enc_key_certify_info_signature: bytes

    def __post_init__(self) -> None:
        for name in ("aik_cert", "aik_pub", "pcr_quote", "pcr_signature", "enc_key_pub", "enc_key_certify_info",
                     "enc_key_certify_info_signature"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or not value:
                raise ValueError(f"TpmInfo.{name} must be non-empty bytes")
        if not self.pcrs or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 24
                                    for i in self.pcrs):
            raise ValueError("TpmInfo.pcrs must map PCR indices 0-23 to their values")


@dataclass(frozen=True, kw_only=True)
class OsInfo:
    """The guest OS as the library reports it (``/etc/os-release`` NAME and VERSION_ID on Linux)."""

    os_type: str = "Linux"
    distro: str
    version_major: int
    version_minor: int = 0
    build: str = "NotApplication"  # what the library sends on Linux, where MAA ignores the build

    def __post_init__(self) -> None:
        if self.os_type not in ("Linux", "Windows"):
            raise ValueError(f"OsInfo.os_type must be 'Linux' or 'Windows', not {self.os_type!r}")
        if not self.distro or not self.build:
            raise ValueError("OsInfo.distro and OsInfo.build must be non-empty")
        if self.version_major <= 0 or self.version_minor < 0:
            raise ValueError("OsInfo.version_major must be > 0 and version_minor >= 0")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def azure_guest_request(hcl_report: bytes, tpm: TpmInfo, *, os_info: OsInfo, tcg_logs: bytes = b"",
                        vcek_chain: bytes | None = None, td_quote: bytes | None = None,
                        client_payload: Mapping[str, str] | None = None,
                        quote_nonce: bytes | None = None) -> dict[str, str]:
    """The ``attest/AzureGuest`` request body, after checking that the parts belong together.

    Checked offline: the HCL report's hardware REPORTDATA binds its runtime data; the quote is signed by that runtime
    data's ``HCLAkPub``, its digest matches ``tpm.pcrs`` and its ``extraData`` is ``quote_nonce`` (when given); for
    TDX, ``td_quote`` is a quote of this TDREPORT (same REPORTDATA). Not checked: hardware signatures and the AK
    certificate (MAA does that).

    Raises:
        EvidenceInvalid: the parts do not belong together (the message says which).
        AttestationError: the SNP VCEK chain or the TDX quote is missing (``reason="missing_certificates"``).
    """
    hcl = parse_hcl_report(hcl_report)
    verify_tpm_quote(tpm.pcr_quote, tpm.pcr_signature, ak_pub=hcl.ak_pub(), pcrs=tpm.pcrs, nonce=quote_nonce)
    payload = {name: _b64(value.encode("utf-8")) for name, value in (client_payload or {}).items()}
    info = {
        "AttestationProtocolVersion": PROTOCOL_VERSION,
        "OSType": _b64(os_info.os_type.encode("utf-8")),
        "OSDistro": _b64(os_info.distro.encode("utf-8")),
        "OSVersionMajor": os_info.version_major,
        "OSVersionMinor": os_info.version_minor,
        "OSBuild": _b64(os_info.build.encode("utf-8")),
        "TcgLogs": _b64(tcg_logs),
        "ClientPayload": payload,
        "TpmInfo": {
            "AikCert": _b64(tpm.aik_cert),
            "AikPub": _b64(tpm.aik_pub),
            "PcrQuote": _b64(tpm.pcr_quote),
            "PcrSignature": _b64(tpm.pcr_signature),
            "EncKeyPub": _b64(tpm.enc_key_pub),
            "EncKeyCertifyInfo": _b64(tpm.enc_key_certify_info),
            "EncKeyCertifyInfoSignature": _b64(tpm.enc_key_certify_info_signature),
            "PcrSet": sorted(tpm.pcrs),
            "PCRs": [{"Index": index, "Digest": _b64(tpm.pcrs[index])} for index in sorted(tpm.pcrs)],
        },
        "IsolationInfo": _isolation(hcl, vcek_chain, td_quote),
    }
    return {"AttestationInfo": b64url(json.dumps(info, separators=(",", ":")).encode("ascii"))}


def _isolation(hcl: HclReport, vcek_chain: bytes | None, td_quote: bytes | None) -> dict[str, Any]:
    runtime = _b64(hcl.runtime_data)
    if hcl.tee == "snp":
        if td_quote is not None:
            raise ValueError("td_quote is for TDX; this HCL report holds an SEV-SNP report")
        if not vcek_chain or _PEM_CERT not in vcek_chain:
            raise AttestationError("an SEV-SNP AzureGuest request needs the VCEK chain (PEM, from IMDS "
                                   "/metadata/THIM/amd/certification)", reason="missing_certificates")
        proof = {"SnpReport": b64url(hcl.hardware_report), "VcekCertChain": _b64(vcek_chain)}
        return {"Type": "SevSnp", "Evidence": {"Proof": _b64(json.dumps(proof, separators=(",", ":")).encode()),
                                               "RunTimeData": runtime}}
    if vcek_chain is not None:
        raise ValueError("vcek_chain is for SEV-SNP; this HCL report holds a TDX report")
    if not td_quote:
        raise AttestationError("a TDX AzureGuest request needs the TD quote of the HCL's TDREPORT (from IMDS "
                               "/acc/tdquote)", reason="missing_certificates")
    quote = parse_quote(td_quote)
    if quote.tee != "tdx" or not hmac.compare_digest(quote.body.report_data, hcl.report_data):
        raise EvidenceInvalid("the TD quote is not a quote of the HCL report's TDREPORT (its report data differs)",
                              reason="report_data")
    return {"Type": "Tdx", "Evidence": {"Proof": _b64(td_quote), "RunTimeData": runtime}}


@dataclass(frozen=True)
class AzureGuestReply:
    """MAA's encrypted ``AzureGuest`` reply: the JWT under an AES key that is itself encrypted to the vTPM."""

    encrypted_inner_key: bytes
    iv: bytes
    tag: bytes
    encrypted_jwt: bytes
    key_bits: int

    def decrypt(self, inner_key: bytes, url: str) -> str:
        """The JWT, given the inner key the vTPM decrypted; raise ``AttestationError`` naming ``url`` otherwise."""
        if len(inner_key) * 8 != self.key_bits:
            raise AttestationError(f"the AzureGuest reply from {url} needs a {self.key_bits}-bit inner key; the vTPM "
                                   f"returned {len(inner_key) * 8} bits", reason="maa_malformed")
        try:
            plaintext = AESGCM(inner_key).decrypt(self.iv, self.encrypted_jwt + self.tag, TRANSPORT_KEY_AAD)
            return plaintext.decode("ascii")
        except (InvalidTag, UnicodeDecodeError):
            raise AttestationError(f"the AzureGuest reply from {url} does not decrypt with the vTPM's inner key "
                                   "(modified, or encrypted to another TPM)", reason="maa_malformed") from None


def parse_azure_guest_response(reply: Any, url: str) -> AzureGuestReply:  # noqa: ANN401 - parsed JSON
    """Decode the ``{"token": ...}`` reply of ``attest/AzureGuest``; raise ``AttestationError`` naming ``url``."""
    try:
        envelope = strict_loads(unb64url(reply["token"]))
        params = envelope["EncryptionParams"]
        if params["Cipher"] != "AES" or params["BlockMode"] != "ChainingModeGCM":
            raise ValueError(f"unsupported cipher {params['Cipher']!r} / mode {params['BlockMode']!r}")
        key_bits = params["KeySizeInBits"]
        if key_bits not in (128, 192, 256):
            raise ValueError(f"unsupported key size {key_bits!r}")
        fields = [base64.b64decode(value, validate=True) for value in (
            envelope["EncryptedInnerKey"], params["Iv"], envelope["AuthenticationData"], envelope["Jwt"])]
    except KeyError as exc:
        raise AttestationError(f"MAA reply from {url} is not an encrypted AzureGuest token: missing {exc}",
                               reason="maa_malformed") from None
    except (TypeError, ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise AttestationError(f"MAA reply from {url} is not an encrypted AzureGuest token: {exc}",
                               reason="maa_malformed") from None
    return AzureGuestReply(encrypted_inner_key=fields[0], iv=fields[1], tag=fields[2], encrypted_jwt=fields[3],
                           key_bits=key_bits)
