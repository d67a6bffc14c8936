"""Resources travel to an attested TEE as a flattened-JSON JWE wrapped to its ephemeral public key (RFC 7516).

Only two suites exist, chosen by the recipient's key type, so nothing in a message can pick a weaker one:

* EC P-256 / P-384: ``alg`` ``ECDH-ES+A256KW`` (RFC 7518 §4.6): an ephemeral key on the recipient's curve, the
  Concat KDF (SHA-256, AlgorithmID ``"ECDH-ES+A256KW"``, empty ``apu``/``apv``, keydatalen 256) gives a key that
  wraps the content key with AES Key Wrap; ``epk`` in the protected header.
* RSA ≥ 2048 bits: ``alg`` ``RSA-OAEP-256`` (OAEP with SHA-256 and MGF1-SHA-256) encrypts the content key.

Content: ``enc`` ``A256GCM``, a 96-bit IV, AAD = the ASCII of the protected header's base64url. A message is
``{"protected", "encrypted_key", "iv", "ciphertext", "tag"}``, each base64url without padding, as in the Trustee
KBS protocol's ``Response``.

Public keys arrive from the network (the TEE's ``tee-pubkey``), so :func:`public_key_from_jwk` is strict and
raises :class:`~ppml.errors.InvalidRequest`. :func:`decrypt` runs in the TEE and raises one
:class:`~ppml.errors.ResourceDecryptError` for every failure; the cryptographic failures (key unwrap, OAEP, GCM)
share one message, so the error is no padding oracle.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from ppml._b64 import b64url, unb64url
from ppml._json import strict_loads
from ppml.errors import InvalidRequest, ResourceDecryptError

__all__ = ["ALG_EC", "ALG_RSA", "ENC", "PublicKey", "decrypt", "encrypt", "jwk_from_public_key",
           "public_key_from_jwk"]

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

ALG_EC = "ECDH-ES+A256KW"
ALG_RSA = "RSA-OAEP-256"
ENC = "A256GCM"

_CURVES: Mapping[str, ec.EllipticCurve] = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1()}
_COORDINATE_SIZE = {"P-256": 32, "P-384": 48}
_CURVE_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384"}
_MIN_RSA_BITS = 2048
_MAX_RSA_BITS = 8192  # bounds the cost of one encryption; no TEE needs more
_MAX_RSA_EXPONENT_BITS = 64  # e is 65537 in practice; a huge e would make encryption as slow as a private-key op
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k", "priv"})
_COMMON_MEMBERS = frozenset({"kty", "kid", "use", "alg", "key_ops", "ext"})
_TYPE_MEMBERS = {"EC": frozenset({"crv", "x", "y"}), "RSA": frozenset({"n", "e"})}
_JWE_MEMBERS = frozenset({"protected", "encrypted_key", "iv", "ciphertext", "tag"})
_HEADER_MEMBERS = frozenset({"alg", "enc", "epk", "apu", "apv", "kid", "typ", "cty"})
_UNPROTECTED_MEMBERS = frozenset({"epk", "apu", "apv", "kid"})  # alg and enc must be integrity-protected
_CEK_SIZE = 32
_IV_SIZE = 12
_TAG_SIZE = 16
_WRAPPED_CEK_SIZE = _CEK_SIZE + 8  # AES Key Wrap adds one 64-bit block
_OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
_OPAQUE = "the resource does not decrypt with this key: it was modified, or wrapped to another key"


# -- JWK -------------------------------------------------------------------------------------------------------


def public_key_from_jwk(jwk: Mapping[str, Any]) -> PublicKey:
    """Parse a TEE's public JWK; refuse private members, unknown members, weak or malformed keys."""
    if not isinstance(jwk, Mapping) or not all(isinstance(name, str) for name in jwk):
        raise InvalidRequest("public key: a JWK must be a JSON object")
    private = sorted(_PRIVATE_MEMBERS & set(jwk))
    if private:
        raise InvalidRequest(f"public key: the JWK holds private key member(s) {', '.join(private)}; "
                             "send only the public key")
    kty = jwk.get("kty")
    if kty not in _TYPE_MEMBERS:
        raise InvalidRequest(f"public key: unsupported JWK kty {kty!r}: use 'EC' (P-256, P-384) or 'RSA'")
    unknown = sorted(set(jwk) - _COMMON_MEMBERS - _TYPE_MEMBERS[kty])
    if unknown:
        raise InvalidRequest(f"public key: unknown {kty} JWK member(s) {', '.join(unknown)}")
    _check_usage(jwk, ALG_EC if kty == "EC" else ALG_RSA)
    return _ec_public_key(jwk) if kty == "EC" else _rsa_public_key(jwk)


