"""Remote attestation: collect evidence in a TEE, verify it into normalized :class:`Claims`, appraise a policy."""

from __future__ import annotations

from ppml.attestation._dcap import Crls
from ppml.attestation.claims import Claims, verify_sgx_quote, verify_tdx_quote
from ppml.attestation.collateral import Collateral
from ppml.attestation.collateral_source import CollateralSource, OfflineBundle, PcsClient
from ppml.attestation.collectors import attester_by_name, detect_attester
from ppml.attestation.errors import AttestationError, CollateralError, EvidenceInvalid, NoTeeError, PolicyDenied
from ppml.attestation.evidence import Attester, Evidence, report_data
from ppml.attestation.policy import Decision, Policy
from ppml.attestation.snp import verify_snp_report
from ppml.attestation.tokens import (
    Jwks,
    JwksSource,
    JwksUrl,
    StaticJwks,
    VerifiedToken,
    verify_ita_token,
    verify_maa_token,
)
from ppml.attestation.verifier import EvidenceVerifier, VerifierSettings

__all__ = [
    "AttestationError",
    "Attester",
    "Claims",
    "Collateral",
    "CollateralError",
    "CollateralSource",
    "Crls",
    "Decision",
    "Evidence",
    "EvidenceInvalid",
    "EvidenceVerifier",
    "Jwks",
    "JwksSource",
    "JwksUrl",
    "NoTeeError",
    "OfflineBundle",
    "PcsClient",
    "Policy",
    "PolicyDenied",
    "StaticJwks",
    "VerifiedToken",
    "VerifierSettings",
    "attester_by_name",
    "detect_attester",
    "report_data",
    "verify_ita_token",
    "verify_maa_token",
    "verify_sgx_quote",
    "verify_snp_report",
    "verify_tdx_quote",
]
