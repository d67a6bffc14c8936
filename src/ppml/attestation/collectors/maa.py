"""Microsoft Azure Attestation (MAA): send an SGX quote or SEV-SNP report to MAA, get back its signed JWT.

The 64-byte ``report_data`` passed to :meth:`MaaAttester.collect` becomes MAA's *runtime data*. MAA checks
that the first 32 bytes of the hardware report's REPORTDATA are SHA-256 of the runtime data, so the inner
attester is asked for ``SHA-256(report_data) || 32 zero bytes``; the token then carries the runtime data,
and a verifier compares it with the ``report_data`` it expects.

Requests (MAA REST API, ``api-version=2022-08-01``; request shapes from the published API reference)::

    POST {endpoint}/attest/SgxEnclave?api-version=2022-08-01
    {"quote": b64url(quote), "runtimeData": {"data": b64url(report_data), "dataType": "Binary"}}

    POST {endpoint}/attest/SevSnpVm?api-version=2022-08-01
    {"report": b64url(JSON {"SnpReport": b64url(report), "VcekCertChain": b64url(PEM chain)}),
     "runtimeData": {"data": b64url(report_data), "dataType": "Binary"}}

    200 OK  {"token": "<JWT>"}            anything else: {"error": {"code": ..., "message": ...}}

b64url is base64url without padding. The optional ``nonce`` field is not sent: freshness is already bound
through the runtime data, which holds the broker's nonce. TLS verification is always on; an ``http_client``
passed in must verify too (for tests, trust a test CA; never disable verification).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
from typing import Any

import httpx

from ppml.attestation.collectors._common import check_report_data
from ppml.attestation.evidence import Attester, Evidence
from ppml.errors import AttestationError, ConfigError

__all__ = ["API_VERSION", "MaaAttester"]

log = logging.getLogger(__name__)

API_VERSION = "2022-08-01"
TIMEOUT_SECONDS = 30.0
_PATHS = {"sgx": "SgxEnclave", "snp": "SevSnpVm"}
_JWT = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")


class MaaAttester:
    """Wraps an SGX or SEV-SNP attester; ``collect`` returns MAA's token as ``Evidence(tee="maa")``.

    Args:
        endpoint: the attestation provider's URL, e.g. ``https://myprovider.eus.attest.azure.net``.
        inner: the attester that produces the hardware evidence (``tee`` ``sgx`` or ``snp``).
        http_client: an ``httpx.Client`` to reuse (it must verify TLS); by default one is made per request.

    Raises:
        ConfigError: the endpoint is not ``https://``, or ``inner`` is neither SGX nor SEV-SNP.
    """

    tee = "maa"

    def __init__(self, endpoint: str, inner: Attester, http_client: httpx.Client | None = None) -> None:
        if not endpoint.startswith("https://"):
            raise ConfigError(f"MAA endpoint must be an https:// URL, got {endpoint!r}")
        if inner.tee not in _PATHS:
            raise ConfigError(f"MAA attests SGX or SEV-SNP evidence, not {inner.tee!r}")
        self.endpoint = endpoint.rstrip("/")
        self.inner = inner
        self._client = http_client

    def collect(self, report_data: bytes) -> Evidence:
        """Collect inner evidence bound to ``report_data`` as MAA requires, and exchange it for an MAA token.

        Raises:
            ValueError: ``report_data`` is not 64 bytes.
            AttestationError: the inner attester failed, MAA rejected the evidence, or the reply is malformed.
        """
        check_report_data(report_data)
        inner = self.inner.collect(hashlib.sha256(report_data).digest() + bytes(32))
        if inner.tee not in _PATHS:
            raise AttestationError(f"inner attester returned {inner.tee!r} evidence, expected sgx or snp",
                                   reason="tee_type")
        url = f"{self.endpoint}/attest/{_PATHS[inner.tee]}"
        body = _request_body(inner, report_data)
        try:
            if self._client is not None:
                response = self._client.post(url, params={"api-version": API_VERSION}, json=body)
            else:
                with httpx.Client(timeout=TIMEOUT_SECONDS) as client:
                    response = client.post(url, params={"api-version": API_VERSION}, json=body)
        except httpx.HTTPError as exc:
            raise AttestationError(f"MAA request to {url} failed: {exc}", reason="maa_unreachable") from exc
        token = _token(response, url)
        log.debug("MAA at %s issued a %d-byte token for %s evidence", self.endpoint, len(token), inner.tee)
        return Evidence(tee=self.tee, quote=token.encode("ascii"))


def _request_body(inner: Evidence, runtime_data: bytes) -> dict[str, Any]:
    runtime = {"data": _b64url(runtime_data), "dataType": "Binary"}
    if inner.tee == "sgx":
        return {"quote": _b64url(inner.quote), "runtimeData": runtime}
    if not inner.certificates:
        raise AttestationError("the SEV-SNP evidence carries no VCEK certificate chain (configfs-tsm auxblob "
                               "was empty), and MAA needs it", reason="missing_certificates")
    report = {"SnpReport": _b64url(inner.quote), "VcekCertChain": _b64url(inner.certificates)}
    return {"report": _b64url(json.dumps(report).encode("ascii")), "runtimeData": runtime}


def _token(response: httpx.Response, url: str) -> str:
    if response.status_code != 200:
        raise AttestationError(f"MAA rejected the evidence at {url}: HTTP {response.status_code} "
                               f"{_error_message(response)}", reason="maa_rejected")
    try:
        token = response.json().get("token")
    except (ValueError, AttributeError):
        token = None
    if not isinstance(token, str) or not _JWT.match(token):
        raise AttestationError(f"MAA reply from {url} has no JWT 'token' field", reason="maa_malformed")
    return token


def _error_message(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
        return f"{error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return response.text[:200]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
