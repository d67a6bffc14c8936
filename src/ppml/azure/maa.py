"""Microsoft Azure Attestation (MAA) REST client: send evidence, get MAA's signed JWT back, verify that JWT.

MAA appraises the evidence itself (quote or report signature, collateral, its own TCB baseline, the instance's
attestation policy) and answers with a JWT; :meth:`MaaClient.verify` checks that JWT against the instance's signing
keys. No MAA emulator exists: the request shapes below come from the published REST API reference and from Azure's
CVM guest attestation library, and tests check them against a loopback server that answers with recorded tokens.

Requests (b64url is base64url without padding)::

    POST {endpoint}/attest/SgxEnclave?api-version=2022-08-01    {"quote": b64url(SGX quote), ...common}
    POST {endpoint}/attest/OpenEnclave?api-version=2022-08-01   {"report": b64url(Open Enclave report), ...common}
    POST {endpoint}/attest/SevSnpVm?api-version=2022-08-01      {"report": b64url(JSON {"SnpReport": b64url(report),
                                                                  "VcekCertChain": b64url(PEM chain)}), ...common}
    POST {endpoint}/attest/AzureGuest?api-version=2020-10-01    {"AttestationInfo": ...}   (ppml.azure.guest)

    common: "runtimeData": {"data": b64url(bytes), "dataType": "Binary" | "JSON"}; optional "initTimeData" (same
            shape), "draftPolicyForAttestation" (policy text; MAA then returns an unsigned token), "nonce" (echoed)

    200 {"token": "<JWT>"}     4xx {"error": {"code": ..., "message": ...}}: rejected     5xx, network: unreachable

MAA checks that the first 32 bytes of the hardware REPORTDATA are SHA-256 of the runtime data
(:func:`expected_report_data`), so runtime data is how a workload binds a key or nonce to its evidence. Runtime data
sent as ``JSON`` (:class:`RuntimeJson`) also appears parsed in the token's ``x-ms-runtime`` claim, which is where Key
Vault Secure Key Release finds the key to wrap released keys to (:mod:`ppml.azure.runtime_key`).

TLS is always verified (system roots, or ``ca_file``); an ``http`` client passed in must verify too.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from ppml._b64 import b64url
from ppml._json import strict_loads
from ppml._tls import tls_context
from ppml.attestation.tokens import JwksSource, JwksUrl, VerifiedToken, maa_jwks_url, verify_maa_token
from ppml.azure import guest
from ppml.errors import AttestationError, ConfigError, EvidenceInvalid

__all__ = [
    "API_VERSION",
    "AZURE_GUEST_API_VERSION",
    "MaaClient",
    "RuntimeJson",
    "check_runtime_data",
    "expected_report_data",
]

log = logging.getLogger(__name__)

API_VERSION = "2022-08-01"
AZURE_GUEST_API_VERSION = "2020-10-01"  # the version Azure's guest attestation library sends
TIMEOUT_SECONDS = 30.0
MAX_RESPONSE_BYTES = 1 << 20  # real replies are a few KiB; bound what a misbehaving server can make us parse
_JWT = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class RuntimeJson:
    """Runtime (or init-time) data MAA should read as JSON: it hashes these exact bytes and copies the parsed object
    into the token (``x-ms-runtime``). Plain ``bytes`` are sent as ``Binary`` and only hashed.

    Trailing NUL bytes (enclave SDKs pad report data buffers with them) are allowed; MAA hashes them too.

    Raises:
        ValueError: ``data`` is not a JSON object (duplicate keys count as invalid).
    """

    data: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.data, bytes):
            raise ValueError(f"RuntimeJson needs bytes, not {type(self.data).__name__}")
        try:
            value = strict_loads(self.data.rstrip(b"\0"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"runtime data is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ValueError("runtime data JSON must be an object")


def expected_report_data(runtime_data: bytes) -> bytes:
    """The 64-byte REPORTDATA MAA accepts with ``runtime_data``: ``SHA-256(runtime_data) || 32 zero bytes``."""
    return hashlib.sha256(runtime_data).digest() + bytes(32)


def check_runtime_data(token: VerifiedToken, runtime_data: bytes) -> None:
    """Check that a verified token's report data is :func:`expected_report_data` of ``runtime_data``.

    This is what ties a token to the key or nonce the workload put in its runtime data.

    Raises:
        EvidenceInvalid: the report data differs (``reason="report_data"``), or the token has none (pre-2021 tokens).
    """
    if not hmac.compare_digest(token.claims.report_data, expected_report_data(runtime_data)):
        raise EvidenceInvalid(f"the {token.issuer} token's report data is not SHA-256 of the given runtime data",
                              reason="report_data")


class MaaClient:
    """Talks to one MAA instance: ``attest_*`` return MAA's JWT (unverified), :meth:`verify` checks it.

    Args:
        endpoint: the attestation provider's URL, e.g. ``https://myprovider.eus.attest.azure.net``.
        ca_file: a CA bundle to trust instead of the system roots (for attestation requests and the JWKS).
        timeout: seconds per request.
        http: an ``httpx.Client`` to reuse for attestation requests; it must verify TLS.
        issuer: the ``iss`` MAA puts in its tokens; defaults to ``endpoint``. Set it only when MAA is reached
            through another URL (a private endpoint, a proxy, tests).

    Raises:
        ConfigError: the endpoint or issuer is not ``https://``, or ``ca_file`` cannot be loaded.
    """

    def __init__(self, endpoint: str, *, ca_file: str | os.PathLike[str] | None = None,
                 timeout: float = TIMEOUT_SECONDS, http: httpx.Client | None = None, issuer: str | None = None) -> None:
        if not isinstance(endpoint, str) or not endpoint.startswith("https://"):
            raise ConfigError(f"MAA endpoint must be an https:// URL, got {endpoint!r}")
        if timeout <= 0:
            raise ConfigError(f"MAA endpoint {endpoint}: timeout must be > 0 seconds")
        self.endpoint = endpoint.rstrip("/")
        self.issuer = self.endpoint if issuer is None else issuer
        maa_jwks_url(self.issuer)  # validates the issuer's form now rather than at the first verify
        self._ca_file = ca_file
        self._tls = tls_context(ca_file, what=f"MAA at {self.endpoint}")
        self._timeout = timeout
        self._http = http
        self._keys: JwksSource | None = None

    # -- attestation flows -----------------------------------------------------------------------------------------

    def attest_sgx(self, quote: bytes, *, runtime_data: bytes | RuntimeJson, init_time_data: bytes | RuntimeJson |
                   None = None, draft_policy: str | None = None, nonce: str | None = None) -> str:
        """Attest an SGX DCAP quote whose REPORTDATA is :func:`expected_report_data` of ``runtime_data``."""
        body = {"quote": b64url(_nonempty(quote, "SGX quote")),
                **_common(runtime_data, init_time_data, draft_policy, nonce)}
        return self._attest("SgxEnclave", API_VERSION, body)

    def attest_open_enclave(self, report: bytes, *, runtime_data: bytes | RuntimeJson | None = None,
                            init_time_data: bytes | RuntimeJson | None = None, draft_policy: str | None = None,
                            nonce: str | None = None) -> str:
        """Attest an Open Enclave remote report (``oe_get_report``: a 16-byte header, then the SGX quote)."""
        body = {"report": b64url(_nonempty(report, "Open Enclave report")),
                **_common(runtime_data, init_time_data, draft_policy, nonce)}
        return self._attest("OpenEnclave", API_VERSION, body)

    def attest_sev_snp_vm(self, report: bytes | Mapping[str, str], *, runtime_data: bytes | RuntimeJson,
                          vcek_chain: bytes | None = None, init_time_data: bytes | RuntimeJson | None = None,
                          draft_policy: str | None = None, nonce: str | None = None) -> str:
        """Attest an SEV-SNP report: raw report bytes plus ``vcek_chain`` (VCEK, ASK, ARK as PEM), or a ready MAA
        report document (``{"SnpReport", "VcekCertChain", "Endorsements"?}``, e.g. from the ACI sidecar)."""
        body = {"report": snp_report_document(report, vcek_chain),
                **_common(runtime_data, init_time_data, draft_policy, nonce)}
        return self._attest("SevSnpVm", API_VERSION, body)

    def attest_azure_guest(self, hcl_report: bytes, tpm: guest.TpmInfo, *, os_info: guest.OsInfo,
                           decrypt_inner_key: Callable[[bytes], bytes], tcg_logs: bytes = b"",
                           vcek_chain: bytes | None = None, td_quote: bytes | None = None,
                           client_payload: Mapping[str, str] | None = None, quote_nonce: bytes | None = None) -> str:
        """Attest an Azure confidential VM through its vTPM (the guest attestation library's request).

        The request is assembled and checked offline by :func:`ppml.azure.guest.azure_guest_request` (HCL report
        binding, TPM quote signed by the HCL's attestation key, PCR digest). MAA answers with the JWT encrypted to
        the vTPM's ephemeral key: ``decrypt_inner_key`` must decrypt the inner AES key with that TPM key
        (``TPM2_RSA_Decrypt``); the JWT is then opened here.
        """
        body = guest.azure_guest_request(hcl_report, tpm, os_info=os_info, tcg_logs=tcg_logs, vcek_chain=vcek_chain,
                                         td_quote=td_quote, client_payload=client_payload,
                                         quote_nonce=quote_nonce)
        url = f"{self.endpoint}/attest/AzureGuest"
        envelope = guest.parse_azure_guest_response(self._post(url, AZURE_GUEST_API_VERSION, body), url)
        try:
            inner_key = decrypt_inner_key(envelope.encrypted_inner_key)
        except Exception as exc:  # noqa: BLE001 - any failure of the caller's TPM code is reported the same way
            raise AttestationError(f"decrypting the AzureGuest reply from {url} with the vTPM key failed: {exc}",
                                   reason="maa_malformed") from exc
        return _checked_jwt(envelope.decrypt(inner_key, url), url)

    # -- verification ------------------------------------------------------------------------------------------------

    def verify(self, token: str, *, now: datetime, keys: JwksSource | None = None) -> VerifiedToken:
        """Verify a token from this instance at ``now``: signature by a key of ``keys`` (default: the JWKS at
        ``{endpoint}/certs`` over verified TLS), ``iss`` equal to :attr:`issuer`, lifetime.

        Raises:
            EvidenceInvalid: the token does not verify.
            CollateralError: the JWKS cannot be fetched or parsed.
        """
        if keys is None:
            if self._keys is None:
                self._keys = JwksUrl(f"{self.endpoint}/certs", verify=self._ca_file or True)
            keys = self._keys
        return verify_maa_token(token, issuer=self.issuer, keys=keys, now=now)

    # -- transport ---------------------------------------------------------------------------------------------------

    def _attest(self, kind: str, api_version: str, body: Mapping[str, Any]) -> str:
        url = f"{self.endpoint}/attest/{kind}"
        token = _checked_jwt(_token_field(self._post(url, api_version, body)), url)
        log.debug("MAA at %s issued a %d-byte %s token", self.endpoint, len(token), kind)
        return token

    def _post(self, url: str, api_version: str, body: Mapping[str, Any]) -> Any:  # noqa: ANN401 - parsed JSON
        """POST ``body``; return the parsed 200 reply or raise the one error that says why not."""
        params = {"api-version": api_version}
        headers = {"Accept": "application/json"}
        try:
            if self._http is not None:
                response = self._http.post(url, params=params, json=body, headers=headers)
            else:
                with httpx.Client(verify=self._tls, timeout=self._timeout, follow_redirects=False) as client:
                    response = client.post(url, params=params, json=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise AttestationError(f"MAA request to {url} failed: no answer within {self._timeout:g} s ({exc})",
                                   reason="maa_unreachable") from exc
        except httpx.HTTPError as exc:
            raise AttestationError(f"MAA request to {url} failed: {exc}", reason="maa_unreachable") from exc
        status = response.status_code
        if status >= 500:
            raise AttestationError(f"MAA at {url} is unavailable: HTTP {status} {_error_message(response)}",
                                   reason="maa_unreachable")
        if status != 200:
            raise AttestationError(f"MAA rejected the evidence at {url}: HTTP {status} {_error_message(response)}",
                                   reason="maa_rejected")
        if len(response.content) > MAX_RESPONSE_BYTES:
            raise AttestationError(f"MAA reply from {url} is larger than {MAX_RESPONSE_BYTES} bytes",
                                   reason="maa_malformed")
        try:
            return strict_loads(response.content)
        except (ValueError, UnicodeDecodeError):
            raise AttestationError(f"MAA reply from {url} is not JSON", reason="maa_malformed") from None


def snp_report_document(report: bytes | Mapping[str, str], vcek_chain: bytes | None) -> str:
    """The ``report`` field of an ``attest/SevSnpVm`` request: b64url of the JSON bundle of report and chain."""
    if isinstance(report, Mapping):
        if vcek_chain is not None:
            raise ValueError("give vcek_chain only with raw SEV-SNP report bytes, not with a report document")
        if not isinstance(report.get("SnpReport"), str) or not isinstance(report.get("VcekCertChain"), str):
            raise ValueError("an SEV-SNP report document needs string fields SnpReport and VcekCertChain")
        document = dict(report)
    else:
        if not vcek_chain:
            raise AttestationError("the SEV-SNP evidence carries no VCEK certificate chain, and MAA needs it",
                                   reason="missing_certificates")
        document = {"SnpReport": b64url(_nonempty(report, "SEV-SNP report")), "VcekCertChain": b64url(vcek_chain)}
    return b64url(json.dumps(document, separators=(",", ":")).encode("ascii"))


def _nonempty(data: bytes, what: str) -> bytes:
    if not isinstance(data, bytes) or not data:
        raise ValueError(f"the {what} must be non-empty bytes")
    return data


def _data_field(data: bytes | RuntimeJson) -> dict[str, str]:
    if isinstance(data, RuntimeJson):
        return {"data": b64url(data.data), "dataType": "JSON"}
    if not isinstance(data, bytes):
        raise ValueError(f"runtime/init-time data must be bytes or RuntimeJson, not {type(data).__name__}")
    return {"data": b64url(data), "dataType": "Binary"}


def _common(runtime_data: bytes | RuntimeJson | None, init_time_data: bytes | RuntimeJson | None,
            draft_policy: str | None, nonce: str | None) -> dict[str, Any]:
    """The request fields every TEE kind shares; absent options are left out rather than sent empty."""
    fields: dict[str, Any] = {}
    if runtime_data is not None:
        fields["runtimeData"] = _data_field(runtime_data)
    if init_time_data is not None:
        fields["initTimeData"] = _data_field(init_time_data)
    if draft_policy is not None:
        fields["draftPolicyForAttestation"] = draft_policy
    if nonce is not None:
        fields["nonce"] = nonce
    return fields


def _token_field(reply: Any) -> Any:  # noqa: ANN401 - parsed JSON
    return reply.get("token") if isinstance(reply, dict) else None


def _checked_jwt(token: Any, url: str) -> str:  # noqa: ANN401 - parsed JSON
    if not isinstance(token, str) or not _JWT.match(token):
        raise AttestationError(f"MAA reply from {url} has no JWT 'token' field", reason="maa_malformed")
    return token


def _error_message(response: httpx.Response) -> str:
    """MAA's ``{"error": {"code", "message"}}`` as ``code: message``, else the start of the body."""
    try:
        error = response.json()["error"]
        return f"{error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return response.text[:200]
