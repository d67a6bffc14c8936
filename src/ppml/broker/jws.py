"""Compact JWS tokens signed with Ed25519 (RFC 7515, RFC 8037): the broker's attestation tokens and admin tokens.

One algorithm only: the header is ``{"alg":"EdDSA","typ":"JWT"}`` plus an optional ``kid``. Any other ``alg``
(``none``, ``HS256``, ``RS256`` ...) or header member is refused before the signature is looked at, so a token
cannot choose how it is checked. ``exp`` is required; ``nbf`` and ``iat`` are checked when present, all with
``leeway_seconds`` of clock skew. A token carrying ``aud`` is accepted only by a verifier that names that
audience (RFC 7519 §4.1.3). Every failure raises :class:`~ppml.errors.AuthenticationError`.

Admin tokens add ``iat`` and a random ``jti``; :class:`AdminVerifier` caps their lifetime and refuses a ``jti``
it has already seen while that token could still be valid. The replay set lives in one process's memory, so
run one verifier per broker process (several processes would each accept a token once).
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ppml._b64 import b64url, unb64url
from ppml._json import strict_loads
from ppml._keyfiles import (  # noqa: F401 - re-exported
    load_ed25519_private_key,
    load_ed25519_public_key,
    load_or_create_ed25519_key,
    write_public_key,
)
from ppml.errors import AuthenticationError, ConfigError

__all__ = ["AdminVerifier", "issue_admin_token", "load_ed25519_public_key", "load_or_create_ed25519_key", "sign",
           "verify", "write_public_key"]

ALG = "EdDSA"
MAX_TOKEN_SIZE = 16 * 1024  # an attestation token carries measurements and a JWK; anything bigger is not ours
_HEADER_MEMBERS = frozenset({"alg", "typ", "kid"})
_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")
_SIGNATURE_SIZE = 64
_MAX_JTI = 128

PublicKeys = Mapping[str, Ed25519PublicKey] | Sequence[Ed25519PublicKey]


def sign(claims: Mapping[str, Any], key: Ed25519PrivateKey, *, kid: str | None = None) -> str:
    """A compact JWS of ``claims`` (a JSON object) signed with ``key``; set ``kid`` to say which key signed."""
    header: dict[str, str] = {"alg": ALG, "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    signing_input = f"{_encode_json(header)}.{_encode_json(dict(claims))}"
    return f"{signing_input}.{b64url(key.sign(signing_input.encode('ascii')))}"


def verify(token: str, keys: PublicKeys, *, now: datetime, audience: str | None = None,
           leeway_seconds: int = 30) -> dict[str, Any]:
    """Check the signature and the time and audience claims of ``token``; return its claims."""
    claims = _verified_claims(token, keys)
    _check_times(claims, _timestamp(now), leeway_seconds)
    _check_audience(claims, audience)
    return claims


def _encode_json(value: Mapping[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":"), allow_nan=False).encode("utf-8"))


def _verified_claims(token: str, keys: PublicKeys) -> dict[str, Any]:
    if not isinstance(token, str) or len(token) > MAX_TOKEN_SIZE:
        raise AuthenticationError(f"token must be a string of at most {MAX_TOKEN_SIZE} characters")
    segments = token.split(".")
    if len(segments) != 3 or not all(_SEGMENT.fullmatch(part) for part in segments):
        raise AuthenticationError("token is not a compact JWS (three base64url parts separated by '.')")
    header = _decode_json(segments[0], "header")
    unknown = sorted(set(header) - _HEADER_MEMBERS)
    if header.get("alg") != ALG:
        raise AuthenticationError(f"token alg {header.get('alg')!r} is not allowed: only {ALG!r} is accepted")
    if unknown:
        raise AuthenticationError(f"token header has unsupported member(s) {', '.join(unknown)}")
    if header.get("typ", "JWT") != "JWT":
        raise AuthenticationError(f"token typ {header['typ']!r} is not 'JWT'")
    signature = _decode(segments[2], "signature")
    if len(signature) != _SIGNATURE_SIZE:
        raise AuthenticationError("token signature is not an Ed25519 signature (64 bytes)")
    signing_input = f"{segments[0]}.{segments[1]}".encode("ascii")
    if not any(_signed_by(key, signature, signing_input) for key in _candidates(keys, header.get("kid"))):
        raise AuthenticationError("token signature does not verify with any trusted key")
    return _decode_json(segments[1], "payload")


def _candidates(keys: PublicKeys, kid: object) -> list[Ed25519PublicKey]:
    if kid is not None and not isinstance(kid, str):
        raise AuthenticationError("token kid must be a string")
    if isinstance(keys, Mapping):
        if kid is None:
            return list(keys.values())
        if kid not in keys:
            raise AuthenticationError(f"token kid {kid!r} is not a trusted key id")
        return [keys[kid]]
    return list(keys)


def _signed_by(key: Ed25519PublicKey, signature: bytes, data: bytes) -> bool:
    try:
        key.verify(signature, data)
    except InvalidSignature:
        return False
    return True


def _decode(segment: str, part: str) -> bytes:
    try:
        return unb64url(segment)
    except ValueError:
        raise AuthenticationError(f"token {part} is not base64url") from None


def _decode_json(segment: str, part: str) -> dict[str, Any]:
    try:
        value = strict_loads(_decode(segment, part).decode("utf-8"))
    except ValueError as error:
        raise AuthenticationError(f"token {part} is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise AuthenticationError(f"token {part} is not a JSON object")
    return value




def _timestamp(now: datetime) -> float:
    if now.tzinfo is None:
        raise ValueError("now must be a timezone-aware datetime")
    return now.timestamp()


def _numeric(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None and name not in claims:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise AuthenticationError(f"token claim {name!r} must be a number of seconds since the epoch")
    return float(value)


def _check_times(claims: Mapping[str, Any], now: float, leeway: int) -> None:
    exp, nbf, iat = (_numeric(claims, name) for name in ("exp", "nbf", "iat"))
    if exp is None:
        raise AuthenticationError("token has no 'exp' claim; every token must expire")
    if now > exp + leeway:
        raise AuthenticationError(f"token expired at {_iso(exp)}")
    if nbf is not None and now + leeway < nbf:
        raise AuthenticationError(f"token is not valid before {_iso(nbf)}")
    if iat is not None and iat > now + leeway:
        raise AuthenticationError(f"token was issued in the future ({_iso(iat)}); check the clocks")


def _check_audience(claims: Mapping[str, Any], audience: str | None) -> None:
    if "aud" not in claims:
        if audience is not None:
            raise AuthenticationError(f"token has no 'aud' claim; expected audience {audience!r}")
        return
    aud = claims["aud"]
    allowed = [aud] if isinstance(aud, str) else aud
    if not isinstance(allowed, list) or not all(isinstance(item, str) for item in allowed):
        raise AuthenticationError("token claim 'aud' must be a string or a list of strings")
    if audience is None:
        raise AuthenticationError(f"token is for audience {aud!r}, not for this service")
    if audience not in allowed:
        raise AuthenticationError(f"token is for audience {aud!r}, not {audience!r}")


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")


# -- admin tokens ----------------------------------------------------------------------------------------------


def issue_admin_token(private_key: Ed25519PrivateKey, *, lifetime_seconds: int = 60, subject: str = "admin",
                      audience: str | None = None, kid: str | None = None, now: datetime | None = None) -> str:
    """A short-lived, single-use admin token: ``sub``, ``iat``, ``exp`` and a random ``jti`` (plus ``aud``)."""
    if isinstance(lifetime_seconds, bool) or not isinstance(lifetime_seconds, int) or lifetime_seconds <= 0:
        raise ConfigError("admin token lifetime must be a positive number of seconds")
    issued = int(_timestamp(now or datetime.now(timezone.utc)))
    claims: dict[str, Any] = {"sub": subject, "iat": issued, "exp": issued + lifetime_seconds,
                              "jti": b64url(os.urandom(16))}
    if audience is not None:
        claims["aud"] = audience
    return sign(claims, private_key, kid=kid)


class AdminVerifier:
    """Accepts each admin token once: signature, times, audience, a lifetime cap and a replay check on ``jti``."""

    def __init__(self, public_keys: PublicKeys, *, max_lifetime_seconds: int = 300, audience: str | None = None,
                 leeway_seconds: int = 30) -> None:
        self._keys = public_keys
        self._max_lifetime = max_lifetime_seconds
        self._audience = audience
        self._leeway = leeway_seconds
        self._seen: dict[str, float] = {}  # jti -> exp: a jti is remembered as long as its token could verify
        self._lock = threading.Lock()

    def verify(self, token: str, *, now: datetime | None = None) -> dict[str, Any]:
        """Return the claims of a fresh, unused admin token; raise ``AuthenticationError`` otherwise."""
        when = now or datetime.now(timezone.utc)
        claims = verify(token, self._keys, now=when, audience=self._audience, leeway_seconds=self._leeway)
        iat, exp, jti = _numeric(claims, "iat"), _numeric(claims, "exp"), claims.get("jti")
        if iat is None:
            raise AuthenticationError("admin token has no 'iat' claim")
        assert exp is not None  # verify() requires it
        if exp - iat > self._max_lifetime:
            raise AuthenticationError(f"admin token lives {exp - iat:.0f} s; at most {self._max_lifetime} s "
                                      "is accepted")
        if not isinstance(jti, str) or not 0 < len(jti) <= _MAX_JTI:
            raise AuthenticationError(f"admin token needs a 'jti' claim (a string of 1 to {_MAX_JTI} characters)")
        self._remember(jti, exp, _timestamp(when))
        return claims

    def _remember(self, jti: str, exp: float, now: float) -> None:
        with self._lock:
            for old in [seen for seen, expiry in self._seen.items() if expiry + self._leeway < now]:
                del self._seen[old]
            if jti in self._seen:
                raise AuthenticationError("admin token was already used (replayed jti); issue a new one")
            self._seen[jti] = exp


# -- key files: in ppml._keyfiles, re-exported here for the broker's users ------------------------------------
