"""Remote attestation: verify TEE evidence into normalized :class:`Claims` before any key is released."""

from __future__ import annotations

from ppml.attestation._dcap import Crls
from ppml.attestation.claims import Claims, verify_sgx_quote, verify_tdx_quote
from ppml.attestation.collateral import Collateral
from ppml.attestation.errors import AttestationError, CollateralError, EvidenceInvalid, PolicyDenied
from ppml.attestation.policy import Decision, Policy
from ppml.attestation.snp import verify_snp_report

__all__ = [
    "AttestationError",
    "Claims",
    "Collateral",
    "CollateralError",
    "Crls",
    "Decision",
    "EvidenceInvalid",
    "Policy",
    "PolicyDenied",
    "verify_sgx_quote",
    "verify_snp_report",
    "verify_tdx_quote",
]
