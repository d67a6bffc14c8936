"""A small Azure Key Vault REST emulator, for tests that drive the real Azure SDK without an Azure subscription.

Why it exists: the usual emulator, Lowkey Vault, ships as a jar (``com.github.nagyesta.lowkey-vault:
lowkey-vault-app``) that Maven Central does not serve here (404 for every version); only
``lowkey-vault-client`` and ``lowkey-vault-testcontainers`` 7.1.13 are published, and both need Lowkey Vault's
Docker image, which this environment cannot run. No npm or PyPI Key Vault emulator exists. So this module follows
Microsoft's published REST API (api-version 7.3 to 7.6, 2025-07-01 and 2026-04-01, the defaults of the pinned
key and secret SDKs) for exactly what ppml uses, and nothing more. It is test tooling: keys live in memory, unprotected.

What it implements:

* Key Vault's challenge authentication: a request without ``Authorization: Bearer`` gets ``401`` with
  ``WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/<tenant>",
  resource="https://vault.azure.net"`` (``https://managedhsm.azure.net`` in Managed HSM mode); a request whose
  token is not the emulator's (:data:`DEFAULT_TOKEN` unless configured) gets ``401`` too.
* Keys: create (``RSA`` / ``RSA-HSM`` 2048/3072/4096; ``oct-HSM`` 128/192/256 in Managed HSM mode), a new version
  when the name exists, ``exportable`` with a ``release_policy``, get (latest or a version), list, list versions,
  update (``enabled``, tags, key_ops, release policy), ``wrapkey`` / ``unwrapkey`` with RSA-OAEP and RSA-OAEP-256
  (RSA keys) or A128KW/A192KW/A256KW (``oct`` keys), honouring ``enabled`` and ``key_ops``.
* ``release``: the MAA token's signature is checked with the keys of an authority the emulator was told to trust
  (Key Vault fetches them from the authority; here they are configured), then ``exp`` / ``nbf``, then the key's
  release policy (:func:`ppml.kms.azure_skr.evaluate_release_policy`), then the key is wrapped to the first RSA key
  in the token's ``x-ms-runtime.keys`` (with ``key_ops`` allowing ``encrypt`` when given) by
  ``CKM_RSA_AES_KEY_WRAP`` (default) or ``RSA_AES_KEY_WRAP_256`` / ``_384``: RSA keys as PKCS #8 DER, ``oct`` keys
  raw. The answer is ``{"value": <JWS>}`` whose payload is ``{"request": {"api-version", "enc", "kid"},
  "response": {"key": {"key": {..., "key_hsm": b64url(JSON {"schema_version": "1.0", "header": {"kid", "alg":
  "dir", "enc"}, "ciphertext": b64url(blob)})}, "attributes", "release_policy"}}}``, the shape Microsoft's
  confidential-sidecar SKR client parses; the JWS is signed RS256 by an emulator key with its certificate in
  ``x5c``.
* Secrets: set (a new version each time) and get (latest or a version).
* Errors in Key Vault's shape ``{"error": {"code", "message"}}``: 404 ``KeyNotFound`` / ``SecretNotFound``,
  403 ``Forbidden`` (a disabled key, an operation outside ``key_ops``, a token that does not verify or breaks the
  release policy), 400 ``BadParameter``, 401 ``Unauthorized``.

What only a real vault tests: Entra ID tokens and RBAC / access policies; soft delete, purge protection, backup,
rotation policies; HSM key protection and attestation; Key Vault's own reading of a release policy (the emulator
uses ppml's evaluator, so a translation test against it checks ppml against itself) and its fetching of MAA keys;
the certificate chain of the release JWS; throttling and paging of long lists.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import uvicorn
from azure.core.credentials import AccessToken
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap
from cryptography.x509.oid import NameOID
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import URL, Headers, QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse

from ppml._b64 import b64url, unb64url
from ppml._tls import issue_server_certificate
from ppml.attestation import _jws
from ppml.attestation.errors import CollateralError, EvidenceInvalid
from ppml.attestation.tokens import JwksSource, StaticJwks
from ppml.errors import ConfigError, PolicyDenied
from ppml.kms import azure_skr

__all__ = ["DEFAULT_TOKEN", "FakeAttestationAuthority", "KeyVaultEmulator", "StaticTokenCredential",
           "running_keyvault", "write_tls_files"]

DEFAULT_TOKEN = "ppml-emulator-token"
TEST_TENANT = "00000000-0000-0000-0000-00000000ppml"
API_VERSIONS = ("7.3", "7.4", "7.5", "7.6", "2025-07-01", "2026-04-01")
_NAME = re.compile(r"[0-9A-Za-z-]{1,127}")
_RSA_SIZES = (2048, 3072, 4096)
_OCT_SIZES = (128, 192, 256)
_KEY_OPS = frozenset({"encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey", "import", "export"})
_RSA_OAEP = {"RSA-OAEP": hashes.SHA1, "RSA-OAEP-256": hashes.SHA256}
_AES_KW = {"A128KW": 16, "A192KW": 24, "A256KW": 32}
_LEEWAY_SECONDS = 60


class StaticTokenCredential:
    """An azure-core ``TokenCredential`` that always returns one token: for the emulator only.

    Real vaults need an Entra ID token (``DefaultAzureCredential``); the emulator accepts this one. ``scopes``
    records what the SDK asked for, so a test can check it followed the vault's challenge.
    """

    def __init__(self, token: str = DEFAULT_TOKEN) -> None:
        self.token = token
        self.scopes: list[str] = []

    def get_token(self, *scopes: str, claims: str | None = None, tenant_id: str | None = None,
                  enable_cae: bool = False, **kwargs: Any) -> AccessToken:
        self.scopes.extend(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)


class FakeAttestationAuthority:
    """An MAA stand-in: an issuer URL and an RSA key that signs (RS256) whatever claims a test gives it.

    Its tokens prove nothing about any TEE; they exist so Secure Key Release can be exercised end to end.
    """

    def __init__(self, issuer: str = "https://ppmltest.eus.attest.azure.net") -> None:
        self.issuer = issuer
        self.kid = f"ppml-test-{secrets.token_hex(6)}"
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    @property
    def jwks(self) -> dict[str, Any]:
        """The JWKS a verifier (or the emulator) must trust to accept this authority's tokens."""
        jwk = azure_skr.runtime_key_jwk(self._key.public_key(), kid=self.kid)
        return {"keys": [{"kid": self.kid, "kty": "RSA", "use": "sig", "alg": "RS256", "n": jwk["n"],
                          "e": jwk["e"]}]}

    def token(self, claims: Mapping[str, Any], *, runtime_key: rsa.RSAPublicKey | None = None,
              lifetime_seconds: int = 600, now: float | None = None) -> str:
        """An MAA-shaped JWT: ``iss``/``iat``/``nbf``/``exp``, ``claims``, and ``x-ms-runtime.keys`` if given."""
        issued = int(time.time() if now is None else now)
        payload: dict[str, Any] = {"iss": self.issuer, "iat": issued, "nbf": issued,
                                   "exp": issued + lifetime_seconds, "x-ms-ver": "1.0", **claims}
        if runtime_key is not None:
            payload["x-ms-runtime"] = {"keys": [azure_skr.runtime_key_jwk(runtime_key)]}
        return sign_jws({"alg": "RS256", "typ": "JWT", "kid": self.kid}, payload, self._key)


