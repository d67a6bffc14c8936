"""An ephemeral RSA key made inside the TEE, carried in MAA runtime data, that Key Vault Secure Key Release wraps to.

Flow (SGX, SEV-SNP containers; :mod:`ppml.azure.maa`)::

    key = RuntimeKey.generate()                                   # private half never leaves this process
    token = maa.attest_sgx(quote_over(expected_report_data(key.runtime_data_json())),
                           runtime_data=RuntimeJson(key.runtime_data_json()))
    verified = maa.verify(token, now=...); key.check_token(verified)   # the token carries *our* key
    # Key Vault: POST {vault}/keys/{name}/release {"target": token}  ->  key material wrapped to x-ms-runtime.keys
    material = key.unwrap_released(ciphertext, "RSA_AES_KEY_WRAP_256")

Runtime data shape (what Azure's SKR sidecar sends, dataType ``JSON``)::

    {"keys": [{"e": ..., "key_ops": ["encrypt"], "kid": <RFC 7638 thumbprint>, "kty": "RSA", "n": ...}]}

MAA copies it into the token as ``x-ms-runtime``. Key Vault wraps released key material as
``RSA-OAEP(ephemeral AES key) || AES-KWP(key material)`` (RFC 5649), with OAEP over SHA-1 (``CKM_RSA_AES_KEY_WRAP``),
SHA-256 (``RSA_AES_KEY_WRAP_256``) or SHA-384 (``RSA_AES_KEY_WRAP_384``).

On an Azure confidential VM with the vTPM flow, the token's ``x-ms-runtime.keys`` is instead the vTPM's
``TpmEphemeralEncryptionKey``: releases are then unwrapped by the TPM, not by this class.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NoReturn

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa

from ppml._b64 import b64url, unb64url
from ppml.attestation.tokens import VerifiedToken
from ppml.errors import EvidenceInvalid, InvalidCiphertext, KeyProviderError
from ppml.kms.azure_skr import RELEASE_ALGORITHMS, rsa_aes_key_unwrap

__all__ = [
    "KEY_SIZES",
    "WRAP_ALGORITHMS",
    "RuntimeKey",
    "runtime_data_json",
    "runtime_jwks",
    "runtime_key_from_token",
    "thumbprint",
]

KEY_SIZES = (2048, 3072)
# Key Vault's KeyExportEncryptionAlgorithm -> the OAEP hash of its RSA-AES key wrap.
WRAP_ALGORITHMS: Mapping[str, type[hashes.HashAlgorithm]] = MappingProxyType(dict(RELEASE_ALGORITHMS))


def _int_b64(value: int) -> str:
    return b64url(value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def _public_jwk(public_key: rsa.RSAPublicKey) -> dict[str, str]:
    numbers = public_key.public_numbers()
    return {"e": _int_b64(numbers.e), "kty": "RSA", "n": _int_b64(numbers.n)}


def thumbprint(public_key: rsa.RSAPublicKey) -> str:
    """RFC 7638 JWK thumbprint (SHA-256): a ``kid`` that names the key by its value."""
    canonical = json.dumps(_public_jwk(public_key), sort_keys=True, separators=(",", ":")).encode("ascii")
    return b64url(hashlib.sha256(canonical).digest())


def runtime_data_json(public_key: rsa.RSAPublicKey, *, kid: str | None = None) -> bytes:
    """The runtime data JSON (sorted keys, no spaces) that puts ``public_key`` into ``x-ms-runtime.keys``.

    ``kid`` defaults to the key's RFC 7638 thumbprint. Send it with ``RuntimeJson``; the hardware report must carry
    ``expected_report_data`` of exactly these bytes.
    """
    if not isinstance(public_key, rsa.RSAPublicKey) or public_key.key_size not in KEY_SIZES:
        raise ValueError(f"a runtime key must be RSA with {' or '.join(map(str, KEY_SIZES))} bits")
    jwk = {**_public_jwk(public_key), "key_ops": ["encrypt"], "kid": kid or thumbprint(public_key)}
    return json.dumps({"keys": [jwk]}, sort_keys=True, separators=(",", ":")).encode("ascii")


def runtime_jwks(token: VerifiedToken) -> tuple[Mapping[str, Any], ...]:
    """The JWKs of a verified token's top-level ``x-ms-runtime``: its ``keys`` list, or a single ``jwk`` member
    (the shape of some SGX runtime data). Empty when the token carries none.

    Raises:
        EvidenceInvalid: ``x-ms-runtime`` is present but not of either shape.
    """
    runtime = token.raw.get("x-ms-runtime")
    if runtime is None:
        return ()
    if not isinstance(runtime, Mapping):
        raise EvidenceInvalid("token claim x-ms-runtime is not an object", reason="token_claims")
    keys = runtime.get("keys", [runtime["jwk"]] if "jwk" in runtime else [])
    if not isinstance(keys, list) or not all(isinstance(key, Mapping) for key in keys):
        raise EvidenceInvalid("token claim x-ms-runtime.keys is not a list of JWK objects", reason="token_claims")
    return tuple(MappingProxyType(dict(key)) for key in keys)


def runtime_key_from_token(token: VerifiedToken, *, kid: str | None = None) -> rsa.RSAPublicKey:
    """The RSA encryption key in a verified token's ``x-ms-runtime.keys``: the one named ``kid``, or the only RSA
    key usable for ``encrypt`` (the key Key Vault wraps released keys to).

    Raises:
        EvidenceInvalid: no such key, several candidates, or a malformed JWK (``reason="runtime_key"``).
    """
    candidates = [jwk for jwk in runtime_jwks(token) if jwk.get("kty") == "RSA"
                  and (jwk.get("kid") == kid if kid is not None else "encrypt" in jwk.get("key_ops", ["encrypt"]))]
    if len(candidates) != 1:
        wanted = f"kid {kid!r}" if kid is not None else "an RSA key for encrypt"
        raise EvidenceInvalid(f"the {token.issuer} token's x-ms-runtime.keys has {len(candidates)} entries matching "
                              f"{wanted}; expected exactly one", reason="runtime_key")
    jwk = candidates[0]
    try:
        numbers = rsa.RSAPublicNumbers(int.from_bytes(unb64url(jwk.get("e")), "big"),
                                       int.from_bytes(unb64url(jwk.get("n")), "big"))
        return numbers.public_key()
    except ValueError as exc:
        raise EvidenceInvalid(f"the {token.issuer} token's runtime key is not a valid RSA key: {exc}",
                              reason="runtime_key") from None


class RuntimeKey:
    """An ephemeral RSA key pair for MAA runtime data and SKR; redacted ``repr``, refuses to be pickled.

    Build with :meth:`generate`. The private key never leaves the object: it only unwraps what Key Vault released.
    """

    __slots__ = ("_private", "kid")

    def __init__(self, private_key: rsa.RSAPrivateKey, *, kid: str | None = None) -> None:
        if not isinstance(private_key, rsa.RSAPrivateKey) or private_key.key_size not in KEY_SIZES:
            raise ValueError(f"a runtime key must be RSA with {' or '.join(map(str, KEY_SIZES))} bits")
        self._private = private_key
        self.kid = kid or thumbprint(private_key.public_key())

    @classmethod
    def generate(cls, bits: int = 2048) -> RuntimeKey:
        """A fresh key (e = 65537), made where it will be used: inside the TEE."""
        if bits not in KEY_SIZES:
            raise ValueError(f"runtime key size must be one of {KEY_SIZES}, not {bits}")
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=bits))

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        return self._private.public_key()

    def runtime_data_json(self) -> bytes:
        """:func:`runtime_data_json` of this key (send as ``RuntimeJson``)."""
        return runtime_data_json(self.public_key, kid=self.kid)

    def check_token(self, token: VerifiedToken) -> None:
        """Check that a verified token carries this key under its kid (modulus compared in constant time).

        Raises:
            EvidenceInvalid: the token holds another key, or none (``reason="runtime_key"``).
        """
        theirs = runtime_key_from_token(token, kid=self.kid).public_numbers()
        ours = self.public_key.public_numbers()
        size = (ours.n.bit_length() + 7) // 8
        same_n = theirs.n.bit_length() <= size * 8 and hmac.compare_digest(
            theirs.n.to_bytes(size, "big"), ours.n.to_bytes(size, "big"))
        if not (same_n and theirs.e == ours.e):
            raise EvidenceInvalid(f"the {token.issuer} token's runtime key {self.kid!r} is not this process's key",
                                  reason="runtime_key")

    def unwrap_released(self, ciphertext: bytes, algorithm: str) -> bytes:
        """The key material Key Vault released to this key (``release`` response ``key_hsm`` ciphertext).

        Raises:
            ValueError: ``algorithm`` is not one of :data:`WRAP_ALGORITHMS`.
            InvalidCiphertext: the ciphertext was not wrapped to this key, or was modified.
        """
        # one implementation of Key Vault's RSA-AES key wrap, shared with ppml.kms.azure_skr
        if algorithm not in WRAP_ALGORITHMS:
            raise ValueError(f"unknown key wrap algorithm {algorithm!r}; expected one of {sorted(WRAP_ALGORITHMS)}")
        try:
            return rsa_aes_key_unwrap(ciphertext, self._private, algorithm=algorithm)
        except KeyProviderError:
            raise InvalidCiphertext(f"{algorithm} ciphertext does not unwrap with runtime key {self.kid!r}") from None

    def __repr__(self) -> str:
        return f"<RuntimeKey RSA-{self._private.key_size} kid={self.kid!r}, private key redacted>"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("RuntimeKey cannot be pickled: its private key must stay in the TEE process that made it")

    def __getstate__(self) -> NoReturn:
        raise TypeError("RuntimeKey cannot be pickled: its private key must stay in the TEE process that made it")
