"""TCB collateral appraisal against real Intel PCS collateral (see tests/vectors/attestation/SOURCE.md).

Expected statuses and advisories come from ``expected_results.json`` (computed independently of this code and,
for S1/S2, stated by the originating projects). Negative cases change one thing in genuine collateral.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ppml.attestation import (
    Claims,
    Collateral,
    CollateralError,
    EvidenceInvalid,
    _dcap,
    _der,
    verify_sgx_quote,
    verify_tdx_quote,
)
from ppml.attestation.collateral import (
    combine_status,
    parse_pck_extensions,
    platform_tcb,
    qe_tcb,
    signed_json_value,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "attestation"


def _load_expected() -> list[dict[str, Any]]:
    if not VECTORS.is_dir():
        return []
    return list(json.loads((VECTORS / "expected_results.json").read_text())["dcap_quotes"])


# Every SGX quote with full production collateral and a computed TCB status (the Intel test-PKI bundle S9 uses
# certification data type 1, which the quote verifier does not support, so it is left out).
BUNDLES = [
    e for e in _load_expected()
    if e["tee_type"] == "0x0" and e.get("collateral_files") and e.get("tcb_status")
    and "TEST PKI" not in e.get("note", "")
]


def _read(rel: str) -> bytes:
    return (VECTORS / rel).read_bytes()


def _wrap(key: str, body: str, signature: str) -> bytes:
    """dcap-qvl stores the signed JSON value and its signature separately; rebuild the PCS response around them."""
    return f'{{"{key}":{body},"signature":"{signature}"}}'.encode()


def _collateral(entry: dict[str, Any], *, crls: bool = True) -> Collateral:
    files = entry["collateral_files"]
    if files["tcb_info"].endswith("(all fields)"):
        doc = json.loads(_read(files["tcb_info"].split(" ")[0]))
        return Collateral(
            tcb_info_json=_wrap("tcbInfo", doc["tcb_info"], doc["tcb_info_signature"]),
            qe_identity_json=_wrap("enclaveIdentity", doc["qe_identity"], doc["qe_identity_signature"]),
            tcb_signing_chain=[doc["tcb_info_issuer_chain"].encode()],
            root_crl=bytes.fromhex(doc["root_ca_crl"]) if crls else None,
            pck_crl=bytes.fromhex(doc["pck_crl"]) if crls else None,
        )
    return Collateral(
        tcb_info_json=_read(files["tcb_info"]),
        qe_identity_json=_read(files["qe_identity"]),
        tcb_signing_chain=[_read(p.strip()) for p in files["tcb_signing_chain"].split("+")],
        root_crl=_read(files["root_crl"]) if crls else None,
        pck_crl=_read(files["pck_crl"]) if crls else None,
    )


def _window(entry: dict[str, Any]) -> tuple[datetime, datetime]:
    start, end, ok = entry["valid_window_utc"]
    assert ok == "OK"
    return datetime.fromisoformat(start), datetime.fromisoformat(end)


def _by_bundle(prefix: str) -> dict[str, Any]:
    return next(e for e in BUNDLES if e["bundle"] == prefix)


def _id(entry: dict[str, Any]) -> str:
    return entry["bundle"].split(" ")[0] + ("-alt" if "alt" in entry["bundle"] else "")


def test_bundles_cover_the_documented_sgx_cases() -> None:
    assert len(BUNDLES) >= 6  # S1, S2, S2-alt, S3, S4, S5
    assert {e["tcb_status"]["platform"] for e in BUNDLES} >= {
        "ConfigurationAndSWHardeningNeeded", "SWHardeningNeeded", "OutOfDate"}


@pytest.mark.parametrize("entry", BUNDLES, ids=_id)
def test_tcb_status_and_advisories_match_expected(entry: dict[str, Any]) -> None:
    start, end = _window(entry)
    want = entry["tcb_status"]
    assert want["qe"] == "UpToDate"  # so the combined status is the platform status
    for now in (start, end - timedelta(seconds=1)):
        claims = verify_sgx_quote(_read(entry["quote"]), now=now, collateral=_collateral(entry))
        assert claims.tcb_status == want["platform"]
        assert claims.advisory_ids == tuple(want["advisories"] or ())


def test_source_stated_results() -> None:
    s1 = _by_bundle("sgx/dcap-qvl")
    claims = verify_sgx_quote(_read(s1["quote"]), now=datetime.fromisoformat("2025-07-19T10:01:17+00:00"),
                              collateral=_collateral(s1))
    assert claims.tcb_status == "ConfigurationAndSWHardeningNeeded"
    assert claims.advisory_ids == ("INTEL-SA-00289", "INTEL-SA-00615")
    s2 = _by_bundle("sgx/automata-onchain-0825")
    claims = verify_sgx_quote(_read(s2["quote"]), now=datetime.fromisoformat("2025-08-15T05:45:00+00:00"),
                              collateral=_collateral(s2))
    assert (claims.tcb_status, claims.advisory_ids) == ("SWHardeningNeeded", ("INTEL-SA-00615",))


def test_crls_only_still_accepted_and_leave_status_empty() -> None:
    s2 = _by_bundle("sgx/automata-onchain-0825")
    col = _collateral(s2)
    claims = verify_sgx_quote(_read(s2["quote"]), now=_window(s2)[0], collateral=col.crls())
    assert isinstance(claims, Claims)
    assert claims.tcb_status is None and claims.advisory_ids == ()


# --- negative cases -------------------------------------------------------------------------------------------


def _s2() -> tuple[bytes, Collateral, datetime]:
    entry = _by_bundle("sgx/automata-onchain-0825")
    return _read(entry["quote"]), _collateral(entry, crls=False), _window(entry)[0]


def _reason(exc_type: type[Exception], quote: bytes, now: datetime, collateral: Collateral) -> str:
    with pytest.raises(exc_type) as info:
        verify_sgx_quote(quote, now=now, collateral=collateral)
    return str(info.value.reason)  # type: ignore[attr-defined]


def test_expired_collateral() -> None:
    quote, col, _ = _s2()
    tcb_next = datetime.fromisoformat("2025-09-14T05:08:18+00:00")  # TCB Info nextUpdate
    qe_next = datetime.fromisoformat("2025-09-14T04:36:46+00:00")  # QE Identity nextUpdate
    assert _reason(CollateralError, quote, tcb_next, col) == "expired"
    assert _reason(CollateralError, quote, qe_next, col) == "expired"
    assert _reason(CollateralError, quote, tcb_next + timedelta(days=30), col) == "expired"


def test_expired_collateral_with_crls_fails_too() -> None:
    entry = _by_bundle("sgx/dcap-qvl")
    with pytest.raises(CollateralError):
        verify_sgx_quote(_read(entry["quote"]), now=_window(entry)[1] + timedelta(days=1),
                         collateral=_collateral(entry))


def test_collateral_not_yet_valid() -> None:
    quote, col, _ = _s2()
    tcb_issue = datetime.fromisoformat("2025-08-15T05:08:18+00:00")  # TCB Info issueDate (QE Identity: 04:36:46)
    assert _reason(CollateralError, quote, tcb_issue - timedelta(seconds=1), col) == "not_yet_valid"
    assert verify_sgx_quote(quote, now=tcb_issue, collateral=col).tcb_status == "SWHardeningNeeded"


def test_one_byte_change_in_signed_tcb_info_fails_signature() -> None:
    quote, col, now = _s2()
    doc = col.tcb_info_json
    assert doc.count(b'"tcbEvaluationDataNumber":17') == 1
    tampered = doc.replace(b'"tcbEvaluationDataNumber":17', b'"tcbEvaluationDataNumber":18')
    assert len(tampered) == len(doc)
    assert _reason(CollateralError, quote, now, replace(col, tcb_info_json=tampered)) == "signature"


def test_one_byte_change_in_signed_qe_identity_fails_signature() -> None:
    quote, col, now = _s2()
    tampered = col.qe_identity_json.replace(b'"isvsvn":8', b'"isvsvn":7', 1)
    assert tampered != col.qe_identity_json
    assert _reason(CollateralError, quote, now, replace(col, qe_identity_json=tampered)) == "signature"


def test_whitespace_outside_the_signed_value_is_irrelevant() -> None:
    quote, col, now = _s2()
    loose = b"  " + col.tcb_info_json.replace(b',"signature":', b' ,\n "signature" : ') + b"\n"
    claims = verify_sgx_quote(quote, now=now, collateral=replace(col, tcb_info_json=loose))
    assert claims.tcb_status == "SWHardeningNeeded"


def test_signature_is_over_exact_bytes_not_reserialized_json() -> None:
    quote, col, now = _s2()
    signed, _ = signed_json_value(col.tcb_info_json, "tcbInfo", "TCB Info")
    reserialized = json.dumps(json.loads(signed), indent=1).encode()
    doc = col.tcb_info_json.replace(signed, reserialized)
    assert _reason(CollateralError, quote, now, replace(col, tcb_info_json=doc)) == "signature"


def test_tcb_info_for_another_fmspc() -> None:
    quote, _, _ = _s2()  # FMSPC 00606a000000
    other = _by_bundle("sgx/dcap-qvl")  # collateral for FMSPC 00a067110000
    col = _collateral(other, crls=False)
    assert _reason(CollateralError, quote, _window(other)[0], col) == "fmspc_mismatch"


def test_tcb_signing_chain_must_chain_to_pinned_root() -> None:
    quote, col, now = _s2()
    wrong = replace(col, tcb_signing_chain=[_read("intel-pki/Intel_SGX_PCK_Platform_CA.der")])
    assert _reason(CollateralError, quote, now, wrong) == "tcb_signing_chain"
    only_root = replace(col, tcb_signing_chain=[_read("intel-pki/Intel_SGX_Root_CA.der")])
    assert _reason(CollateralError, quote, now, only_root) == "tcb_signing_chain"


def test_expired_tcb_signing_certificate() -> None:
    quote, col, now = _s2()  # August 2025: the 2018 issuance expired on 2025-05-21
    old = replace(col, tcb_signing_chain=[_read("intel-pki/Intel_SGX_TCB_Signing_2018-05-21.der")])
    assert _reason(CollateralError, quote, now, old) == "expired"


def test_malformed_collateral_json() -> None:
    quote, col, now = _s2()
    for bad in (b"", b"[]", col.tcb_info_json[:-1], col.tcb_info_json + b"x",
                col.tcb_info_json.replace(b'"signature"', b'"sig"'),
                col.tcb_info_json[:-2] + b'0"}'):
        assert _reason(CollateralError, quote, now, replace(col, tcb_info_json=bad)) == "malformed"


def test_collateral_of_the_other_tee_is_rejected() -> None:
    """SGX TCB Info (and QE identity) never judge a TDX quote, nor TDX collateral an SGX quote."""
    quote, col, now = _s2()
    tdx_quote = _read("tdx/automata/quotev4.bin")  # same Platform CA, so the CRLs in ``col`` apply
    with pytest.raises(CollateralError) as info:
        verify_tdx_quote(tdx_quote, now=now, collateral=col)
    assert info.value.reason == "unsupported"
    june = Collateral(  # June 2025: SGX QE identity and TDX TCB Info of the same FMSPC/CA, both current
        tcb_info_json=_read("tdx/automata/0625/tcbinfov3_00806f050000.json"),
        qe_identity_json=_read("tdx/automata/0625/identity.json"),
        tcb_signing_chain=[_read("intel-pki/Intel_SGX_TCB_Signing_2025-05-06.der")],
    )
    with pytest.raises(CollateralError) as info:
        verify_sgx_quote(quote, now=datetime.fromisoformat("2025-06-05T00:00:00+00:00"), collateral=june)
    assert info.value.reason == "unsupported"


# --- unit level: PCK extensions, matching rules, DER reader ---------------------------------------------------


def _pck_leaf(rel: str) -> Any:
    quote = _dcap.parse_quote(_read(rel))
    return quote, _dcap.load_pck_chain(quote.certification.cert_data)[0]


def test_pck_extensions_of_dcap_qvl_quote() -> None:
    quote, leaf = _pck_leaf("sgx/dcap-qvl/sgx_quote")
    ext = parse_pck_extensions(leaf)
    assert ext.fmspc.hex() == "00a067110000"
    assert ext.pceid == b"\x00\x00"
    assert ext.pcesvn == 13
    assert ext.comp_svns == (11, 11, 2, 2, 255, 1) + (0,) * 10
    assert ext.cpusvn == bytes(ext.comp_svns)
    assert ext.sgx_type == 0


def _body(doc: bytes, key: str) -> dict[str, Any]:
    return dict(json.loads(doc)[key])


def test_no_matching_platform_level_is_tcb_not_supported() -> None:
    _, col, _ = _s2()
    quote, leaf = _pck_leaf("sgx/automata-onchain-0825/quotev3.bin")
    pck = parse_pck_extensions(leaf)
    body = _body(col.tcb_info_json, "tcbInfo")
    assert platform_tcb(body, pck)[0] == "SWHardeningNeeded"
    low = replace(pck, pcesvn=0)
    with pytest.raises(EvidenceInvalid) as info:
        platform_tcb(body, low)
    assert info.value.reason == "tcb_not_supported"
    top = platform_tcb(body, replace(pck, comp_svns=(255,) * 16, pcesvn=255))
    assert top[0] == body["tcbLevels"][0]["tcbStatus"]  # the newest level matches first


def test_qe_identity_matching() -> None:
    _, col, _ = _s2()
    quote, _ = _pck_leaf("sgx/automata-onchain-0825/quotev3.bin")
    qe = quote.certification.qe_report
    body = _body(col.qe_identity_json, "enclaveIdentity")
    assert qe_tcb(body, qe) == ("UpToDate", ())
    assert qe_tcb(body, replace(qe, isv_svn=6)) == ("OutOfDate", ("INTEL-SA-00615",))
    with pytest.raises(EvidenceInvalid) as info:
        qe_tcb(body, replace(qe, isv_svn=0))
    assert info.value.reason == "tcb_not_supported"
    for changed in (replace(qe, mr_signer=bytes(32)), replace(qe, isv_prod_id=2), replace(qe, misc_select=1),
                    replace(qe, attributes=bytes(16))):
        with pytest.raises(EvidenceInvalid) as info:
            qe_tcb(body, changed)
        assert info.value.reason == "qe_identity"
    # bits outside attributesMask are ignored
    assert qe_tcb(body, replace(qe, attributes=qe.attributes[:8] + b"\xff" * 8))[0] == "UpToDate"


def test_combine_status() -> None:
    assert combine_status("SWHardeningNeeded", "UpToDate") == "SWHardeningNeeded"
    assert combine_status("UpToDate", "OutOfDate") == "OutOfDate"
    assert combine_status("ConfigurationAndSWHardeningNeeded", "OutOfDate") == "OutOfDateConfigurationNeeded"
    assert combine_status("OutOfDate", "OutOfDate") == "OutOfDate"
    assert combine_status("UpToDate", "Revoked") == "Revoked"
    assert combine_status("Revoked", "UpToDate") == "Revoked"


@pytest.mark.parametrize("data", [
    b"\x30", b"\x30\x05\x02\x01", b"\x30\x80\x00\x00", b"\x30\x81\x05\x02\x01\x00\x02\x01",
    b"\x30\x85\x00\x00\x00\x00\x01\x00", b"\x1f\x01\x00", b"\x30\x81\x01\x00",
])
def test_der_reader_rejects_malformed(data: bytes) -> None:
    with pytest.raises(EvidenceInvalid):
        _der.read_one(data, _der.TAG_SEQUENCE)


def test_der_helpers() -> None:
    assert _der.decode_oid(bytes.fromhex("2a864886f84d010d01")) == "1.2.840.113741.1.13.1"
    assert _der.decode_uint(b"\x00\xff") == 255
    with pytest.raises(EvidenceInvalid):
        _der.decode_uint(b"\x80")
    with pytest.raises(EvidenceInvalid):
        _der.oid_pairs(b"\x30\x03\x06\x01\x2a")  # a pair without its value
