"""The key broker's protocol logic, independent of HTTP: challenge, attestation, release, administration.

It follows the Trustee KBS protocol (request, challenge, attestation, response). A resource is released only
to a session whose evidence verified, was bound to this session's nonce and the workload's public key, and
satisfies the resource's policy; it leaves the broker only as a JWE that the workload's private key opens.
Every release and every refusal is appended to the hash-chained audit log.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ppml.attestation.evidence import Evidence, report_data
from ppml.attestation.policy import Policy
from ppml.attestation.verifier import EvidenceVerifier
from ppml.broker import jwe, jws
from ppml.broker.metrics import Metrics
from ppml.broker.sessions import Session, SessionTable
from ppml.broker.store import BrokerStore
from ppml.errors import AttestationError, BrokerError, PPMLError

log = logging.getLogger(__name__)

SUPPORTED_TEES = ("sgx", "tdx", "snp", "maa", "ita", "simulated")
TOKEN_ISSUER = "ppml-kbs"
ADMIN_AUDIENCE = "ppml-kbs-admin"
_VERSION = re.compile(r"\d+\.\d+\.\d+")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Broker:
    """Attestation-gated release of stored resources, with an audit record for every decision."""

    def __init__(self, store: BrokerStore, verifier: EvidenceVerifier, token_key: Ed25519PrivateKey, *,
                 admin: jws.AdminVerifier, sessions: SessionTable | None = None,
                 clock: Callable[[], datetime] = utcnow, metrics: Metrics | None = None) -> None:
        self.store = store
        self.verifier = verifier
        self.sessions = sessions if sessions is not None else SessionTable()  # an empty table is falsy
        self.admin = admin
        self.metrics = metrics or Metrics()
        self._token_key = token_key
        self._clock = clock

    # -- attestation ------------------------------------------------------------------------------------------

    def auth(self, request: object) -> Session:
        """``/kbs/v0/auth``: open a session for a TEE type and issue its nonce."""
        body = _object(request, "auth request")
        version, tee = body.get("version"), body.get("tee")
        if not isinstance(version, str) or not _VERSION.fullmatch(version):
            raise BrokerError("auth request: 'version' must be a protocol version such as \"0.1.0\"")
        if tee not in SUPPORTED_TEES:
            raise BrokerError(f"auth request: unsupported tee {tee!r} (supported: {', '.join(SUPPORTED_TEES)})")
        return self.sessions.start(tee, self._clock())

    def attest(self, session_id: str | None, request: object) -> str:
        """``/kbs/v0/attest``: verify evidence bound to the session's nonce and key; return an attestation token."""
        now = self._clock()
        session = self.sessions.get(session_id, now)
        self.sessions.begin_attestation(session)
        try:
            tee_pubkey, tee_key, evidence = self._parse_attest(session, request)
            expected = report_data(session.nonce, tee_pubkey)
            claims = self.verifier.verify(evidence, report_data=expected, now=now)
        except (AttestationError, BrokerError) as error:
            self._refuse("attest", session.tee, error, session=session)
            raise
        session.claims, session.tee_pubkey, session.tee_key, session.attested_at = claims, tee_pubkey, tee_key, now
        if claims.tee == "simulated":
            log.warning("session attested with a SIMULATED TEE: its evidence proves nothing about the code that runs")
        session.token = jws.sign({
            "iss": TOKEN_ISSUER, "iat": int(now.timestamp()), "exp": int(session.expires_at.timestamp()),
            "tee": claims.tee, "measurements": dict(claims.measurements), "svns": dict(claims.svns),
            "debug": claims.debug, "tcb_status": claims.tcb_status, "tee-pubkey": dict(tee_pubkey),
        }, self._token_key)
        self.store.append_audit("attest", subject=session.tee, outcome="verified",
                                detail={"session": _short_id(session.id), "tee": claims.tee,
                                        "measurements": dict(claims.measurements)})
        self.metrics.count("kbs_attestations_total", "Attestations by TEE and outcome.", tee=session.tee,
                           outcome="verified")
        return session.token

    def _parse_attest(self, session: Session, request: object) -> tuple[Mapping[str, Any], Any, Evidence]:
        body = _object(request, "attest request")
        runtime = body.get("runtime-data")
        if runtime is not None:
            runtime = _object(runtime, "runtime-data")
            if runtime.get("nonce") != session.nonce:
                raise BrokerError("runtime-data nonce is not this session's challenge (replayed evidence?)",
                                  status=401)
            tee_pubkey = runtime.get("tee-pubkey")
        else:  # the original Trustee shape: tee-pubkey beside the evidence
            tee_pubkey = body.get("tee-pubkey")
        tee_pubkey = _object(tee_pubkey, "tee-pubkey")
        try:
            tee_key = jwe.public_key_from_jwk(tee_pubkey)
        except PPMLError as error:
            raise BrokerError(f"tee-pubkey: {error}") from None
        evidence = Evidence.from_json(_object(body.get("tee-evidence"), "tee-evidence"))
        if evidence.tee != session.tee:
            raise BrokerError(f"evidence is from a {evidence.tee!r} TEE but the session was opened for "
                              f"{session.tee!r}")
        return tee_pubkey, tee_key, evidence

    # -- release ---------------------------------------------------------------------------------------------

    def release(self, session_id: str | None, path: str) -> dict[str, str]:
        """``/kbs/v0/resource/<path>``: the resource as a JWE to the session's key, if its policy allows."""
        now = self._clock()
        session = self.sessions.get(session_id, now)
        if not session.attested:
            error = BrokerError("the session has not attested: POST /kbs/v0/attest first", status=401)
            self._refuse("release", path, error, session=session)
            raise error
        assert session.claims is not None and session.tee_key is not None
        try:
            resource = self.store.get_resource(path)
            policy = self.store.get_policy(resource.policy)
            decision = policy.evaluate(session.claims, now=now, evidence_time=session.issued_at)
        except PPMLError as error:  # policy denial, unknown resource or policy, storage failure
            self._refuse("release", path, error, session=session)
            raise
        envelope = jwe.encrypt(resource.value, session.tee_key)
        self.store.append_audit("release", subject=path, outcome="released",
                                detail={"session": _short_id(session.id), "tee": decision.tee,
                                        "version": resource.version, "policy": resource.policy,
                                        "simulated": decision.simulated})
        self.metrics.count("kbs_releases_total", "Resource requests by outcome.", outcome="released")
        return envelope

    def _refuse(self, event: str, subject: str, error: Exception, *, session: Session) -> None:
        rule = getattr(error, "rule", None)
        reason = getattr(error, "reason", None) or type(error).__name__
        detail: dict[str, Any] = {"session": _short_id(session.id), "error": str(error), "reason": reason}
        if rule:
            detail["rule"] = rule
        self.store.append_audit(event, subject=subject, outcome="refused", detail=detail)
        counter = "kbs_attestations_total" if event == "attest" else "kbs_releases_total"
        labels = {"tee": session.tee} if event == "attest" else {}
        self.metrics.count(counter, "Attestations by TEE and outcome." if event == "attest" else
                           "Resource requests by outcome.", outcome="refused", **labels)

    # -- administration ---------------------------------------------------------------------------------------

    def authorize_admin(self, authorization: str | None) -> str:
        """Check an ``Authorization: Bearer <admin token>`` header; return the admin's subject."""
        if not authorization or not authorization.startswith("Bearer "):
            raise BrokerError("admin API: missing 'Authorization: Bearer <admin token>'", status=401)
        try:
            claims = self.admin.verify(authorization[len("Bearer "):], now=self._clock())
        except PPMLError as error:
            raise BrokerError(f"admin API: {error}", status=401) from None
        return str(claims.get("sub", "admin"))

    def put_policy(self, admin: str, name: str, document: object) -> Policy:
        policy = Policy.from_dict(_object(document, "policy"))
        self.store.put_policy(name, policy, actor=admin)
        return policy

    def put_resource(self, admin: str, path: str, value: bytes, policy: str) -> int:
        return self.store.put_resource(path, value, policy=policy, actor=admin)


def _object(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise BrokerError(f"{what} must be a JSON object")
    return value


def _short_id(session_id: str) -> str:
    """Enough of a session id to correlate audit records, too little to hijack the session."""
    return session_id[:8]

