"""Normalized claims from verified SGX and TDX quotes (STYLE practice 8: verify first, appraise separately).

``verify_*_quote`` only returns a :class:`Claims` once every signature and the certificate chain to the pinned
Intel root have verified; comparing the claims with reference values is the policy module's job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import MappingProxyType

from cryptography import x509

from ppml.attestation import _dcap
from ppml.attestation.collateral import Collateral, appraise
from ppml.attestation.collateral_source import CollateralSource, fetch_for_quote
from ppml.attestation.errors import EvidenceInvalid

#: What ``verify_*_quote`` accept as ``collateral``: nothing, CRLs only, full collateral, or a source to fetch it from.
CollateralInput = _dcap.Crls | Collateral | CollateralSource | None


@dataclass(frozen=True)
class Claims:
    """What a verified quote proves: which code runs (measurements, hex), in which mode, bound to which data.

    ``report_data`` is exact (64 bytes, no padding removed) so the caller can compare it with the hash of its
    nonce and key. ``tcb_status`` and ``advisory_ids`` stay empty until TCB collateral is appraised; then
    ``tcb_status`` is the combined status and ``tcb_statuses`` its inputs by component: ``platform``, ``qe`` and,
    for TDX quotes whose module has its own identity, ``tdx_module``. ``advisory_ids`` merges the advisories of all
    of them (platform first).
    """

    tee: str
    measurements: Mapping[str, str]
    svns: Mapping[str, int]
    debug: bool
    report_data: bytes
    tcb_status: str | None = None
    advisory_ids: tuple[str, ...] = ()
    quote_version: int = field(default=0, compare=False)
    tcb_statuses: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "measurements", MappingProxyType(dict(self.measurements)))
        object.__setattr__(self, "svns", MappingProxyType(dict(self.svns)))
        object.__setattr__(self, "tcb_statuses", MappingProxyType(dict(self.tcb_statuses)))


def sgx_claims(quote: _dcap.Quote) -> Claims:
    """Claims of an SGX enclave quote; only call after the quote has verified."""
    body = quote.body
    assert isinstance(body, _dcap.SgxReportBody)
    return Claims(
        tee="sgx",
        measurements={
            "mr_enclave": body.mr_enclave.hex(),
            "mr_signer": body.mr_signer.hex(),
            "attributes": body.attributes.hex(),
            "cpu_svn": body.cpu_svn.hex(),
        },
        svns={"isv_prod_id": body.isv_prod_id, "isv_svn": body.isv_svn},
        debug=body.debug,
        report_data=body.report_data,
        quote_version=quote.header.version,
    )


def tdx_claims(quote: _dcap.Quote) -> Claims:
    """Claims of a TDX quote; only call after the quote has verified."""
    body = quote.body
    assert isinstance(body, _dcap.TdReportBody)
    measurements = {
        "mr_td": body.mr_td.hex(),
        **{f"rtmr{i}": rtmr.hex() for i, rtmr in enumerate(body.rtmrs)},
        "mr_config_id": body.mr_config_id.hex(),
        "mr_owner": body.mr_owner.hex(),
        "mr_owner_config": body.mr_owner_config.hex(),
        "mr_seam": body.mr_seam.hex(),
        "mr_signer_seam": body.mr_signer_seam.hex(),
        "td_attributes": body.td_attributes.hex(),
        "xfam": body.xfam.hex(),
        "tee_tcb_svn": body.tee_tcb_svn.hex(),
    }
    if body.mr_servicetd is not None:
        measurements["mr_servicetd"] = body.mr_servicetd.hex()
    return Claims(
        tee="tdx",
        measurements=measurements,
        svns={},
        debug=body.debug,
        report_data=body.report_data,
        quote_version=quote.header.version,
    )


def _verified(quote: bytes, tee: str, now: datetime, collateral: CollateralInput,
              ) -> tuple[_dcap.Quote, x509.Certificate, _dcap.Crls | Collateral | None]:
    """Parse and verify the quote; fetch collateral from a source only once the quote itself has verified."""
    parsed = _dcap.parse_quote(quote)
    if parsed.tee != tee:
        raise EvidenceInvalid(f"expected a {tee.upper()} quote, got a {parsed.tee.upper()} quote", reason="tee_type")
    if isinstance(collateral, CollateralSource):
        _dcap.verify_quote(parsed, now=now)  # no network request on behalf of a forged quote
        collateral = fetch_for_quote(collateral, parsed, now=now)
    crls = collateral.crls() if isinstance(collateral, Collateral) else collateral
    leaf = _dcap.verify_quote(parsed, now=now, crls=crls)
    return parsed, leaf, collateral


def _appraised(claims: Claims, parsed: _dcap.Quote, leaf: x509.Certificate,
               collateral: _dcap.Crls | Collateral | None, now: datetime) -> Claims:
    if not isinstance(collateral, Collateral):
        return claims
    result = appraise(parsed, leaf, collateral, now=now)
    return replace(claims, tcb_status=result.status, advisory_ids=result.advisory_ids,
                   tcb_statuses=result.statuses())


def verify_sgx_quote(quote: bytes, *, now: datetime, collateral: CollateralInput = None) -> Claims:
    """Verify an SGX DCAP quote at time ``now`` and return its claims; raise ``AttestationError`` otherwise.

    With a full :class:`Collateral` (or a :class:`CollateralSource` to fetch it from) the TCB Info and QE Identity
    are verified too and ``tcb_status`` / ``advisory_ids`` are filled (see :mod:`ppml.attestation.collateral`);
    with only :class:`Crls` (or nothing) they stay empty.
    """
    parsed, leaf, fetched = _verified(quote, "sgx", now, collateral)
    return _appraised(sgx_claims(parsed), parsed, leaf, fetched, now)


def verify_tdx_quote(quote: bytes, *, now: datetime, collateral: CollateralInput = None) -> Claims:
    """Verify a TDX DCAP quote (v4 or v5) at time ``now`` and return its claims; raise ``AttestationError`` otherwise.

    With a full :class:`Collateral` (or a :class:`CollateralSource`) the TDX TCB Info, TDX module identity and TD_QE
    identity are appraised and ``tcb_status``, ``tcb_statuses`` and ``advisory_ids`` are filled; a TCB that no
    level matches raises ``EvidenceInvalid`` with reason ``tcb_not_supported``.
    """
    parsed, leaf, fetched = _verified(quote, "tdx", now, collateral)
    return _appraised(tdx_claims(parsed), parsed, leaf, fetched, now)