def jwk_from_public_key(key: PublicKey) -> dict[str, str]:
    """The public JWK of ``key``: EC coordinates at their full fixed length, RSA integers without leading zeros."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        crv = _curve_name(key.curve)
        numbers, size = key.public_numbers(), _COORDINATE_SIZE[crv]
        return {"kty": "EC", "crv": crv, "x": b64url(numbers.x.to_bytes(size, "big")),
                "y": b64url(numbers.y.to_bytes(size, "big"))}
    if isinstance(key, rsa.RSAPublicKey):
        _check_rsa_size(key.key_size)
        rsa_numbers = key.public_numbers()
        return {"kty": "RSA", "n": b64url(_int_bytes(rsa_numbers.n)), "e": b64url(_int_bytes(rsa_numbers.e))}
    raise InvalidRequest(f"public key: unsupported key type {type(key).__name__}; use EC P-256/P-384 or RSA")


def _check_usage(jwk: Mapping[str, Any], alg: str) -> None:
    if "alg" in jwk and jwk["alg"] != alg:
        raise InvalidRequest(f"public key: JWK alg {jwk['alg']!r} is not supported for kty {jwk['kty']}; "
                             f"this broker uses {alg!r}")
    if "use" in jwk and jwk["use"] != "enc":
        raise InvalidRequest(f"public key: JWK use {jwk['use']!r} is not 'enc'")
    if "kid" in jwk and not isinstance(jwk["kid"], str):
        raise InvalidRequest("public key: JWK kid must be a string")
    ops = jwk.get("key_ops", [])
    if not isinstance(ops, list) or not all(isinstance(op, str) for op in ops):
        raise InvalidRequest("public key: JWK key_ops must be a list of strings")


def _ec_public_key(jwk: Mapping[str, Any]) -> ec.EllipticCurvePublicKey:
    crv = jwk.get("crv")
    if crv not in _CURVES:
        raise InvalidRequest(f"public key: unsupported EC curve {crv!r}: use P-256 or P-384")
    size = _COORDINATE_SIZE[crv]
    x, y = (_member_bytes(jwk, name) for name in ("x", "y"))
    if len(x) != size or len(y) != size:
        raise InvalidRequest(f"public key: {crv} coordinates x and y must be exactly {size} bytes each")
    try:
        return ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"), int.from_bytes(y, "big"),
                                             _CURVES[crv]).public_key()
    except ValueError:
        raise InvalidRequest(f"public key: (x, y) is not a point on {crv}") from None


def _rsa_public_key(jwk: Mapping[str, Any]) -> rsa.RSAPublicKey:
    n_bytes, e_bytes = _member_bytes(jwk, "n"), _member_bytes(jwk, "e")
    if n_bytes[:1] == b"\x00" or e_bytes[:1] == b"\x00":
        raise InvalidRequest("public key: RSA n and e must not have leading zero bytes (RFC 7518 §6.3.1)")
    n, e = int.from_bytes(n_bytes, "big"), int.from_bytes(e_bytes, "big")
    _check_rsa_size(n.bit_length())
    if e < 3 or e % 2 == 0 or e.bit_length() > _MAX_RSA_EXPONENT_BITS:
        raise InvalidRequest(f"public key: RSA exponent must be odd, at least 3 and at most "
                             f"{_MAX_RSA_EXPONENT_BITS} bits")
    try:
        return rsa.RSAPublicNumbers(e, n).public_key()
    except ValueError:
        raise InvalidRequest("public key: not a valid RSA public key") from None


def _check_rsa_size(bits: int) -> None:
    if not _MIN_RSA_BITS <= bits <= _MAX_RSA_BITS:
        raise InvalidRequest(f"public key: RSA modulus is {bits} bits; it must be {_MIN_RSA_BITS} to "
                             f"{_MAX_RSA_BITS} bits")


def _member_bytes(jwk: Mapping[str, Any], name: str) -> bytes:
    if name not in jwk:
        raise InvalidRequest(f"public key: {jwk.get('kty')} JWK member {name!r} is missing")
    try:
        value = unb64url(jwk[name])
    except ValueError:
        raise InvalidRequest(f"public key: JWK member {name!r} is not base64url") from None
    if not value:
        raise InvalidRequest(f"public key: JWK member {name!r} is empty")
    return value


def _curve_name(curve: ec.EllipticCurve) -> str:
    if curve.name not in _CURVE_NAMES:
        raise InvalidRequest(f"public key: unsupported EC curve {curve.name}: use P-256 or P-384")
    return _CURVE_NAMES[curve.name]


def _int_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


# -- encryption ------------------------------------------------------------------------------------------------


def encrypt(plaintext: bytes, recipient_jwk: Mapping[str, Any] | PublicKey) -> dict[str, str]:
    """Encrypt ``plaintext`` to the holder of the private half of ``recipient_jwk``; return the flattened JWE.

    A public key already validated by :func:`public_key_from_jwk` may be passed instead of the JWK (the broker
    parses a session's key once, not at every release).
    """
    recipient = (recipient_jwk if isinstance(recipient_jwk, ec.EllipticCurvePublicKey | rsa.RSAPublicKey)
                 else public_key_from_jwk(recipient_jwk))
    cek = os.urandom(_CEK_SIZE)
    header: dict[str, Any]
    if isinstance(recipient, ec.EllipticCurvePublicKey):
        ephemeral = ec.generate_private_key(recipient.curve)
        header = {"alg": ALG_EC, "enc": ENC, "epk": jwk_from_public_key(ephemeral.public_key())}
        encrypted_key = aes_key_wrap(_ecdh_kek(ephemeral, recipient, b"", b""), cek)
    else:
        header = {"alg": ALG_RSA, "enc": ENC}
        encrypted_key = recipient.encrypt(cek, _OAEP)
    protected = b64url(json.dumps(header, separators=(",", ":")).encode("ascii"))
    iv = os.urandom(_IV_SIZE)
    sealed = AESGCM(cek).encrypt(iv, bytes(plaintext), protected.encode("ascii"))
    return {"protected": protected, "encrypted_key": b64url(encrypted_key), "iv": b64url(iv),
            "ciphertext": b64url(sealed[:-_TAG_SIZE]), "tag": b64url(sealed[-_TAG_SIZE:])}


def _ecdh_kek(private: ec.EllipticCurvePrivateKey, public: ec.EllipticCurvePublicKey, apu: bytes,
              apv: bytes) -> bytes:
    """The A256KW key: Concat KDF (NIST SP 800-56A) over the ECDH secret, as RFC 7518 §4.6.2 fixes its inputs."""
    shared = private.exchange(ec.ECDH(), public)
    other_info = (_length_prefixed(ALG_EC.encode("ascii")) + _length_prefixed(apu) + _length_prefixed(apv)
                  + struct.pack(">I", _CEK_SIZE * 8))
    return ConcatKDFHash(algorithm=hashes.SHA256(), length=_CEK_SIZE, otherinfo=other_info).derive(shared)


def _length_prefixed(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


# -- decryption ------------------------------------------------------------------------------------------------


def decrypt(jwe: Mapping[str, Any], private_key: PrivateKey) -> bytes:
    """Decrypt a flattened JWE made by :func:`encrypt` (or by a peer using the same suites) inside the TEE.

    ``epk``, ``apu``, ``apv`` and ``kid`` may also sit in the unprotected ``header`` member, as other JOSE
    libraries put them; ``alg`` and ``enc`` must be in the protected header.
    """
    parts = _parse_message(jwe)
    header = _parse_header(parts["protected"], jwe.get("header"))
    if header.get("enc") != ENC:
        raise ResourceDecryptError(f"cannot decrypt the resource: enc {header.get('enc')!r} is not {ENC!r}")
    if len(parts["iv"]) != _IV_SIZE or len(parts["tag"]) != _TAG_SIZE:
        raise ResourceDecryptError("cannot decrypt the resource: iv must be 12 bytes and tag 16 bytes")
    cek = _recover_cek(header, parts["encrypted_key"], private_key)
    try:
        return AESGCM(cek).decrypt(parts["iv"], parts["ciphertext"] + parts["tag"], jwe["protected"].encode("ascii"))
    except InvalidTag:
        raise ResourceDecryptError(_OPAQUE) from None


def _parse_message(jwe: Mapping[str, Any]) -> dict[str, bytes]:
    if not isinstance(jwe, Mapping):
        raise ResourceDecryptError("cannot decrypt the resource: a JWE must be a JSON object")
    if not _JWE_MEMBERS <= set(jwe) <= _JWE_MEMBERS | {"header"}:
        raise ResourceDecryptError("cannot decrypt the resource: a flattened JWE has exactly the members "
                                   f"{', '.join(sorted(_JWE_MEMBERS))} (and optionally header)")
    parts: dict[str, bytes] = {}
    for name in sorted(_JWE_MEMBERS):
        try:
            parts[name] = unb64url(jwe[name])
        except ValueError:
            raise ResourceDecryptError(f"cannot decrypt the resource: JWE member {name!r} is not base64url") from None
        if "=" in jwe[name]:
            raise ResourceDecryptError(f"cannot decrypt the resource: JWE member {name!r} is padded")
    return parts


def _parse_header(raw: bytes, unprotected: object) -> dict[str, Any]:
    try:
        header = strict_loads(raw.decode("utf-8"))
    except ValueError:
        raise ResourceDecryptError("cannot decrypt the resource: the protected header is not a JSON object, "
                                   "or repeats a member") from None
    if not isinstance(header, dict):
        raise ResourceDecryptError("cannot decrypt the resource: the protected header is not a JSON object")
    unknown = sorted(set(header) - _HEADER_MEMBERS)
    if unknown:
        raise ResourceDecryptError(f"cannot decrypt the resource: unsupported header member(s) {', '.join(unknown)}")
    if unprotected is None:
        return header
    if not isinstance(unprotected, Mapping):
        raise ResourceDecryptError("cannot decrypt the resource: the unprotected header is not a JSON object")
    unknown = sorted(set(unprotected) - _UNPROTECTED_MEMBERS)
    if unknown:
        raise ResourceDecryptError("cannot decrypt the resource: unsupported unprotected header member(s) "
                                   f"{', '.join(unknown)}")
    if set(unprotected) & set(header):
        raise ResourceDecryptError("cannot decrypt the resource: a member is in both the protected and the "
                                   "unprotected header")
    return {**header, **unprotected}


def _recover_cek(header: Mapping[str, Any], encrypted_key: bytes, private_key: PrivateKey) -> bytes:
    alg = header.get("alg")
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        if alg != ALG_EC:
            raise ResourceDecryptError(f"cannot decrypt the resource: alg {alg!r} is not {ALG_EC!r}, the only "
                                       "algorithm for an EC key")
        return _unwrap_ecdh(header, encrypted_key, private_key)
    if isinstance(private_key, rsa.RSAPrivateKey):
        if alg != ALG_RSA:
            raise ResourceDecryptError(f"cannot decrypt the resource: alg {alg!r} is not {ALG_RSA!r}, the only "
                                       "algorithm for an RSA key")
        return _unwrap_rsa(encrypted_key, private_key)
    raise ResourceDecryptError(f"cannot decrypt the resource: unsupported private key type "
                               f"{type(private_key).__name__}")


def _unwrap_ecdh(header: Mapping[str, Any], encrypted_key: bytes, private_key: ec.EllipticCurvePrivateKey) -> bytes:
    try:
        crv = _curve_name(private_key.curve)
        epk = header.get("epk")
        if not isinstance(epk, Mapping) or epk.get("kty") != "EC" or epk.get("crv") != crv:
            raise ResourceDecryptError(f"cannot decrypt the resource: epk must be an EC public key on {crv}")
        ephemeral = public_key_from_jwk(epk)
        apu, apv = (unb64url(header.get(name, "")) for name in ("apu", "apv"))
    except InvalidRequest as error:
        raise ResourceDecryptError(f"cannot decrypt the resource: epk: {error}") from None
    except ValueError:
        raise ResourceDecryptError("cannot decrypt the resource: apu/apv is not base64url") from None
    if len(encrypted_key) != _WRAPPED_CEK_SIZE:
        raise ResourceDecryptError(f"cannot decrypt the resource: encrypted_key must be {_WRAPPED_CEK_SIZE} bytes")
    assert isinstance(ephemeral, ec.EllipticCurvePublicKey)
    try:
        return aes_key_unwrap(_ecdh_kek(private_key, ephemeral, apu, apv), encrypted_key)
    except InvalidUnwrap:
        raise ResourceDecryptError(_OPAQUE) from None


def _unwrap_rsa(encrypted_key: bytes, private_key: rsa.RSAPrivateKey) -> bytes:
    if private_key.key_size < _MIN_RSA_BITS:
        raise ResourceDecryptError(f"cannot decrypt the resource: RSA keys must have at least {_MIN_RSA_BITS} bits")
    if len(encrypted_key) != (private_key.key_size + 7) // 8:
        raise ResourceDecryptError("cannot decrypt the resource: encrypted_key is not the RSA modulus size")
    try:
        cek = private_key.decrypt(encrypted_key, _OAEP)
    except ValueError:
        cek = b""
    if len(cek) != _CEK_SIZE:
        # RFC 7516 §11.5: carry on with a random key, so a bad OAEP block and a bad tag fail alike.
        cek = os.urandom(_CEK_SIZE)
    return cek

