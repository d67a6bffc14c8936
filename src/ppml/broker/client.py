"""Clients of the key broker: :class:`KbsClient` runs inside a TEE, :class:`AdminClient` on the owner's machine.

Both verify TLS: against the system trust store, or against the broker's own CA file. Plain HTTP is refused
unless ``insecure_http=True`` is passed explicitly, and then a warning is logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ppml._b64 import b64url, unb64url
from ppml._tls import tls_context
from ppml.attestation.evidence import Attester, report_data
from ppml.broker import jwe, jws
from ppml.broker.app import SESSION_COOKIE
from ppml.broker.service import ADMIN_AUDIENCE
from ppml.errors import BrokerError, ConfigError, PolicyDenied

log = logging.getLogger(__name__)

PROTOCOL_VERSION = "0.4.0"
_SESSION_MARGIN_SECONDS = 10  # re-attest this long before the session would expire


def http_client(url: str, *, ca_file: str | None, insecure_http: bool, timeout: float) -> httpx.Client:
    """An HTTP client for ``url`` that verifies TLS (system roots, or ``ca_file``), or refuses plain HTTP."""
    if url.startswith("http://"):
        if not insecure_http:
            raise ConfigError(f"key broker URL {url} is plain HTTP: use https://, or opt in with insecure_http "
                              "(development only)")
        log.warning("talking to key broker %s over plain HTTP: anyone on the network can read and alter it", url)
    elif not url.startswith("https://"):
        raise ConfigError(f"invalid key broker URL {url!r}: expected https://host:port")
    return httpx.Client(base_url=url.rstrip("/"), verify=tls_context(ca_file, what=f"the key broker at {url}"),
                        timeout=timeout)


def _check(response: httpx.Response, action: str) -> Any:  # noqa: ANN401 - JSON
    if response.status_code == 200:
        return response.json()
    try:
        problem = response.json()
        detail = problem.get("detail", response.text)
    except ValueError:
        problem, detail = {}, response.text
    if response.status_code == 403 and problem.get("rule"):
        rule = str(problem["rule"])
        detail = detail.removeprefix(f"rule {rule}: ")  # PolicyDenied adds it back, once
        raise PolicyDenied(f"the key broker refused to {action}: {detail}", rule=rule)
    raise BrokerError(f"the key broker refused to {action} (HTTP {response.status_code}): {detail}",
                      status=response.status_code)


def _send(http: httpx.Client, method: str, path: str, action: str, **kwargs: Any) -> Any:  # noqa: ANN401
    try:
        response = http.request(method, path, **kwargs)
    except httpx.ConnectError as error:
        if "CERTIFICATE_VERIFY_FAILED" in str(error) or "certificate" in str(error).lower():
            raise BrokerError(f"the key broker at {http.base_url} presented a TLS certificate that does not verify "
                              f"against the trusted CA (check the CA file): {error}", status=495) from None
        raise BrokerError(f"cannot reach the key broker at {http.base_url} to {action}: {error}",
                          status=503) from None
    except httpx.HTTPError as error:
        raise BrokerError(f"cannot reach the key broker at {http.base_url} to {action}: {error}",
                          status=503) from None
    return _check(response, action)


class KbsClient:
    """Attests once per session with an ephemeral key pair, then fetches resources as JWEs only it can open."""

    def __init__(self, url: str, *, attester: Attester, ca_file: str | None = None, insecure_http: bool = False,
                 timeout: float = 30.0) -> None:
        self.url = url
        self._attester = attester
        self._http = http_client(url, ca_file=ca_file, insecure_http=insecure_http, timeout=timeout)
        self._lock = threading.Lock()
        self._private_key: ec.EllipticCurvePrivateKey | None = None
        self._session_expires = 0.0
        self.token: str | None = None

    def close(self) -> None:
        self._http.close()

    def attest(self) -> str:
        """Run the challenge/attestation exchange; return the broker's attestation token."""
        private_key = ec.generate_private_key(ec.SECP256R1())
        tee_pubkey = jwe.jwk_from_public_key(private_key.public_key())
        self._http.cookies.clear()
        started = time.monotonic()
        challenge = _send(self._http, "POST", "/kbs/v0/auth", "open a session",
                          json={"version": PROTOCOL_VERSION, "tee": self._attester.tee, "extra-params": ""})
        nonce = challenge.get("nonce") if isinstance(challenge, Mapping) else None
        if not isinstance(nonce, str):
            raise BrokerError("the key broker's challenge has no nonce")
        evidence = self._attester.collect(report_data(nonce, tee_pubkey))
        answer = _send(self._http, "POST", "/kbs/v0/attest", "accept our evidence", json={
            "runtime-data": {"nonce": nonce, "tee-pubkey": tee_pubkey}, "tee-evidence": evidence.to_json()})
        self._private_key, self.token = private_key, answer.get("token")
        expiries = [c.expires for c in self._http.cookies.jar if c.name == SESSION_COOKIE and c.expires]
        lifetime = min(expiries) - time.time() if expiries else 60.0
        self._session_expires = started + max(lifetime - _SESSION_MARGIN_SECONDS, 1.0)
        return str(self.token)

    def get_resource(self, path: str) -> bytes:
        """The plaintext of resource ``repository/type/tag``, attesting first if the session is not live."""
        with self._lock:
            if self._private_key is None or time.monotonic() >= self._session_expires:
                self.attest()
            try:
                envelope = _send(self._http, "GET", f"/kbs/v0/resource/{path}", f"release {path}")
            except BrokerError as error:
                if error.status != 401:
                    raise
                self.attest()  # the broker restarted or the session lapsed: one fresh attestation
                envelope = _send(self._http, "GET", f"/kbs/v0/resource/{path}", f"release {path}")
            assert self._private_key is not None
            return jwe.decrypt(envelope, self._private_key)


