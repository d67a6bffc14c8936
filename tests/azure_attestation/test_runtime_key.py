"""SKR runtime keys: the runtime data shape, extraction from real tokens, a round trip, and Key Vault's key wrap.

Real: the SGX token whose ``x-ms-runtime`` is the JSON of ``runtime_data.bin`` (signature verified), and the decoded
claims of an Azure CVM token from Azure's guest attestation sample (parse only: no signature). Simulated: the round
trip through a stand-in that signs tokens with a test key (what MAA does with runtime data, as documented), and the
Key Vault wrap (made here with the documented algorithm; no Key Vault ciphertext was recorded).
"""

from __future__ import annotations

import base64
import json
import os
import pickle
from datetime import datetime, timezone
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

from ppml.attestation.tokens import StaticJwks, VerifiedToken, maa_claims
from ppml.azure import (
    MaaClient,
    RuntimeJson,
    RuntimeKey,
    check_runtime_data,
    expected_report_data,
    runtime_data_json,
    runtime_jwks,
    runtime_key_from_token,
)
from ppml.azure.runtime_key import WRAP_ALGORITHMS, thumbprint
from ppml.errors import EvidenceInvalid, InvalidCiphertext
from tests.azure_attestation.support import (
    RECORDED_AT,
    SHAREDWUS,
    SHAREDWUS_JWKS,
    VECTORS,
    FakeMaa,
    recorded_token,
    unb64url,
)

CVM_SAMPLE = json.loads((VECTORS / "maa" / "cvm-guest-attestation" / "sampleAttestationToken.json").read_text())
NOW = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unverified(raw: dict[str, Any]) -> VerifiedToken:
    """A VerifiedToken around decoded claims that have no signature (the CVM sample): extraction tests only."""
    return VerifiedToken(claims=maa_claims(raw), raw=raw, issuer=raw["iss"], expires=NOW, issued_at=None, kid="-",
                         alg="RS256")


def test_runtime_data_json_shape() -> None:
    key = RuntimeKey.generate()
    doc = json.loads(key.runtime_data_json())
    (jwk,) = doc["keys"]
    assert set(doc) == {"keys"} and set(jwk) == {"e", "key_ops", "kid", "kty", "n"}
    assert jwk["kty"] == "RSA" and jwk["key_ops"] == ["encrypt"] and jwk["e"] == "AQAB"
    assert jwk["kid"] == key.kid == thumbprint(key.public_key)
    assert int.from_bytes(unb64url(jwk["n"]), "big") == key.public_key.public_numbers().n
    assert key.runtime_data_json() == runtime_data_json(key.public_key, kid=key.kid)  # canonical: same bytes
    assert b" " not in key.runtime_data_json()
    RuntimeJson(key.runtime_data_json())  # valid as JSON runtime data
    assert RuntimeKey.generate(3072).public_key.key_size == 3072
    with pytest.raises(ValueError, match="2048 or 3072"):
        runtime_data_json(rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key())
    with pytest.raises(ValueError, match="must be one of"):
        RuntimeKey.generate(4096)


def test_rfc7638_thumbprint() -> None:
    # RFC 7638 §3.1's example key and its thumbprint.
    n = ("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3o"
         "knjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHz"
         "u6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8"
         "awapJzKnqDKgw")
    public = rsa.RSAPublicNumbers(65537, int.from_bytes(unb64url(n), "big")).public_key()
    assert thumbprint(public) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_runtime_key_from_real_tokens() -> None:
    # SGX: the runtime data JSON carried an EC JWK under "jwk"; the signed token repeats it in x-ms-runtime.
    verified = MaaClient(SHAREDWUS).verify(recorded_token("sgx_runtimedata_json"), now=RECORDED_AT,
                                           keys=StaticJwks(SHAREDWUS_JWKS))
    runtime_data = (VECTORS / "sgx" / "azure-sdk-cpp" / "runtime_data.bin").read_bytes()
    check_runtime_data(verified, runtime_data)
    assert runtime_jwks(verified) == (json.loads(runtime_data.rstrip(b"\0"))["jwk"],)
    with pytest.raises(EvidenceInvalid, match="0 entries matching an RSA key for encrypt") as info:
        runtime_key_from_token(verified)  # an EC key is no SKR wrapping key
    assert info.value.reason == "runtime_key"
    plain = MaaClient(SHAREDWUS).verify(recorded_token("sgx_simple"), now=RECORDED_AT, keys=StaticJwks(SHAREDWUS_JWKS))
    assert runtime_jwks(plain) == ()

    # Azure CVM (decoded claims): Key Vault wraps to the vTPM's TpmEphemeralEncryptionKey at the top level.
    token = _unverified(CVM_SAMPLE)
    key = runtime_key_from_token(token)
    (expected,) = CVM_SAMPLE["x-ms-runtime"]["keys"]
    assert key.public_numbers().n == int.from_bytes(unb64url(expected["n"]), "big") and key.key_size == 2048
    assert runtime_key_from_token(token, kid="TpmEphemeralEncryptionKey").public_numbers() == key.public_numbers()
    with pytest.raises(EvidenceInvalid, match="kid 'HCLAkPub'"):  # the AK is nested under x-ms-isolation-tee
        runtime_key_from_token(token, kid="HCLAkPub")


