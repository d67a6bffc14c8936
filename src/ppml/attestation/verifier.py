"""One entry point from :class:`Evidence` to verified :class:`Claims`, whatever the TEE.

Each TEE has one small verifier function; :class:`EvidenceVerifier` picks it by ``evidence.tee``, then checks
that the evidence is bound to the expected report data (the hash of this session's nonce and the workload's
public key). Only then are the claims returned, for the policy to appraise.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ppml.attestation.claims import Claims, verify_sgx_quote, verify_tdx_quote
from ppml.attestation.evidence import REPORT_DATA_SIZE, Evidence
from ppml.attestation.snp import verify_snp_report
from ppml.errors import EvidenceInvalid

if TYPE_CHECKING:
    from ppml.attestation.collateral_source import CollateralSource
    from ppml.attestation.tokens import JwksSource


@dataclass(frozen=True)
class VerifierSettings:
    """What the verifiers may trust beyond the pinned vendor roots.

    ``collateral``: a :class:`~ppml.attestation.collateral_source.CollateralSource` for SGX/TDX TCB appraisal
    (without one, DCAP claims carry no TCB status, and default policies deny them). ``simulator_keys``: public
    keys of simulated TEEs to accept (development only). ``token_issuers``: issuer URL → JWKS source, for MAA
    and Intel Trust Authority tokens.
    """

    collateral: CollateralSource | None = None
    simulator_keys: Sequence[Ed25519PublicKey] = ()
    token_issuers: Mapping[str, JwksSource] = field(default_factory=dict)


_Verify = Callable[[Evidence, VerifierSettings, datetime, bytes], Claims]


class EvidenceVerifier:
    """Verifies evidence of any supported TEE and its binding to the expected report data."""

    def __init__(self, settings: VerifierSettings | None = None) -> None:
        self.settings = settings or VerifierSettings()

    def verify(self, evidence: Evidence, *, report_data: bytes, now: datetime) -> Claims:
        """Claims of ``evidence`` if it verifies at ``now`` and carries ``report_data``; else ``EvidenceInvalid``."""
        if len(report_data) != REPORT_DATA_SIZE:
            raise ValueError("report_data must be 64 bytes")
        verify = _VERIFIERS.get(evidence.tee)
        if verify is None:
            raise EvidenceInvalid(f"unsupported evidence type {evidence.tee!r} (supported: {', '.join(_VERIFIERS)})",
                                  reason="tee_type")
        return verify(evidence, self.settings, now, report_data)


def _check_binding(claims: Claims, expected: bytes) -> Claims:
    if not hmac.compare_digest(claims.report_data, expected):
        raise EvidenceInvalid("the evidence is not bound to this session's nonce and public key (report data "
                              "differs): replayed, or made for another key", reason="binding")
    return claims


def _verify_sgx(evidence: Evidence, settings: VerifierSettings, now: datetime, expected: bytes) -> Claims:
    claims = verify_sgx_quote(evidence.quote, now=now, collateral=settings.collateral)
    return _check_binding(claims, expected)


def _verify_tdx(evidence: Evidence, settings: VerifierSettings, now: datetime, expected: bytes) -> Claims:
    claims = verify_tdx_quote(evidence.quote, now=now, collateral=settings.collateral)
    return _check_binding(claims, expected)


def _verify_snp(evidence: Evidence, settings: VerifierSettings, now: datetime, expected: bytes) -> Claims:
    leaf, chain = snp_certificates(evidence.certificates)
    claims = verify_snp_report(evidence.quote, vcek_pem_or_der=leaf, chain_pem=chain, now=now)
    return _check_binding(claims, expected)


def _verify_simulated(evidence: Evidence, settings: VerifierSettings, now: datetime, expected: bytes) -> Claims:
    from ppml.attestation.collectors.simulated import verify_simulated

    if not settings.simulator_keys:
        raise EvidenceInvalid("simulated evidence is not accepted: this verifier trusts no simulator key",
                              reason="untrusted_root")
    return _check_binding(verify_simulated(evidence, trusted_keys=settings.simulator_keys), expected)


def _verify_token(evidence: Evidence, settings: VerifierSettings, now: datetime, expected: bytes) -> Claims:
    from ppml.attestation import tokens

    try:
        token = evidence.quote.decode("ascii")
    except UnicodeDecodeError:
        raise EvidenceInvalid(f"{evidence.tee} evidence must be a JWT", reason="malformed") from None
    # Only to choose the issuer's keys; the issuer is then verified against the signature like every claim.
    issuer = str(tokens.insecure_parse_unverified(token)[1].get("iss", ""))
    keys = settings.token_issuers.get(issuer)
    if keys is None:
        raise EvidenceInvalid(f"token issuer {issuer!r} is not trusted by this verifier", reason="untrusted_root")
    verify = tokens.verify_maa_token if evidence.tee == "maa" else tokens.verify_ita_token
    claims = verify(token, issuer=issuer, keys=keys, now=now).claims
    # MAA and ITA bind runtime data as SHA-256(runtime data) in the first half of the report data.
    return _check_binding(claims, hashlib.sha256(expected).digest() + bytes(32))


_VERIFIERS: dict[str, _Verify] = {
    "sgx": _verify_sgx,
    "tdx": _verify_tdx,
    "snp": _verify_snp,
    "maa": _verify_token,
    "ita": _verify_token,
    "simulated": _verify_simulated,
}


def snp_certificates(blob: bytes) -> tuple[bytes, bytes]:
    """The VCEK/VLEK and its ASK/ARK chain from SNP evidence: a PEM bundle, leaf first (collectors convert the
    platform's certificate table to it, see ``collectors._snp_certs``)."""
    if not blob.lstrip().startswith(b"-----BEGIN"):
        raise EvidenceInvalid("SNP evidence carries no PEM VCEK certificate chain", reason="vcek_chain")
    return blob, blob  # the chain loader ignores the leaf; the leaf loader takes the first certificate
