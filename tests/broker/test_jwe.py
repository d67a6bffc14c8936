"""JWE to a TEE's key: round trips, interoperability with jwcrypto both ways, tampering, JWK validation."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwcrypto import jwe as jwcrypto_jwe
from jwcrypto import jwk as jwcrypto_jwk

from ppml._b64 import b64url, unb64url
from ppml.broker import jwe
from ppml.errors import InvalidRequest, ResourceDecryptError

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
SECRET = b"the dataset key \x00\xff" * 3


@pytest.fixture(scope="module")
def keys() -> dict[str, PrivateKey]:
    return {
        "P-256": ec.generate_private_key(ec.SECP256R1()),
        "P-384": ec.generate_private_key(ec.SECP384R1()),
        "RSA-2048": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "RSA-3072": rsa.generate_private_key(public_exponent=65537, key_size=3072),
    }


KINDS = ["P-256", "P-384", "RSA-2048", "RSA-3072"]


def public_jwk(key: PrivateKey) -> dict[str, str]:
    return jwe.jwk_from_public_key(key.public_key())


def flip(text: str, index: int = 0) -> str:
    data = bytearray(unb64url(text))
    data[index] ^= 0x01
    return b64url(bytes(data))


def header(message: dict[str, str]) -> dict[str, Any]:
    return json.loads(unb64url(message["protected"]))


def with_header(message: dict[str, str], new_header: dict[str, Any]) -> dict[str, str]:
    return {**message, "protected": b64url(json.dumps(new_header).encode())}


def jwcrypto_key(key: PrivateKey) -> jwcrypto_jwk.JWK:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return jwcrypto_jwk.JWK.from_pem(pem)


# -- round trips and interoperability ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip(keys: dict[str, PrivateKey], kind: str) -> None:
    message = jwe.encrypt(SECRET, public_jwk(keys[kind]))
    assert set(message) == {"protected", "encrypted_key", "iv", "ciphertext", "tag"}
    expected_alg = jwe.ALG_EC if kind.startswith("P-") else jwe.ALG_RSA
    assert header(message)["alg"] == expected_alg and header(message)["enc"] == "A256GCM"
    assert jwe.decrypt(message, keys[kind]) == SECRET


def test_empty_plaintext_round_trips(keys: dict[str, PrivateKey]) -> None:
    assert jwe.decrypt(jwe.encrypt(b"", public_jwk(keys["P-256"])), keys["P-256"]) == b""


def test_ec_epk_is_on_the_recipient_curve(keys: dict[str, PrivateKey]) -> None:
    epk = header(jwe.encrypt(SECRET, public_jwk(keys["P-384"])))["epk"]
    assert epk["kty"] == "EC" and epk["crv"] == "P-384" and len(unb64url(epk["x"])) == 48
    assert "d" not in epk


@pytest.mark.parametrize("kind", KINDS[:3])
def test_jwcrypto_decrypts_ours(keys: dict[str, PrivateKey], kind: str) -> None:
    message = jwe.encrypt(SECRET, public_jwk(keys[kind]))
    token = jwcrypto_jwe.JWE()
    token.deserialize(json.dumps(message), key=jwcrypto_key(keys[kind]))
    assert token.payload == SECRET


@pytest.mark.parametrize("kind", KINDS[:3])
def test_we_decrypt_jwcrypto(keys: dict[str, PrivateKey], kind: str) -> None:
    alg = jwe.ALG_EC if kind.startswith("P-") else jwe.ALG_RSA
    token = jwcrypto_jwe.JWE(SECRET, protected=json.dumps({"alg": alg, "enc": "A256GCM"}))
    token.add_recipient(jwcrypto_jwk.JWK(**public_jwk(keys[kind])))
    message = json.loads(token.serialize(compact=False))
    assert jwe.decrypt(message, keys[kind]) == SECRET


def test_jwk_round_trips_through_jwcrypto(keys: dict[str, PrivateKey]) -> None:
    for kind in KINDS:
        exported = json.loads(jwcrypto_jwk.JWK(**public_jwk(keys[kind])).export_public())
        assert jwe.jwk_from_public_key(jwe.public_key_from_jwk(exported)) == public_jwk(keys[kind])


# -- tampering ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["P-256", "RSA-2048"])
@pytest.mark.parametrize("member", ["ciphertext", "tag", "encrypted_key", "iv"])
def test_tampered_member_fails(keys: dict[str, PrivateKey], kind: str, member: str) -> None:
    message = jwe.encrypt(SECRET, public_jwk(keys[kind]))
    with pytest.raises(ResourceDecryptError, match="does not decrypt"):
        jwe.decrypt({**message, member: flip(message[member], 5)}, keys[kind])


@pytest.mark.parametrize("kind", ["P-256", "RSA-2048"])
def test_tampered_protected_header_fails(keys: dict[str, PrivateKey], kind: str) -> None:
    message = jwe.encrypt(SECRET, public_jwk(keys[kind]))
    with pytest.raises(ResourceDecryptError, match="does not decrypt"):
        jwe.decrypt(with_header(message, {**header(message), "kid": "x"}), keys[kind])


def test_tampered_epk_fails(keys: dict[str, PrivateKey]) -> None:
    message = jwe.encrypt(SECRET, public_jwk(keys["P-256"]))
    other = jwe.jwk_from_public_key(ec.generate_private_key(ec.SECP256R1()).public_key())
    with pytest.raises(ResourceDecryptError, match="does not decrypt"):
        jwe.decrypt(with_header(message, {**header(message), "epk": other}), keys["P-256"])


def test_padding_oracle_and_tag_failures_look_alike(keys: dict[str, PrivateKey]) -> None:
    message = jwe.encrypt(SECRET, public_jwk(keys["RSA-2048"]))
    errors = []
    for member in ("encrypted_key", "tag"):
        with pytest.raises(ResourceDecryptError) as info:
            jwe.decrypt({**message, member: flip(message[member], 7)}, keys["RSA-2048"])
        errors.append(str(info.value))
    assert errors[0] == errors[1]


@pytest.mark.parametrize("kind", ["P-256", "RSA-2048"])
def test_wrong_private_key_fails(kind: str, keys: dict[str, PrivateKey]) -> None:
    message = jwe.encrypt(SECRET, public_jwk(keys[kind]))
    other: PrivateKey = (ec.generate_private_key(ec.SECP256R1()) if kind == "P-256"
                         else rsa.generate_private_key(public_exponent=65537, key_size=2048))
    with pytest.raises(ResourceDecryptError, match="does not decrypt"):
        jwe.decrypt(message, other)


def test_key_of_another_type_or_curve_fails(keys: dict[str, PrivateKey]) -> None:
    message = jwe.encrypt(SECRET, public_jwk(keys["P-256"]))
    with pytest.raises(ResourceDecryptError, match="epk must be an EC public key on P-384"):
        jwe.decrypt(message, keys["P-384"])
    with pytest.raises(ResourceDecryptError, match="only algorithm for an RSA key"):
        jwe.decrypt(message, keys["RSA-2048"])
    with pytest.raises(ResourceDecryptError, match="unsupported private key type"):
        jwe.decrypt(message, ed25519.Ed25519PrivateKey.generate())  # type: ignore[arg-type]


@pytest.mark.parametrize(("change", "match"), [
    ({"enc": "A128GCM"}, "enc 'A128GCM'"),
    ({"alg": "ECDH-ES"}, "alg 'ECDH-ES'"),
    ({"zip": "DEF"}, "unsupported header member"),
    ({"crit": ["exp"]}, "unsupported header member"),
])
def test_header_allow_list(keys: dict[str, PrivateKey], change: dict[str, Any], match: str) -> None:
    message = jwe.encrypt(SECRET, public_jwk(keys["P-256"]))
    with pytest.raises(ResourceDecryptError, match=match):
        jwe.decrypt(with_header(message, {**header(message), **change}), keys["P-256"])


def test_duplicate_header_member_is_refused(keys: dict[str, PrivateKey]) -> None:
    message = jwe.encrypt(SECRET, public_jwk(keys["RSA-2048"]))
    raw = b'{"alg":"RSA-OAEP-256","enc":"A256GCM","enc":"A256GCM"}'
    with pytest.raises(ResourceDecryptError, match="repeats a member"):
        jwe.decrypt({**message, "protected": b64url(raw)}, keys["RSA-2048"])


def test_alg_and_enc_may_not_be_unprotected(keys: dict[str, PrivateKey]) -> None:
    message = jwe.encrypt(SECRET, public_jwk(keys["P-256"]))
    with pytest.raises(ResourceDecryptError, match="unsupported unprotected header member"):
        jwe.decrypt({**message, "header": {"alg": jwe.ALG_EC}}, keys["P-256"])
    epk = header(message)["epk"]
    with pytest.raises(ResourceDecryptError, match="both the protected and the unprotected"):
        jwe.decrypt({**message, "header": {"epk": epk}}, keys["P-256"])


@pytest.mark.parametrize("message", [
    "not a mapping",
    {"protected": "e30"},
    {"protected": "e30", "encrypted_key": "", "iv": "", "ciphertext": "", "tag": "", "aad": ""},
])
def test_malformed_messages(keys: dict[str, PrivateKey], message: Any) -> None:
    with pytest.raises(ResourceDecryptError):
        jwe.decrypt(message, keys["P-256"])


def test_wrong_sizes_and_encodings(keys: dict[str, PrivateKey]) -> None:
    message = jwe.encrypt(SECRET, public_jwk(keys["P-256"]))
    with pytest.raises(ResourceDecryptError, match="iv must be 12 bytes"):
        jwe.decrypt({**message, "iv": b64url(bytes(16))}, keys["P-256"])
    with pytest.raises(ResourceDecryptError, match="encrypted_key must be 40 bytes"):
        jwe.decrypt({**message, "encrypted_key": b64url(bytes(48))}, keys["P-256"])
    with pytest.raises(ResourceDecryptError, match="not base64url"):
        jwe.decrypt({**message, "ciphertext": "*"}, keys["P-256"])
    with pytest.raises(ResourceDecryptError, match="is padded"):
        jwe.decrypt({**message, "tag": message["tag"] + "=="}, keys["P-256"])


# -- JWK validation ----------------------------------------------------------------------------------------------


def test_private_jwk_is_refused(keys: dict[str, PrivateKey]) -> None:
    private = json.loads(jwcrypto_key(keys["P-256"]).export_private())
    with pytest.raises(InvalidRequest, match="private key member"):
        jwe.public_key_from_jwk(private)
    rsa_private = json.loads(jwcrypto_key(keys["RSA-2048"]).export_private())
    with pytest.raises(InvalidRequest, match="private key member.*d, dp, dq, p, q, qi"):
        jwe.public_key_from_jwk(rsa_private)
    with pytest.raises(InvalidRequest, match="private key member"):
        jwe.encrypt(SECRET, private)


def test_small_rsa_key_is_refused() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    numbers = small.public_numbers()
    jwk = {"kty": "RSA", "n": b64url(numbers.n.to_bytes(128, "big")), "e": "AQAB"}
    with pytest.raises(InvalidRequest, match="1024 bits"):
        jwe.public_key_from_jwk(jwk)


@pytest.mark.parametrize(("e", "match"), [(b"\x02", "odd"), (b"\x01", "at least 3"),
                                          (b"\x01" + bytes(9), "odd"), (b"\x00\x01\x00\x01", "leading zero")])
def test_bad_rsa_exponent_is_refused(keys: dict[str, PrivateKey], e: bytes, match: str) -> None:
    jwk = {**public_jwk(keys["RSA-2048"]), "e": b64url(e)}
    with pytest.raises(InvalidRequest, match=match):
        jwe.public_key_from_jwk(jwk)


def test_invalid_ec_point_is_refused(keys: dict[str, PrivateKey]) -> None:
    jwk = public_jwk(keys["P-256"])
    with pytest.raises(InvalidRequest, match="not a point on P-256"):
        jwe.public_key_from_jwk({**jwk, "y": flip(jwk["y"], 31)})


def test_short_ec_coordinate_is_refused(keys: dict[str, PrivateKey]) -> None:
    jwk = public_jwk(keys["P-384"])
    with pytest.raises(InvalidRequest, match="exactly 48 bytes"):
        jwe.public_key_from_jwk({**jwk, "x": b64url(unb64url(jwk["x"])[1:])})


@pytest.mark.parametrize(("jwk", "match"), [
    ({"kty": "oct", "k": "AAAA"}, "private key member"),
    ({"kty": "OKP", "crv": "X25519", "x": "AAAA"}, "unsupported JWK kty 'OKP'"),
    ({"crv": "P-256", "x": "AAAA", "y": "AAAA"}, "unsupported JWK kty None"),
    ({"kty": "EC", "crv": "P-521", "x": "AAAA", "y": "AAAA"}, "unsupported EC curve 'P-521'"),
    ({"kty": "EC", "crv": "secp256k1", "x": "AAAA", "y": "AAAA"}, "unsupported EC curve"),
    ({"kty": "EC", "crv": "P-256", "x": b64url(bytes(32))}, "member 'y' is missing"),
    ({"kty": "RSA", "e": "AQAB"}, "member 'n' is missing"),
    ({"kty": "RSA", "n": 12345, "e": "AQAB"}, "'n' is not base64url"),
    ({"kty": "EC", "crv": "P-256", "x": "", "y": ""}, "'x' is empty"),
    ([1, 2], "must be a JSON object"),
])
def test_malformed_jwks_are_refused(jwk: Any, match: str) -> None:
    with pytest.raises(InvalidRequest, match=match):
        jwe.public_key_from_jwk(jwk)


def test_jwk_members_and_usage(keys: dict[str, PrivateKey]) -> None:
    jwk = public_jwk(keys["P-256"])
    jwe.public_key_from_jwk({**jwk, "alg": jwe.ALG_EC, "use": "enc", "kid": "tee-1"})
    with pytest.raises(InvalidRequest, match="unknown EC JWK member"):
        jwe.public_key_from_jwk({**jwk, "n": "AQAB"})
    with pytest.raises(InvalidRequest, match="JWK alg 'RSA1_5' is not supported"):
        jwe.public_key_from_jwk({**public_jwk(keys["RSA-2048"]), "alg": "RSA1_5"})
    with pytest.raises(InvalidRequest, match="use 'sig'"):
        jwe.public_key_from_jwk({**jwk, "use": "sig"})


def test_jwk_from_unsupported_key_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="unsupported EC curve secp521r1"):
        jwe.jwk_from_public_key(ec.generate_private_key(ec.SECP521R1()).public_key())
    with pytest.raises(InvalidRequest, match="unsupported key type"):
        jwe.jwk_from_public_key(ed25519.Ed25519PrivateKey.generate().public_key())  # type: ignore[arg-type]


def test_ec_coordinates_are_fixed_length() -> None:
    for _ in range(64):  # about one key in 128 has a leading zero byte in x or y; the length must not shrink
        jwk = jwe.jwk_from_public_key(ec.generate_private_key(ec.SECP256R1()).public_key())
        assert len(unb64url(jwk["x"])) == len(unb64url(jwk["y"])) == 32
