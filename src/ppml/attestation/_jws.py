"""Strict compact JWS (RFC 7515) parsing, RSA signature checks and JWKS (RFC 7517) keys, for attestation tokens.

Only what MAA and Intel Trust Authority use is accepted: compact serialization, RS256 and PS384 (RFC 7518 §3.3,
§3.5; PSS salt length = digest length = 48), RSA keys given as ``n``/``e`` and/or an ``x5c`` certificate. Anything
else is rejected rather than guessed at: ``none`` / HMAC / unknown algorithms, ``crit`` headers, padded or
non-canonical base64url, duplicated JSON keys. Header parameters that point at keys (``jku``, ``x5u``, ``jwk``,
``x5c``) are never followed: keys come only from a :class:`Jwks` the caller trusts.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ppml._json import strict_loads
from ppml.attestation.errors import CollateralError, EvidenceInvalid

MAX_TOKEN_CHARS = 1 << 20  # real tokens are a few KiB; bound the work an attacker can ask for
MIN_RSA_BITS = 2048
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
# alg -> (hash, PSS salt length or None for PKCS#1 v1.5): the union of the issuers' allow-lists. HS*, ES* and
# none are absent on purpose, so no allow-list can let them in.
_RSA_ALGS: Mapping[str, tuple[type[hashes.HashAlgorithm], int | None]] = MappingProxyType({
    "RS256": (hashes.SHA256, None),
    "PS384": (hashes.SHA384, 48),
})


def _invalid(message: str, reason: str = "token_format") -> EvidenceInvalid:
    return EvidenceInvalid(message, reason=reason)


# -- strict encodings --------------------------------------------------------------------------------------------


def b64url_decode(text: str, what: str) -> bytes:
    """Decode unpadded, canonical base64url; a second spelling of the same bytes would make tokens malleable."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise _invalid(f"{what} is not unpadded base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if base64.urlsafe_b64encode(data).rstrip(b"=").decode() != text:
        raise _invalid(f"{what} is not canonical base64url (non-zero trailing bits)")
    return data




def strict_json_object(data: bytes | str, what: str) -> dict[str, Any]:
    """Parse UTF-8 JSON that must be an object, rejecting duplicate keys (two parsers must not read two values).

    Raises ``ValueError`` naming ``what``; callers turn it into their error type (token or JWKS).
    """
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        value = strict_loads(text)
    except ValueError as exc:  # includes UnicodeDecodeError and JSONDecodeError
        raise ValueError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} is not a JSON object")
    return value


# -- compact JWS -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Jws:
    """A parsed, not yet verified compact JWS: nothing in ``header`` or ``payload`` may be trusted yet."""

    header: Mapping[str, Any]
    payload: Mapping[str, Any]
    signing_input: bytes
    signature: bytes


def parse_compact(token: str) -> Jws:
    """Split and decode ``header.payload.signature``; both JSON parts must be objects without duplicate keys."""
    if not isinstance(token, str):
        raise _invalid(f"token must be a str, not {type(token).__name__}")
    if len(token) > MAX_TOKEN_CHARS:
        raise _invalid(f"token is {len(token)} characters, more than the {MAX_TOKEN_CHARS} accepted")
    parts = token.split(".")
    if len(parts) != 3:
        raise _invalid(f"token has {len(parts)} dot-separated parts; a compact JWS has exactly 3")
    header_b64, payload_b64, signature_b64 = parts
    signature = b64url_decode(signature_b64, "JWS signature")
    if not signature:
        raise _invalid("JWS signature is empty (unsigned token)", reason="token_alg")
    try:
        header = strict_json_object(b64url_decode(header_b64, "JWS header"), "JWS header")
        payload = strict_json_object(b64url_decode(payload_b64, "JWT payload"), "JWT payload")
    except ValueError as exc:
        raise _invalid(str(exc)) from None
    return Jws(header=header, payload=payload, signing_input=f"{header_b64}.{payload_b64}".encode("ascii"),
               signature=signature)


def check_header(header: Mapping[str, Any], allowed_algs: Iterable[str]) -> tuple[str, str]:
    """Return ``(alg, kid)`` when ``alg`` is in this issuer's allow-list and no unsupported feature is asked for."""
    allowed = sorted(allowed_algs)
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise _invalid("JWS header has no alg", reason="token_alg")
    if alg not in allowed or alg not in _RSA_ALGS:
        raise _invalid(f"JWS alg {alg!r} is not accepted for this issuer (accepted: {', '.join(allowed)})",
                       reason="token_alg")
    if "crit" in header:
        raise _invalid(f"JWS header has crit {header['crit']!r}; no critical extension is supported")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise _invalid("JWS header has no kid, so no signing key can be selected", reason="unknown_kid")
    return alg, kid


# -- keys --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Jwk:
    """One RSA signing key of a JWKS; ``certificate`` is x5c[0] when the JWKS gave one (its key is this key)."""

    kid: str
    alg: str | None
    public_key: rsa.RSAPublicKey
    certificate: x509.Certificate | None = None


