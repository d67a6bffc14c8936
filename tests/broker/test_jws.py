"""EdDSA compact JWS: round trips, jwcrypto interop, claim checks, admin tokens, key files."""

from __future__ import annotations

import json
import os
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwcrypto import jwk as jwcrypto_jwk
from jwcrypto import jws as jwcrypto_jws
from jwcrypto import jwt as jwcrypto_jwt

from ppml._b64 import b64url, unb64url
from ppml.broker import jws
from ppml.errors import AuthenticationError, ConfigError

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
T = int(NOW.timestamp())


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def claims(**extra: Any) -> dict[str, Any]:
    return {"iss": "ppml-kbs", "iat": T, "exp": T + 60, **extra}


def forge(header: dict[str, Any], payload: dict[str, Any], key: Ed25519PrivateKey) -> str:
    """A token with an arbitrary header, validly signed, to prove the header check comes first."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    return f"{signing_input}.{b64url(key.sign(signing_input.encode()))}"


def test_round_trip(key: Ed25519PrivateKey) -> None:
    token = jws.sign(claims(tee="sgx"), key)
    head = json.loads(unb64url(token.split(".")[0]))
    assert head == {"alg": "EdDSA", "typ": "JWT"}
    assert jws.verify(token, [key.public_key()], now=NOW) == claims(tee="sgx")


def test_kid_selects_the_key(key: Ed25519PrivateKey) -> None:
    other = Ed25519PrivateKey.generate()
    token = jws.sign(claims(), key, kid="k2")
    assert jws.verify(token, {"k1": other.public_key(), "k2": key.public_key()}, now=NOW)["exp"] == T + 60
    with pytest.raises(AuthenticationError, match="kid 'k2' is not a trusted key id"):
        jws.verify(token, {"k1": key.public_key()}, now=NOW)
    untagged = jws.sign(claims(), key)
    assert jws.verify(untagged, {"k1": other.public_key(), "k2": key.public_key()}, now=NOW)


def test_jwcrypto_verifies_ours(key: Ed25519PrivateKey) -> None:
    token = jws.sign(claims(sub="admin"), key)
    public = jwcrypto_jwk.JWK.from_pyca(key.public_key())
    assert public["kty"] == "OKP" and public["crv"] == "Ed25519"
    parsed = jwcrypto_jws.JWS()
    parsed.deserialize(token)
    parsed.verify(public, alg="EdDSA")
    assert json.loads(parsed.payload) == claims(sub="admin")


def test_we_verify_jwcrypto(key: Ed25519PrivateKey) -> None:
    token = jwcrypto_jwt.JWT(header={"alg": "EdDSA", "typ": "JWT"}, claims=claims(sub="x"))
    token.make_signed_token(jwcrypto_jwk.JWK.from_pyca(key))
    assert jws.verify(token.serialize(), [key.public_key()], now=NOW)["sub"] == "x"


@pytest.mark.parametrize(("when", "match"), [
    (NOW + timedelta(seconds=91), "expired at 2030-01-02T03:05:05"),
    (NOW - timedelta(seconds=31), "issued in the future"),
])
def test_time_window(key: Ed25519PrivateKey, when: datetime, match: str) -> None:
    token = jws.sign(claims(), key)
    assert jws.verify(token, [key.public_key()], now=NOW + timedelta(seconds=89))  # within the leeway
    with pytest.raises(AuthenticationError, match=match):
        jws.verify(token, [key.public_key()], now=when)


def test_not_yet_valid(key: Ed25519PrivateKey) -> None:
    token = jws.sign(claims(nbf=T + 100), key)
    with pytest.raises(AuthenticationError, match="not valid before"):
        jws.verify(token, [key.public_key()], now=NOW)
    assert jws.verify(token, [key.public_key()], now=NOW + timedelta(seconds=75), leeway_seconds=30)


@pytest.mark.parametrize(("payload", "match"), [
    ({"iat": T}, "no 'exp' claim"),
    ({"exp": "tomorrow"}, "'exp' must be a number"),
    ({"exp": True}, "'exp' must be a number"),
    ({"exp": T + 60, "nbf": None}, "'nbf' must be a number"),
])
def test_bad_time_claims(key: Ed25519PrivateKey, payload: dict[str, Any], match: str) -> None:
    with pytest.raises(AuthenticationError, match=match):
        jws.verify(jws.sign(payload, key), [key.public_key()], now=NOW)


def test_wrong_key(key: Ed25519PrivateKey) -> None:
    token = jws.sign(claims(), key)
    with pytest.raises(AuthenticationError, match="does not verify with any trusted key"):
        jws.verify(token, [Ed25519PrivateKey.generate().public_key()], now=NOW)
    with pytest.raises(AuthenticationError, match="does not verify"):
        jws.verify(token, [], now=NOW)


def test_tampered_payload(key: Ed25519PrivateKey) -> None:
    head, _, signature = jws.sign(claims(sub="reader"), key).split(".")
    forged = b64url(json.dumps(claims(sub="admin"), separators=(",", ":")).encode())
    with pytest.raises(AuthenticationError, match="does not verify"):
        jws.verify(f"{head}.{forged}.{signature}", [key.public_key()], now=NOW)


@pytest.mark.parametrize("alg", ["none", "HS256", "RS256", "ES256", "eddsa", None])
def test_other_algorithms_are_refused(key: Ed25519PrivateKey, alg: str | None) -> None:
    token = forge({"alg": alg, "typ": "JWT"}, claims(), key)
    with pytest.raises(AuthenticationError, match=f"alg {alg!r} is not allowed"):
        jws.verify(token, [key.public_key()], now=NOW)


def test_alg_none_with_empty_signature_is_refused(key: Ed25519PrivateKey) -> None:
    head = b64url(json.dumps({"alg": "none"}).encode())
    token = f"{head}.{b64url(json.dumps(claims()).encode())}."
    with pytest.raises(AuthenticationError, match="alg 'none' is not allowed"):
        jws.verify(token, [key.public_key()], now=NOW)


@pytest.mark.parametrize(("head", "match"), [
    ({"alg": "EdDSA", "typ": "JWT", "crit": ["b64"]}, "unsupported member"),
    ({"alg": "EdDSA", "jku": "https://evil.example/keys"}, "unsupported member"),
    ({"alg": "EdDSA", "typ": "JOSE+JSON"}, "typ 'JOSE\\+JSON'"),
    ({"alg": "EdDSA", "kid": 7}, "kid must be a string"),
])
def test_header_allow_list(key: Ed25519PrivateKey, head: dict[str, Any], match: str) -> None:
    with pytest.raises(AuthenticationError, match=match):
        jws.verify(forge(head, claims(), key), {"k": key.public_key()}, now=NOW)


def test_duplicate_json_keys_are_refused(key: Ed25519PrivateKey) -> None:
    head = b64url(b'{"alg":"EdDSA","typ":"JWT"}')
    payload = b64url(f'{{"exp":{T + 60},"sub":"reader","sub":"admin"}}'.encode())
    token = f"{head}.{payload}.{b64url(key.sign(f'{head}.{payload}'.encode()))}"
    with pytest.raises(AuthenticationError, match="duplicate key 'sub'"):
        jws.verify(token, [key.public_key()], now=NOW)
    dup_head = b64url(b'{"alg":"EdDSA","alg":"EdDSA"}')
    with pytest.raises(AuthenticationError, match="header is not valid JSON"):
        jws.verify(f"{dup_head}.{payload}.AAAA", [key.public_key()], now=NOW)


@pytest.mark.parametrize("token", ["", "a.b", "a.b.c.d", "a=.b.c", "a b.c.d", 12, "x" * 20000])
def test_malformed_tokens(key: Ed25519PrivateKey, token: Any) -> None:
    with pytest.raises(AuthenticationError):
        jws.verify(token, [key.public_key()], now=NOW)


def test_payload_must_be_an_object(key: Ed25519PrivateKey) -> None:
    head = b64url(b'{"alg":"EdDSA"}')
    payload = b64url(b"[1,2]")
    token = f"{head}.{payload}.{b64url(key.sign(f'{head}.{payload}'.encode()))}"
    with pytest.raises(AuthenticationError, match="payload is not a JSON object"):
        jws.verify(token, [key.public_key()], now=NOW)


def test_audience(key: Ed25519PrivateKey) -> None:
    public = [key.public_key()]
    assert jws.verify(jws.sign(claims(aud="kbs"), key), public, now=NOW, audience="kbs")
    assert jws.verify(jws.sign(claims(aud=["x", "kbs"]), key), public, now=NOW, audience="kbs")
    with pytest.raises(AuthenticationError, match="for audience 'other', not 'kbs'"):
        jws.verify(jws.sign(claims(aud="other"), key), public, now=NOW, audience="kbs")
    with pytest.raises(AuthenticationError, match="no 'aud' claim"):
        jws.verify(jws.sign(claims(), key), public, now=NOW, audience="kbs")
    with pytest.raises(AuthenticationError, match="not for this service"):
        jws.verify(jws.sign(claims(aud="kbs"), key), public, now=NOW)
    with pytest.raises(AuthenticationError, match="string or a list of strings"):
        jws.verify(jws.sign(claims(aud=[1]), key), public, now=NOW, audience="kbs")


def test_naive_now_is_a_programming_error(key: Ed25519PrivateKey) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        jws.verify(jws.sign(claims(), key), [key.public_key()], now=datetime(2030, 1, 1))


# -- admin tokens ------------------------------------------------------------------------------------------------


def test_admin_token_is_accepted_once(key: Ed25519PrivateKey) -> None:
    verifier = jws.AdminVerifier([key.public_key()], audience="ppml-kbs-admin")
    token = jws.issue_admin_token(key, subject="alice", audience="ppml-kbs-admin", now=NOW)
    accepted = verifier.verify(token, now=NOW)
    assert accepted["sub"] == "alice" and accepted["exp"] - accepted["iat"] == 60 and accepted["jti"]
    with pytest.raises(AuthenticationError, match="already used"):
        verifier.verify(token, now=NOW + timedelta(seconds=1))


def test_admin_tokens_have_distinct_jti(key: Ed25519PrivateKey) -> None:
    verifier = jws.AdminVerifier([key.public_key()])
    for _ in range(3):
        verifier.verify(jws.issue_admin_token(key, now=NOW), now=NOW)


def test_replay_memory_is_pruned_after_expiry(key: Ed25519PrivateKey) -> None:
    verifier = jws.AdminVerifier([key.public_key()])
    verifier.verify(jws.issue_admin_token(key, now=NOW), now=NOW)
    later = NOW + timedelta(seconds=200)
    verifier.verify(jws.issue_admin_token(key, now=later), now=later)
    assert len(verifier._seen) == 1


def test_admin_token_lifetime_cap(key: Ed25519PrivateKey) -> None:
    verifier = jws.AdminVerifier([key.public_key()], max_lifetime_seconds=300)
    verifier.verify(jws.issue_admin_token(key, lifetime_seconds=300, now=NOW), now=NOW)
    with pytest.raises(AuthenticationError, match="lives 301 s; at most 300 s"):
        verifier.verify(jws.issue_admin_token(key, lifetime_seconds=301, now=NOW), now=NOW)


@pytest.mark.parametrize(("payload", "match"), [
    ({"exp": T + 60, "jti": "a"}, "no 'iat' claim"),
    ({"iat": T, "exp": T + 60}, "needs a 'jti' claim"),
    ({"iat": T, "exp": T + 60, "jti": ""}, "needs a 'jti' claim"),
    ({"iat": T, "exp": T + 60, "jti": 5}, "needs a 'jti' claim"),
])
def test_admin_token_needs_iat_and_jti(key: Ed25519PrivateKey, payload: dict[str, Any], match: str) -> None:
    with pytest.raises(AuthenticationError, match=match):
        jws.AdminVerifier([key.public_key()]).verify(jws.sign(payload, key), now=NOW)


def test_admin_token_expired_or_wrong_key(key: Ed25519PrivateKey) -> None:
    verifier = jws.AdminVerifier([key.public_key()])
    with pytest.raises(AuthenticationError, match="expired"):
        verifier.verify(jws.issue_admin_token(key, now=NOW), now=NOW + timedelta(minutes=5))
    with pytest.raises(AuthenticationError, match="does not verify"):
        verifier.verify(jws.issue_admin_token(Ed25519PrivateKey.generate(), now=NOW), now=NOW)


def test_admin_token_lifetime_must_be_positive(key: Ed25519PrivateKey) -> None:
    with pytest.raises(ConfigError, match="positive"):
        jws.issue_admin_token(key, lifetime_seconds=0)


def test_admin_verifier_defaults_to_the_real_clock(key: Ed25519PrivateKey) -> None:
    assert jws.AdminVerifier([key.public_key()]).verify(jws.issue_admin_token(key))["sub"] == "admin"


# -- key files ---------------------------------------------------------------------------------------------------


def test_key_is_created_private_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "token.pem"
    created = jws.load_or_create_ed25519_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = jws.load_or_create_ed25519_key(path)
    assert jws.verify(jws.sign(claims(), created), [loaded.public_key()], now=NOW)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_readable_key_file_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "token.pem"
    jws.load_or_create_ed25519_key(path)
    os.chmod(path, mode)
    with pytest.raises(ConfigError, match=f"accessible by group or others \\(mode {mode:o}\\).*chmod 600"):
        jws.load_or_create_ed25519_key(path)


def test_bad_key_files_are_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"not a key")
    os.chmod(garbage, 0o600)
    with pytest.raises(ConfigError, match="not an unencrypted PEM PKCS#8"):
        jws.load_or_create_ed25519_key(garbage)
    with pytest.raises(ConfigError, match="not a PEM public key"):
        jws.load_ed25519_public_key(garbage)
    with pytest.raises(ConfigError, match="cannot read key file"):
        jws.load_ed25519_public_key(tmp_path / "missing.pem")


def test_public_key_file_round_trip(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    path = tmp_path / "token.pub"
    jws.write_public_key(path, key)
    assert path.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    public = jws.load_ed25519_public_key(path)
    assert jws.verify(jws.sign(claims(), key), [public], now=NOW)
    jws.write_public_key(path, key.public_key())
    assert jws.load_ed25519_public_key(path) == public


def test_non_ed25519_key_files_are_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    other = ec.generate_private_key(ec.SECP256R1())
    private, public = tmp_path / "ec.pem", tmp_path / "ec.pub"
    private.write_bytes(other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    os.chmod(private, 0o600)
    public.write_bytes(other.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(ConfigError, match="not an Ed25519 key"):
        jws.load_or_create_ed25519_key(private)
    with pytest.raises(ConfigError, match="not an Ed25519 key"):
        jws.load_ed25519_public_key(public)
