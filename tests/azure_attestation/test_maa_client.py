"""MaaClient against a loopback HTTPS stand-in for MAA that answers with MAA's recorded tokens.

What is real here: the tokens (issued by sharedwus.wus.attest.azure.net in 2022 for the recorded SGX quote), the
JWKS they verify with, the Azure SEV-SNP/TDX HCL reports and TPM quotes. What is not: the server. It checks that
our requests have the documented shape and replays a token; MAA itself was not run (there is no emulator).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import ssl
import subprocess
import sys
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ppml.attestation._dcap import parse_quote
from ppml.attestation.tokens import StaticJwks
from ppml.azure import MaaClient, OsInfo, RuntimeJson, check_runtime_data, expected_report_data, runtime_jwks
from ppml.azure.hcl import parse_hcl_report
from ppml.errors import AttestationError, ConfigError, EvidenceInvalid
from tests.azure_attestation.support import (
    RECORDED_AT,
    SHAREDWUS,
    SNP_VTPM,
    TDX_VTPM,
    VECTORS,
    FakeMaa,
    claims_of,
    evidence,
    placeholder_tpm_info,
    recorded_token,
    unb64url,
)

SGX = VECTORS / "sgx" / "azure-sdk-cpp"
SGX_QUOTE = (SGX / "oe_report_debug.sgx_quote.bin").read_bytes()
OE_REPORT = (SGX / "oe_report_debug.bin").read_bytes()
RUNTIME_DATA = (SGX / "runtime_data.bin").read_bytes()  # JSON with an EC JWK, NUL-padded as the SDK sent it
UBUNTU = OsInfo(distro="Ubuntu", version_major=22, version_minor=4)
OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def _client(fake: FakeMaa, **kwargs: Any) -> MaaClient:
    """A client for the stand-in that expects the recorded tokens' issuer (MAA reached through another URL)."""
    return MaaClient(fake.endpoint, ca_file=fake.ca_file, issuer=SHAREDWUS, **kwargs)


# --- the three REST flows, answered with recorded tokens --------------------------------------------------------


def test_sgx_request_shape_and_recorded_token_verifies(fake_maa: FakeMaa) -> None:
    fake_maa.reply = (200, {"token": recorded_token("sgx_runtimedata_json")})
    client = _client(fake_maa)
    token = client.attest_sgx(SGX_QUOTE, runtime_data=RuntimeJson(RUNTIME_DATA))
    (request,) = fake_maa.requests
    assert request["path"] == "/attest/SgxEnclave?api-version=2022-08-01"
    assert request["content_type"] == "application/json"
    assert set(request["body"]) == {"quote", "runtimeData"}
    assert unb64url(request["body"]["quote"]) == SGX_QUOTE and "=" not in request["body"]["quote"]
    assert request["body"]["runtimeData"] == {"data": base64.urlsafe_b64encode(RUNTIME_DATA).rstrip(b"=").decode(),
                                              "dataType": "JSON"}

    verified = client.verify(token, now=RECORDED_AT)  # signing keys fetched from the stand-in's /certs
    assert verified.claims.tee == "sgx" and verified.issuer == SHAREDWUS
    assert verified.raw["x-ms-sgx-collateral"]["quotehash"] == hashlib.sha256(SGX_QUOTE).hexdigest()
    # The token binds the runtime data we sent, and carries it parsed: the enclave's EC key.
    check_runtime_data(verified, RUNTIME_DATA)
    assert parse_quote(SGX_QUOTE).body.report_data == expected_report_data(RUNTIME_DATA)
    assert list(runtime_jwks(verified)) == [json.loads(RUNTIME_DATA.rstrip(b"\0"))["jwk"]]
    with pytest.raises(EvidenceInvalid, match="not SHA-256 of the given runtime data") as info:
        check_runtime_data(verified, RUNTIME_DATA + b"x")
    assert info.value.reason == "report_data"


def test_sgx_binary_runtime_data_and_optional_fields(fake_maa: FakeMaa) -> None:
    fake_maa.reply = (200, {"token": recorded_token("sgx_runtimedata_binary")})
    client = _client(fake_maa)
    token = client.attest_sgx(SGX_QUOTE, runtime_data=RUNTIME_DATA, init_time_data=RuntimeJson(b'{"a": 1}'),
                              draft_policy="version=1.0; authorizationrules{=> permit();};", nonce="n-123")
    body = fake_maa.requests[0]["body"]
    assert body["runtimeData"]["dataType"] == "Binary" and unb64url(body["runtimeData"]["data"]) == RUNTIME_DATA
    assert body["initTimeData"] == {"data": "eyJhIjogMX0", "dataType": "JSON"}
    assert body["draftPolicyForAttestation"].startswith("version=1.0") and body["nonce"] == "n-123"
    verified = client.verify(token, now=RECORDED_AT)
    check_runtime_data(verified, RUNTIME_DATA)
    assert unb64url(verified.raw["x-ms-sgx-ehd"]) == RUNTIME_DATA  # binary runtime data comes back as enclave-held


