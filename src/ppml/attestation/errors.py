"""Attestation errors, re-exported from :mod:`ppml.errors` for the attestation modules."""

from __future__ import annotations

from ppml.errors import AttestationError, CollateralError, EvidenceInvalid, NoTeeError, PolicyDenied

__all__ = ["AttestationError", "CollateralError", "EvidenceInvalid", "NoTeeError", "PolicyDenied"]
