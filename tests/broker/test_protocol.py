"""The KBS protocol end to end on loopback TLS: the happy path, and every way a release must be refused.

A real broker (the session ``kbs`` fixture) and a simulated TEE; raw HTTP where the test must misbehave
(replaying evidence, relaying it for another key), the real client everywhere else.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ppml._tls import tls_context
from ppml.attestation.collectors.simulated import code_measurement
from ppml.attestation.evidence import Evidence, report_data
from ppml.attestation.policy import Policy
from ppml.broker import jwe, jws
from ppml.broker.app import SESSION_COOKIE, create_app
from ppml.broker.client import KbsClient
from ppml.broker.config import BrokerConfig
from ppml.broker.openapi import openapi_document
from ppml.broker.server import BackgroundBroker
from ppml.broker.service import ADMIN_AUDIENCE
from ppml.errors import BrokerError, PolicyDenied, ResourceDecryptError
from ppml.testing.simulated_tee import simulated_attester
from tests.conftest import KbsFixture, make_broker_dir


def good_policy(**overrides: Any) -> dict[str, Any]:
    return {"allowed_tees": ["simulated"], "sgx": {"mrenclave": [code_measurement().hex()]},
            "accepted_tcb_statuses": [None], **overrides}


@pytest.fixture
def resource(kbs: KbsFixture) -> Iterator[tuple[str, bytes]]:
    """A fresh resource under a policy that accepts the simulated TEE running this code."""
    name = uuid.uuid4().hex[:12]
    admin = kbs.admin()
    admin.put_policy(name, good_policy())
    value = b"secret-" + name.encode()
    admin.put_resource(f"test/secret/{name}", value, policy=name)
    yield f"test/secret/{name}", value
    admin.close()


def client(kbs: KbsFixture, **kwargs: Any) -> KbsClient:
    return KbsClient(kbs.url, attester=simulated_attester(kbs.simulator_key_path, **kwargs), ca_file=kbs.ca_file)


class RawSession:
    """The protocol by hand, so that a test can send what a well-behaved client never would."""

    def __init__(self, kbs: KbsFixture) -> None:
        self.http = httpx.Client(base_url=kbs.url, verify=tls_context(kbs.ca_file))
        self.attester = simulated_attester(kbs.simulator_key_path)
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.jwk = jwe.jwk_from_public_key(self.key.public_key())

    def auth(self, tee: str = "simulated") -> str:
        response = self.http.post("/kbs/v0/auth", json={"version": "0.4.0", "tee": tee, "extra-params": ""})
        assert response.status_code == 200, response.text
        return str(response.json()["nonce"])

    def evidence(self, nonce: str, jwk: dict[str, str] | None = None) -> Evidence:
        return self.attester.collect(report_data(nonce, jwk or self.jwk))

    def attest(self, nonce: str, evidence: Evidence, jwk: dict[str, str] | None = None) -> httpx.Response:
        return self.http.post("/kbs/v0/attest", json={
            "runtime-data": {"nonce": nonce, "tee-pubkey": jwk or self.jwk}, "tee-evidence": evidence.to_json()})

    def get(self, path: str) -> httpx.Response:
        return self.http.get(f"/kbs/v0/resource/{path}")


def audit_since(kbs: KbsFixture, seq: int) -> list[dict[str, Any]]:
    admin = kbs.admin()
    try:
        return admin.audit(after=seq, limit=10_000)
    finally:
        admin.close()


def last_seq(kbs: KbsFixture) -> int:
    records = audit_since(kbs, 0)
    return int(records[-1]["seq"]) if records else 0


# -- the happy path ----------------------------------------------------------------------------------------------


def test_attested_release_returns_the_resource_and_is_audited(kbs: KbsFixture, resource: tuple[str, bytes]) -> None:
    path, value = resource
    before = last_seq(kbs)
    tee = client(kbs)
    try:
        assert tee.get_resource(path) == value
        assert tee.get_resource(path) == value  # same session, no second attestation
    finally:
        tee.close()
    records = audit_since(kbs, before)
    assert [r["event"] for r in records].count("attest") == 1
    releases = [r for r in records if r["event"] == "release"]
    assert len(releases) == 2 and all(r["outcome"] == "released" and r["subject"] == path for r in releases)
    assert all(r["detail"]["simulated"] for r in releases)


def test_released_jwe_opens_only_with_the_session_key(kbs: KbsFixture, resource: tuple[str, bytes]) -> None:
    raw = RawSession(kbs)
    nonce = raw.auth()
    assert raw.attest(nonce, raw.evidence(nonce)).status_code == 200
    envelope = raw.get(resource[0]).json()
    assert jwe.decrypt(envelope, raw.key) == resource[1]
    with pytest.raises(ResourceDecryptError):
        jwe.decrypt(envelope, ec.generate_private_key(ec.SECP256R1()))


def test_attestation_token_is_signed_by_the_broker(kbs: KbsFixture) -> None:
    raw = RawSession(kbs)
    nonce = raw.auth()
    token = raw.attest(nonce, raw.evidence(nonce)).json()["token"]
    token_key = jws.load_or_create_ed25519_key(kbs.directory / "token-key.pem")
    from datetime import datetime, timezone

    claims = jws.verify(token, [token_key.public_key()], now=datetime.now(timezone.utc))
    assert claims["tee"] == "simulated" and claims["measurements"]["mr_enclave"] == code_measurement().hex()
    assert claims["tee-pubkey"] == raw.jwk


# -- refusals: each names what failed --------------------------------------------------------------------------


def test_wrong_mrenclave_is_denied_naming_the_rule(kbs: KbsFixture) -> None:
    name = uuid.uuid4().hex[:12]
    admin = kbs.admin()
    admin.put_policy(name, good_policy(sgx={"mrenclave": ["ab" * 32]}))
    admin.put_resource(f"test/secret/{name}", b"x", policy=name)
    before = last_seq(kbs)
    tee = client(kbs)
    with pytest.raises(PolicyDenied) as denied:
        tee.get_resource(f"test/secret/{name}")
    tee.close()
    assert denied.value.rule == "mrenclave" and "not among the 1 allowed value" in str(denied.value)
    refused = [r for r in audit_since(kbs, before) if r["outcome"] == "refused"]
    assert refused and refused[-1]["detail"]["rule"] == "mrenclave"
    assert refused[-1]["subject"] == f"test/secret/{name}"


def test_resource_whose_policy_does_not_cover_the_tee_is_denied(kbs: KbsFixture) -> None:
    name = uuid.uuid4().hex[:12]
    admin = kbs.admin()
    admin.put_policy(name, {"allowed_tees": ["sgx"], "sgx": {"mrenclave": [code_measurement().hex()]}})
    admin.put_resource(f"test/secret/{name}", b"x", policy=name)
    tee = client(kbs)
    with pytest.raises(PolicyDenied) as denied:
        tee.get_resource(f"test/secret/{name}")
    tee.close()
    assert denied.value.rule == "allowed_tees" and "simulated must be listed explicitly" in str(denied.value)


def test_unknown_resource_is_404_after_attestation(kbs: KbsFixture) -> None:
    tee = client(kbs)
    with pytest.raises(BrokerError) as error:
        tee.get_resource("test/secret/does-not-exist")
    tee.close()
    assert error.value.status == 404 and "does-not-exist" in str(error.value)


def test_replayed_evidence_with_its_old_nonce_is_refused(kbs: KbsFixture, resource: tuple[str, bytes]) -> None:
    first = RawSession(kbs)
    old_nonce = first.auth()
    old_evidence = first.evidence(old_nonce)
    assert first.attest(old_nonce, old_evidence).status_code == 200

    replay = RawSession(kbs)
    replay.jwk, replay.key = first.jwk, first.key
    replay.auth()
    response = replay.attest(old_nonce, old_evidence)  # the old nonce, as the evidence says
    assert response.status_code == 401 and "not this session's challenge" in response.json()["detail"]
    assert replay.get(resource[0]).status_code == 401  # and nothing is released


def test_replayed_evidence_claiming_the_new_nonce_is_refused(kbs: KbsFixture, resource: tuple[str, bytes]) -> None:
    first = RawSession(kbs)
    old_nonce = first.auth()
    old_evidence = first.evidence(old_nonce)

    replay = RawSession(kbs)
    replay.jwk, replay.key = first.jwk, first.key
    new_nonce = replay.auth()
    response = replay.attest(new_nonce, old_evidence)  # lies about the nonce: the report data gives it away
    assert response.status_code == 401
    assert "not bound to this session's nonce and public key" in response.json()["detail"]
    assert replay.get(resource[0]).status_code == 401


def test_second_attestation_in_one_session_is_refused(kbs: KbsFixture) -> None:
    raw = RawSession(kbs)
    nonce = raw.auth()
    evidence = raw.evidence(nonce)
    assert raw.attest(nonce, evidence).status_code == 200
    again = raw.attest(nonce, evidence)
    assert again.status_code == 401 and "already used" in again.json()["detail"]


def test_evidence_bound_to_another_public_key_is_refused(kbs: KbsFixture, resource: tuple[str, bytes]) -> None:
    raw = RawSession(kbs)
    nonce = raw.auth()
    evidence = raw.evidence(nonce)  # genuine evidence for the TEE's key...
    thief = jwe.jwk_from_public_key(ec.generate_private_key(ec.SECP256R1()).public_key())
    response = raw.attest(nonce, evidence, jwk=thief)  # ...relayed with the attacker's key
    assert response.status_code == 401
    assert "not bound to this session's nonce and public key" in response.json()["detail"]
    assert raw.get(resource[0]).status_code == 401


def test_evidence_from_an_untrusted_simulator_is_refused(kbs: KbsFixture) -> None:
    raw = RawSession(kbs)
    raw.attester = simulated_attester(None)  # a throw-away key the broker was never told to trust
    nonce = raw.auth()
    response = raw.attest(nonce, raw.evidence(nonce))
    assert response.status_code == 401 and "simulat" in response.json()["detail"].lower()


def test_tampered_evidence_is_refused(kbs: KbsFixture) -> None:
    raw = RawSession(kbs)
    nonce = raw.auth()
    evidence = raw.evidence(nonce)
    flipped = bytearray(evidence.quote)
    flipped[len(flipped) // 2] ^= 1
    response = raw.attest(nonce, Evidence(evidence.tee, bytes(flipped)))
    assert response.status_code in (400, 401) and response.json()["detail"]


def test_release_without_attestation_or_session_is_refused(kbs: KbsFixture, resource: tuple[str, bytes]) -> None:
    raw = RawSession(kbs)
    no_session = raw.get(resource[0])
    assert no_session.status_code == 401 and "kbs-session-id" in no_session.json()["detail"]
    raw.auth()
    not_attested = raw.get(resource[0])
    assert not_attested.status_code == 401 and "not attested" in not_attested.json()["detail"]
    raw.http.cookies.clear()
    raw.http.cookies.set(SESSION_COOKIE, "forged")
    forged = raw.get(resource[0])
    assert forged.status_code == 401 and "unknown session" in forged.json()["detail"]


@pytest.mark.parametrize(("body", "status", "needle"), [
    (b"not json", 400, "not valid JSON"),
    (json.dumps({"version": "0.4.0", "tee": "nitro"}).encode(), 400, "unsupported tee"),
    (json.dumps({"version": "latest", "tee": "simulated"}).encode(), 400, "version"),
    (json.dumps([1, 2]).encode(), 400, "JSON object"),
    (b"{" + b" " * (2 << 20) + b"}", 413, "too large"),
])
def test_malformed_auth_requests(kbs: KbsFixture, body: bytes, status: int, needle: str) -> None:
    with httpx.Client(base_url=kbs.url, verify=tls_context(kbs.ca_file)) as http:
        response = http.post("/kbs/v0/auth", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status and needle in response.json()["detail"]


def test_malformed_attest_requests_name_the_field(kbs: KbsFixture) -> None:
    raw = RawSession(kbs)
    nonce = raw.auth()
    private_jwk = {**raw.jwk, "d": "AAAA"}
    response = raw.http.post("/kbs/v0/attest", json={"runtime-data": {"nonce": nonce, "tee-pubkey": private_jwk},
                                                       "tee-evidence": raw.evidence(nonce).to_json()})
    assert response.status_code == 400 and "tee-pubkey" in response.json()["detail"]


def test_client_refuses_an_untrusted_certificate(kbs: KbsFixture, tmp_path: Path) -> None:
    other_config, _ = make_broker_dir(tmp_path)  # another CA, never seen by this broker
    tee = KbsClient(kbs.url, attester=simulated_attester(kbs.simulator_key_path),
                    ca_file=str(other_config.parent / "tls" / "ca.pem"))
    with pytest.raises(BrokerError, match="TLS certificate that does not verify") as error:
        tee.attest()
    tee.close()
    assert "CERTIFICATE_VERIFY_FAILED" in str(error.value) and error.value.status == 495


# -- sessions expire -------------------------------------------------------------------------------------------


def test_expired_session_is_refused_and_the_client_attests_again(tmp_path: Path) -> None:
    config, simulator_key = make_broker_dir(tmp_path, session_ttl_seconds=1)
    with BackgroundBroker(BrokerConfig.load(config)) as server:
        store = server.broker.store
        store.put_policy("p", Policy.from_dict(good_policy()))
        store.put_resource("test/secret/s", b"value", policy="p")
        kbs = KbsFixture(url=server.url, directory=config.parent, ca_file=str(config.parent / "tls" / "ca.pem"),
                         admin_key_path=str(config.parent / "admin" / "admin-key.pem"),
                         simulator_key_path=str(simulator_key), server=server)
        raw = RawSession(kbs)
        nonce = raw.auth()
        assert raw.attest(nonce, raw.evidence(nonce)).status_code == 200
        assert raw.get("test/secret/s").status_code == 200
        session_id = raw.http.cookies[SESSION_COOKIE]
        time.sleep(1.2)
        assert raw.get("test/secret/s").status_code == 401  # the client's cookie expired too: nothing sent
        raw.http.cookies.set(SESSION_COOKIE, session_id)  # a client that keeps the cookie anyway
        expired = raw.get("test/secret/s")
        assert expired.status_code == 401 and "expired" in expired.json()["detail"]

        tee = client(kbs)
        assert tee.get_resource("test/secret/s") == b"value"
        time.sleep(1.2)
        assert tee.get_resource("test/secret/s") == b"value"  # a fresh session, transparently
        tee.close()
        raw.http.close()
        attestations = [r for r in store.read_audit() if r.event == "attest" and r.outcome == "verified"]
        assert len(attestations) == 3


# -- administration ---------------------------------------------------------------------------------------------


def test_admin_api_requires_a_fresh_token_from_a_trusted_key(kbs: KbsFixture) -> None:
    admin_key = jws.load_or_create_ed25519_key(kbs.admin_key_path)
    with httpx.Client(base_url=kbs.url, verify=tls_context(kbs.ca_file)) as http:
        assert http.get("/kbs/v0/admin/policies").status_code == 401
        stranger = jws.issue_admin_token(Ed25519PrivateKey.generate(), audience=ADMIN_AUDIENCE)
        assert http.get("/kbs/v0/admin/policies", headers={"Authorization": f"Bearer {stranger}"}).status_code == 401
        token = jws.issue_admin_token(admin_key, audience=ADMIN_AUDIENCE)
        headers = {"Authorization": f"Bearer {token}"}
        assert http.get("/kbs/v0/admin/policies", headers=headers).status_code == 200
        replay = http.get("/kbs/v0/admin/policies", headers=headers)
        assert replay.status_code == 401 and "already used" in replay.json()["detail"]
        wrong_audience = jws.issue_admin_token(admin_key, audience="somewhere-else")
        assert http.get("/kbs/v0/admin/policies",
                        headers={"Authorization": f"Bearer {wrong_audience}"}).status_code == 401


def test_admin_rejects_a_bad_policy_and_an_unknown_policy_name(kbs: KbsFixture) -> None:
    admin = kbs.admin()
    with pytest.raises(BrokerError) as bad:
        admin.put_policy("typo", {"allowed_tees": ["simulated"], "allow_debugs": True})
    assert bad.value.status == 400 and "allow_debugs" in str(bad.value)
    with pytest.raises(BrokerError) as unknown:
        admin.put_resource("test/secret/orphan", b"x", policy="no-such-policy")
    assert unknown.value.status == 404 and "no-such-policy" in str(unknown.value)
    admin.close()


def test_audit_chain_verifies_over_http(kbs: KbsFixture, resource: tuple[str, bytes]) -> None:
    admin = kbs.admin()
    assert admin.verify_audit() >= 2
    admin.close()


# -- OpenAPI and metrics ------------------------------------------------------------------------------------------


def test_openapi_documents_every_route(kbs: KbsFixture) -> None:
    document = openapi_document()
    app = create_app(kbs.server.broker)  # type: ignore[attr-defined]
    for route in app.routes:
        assert route.path in document["paths"], route.path
        documented = {m.upper() for m in document["paths"][route.path]}
        assert set(route.methods) - {"HEAD"} == documented, route.path
    with httpx.Client(base_url=kbs.url, verify=tls_context(kbs.ca_file)) as http:
        assert http.get("/openapi.json").json()["openapi"] == "3.1.0"


def test_metrics_count_releases_and_refusals(kbs: KbsFixture, resource: tuple[str, bytes]) -> None:
    tee = client(kbs)
    tee.get_resource(resource[0])
    with pytest.raises(BrokerError):
        tee.get_resource("test/secret/nothing-here")
    tee.close()
    with httpx.Client(base_url=kbs.url, verify=tls_context(kbs.ca_file)) as http:
        text = http.get("/metrics").text
    assert 'kbs_releases_total{outcome="released"}' in text
    assert 'kbs_releases_total{outcome="refused"}' in text
    assert 'kbs_request_duration_seconds_bucket{endpoint="resource",le="+Inf"}' in text
    assert "secret" not in text.lower().replace("test/secret", "")