def _jwks_error(message: str) -> CollateralError:
    return CollateralError(message, reason="jwks")


def _b64url_int(entry: Mapping[str, Any], name: str, kid: str) -> int:
    value = entry.get(name)
    if not isinstance(value, str) or not value:
        raise _jwks_error(f"JWKS key {kid!r}: {name} is missing or not a string")
    try:
        return int.from_bytes(b64url_decode(value, name), "big")
    except EvidenceInvalid as exc:
        raise _jwks_error(f"JWKS key {kid!r}: {exc}") from None


def _x5c_certificate(entry: Mapping[str, Any], kid: str) -> x509.Certificate | None:
    chain = entry.get("x5c")
    if chain is None:
        return None
    if not isinstance(chain, list) or not chain or not isinstance(chain[0], str):
        raise _jwks_error(f"JWKS key {kid!r}: x5c must be a non-empty list of base64 certificates")
    try:
        return x509.load_der_x509_certificate(base64.b64decode(chain[0], validate=True))
    except (binascii.Error, ValueError) as exc:
        raise _jwks_error(f"JWKS key {kid!r}: x5c[0] is not a base64 DER certificate: {exc}") from None


def _rsa_from_numbers(entry: Mapping[str, Any], kid: str) -> rsa.RSAPublicKey | None:
    if "n" not in entry and "e" not in entry:
        return None
    numbers = rsa.RSAPublicNumbers(_b64url_int(entry, "e", kid), _b64url_int(entry, "n", kid))
    try:
        return numbers.public_key()
    except ValueError as exc:
        raise _jwks_error(f"JWKS key {kid!r}: n/e are not a valid RSA public key: {exc}") from None


def parse_jwk(entry: Mapping[str, Any]) -> Jwk | None:
    """An RSA signing key, or ``None`` for entries no allowed alg can use (other kty, no kid, use other than sig)."""
    kid = entry.get("kid")
    if entry.get("kty") != "RSA" or not isinstance(kid, str) or entry.get("use", "sig") != "sig":
        return None
    alg = entry.get("alg")
    if alg is not None and not isinstance(alg, str):
        raise _jwks_error(f"JWKS key {kid!r}: alg must be a string")
    certificate = _x5c_certificate(entry, kid)
    key = _rsa_from_numbers(entry, kid)
    if certificate is not None:
        cert_key = certificate.public_key()
        if not isinstance(cert_key, rsa.RSAPublicKey):
            raise _jwks_error(f"JWKS key {kid!r}: x5c[0] certificate does not hold an RSA key")
        if key is not None and key.public_numbers() != cert_key.public_numbers():
            raise _jwks_error(f"JWKS key {kid!r}: n/e do not match the public key of its x5c[0] certificate")
        key = cert_key
    if key is None:
        raise _jwks_error(f"JWKS key {kid!r}: has neither n/e nor x5c")
    return Jwk(kid=kid, alg=alg, public_key=key, certificate=certificate)


# -- signature ---------------------------------------------------------------------------------------------------


def _rsa_verify(key: rsa.RSAPublicKey, alg: str, signature: bytes, data: bytes) -> bool:
    hash_type, salt = _RSA_ALGS[alg]
    pad: padding.AsymmetricPadding = (
        padding.PKCS1v15() if salt is None else padding.PSS(mgf=padding.MGF1(hash_type()), salt_length=salt)
    )
    try:
        key.verify(signature, data, pad, hash_type())
    except InvalidSignature:
        return False
    return True


def verify_signature(jws: Jws, alg: str, candidates: Iterable[Jwk], now: datetime) -> Jwk:
    """Return the key whose signature verifies; keys published for another alg are not tried (ITA lists each twice)."""
    usable = [k for k in candidates if k.alg in (None, alg)]
    if not usable:
        raise _invalid(f"no key with kid {jws.header.get('kid')!r} is published for alg {alg}", reason="token_alg")
    for key in usable:
        if key.public_key.key_size < MIN_RSA_BITS:
            raise _invalid(f"signing key {key.kid!r} has {key.public_key.key_size} bits, fewer than {MIN_RSA_BITS}",
                           reason="token_signature")
        if _rsa_verify(key.public_key, alg, jws.signature, jws.signing_input):
            _check_certificate_time(key, now)
            return key
    raise _invalid(f"{alg} signature does not verify with key {jws.header.get('kid')!r}", reason="token_signature")


def _check_certificate_time(key: Jwk, now: datetime) -> None:
    """A key that came with a certificate is only good while that certificate is."""
    cert = key.certificate
    if cert is not None and not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise _invalid(f"signing certificate of key {key.kid!r} is not valid at {now.isoformat()} (valid "
                       f"{cert.not_valid_before_utc.isoformat()} to {cert.not_valid_after_utc.isoformat()})",
                       reason="token_signature")