def test_malformed_runtime_claims() -> None:
    base = dict(CVM_SAMPLE)
    for runtime, words in [("text", "x-ms-runtime is not an object"), ({"keys": {"kid": "x"}}, "not a list"),
                           ({"keys": [{"kty": "RSA", "key_ops": ["encrypt"], "n": "!", "e": "AQAB"}]},
                            "not a valid RSA key")]:
        with pytest.raises(EvidenceInvalid, match=words):
            runtime_key_from_token(_unverified({**base, "x-ms-runtime": runtime}))
    two = {"keys": [{"kty": "RSA", "n": "AQ", "e": "AQ"}] * 2}
    with pytest.raises(EvidenceInvalid, match="has 2 entries"):
        runtime_key_from_token(_unverified({**base, "x-ms-runtime": two}))


def _signing_maa(fake: FakeMaa) -> rsa.RSAPrivateKey:
    """Make the stand-in sign tokens the way MAA treats runtime data: hash into report data, copy into x-ms-runtime."""
    signer = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = signer.public_key().public_numbers()
    fake.jwks = json.dumps({"keys": [{"kty": "RSA", "kid": "test-signer", "n": _b64url(numbers.n.to_bytes(256, "big")),
                                      "e": "AQAB"}]}).encode()

    def reply(request: dict[str, Any]) -> tuple[int, Any]:
        runtime = unb64url(request["body"]["runtimeData"]["data"])
        now = int(NOW.timestamp())
        claims = {"iss": fake.endpoint, "iat": now, "nbf": now, "exp": now + 3600, "x-ms-attestation-type": "sgx",
                  "x-ms-sgx-is-debuggable": False, "x-ms-sgx-mrenclave": "11" * 32, "x-ms-sgx-mrsigner": "22" * 32,
                  "x-ms-sgx-product-id": 1, "x-ms-sgx-svn": 1,
                  "x-ms-sgx-report-data": expected_report_data(runtime).hex(), "x-ms-runtime": json.loads(runtime)}
        header = {"alg": "RS256", "kid": "test-signer", "typ": "JWT"}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = signer.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return 200, {"token": f"{signing_input}.{_b64url(signature)}"}

    fake.reply = reply
    return signer


def test_runtime_key_round_trip(fake_maa: FakeMaa) -> None:
    key = RuntimeKey.generate()
    _signing_maa(fake_maa)
    client = MaaClient(fake_maa.endpoint, ca_file=fake_maa.ca_file)
    token = client.attest_sgx(b"QUOTE-WITH-REPORT-DATA", runtime_data=RuntimeJson(key.runtime_data_json()))
    assert fake_maa.requests[0]["body"]["runtimeData"]["dataType"] == "JSON"
    verified = client.verify(token, now=NOW)  # JWKS fetched from the stand-in's /certs over verified TLS
    check_runtime_data(verified, key.runtime_data_json())
    key.check_token(verified)
    assert runtime_key_from_token(verified).public_numbers() == key.public_key.public_numbers()
    impostor = RuntimeKey(rsa.generate_private_key(public_exponent=65537, key_size=2048), kid=key.kid)
    with pytest.raises(EvidenceInvalid, match="is not this process's key") as info:
        impostor.check_token(verified)  # same kid, other modulus
    assert info.value.reason == "runtime_key"
    with pytest.raises(EvidenceInvalid, match="kid"):
        RuntimeKey.generate().check_token(verified)  # another key: its kid is not in the token


def _key_vault_wrap(public: rsa.RSAPublicKey, material: bytes, algorithm: str) -> bytes:
    """Key Vault's RSA-AES key wrap as documented: RSA-OAEP(ephemeral AES key) || AES-KWP(material)."""
    hash_type = WRAP_ALGORITHMS[algorithm]
    kek = os.urandom(32)
    oaep = padding.OAEP(mgf=padding.MGF1(hash_type()), algorithm=hash_type(), label=None)
    return public.encrypt(kek, oaep) + aes_key_wrap_with_padding(kek, material)


@pytest.mark.parametrize("algorithm", sorted(WRAP_ALGORITHMS))
def test_unwrap_released_key(algorithm: str) -> None:
    key = RuntimeKey.generate()
    material = os.urandom(32)
    wrapped = _key_vault_wrap(key.public_key, material, algorithm)
    assert key.unwrap_released(wrapped, algorithm) == material
    pkcs8_like = os.urandom(1217)  # released RSA keys are PKCS#8 DER, not a multiple of 8 bytes
    assert key.unwrap_released(_key_vault_wrap(key.public_key, pkcs8_like, algorithm), algorithm) == pkcs8_like
    tampered = wrapped[:-1] + bytes([wrapped[-1] ^ 1])
    for bad in (tampered, _key_vault_wrap(RuntimeKey.generate().public_key, material, algorithm), wrapped[:200]):
        with pytest.raises(InvalidCiphertext):
            key.unwrap_released(bad, algorithm)
    other = next(a for a in WRAP_ALGORITHMS if a != algorithm)
    with pytest.raises(InvalidCiphertext, match=f"{other} ciphertext does not unwrap"):
        key.unwrap_released(wrapped, other)
    with pytest.raises(ValueError, match="unknown key wrap algorithm"):
        key.unwrap_released(wrapped, "RSA-OAEP")


def test_runtime_key_does_not_leak() -> None:
    key = RuntimeKey.generate()
    assert repr(key) == str(key) == f"<RuntimeKey RSA-2048 kid={key.kid!r}, private key redacted>"
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(key)
    with pytest.raises(ValueError, match="2048 or 3072"):
        RuntimeKey(rsa.generate_private_key(public_exponent=65537, key_size=1024))
