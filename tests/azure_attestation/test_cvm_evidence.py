"""Azure confidential VM evidence on real recorded vectors: HCL reports, vTPM quotes, the AzureGuest request.

The SEV-SNP and TDX HCL reports and TPM quotes come from Azure CVMs (via confidential-containers/trustee test data):
their bindings are checked for real. For SNP the chain of trust is checked end to end offline: AMD's VCEK signs
the report, whose REPORTDATA binds the HCL runtime data, whose HCLAkPub signs the TPM quote over the PCRs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ppml.attestation.snp import verify_snp_report
from ppml.azure import OsInfo, azure_guest_request, parse_hcl_report, parse_tpm_quote, verify_tpm_quote
from ppml.azure.guest import parse_azure_guest_response
from ppml.azure.hcl import IGVM_OFFSET
from ppml.errors import AttestationError, EvidenceInvalid
from tests.azure_attestation.support import SNP_VTPM, TDX_VTPM, VECTORS, evidence, placeholder_tpm_info, unb64url

# (HCL report source, TEE, REPORTDATA[0:32] as stated in tests/vectors/attestation/expected_results.json / README)
HCL_REPORTS = [
    (SNP_VTPM / "hcl-report.bin", "snp", "b3fbad6514c83caeb0380882145e49f794229ef37c421b91fc47ff93556bafac"),
    (SNP_VTPM / "evidence-v0.json", "snp", "af2910341dd8108360e485f1b72494255190b9cdd5ccb44b73b883037cf99f21"),  # = v1
    (SNP_VTPM / "evidence-genoa.json", "snp", "b581f12e29a2d7d64e5e0b738d563879a78b51c644d0fa0cce02b48699f6bf5f"),
    (SNP_VTPM / "evidence-v1.json", "snp", "af2910341dd8108360e485f1b72494255190b9cdd5ccb44b73b883037cf99f21"),
    (SNP_VTPM / "evidence-v2.json", "snp", "cf7cc0731c50f64876804b3943b2bfbd93dba69f5928e3df223e78ff34dd46ee"),
    (TDX_VTPM / "hcl-report.bin", "tdx", "9734504f161d104c74e3165c15f779b06a9bb40dfa71937817d7eee68e593839"),
    (TDX_VTPM / "evidence-v0.json", "tdx", "9734504f161d104c74e3165c15f779b06a9bb40dfa71937817d7eee68e593839"),
    (TDX_VTPM / "evidence-v1.json", "tdx", "9734504f161d104c74e3165c15f779b06a9bb40dfa71937817d7eee68e593839"),
]
OS = OsInfo(distro="Ubuntu", version_major=22, version_minor=4)


def _hcl_bytes(path: Path) -> bytes:
    if path.suffix == ".bin":
        return path.read_bytes()
    doc = json.loads(path.read_text())
    raw = doc.get("hcl_report", doc.get("report"))
    return bytes(raw) if isinstance(raw, list) else unb64url(raw)



def _b64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


# --- HCL reports ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "tee", "report_data"), HCL_REPORTS, ids=[f"{p.parent.name}/{p.name}"
                                                                            for p, _, _ in HCL_REPORTS])
def test_hcl_report_binds_runtime_data(path: Path, tee: str, report_data: str) -> None:
    hcl = parse_hcl_report(_hcl_bytes(path))
    assert hcl.tee == tee and hcl.hash_name == "sha256"
    assert hcl.report_data == bytes.fromhex(report_data) + bytes(32)
    assert hashlib.sha256(hcl.runtime_data).hexdigest() == report_data
    assert len(hcl.hardware_report) == {"snp": 0x4A0, "tdx": 0x400}[tee]
    assert [k["kid"] for k in hcl.runtime_json["keys"]] == ["HCLAkPub", "HCLEkPub"]
    assert hcl.ak_pub().key_size == 2048 and len(hcl.user_data) == 64
    assert hcl.runtime_json["vm-configuration"]["tpm-enabled"] is True


def test_snp_chain_of_trust_offline() -> None:
    """AMD signs the report -> REPORTDATA binds the runtime data -> its HCLAkPub signs the TPM quote."""
    ev = evidence(SNP_VTPM / "evidence-v1.json")
    hcl = parse_hcl_report(ev["hcl_report"])
    claims = verify_snp_report(hcl.hardware_report, vcek_pem_or_der=ev["vcek_der"],
                               chain_pem=(VECTORS / "sev-snp" / "amd-kds-chains" / "ask_ark_milan.pem").read_bytes(),
                               now=datetime.fromisoformat("2025-01-28T16:26:55+00:00") + timedelta(days=30))
    assert claims.report_data == hcl.report_data
    quote = verify_tpm_quote(ev["quote"], ev["signature"], ak_pub=hcl.ak_pub(), pcrs=ev["pcrs"], nonce=b"challenge")
    assert quote.pcr_selection == ((0x000B, tuple(range(24))),)


@pytest.mark.parametrize(("mutate", "reason", "words"), [
    (lambda b: b[:0x4D4 + 10] + bytes([b[0x4D4 + 10] ^ 1]) + b[0x4D4 + 11:], "report_data", "is not SHA256 of"),
    (lambda b: b[:0x70] + bytes([b[0x70] ^ 1]) + b[0x71:], "report_data", "report was altered"),
    (lambda b: b"HCLB" + b[4:], "malformed", "signature is b'HCLB'"),
    (lambda b: b[:4] + struct.pack("<I", 9) + b[8:], "unsupported", "unsupported version 9"),
    (lambda b: b[:IGVM_OFFSET + 8] + struct.pack("<I", 3) + b[IGVM_OFFSET + 12:], "unsupported", "Trusted Launch"),
    (lambda b: b[:IGVM_OFFSET + 12] + struct.pack("<I", 7) + b[IGVM_OFFSET + 16:], "malformed", "hash type 7"),
    (lambda b: b[:IGVM_OFFSET + 16] + struct.pack("<I", 5000) + b[IGVM_OFFSET + 20:], "malformed", "IGVM data size"),
    (lambda b: b[:8] + struct.pack("<I", 9000) + b[12:], "malformed", "report size 9000"),
    (lambda b: b[:1000], "malformed", "shorter than its fixed part"),
    (lambda b: b[:0x20] + bytes(4) + b[0x24:], "unsupported", "SEV-SNP report version 0"),
])
def test_hcl_report_tampering(mutate: Any, reason: str, words: str) -> None:
    data = (SNP_VTPM / "hcl-report.bin").read_bytes()
    with pytest.raises(EvidenceInvalid) as info:
        parse_hcl_report(mutate(data))
    assert info.value.reason == reason and words in str(info.value)


def test_tdx_hcl_report_checks_the_tdreport_type() -> None:
    data = bytearray((TDX_VTPM / "hcl-report.bin").read_bytes())
    data[0x20] = 0x00
    with pytest.raises(EvidenceInvalid, match="TDREPORT type is 0x0"):
        parse_hcl_report(bytes(data))


# --- TPM quotes -----------------------------------------------------------------------------------------------------


def test_tpm_quote_parse_and_verify() -> None:
    quote = parse_tpm_quote((SNP_VTPM / "tpm-quote.msg").read_bytes())
    assert quote.extra_data == b"challenge" and quote.pcr_selection == ((0x000B, (0, 1, 2, 3, 4, 5, 6, 7, 14)),)
    # tpm-quote-v1.json was made by the vTPM whose HCL report is hcl-report.bin.
    doc = json.loads((SNP_VTPM / "tpm-quote-v1.json").read_text())
    message, signature = bytes.fromhex(doc["message"]), bytes.fromhex(doc["signature"])
    pcrs = {index: bytes.fromhex(value) for index, value in enumerate(doc["pcrs"])}
    ak = parse_hcl_report((SNP_VTPM / "hcl-report.bin").read_bytes()).ak_pub()
    assert verify_tpm_quote(message, signature, ak_pub=ak, pcrs=pcrs).raw == message
    other_ak = parse_hcl_report((TDX_VTPM / "hcl-report.bin").read_bytes()).ak_pub()
    failures = [
        (lambda: verify_tpm_quote(message, signature, ak_pub=other_ak, pcrs=pcrs), "tpm_quote_signature"),
        (lambda: verify_tpm_quote(message, signature[:-1] + b"\0", ak_pub=ak, pcrs=pcrs), "tpm_quote_signature"),
        (lambda: verify_tpm_quote(message, signature, ak_pub=ak, pcrs={**pcrs, 3: bytes(32)}), "pcr_digest"),
        (lambda: verify_tpm_quote(message, signature, ak_pub=ak, pcrs={i: pcrs[i] for i in range(23)}), "pcr_digest"),
        (lambda: verify_tpm_quote(message, signature, ak_pub=ak, pcrs=pcrs, nonce=b"other"), "nonce"),
        (lambda: parse_tpm_quote(message + b"\0"), "malformed"),
        (lambda: parse_tpm_quote(message[:40]), "malformed"),
        (lambda: parse_tpm_quote(b"\0" + message[1:]), "malformed"),
    ]
    for call, reason in failures:
        with pytest.raises(EvidenceInvalid) as info:
            call()
        assert info.value.reason == reason


# --- the AzureGuest request -----------------------------------------------------------------------------------------


def test_azure_guest_request_snp() -> None:
    ev = evidence(SNP_VTPM / "evidence-v1.json")
    body = azure_guest_request(ev["hcl_report"], placeholder_tpm_info(ev), os_info=OS, tcg_logs=b"EVENTLOG",
                               vcek_chain=ev["vcek_chain"], client_payload={"nonce": "abc"}, quote_nonce=b"challenge")
    assert set(body) == {"AttestationInfo"} and "=" not in body["AttestationInfo"]
    info = json.loads(unb64url(body["AttestationInfo"]))
    assert set(info) == {"AttestationProtocolVersion", "OSType", "OSDistro", "OSVersionMajor", "OSVersionMinor",
                         "OSBuild", "TcgLogs", "ClientPayload", "TpmInfo", "IsolationInfo"}
    assert info["AttestationProtocolVersion"] == "2.0"
    assert (_b64(info["OSType"]), _b64(info["OSDistro"]), _b64(info["OSBuild"])) == (b"Linux", b"Ubuntu",
                                                                                     b"NotApplication")
    assert (info["OSVersionMajor"], info["OSVersionMinor"]) == (22, 4) and _b64(info["TcgLogs"]) == b"EVENTLOG"
    assert info["ClientPayload"] == {"nonce": base64.b64encode(b"abc").decode()}
    tpm = info["TpmInfo"]
    assert _b64(tpm["PcrQuote"]) == ev["quote"] and _b64(tpm["PcrSignature"]) == ev["signature"]
    assert _b64(tpm["AikCert"]) == b"AIK-CERT-DER" and _b64(tpm["EncKeyCertifyInfoSignature"]) == b"CERTIFY-SIG"
    assert tpm["PcrSet"] == list(range(24))
    assert [(p["Index"], _b64(p["Digest"])) for p in tpm["PCRs"]] == sorted(ev["pcrs"].items())
    isolation = info["IsolationInfo"]
    hcl = parse_hcl_report(ev["hcl_report"])
    assert isolation["Type"] == "SevSnp" and _b64(isolation["Evidence"]["RunTimeData"]) == hcl.runtime_data
    proof = json.loads(_b64(isolation["Evidence"]["Proof"]))
    assert unb64url(proof["SnpReport"]) == hcl.hardware_report and _b64(proof["VcekCertChain"]) == ev["vcek_chain"]


def test_azure_guest_request_tdx() -> None:
    ev = evidence(TDX_VTPM / "evidence-v1.json")
    info = json.loads(unb64url(azure_guest_request(ev["hcl_report"], placeholder_tpm_info(ev), os_info=OS,
                                                   td_quote=ev["td_quote"])["AttestationInfo"]))
    evidence_doc = info["IsolationInfo"]["Evidence"]
    assert info["IsolationInfo"]["Type"] == "Tdx" and _b64(evidence_doc["Proof"]) == ev["td_quote"]
    assert _b64(evidence_doc["RunTimeData"]) == parse_hcl_report(ev["hcl_report"]).runtime_data
    assert info["ClientPayload"] == {} and info["TcgLogs"] == ""
    other_quote = (VECTORS / "tdx" / "azure-tdx-vtpm" / "td-quote.bin").read_bytes()
    assert other_quote == ev["td_quote"]  # the same TD quote, stored twice in the vectors
    with pytest.raises(EvidenceInvalid, match="not a quote of the HCL report's TDREPORT"):
        azure_guest_request(ev["hcl_report"], placeholder_tpm_info(ev), os_info=OS,
                            td_quote=(VECTORS / "tdx" / "dcap-qvl" / "quote-from-tappd.bin").read_bytes())


def test_azure_guest_request_refuses_parts_that_do_not_belong_together() -> None:
    snp, tdx = evidence(SNP_VTPM / "evidence-v1.json"), evidence(TDX_VTPM / "evidence-v1.json")
    with pytest.raises(EvidenceInvalid) as info:  # the TDX VM's quote with the SNP VM's HCL report
        azure_guest_request(snp["hcl_report"], placeholder_tpm_info(tdx), os_info=OS, vcek_chain=snp["vcek_chain"])
    assert info.value.reason == "tpm_quote_signature"
    with pytest.raises(AttestationError, match="needs the VCEK chain") as err:
        azure_guest_request(snp["hcl_report"], placeholder_tpm_info(snp), os_info=OS)
    assert err.value.reason == "missing_certificates"
    with pytest.raises(AttestationError, match="needs the TD quote"):
        azure_guest_request(tdx["hcl_report"], placeholder_tpm_info(tdx), os_info=OS)
    with pytest.raises(ValueError, match="td_quote is for TDX"):
        azure_guest_request(snp["hcl_report"], placeholder_tpm_info(snp), os_info=OS, vcek_chain=snp["vcek_chain"],
                            td_quote=tdx["td_quote"])
    with pytest.raises(ValueError, match="vcek_chain is for SEV-SNP"):
        azure_guest_request(tdx["hcl_report"], placeholder_tpm_info(tdx), os_info=OS, vcek_chain=snp["vcek_chain"],
                            td_quote=tdx["td_quote"])
    with pytest.raises(ValueError, match="enc_key_pub must be non-empty"):
        replace(placeholder_tpm_info(snp), enc_key_pub=b"")
    with pytest.raises(ValueError, match="PCR indices"):
        replace(placeholder_tpm_info(snp), pcrs={24: bytes(32)})
    with pytest.raises(ValueError, match="version_major"):
        OsInfo(distro="Ubuntu", version_major=0)
    with pytest.raises(ValueError, match="os_type"):
        OsInfo(os_type="Plan9", distro="x", version_major=1)


def test_azure_guest_reply_parsing() -> None:
    with pytest.raises(AttestationError, match="https://maa.example/attest/AzureGuest is not an encrypted"):
        parse_azure_guest_response({"token": "e30"}, "https://maa.example/attest/AzureGuest")  # token = "{}"
    envelope = {"EncryptedInnerKey": "AA==", "AuthenticationData": "AA==", "Jwt": "AA==",
                "EncryptionParams": {"Cipher": "DES", "BlockMode": "ChainingModeGCM", "KeySizeInBits": 256,
                                     "Iv": "AA=="}}
    def token() -> str:
        return base64.urlsafe_b64encode(json.dumps(envelope).encode()).decode().rstrip("=")

    with pytest.raises(AttestationError, match="unsupported cipher 'DES'"):
        parse_azure_guest_response({"token": token()}, "u")
    envelope["EncryptionParams"]["Cipher"] = "AES"
    envelope.pop("Jwt")
    with pytest.raises(AttestationError, match="missing 'Jwt'"):
        parse_azure_guest_response({"token": token()}, "u")
    envelope["Jwt"] = "not base64!"
    with pytest.raises(AttestationError, match="base64"):
        parse_azure_guest_response({"token": token()}, "u")
    envelope["Jwt"] = "AA=="
    reply = parse_azure_guest_response({"token": token()}, "u")
    with pytest.raises(AttestationError, match="needs a 256-bit inner key; the vTPM returned 128 bits"):
        reply.decrypt(bytes(16), "u")
