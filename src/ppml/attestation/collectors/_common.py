"""Checks every collector shares, so that each one fails the same way on the same mistake."""

from __future__ import annotations

from ppml.attestation.evidence import REPORT_DATA_SIZE


def check_report_data(report_data: bytes) -> bytes:
    """Return ``report_data`` if it is exactly 64 bytes; a TEE would silently pad or truncate anything else.

    Raises:
        ValueError: a caller bug (wrong type or length), not an attestation failure.
    """
    if not isinstance(report_data, bytes) or len(report_data) != REPORT_DATA_SIZE:
        size = len(report_data) if isinstance(report_data, (bytes, bytearray)) else type(report_data).__name__
        raise ValueError(f"report data must be exactly {REPORT_DATA_SIZE} bytes, got {size}")
    return report_data