def test_open_enclave_request_shape(fake_maa: FakeMaa) -> None:
    fake_maa.reply = (200, {"token": recorded_token("openenclave_simple")})
    client = _client(fake_maa)
    token = client.attest_open_enclave(OE_REPORT)
    (request,) = fake_maa.requests
    assert request["path"] == "/attest/OpenEnclave?api-version=2022-08-01"
    assert set(request["body"]) == {"report"} and unb64url(request["body"]["report"]) == OE_REPORT
    verified = client.verify(token, now=RECORDED_AT)
    assert verified.raw["x-ms-sgx-collateral"]["quotehash"] == hashlib.sha256(OE_REPORT).hexdigest()


def test_sev_snp_vm_request_shape(fake_maa: FakeMaa) -> None:
    snp_token = (VECTORS / "maa" / "azure-samples" / "sev-snp-jwt.txt").read_text().strip()
    fake_maa.reply = (200, {"token": snp_token})
    hcl = parse_hcl_report((SNP_VTPM / "hcl-report.bin").read_bytes())
    chain = (SNP_VTPM / "vcek.pem").read_bytes()
    client = _client(fake_maa)
    assert client.attest_sev_snp_vm(hcl.hardware_report, vcek_chain=chain,
                                    runtime_data=RuntimeJson(hcl.runtime_data)) == snp_token
    body = fake_maa.requests[0]["body"]
    assert fake_maa.requests[0]["path"] == "/attest/SevSnpVm?api-version=2022-08-01"
    report = json.loads(unb64url(body["report"]))
    assert report == {"SnpReport": report["SnpReport"], "VcekCertChain": report["VcekCertChain"]}
    assert unb64url(report["SnpReport"]) == hcl.hardware_report and unb64url(report["VcekCertChain"]) == chain
    assert body["runtimeData"]["dataType"] == "JSON" and unb64url(body["runtimeData"]["data"]) == hcl.runtime_data

    # A ready report document (the ACI sidecar's, with UVM endorsements) is sent as given.
    document = {"SnpReport": "AAAA", "VcekCertChain": "BBBB", "Endorsements": "CCCC"}
    client.attest_sev_snp_vm(document, runtime_data=b"rt")
    assert json.loads(unb64url(fake_maa.requests[1]["body"]["report"])) == document
    with pytest.raises(AttestationError, match="no VCEK certificate chain") as info:
        client.attest_sev_snp_vm(hcl.hardware_report, runtime_data=b"rt")
    assert info.value.reason == "missing_certificates" and len(fake_maa.requests) == 2
    with pytest.raises(ValueError, match="vcek_chain only with raw"):
        client.attest_sev_snp_vm(document, vcek_chain=chain, runtime_data=b"rt")


# --- verification --------------------------------------------------------------------------------------------------


def test_verify_checks_issuer_lifetime_and_keys(fake_maa: FakeMaa) -> None:
    token = recorded_token("sgx_simple")
    offline = MaaClient(SHAREDWUS).verify(token, now=RECORDED_AT, keys=StaticJwks(fake_maa.jwks))  # no network
    assert offline.claims.measurements["mr_enclave"] == claims_of(token)["x-ms-sgx-mrenclave"]
    with pytest.raises(EvidenceInvalid) as info:  # the stand-in's own URL is not the issuer MAA wrote
        MaaClient(fake_maa.endpoint, ca_file=fake_maa.ca_file).verify(token, now=RECORDED_AT)
    assert info.value.reason == "token_issuer"
    with pytest.raises(EvidenceInvalid) as info:
        _client(fake_maa).verify(token, now=RECORDED_AT.replace(month=7))
    assert info.value.reason == "token_expired"
    fake_maa.jwks = b'{"keys": []}'
    with pytest.raises(EvidenceInvalid) as info:
        _client(fake_maa).verify(token, now=RECORDED_AT)
    assert info.value.reason == "unknown_kid"


# --- errors --------------------------------------------------------------------------------------------------------


