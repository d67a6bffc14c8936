"""Base64url without padding (RFC 7515 §2), the one encoding JOSE and the KBS protocol use."""

from __future__ import annotations

import base64
import binascii


def b64url(data: bytes) -> str:
    """Encode ``data`` as unpadded base64url text."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: object) -> bytes:
    """Decode unpadded (or padded) base64url text; raise ``ValueError`` on anything else."""
    if not isinstance(text, str):
        raise ValueError("expected a base64url string")
    if "=" in text.rstrip("="):
        raise ValueError("padding inside base64url text")
    stripped = text.rstrip("=")
    try:
        return base64.b64decode(stripped + "=" * (-len(stripped) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("invalid base64url text") from None