class AdminClient:
    """The data owner's administration of a broker, each call authenticated by a fresh short-lived token."""

    def __init__(self, url: str, *, admin_key: Ed25519PrivateKey, ca_file: str | None = None,
                 insecure_http: bool = False, timeout: float = 30.0) -> None:
        self.url = url
        self._key = admin_key
        self._http = http_client(url, ca_file=ca_file, insecure_http=insecure_http, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, action: str, **kwargs: Any) -> Any:  # noqa: ANN401
        token = jws.issue_admin_token(self._key, audience=ADMIN_AUDIENCE)
        return _send(self._http, method, path, action, headers={"Authorization": f"Bearer {token}"}, **kwargs)

    def put_policy(self, name: str, document: Mapping[str, Any]) -> dict[str, Any]:
        return self._call("PUT", f"/kbs/v0/admin/policy/{name}", f"set policy {name}", json=dict(document))

    def get_policy(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"/kbs/v0/admin/policy/{name}", f"read policy {name}")["policy"]

    def delete_policy(self, name: str) -> None:
        self._call("DELETE", f"/kbs/v0/admin/policy/{name}", f"delete policy {name}")

    def list_policies(self) -> list[str]:
        return list(self._call("GET", "/kbs/v0/admin/policies", "list policies")["policies"])

    def put_resource(self, path: str, value: bytes, *, policy: str) -> int:
        answer = self._call("PUT", f"/kbs/v0/admin/resource/{path}", f"set resource {path}",
                            json={"value": b64url(value), "policy": policy})
        return int(answer["version"])

    def get_resource(self, path: str) -> bytes:
        return unb64url(self._call("GET", f"/kbs/v0/admin/resource/{path}", f"read resource {path}")["value"])

    def delete_resource(self, path: str) -> None:
        self._call("DELETE", f"/kbs/v0/admin/resource/{path}", f"delete resource {path}")

    def list_resources(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/kbs/v0/admin/resources", "list resources")["resources"])

    def audit(self, *, after: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        return list(self._call("GET", "/kbs/v0/admin/audit", "read the audit log",
                               params={"after": after, "limit": limit})["records"])

    def verify_audit(self) -> int:
        return int(self._call("GET", "/kbs/v0/admin/audit/verify", "verify the audit log")["verified_records"])
