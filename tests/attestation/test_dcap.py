"""DCAP quote parsing and verification against real third-party quotes (see tests/vectors/attestation/).

Expected values come from ``expected_results.json``, which was computed independently of this code. Negative
cases mutate one component of a genuine quote and check that verification fails at exactly that link.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from ppml.attestation import Claims, CollateralError, Crls, EvidenceInvalid, _dcap, verify_sgx_quote, verify_tdx_quote

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "attestation"


def _load_expected() -> list[dict[str, Any]]:
    if not VECTORS.is_dir():
        return []
    return list(json.loads((VECTORS / "expected_results.json").read_text())["dcap_quotes"])


EXPECTED = _load_expected()
SGX = [e for e in EXPECTED if e["tee_type"] == "0x0"]
TDX = [e for e in EXPECTED if e["tee_type"] == "0x81"]
CHAIN_TO_PROD_ROOT = [e for e in EXPECTED if e["signatures_ok"] and "TEST PKI" not in e.get("note", "")]


def _id(entry: dict[str, Any]) -> str:
    window = entry.get("valid_window_utc") or ["nowindow"]
    return f"{entry['quote']}@{window[0][:10]}"


def _quote(entry: dict[str, Any]) -> bytes:
    return (VECTORS / entry["quote"]).read_bytes()


def _inside_window(entry: dict[str, Any]) -> datetime:
    """A verification instant at which the PCK chain and (where stated) all collateral are valid."""
    window = entry.get("valid_window_utc")
    if window and window[2] == "OK":
        return datetime.fromisoformat(window[0])
    return datetime.fromisoformat(entry["pck"]["validity"][0]) + timedelta(days=1)


def _flip(data: bytes, offset: int, mask: int = 0x01) -> bytes:
    out = bytearray(data)
    out[offset] ^= mask
    return bytes(out)


def _sig_data_offset(quote: _dcap.Quote) -> int:
    return len(quote.signed) + 4


def _qe_report_offset(quote: _dcap.Quote) -> int:
    nested_header = 0 if quote.header.version == 3 else 6
    return _sig_data_offset(quote) + 128 + nested_header


# --- parsing --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", SGX, ids=_id)
def test_sgx_quote_parses_to_documented_values(entry: dict[str, Any]) -> None:
    quote = _dcap.parse_quote(_quote(entry))
    body, want = quote.body, entry["body"]
    assert isinstance(body, _dcap.SgxReportBody)
    assert quote.header.version == entry["version"]
    assert body.mr_enclave.hex() == want["mrenclave"]
    assert body.mr_signer.hex() == want["mrsigner"]
    assert body.isv_prod_id == want["isv_prod_id"]
    assert body.isv_svn == want["isv_svn"]
    assert body.attributes.hex() == want["attributes"]
    assert body.report_data.hex() == want["report_data"]
    assert body.debug == bool(bytes.fromhex(want["attributes"])[0] & 0x02)
    qe = quote.certification.qe_report
    assert (qe.mr_signer.hex(), qe.isv_prod_id, qe.isv_svn) == (
        entry["qe"]["mrsigner"], entry["qe"]["isv_prod_id"], entry["qe"]["isv_svn"])
    assert quote.trailing == entry["trailing_bytes"]


@pytest.mark.parametrize("entry", TDX, ids=_id)
def test_tdx_quote_parses_to_documented_values(entry: dict[str, Any]) -> None:
    quote = _dcap.parse_quote(_quote(entry))
    body, want = quote.body, entry["body"]
    assert isinstance(body, _dcap.TdReportBody)
    assert quote.header.version == entry["version"]
    assert body.mr_td.hex() == want["mrtd"]
    assert [r.hex() for r in body.rtmrs] == [want[f"rtmr{i}"] for i in range(4)]
    assert body.mr_config_id.hex() == want["mrconfigid"]
    assert body.td_attributes.hex() == want["td_attributes"]
    assert body.xfam.hex() == want["xfam"]
    assert body.mr_seam.hex() == want["mrseam"]
    assert body.tee_tcb_svn.hex() == want["tee_tcb_svn"]
    assert body.report_data.hex() == want["report_data"]
    assert body.debug == bool(bytes.fromhex(want["td_attributes"])[0] & 0x01)
    qe = quote.certification.qe_report
    assert (qe.mr_signer.hex(), qe.isv_prod_id, qe.isv_svn) == (
        entry["qe"]["mrsigner"], entry["qe"]["isv_prod_id"], entry["qe"]["isv_svn"])
    assert quote.trailing == entry["trailing_bytes"]


@pytest.mark.parametrize(
    ("path", "debug"),
    [
        ("sgx/azure-samples-intel-sdk/enclave.info.debug.sgx_quote.bin", True),
        ("sgx/azure-samples-intel-sdk/enclave.info.release.sgx_quote.bin", False),
        ("sgx/azure-samples-oe-sdk/enclave.info.debug.sgx_quote.bin", True),
        ("sgx/azure-samples-oe-sdk/enclave.info.release.sgx_quote.bin", False),
    ],
)
def test_debug_flag_matches_source_statement(path: str, debug: bool) -> None:
    assert _dcap.parse_quote((VECTORS / path).read_bytes()).body.debug is debug


@pytest.mark.parametrize("entry", [SGX[0], TDX[0]], ids=_id)
def test_every_truncation_is_rejected(entry: dict[str, Any]) -> None:
    data = _quote(entry)
    end = len(data) - entry["trailing_bytes"]
    for cut in range(0, end, 7):
        with pytest.raises(EvidenceInvalid, match="truncated") as info:
            _dcap.parse_quote(data[:cut])
        assert info.value.reason == "malformed"


def test_unknown_version_is_rejected() -> None:
    data = _quote(SGX[0])
    with pytest.raises(EvidenceInvalid, match="version 7") as info:
        _dcap.parse_quote(struct.pack("<H", 7) + data[2:])
    assert info.value.reason == "unsupported"


def test_unknown_attestation_key_type_is_rejected() -> None:
    data = _quote(SGX[0])
    with pytest.raises(EvidenceInvalid, match="attestation key type 3"):
        _dcap.parse_quote(data[:2] + struct.pack("<H", 3) + data[4:])


def test_signature_length_beyond_the_quote_is_rejected() -> None:
    data = _quote(SGX[0])
    at = _sig_data_offset(_dcap.parse_quote(data)) - 4
    with pytest.raises(EvidenceInvalid, match="signature data needs"):
        _dcap.parse_quote(data[:at] + struct.pack("<I", len(data)) + data[at + 4:])


def test_oversized_certification_data_is_rejected() -> None:
    data = _quote(SGX[0])
    quote = _dcap.parse_quote(data)
    at = data.find(quote.certification.cert_data) - 4
    with pytest.raises(EvidenceInvalid, match="certification data needs"):
        _dcap.parse_quote(data[:at] + struct.pack("<I", 0xFFFFFFFF) + data[at + 4:])


def test_intel_test_pki_quote_with_separate_pck_cert_is_not_verified() -> None:
    data = (VECTORS / "sgx/intel-qvl-sampledata-testpki/quote.dat").read_bytes()
    quote = _dcap.parse_quote(data)
    assert quote.certification.cert_data_type == 1
    with pytest.raises(EvidenceInvalid, match="type 1") as info:
        _dcap.verify_quote(quote, now=datetime(2020, 1, 1, tzinfo=UTC))
    assert info.value.reason == "unsupported"


# --- verification ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", CHAIN_TO_PROD_ROOT, ids=_id)
def test_genuine_quote_verifies_inside_its_window(entry: dict[str, Any]) -> None:
    verify = verify_sgx_quote if entry["tee_type"] == "0x0" else verify_tdx_quote
    claims = verify(_quote(entry), now=_inside_window(entry))
    assert isinstance(claims, Claims)
    assert claims.report_data.hex() == entry["body"]["report_data"]
    if claims.tee == "sgx":
        assert claims.measurements["mr_enclave"] == entry["body"]["mrenclave"]
        assert claims.measurements["mr_signer"] == entry["body"]["mrsigner"]
        assert claims.svns == {"isv_prod_id": entry["body"]["isv_prod_id"], "isv_svn": entry["body"]["isv_svn"]}
    else:
        assert claims.measurements["mr_td"] == entry["body"]["mrtd"]
        assert claims.measurements["rtmr3"] == entry["body"]["rtmr3"]
    assert claims.tcb_status is None


def test_wrong_tee_type_is_rejected() -> None:
    with pytest.raises(EvidenceInvalid, match="expected a SGX quote") as info:
        verify_sgx_quote(_quote(TDX[0]), now=_inside_window(TDX[0]))
    assert info.value.reason == "tee_type"


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        verify_sgx_quote(_quote(SGX[0]), now=datetime(2025, 7, 1))


MUTATED = [SGX[0], TDX[0], next(e for e in TDX if e["version"] == 5)]


@pytest.mark.parametrize("entry", MUTATED, ids=_id)
def test_bit_flip_in_body_breaks_quote_signature(entry: dict[str, Any]) -> None:
    data = _quote(entry)
    mutated = _flip(data, 48 + 100)
    with pytest.raises(EvidenceInvalid) as info:
        _dcap.verify_quote(_dcap.parse_quote(mutated), now=_inside_window(entry))
    assert info.value.reason == "quote_signature"


@pytest.mark.parametrize("entry", MUTATED, ids=_id)
def test_bit_flip_in_header_breaks_quote_signature(entry: dict[str, Any]) -> None:
    mutated = _flip(_quote(entry), 40)  # user data
    with pytest.raises(EvidenceInvalid) as info:
        _dcap.verify_quote(_dcap.parse_quote(mutated), now=_inside_window(entry))
    assert info.value.reason == "quote_signature"


@pytest.mark.parametrize("entry", MUTATED, ids=_id)
def test_bit_flip_in_quote_signature_fails(entry: dict[str, Any]) -> None:
    data = _quote(entry)
    mutated = _flip(data, _sig_data_offset(_dcap.parse_quote(data)) + 10)
    with pytest.raises(EvidenceInvalid) as info:
        _dcap.verify_quote(_dcap.parse_quote(mutated), now=_inside_window(entry))
    assert info.value.reason == "quote_signature"


@pytest.mark.parametrize("entry", MUTATED, ids=_id)
def test_bit_flip_in_attestation_key_breaks_binding(entry: dict[str, Any]) -> None:
    data = _quote(entry)
    mutated = _flip(data, _sig_data_offset(_dcap.parse_quote(data)) + 64 + 5)
    with pytest.raises(EvidenceInvalid) as info:
        _dcap.verify_quote(_dcap.parse_quote(mutated), now=_inside_window(entry))
    assert info.value.reason == "attestation_key_binding"


@pytest.mark.parametrize("entry", MUTATED, ids=_id)
def test_bit_flip_in_qe_auth_data_breaks_binding(entry: dict[str, Any]) -> None:
    data = _quote(entry)
    quote = _dcap.parse_quote(data)
    assert quote.certification.qe_auth_data, "vector has QE auth data"
    mutated = _flip(data, _qe_report_offset(quote) + 384 + 64 + 2)
    with pytest.raises(EvidenceInvalid) as info:
        _dcap.verify_quote(_dcap.parse_quote(mutated), now=_inside_window(entry))
    assert info.value.reason == "attestation_key_binding"


@pytest.mark.parametrize("entry", MUTATED, ids=_id)
@pytest.mark.parametrize("where", [0, 64, 320, 383, 384 + 3])  # cpusvn, mrenclave, report data, end, signature
def test_bit_flip_in_qe_report_breaks_qe_signature(entry: dict[str, Any], where: int) -> None:
    data = _quote(entry)
    mutated = _flip(data, _qe_report_offset(_dcap.parse_quote(data)) + where)
    with pytest.raises(EvidenceInvalid) as info:
        _dcap.verify_quote(_dcap.parse_quote(mutated), now=_inside_window(entry))
    assert info.value.reason == "qe_report_signature"


def _swap_base64_char(data: bytes, offset: int) -> bytes:
    out = bytearray(data)
    out[offset] = ord("B") if out[offset] != ord("B") else ord("C")
    return bytes(out)


@pytest.mark.parametrize("entry", MUTATED, ids=_id)
@pytest.mark.parametrize("where", [200, 500, 700])  # inside the PCK leaf certificate's base64 body
def test_change_in_pck_certificate_breaks_chain(entry: dict[str, Any], where: int) -> None:
    data = _quote(entry)
    start = data.find(_dcap.parse_quote(data).certification.cert_data)
    mutated = _swap_base64_char(data, start + where)
    with pytest.raises(EvidenceInvalid) as info:
        _dcap.verify_quote(_dcap.parse_quote(mutated), now=_inside_window(entry))
    assert info.value.reason == "pck_chain"


@pytest.mark.parametrize("entry", MUTATED, ids=_id)
def test_time_after_pck_expiry_fails(entry: dict[str, Any]) -> None:
    after = datetime.fromisoformat(entry["pck"]["validity"][1]) + timedelta(seconds=1)
    with pytest.raises(EvidenceInvalid, match="PCK certificate expired") as info:
        verify_tdx_quote(_quote(entry), now=after) if entry["tee_type"] == "0x81" else verify_sgx_quote(
            _quote(entry), now=after)
    assert info.value.reason == "expired"


@pytest.mark.parametrize("entry", MUTATED, ids=_id)
def test_time_before_pck_issue_fails(entry: dict[str, Any]) -> None:
    before = datetime.fromisoformat(entry["pck"]["validity"][0]) - timedelta(seconds=1)
    with pytest.raises(EvidenceInvalid) as info:
        _dcap.verify_quote(_dcap.parse_quote(_quote(entry)), now=before)
    assert info.value.reason == "not_yet_valid"


def test_chain_ending_in_another_root_is_rejected() -> None:
    quote = _dcap.parse_quote(_quote(SGX[0]))
    chain = _dcap.load_pck_chain(quote.certification.cert_data)
    other = _make_ca("Other Root", ec.generate_private_key(ec.SECP256R1()), None)[0]
    with pytest.raises(EvidenceInvalid, match="not the pinned") as info:
        _dcap.verify_pck_chain([chain[0], chain[1], other], now=_inside_window(SGX[0]), root=_dcap.pinned_root())
    assert info.value.reason == "pck_chain"


# --- CRLs with real Intel collateral ----------------------------------------------------------------------------

PKI = VECTORS / "intel-pki"
ONCHAIN = next(e for e in SGX if e["bundle"] == "sgx/automata-onchain-0825")
QVL = next(e for e in SGX if e["bundle"] == "sgx/dcap-qvl")


def _qvl_crls() -> Crls:
    collateral = json.loads((VECTORS / "sgx/dcap-qvl/sgx_quote_collateral.json").read_text())
    return Crls(root_crl=bytes.fromhex(collateral["root_ca_crl"]), pck_crl=bytes.fromhex(collateral["pck_crl"]))


def _onchain_crls() -> Crls:
    return Crls(
        root_crl=(PKI / "Intel_SGX_Root_CA_CRL_2025-03-20.der").read_bytes(),
        pck_crl=(VECTORS / "sgx/automata-onchain-0825/platform_crl.der").read_bytes(),
    )


@pytest.mark.parametrize(("entry", "crls"), [(ONCHAIN, _onchain_crls), (QVL, _qvl_crls)], ids=["platform", "processor"])
def test_current_crls_that_do_not_list_the_chain_pass(entry: dict[str, Any], crls: Any) -> None:
    claims = verify_sgx_quote(_quote(entry), now=_inside_window(entry), collateral=crls())
    assert claims.measurements["mr_enclave"] == entry["body"]["mrenclave"]


def test_stale_root_crl_is_a_collateral_error() -> None:
    crls = replace(_onchain_crls(), root_crl=(PKI / "Intel_SGX_Root_CA_CRL_2024-03-20.der").read_bytes())
    with pytest.raises(CollateralError, match="not current"):
        verify_sgx_quote(_quote(ONCHAIN), now=_inside_window(ONCHAIN), collateral=crls)


def test_pck_crl_from_the_wrong_ca_is_a_collateral_error() -> None:
    with pytest.raises(CollateralError, match="PCK CRL is issued by"):
        verify_sgx_quote(_quote(QVL), now=_inside_window(ONCHAIN), collateral=Crls(pck_crl=_onchain_crls().pck_crl))


def test_garbage_crl_is_a_collateral_error() -> None:
    with pytest.raises(CollateralError, match="does not parse"):
        verify_sgx_quote(_quote(ONCHAIN), now=_inside_window(ONCHAIN), collateral=Crls(root_crl=b"\x30\x03junk"))


# --- revocation, with a synthetic PKI (no revoked production certificate is available) ------------------------

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _make_ca(
    cn: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *, ca: bool = True,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    issuer_cert, issuer_key = issuer if issuer else (None, key)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer_cert.subject if issuer_cert else _name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=30))
        .not_valid_after(NOW + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca and issuer else None), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )
    return cert, key


def _raw_sig(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _raw_pub(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)[1:]


def _crl(issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], revoked: list[int]) -> bytes:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer[0].subject)
        .last_update(NOW - timedelta(days=1))
        .next_update(NOW + timedelta(days=1))
    )
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(NOW - timedelta(hours=1)).build())
    return builder.sign(issuer[1], hashes.SHA256()).public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def synthetic() -> dict[str, Any]:
    """A v3 quote re-signed end to end under a throwaway root, so revocation can be exercised."""
    real = _dcap.parse_quote(_quote(SGX[0]))
    root = _make_ca("Test Root", ec.generate_private_key(ec.SECP256R1()), None)
    inter = _make_ca("Test PCK CA", ec.generate_private_key(ec.SECP256R1()), root)
    leaf = _make_ca("Test PCK", ec.generate_private_key(ec.SECP256R1()), inter, ca=False)
    att_key = ec.generate_private_key(ec.SECP256R1())
    auth = b"\x01" * 32
    digest = hashlib.sha256(_raw_pub(att_key) + auth).digest() + bytes(32)
    qe_report = real.certification.qe_report.raw[:320] + digest
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf[0], inter[0], root[0]))
    sig_data = (
        _raw_sig(att_key, real.signed) + _raw_pub(att_key) + qe_report + _raw_sig(leaf[1], qe_report)
        + struct.pack("<H", len(auth)) + auth + struct.pack("<HI", 5, len(pem)) + pem
    )
    quote = real.signed + struct.pack("<I", len(sig_data)) + sig_data
    return {"quote": quote, "root": root, "inter": inter, "leaf": leaf}


def test_synthetic_quote_verifies_under_its_root(synthetic: dict[str, Any]) -> None:
    leaf = _dcap.verify_quote(_dcap.parse_quote(synthetic["quote"]), now=NOW, root=synthetic["root"][0])
    assert leaf == synthetic["leaf"][0]


def test_synthetic_quote_is_rejected_by_the_pinned_root(synthetic: dict[str, Any]) -> None:
    with pytest.raises(EvidenceInvalid) as info:
        verify_sgx_quote(synthetic["quote"], now=NOW)
    assert info.value.reason == "pck_chain"


def test_revoked_pck_certificate_fails(synthetic: dict[str, Any]) -> None:
    revoked = [synthetic["leaf"][0].serial_number]
    crls = Crls(root_crl=_crl(synthetic["root"], []), pck_crl=_crl(synthetic["inter"], revoked))
    with pytest.raises(EvidenceInvalid, match="revoked by PCK CRL") as info:
        _dcap.verify_quote(_dcap.parse_quote(synthetic["quote"]), now=NOW, crls=crls, root=synthetic["root"][0])
    assert info.value.reason == "revoked"


def test_revoked_pck_ca_fails(synthetic: dict[str, Any]) -> None:
    crls = Crls(root_crl=_crl(synthetic["root"], [synthetic["inter"][0].serial_number]))
    with pytest.raises(EvidenceInvalid, match="revoked by Intel SGX Root CA CRL") as info:
        _dcap.verify_quote(_dcap.parse_quote(synthetic["quote"]), now=NOW, crls=crls, root=synthetic["root"][0])
    assert info.value.reason == "revoked"


def test_crl_not_signed_by_its_issuer_fails(synthetic: dict[str, Any]) -> None:
    forged = (synthetic["inter"][0], ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(CollateralError, match="signature does not verify"):
        _dcap.verify_quote(_dcap.parse_quote(synthetic["quote"]), now=NOW, crls=Crls(pck_crl=_crl(forged, [])),
                           root=synthetic["root"][0])


def test_leaf_that_is_a_ca_is_rejected(synthetic: dict[str, Any]) -> None:
    leaf_ca = _make_ca("Test PCK", synthetic["leaf"][1], synthetic["inter"])[0]
    with pytest.raises(EvidenceInvalid, match="must not be a CA"):
        _dcap.verify_pck_chain([leaf_ca, synthetic["inter"][0]], now=NOW, root=synthetic["root"][0])


def test_claims_are_immutable() -> None:
    claims = verify_sgx_quote(_quote(QVL), now=_inside_window(QVL))
    with pytest.raises(TypeError):
        claims.measurements["mr_enclave"] = "00"  # type: ignore[index]
    assert claims.debug is False
