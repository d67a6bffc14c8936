"""TDX TCB appraisal (TCB Info v3 "TDX", TDX module identities, TD_QE identity) against real Intel PCS collateral.

The table names every TDX bundle of tests/vectors/attestation/SOURCE.md that has collateral, with the combined
status SOURCE.md states. The per-component expectations (platform, TDX module, QE, advisories) come from
``expected_results.json``, which was computed independently of this code. Negative cases change one thing.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from ppml.attestation import AttestationError, Collateral, CollateralError, EvidenceInvalid, _dcap, verify_tdx_quote
from ppml.attestation.collateral import (
    combine_status,
    parse_pck_extensions,
    tdx_module_tcb,
    tdx_platform_tcb,
)
from tests.attestation.test_collateral import _collateral, _load_expected, _read, _window

NOT_SUPPORTED = "tcb_not_supported"

# (SOURCE.md id, bundle name in expected_results.json, combined TCB status SOURCE.md states or NOT_SUPPORTED)
TABLE = [
    ("T1", "tdx/go-tdx-guest SPR_E4", NOT_SUPPORTED),
    ("T3", "tdx/go-tdx-guest ccel/cos-113 (cross: automata 1025 collateral)", "UpToDate"),
    ("T4", "tdx/dcap-qvl tdx_quote", "UpToDate"),
    ("T5", "tdx/dcap-qvl tdx_quote_outdated", NOT_SUPPORTED),
    ("T6a", "tdx/dcap-qvl tdx-quote.bin (cross: tdx_quote_collateral.json)", NOT_SUPPORTED),
    ("T6b", "tdx/dcap-qvl quote-from-tappd.bin (cross: tdx_quote_collateral.json)", NOT_SUPPORTED),
    ("T7", "tdx/trustee tdx_quote_6 (cross: +automata 1025 PCK CRL)", "OutOfDate"),
    ("T8", "tdx/trustee tdx_quote_4 (cross: go-tdx-guest 2023 collateral)", "UpToDate"),
    ("T9", "tdx/trustee tdx_quote_5 (cross: automata 0625 90C06F collateral)", NOT_SUPPORTED),
    ("T10-0625", "tdx/automata quotev4 + 0625", "OutOfDate"),
    ("T10-0725", "tdx/automata quotev4 + 0725", "OutOfDate"),
    ("T10-1025", "tdx/automata quotev4 + 1025", "OutOfDate"),
    ("T11", "tdx/automata quotev5_alibaba + 0625", "UpToDate"),
    ("T12", "tdx/azure-tdx-vtpm td-quote (cross: automata 1025)", "OutOfDate"),
    ("T13", "sgx/automata-go-sdk-mock #1 TDX (cross: 0625 90C06F)", NOT_SUPPORTED),
]
EXPECTED = {e["bundle"]: e for e in _load_expected()}
IDS = [row[0] for row in TABLE]


def _entry(bundle: str) -> dict[str, Any]:
    return EXPECTED[bundle]


def _want_statuses(entry: dict[str, Any]) -> dict[str, str]:
    want = entry["tcb_status"]
    out = {"platform": want["platform"]}
    if want["tdx_module"] is not None:
        out["tdx_module"] = want["tdx_module"][1]
    out["qe"] = want["qe"]
    return out


def _verify(entry: dict[str, Any], now: datetime, collateral: Collateral | None = None) -> Any:
    return verify_tdx_quote(_read(entry["quote"]), now=now, collateral=collateral or _collateral(entry))


def test_table_covers_every_tdx_bundle_with_a_common_window() -> None:
    with_window = {b for b, e in EXPECTED.items() if e["tee_type"] == "0x81" and e["valid_window_utc"][2] == "OK"}
    assert with_window == {row[1] for row in TABLE}


@pytest.mark.parametrize(("bundle", "combined"), [row[1:] for row in TABLE], ids=IDS)
def test_tcb_status_inside_the_window(bundle: str, combined: str) -> None:
    entry = _entry(bundle)
    start, end = _window(entry)
    for now in (start, end - timedelta(seconds=1)):
        if combined == NOT_SUPPORTED:
            assert entry["tcb_status"]["platform"] == "NotSupported"
            with pytest.raises(EvidenceInvalid, match="no TCB level") as info:
                _verify(entry, now)
            assert info.value.reason == NOT_SUPPORTED
            continue
        claims = _verify(entry, now)
        assert claims.tcb_status == combined
        assert claims.advisory_ids == tuple(entry["tcb_status"]["advisories"] or ())
        assert dict(claims.tcb_statuses) == _want_statuses(entry)


@pytest.mark.parametrize("bundle", [row[1] for row in TABLE], ids=IDS)
def test_fails_outside_the_window(bundle: str) -> None:
    entry = _entry(bundle)
    start, end = _window(entry)
    with pytest.raises(CollateralError):
        _verify(entry, end + timedelta(seconds=1))
    with pytest.raises(AttestationError):  # some collateral (or the PCK certificate) is not yet valid
        _verify(entry, start - timedelta(seconds=1))


def _flip_signature(document: bytes) -> bytes:
    """Flip the lowest bit of the document's signature (hex r||s)."""
    match = re.search(rb'"signature"\s*:\s*"([0-9a-fA-F]{128})"', document)
    assert match is not None
    raw = bytearray(bytes.fromhex(match.group(1).decode()))
    raw[-1] ^= 0x01
    return document[: match.start(1)] + raw.hex().encode() + document[match.end(1) :]