def test_rejection_carries_maa_error_message(fake_maa: FakeMaa) -> None:
    fake_maa.reply = (400, {"error": {"code": "InvalidParameter", "message": "Quote parsing failed"}})
    with pytest.raises(AttestationError) as info:
        _client(fake_maa).attest_sgx(SGX_QUOTE, runtime_data=RUNTIME_DATA)
    assert info.value.reason == "maa_rejected"
    assert str(info.value) == (f"MAA rejected the evidence at {fake_maa.endpoint}/attest/SgxEnclave: "
                               "HTTP 400 InvalidParameter: Quote parsing failed")


@pytest.mark.parametrize(("reply", "reason", "words"), [
    ((500, {"error": {"code": "InternalError", "message": "try later"}}), "maa_unreachable",
     "is unavailable: HTTP 500 InternalError: try later"),
    ((503, b"<html>gateway</html>"), "maa_unreachable", "HTTP 503 <html>gateway</html>"),
    ((302, b""), "maa_rejected", "HTTP 302"),
    ((200, {"jwt": "x.y.z"}), "maa_malformed", "has no JWT 'token' field"),
    ((200, {"token": "not a jwt"}), "maa_malformed", "has no JWT 'token' field"),
    ((200, b"{not json"), "maa_malformed", "is not JSON"),
    ((200, b'{"token": "a.b.c", "token": "d.e.f"}'), "maa_malformed", "is not JSON"),
])
def test_error_mapping(fake_maa: FakeMaa, reply: tuple[int, Any], reason: str, words: str) -> None:
    fake_maa.reply = reply
    with pytest.raises(AttestationError) as info:
        _client(fake_maa).attest_open_enclave(OE_REPORT)
    assert info.value.reason == reason and words in str(info.value)
    assert f"{fake_maa.endpoint}/attest/OpenEnclave" in str(info.value)


def test_tls_is_verified(fake_maa: FakeMaa) -> None:
    fake_maa.reply = (200, {"token": recorded_token("sgx_simple")})
    with pytest.raises(AttestationError, match=r"MAA request to https://127\.0\.0\.1:\d+/attest/SgxEnclave failed"
                                               ".*CERTIFICATE_VERIFY_FAILED") as info:
        MaaClient(fake_maa.endpoint, issuer=SHAREDWUS).attest_sgx(SGX_QUOTE, runtime_data=b"")
    assert info.value.reason == "maa_unreachable" and fake_maa.requests == []
    with pytest.raises(ConfigError, match="cannot be turned off"):
        MaaClient(fake_maa.endpoint, ca_file=False)  # type: ignore[arg-type]
    # An httpx client passed in is used as is; one trusting the test CA works.
    with httpx.Client(verify=ssl.create_default_context(cafile=fake_maa.ca_file)) as http:
        assert _client(fake_maa, http=http).attest_sgx(SGX_QUOTE, runtime_data=b"") == recorded_token("sgx_simple")


def test_timeout(fake_maa: FakeMaa) -> None:
    fake_maa.reply, fake_maa.delay = (200, {"token": recorded_token("sgx_simple")}), 1.0
    with pytest.raises(AttestationError, match=r"/attest/SgxEnclave failed: no answer within 0.2 s") as info:
        _client(fake_maa, timeout=0.2).attest_sgx(SGX_QUOTE, runtime_data=b"")
    assert info.value.reason == "maa_unreachable"


def test_configuration_and_input_errors() -> None:
    with pytest.raises(ConfigError, match="https:// URL"):
        MaaClient("http://maa.example")
    with pytest.raises(ConfigError, match="MAA issuer"):
        MaaClient("https://maa.example", issuer="https://maa.example/")
    with pytest.raises(ConfigError, match="timeout"):
        MaaClient("https://maa.example", timeout=0)
    with pytest.raises(ValueError, match="must be non-empty bytes"):
        MaaClient("https://maa.example").attest_sgx(b"", runtime_data=b"")
    with pytest.raises(ValueError, match="bytes or RuntimeJson"):
        MaaClient("https://maa.example").attest_sgx(b"q", runtime_data="text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not valid JSON"):
        RuntimeJson(b'{"a": 1, "a": 2}')
    with pytest.raises(ValueError, match="must be an object"):
        RuntimeJson(b"[1]")


# --- the confidential VM (vTPM) flow ----------------------------------------------------------------------------



