"""The one entry point: real evidence of every TEE type through ``EvidenceVerifier``, and the report-data binding."""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime

import pytest

from ppml.attestation import Collateral, Evidence, EvidenceVerifier, VerifierSettings
from ppml.errors import EvidenceInvalid
from ppml.testing.simulated_tee import simulated_attester
from tests.attestation import test_collateral as sgx_vectors
from tests.attestation import test_snp as snp_vectors
from tests.attestation import test_tdx_collateral as tdx_vectors
from tests.attestation import test_tokens as token_vectors


class FixedCollateral:
    """A collateral source that always answers with one recorded bundle (a real CollateralSource, offline)."""

    def __init__(self, collateral: Collateral) -> None:
        self.collateral = collateral
        self.asked: list[tuple[str, bytes, str]] = []

    def collateral_for(self, *, tee: str, fmspc: bytes, ca: str, now: datetime) -> Collateral:
        self.asked.append((tee, fmspc, ca))
        return self.collateral


def _sgx_case() -> tuple[bytes, FixedCollateral, datetime]:
    entry = sgx_vectors._by_bundle("sgx/dcap-qvl")
    start, _ = sgx_vectors._window(entry)
    return sgx_vectors._read(entry["quote"]), FixedCollateral(sgx_vectors._collateral(entry)), start


def _report_data(quote: bytes, offset: int) -> bytes:
    return quote[offset : offset + 64]


SGX_REPORT_DATA_OFFSET = 48 + 320  # header, then REPORTDATA is the last 64 bytes of the 384-byte report body
TDX_REPORT_DATA_OFFSET = 48 + 520


def test_sgx_quote_verifies_with_collateral_and_binding() -> None:
    quote, source, now = _sgx_case()
    verifier = EvidenceVerifier(VerifierSettings(collateral=source))
    expected = _report_data(quote, SGX_REPORT_DATA_OFFSET)
    assert expected.startswith(b"Hello, world!")
    claims = verifier.verify(Evidence("sgx", quote), report_data=expected, now=now)
    assert claims.tee == "sgx" and claims.tcb_status == "ConfigurationAndSWHardeningNeeded"
    assert source.asked == [("sgx", bytes.fromhex("00a067110000"), "processor")]


def test_sgx_quote_bound_to_other_data_is_refused() -> None:
    quote, source, now = _sgx_case()
    verifier = EvidenceVerifier(VerifierSettings(collateral=source))
    with pytest.raises(EvidenceInvalid) as error:
        verifier.verify(Evidence("sgx", quote), report_data=bytes(64), now=now)
    assert error.value.reason == "binding" and "replayed" in str(error.value)


def test_sgx_quote_without_collateral_has_no_tcb_status() -> None:
    quote, _, now = _sgx_case()
    claims = EvidenceVerifier().verify(Evidence("sgx", quote), report_data=_report_data(quote, 368), now=now)
    assert claims.tcb_status is None


def test_tdx_quote_verifies_with_collateral_and_binding() -> None:
    entry = tdx_vectors._entry("tdx/dcap-qvl tdx_quote")
    quote = sgx_vectors._read(entry["quote"])
    start, _ = sgx_vectors._window(entry)
    verifier = EvidenceVerifier(VerifierSettings(collateral=FixedCollateral(sgx_vectors._collateral(entry))))
    claims = verifier.verify(Evidence("tdx", quote), report_data=_report_data(quote, TDX_REPORT_DATA_OFFSET),
                             now=start)
    assert claims.tee == "tdx" and claims.tcb_status == "UpToDate"
    with pytest.raises(EvidenceInvalid, match="binding|not bound"):
        verifier.verify(Evidence("tdx", quote), report_data=bytes(64), now=start)


def test_sgx_quote_presented_as_tdx_is_refused() -> None:
    quote, source, now = _sgx_case()
    with pytest.raises(EvidenceInvalid) as error:
        EvidenceVerifier(VerifierSettings(collateral=source)).verify(Evidence("tdx", quote), report_data=bytes(64),
                                                                     now=now)
    assert error.value.reason == "tee_type"


def test_snp_report_verifies_from_a_pem_bundle() -> None:
    entry = snp_vectors._entry("sev-snp/go-sev-guest")
    report = snp_vectors._report(entry)
    vcek = snp_vectors._vcek(entry)
    leaf = vcek if vcek.startswith(b"-----") else _pem(vcek)
    bundle = leaf + snp_vectors._chain(entry)
    expected = bytes.fromhex(entry["report_data"]) if "report_data" in entry else report[0x50:0x90]
    claims = EvidenceVerifier().verify(Evidence("snp", report, bundle), report_data=expected,
                                       now=snp_vectors._inside(entry))
    assert claims.tee == "snp" and claims.report_data.startswith(bytes([1, 2, 3, 4, 5]))
    with pytest.raises(EvidenceInvalid) as error:
        EvidenceVerifier().verify(Evidence("snp", report, b""), report_data=expected, now=snp_vectors._inside(entry))
    assert error.value.reason == "vcek_chain"


def _pem(der: bytes) -> bytes:
    """PEM armour around DER without parsing it (this test VCEK has a serial number cryptography warns about)."""
    text = base64.encodebytes(der).replace(b"\n", b"")
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return b"-----BEGIN CERTIFICATE-----\n" + b"\n".join(lines) + b"\n-----END CERTIFICATE-----\n"


def test_maa_token_signature_then_binding() -> None:
    entry = token_vectors._expected("maa/azure-sdk-cpp/sgx_simple.jwt")
    token = token_vectors._token(token_vectors.VECTORS / entry["token"]).encode()
    now = token_vectors._time(entry["iat"], 3600)
    trusted = EvidenceVerifier(VerifierSettings(token_issuers={token_vectors.MAA_ISSUER: token_vectors._maa_keys()}))
    # The token's report data is SHA-256 of Azure's sample runtime data, not of any 64 bytes we could have sent:
    # the signature verifies, and the binding then refuses it.
    with pytest.raises(EvidenceInvalid) as error:
        trusted.verify(Evidence("maa", token), report_data=bytes(64), now=now)
    assert error.value.reason == "binding"
    runtime = hashlib.sha256(bytes(64)).digest()
    assert runtime != bytes.fromhex(entry["claims"]["x-ms-sgx-report-data"])[:32]

    with pytest.raises(EvidenceInvalid) as untrusted:
        EvidenceVerifier().verify(Evidence("maa", token), report_data=bytes(64), now=now)
    assert untrusted.value.reason == "untrusted_root" and "sharedwus" in str(untrusted.value)


def test_simulated_evidence_needs_a_trusted_simulator_key() -> None:
    attester = simulated_attester(None)
    evidence = attester.collect(bytes(range(64)))
    with pytest.raises(EvidenceInvalid, match="trusts no simulator key"):
        EvidenceVerifier().verify(evidence, report_data=bytes(range(64)), now=datetime.now())
    settings = VerifierSettings(simulator_keys=(attester.public_key,))
    claims = EvidenceVerifier(settings).verify(evidence, report_data=bytes(range(64)), now=datetime.now())
    assert claims.tee == "simulated"
    with pytest.raises(EvidenceInvalid, match="not bound"):
        EvidenceVerifier(settings).verify(evidence, report_data=bytes(64), now=datetime.now())


def test_unknown_evidence_type() -> None:
    with pytest.raises(EvidenceInvalid) as error:
        EvidenceVerifier().verify(Evidence("nitro", b"x"), report_data=bytes(64), now=datetime.now())
    assert error.value.reason == "tee_type" and "nitro" in str(error.value)