def sign_jws(header: Mapping[str, Any], payload: Mapping[str, Any], key: rsa.RSAPrivateKey) -> str:
    """A compact RS256 JWS of ``payload``."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    signature = key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url(signature)}"


# -- state -----------------------------------------------------------------------------------------------------


class _Refusal(Exception):
    """A Key Vault error answer: HTTP status, error code and message (and an inner code, like Key Vault's)."""

    def __init__(self, status: int, code: str, message: str, inner: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.inner = status, code, message, inner

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.inner:
            error["innererror"] = {"code": self.inner}
        return {"error": error}


def _bad(message: str) -> _Refusal:
    return _Refusal(400, "BadParameter", message)


@dataclass
class _KeyVersion:
    version: str
    kty: str
    material: rsa.RSAPrivateKey | bytes
    key_ops: list[str]
    enabled: bool = True
    exportable: bool = False
    release_policy: dict[str, Any] | None = None  # {"contentType", "data" (bytes), "immutable"}
    tags: dict[str, str] = field(default_factory=dict)
    created: int = field(default_factory=lambda: int(time.time()))
    updated: int = field(default_factory=lambda: int(time.time()))


@dataclass
class _SecretVersion:
    version: str
    value: str
    content_type: str | None
    tags: dict[str, str]
    enabled: bool = True
    created: int = field(default_factory=lambda: int(time.time()))


def _now() -> int:
    return int(time.time())


def _body(raw: bytes) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise _bad("The request body is not valid JSON.") from None
    if not isinstance(value, dict):
        raise _bad("The request body must be a JSON object.")
    return value


class KeyVaultEmulator:
    """The emulator's state and its ASGI app; serve it with :func:`running_keyvault`.

    ``managed_hsm`` switches to Managed HSM behaviour (HSM key types only, ``oct-HSM`` allowed, the
    ``managedhsm.azure.net`` challenge). ``authorities`` maps MAA issuers to the keys their tokens are signed with.
    """

    def __init__(self, *, token: str | None = DEFAULT_TOKEN, managed_hsm: bool = False,
                 authorities: Mapping[str, JwksSource] | None = None) -> None:
        self.token = token
        self.managed_hsm = managed_hsm
        self._authorities: dict[str, JwksSource] = {}
        for issuer, source in (authorities or {}).items():
            self.trust_authority(issuer, source)
        self._lock = threading.RLock()
        self._keys: dict[str, list[_KeyVersion]] = {}
        self._secrets: dict[str, list[_SecretVersion]] = {}
        self._signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._signing_cert = _self_signed(self._signing_key, "ppml Key Vault emulator release signing")
        self.requests: list[tuple[str, str]] = []  # (method, path), for tests that check what the SDK sent

    def trust_authority(self, issuer: str, keys: JwksSource | Mapping[str, Any]) -> None:
        """Accept release tokens from ``issuer`` signed with ``keys`` (a JWKS document or a ppml JwksSource)."""
        source = StaticJwks(keys) if isinstance(keys, Mapping) else keys
        self._authorities[issuer.rstrip("/").lower()] = source

    def reset(self) -> None:
        """Forget every key, secret and recorded request (a fresh vault for the next test)."""
        with self._lock:
            self._keys.clear()
            self._secrets.clear()
            self.requests.clear()

    # -- ASGI ---------------------------------------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:  # noqa: ANN401 - ASGI
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        raw = await request.body()
        status, payload, headers = await run_in_threadpool(self.handle, request.method, request.url,
                                                           request.headers, raw)
        await JSONResponse(payload, status_code=status, headers=headers)(scope, receive, send)

    def handle(self, method: str, url: URL, headers: Headers, raw: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
        """One request: authentication, api-version, then the operation; every failure in Key Vault's error shape."""
        with self._lock:
            self.requests.append((method, url.path))
        try:
            self._authenticate(headers.get("authorization", ""))
            api_version = QueryParams(url.query).get("api-version", "")
            if api_version not in API_VERSIONS:
                raise _bad(f"The specified version ({api_version}) is not recognized. Consider using the latest "
                           f"supported version ({API_VERSIONS[-1]}).")
            base = f"{url.scheme}://{url.netloc}"
            with self._lock:
                return 200, self._route(method, url.path, base, api_version, _body(raw)), {}
        except _Refusal as refusal:
            extra = {"WWW-Authenticate": self._challenge()} if refusal.status == 401 else {}
            return refusal.status, refusal.body(), extra
        except Exception as error:  # noqa: BLE001 - an emulator bug still answers in Key Vault's shape
            return 500, _Refusal(500, "InternalError", f"{type(error).__name__}: {error}").body(), {}

    def _challenge(self) -> str:
        resource = "https://managedhsm.azure.net" if self.managed_hsm else "https://vault.azure.net"
        return f'Bearer authorization="https://login.microsoftonline.com/{TEST_TENANT}", resource="{resource}"'

    def _authenticate(self, authorization: str) -> None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _Refusal(401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.")
        if self.token is not None and not secrets.compare_digest(token.strip(), self.token):
            raise _Refusal(401, "Unauthorized", "AKV10032: Invalid token: this emulator accepts only its own "
                                                "test token.")

    def _route(self, method: str, path: str, base: str, api_version: str, body: dict[str, Any]) -> dict[str, Any]:
        parts = path.split("/")[1:]
        kind, rest = (parts[0], parts[1:]) if parts else ("", [])
        if kind == "keys":
            if not rest and method == "GET":
                return self._list_keys(base)
            name = _check_name(rest[0], "key") if rest else ""
            tail = rest[1:]
            if tail == ["create"] and method == "POST":
                return self._create_key(base, name, body)
            if tail == ["versions"] and method == "GET":
                return self._list_versions(base, name)
            if len(tail) <= 1 and method in ("GET", "PATCH"):
                version = self._key_version(name, tail[0] if tail else "")
                if method == "PATCH":
                    self._update_key(version, body)
                return self._bundle(base, name, version)
            if len(tail) == 2 and method == "POST" and tail[1] in ("wrapkey", "unwrapkey", "release"):
                version = self._key_version(name, tail[0])
                if tail[1] == "release":
                    return self._release(base, name, version, api_version, body)
                return self._key_operation(base, name, version, tail[1], body)
        if kind == "secrets" and rest:
            name = _check_name(rest[0], "secret")
            if len(rest) == 1 and method == "PUT":
                return self._set_secret(base, name, body)
            if len(rest) <= 2 and method == "GET":
                return self._secret_bundle(base, name, self._secret_version(name, rest[1] if len(rest) > 1 else ""))
        raise _bad(f"The emulator does not implement {method} {path}.")

    # -- keys -----------------------------------------------------------------------------------------------------

    def _key_version(self, name: str, version: str) -> _KeyVersion:
        versions = self._keys.get(name)
        if not versions:
            raise _Refusal(404, "KeyNotFound", f"A key with (name/id) {name} was not found in this key vault.")
        if not version:
            return versions[-1]
        for candidate in versions:
            if candidate.version == version:
                return candidate
        raise _Refusal(404, "KeyNotFound", f"A key with (name/id) {name}/{version} was not found in this key vault.")

    def _create_key(self, base: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        kty = body.get("kty")
        allowed = ("RSA-HSM", "oct-HSM") if self.managed_hsm else ("RSA", "RSA-HSM")
        if kty not in allowed:
            where = "a Managed HSM" if self.managed_hsm else "a vault (use a Managed HSM for oct-HSM)"
            raise _bad(f"Key type {kty!r} is not supported by {where}; supported: {', '.join(allowed)}.")
        is_oct = kty.startswith("oct")
        sizes = _OCT_SIZES if is_oct else _RSA_SIZES
        size = body.get("key_size") or sizes[-1 if is_oct else 0]
        if size not in sizes:
            raise _bad(f"Key size {size} is not supported for {kty}; supported: {', '.join(map(str, sizes))}.")
        attributes = body.get("attributes") or {}
        key_ops = body.get("key_ops") or (["encrypt", "decrypt", "wrapKey", "unwrapKey"] if is_oct else
                                          ["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"])
        if not isinstance(key_ops, list) or not set(key_ops) <= _KEY_OPS:
            raise _bad(f"Invalid key_ops {key_ops!r}.")
        previous = self._keys.get(name, [])
        policy = self._release_policy(body.get("release_policy")) or (previous[-1].release_policy if previous else None)
        requested = attributes.get("exportable")
        exportable = bool(requested) if requested is not None else bool(previous and previous[-1].exportable)
        if exportable and not kty.endswith("-HSM"):
            raise _bad("Only HSM-protected keys (RSA-HSM, oct-HSM) can be exportable.")
        if exportable and policy is None:
            raise _bad("Release policy must be provided when creating the first version of an exportable key.")
        material = os.urandom(size // 8) if is_oct else rsa.generate_private_key(public_exponent=65537,
                                                                                    key_size=size)
        version = _KeyVersion(version=uuid.uuid4().hex, kty=kty, material=material, key_ops=list(key_ops),
                              enabled=attributes.get("enabled", True) is not False, exportable=exportable,
                              release_policy=policy, tags=dict(body.get("tags") or {}))
        self._keys.setdefault(name, []).append(version)
        return self._bundle(base, name, version)

    def _release_policy(self, value: object) -> dict[str, Any] | None:
        if value is None:
            return None
        if not isinstance(value, dict) or not isinstance(value.get("data"), str):
            raise _bad("release_policy must be an object with base64url 'data'.")
        try:
            data = unb64url(value["data"])
            azure_skr.validate_release_policy(data, strict=False)
        except ValueError as error:  # ConfigError is not a ValueError; bad base64url is
            raise _bad(f"release_policy data is not base64url: {error}") from None
        except ConfigError as error:
            raise _bad(f"Invalid release policy: {error}") from None
        return {"contentType": value.get("contentType") or azure_skr.CONTENT_TYPE, "data": data,
                "immutable": bool(value.get("immutable", False))}

    def _update_key(self, version: _KeyVersion, body: dict[str, Any]) -> None:
        attributes = body.get("attributes") or {}
        if "enabled" in attributes and attributes["enabled"] is not None:
            version.enabled = bool(attributes["enabled"])
        if body.get("tags") is not None:
            version.tags = dict(body["tags"])
        if body.get("key_ops") is not None:
            version.key_ops = list(body["key_ops"])
        if body.get("release_policy") is not None:
            if version.release_policy and version.release_policy["immutable"]:
                raise _Refusal(403, "Forbidden", "The release policy of this key is immutable.")
            version.release_policy = self._release_policy(body["release_policy"])
        version.updated = _now()

    def _attributes(self, version: _KeyVersion) -> dict[str, Any]:
        return {"enabled": version.enabled, "created": version.created, "updated": version.updated,
                "recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90, "exportable": version.exportable}

    def _public_jwk(self, base: str, name: str, version: _KeyVersion) -> dict[str, Any]:
        jwk: dict[str, Any] = {"kid": f"{base}/keys/{name}/{version.version}", "kty": version.kty,
                               "key_ops": version.key_ops}
        if isinstance(version.material, rsa.RSAPrivateKey):
            public = azure_skr.runtime_key_jwk(version.material.public_key())
            jwk.update(n=public["n"], e=public["e"])
        return jwk

    def _bundle(self, base: str, name: str, version: _KeyVersion) -> dict[str, Any]:
        bundle: dict[str, Any] = {"key": self._public_jwk(base, name, version), "attributes": self._attributes(version),
                                  "tags": version.tags}
        if version.release_policy is not None:
            policy = version.release_policy
            bundle["release_policy"] = {"contentType": policy["contentType"], "data": b64url(policy["data"]),
                                        "immutable": policy["immutable"]}
        return bundle

    def _list_keys(self, base: str) -> dict[str, Any]:
        items = [{"kid": f"{base}/keys/{name}", "attributes": self._attributes(versions[-1]),
                  "tags": versions[-1].tags} for name, versions in sorted(self._keys.items())]
        return {"value": items, "nextLink": None}

    def _list_versions(self, base: str, name: str) -> dict[str, Any]:
        self._key_version(name, "")
        items = [{"kid": f"{base}/keys/{name}/{v.version}", "attributes": self._attributes(v), "tags": v.tags}
                 for v in self._keys[name]]
        return {"value": items, "nextLink": None}

    def _usable(self, version: _KeyVersion, operation: str) -> None:
        if not version.enabled:
            raise _Refusal(403, "Forbidden", f"Operation {operation} is not allowed on a disabled key.", "KeyDisabled")
        if operation in ("wrapKey", "unwrapKey") and operation not in version.key_ops:
            raise _Refusal(403, "Forbidden", f"Operation {operation} is not permitted on this key.")

    def _key_operation(self, base: str, name: str, version: _KeyVersion, operation: str,
                       body: dict[str, Any]) -> dict[str, Any]:
        wrap = operation == "wrapkey"
        self._usable(version, "wrapKey" if wrap else "unwrapKey")
        alg = body.get("alg")
        try:
            value = unb64url(body.get("value"))
        except ValueError:
            raise _bad("The 'value' parameter is not base64url.") from None
        material = version.material
        if isinstance(material, rsa.RSAPrivateKey) and alg in _RSA_OAEP:
            digest = _RSA_OAEP[alg]
            oaep = padding.OAEP(mgf=padding.MGF1(digest()), algorithm=digest(), label=None)
            try:
                result = material.public_key().encrypt(value, oaep) if wrap else material.decrypt(value, oaep)
            except ValueError:
                raise _bad(f"{'Wrapping' if wrap else 'Unwrapping'} with {alg} failed.") from None
        elif isinstance(material, bytes) and _AES_KW.get(str(alg)) == len(material):
            try:
                result = aes_key_wrap(material, value) if wrap else aes_key_unwrap(material, value)
            except (ValueError, InvalidUnwrap):
                raise _bad(f"{'Wrapping' if wrap else 'Unwrapping'} with {alg} failed.") from None
        else:
            raise _bad(f"Algorithm {alg!r} is not supported for a {version.kty} key of this size by the emulator.")
        return {"kid": f"{base}/keys/{name}/{version.version}", "value": b64url(result)}

    # -- secure key release -------------------------------------------------------------------------------------

    def _release(self, base: str, name: str, version: _KeyVersion, api_version: str,
                 body: dict[str, Any]) -> dict[str, Any]:
        if not version.exportable or version.release_policy is None:
            raise _bad(f"Key {name} is not exportable: it has no release policy.")
        self._usable(version, "release")
        target = body.get("target")
        if not isinstance(target, str) or not target:
            raise _bad("The 'target' parameter (the attestation token) is required.")
        enc = body.get("enc") or "CKM_RSA_AES_KEY_WRAP"
        if enc not in azure_skr.RELEASE_ALGORITHMS:
            raise _bad(f"Key release algorithm {enc!r} is not supported.")
        issuer, claims = self._verified_claims(target)
        try:
            azure_skr.evaluate_release_policy(json.loads(version.release_policy["data"]), claims, issuer=issuer)
        except PolicyDenied as denied:
            raise _Refusal(403, "Forbidden", f"Key release denied: {denied}", "PolicyDenied") from None
        runtime = _runtime_key(claims)
        material = version.material
        secret = (material if isinstance(material, bytes) else material.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        blob = azure_skr.rsa_aes_key_wrap(runtime, secret, algorithm=enc)
        envelope = {"schema_version": "1.0", "header": {"kid": "TpmEphemeralEncryptionKey", "alg": "dir", "enc": enc},
                    "ciphertext": b64url(blob)}
        released = self._bundle(base, name, version)
        released["key"]["key_hsm"] = b64url(json.dumps(envelope).encode("utf-8"))
        kid = f"{base}/keys/{name}/{version.version}"
        payload = {"request": {"api-version": api_version, "enc": enc, "kid": kid, "nonce": body.get("nonce")},
                   "response": {"key": released}}
        certificate = self._signing_cert.public_bytes(serialization.Encoding.DER)
        header = {"alg": "RS256", "kid": hashlib.sha256(certificate).hexdigest(),
                  "x5t#S256": b64url(hashlib.sha256(certificate).digest()),
                  "x5c": [base64.b64encode(certificate).decode("ascii")]}
        return {"value": sign_jws(header, payload, self._signing_key)}

    def _verified_claims(self, token: str) -> tuple[str, dict[str, Any]]:
        """Check the token like Key Vault does: signature by a trusted authority, then its lifetime."""
        try:
            jws = _jws.parse_compact(token)
            alg, kid = _jws.check_header(jws.header, {"RS256"})
            issuer = jws.payload.get("iss")
            source = self._authorities.get(str(issuer).rstrip("/").lower())
            if not isinstance(issuer, str) or source is None:
                raise _Refusal(403, "Forbidden", f"The attestation token's issuer {issuer!r} is not an attestation "
                                                 "authority this emulator trusts.", "InvalidAttestationToken")
            _jws.verify_signature(jws, alg, source.lookup(kid), datetime.now(timezone.utc))
        except (EvidenceInvalid, CollateralError) as error:
            raise _Refusal(403, "Forbidden", f"The attestation token does not verify: {error}",
                           "InvalidAttestationToken") from None
        now = time.time()
        exp, nbf = jws.payload.get("exp"), jws.payload.get("nbf", 0)
        if not isinstance(exp, int | float) or now > exp + _LEEWAY_SECONDS or (
                isinstance(nbf, int | float) and now < nbf - _LEEWAY_SECONDS):
            raise _Refusal(403, "Forbidden", "The attestation token is expired or not yet valid.",
                           "InvalidAttestationToken")
        return issuer, dict(jws.payload)

    # -- secrets --------------------------------------------------------------------------------------------------

    def _secret_version(self, name: str, version: str) -> _SecretVersion:
        versions = self._secrets.get(name)
        found = (versions[-1] if versions and not version
                 else next((v for v in versions or [] if v.version == version), None))
        if found is None:
            raise _Refusal(404, "SecretNotFound", f"A secret with (name/id) {name} was not found in this key vault.")
        if not found.enabled:
            raise _Refusal(403, "Forbidden", "Operation get is not allowed on a disabled secret.", "SecretDisabled")
        return found

    def _set_secret(self, base: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        value = body.get("value")
        if not isinstance(value, str):
            raise _bad("The 'value' parameter is required and must be a string.")
        version = _SecretVersion(version=uuid.uuid4().hex, value=value, content_type=body.get("contentType"),
                                 tags=dict(body.get("tags") or {}))
        self._secrets.setdefault(name, []).append(version)
        return self._secret_bundle(base, name, version)

    def _secret_bundle(self, base: str, name: str, version: _SecretVersion) -> dict[str, Any]:
        bundle: dict[str, Any] = {"value": version.value, "id": f"{base}/secrets/{name}/{version.version}",
                                  "attributes": {"enabled": version.enabled, "created": version.created,
                                                 "updated": version.created,
                                                 "recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90},
                                  "tags": version.tags}
        if version.content_type:
            bundle["contentType"] = version.content_type
        return bundle


def _check_name(name: str, kind: str) -> str:
    if not _NAME.fullmatch(name):
        raise _bad(f"The {kind} name {name!r} is invalid: use 1-127 letters, digits and dashes.")
    return name


def _runtime_key(claims: Mapping[str, Any]) -> rsa.RSAPublicKey:
    """The first RSA key in ``x-ms-runtime.keys`` usable for encryption: where the released key is wrapped to."""
    runtime = claims.get("x-ms-runtime")
    keys = runtime.get("keys") if isinstance(runtime, Mapping) else None
    for jwk in keys if isinstance(keys, list) else []:
        if not isinstance(jwk, Mapping) or jwk.get("kty") != "RSA":
            continue
        if "key_ops" in jwk and "encrypt" not in (jwk.get("key_ops") or []):
            continue
        try:
            numbers = rsa.RSAPublicNumbers(int.from_bytes(unb64url(jwk.get("e")), "big"),
                                           int.from_bytes(unb64url(jwk.get("n")), "big"))
            return numbers.public_key()
        except ValueError:
            continue
    raise _bad("The attestation token carries no RSA encryption key in x-ms-runtime.keys to release the key to.")


# -- TLS and the server --------------------------------------------------------------------------------------------


def _self_signed(key: rsa.RSAPrivateKey, common_name: str) -> x509.Certificate:
    now = datetime.now(timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=2)).sign(key, hashes.SHA256()))


def write_tls_files(tls_dir: str | os.PathLike[str], hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
                    ) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for ``hosts``; returns ``(ca.pem, server.pem, server-key.pem)``."""
    return issue_server_certificate(tls_dir, hosts, ca_name="ppml Key Vault emulator CA", lifetime=timedelta(days=2))


@contextmanager
def running_keyvault(*, tls_dir: str | os.PathLike[str], emulator: KeyVaultEmulator | None = None,
                     host: str = "127.0.0.1") -> Iterator[tuple[str, str]]:
    """Serve ``emulator`` (a fresh one by default) over TLS on a free loopback port; yield ``(vault_url, ca_file)``.

    The CA is created in ``tls_dir`` for this run; pass ``ca_file`` to the clients (``connection_verify``).
    """
    ca_file, certificate, private_key = write_tls_files(tls_dir, (host, "localhost"))
    app = emulator if emulator is not None else KeyVaultEmulator()
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                           timeout_graceful_shutdown=0.5, ssl_certfile=str(certificate),
                                           ssl_keyfile=str(private_key)))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, name="ppml-keyvault", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError("the Key Vault emulator did not start")
            time.sleep(0.01)
        netloc = f"[{host}]" if ":" in host else host
        yield f"https://{netloc}:{port}", str(ca_file)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()
