"""MAA and Intel Trust Authority token verification against real tokens (tests/vectors/attestation/{maa,ita}).

Positive vectors verify with the JWKS published at the time and map to the claims stated in SOURCE.md; tampered,
expired, mis-issued and alg-confused tokens are rejected. Tokens signed by a test key cover what no real vector
can (duplicate keys, ``crit``, missing ``exp``); jwcrypto independently confirms every signature verdict.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import http.server
import ipaddress
import json
import re
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwcrypto import jwk as jc_jwk
from jwcrypto import jws as jc_jws

from ppml.attestation.errors import AttestationError, CollateralError, EvidenceInvalid
from ppml.attestation.policy import Policy
from ppml.attestation.tokens import (
    ITA_ISSUER,
    Jwks,
    JwksUrl,
    StaticJwks,
    insecure_parse_unverified,
    ita_claims,
    maa_claims,
    maa_jwks_url,
    verify_ita_token,
    verify_maa_token,
)
from ppml.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "vectors" / "attestation"
EXPECTED: list[dict[str, Any]] = json.loads((VECTORS / "expected_results.json").read_text())["jwt_tokens"]

MAA_ISSUER = "https://sharedwus.wus.attest.azure.net"
MAA_JWKS = VECTORS / "maa/azure-sdk-cpp/sharedwus_certs_2022-05-31.jwks.json"
MAA_KID = "XxRc2vLh1E5FrsNawnRH3PzuFgqg3q7NvCdnjoJHBGE="
MAA_TOKENS = ("sgx_simple", "sgx_runtimedata_binary", "sgx_runtimedata_json", "openenclave_simple")
ITA_JWKS = VECTORS / "ita/trustee-operator-docs/ita_certs_kid_79d80711.jwks.json"
ITA_TDX = VECTORS / "ita/trustauthority-kbs/tdxToken.jwt"


def _token(path: Path) -> str:
    return path.read_text().strip()


def _expected(token_path: str) -> dict[str, Any]:
    return next(e for e in EXPECTED if e["token"] == token_path)


def _time(iso: str, seconds: float = 0) -> datetime:
    return datetime.fromisoformat(iso) + timedelta(seconds=seconds)


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _maa_keys() -> StaticJwks:
    return StaticJwks(MAA_JWKS.read_bytes())


def _verify_maa(name: str, **kwargs: Any):
    entry = _expected(f"maa/azure-sdk-cpp/{name}.jwt")
    args: dict[str, Any] = {"issuer": MAA_ISSUER, "keys": _maa_keys(), "now": _time(entry["iat"], 3600)}
    return verify_maa_token(_token(VECTORS / entry["token"]), **{**args, **kwargs})


def _verify_ita_tdx(token: str | None = None, **kwargs: Any):
    entry = _expected("ita/trustauthority-kbs/tdxToken.jwt")
    args: dict[str, Any] = {"keys": StaticJwks(ITA_JWKS.read_bytes()), "now": _time(entry["iat"], 10)}
    return verify_ita_token(_token(ITA_TDX) if token is None else token, **{**args, **kwargs})


# -- a test signing key, for what no real vector covers ---------------------------------------------------------


@dataclass
class Signer:
    """An RSA key with a self-signed certificate that signs arbitrary (even malformed) JWS parts."""

    key: rsa.RSAPrivateKey
    cert: x509.Certificate
    kid: str = "test-key/1+="

    def jwk(self, **extra: Any) -> dict[str, Any]:
        numbers = self.key.public_key().public_numbers()
        return {"kty": "RSA", "kid": self.kid, "n": _b64u(numbers.n.to_bytes(256, "big")),
                "e": _b64u(numbers.e.to_bytes(3, "big")),
                "x5c": [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()], **extra}

    def keys(self) -> StaticJwks:
        return StaticJwks({"keys": [self.jwk()]})

    def sign(self, header: dict[str, Any] | bytes, payload: dict[str, Any] | bytes, alg: str = "PS384") -> str:
        parts = [h if isinstance(h, bytes) else json.dumps(h).encode() for h in (header, payload)]
        signing_input = f"{_b64u(parts[0])}.{_b64u(parts[1])}".encode()
        if alg == "PS384":
            signature = self.key.sign(signing_input, padding.PSS(padding.MGF1(hashes.SHA384()), 48), hashes.SHA384())
        else:
            signature = self.key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input.decode()}.{_b64u(signature)}"

    def token(self, claims: dict[str, Any] | None = None, alg: str = "PS384", **header: Any) -> str:
        payload = {"iss": ITA_ISSUER, "iat": NOW_TS, "nbf": NOW_TS, "exp": NOW_TS + 300, "attester_type": "SGX",
                   "sgx_mrenclave": "ab" * 32, "sgx_is_debuggable": False, **(claims or {})}
        return self.sign({"alg": alg, "kid": self.kid, "typ": "JWT", **header}, payload, alg)


NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
NOW_TS = int(NOW.timestamp())


def _self_signed(key: rsa.RSAPrivateKey, cn: str, *, start: datetime = NOW, days: int = 365,
                 ca: bool = False) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start - timedelta(days=1))
            .not_valid_after(start + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))


@pytest.fixture(scope="module")
def signer() -> Signer:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return Signer(key=key, cert=_self_signed(key, "test token signer"))


# -- real vectors ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MAA_TOKENS)
def test_maa_sgx_tokens_verify_and_map_to_claims(name: str) -> None:
    entry = _expected(f"maa/azure-sdk-cpp/{name}.jwt")
    stated = entry["claims"]
    result = _verify_maa(name)
    assert result.claims.tee == "sgx"
    assert result.claims.measurements == {"mr_enclave": stated["x-ms-sgx-mrenclave"],
                                          "mr_signer": stated["x-ms-sgx-mrsigner"]}
    assert result.claims.svns == {"isv_prod_id": stated["x-ms-sgx-product-id"], "isv_svn": stated["x-ms-sgx-svn"]}
    assert result.claims.debug is stated["x-ms-sgx-is-debuggable"] is True
    assert result.claims.report_data == bytes.fromhex(stated["x-ms-sgx-report-data"])
    assert result.claims.tcb_status is None and result.claims.advisory_ids == ()  # MAA states no TCB status
    assert (result.issuer, result.kid, result.alg) == (MAA_ISSUER, MAA_KID, "RS256")
    assert (result.issued_at, result.expires) == (_time(entry["iat"]), _time(entry["exp"]))
    assert result.raw["x-ms-sgx-collateral"] == stated["x-ms-sgx-collateral"]


def test_maa_runtime_claims_stay_available_in_raw() -> None:
    stated = _expected("maa/azure-sdk-cpp/sgx_runtimedata_json.jwt")["claims"]
    assert _verify_maa("sgx_runtimedata_json").raw["x-ms-runtime"] == stated["x-ms-runtime"]


def test_maa_token_claims_satisfy_a_policy_in_our_vocabulary() -> None:
    result = _verify_maa("sgx_simple")
    policy = Policy.from_dict({"allowed_tees": ["sgx"], "allow_debug": True, "accepted_tcb_statuses": [None],
                               "sgx": {"mrenclave": [result.claims.measurements["mr_enclave"]]}})
    assert result.issued_at is not None
    assert policy.evaluate(result.claims, now=result.issued_at + timedelta(seconds=5),
                           evidence_time=result.issued_at).tee == "sgx"


def test_maa_sev_snp_token_is_parse_only_its_kid_is_in_no_jwks_here() -> None:
    entry = _expected("maa/azure-samples/sev-snp-jwt.txt")
    token = _token(VECTORS / entry["token"])
    with pytest.raises(EvidenceInvalid, match=re.escape("unknown kid 'jNolL7YTrRkDIukgm3on/fz5uMi9kjxhfUBTh6Or8No='")
                       ) as info:
        verify_maa_token(token, issuer=entry["claims"]["iss"], keys=_maa_keys(), now=_time(entry["iat"], 10))
    assert info.value.reason == "unknown_kid"
    header, raw = insecure_parse_unverified(token)
    assert header["kid"] == entry["header"]["kid"]
    claims = maa_claims(raw)
    stated = entry["claims"]
    assert claims.tee == "snp" and claims.debug is False and claims.tcb_status is None
    assert claims.measurements["measurement"] == stated["x-ms-sevsnpvm-launchmeasurement"]
    assert claims.measurements["host_data"] == stated["x-ms-sevsnpvm-hostdata"]
    assert claims.report_data == bytes.fromhex(stated["x-ms-sevsnpvm-reportdata"])
    assert claims.svns == {"guest_svn": 2, "vmpl": 0, "tcb_bootloader": 3, "tcb_tee": 0, "tcb_snp": 8,
                           "tcb_microcode": 115}
    assert "policy" not in claims.svns  # MAA does not state the full guest policy: policy-bit rules must deny


def test_maa_legacy_claims_sample_maps_to_claims() -> None:
    text = (VECTORS / "maa/azure-samples/gnkuks001_post.attest.response.jwt.body.json").read_text()
    decoder = json.JSONDecoder()
    header, end = decoder.raw_decode(text)
    raw, _ = decoder.raw_decode(text, end + len(text[end:]) - len(text[end:].lstrip()))
    claims = maa_claims(raw)
    assert claims.tee == "sgx" and claims.debug is False
    assert claims.measurements == {"mr_enclave": raw["sgx-mrenclave"], "mr_signer": raw["sgx-mrsigner"]}
    assert claims.svns == {"isv_prod_id": 1, "isv_svn": 8888}
    assert claims.report_data == b""  # pre-2021 tokens state none: no report_data binding can pass
    instance_keys = Jwks.from_json((VECTORS / "maa/azure-samples/gnkuks001_get.certs.response.body.json").read_text())
    assert header["kid"] in instance_keys.kids and len(instance_keys.kids) == 5


def test_azure_cvm_claims_sample_maps_the_isolation_tee() -> None:
    raw = json.loads((VECTORS / "maa/cvm-guest-attestation/sampleAttestationToken.json").read_text())
    tee = raw["x-ms-isolation-tee"]
    claims = maa_claims(raw)
    assert claims.tee == "snp" and claims.debug is False
    assert claims.measurements["measurement"] == tee["x-ms-sevsnpvm-launchmeasurement"]
    assert claims.measurements["host_data"] == "00" * 32
    assert claims.report_data == bytes.fromhex(tee["x-ms-sevsnpvm-reportdata"])
    assert claims.svns["guest_svn"] == 1 and claims.svns["tcb_microcode"] == 55


def test_ita_tdx_token_verifies_with_ps384_and_maps_to_claims() -> None:
    entry = _expected("ita/trustauthority-kbs/tdxToken.jwt")
    stated = entry["claims"]
    result = _verify_ita_tdx()
    claims = result.claims
    assert (claims.tee, claims.debug, result.alg, result.issuer) == ("tdx", False, "PS384", ITA_ISSUER)
    assert claims.measurements["mr_td"] == stated["tdx_mrtd"]
    assert claims.measurements["mr_seam"] == stated["tdx_mrseam"]
    assert claims.measurements["rtmr0"] == stated["tdx_rtmr0"]
    assert [claims.measurements[k] for k in ("rtmr1", "rtmr2", "rtmr3")] == [result.raw[f"tdx_rtmr{i}"]
                                                                             for i in (1, 2, 3)]
    assert claims.measurements["tee_tcb_svn"] == stated["tdx_tee_tcb_svn"]
    assert claims.measurements["td_attributes"] == stated["tdx_td_attributes"]
    assert claims.report_data == bytes.fromhex(stated["tdx_report_data"])
    assert claims.tcb_status == "OutOfDate" and claims.advisory_ids == ("INTEL-SA-00837",)
    assert result.raw["verifier_nonce"]["val"]  # the nonce stays available to the caller


def test_ita_key_published_only_for_another_alg_is_not_used() -> None:
    doc = json.loads(ITA_JWKS.read_text())
    rs256_only = {"keys": [k for k in doc["keys"] if k["alg"] == "RS256"]}
    with pytest.raises(EvidenceInvalid, match="published for alg PS384"):
        _verify_ita_tdx(keys=StaticJwks(rs256_only))


@pytest.mark.parametrize(("path", "legacy"), [("ita/trustauthority-kbs/sgxToken.jwt", False),
                                              ("ita/trustauthority-client-for-go/amber_sgx_token_2022.jwt", True)])
def test_ita_sgx_tokens_are_parse_only_and_map_to_claims(path: str, legacy: bool) -> None:
    entry = _expected(path)
    token = _token(VECTORS / path)
    with pytest.raises(EvidenceInvalid, match="unknown kid") as info:
        verify_ita_token(token, issuer=entry["claims"]["iss"], keys=StaticJwks(ITA_JWKS.read_bytes()),
                         now=_time(entry["iat"], 10))
    assert info.value.reason == "unknown_kid"
    claims = ita_claims(insecure_parse_unverified(token)[1])
    stated = entry["claims"]
    prefix = "amber_" if legacy else ""
    assert claims.tee == "sgx" and claims.debug is False
    assert claims.measurements == {"mr_enclave": stated[f"{prefix}sgx_mrenclave"],
                                   "mr_signer": stated[f"{prefix}sgx_mrsigner"]}
    assert claims.svns == {"isv_prod_id": 0, "isv_svn": 0}
    assert claims.report_data == bytes.fromhex(stated["amber_report_data" if legacy else "sgx_report_data"])
    assert claims.tcb_status == "OutOfDate"  # stated as OUT_OF_DATE
    assert claims.advisory_ids == tuple(stated.get("attester_advisory_ids", ()))


def test_go_connector_synthetic_token_is_rejected_for_its_signature() -> None:
    keys = StaticJwks((VECTORS / "ita/trustauthority-client-for-go/go-connector_jwks.json").read_bytes())
    token = _token(VECTORS / "ita/trustauthority-client-for-go/go-connector_token_synthetic.jwt")
    with pytest.raises(EvidenceInvalid, match="signature does not verify") as info:
        verify_ita_token(token, keys=keys, now=datetime.fromtimestamp(1516239022, UTC))
    assert info.value.reason == "token_signature"


# -- jwcrypto agrees on every signature verdict ---------------------------------------------------------------------


def _jwcrypto_accepts(token: str, jwks_path: Path) -> bool:
    header, _ = insecure_parse_unverified(token)
    entries = [k for k in json.loads(jwks_path.read_text())["keys"]
               if k["kid"] == header["kid"] and k.get("alg", header["alg"]) == header["alg"]]
    cert = x509.load_der_x509_certificate(base64.b64decode(entries[0]["x5c"][0]))
    obj = jc_jws.JWS()
    obj.deserialize(token)
    try:
        obj.verify(jc_jwk.JWK.from_pyca(cert.public_key()), alg=header["alg"])
    except jc_jws.InvalidJWSSignature:
        return False
    return True


@pytest.mark.parametrize("path", [f"maa/azure-sdk-cpp/{n}.jwt" for n in MAA_TOKENS])
def test_jwcrypto_agrees_the_maa_vectors_verify(path: str) -> None:
    assert _jwcrypto_accepts(_token(VECTORS / path), MAA_JWKS)


def test_jwcrypto_agrees_on_the_ita_vectors() -> None:
    assert _jwcrypto_accepts(_token(ITA_TDX), ITA_JWKS)
    synthetic = _token(VECTORS / "ita/trustauthority-client-for-go/go-connector_token_synthetic.jwt")
    assert not _jwcrypto_accepts(synthetic, VECTORS / "ita/trustauthority-client-for-go/go-connector_jwks.json")


# -- time and issuer ------------------------------------------------------------------------------------------------


def test_expired_token_is_rejected_after_the_leeway() -> None:
    exp = _expected("maa/azure-sdk-cpp/sgx_simple.jwt")["exp"]
    assert _verify_maa("sgx_simple", now=_time(exp, 59)).claims.tee == "sgx"
    with pytest.raises(EvidenceInvalid, match="token expired at 2022-06-01T06:47:56") as info:
        _verify_maa("sgx_simple", now=_time(exp, 61))
    assert info.value.reason == "token_expired"
    with pytest.raises(EvidenceInvalid, match="expired"):
        _verify_maa("sgx_simple", now=_time(exp), leeway_seconds=0)


def test_token_is_rejected_before_nbf() -> None:
    nbf = _expected("maa/azure-sdk-cpp/sgx_simple.jwt")["nbf"]
    assert _verify_maa("sgx_simple", now=_time(nbf, -59)).claims.tee == "sgx"
    with pytest.raises(EvidenceInvalid, match="not valid before 2022-05-31T22:47:56") as info:
        _verify_maa("sgx_simple", now=_time(nbf, -61))
    assert info.value.reason == "token_not_yet_valid"


@pytest.mark.parametrize("issuer", ["https://sharedwus.wus.attest.azure.net/", "https://SHAREDWUS.wus.attest.azure.net",
                                    "https://sharedeus.eus.attest.azure.net"])
def test_wrong_issuer_is_rejected_exactly(issuer: str) -> None:
    with pytest.raises(EvidenceInvalid, match="is not the expected") as info:
        _verify_maa("sgx_simple", issuer=issuer)
    assert info.value.reason == "token_issuer"


def test_ita_issuer_is_checked_too(signer: Signer) -> None:
    token = signer.token({"iss": "Intel Trust Authority (staging)"})
    with pytest.raises(EvidenceInvalid, match="issuer 'Intel Trust Authority \\(staging\\)'"):
        verify_ita_token(token, keys=signer.keys(), now=NOW)


def test_naive_now_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        _verify_maa("sgx_simple", now=datetime(2022, 6, 1))


def test_exp_is_required(signer: Signer) -> None:
    token = signer.token({"exp": None})
    with pytest.raises(EvidenceInvalid, match="exp is missing"):
        verify_ita_token(token, keys=signer.keys(), now=NOW)


def test_signing_certificate_must_be_valid_at_now(signer: Signer) -> None:
    later = NOW + timedelta(days=400)
    token = signer.token({"iat": int(later.timestamp()), "exp": int(later.timestamp()) + 60, "nbf": None})
    with pytest.raises(EvidenceInvalid, match="signing certificate of key 'test-key/1\\+=' is not valid"):
        verify_ita_token(token, keys=signer.keys(), now=later)


# -- tampering ------------------------------------------------------------------------------------------------------


def _flip(token: str, part: int, old: bytes, new: bytes) -> str:
    parts = token.split(".")
    decoded = _unb64u(parts[part])
    assert old in decoded
    parts[part] = _b64u(decoded.replace(old, new, 1))
    return ".".join(parts)


@pytest.mark.parametrize(("part", "old", "new"), [
    (0, b'"JWT"', b'"KWT"'),  # J (0x4a) -> K (0x4b): one bit of the header
    (1, b'"x-ms-sgx-svn":1', b'"x-ms-sgx-svn":0'),  # '1' (0x31) -> '0' (0x30): one bit of the payload
])
def test_one_flipped_bit_in_header_or_payload_is_rejected(part: int, old: bytes, new: bytes) -> None:
    token = _flip(_token(VECTORS / "maa/azure-sdk-cpp/sgx_simple.jwt"), part, old, new)
    with pytest.raises(EvidenceInvalid, match="signature does not verify") as info:
        verify_maa_token(token, issuer=MAA_ISSUER, keys=_maa_keys(), now=_time("2022-05-31T23:00:00+00:00"))
    assert info.value.reason == "token_signature"


@pytest.mark.parametrize("bit", [0, 7, 1000, 2047])
def test_one_flipped_bit_in_the_signature_is_rejected(bit: int) -> None:
    header, payload, signature = _token(VECTORS / "maa/azure-sdk-cpp/sgx_simple.jwt").split(".")
    sig = bytearray(_unb64u(signature))
    sig[bit // 8] ^= 1 << (bit % 8)
    token = f"{header}.{payload}.{_b64u(bytes(sig))}"
    with pytest.raises(EvidenceInvalid, match="signature does not verify"):
        verify_maa_token(token, issuer=MAA_ISSUER, keys=_maa_keys(), now=_time("2022-05-31T23:00:00+00:00"))


def test_any_changed_character_is_rejected() -> None:
    token = _token(ITA_TDX)
    for index in range(0, len(token), 97):
        if token[index] == ".":
            continue
        changed = token[:index] + ("A" if token[index] != "A" else "B") + token[index + 1:]
        with pytest.raises(EvidenceInvalid):
            _verify_ita_tdx(changed)


# -- algorithm confusion --------------------------------------------------------------------------------------------


def _resign_header(token: str, header: dict[str, Any], signature: bytes) -> str:
    return f"{_b64u(json.dumps(header).encode())}.{token.split('.')[1]}.{_b64u(signature)}"


@pytest.mark.parametrize("signature", [b"", b"\x00" * 256])
def test_alg_none_is_rejected(signature: bytes) -> None:
    token = _resign_header(_token(VECTORS / "maa/azure-sdk-cpp/sgx_simple.jwt"),
                           {"alg": "none", "kid": MAA_KID, "typ": "JWT"}, signature)
    with pytest.raises(EvidenceInvalid) as info:
        verify_maa_token(token, issuer=MAA_ISSUER, keys=_maa_keys(), now=_time("2022-05-31T23:00:00+00:00"))
    assert info.value.reason == "token_alg"


def test_hs256_with_the_rsa_public_key_as_hmac_secret_is_rejected() -> None:
    key = _maa_keys().lookup(MAA_KID)[0].public_key
    payload_b64 = _token(VECTORS / "maa/azure-sdk-cpp/sgx_simple.jwt").split(".")[1]
    header_b64 = _b64u(json.dumps({"alg": "HS256", "kid": MAA_KID, "typ": "JWT"}).encode())
    for secret in (key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
                   key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
                   key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)):
        mac = hmac.new(secret, f"{header_b64}.{payload_b64}".encode(), hashlib.sha256).digest()
        with pytest.raises(EvidenceInvalid, match="alg 'HS256' is not accepted") as info:
            verify_maa_token(f"{header_b64}.{payload_b64}.{_b64u(mac)}", issuer=MAA_ISSUER, keys=_maa_keys(),
                             now=_time("2022-05-31T23:00:00+00:00"))
        assert info.value.reason == "token_alg"


def test_each_issuer_has_its_own_alg_allow_list(signer: Signer) -> None:
    ps384 = signer.token({"iss": MAA_ISSUER, "x-ms-attestation-type": "sgx", "x-ms-sgx-is-debuggable": False})
    with pytest.raises(EvidenceInvalid, match="alg 'PS384' is not accepted for this issuer \\(accepted: RS256\\)"):
        verify_maa_token(ps384, issuer=MAA_ISSUER, keys=signer.keys(), now=NOW)
    rs256 = signer.token(alg="RS256")
    assert verify_ita_token(rs256, keys=signer.keys(), now=NOW).alg == "RS256"
    assert verify_maa_token(signer.token({"iss": MAA_ISSUER, "x-ms-attestation-type": "sgx",
                                          "x-ms-sgx-is-debuggable": False}, alg="RS256"),
                            issuer=MAA_ISSUER, keys=signer.keys(), now=NOW).claims.tee == "sgx"


def test_crit_header_is_rejected(signer: Signer) -> None:
    token = signer.token(crit=["exp"])
    with pytest.raises(EvidenceInvalid, match="crit"):
        verify_ita_token(token, keys=signer.keys(), now=NOW)


# -- keys -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kid", ["nope", MAA_KID.rstrip("="), MAA_KID.lower(), MAA_KID + "="])
def test_unknown_kid_is_rejected_and_kids_compare_exactly(kid: str) -> None:
    original = _token(VECTORS / "maa/azure-sdk-cpp/sgx_simple.jwt")
    token = _resign_header(original, {"alg": "RS256", "kid": kid, "typ": "JWT"}, _unb64u(original.split(".")[2]))
    with pytest.raises(EvidenceInvalid, match=f"unknown kid {re.escape(repr(kid))}") as info:
        verify_maa_token(token, issuer=MAA_ISSUER, keys=_maa_keys(), now=_time("2022-05-31T23:00:00+00:00"))
    assert info.value.reason == "unknown_kid"


def test_maa_kid_with_slash_and_plus_is_found(signer: Signer) -> None:
    assert "/" in signer.kid and "+" in signer.kid
    assert verify_ita_token(signer.token(), keys=signer.keys(), now=NOW).kid == signer.kid


def test_jwks_whose_x5c_does_not_match_n_e_is_rejected(signer: Signer) -> None:
    doc = json.loads(ITA_JWKS.read_text())
    doc["keys"][0]["n"] = signer.jwk()["n"]
    with pytest.raises(CollateralError, match="n/e do not match the public key of its x5c\\[0\\] certificate"):
        StaticJwks(doc)


@pytest.mark.parametrize(("change", "message"), [
    ({"x5c": ["not base64!"]}, "x5c\\[0\\] is not a base64 DER certificate"),
    ({"n": "AA=="}, "not unpadded base64url"),
    ({"x5c": None, "n": None, "e": None}, "neither n/e nor x5c"),
])
def test_malformed_jwks_entries_are_collateral_errors(signer: Signer, change: dict[str, Any], message: str) -> None:
    entry = {k: v for k, v in {**signer.jwk(), **change}.items() if v is not None}
    with pytest.raises(CollateralError, match=message):
        StaticJwks({"keys": [entry]})


def test_jwks_with_duplicate_keys_is_rejected() -> None:
    with pytest.raises(CollateralError, match="duplicate key 'keys'"):
        StaticJwks('{"keys": [], "keys": []}')


def test_small_rsa_keys_are_refused() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    small = Signer(key=key, cert=_self_signed(key, "small"))
    numbers = key.public_key().public_numbers()
    jwk = {"kty": "RSA", "kid": small.kid, "n": _b64u(numbers.n.to_bytes(128, "big")), "e": "AQAB"}
    with pytest.raises(EvidenceInvalid, match="1024 bits, fewer than 2048"):
        verify_ita_token(small.token(), keys=StaticJwks({"keys": [jwk]}), now=NOW)


# -- strict parsing -------------------------------------------------------------------------------------------------


def test_duplicate_json_keys_are_rejected_even_when_signed(signer: Signer) -> None:
    header = b'{"alg":"PS384","alg":"PS384","kid":"%s"}' % signer.kid.encode()
    payload = json.dumps({"iss": ITA_ISSUER, "exp": NOW_TS + 60, "attester_type": "SGX",
                          "sgx_is_debuggable": False}).encode()
    with pytest.raises(EvidenceInvalid, match="JWS header is not valid JSON: duplicate key 'alg'"):
        verify_ita_token(signer.sign(header, payload), keys=signer.keys(), now=NOW)
    payload = payload[:-1] + b', "iss": "someone else"}'
    good_header = json.dumps({"alg": "PS384", "kid": signer.kid}).encode()
    with pytest.raises(EvidenceInvalid, match="JWT payload is not valid JSON: duplicate key 'iss'"):
        verify_ita_token(signer.sign(good_header, payload), keys=signer.keys(), now=NOW)


_B64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _non_canonical(token: str) -> str:
    """Set a trailing (unused) bit of the first part whose length leaves spare bits: same bytes, other spelling."""
    parts = token.split(".")
    index = next(i for i, p in enumerate(parts) if len(p) % 4)
    last = parts[index][-1]
    parts[index] = parts[index][:-1] + _B64URL_ALPHABET[_B64URL_ALPHABET.index(last) + 1]
    assert _unb64u(parts[index]) == _unb64u(token.split(".")[index])
    return ".".join(parts)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda t: t + "=", "not unpadded base64url"),
    (lambda t: t.replace(".", "=.", 1), "not unpadded base64url"),
    (lambda t: t.replace("-", "+", 1), "not unpadded base64url"),
    (lambda t: t + "\n", "not unpadded base64url"),
    (lambda t: t.rsplit(".", 1)[0], "has 2 dot-separated parts"),
    (lambda t: t + ".e30", "has 4 dot-separated parts"),
    (lambda t: t.rsplit(".", 1)[0] + ".", "signature is empty"),
    (_non_canonical, "not canonical base64url"),
    (lambda t: "W10." + t.split(".", 1)[1], "JWS header is not a JSON object"),  # "[]"
    (lambda t: "x" * (1 << 20) + t, "characters, more than"),
])
def test_malformed_tokens_are_rejected(mutate, message: str) -> None:
    with pytest.raises(EvidenceInvalid, match=message) as info:
        _verify_ita_tdx(mutate(_token(ITA_TDX)))
    assert info.value.reason in ("token_format", "token_alg")


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)
_CLAIM_NAMES = st.sampled_from(["iss", "exp", "nbf", "iat", "attester_type", "sgx_is_debuggable", "sgx_mrenclave",
                                "sgx_isvsvn", "sgx_report_data", "attester_tcb_status", "attester_advisory_ids"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=st.dictionaries(st.sampled_from(["alg", "kid", "crit", "typ", "jku"]), _JSON, max_size=4),
       claims=st.dictionaries(_CLAIM_NAMES, _JSON | st.integers(min_value=10**20, max_value=10**400), max_size=8))
def test_signed_garbage_only_ever_raises_attestation_errors(signer: Signer, header: dict[str, Any],
                                                           claims: dict[str, Any]) -> None:
    """Whatever a (validly signed) header and payload hold, the verifier answers with one of our errors."""
    token = signer.sign({"alg": "PS384", "kid": signer.kid, **header}, {"iss": ITA_ISSUER, "exp": NOW_TS + 60,
                                                                        **claims})
    with contextlib.suppress(AttestationError):
        verify_ita_token(token, keys=signer.keys(), now=NOW)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=_B64URL_ALPHABET + ".=+/ ", max_size=200))
def test_arbitrary_strings_only_ever_raise_evidence_invalid(token: str) -> None:
    with pytest.raises(EvidenceInvalid):
        _verify_ita_tdx(token)


def test_token_without_kid_is_rejected(signer: Signer) -> None:
    token = signer.sign({"alg": "PS384"}, {"iss": ITA_ISSUER, "exp": NOW_TS + 60})
    with pytest.raises(EvidenceInvalid, match="no kid"):
        verify_ita_token(token, keys=signer.keys(), now=NOW)


# -- claim mapping errors -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("claims", "message"), [
    ({"attester_type": "SEVSNP"}, "attester_type is 'SEVSNP'; supported: SGX, TDX"),
    ({"sgx_is_debuggable": None}, "sgx_is_debuggable is missing or not a boolean"),
    ({"sgx_mrenclave": "ab" * 31}, "sgx_mrenclave is 31 bytes, expected 32"),
    ({"sgx_isvsvn": -1}, "sgx_isvsvn is not a non-negative integer"),
    ({"sgx_report_data": "zz"}, "sgx_report_data is not hex"),
])
def test_bad_ita_claims_are_named(signer: Signer, claims: dict[str, Any], message: str) -> None:
    raw = {"attester_type": "SGX", "sgx_is_debuggable": False, **claims}
    with pytest.raises(EvidenceInvalid, match=re.escape(message)):
        ita_claims({k: v for k, v in raw.items() if v is not None})


def test_unsupported_maa_type_is_named() -> None:
    with pytest.raises(EvidenceInvalid, match="x-ms-attestation-type is 'azurevm'"):
        maa_claims({"x-ms-attestation-type": "azurevm"})


@pytest.mark.parametrize(("given", "normalized"), [("OUT_OF_DATE", "OutOfDate"), ("UpToDate", "UpToDate"),
                                                   ("SW_HARDENING_NEEDED", "SWHardeningNeeded"),
                                                   ("CONFIGURATION_AND_SW_HARDENING_NEEDED",
                                                    "ConfigurationAndSWHardeningNeeded"),
                                                   ("SomethingNew", "SomethingNew")])
def test_ita_tcb_status_uses_intels_vocabulary(given: str, normalized: str) -> None:
    raw = {"attester_type": "SGX", "sgx_is_debuggable": False, "attester_tcb_status": given}
    assert ita_claims(raw).tcb_status == normalized


# -- JwksUrl against a real loopback HTTPS server -------------------------------------------------------------------


@dataclass
class JwksServer:
    url: str
    ca_path: Path
    hits: int = 0
    body: bytes = b'{"keys": []}'
    status: int = 200
    lock: threading.Lock = field(default_factory=threading.Lock)


def _issue_server_cert(tmp: Path) -> tuple[Path, Path, Path]:
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = _self_signed(ca_key, "ppml test CA", start=datetime.now(UTC), days=2, ca=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(datetime.now(UTC) - timedelta(days=1))
            .not_valid_after(datetime.now(UTC) + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_path, cert_path, key_path = tmp / "ca.pem", tmp / "server.pem", tmp / "server.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return ca_path, cert_path, key_path


@pytest.fixture(scope="module")
def server_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return _issue_server_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def jwks_server(server_files: tuple[Path, Path, Path]) -> Iterator[JwksServer]:
    ca_path, cert_path, key_path = server_files
    state = JwksServer(url="", ca_path=ca_path)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            with state.lock:
                state.hits += 1
            self.send_response(state.status if self.path == "/certs" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(state.body)))
            self.end_headers()
            self.wfile.write(state.body)

        def log_message(self, *args: Any) -> None:
            pass

    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a client refusing our certificate is the point of one test

    httpd = Server(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    state.url = f"https://127.0.0.1:{httpd.server_address[1]}/certs"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_jwks_url_caches_for_the_ttl(jwks_server: JwksServer, signer: Signer) -> None:
    jwks_server.body = json.dumps({"keys": [signer.jwk()]}).encode()
    clock = Clock()
    source = JwksUrl(jwks_server.url, verify=jwks_server.ca_path, ttl_seconds=600, clock=clock)
    for _ in range(3):
        assert verify_ita_token(signer.token(), keys=source, now=NOW).kid == signer.kid
    assert jwks_server.hits == 1
    clock.now += 601
    source.lookup(signer.kid)
    assert jwks_server.hits == 2


def test_jwks_url_refetches_once_on_an_unknown_kid(jwks_server: JwksServer, signer: Signer) -> None:
    jwks_server.body = json.dumps({"keys": [signer.jwk()]}).encode()
    clock = Clock()
    source = JwksUrl(jwks_server.url, verify=str(jwks_server.ca_path), min_refetch_seconds=30, clock=clock)
    source.lookup(signer.kid)
    rolled = Signer(key=signer.key, cert=signer.cert, kid="rolled-over")
    jwks_server.body = json.dumps({"keys": [signer.jwk(), rolled.jwk()]}).encode()
    clock.now += 60
    assert verify_ita_token(rolled.token(), keys=source, now=NOW).kid == "rolled-over"
    assert jwks_server.hits == 2
    with pytest.raises(EvidenceInvalid, match=f"unknown kid 'made-up': no signing key with this kid in the JWKS at "
                                              f"{re.escape(jwks_server.url)}"):
        source.lookup("made-up")
    assert jwks_server.hits == 2  # just refetched: a made-up kid does not trigger another request
    clock.now += 31
    with pytest.raises(EvidenceInvalid, match="unknown kid"):
        source.lookup("made-up")
    assert jwks_server.hits == 3


def test_jwks_url_refuses_an_untrusted_certificate(jwks_server: JwksServer, tmp_path: Path) -> None:
    with pytest.raises(CollateralError, match=f"cannot fetch the JWKS at {re.escape(jwks_server.url)}") as info:
        JwksUrl(jwks_server.url).lookup("any")  # public roots only: our test CA is not among them
    assert info.value.reason == "jwks_fetch"
    other_ca, _, _ = _issue_server_cert(tmp_path)
    with pytest.raises(CollateralError, match="CERTIFICATE_VERIFY_FAILED"):
        JwksUrl(jwks_server.url, verify=other_ca).lookup("any")
    assert jwks_server.hits == 0


def test_jwks_url_reports_http_and_document_errors(jwks_server: JwksServer) -> None:
    jwks_server.status = 503
    with pytest.raises(CollateralError, match=f"JWKS at {re.escape(jwks_server.url)} returned HTTP 503"):
        JwksUrl(jwks_server.url, verify=jwks_server.ca_path).lookup("any")
    jwks_server.status, jwks_server.body = 200, b'{"keys": 1}'
    with pytest.raises(CollateralError, match=f"the JWKS at {re.escape(jwks_server.url)}: not a JWKS"):
        JwksUrl(jwks_server.url, verify=jwks_server.ca_path).lookup("any")


def test_jwks_url_configuration_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be turned off"):
        JwksUrl("https://example.invalid/certs", verify=False)
    with pytest.raises(ConfigError, match="must use https://"):
        JwksUrl("http://example.invalid/certs")
    with pytest.raises(ConfigError, match="cannot be loaded"):
        JwksUrl("https://example.invalid/certs", verify=tmp_path / "missing.pem")
    assert maa_jwks_url(MAA_ISSUER) == f"{MAA_ISSUER}/certs"
    assert JwksUrl.for_maa(MAA_ISSUER).url == f"{MAA_ISSUER}/certs"
    with pytest.raises(ConfigError, match="without a trailing slash"):
        maa_jwks_url(MAA_ISSUER + "/")


# -- documentation --------------------------------------------------------------------------------------------------


def test_documentation_example_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    text = (ROOT / "docs" / "attestation-tokens.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks
    monkeypatch.chdir(ROOT)
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], "docs/attestation-tokens.md", "exec"), namespace)  # noqa: S102 - our own documentation
    assert namespace["decision"].tee == "sgx"  # type: ignore[attr-defined]