@pytest.mark.parametrize("bundle", [row[1] for row in TABLE], ids=IDS)
@pytest.mark.parametrize("document", ["tcb_info_json", "qe_identity_json"])
def test_bit_flipped_signature_fails(bundle: str, document: str) -> None:
    entry = _entry(bundle)
    col = _collateral(entry)
    tampered = replace(col, **{document: _flip_signature(getattr(col, document))})
    with pytest.raises(CollateralError, match="signature does not verify") as info:
        _verify(entry, _window(entry)[0], tampered)
    assert info.value.reason == "signature"


# --- T2: the v5 sample's collateral has no common validity window -------------------------------------------

T2 = "tdx/go-tdx-guest quote_v5_sample"


def test_t2_has_no_instant_at_which_everything_is_valid() -> None:
    entry = _entry(T2)
    assert entry["valid_window_utc"][2] == "EMPTY"
    tcb_issue = datetime.fromisoformat("2026-02-01T14:49:26+00:00")  # TCB Info v5 issueDate
    qe_next = datetime.fromisoformat("2023-07-08T07:24:59+00:00")  # QE Identity nextUpdate
    pck_start = datetime.fromisoformat(entry["pck"]["validity"][0])
    for now in (qe_next - timedelta(seconds=1), pck_start, tcb_issue, tcb_issue + timedelta(days=10)):
        with pytest.raises(AttestationError):
            _verify(entry, now)
    with pytest.raises(CollateralError, match="Root CA CRL is not current"):
        _verify(entry, tcb_issue)


def test_t2_tcb_levels_alone_give_the_documented_status() -> None:
    """The TCB rules themselves agree with SOURCE.md for T2; only the collateral's dates are missing."""
    entry = _entry(T2)
    quote, pck = _quote_and_pck(entry)
    body = _tcb_body(entry)
    assert tdx_platform_tcb(body, pck, quote.body)[:2] == ("UpToDate", ())
    assert tdx_module_tcb(body, quote.body) == ("TDX_01", "UpToDate", ())


# --- unit level: the TDX rules on real TCB Info bodies, one field changed --------------------------------------

T10 = "tdx/automata quotev4 + 1025"


def _quote_and_pck(entry: dict[str, Any]) -> tuple[Any, Any]:
    quote = _dcap.parse_quote(_read(entry["quote"]))
    assert isinstance(quote.body, _dcap.TdReportBody)
    return quote, parse_pck_extensions(_dcap.load_pck_chain(quote.certification.cert_data)[0])


def _tcb_body(entry: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(_collateral(entry).tcb_info_json)["tcbInfo"])


def _svn(td: _dcap.TdReportBody, **bytes_at: int) -> _dcap.TdReportBody:
    svn = bytearray(td.tee_tcb_svn)
    for index, value in bytes_at.items():
        svn[int(index[1:])] = value
    return replace(td, tee_tcb_svn=bytes(svn))


def test_module_version_skips_the_first_two_tdx_components() -> None:
    quote, pck = _quote_and_pck(_entry(T10))
    body = _tcb_body(_entry(T10))
    td = quote.body
    assert td.tee_tcb_svn[:3] == bytes([4, 1, 7])
    assert body["tcbLevels"][0]["tcb"]["tdxtcbcomponents"][0]["svn"] == 5  # above the TD's 4, yet not compared
    assert tdx_platform_tcb(body, pck, td)[0] == "OutOfDate"  # the PCK's SGX TCB is below the newest level
    newest_sgx = replace(pck, comp_svns=(255,) * 16, pcesvn=255)
    assert tdx_platform_tcb(body, newest_sgx, td)[0] == "UpToDate"
    assert tdx_platform_tcb(body, newest_sgx, _svn(td, b1=0))[0] == "OutOfDate"  # TDX 1.0: byte 0 (4 < 5) counts
    with pytest.raises(EvidenceInvalid) as info:
        tdx_platform_tcb(body, newest_sgx, _svn(td, b1=0, b0=2))
    assert info.value.reason == NOT_SUPPORTED


