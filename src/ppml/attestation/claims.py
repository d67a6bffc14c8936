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
from ppml.attestation.errors import CollateralError, EvidenceInvalid


@dataclass(frozen=True)
class Claims:
    """What a verified quote proves: which code runs (measurements, hex), in which mode, bound to which data.

    ``report_data`` is exact (64 bytes, no padding removed) so the caller can compare it with the hash of its
    nonce and key. ``tcb_status`` and ``advisory_ids`` stay empty until TCB collateral is appraised.
    """

    tee: str
    measurements: Mapping[str, str]
    svns: Mapping[str, int]
    debug: bool
    report_data: bytes
    tcb_status: str | None = None
    advisory_ids: tuple[str, ...] = ()
    quote_version: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "measurements", MappingProxyType(dict(self.measurements)))
        object.__setattr__(self, "svns", MappingProxyType(dict(self.svns)))


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


def _verified(quote: bytes, tee: str, now: datetime, collateral: _dcap.Crls | Collateral | None,
              ) -> tuple[_dcap.Quote, x509.Certificate]:
    parsed = _dcap.parse_quote(quote)
    if parsed.tee != tee:
        raise EvidenceInvalid(f"expected a {tee.upper()} quote, got a {parsed.tee.upper()} quote", reason="tee_type")
    crls = collateral.crls() if isinstance(collateral, Collateral) else collateral
    leaf = _dcap.verify_quote(parsed, now=now, crls=crls)
    return parsed, leaf


def verify_sgx_quote(quote: bytes, *, now: datetime, collateral: _dcap.Crls | Collateral | None = None) -> Claims:
    """Verify an SGX DCAP quote at time ``now`` and return its claims; raise ``EvidenceInvalid`` otherwise.

    With a full :class:`Collateral` the TCB Info and QE Identity are verified too and ``tcb_status`` /
    ``advisory_ids`` are filled (see :mod:`ppml.attestation.collateral`); with only :class:`Crls` (or nothing)
    they stay empty.
    """
    parsed, leaf = _verified(quote, "sgx", now, collateral)
    claims = sgx_claims(parsed)
    if isinstance(collateral, Collateral):
        result = appraise(parsed, leaf, collateral, now=now)
        claims = replace(claims, tcb_status=result.status, advisory_ids=result.advisory_ids)
    return claims


def verify_tdx_quote(quote: bytes, *, now: datetime, collateral: _dcap.Crls | None = None) -> Claims:
    """Verify a TDX DCAP quote (v4 or v5) at time ``now`` and return its claims; raise ``EvidenceInvalid`` otherwise.

    TDX TCB appraisal is not implemented: a :class:`Collateral` is rejected rather than silently ignored.
    """
    if isinstance(collateral, Collateral):
        raise CollateralError("TDX TCB collateral appraisal is not supported yet; pass Crls", reason="unsupported")
    return tdx_claims(_verified(quote, "tdx", now, collateral)[0])