def _encrypted_guest_reply(jwt: str, tpm_key: rsa.RSAPublicKey, *, aad: bytes = b"Transport Key") -> dict[str, str]:
    """What MAA answers to AzureGuest: the JWT under an AES-GCM key that is encrypted to the vTPM's ephemeral key."""
    inner, iv = os.urandom(32), os.urandom(12)
    sealed = AESGCM(inner).encrypt(iv, jwt.encode(), aad)
    envelope = {"EncryptedInnerKey": base64.b64encode(tpm_key.encrypt(inner, OAEP)).decode(),
                "EncryptionParams": {"Cipher": "AES", "BlockMode": "ChainingModeGCM", "BlockPadding": "PKCS7",
                                     "KeySizeInBits": 256, "Iv": base64.b64encode(iv).decode()},
                "AuthenticationData": base64.b64encode(sealed[-16:]).decode(),
                "Jwt": base64.b64encode(sealed[:-16]).decode()}
    return {"token": base64.urlsafe_b64encode(json.dumps(envelope).encode()).rstrip(b"=").decode()}


def test_azure_guest_round_trip(fake_maa: FakeMaa) -> None:
    ev = evidence(SNP_VTPM / "evidence-v1.json")
    tpm_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # stands in for the vTPM's key
    jwt = recorded_token("sgx_simple")  # any signed MAA JWT: this tests the transport, not an azurevm token
    fake_maa.reply = (200, _encrypted_guest_reply(jwt, tpm_key.public_key()))
    client = _client(fake_maa)
    attest = partial(client.attest_azure_guest, ev["hcl_report"], placeholder_tpm_info(ev), os_info=UBUNTU,
                     vcek_chain=ev["vcek_chain"], quote_nonce=b"challenge")
    token = attest(decrypt_inner_key=lambda blob: tpm_key.decrypt(blob, OAEP))
    assert token == jwt and client.verify(token, now=RECORDED_AT).claims.tee == "sgx"
    (request,) = fake_maa.requests
    assert request["path"] == "/attest/AzureGuest?api-version=2020-10-01"
    assert set(request["body"]) == {"AttestationInfo"}
    info = json.loads(unb64url(request["body"]["AttestationInfo"]))
    assert info["IsolationInfo"]["Type"] == "SevSnp" and info["TpmInfo"]["PcrSet"] == list(range(24))

    with pytest.raises(AttestationError, match="does not decrypt with the vTPM's inner key") as err:
        attest(decrypt_inner_key=lambda blob: bytes(32))
    assert err.value.reason == "maa_malformed"

    def broken_tpm(blob: bytes) -> bytes:
        raise RuntimeError("TPM_RC_POLICY_FAIL")

    with pytest.raises(AttestationError, match="with the vTPM key failed: TPM_RC_POLICY_FAIL"):
        attest(decrypt_inner_key=broken_tpm)
    fake_maa.reply = (200, {"token": recorded_token("sgx_simple")})  # a plain JWT where the envelope belongs
    with pytest.raises(AttestationError, match="is not an encrypted AzureGuest token") as err:
        attest(decrypt_inner_key=lambda blob: b"")
    assert err.value.reason == "maa_malformed"


def test_azure_guest_checks_parts_before_sending(fake_maa: FakeMaa) -> None:
    ev = evidence(TDX_VTPM / "evidence-v1.json")
    bad = {**ev["pcrs"], 0: bytes(32)}
    with pytest.raises(EvidenceInvalid, match="do not hash to the quoted PCR digest"):
        _client(fake_maa).attest_azure_guest(ev["hcl_report"], replace(placeholder_tpm_info(ev), pcrs=bad),
                                             os_info=UBUNTU, td_quote=ev["td_quote"],
                                             decrypt_inner_key=lambda blob: b"")
    assert fake_maa.requests == []


# --- documentation and packaging ----------------------------------------------------------------------------------


def test_docs_example_runs(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                           caplog: pytest.LogCaptureFixture) -> None:
    root = Path(__file__).resolve().parents[2]
    doc = (root / "docs" / "azure-attestation.md").read_text()
    (block,) = re.findall(r"```python\n(.*?)```", doc.split("## Example", 1)[1].split("\n## ", 1)[0], re.S)
    monkeypatch.chdir(root)
    namespace: dict[str, Any] = {}
    with caplog.at_level(logging.WARNING):
        exec(compile(block, "docs/azure-attestation.md", "exec"), namespace)  # noqa: S102 - our own documentation
    assert capsys.readouterr().out.split() == ["sgx", "EC", "P-256", "snp", "2048"]
    assert namespace["verified"].issuer == SHAREDWUS


@pytest.mark.parametrize("first", ["ppml.azure.maa", "ppml.azure.runtime_key", "ppml.attestation.collectors.maa"])
def test_import_order_does_not_matter(first: str) -> None:
    # ppml.azure imports ppml.attestation, whose package imports the MAA collector, which uses ppml.azure.
    code = f"import {first}; import ppml.azure, ppml.attestation; print(ppml.azure.MaaClient.__name__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stdout.strip() == "MaaClient", result.stderr