def test_module_status_comes_from_the_module_identity_levels() -> None:
    quote, _ = _quote_and_pck(_entry(T10))
    body = _tcb_body(_entry(T10))
    td = quote.body
    assert tdx_module_tcb(body, td) == ("TDX_01", "UpToDate", ())  # ISVSVN 4
    assert tdx_module_tcb(body, _svn(td, b0=3))[:2] == ("TDX_01", "OutOfDate")  # 2 <= 3 < 4
    assert tdx_module_tcb(body, _svn(td, b0=3, b1=3))[:2] == ("TDX_03", "UpToDate")
    with pytest.raises(EvidenceInvalid) as info:
        tdx_module_tcb(body, _svn(td, b0=1))
    assert info.value.reason == NOT_SUPPORTED
    assert tdx_module_tcb(body, _svn(td, b1=0)) == (None, None, ())  # TDX 1.0: judged by the platform levels


def test_unknown_module_version_is_a_mismatch() -> None:
    quote, _ = _quote_and_pck(_entry(T10))
    body = _tcb_body(_entry(T10))
    for td_body, tcb_body in ((_svn(quote.body, b1=2), body), (quote.body, {**body, "tdxModuleIdentities": []})):
        with pytest.raises(EvidenceInvalid, match="no TDX module identity TDX_0") as info:
            tdx_module_tcb(tcb_body, td_body)
        assert info.value.reason == "tdx_module_mismatch"


def test_module_signer_and_attributes_must_match() -> None:
    quote, _ = _quote_and_pck(_entry(T10))
    body = _tcb_body(_entry(T10))
    td = quote.body
    for changed in (replace(td, mr_signer_seam=b"\x01" + bytes(47)), replace(td, seam_attributes=b"\x01" + bytes(7)),
                    _svn(replace(td, seam_attributes=b"\x01" + bytes(7)), b1=0)):
        with pytest.raises(EvidenceInvalid) as info:
            tdx_module_tcb(body, changed)
        assert info.value.reason == "tdx_module_mismatch"
    identities = [{**i, "attributesMask": "FEFFFFFFFFFFFFFF"} for i in body["tdxModuleIdentities"]]
    unmasked = {**body, "tdxModuleIdentities": identities}
    assert tdx_module_tcb(unmasked, replace(td, seam_attributes=b"\x01" + bytes(7)))[1] == "UpToDate"


def test_module_status_combines_with_platform_and_qe_like_qvl() -> None:
    quote, _ = _quote_and_pck(_entry(T10))
    body = _tcb_body(_entry(T10))
    levels = [{**level, "tcbStatus": "Revoked", "advisoryIDs": ["INTEL-SA-99999"]}
              for level in body["tdxModuleIdentities"][1]["tcbLevels"]]
    identities = [body["tdxModuleIdentities"][0], {**body["tdxModuleIdentities"][1], "tcbLevels": levels}]
    module_id, status, advisories = tdx_module_tcb({**body, "tdxModuleIdentities": identities}, quote.body)
    assert (module_id, status, advisories) == ("TDX_01", "Revoked", ("INTEL-SA-99999",))
    assert combine_status("UpToDate", status) == "Revoked"
    assert combine_status(combine_status("ConfigurationNeeded", "OutOfDate"), "UpToDate") == \
        "OutOfDateConfigurationNeeded"


def test_sgx_qe_identity_does_not_judge_a_tdx_quote() -> None:
    entry = _entry("tdx/automata quotev4 + 0625")
    col = replace(_collateral(entry), qe_identity_json=_read("tdx/automata/0625/identity.json"))  # id "QE"
    with pytest.raises(CollateralError, match="TD_QE") as info:
        _verify(entry, _window(entry)[0], col)
    assert info.value.reason == "unsupported"


def test_tcb_info_for_another_fmspc() -> None:
    entry = _entry(T10)
    other = replace(_collateral(entry), tcb_info_json=_read("tdx/trustee/tcbInfo.json"))  # FMSPC 00A06D080000
    with pytest.raises(CollateralError) as info:
        _verify(entry, datetime.fromisoformat("2025-10-28T07:00:00+00:00"), other)
    assert info.value.reason == "fmspc_mismatch"
